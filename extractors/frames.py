"""The frame recipe shared by the visual extractors (AVVP.md, Features).

From the N frames of one window at 8 FPS: pick ``count`` of them at
``round(linspace(0, N - 1, count))``, scale to [0, 1] floats, resize to ``size`` x
``size`` without crop (bilinear, antialias off) and normalise per channel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as tvf

from avvp.extractors.base import rounded_linspace


def as_frame_tensor(frames: Any) -> torch.Tensor:
    """The window's frames as a uint8 (N, H, W, 3) tensor, or a ValueError saying why not."""
    video = torch.from_numpy(frames) if isinstance(frames, np.ndarray) else frames
    if (
        not isinstance(video, torch.Tensor)
        or video.dtype != torch.uint8
        or video.ndim != 4
        or video.shape[-1] != 3
        or video.shape[0] == 0
    ):
        described = (
            f"{video.dtype} array of shape {tuple(video.shape)}"
            if isinstance(video, torch.Tensor)
            else type(frames).__name__
        )
        raise ValueError(
            "expected the window's frames as a non-empty uint8 array (N, H, W, 3) in RGB "
            f"order; got {described}"
        )
    return video


@dataclass(frozen=True)
class FrameSampler:
    """Window frames (N, H, W, 3) uint8 -> (count, 3, size, size) normalised float32."""

    count: int
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, frames: Any) -> torch.Tensor:
        video = as_frame_tensor(frames)
        picked = video[torch.from_numpy(rounded_linspace(0, video.shape[0] - 1, self.count))]
        images = picked.permute(0, 3, 1, 2).float().div(255)
        images = tvf.resize(
            images,
            [self.size, self.size],
            interpolation=InterpolationMode.BILINEAR,
            antialias=False,
        )
        return tvf.normalize(images, list(self.mean), list(self.std))
