"""R(2+1)D-18 (torchvision, Kinetics-400): 10 x 512 clip embeddings per window.

Recipe (AVVP.md): 80 frames at ``round(linspace(0, N - 1, 80))`` (NumPy's half-to-even
rounding), each resized to 112 x 112 without crop (bilinear, antialias off), Kinetics
mean/std, cut into 10 clips of 8 consecutive frames; the feature of a clip is the
network's global average pool (its final fc removed).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torchvision.models.video import R2Plus1D_18_Weights, r2plus1d_18
from torchvision.models.video.resnet import BasicBlock, Conv2Plus1D, R2Plus1dStem, VideoResNet

from ..contract import FPS
from .base import (
    FeatureExtractor,
    RandomInit,
    Size,
    WeightsArg,
    WeightsSource,
    WindowInput,
    copy_weights,
    load_state_dict_file,
    seeded,
)
from .frames import FrameSampler
from .precision import Precision

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
CLIPS_PER_WINDOW = 10
FRAMES_PER_CLIP = 8
EMBED_DIM = 512
# torchvision fixes the stage widths of VideoResNet, so the tiny size saves its time
# with one block per stage and small frames (the global pool makes any size work).
FRAME_SIZE: dict[Size, int] = {"paper": 112, "tiny": 32}

_KINETICS_URL: str = R2Plus1D_18_Weights.KINETICS400_V1.url
_KINETICS_FILE = _KINETICS_URL.rsplit("/", 1)[-1]


def _torch_hub_cached_paths() -> list[Path]:
    # Where torchvision's own download (load_state_dict_from_url) keeps the file.
    return [Path(torch.hub.get_dir()) / "checkpoints" / _KINETICS_FILE]


class R2Plus1DWeights(enum.Enum):
    KINETICS400_V1 = WeightsSource(
        title="R(2+1)D-18 (torchvision, Kinetics-400)",
        file_name=_KINETICS_FILE,
        download=_KINETICS_URL,
        cached_paths=_torch_hub_cached_paths,
        preprocessing="80 frames per window, 112 x 112 bilinear resize without crop, "
        "Kinetics mean/std, 10 clips of 8 frames",
        # torchvision names its files by the leading digits of their sha256.
        sha256=_KINETICS_FILE.rsplit("-", 1)[-1].split(".")[0],
    )


@dataclass(frozen=True)
class ClipStackTransform:
    """Window frames (N, H, W, 3) uint8 -> (10, 3, 8, size, size) network input."""

    frames: FrameSampler

    def __call__(self, window: Any) -> torch.Tensor:
        images = self.frames(window)
        clips = images.view(CLIPS_PER_WINDOW, FRAMES_PER_CLIP, *images.shape[1:])
        return clips.transpose(1, 2).contiguous()


_EXPECTED = "R(2+1)D-18 weights"
_FIX = f"use {_KINETICS_FILE} from {_KINETICS_URL}"


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    return load_state_dict_file(path, _EXPECTED, _FIX)


def _build_network(size: Size, weights: Path | RandomInit) -> torch.nn.Module:
    state = _read_weights(weights) if isinstance(weights, Path) else None
    seed = weights.seed if isinstance(weights, RandomInit) else 0
    with seeded(seed):
        if size == "tiny":
            network = VideoResNet(BasicBlock, [Conv2Plus1D] * 4, [1, 1, 1, 1], R2Plus1dStem)
        else:
            network = r2plus1d_18()
    if state is not None:
        copy_weights(network, state, weights, _EXPECTED, _FIX)
    network.fc = torch.nn.Identity()
    return network


class R2Plus1DExtractor(FeatureExtractor):
    """R(2+1)D-18 pooled features of 10 clips of 8 frames per window."""

    name = "r2plus1d"
    weights_enum = R2Plus1DWeights
    default_weights = R2Plus1DWeights.KINETICS400_V1
    version = "1"
    input = WindowInput("frames", fps=FPS)
    output_shape = (CLIPS_PER_WINDOW, EMBED_DIM)

    def __init__(
        self,
        size: Size = "paper",
        weights: WeightsArg = None,
        device: str | torch.device | None = None,
        precision: Precision = "auto",
    ) -> None:
        resolved = self.resolve(size, weights)
        self.frame_size = FRAME_SIZE[size]
        super().__init__(
            size=size,
            weights=resolved,
            network=_build_network(size, resolved),
            device=device,
            precision=precision,
        )
        # On a CPU, conv3d in channels-last layout (oneDNN's native one) took 0.75x the
        # time per window at paper size and 0.69x at tiny (2 threads; outputs equal to
        # 1e-6): `benchmarks/extract.py --only layout`. Not measured on a GPU, so there
        # the layout stays torch's default.
        self._memory_format = (
            torch.channels_last_3d if self.device.type == "cpu" else torch.contiguous_format
        )
        self.network.to(memory_format=self._memory_format)

    @classmethod
    def read_weights(cls, path: Path) -> dict[str, torch.Tensor]:
        return _read_weights(path)

    @classmethod
    def make_transform(cls, size: Size) -> ClipStackTransform:
        sampler = FrameSampler(
            CLIPS_PER_WINDOW * FRAMES_PER_CLIP, FRAME_SIZE[size], KINETICS_MEAN, KINETICS_STD
        )
        return ClipStackTransform(sampler)

    def _batch_item_shape(self) -> tuple[int, ...]:
        return (CLIPS_PER_WINDOW, 3, FRAMES_PER_CLIP, self.frame_size, self.frame_size)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        features = self.network(batch.flatten(0, 1).contiguous(memory_format=self._memory_format))
        return features.view(batch.shape[0], *self.output_shape)
