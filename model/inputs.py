"""Input projections shared by every parser: CLAP maps or per-segment audio to (B, T, H);
CLIP or 8-frame ResNet features fused with R(2+1)D to (B, T, H).

Both MM-CSE and VALOR project their inputs this way (fc_a, fc_v, fc_st, fc_fusion in
the official code), so the layer and its shape checks live here once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import CLAP_MAP_ROWS, CLAP_MAP_STEPS, FRAMES_PER_SEGMENT, InputSpec

# The official code upsamples the CLAP map's 32 time steps bicubically to 1024.
CLAP_MAP_UPSAMPLED_STEPS = 1024


def clap_map_resampler(num_segments: int) -> torch.Tensor:
    """(num_segments, 64) matrix taking the 64 CLAP tokens to per-segment averages.

    The official path (bicubic upsampling of the time axis, mean over the two rows,
    adaptive average pooling to the segments) is linear in the tokens and its weights sum
    to one per segment, so it commutes with the affine projection: applying it first
    projects T vectors instead of 2 x 1024. The matrix is that path applied to a basis.
    """
    tokens = CLAP_MAP_ROWS * CLAP_MAP_STEPS
    basis = torch.eye(tokens, dtype=torch.float64).view(tokens, 1, CLAP_MAP_ROWS, CLAP_MAP_STEPS)
    upsampled = F.interpolate(basis, size=(CLAP_MAP_ROWS, CLAP_MAP_UPSAMPLED_STEPS), mode="bicubic")
    pooled = F.adaptive_avg_pool1d(upsampled.mean(dim=2), num_segments)  # (64, 1, T)
    return pooled.squeeze(1).T.to(torch.float32)


class FeatureProjection(nn.Module):
    """Input projection: audio to (B, T, H); visual 2-D and R(2+1)D features fused to (B, T, H)."""

    def __init__(self, spec: InputSpec, hidden_dim: int) -> None:
        super().__init__()
        self.spec = spec
        self.audio_proj = nn.Linear(spec.audio_dim, hidden_dim)
        self.visual_proj = nn.Linear(spec.visual_dim, hidden_dim)
        self.st_proj = nn.Linear(spec.st_dim, hidden_dim)
        self.fusion = nn.Linear(2 * hidden_dim, hidden_dim)
        if spec.audio_kind == "clap_map":
            self.register_buffer(
                "audio_resampler", clap_map_resampler(spec.num_segments), persistent=False
            )

    def forward(
        self, audio: torch.Tensor, visual: torch.Tensor, visual_st: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_shapes(audio, visual, visual_st)
        if self.spec.audio_kind == "clap_map":
            audio = torch.einsum("tn,bnd->btd", self.audio_resampler, audio)
        if self.spec.visual_kind == "frames8":
            # Averaging the 8 frames before the projection equals averaging after it.
            visual = visual.unflatten(1, (-1, FRAMES_PER_SEGMENT)).mean(dim=2)
        fused = self.fusion(torch.cat([self.visual_proj(visual), self.st_proj(visual_st)], -1))
        return self.audio_proj(audio), fused

    def _check_shapes(
        self, audio: torch.Tensor, visual: torch.Tensor, visual_st: torch.Tensor
    ) -> None:
        spec = self.spec
        batch = visual_st.shape[0] if visual_st.ndim == 3 else None
        for name, tensor in (("audio", audio), ("visual", visual), ("visual_st", visual_st)):
            expected = (batch, *spec.feature_shapes()[name])
            if tuple(tensor.shape) != expected:
                raise ValueError(
                    f"{name} features must be {expected} for audio_kind {spec.audio_kind!r}, "
                    f"visual_kind {spec.visual_kind!r} and T={spec.num_segments}, got "
                    f"{tuple(tensor.shape)}; check that the feature tables match the model"
                )
