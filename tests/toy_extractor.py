"""A made-up extractor outside the package, for the feature catalog's test: 10 x 64 per
window from frames (a small seeded convolution over 10 frames of 16 x 16 pixels)."""

from __future__ import annotations

import enum
from pathlib import Path

import torch

from avvp.contract import FPS
from avvp.extractors.base import (
    FeatureExtractor,
    RandomInit,
    WeightsArg,
    WeightsSource,
    WindowInput,
    seeded,
)
from avvp.extractors.frames import FrameSampler

SIDE = 16


class ToyWeights(enum.Enum):
    NONE_RELEASED = WeightsSource(
        title="toy network (never released)",
        file_name="toy64.pt",
        download="nowhere",
        cached_paths=list,
        preprocessing="10 frames per window, 16 x 16 bilinear, mean 0.5 / std 0.25",
    )


class Toy64Extractor(FeatureExtractor):
    name = "toy64"
    version = "1"
    input = WindowInput("frames", fps=FPS)
    output_shape = (10, 64)
    weights_enum = ToyWeights
    default_weights = ToyWeights.NONE_RELEASED

    def __init__(
        self,
        size: str = "tiny",
        weights: WeightsArg = None,
        device: str | torch.device | None = None,
    ) -> None:
        resolved = self.resolve(size, weights)
        seed = resolved.seed if isinstance(resolved, RandomInit) else 0
        with seeded(seed):
            network = torch.nn.Sequential(
                torch.nn.Conv2d(3, 8, 3, stride=2),
                torch.nn.AdaptiveAvgPool2d(1),
                torch.nn.Flatten(),
                torch.nn.Linear(8, 64),
            )
        if isinstance(resolved, Path):
            raise ValueError("the toy extractor has no released weights")
        super().__init__(size=size, weights=resolved, network=network, device=device)

    @classmethod
    def make_transform(cls, size: str) -> FrameSampler:
        return FrameSampler(10, SIDE, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))

    def _batch_item_shape(self) -> tuple[int, ...]:
        return (10, 3, SIDE, SIDE)

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.network(batch.flatten(0, 1)).view(batch.shape[0], *self.output_shape)
