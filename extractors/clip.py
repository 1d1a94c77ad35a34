"""CLIP ViT-L/14 (OpenAI weights, through open_clip): 10 x 768 frame embeddings per window.

Recipe (AVVP.md): 10 frames at ``round(linspace(0, N - 1, 10))`` (NumPy's half-to-even
rounding, as VALOR's script), resized to 224 x 224 without crop (bilinear, antialias
off), CLIP mean/std, projected image embedding, L2-normalised. The text side gives the
prompt embeddings and the logit scale (100 for the OpenAI weights) used for visual
pseudo-labels: logit = ``logit_scale`` x cosine.
"""

from __future__ import annotations

import enum
import zipfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from avvp.contract import FPS
from avvp.extractors.base import (
    FeatureExtractor,
    Preset,
    RandomInit,
    WeightsArg,
    WeightsSource,
    WindowInput,
    hf_cached_file,
    resolve_weights,
    seeded,
)
from avvp.extractors.frames import FrameSampler

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FRAMES_PER_WINDOW = 10
IMAGE_SIZE = 224
EMBED_DIM = 768

_OPENAI_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt"
)
# open_clip fetches the OpenAI weights from this hub repo when it can, else from the URL
# above into ~/.cache/clip; either copy is accepted.
_OPENAI_HF_REPO = "timm/vit_large_patch14_clip_224.openai"

# Same classes as ViT-L/14 (QuickGELU, 768-d joint space, 77-token context, same BPE
# vocabulary), a fraction of the width and depth. The tiny image tower averages its patch
# tokens instead of reading the class token: in a randomly initialised ViT the class
# token is mostly its own constant embedding (features varied by 9% of their norm across
# the synthetic clips' segments), while the patch tokens follow the image (77%), as a
# trained CLIP's class token does.
_TINY_VISION = {
    "image_size": IMAGE_SIZE,
    "patch_size": 14,
    "width": 64,
    "layers": 2,
    "pool_type": "avg",
}
_TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}


def _openai_cached_paths() -> list[Path]:
    return [
        hf_cached_file(_OPENAI_HF_REPO, "open_clip_model.safetensors"),
        hf_cached_file(_OPENAI_HF_REPO, "open_clip_pytorch_model.bin"),
        Path("~/.cache/clip/ViT-L-14.pt").expanduser(),
    ]


class ClipWeights(enum.Enum):
    OPENAI = WeightsSource(
        title="CLIP ViT-L/14 (OpenAI)",
        file_name="ViT-L-14.pt",
        download=_OPENAI_URL,
        cached_paths=_openai_cached_paths,
    )


def _is_torchscript(path: Path) -> bool:
    # OpenAI ships ViT-L-14.pt as a TorchScript archive, which torch refuses to open
    # with weights_only=True; a TorchScript zip carries its code next to the data.
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def _build_network(preset: Preset, weights: Path | RandomInit) -> torch.nn.Module:
    import open_clip  # pulls in transformers and timm (seconds): only when a model is built

    seed = weights.seed if isinstance(weights, RandomInit) else 0
    with seeded(seed):
        if preset == "tiny":
            return open_clip.CLIP(
                embed_dim=EMBED_DIM,
                vision_cfg=_TINY_VISION,
                text_cfg=_TINY_TEXT,
                quick_gelu=True,
            )
        # The OpenAI weights were trained with QuickGELU, which plain "ViT-L-14" lacks.
        if isinstance(weights, RandomInit):
            return open_clip.create_model("ViT-L-14", pretrained=None, force_quick_gelu=True)
        try:
            return open_clip.create_model(
                "ViT-L-14",
                pretrained=str(weights),
                force_quick_gelu=True,
                weights_only=not _is_torchscript(weights),
            )
        except Exception as error:  # open_clip and torch raise many types for a bad file
            raise ValueError(
                f"{weights} does not hold CLIP ViT-L/14 weights ({error.__class__.__name__}: "
                f"{error}); use ViT-L-14.pt from {_OPENAI_URL}"
            ) from None


class ClipExtractor(FeatureExtractor):
    """CLIP image embeddings of 10 frames per window, plus the text side for prompts."""

    name = "clip"
    version = "2"  # 2: the tiny preset pools patch tokens (its old features are refused)
    input = WindowInput("frames", fps=FPS)
    output_shape = (FRAMES_PER_WINDOW, EMBED_DIM)

    def __init__(
        self,
        preset: Preset = "paper",
        weights: WeightsArg = None,
        device: str | torch.device | None = None,
    ) -> None:
        resolved = resolve_weights(weights, ClipWeights.OPENAI, preset, self.name)
        super().__init__(
            preset=preset,
            weights=resolved,
            network=_build_network(preset, resolved),
            device=device,
        )
        import open_clip

        # Bundled with open_clip, so prompts tokenise offline.
        self._tokenizer = open_clip.get_tokenizer("ViT-L-14")

    @classmethod
    def make_transform(cls, preset: Preset) -> FrameSampler:
        return FrameSampler(FRAMES_PER_WINDOW, IMAGE_SIZE, CLIP_MEAN, CLIP_STD)

    @property
    def logit_scale(self) -> float:
        """Multiplier of the image-text cosine in CLIP logits (100 for OpenAI weights)."""
        return float(self.network.logit_scale.exp())

    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings (P, 768), float32 on the extractor's device."""
        tokens = self._tokenizer(list(prompts)).to(self.device)
        with torch.no_grad(), self._autocast():
            features = self.network.encode_text(tokens)
        return F.normalize(features.float(), dim=-1)

    def _batch_item_shape(self) -> tuple[int, ...]:
        return (FRAMES_PER_WINDOW, 3, IMAGE_SIZE, IMAGE_SIZE)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        features = self.network.encode_image(batch.flatten(0, 1)).float()
        return F.normalize(features, dim=-1).view(batch.shape[0], *self.output_shape)
