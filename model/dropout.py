"""Dropout with a cheaper mask on a CPU, for the parsers' training step."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

# Dropout masks on a CPU come from 16-bit slices of 64-bit random words: torch's CPU
# bernoulli_ draws one number per element and took a fifth of a training step; this
# draws one per four elements (about 7x faster). The drop probability is p rounded to a
# multiple of 1/65536 (0.1 -> 0.100006), and kept values are scaled by its inverse.
_MASK_LEVELS = 1 << 16


def _uses_cheap_mask(x: torch.Tensor, p: float, training: bool) -> bool:
    return training and 0.0 < p < 1.0 and x.device.type == "cpu"


def _kept(shape: torch.Size, p: float) -> tuple[torch.Tensor, float]:
    """(a uint8 mask, 1 where an element is kept, each dropped with probability p rounded
    to 1/65536; the scale of those kept)."""
    dropped = round(p * _MASK_LEVELS)
    numel = math.prod(shape)
    # The words come from numpy's SFC64, which draws them in half the time of torch's
    # CPU generator (mt19937: 4 ms per million, about a third of the masks' cost in a
    # training step); its seed is one draw of torch's generator, so torch.manual_seed
    # still fixes every mask.
    seed = int(torch.empty((), dtype=torch.int64).random_())
    words = np.random.SFC64(seed).random_raw((numel + 3) // 4)
    draws = torch.from_numpy(words.view(np.int16)[:numel]).view(shape)
    kept = draws >= dropped - _MASK_LEVELS // 2
    # Its bytes as uint8: a float tensor times a bool one is cast to a float copy first on
    # a CPU (the FFN hidden's product took 1.6 ms, 0.6 as uint8; 8000 x 512, 2 threads).
    return kept.view(torch.uint8), _MASK_LEVELS / (_MASK_LEVELS - dropped)


class _KeepMasked(torch.autograd.Function):
    """x times the 0/1 mask, times the scale; backward the same on the gradient. Keeps the
    byte mask, not a float factor: making and saving that factor (a cast and a scaling of
    a fresh tensor) made the attention's dropout 1.05x the time forward and backward (its
    (1280, 8, 25, 25) weights at paper size, 2 threads). A product with the mask, not
    masked_fill_, whose CPU kernel took 1.7x the time; the mask first, then the scale in
    place: 0.45x the time of the scale first (2 threads). Like F.dropout, a NaN or inf
    that is dropped stays NaN."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x.mul(keep).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout with the cheaper mask on a CPU; F.dropout itself elsewhere (fused)."""
    if not _uses_cheap_mask(x, p, training):
        return F.dropout(x, p, training)
    keep, scale = _kept(x.shape, p)
    return _KeepMasked.apply(x, keep, scale)


class _ReLUDropoutInPlace(torch.autograd.Function):
    """ReLU then dropout in place, keeping only the output for backward: the output is
    positive exactly where the input was and the element was kept, so the input's
    gradient is the output's where the output is positive, times the scale."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        x.relu_().mul_(keep).mul_(scale)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        ctx.scale = scale
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (output,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, output, 0.0).mul_(ctx.scale), None, None


def relu_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """dropout(relu(x)) in place, for a fresh result that nothing else reads and that is
    not a view (a Linear's output on a 2-D input: on a view autograd would copy the base).

    In training on a CPU the two run as one op that saves one tensor, not three (ReLU
    output, mask, dropout output: 65 MB each in the parser's feed-forward at paper size),
    and allocates no float tensor: the feed-forward's forward and backward took 0.76 of
    the time of separate ReLU and dropout (2 threads, batch 64)."""
    if not _uses_cheap_mask(x, p, training):
        return F.dropout(F.relu(x, inplace=True), p, training)
    keep, scale = _kept(x.shape, p)
    return _ReLUDropoutInPlace.apply(x, keep, scale)


class Dropout(nn.Dropout):
    """nn.Dropout through `dropout` above."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
