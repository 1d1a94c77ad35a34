"""ReLU in place where that is safe and pays: on results nobody else reads, without grad;
the feed-forward block whose ReLU and dropout run in place also in training."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import relu_dropout


def relu_fresh(x: torch.Tensor) -> torch.Tensor:
    """ReLU of a fresh result that nothing else reads (a Linear's output, a sum).

    Without gradients it runs in place: a new 65-MB result per ReLU at paper size costs
    its allocation and page faults (the FFN block took 1.5x the time out of place, CPU
    inference on 2 threads). With gradients it does not: a Linear's output on a 4-D
    input is a view of its 2-D result, and an in-place op on a view makes autograd copy
    the whole base back (CopySlices and AsStrided backward, about a fifth of a step).
    """
    return F.relu(x, inplace=not x.requires_grad)


class FreshReLU(nn.ReLU):
    """nn.ReLU through `relu_fresh`, for a Sequential's ReLU after a Linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return relu_fresh(x)


# Floats per block of rows that run without autograd (8 MB): see FeedForward.
BLOCK_FLOATS = 1 << 21


class FeedForward(nn.Sequential):
    """Linear, ReLU, Dropout, Linear (the official layout and state-dict keys), computed
    on the rows flattened to 2-D so that ReLU and dropout run in place on the first
    Linear's result (`relu_dropout`)."""

    def __init__(self, dim: int, hidden_dim: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim)
        )

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The hidden layer, ReLU and dropout of the first Linear: (..., hidden_dim)."""
        first, _, drop, _ = self
        rows = F.linear(x.flatten(0, -2), first.weight, first.bias)
        return relu_dropout(rows, drop.p, drop.training).view(*x.shape[:-1], -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, _, drop, second = self
        rows = x.flatten(0, -2)
        # The blocks pay on a CPU's caches alone, and their `out=` products take no part
        # in autocast (they met bf16 blocks with float32 weights under it, on the GPU).
        if torch.is_grad_enabled() or not rows.is_cpu or torch.is_autocast_enabled("cpu"):
            return F.linear(self.hidden(rows), second.weight, second.bias).view(*x.shape[:-1], -1)
        # Without autograd, a few thousand rows at a time: each hidden block (8 MB) is
        # reused from the heap and read back from cache, where one 65-MB hidden tensor
        # (paper size, batch 64) is fresh memory every call. 0.69x the time (inference,
        # 2 threads), with the same outputs up to float rounding (measured equal).
        out = rows.new_empty(rows.shape[0], second.out_features)
        step = max(1, BLOCK_FLOATS // first.out_features)
        for start in range(0, rows.shape[0], step):
            block = F.linear(rows[start : start + step], first.weight, first.bias)
            block = relu_dropout(block, drop.p, drop.training)
            torch.addmm(second.bias, block, second.weight.t(), out=out[start : start + step])
        return out.view(*x.shape[:-1], -1)


# The smallest row sum of exp(score) taken as exact: the row's largest score is then
# above about -49, so every term that shows in a float32 probability is a normal float.
_SMALLEST_SUM = 1e-20


class _ShortRowSoftmax(torch.autograd.Function):
    """Softmax over the last dim as exp(x) / sum exp(x), without the row maximum taken
    first: on rows of 25 that reduction made torch's CPU softmax 2.5x the time of exp,
    sum and divide (13.6 ms against 5.5 ms for the parser's (10240, 25, 25) scores on 2
    threads). Where a row's sum overflows or underflows, torch's softmax decides."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor) -> torch.Tensor:
        exps = torch.exp(scores)
        sums = exps.sum(-1, keepdim=True)
        low, high = torch.aminmax(sums)
        if low.item() >= _SMALLEST_SUM and high.item() < math.inf:
            probabilities = exps.div_(sums)
        else:
            probabilities = torch.softmax(scores, -1)
        ctx.save_for_backward(probabilities)
        return probabilities

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (probabilities,) = ctx.saved_tensors
        # p (g - sum(g p)) written out: on rows of 25 torch's _softmax_backward_data took
        # 1.5x the time (the parser's (1280, 8, 25, 25) weights, 2 threads).
        row_sums = (grad * probabilities).sum(-1, keepdim=True)
        return (grad - row_sums).mul_(probabilities)


def softmax_short_rows(scores: torch.Tensor) -> torch.Tensor:
    """torch.softmax(scores, -1), faster on a CPU for short float32 rows (attention among
    a few tokens); torch.softmax itself elsewhere."""
    if scores.device.type != "cpu" or scores.dtype != torch.float32:
        return torch.softmax(scores, -1)
    return _ShortRowSoftmax.apply(scores)
