"""ReLU in place where that is safe and pays: on results nobody else reads, without grad."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
