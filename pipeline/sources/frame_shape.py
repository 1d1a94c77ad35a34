"""The size and orientation of decoded frames: the size rule (`decoded_size`: large
sources are scaled down in the decoder), the decoder threads of a scaled source, and
`upright`, which applies a display rotation. The rules are in the module docstring of
`avvp.pipeline.sources.decode` (frame size, rotation)."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

# The largest frames decoded as they are (`decode`'s docstring, frame size): at least
# twice the largest extractor input (224 x 224) either way, and 480p (854 x 480) untouched.
MAX_SHORT_SIDE, MAX_LONG_SIDE = 480, 960
# What the decoder's frame threads may hold of a scaled (large) source's pictures:
# 4K gets 5 threads, 8K one (`decode`'s docstring, frame size).
SOURCE_PICTURES_BYTES = 64 << 20


def upright(frame: np.ndarray, rotation: float) -> np.ndarray:
    """Apply a display-matrix rotation (degrees counter-clockwise, as PyAV reports it).

    A phone's portrait video is stored landscape with rotation -90: it is turned 90
    degrees clockwise here, like FFmpeg's autorotate. Rounded to a multiple of 90.
    """
    return np.rot90(frame, k=round(rotation / 90) % 4)


def decoded_size(width: int, height: int) -> tuple[int, int]:
    """(width, height) of the frames decoded from a picture of `width` x `height`: the
    same, or scaled down to fit MAX_SHORT_SIDE and MAX_LONG_SIDE (`decode`'s docstring)."""
    if width <= 0 or height <= 0:  # not known before decoding: frames come as they are
        return width, height
    scale = min(1.0, MAX_SHORT_SIDE / min(width, height), MAX_LONG_SIDE / max(width, height))
    if scale == 1.0:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


class Scale(NamedTuple):
    """How a scaled source is decoded: the frames' (width, height) before they are turned
    upright, the decoder's threads, and whether swscale scales the YUV planes first
    (`planes_first`, for an extractor's input size: faster, see `frame_readers`)."""

    width: int
    height: int
    threads: int
    planes_first: bool = False


def decoder_threads(width: int, height: int) -> int:
    """Threads to decode a `width` x `height` source with: each frame thread holds
    pictures of the source's size, so a large one gets as many as keep about
    SOURCE_PICTURES_BYTES of them (in 8-bit 4:2:0) in flight, one CPU each at most."""
    picture = width * height * 3 // 2
    return max(1, min(os.cpu_count() or 1, SOURCE_PICTURES_BYTES // picture))
