"""CLIP ViT-L/14 (OpenAI weights, through open_clip): 10 x 768 frame embeddings per window.

Recipe (AVVP.md): 10 frames at ``round(linspace(0, N - 1, 10))`` (NumPy's half-to-even
rounding, as VALOR's script), resized to 224 x 224 without crop (bilinear, antialias
off), CLIP mean/std, projected image embedding, L2-normalised. The text side gives the
prompt embeddings and the logit scale (100 for the OpenAI weights) used for visual
pseudo-labels: logit = ``logit_scale`` x cosine.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from ..contract import FPS
from .base import (
    FeatureExtractor,
    RandomInit,
    Size,
    WeightsArg,
    WeightsFileError,
    WeightsSource,
    WindowInput,
    copy_weights,
    hf_cached_file,
    is_torchscript,
    load_state_dict_file,
    seeded,
)
from .frames import FrameSampler
from .precision import Precision

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FRAMES_PER_WINDOW = 10
IMAGE_SIZE = 224
EMBED_DIM = 768

_OPENAI_URL = (
    "https://openaipublic.azureedge.net/clip/models/"
    "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836/ViT-L-14.pt"
)
_EXPECTED = "CLIP ViT-L/14 weights"
_FIX = f"use ViT-L-14.pt from {_OPENAI_URL}"
_OPENAI_SHA256 = _OPENAI_URL.rsplit("/", 2)[-2]  # OpenAI's address names the file's digest

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
        preprocessing="10 frames per window at round(linspace) of the 8-FPS frames, "
        "224 x 224 bilinear resize without crop, CLIP mean/std",
        sha256=_OPENAI_SHA256,
    )


def _openai_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The CLIP weights in ``path``, read without running anything it holds.

    OpenAI ships ViT-L-14.pt as a TorchScript archive (recognised as torch.load does and
    read only by torch.jit.load, which has no Python unpickler); open_clip's hub copies
    are safetensors or a state dict, read by torch's weights-only unpickler.
    """
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(path)
        except (SafetensorError, OSError):
            raise WeightsFileError(
                f"{path} is not {_EXPECTED} (it is not a readable safetensors file): {_FIX}"
            ) from None
    elif is_torchscript(path):
        try:
            state = torch.jit.load(path, map_location="cpu").state_dict()
        except RuntimeError:
            raise WeightsFileError(
                f"{path} is not {_EXPECTED} (it is a damaged TorchScript archive): {_FIX}"
            ) from None
        # Attributes OpenAI's scripted model keeps beside its weights.
        for key in ("input_resolution", "context_length", "vocab_size"):
            state.pop(key, None)
    else:
        state = load_state_dict_file(path, _EXPECTED, _FIX)
    # DataParallel saves every key under "module.".
    return {key.removeprefix("module."): value for key, value in state.items()}


def _build_network(size: Size, weights: Path | RandomInit) -> torch.nn.Module:
    # The file is read first: a bad one is refused before seconds of building ViT-L/14.
    state = _openai_state_dict(weights) if isinstance(weights, Path) else None
    import open_clip  # pulls in transformers and timm (seconds): only when a model is built

    seed = weights.seed if isinstance(weights, RandomInit) else 0
    with seeded(seed):
        if size == "tiny":
            return open_clip.CLIP(
                embed_dim=EMBED_DIM,
                vision_cfg=_TINY_VISION,
                text_cfg=_TINY_TEXT,
                quick_gelu=True,
            )
        # The OpenAI weights were trained with QuickGELU, which plain "ViT-L-14" lacks.
        network = open_clip.create_model("ViT-L-14", pretrained=None, force_quick_gelu=True)
    if state is not None:
        copy_weights(network, state, weights, _EXPECTED, _FIX)
    return network


class ClipExtractor(FeatureExtractor):
    """CLIP image embeddings of 10 frames per window, plus the text side for prompts."""

    name = "clip"
    weights_enum = ClipWeights
    default_weights = ClipWeights.OPENAI
    version = "2"  # 2: the tiny size pools patch tokens (its old features are refused)
    input = WindowInput("frames", fps=FPS)
    output_shape = (FRAMES_PER_WINDOW, EMBED_DIM)

    def __init__(
        self,
        size: Size = "paper",
        weights: WeightsArg = None,
        device: str | torch.device | None = None,
        precision: Precision = "auto",
    ) -> None:
        resolved = self.resolve(size, weights)
        super().__init__(
            size=size,
            weights=resolved,
            network=_build_network(size, resolved),
            device=device,
            precision=precision,
        )
        import open_clip

        # Bundled with open_clip, so prompts tokenise offline.
        self._tokenizer = open_clip.get_tokenizer("ViT-L-14")

    @classmethod
    def make_transform(cls, size: Size) -> FrameSampler:
        return FrameSampler(FRAMES_PER_WINDOW, IMAGE_SIZE, CLIP_MEAN, CLIP_STD)

    @classmethod
    def read_weights(cls, path: Path) -> dict[str, torch.Tensor]:
        return _openai_state_dict(path)

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
