"""The frame recipe shared by the visual extractors (AVVP.md, Features).

From the N frames of one window at 8 FPS: pick ``count`` of them at
``round(linspace(0, N - 1, count))``, scale to [0, 1] floats, resize to ``size`` x
``size`` without crop (bilinear, antialias off) and normalise per channel.

Frames are converted and resized one at a time, through one float buffer: in float at
the size they come in, a window's 80 frames would take 16 bytes a pixel all at once,
and a fresh buffer per frame leaves the heap in pieces that later ones do not fit (the
decoder already scales frames larger than 960 x 480 down, see
`avvp.pipeline.sources.decode`; smaller ones, LLP's 320 x 240 among them, arrive as the source
has them). Each frame's result is the one a batched resize gives, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as tvf

from .base import rounded_linspace


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
        picked = rounded_linspace(0, video.shape[0] - 1, self.count).tolist()
        images = torch.empty(self.count, 3, self.size, self.size)
        image = torch.empty(1, 3, *video.shape[1:3])
        for row, index in enumerate(picked):
            image[0].copy_(video[index].permute(2, 0, 1)).div_(255)
            images[row] = tvf.resize(
                image,
                [self.size, self.size],
                interpolation=InterpolationMode.BILINEAR,
                antialias=False,
            )[0]
        return tvf.normalize(images, list(self.mean), list(self.std))
