"""Cosine similarity as F.cosine_similarity computes it (its eps included), for MM-CSE's
LGSF and orthogonality losses, with cheaper passes on the parser's shapes."""

from __future__ import annotations

from typing import Any

import torch

COSINE_EPS = 1e-8  # F.cosine_similarity's default


class _ClampedNorm(torch.autograd.Function):
    """L2 norm over the last dim, at least COSINE_EPS, as F.cosine_similarity clamps it.
    Its backward is one product over x, x times g / norm (zero where the clamp holds, as
    clamp_min's backward gives): torch's vector_norm backward divides x by the norm and
    masks the result over all of x first, a third of the LGSF's backward time at paper
    size (2 threads)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        ctx.save_for_backward(x, norm)
        return norm.clamp_min(COSINE_EPS).squeeze(-1)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, norm = ctx.saved_tensors
        factor = (grad.unsqueeze(-1) / norm).masked_fill_(norm < COSINE_EPS, 0.0)
        return x * factor


def clamped_norm(x: torch.Tensor) -> torch.Tensor:
    """L2 norm over the last dim, at least COSINE_EPS, as F.cosine_similarity clamps it."""
    return _ClampedNorm.apply(x)


def cosine(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """F.cosine_similarity over the last dim, for a `y` that broadcasts over `x`: the
    same formula, eps included, with each norm taken on its own tensor. torch expands
    `y` to `x`'s shape and divides both by their norms first: for the audio
    orthogonality loss, the background feature copied over the 25 classes and two
    divisions of (B, T, 25, C) tensors, forward and backward."""
    return (x * y).sum(dim=-1) / (clamped_norm(x) * clamped_norm(y))
