"""MM-CSE written the straightforward way, as the official network is laid out.

Benchmark reference only (benchmarks/train_step.py), not part of the package. It computes
the same function as `avvp.model.mmcse.MMCSE`, but with the official structure: one small
module per class in Python lists (26 CAFD branches per modality, 3 x 25 Linear(128 -> 1)
heads) called one by one, the background repeated for each class before the shared
fusion, the CLAP map bicubically upsampled to 2 x 1024 positions and projected at every
position, the two modalities run through each FGSE layer as two separate calls, and
sequence-first nn.MultiheadAttention that always returns its weights. Parameter names are
the official ones, so an official state dict loads directly (`load_official_state_dict`).
Only CLAP-map audio and per-segment (CLIP) visual inputs, with every ablation option on.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from avvp.model.config import MMCSEOptions, ModelConfig
from avvp.model.mmcse_import import UNUSED_OFFICIAL_KEYS
from avvp.model.outputs import ParserOutput

CLAP_MAP_ROWS = 2
CLAP_MAP_STEPS = 32
CLAP_MAP_UPSAMPLED_STEPS = 1024


class SequentialUnderModel(nn.Module):
    """A Sequential kept under `.model`: the official key prefix of the gates
    (alpha_a.model.1, ...) and of the visual decoder (v_recon.model.1, ...)."""

    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class PerClassHeads(nn.Module):
    """K separate Linear(C -> 1), one per class, applied in a Python loop."""

    def __init__(self, class_dim: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(class_dim, 1) for _ in range(num_classes))

    def forward(self, streams: torch.Tensor) -> torch.Tensor:
        """streams: (B, T, 2, K, C) -> (B, T, 2, K)."""
        return torch.cat([head(streams[..., k, :]) for k, head in enumerate(self.fc)], dim=-1)


class ReferenceSECM(nn.Module):
    """Sequence-first attention over the K class tokens of each segment; returns the
    attention output (B*T, K, C) and the head-averaged weights (B, T, K, K)."""

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout)

    def forward(
        self, x: torch.Tensor, source: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        b, t, k, c = x.shape
        query = x.reshape(b * t, k, c).transpose(0, 1)
        key = query if source is None else source.reshape(b * t, k, c).transpose(0, 1)
        attended, weights = self.attn(query, key, key)
        return attended.transpose(0, 1), weights.reshape(b, t, k, k)


class ReferenceLGSF(nn.Module):
    """Local-global fusion on a per-class temporal layout (B*K, T, C). Intra: glob1 on the
    local side and glob2 on the global side; cross: one `glob` for both sides."""

    def __init__(self, dim: int, cross: bool) -> None:
        super().__init__()
        if cross:
            self.glob = nn.Linear(dim, dim)
        else:
            self.glob1 = nn.Linear(dim, dim)
            self.glob2 = nn.Linear(dim, dim)
        self.cross = cross

    def forward(self, z: torch.Tensor, other: torch.Tensor | None = None) -> torch.Tensor:
        """z, other: (B, T, K, C) -> (B*T, K, C)."""
        b, t, k, c = z.shape
        z_by_class = z.transpose(1, 2).reshape(b * k, t, c)
        if self.cross:
            assert other is not None
            other_by_class = other.transpose(1, 2).reshape(b * k, t, c)
            local = F.relu(self.glob(z_by_class))
            global_feature = F.relu(self.glob(other_by_class)).mean(dim=1, keepdim=True)
        else:
            local = F.relu(self.glob1(z_by_class))
            global_feature = F.relu(self.glob2(z_by_class)).mean(dim=1, keepdim=True)
        relevance = torch.sigmoid(F.cosine_similarity(local, global_feature, dim=-1))
        fused = relevance.unsqueeze(-1) * global_feature  # (B*K, T, C)
        return fused.reshape(b, k, t, c).transpose(1, 2).reshape(b * t, k, c)


class ReferenceFGSELayer(nn.Module):
    """Intra and cross paths, their sum, LayerNorm and a feed-forward without residual."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.SECM_1 = ReferenceSECM(dim, num_heads, dropout)
        self.LGSF_1 = ReferenceLGSF(dim, cross=False)
        self.SECM_2 = ReferenceSECM(dim, num_heads, dropout)
        self.LGSF_2 = ReferenceLGSF(dim, cross=True)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(
        self, x: torch.Tensor, other: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x, other: (B, T, K, C) -> update (B, T, K, C), intra map, cross map."""
        b, t, k, c = x.shape
        residual = x.reshape(b * t, k, c)
        intra, intra_map = self.SECM_1(x)
        intra_z = (residual + intra).reshape(b, t, k, c)
        intra_out = self.fc1(residual + self.LGSF_1(intra_z))
        cross, cross_map = self.SECM_2(x, other)
        cross_z = (residual + cross).reshape(b, t, k, c)
        cross_out = self.fc2(residual + self.LGSF_2(cross_z, other))
        hidden = self.norm1(intra_out + cross_out)
        update = self.linear2(self.dropout(F.relu(self.linear1(hidden))))
        return update.reshape(b, t, k, c), intra_map, cross_map


class ReferenceEncoder(nn.Module):
    """FGSE layers; each called once for audio and once for visual, from the previous
    layer's outputs. Returns the last layer's maps (aa, av, vv, va)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            ReferenceFGSELayer(config.class_dim, config.num_heads, config.ffn_dim, config.dropout)
            for _ in range(config.num_layers)
        )

    def forward(
        self, audio: torch.Tensor, visual: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        maps: dict[str, torch.Tensor] = {}
        for layer in self.layers:
            new_audio, maps["map_aa"], maps["map_av"] = layer(audio, visual)
            new_visual, maps["map_vv"], maps["map_va"] = layer(visual, audio)
            audio, visual = new_audio, new_visual
        return audio, visual, maps


class ReferenceMMCSE(nn.Module):
    """MM-CSE in the official layout; forward(audio, visual, visual_st, with_aux) returns
    the same ParserOutput (and aux) as `avvp.model.mmcse.MMCSE`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        spec = config.inputs
        if (spec.audio_kind, spec.visual_kind) != ("clap_map", "segment") or (
            config.mmcse != MMCSEOptions()
        ):
            raise ValueError(
                "the reference MM-CSE covers CLAP-map audio, per-segment visual features and "
                f"the full model only; got {spec.audio_kind!r}, {spec.visual_kind!r}, "
                f"{config.mmcse}"
            )
        hidden, class_dim, classes = config.hidden_dim, config.class_dim, spec.num_classes
        branches = classes + 1
        self.config = config
        self.fc_a = nn.Linear(spec.audio_dim, hidden)
        self.fc_v = nn.Linear(spec.visual_dim, hidden)
        self.fc_st = nn.Linear(spec.st_dim, hidden)
        self.fc_fusion = nn.Linear(2 * hidden, hidden)
        self.v_unmix = nn.ModuleList(
            nn.Sequential(
                nn.ReLU(),
                nn.Linear(hidden, class_dim),
                nn.ReLU(),
                nn.Dropout(config.dropout),
                nn.Linear(class_dim, class_dim),
                nn.ReLU(),
            )
            for _ in range(branches)
        )
        self.a_unmix = nn.ModuleList(
            nn.Sequential(nn.ReLU(), nn.Linear(hidden, class_dim), nn.ReLU())
            for _ in range(branches)
        )
        self.v_recon = SequentialUnderModel(
            nn.ReLU(),
            nn.Linear(branches * class_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.a_recon = nn.Sequential(
            nn.Linear(branches * class_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.av_enhance = ReferenceEncoder(config)
        self.fc_prob = PerClassHeads(class_dim, classes)
        self.fc_frame_att = PerClassHeads(class_dim, classes)
        self.fc_av_att = PerClassHeads(class_dim, classes)
        self.reduce_a = nn.Sequential(nn.Linear(2 * class_dim, class_dim), nn.ReLU())
        self.reduce_v = nn.Sequential(nn.Linear(2 * class_dim, class_dim), nn.ReLU())
        self.alpha_a = self._gate(hidden, config.dropout)
        self.alpha_v = self._gate(hidden, config.dropout)

    @staticmethod
    def _gate(hidden: int, dropout: float) -> SequentialUnderModel:
        return SequentialUnderModel(
            nn.ReLU(),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden // 2, 1),
        )

    def _project_audio(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, 64, D) CLAP map -> (B, T, H): upsample, project every position, pool."""
        batch, _, dim = audio.shape
        grid = audio.transpose(1, 2).reshape(batch, dim, CLAP_MAP_ROWS, CLAP_MAP_STEPS)
        upsampled = F.interpolate(
            grid, size=(CLAP_MAP_ROWS, CLAP_MAP_UPSAMPLED_STEPS), mode="bicubic"
        )
        projected = self.fc_a(upsampled.permute(0, 2, 3, 1)).mean(dim=1)  # (B, 1024, H)
        pooled = F.adaptive_avg_pool1d(projected.transpose(1, 2), self.config.inputs.num_segments)
        return pooled.transpose(1, 2)

    @staticmethod
    def _class_tokens(
        branches: torch.Tensor, feature: torch.Tensor, gate: nn.Module, reduce: nn.Module
    ) -> torch.Tensor:
        """Each event feature joined with the repeated background, weighted by the gate."""
        events, background = branches[:, :, :-1], branches[:, :, -1:]
        alpha = torch.sigmoid(gate(feature)).unsqueeze(-1)  # (B, T, 1, 1)
        repeated = background.expand_as(events)
        return reduce(torch.cat([alpha * events, (1 - alpha) * repeated], dim=-1))

    def forward(
        self,
        audio: torch.Tensor,
        visual: torch.Tensor,
        visual_st: torch.Tensor,
        with_aux: bool = False,
    ) -> ParserOutput:
        audio_feature = self._project_audio(audio)
        visual_feature = self.fc_fusion(
            torch.cat([self.fc_v(visual), self.fc_st(visual_st)], dim=-1)
        )
        audio_branches = torch.stack([branch(audio_feature) for branch in self.a_unmix], dim=2)
        visual_branches = torch.stack([branch(visual_feature) for branch in self.v_unmix], dim=2)
        audio_tokens = self._class_tokens(
            audio_branches, audio_feature, self.alpha_a, self.reduce_a
        )
        visual_tokens = self._class_tokens(
            visual_branches, visual_feature, self.alpha_v, self.reduce_v
        )
        audio_out, visual_out, maps = self.av_enhance(audio_tokens, visual_tokens)

        streams = torch.stack([audio_out, visual_out], dim=2)  # (B, T, 2, K, C)
        frame_logits = self.fc_prob(streams)
        frame_prob = torch.sigmoid(frame_logits)
        temporal_prob = torch.softmax(self.fc_frame_att(streams), dim=1) * frame_prob
        modality_attention = torch.softmax(self.fc_av_att(streams), dim=2)
        output = ParserOutput(
            global_prob=(temporal_prob * modality_attention).sum(dim=2).sum(dim=1),
            a_prob=temporal_prob[:, :, 0].sum(dim=1),
            v_prob=temporal_prob[:, :, 1].sum(dim=1),
            frame_prob=frame_prob,
            frame_logits=frame_logits,
        )
        if not with_aux:
            return output
        audio_events, audio_background = audio_branches[:, :, :-1], audio_branches[:, :, -1:]
        visual_events, visual_background = visual_branches[:, :, :-1], visual_branches[:, :, -1]
        output.aux = {
            "loss_a_rec": F.mse_loss(audio_feature, self.a_recon(audio_branches.flatten(-2))),
            "loss_v_rec": F.mse_loss(visual_feature, self.v_recon(visual_branches.flatten(-2))),
            "loss_a_ort": F.cosine_similarity(
                audio_events, audio_background.expand_as(audio_events), dim=-1
            ).mean(),
            "loss_v_ort": F.cosine_similarity(
                visual_events.mean(dim=2), visual_background, dim=-1
            ).mean(),
            **maps,
        }
        return output


def load_official_state_dict(
    model: ReferenceMMCSE, state_dict: Mapping[str, torch.Tensor]
) -> ReferenceMMCSE:
    """Load an official MM-CSE state dict strictly; the two final LayerNorms the official
    network builds but never uses are not built here, so their keys are dropped."""
    used = {key: value for key, value in state_dict.items() if key not in UNUSED_OFFICIAL_KEYS}
    model.load_state_dict(used, strict=True)
    return model
