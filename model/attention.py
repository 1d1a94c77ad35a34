"""Multi-head attention among the class tokens of a segment, for MM-CSE's paths."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .activations import BLOCK_FLOATS, softmax_short_rows
from .dropout import dropout


class ClassTokenAttention(nn.Module):
    """Multi-head attention among the K class tokens of each segment.

    The parameters and their names are nn.MultiheadAttention's (in_proj_weight,
    in_proj_bias, out_proj), so official weights load unchanged; nn.MultiheadAttention
    itself works sequence-first and transposes every input and output (10-20% of an
    attention step on CPU at these shapes), while here heads are views of (N, T, K, C).
    """

    def __init__(self, dim: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"class_dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        # nn.MultiheadAttention's initialisation.
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(
        self, x: torch.Tensor, source: torch.Tensor | None, need_map: bool, project: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Queries from x, keys and values from source (x when None), both (N, T, K, C).
        Returns the attention output (N, T, K, C; before out_proj when not `project`) and,
        when asked, the head-averaged weights (N, T, K, K), taken after dropout as
        nn.MultiheadAttention returns them."""
        n, t, k, c = x.shape
        # Written out on a CPU: with 25 tokens of 16 dims per head, SDPA's CPU kernel took
        # 1.4x the time of these two bmm (inference, 2 threads), and in training the
        # dropout takes the cheaper mask. On a GPU SDPA's fused kernels are faster.
        written_out = need_map or x.device.type == "cpu"
        weight, bias = self.in_proj_weight, self.in_proj_bias
        if written_out:
            # The softmax scale goes into the query rows of the projection: a C x C
            # product instead of a pass over every query.
            scale = weight.new_ones(3 * c, 1)
            scale[:c] = (c // self.num_heads) ** -0.5
            weight, bias = weight * scale, bias * scale[:, 0]
        rows = x.reshape(n * t, k, c)
        sources = None if source is None else source.reshape(n * t, k, c)
        if torch.is_grad_enabled() or not written_out:
            attended, weights_map = self._attend(rows, sources, weight, bias, written_out, need_map)
            attended = attended.reshape(n, t, k, c)
        else:
            # Without autograd, a few hundred segments at a time: the projections and
            # scores of a block (8 MB) are reused from the heap and stay in cache; the
            # parser's attention took 0.89x the time of one pass (2 threads).
            attended = x.new_empty(n, t, k, c)
            weights_map = x.new_empty(n, t, k, k) if need_map else None
            step = max(1, BLOCK_FLOATS // (3 * k * c))
            for start in range(0, n * t, step):
                block = slice(start, start + step)
                block_sources = None if sources is None else sources[block]
                part, part_map = self._attend(
                    rows[block], block_sources, weight, bias, written_out, need_map
                )
                attended.view(n * t, k, *part.shape[-2:])[block] = part
                if weights_map is not None and part_map is not None:
                    weights_map.view(n * t, k, k)[block] = part_map
        if weights_map is not None:
            weights_map = weights_map.view(n, t, k, k)
        return self.out_proj(attended) if project else attended, weights_map

    def _attend(
        self,
        rows: torch.Tensor,
        sources: torch.Tensor | None,
        weight: torch.Tensor,
        bias: torch.Tensor,
        written_out: bool,
        need_map: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention within each of M segments, rows (M, K, C): the heads' outputs as
        (M, K, heads, C/heads), a strided view, and the (M, K, K) map when asked."""
        c = rows.shape[-1]
        sources = rows if sources is None else sources
        # Three products, not one chunked into three: the chunks' gradients would be
        # joined by a copy in backward, and 128-wide products took no longer (0.96x
        # forward and backward for 8,000 rows at paper size, 2 threads).
        query = F.linear(rows, weight[:c], bias[:c])
        key = F.linear(sources, weight[c : 2 * c], bias[c : 2 * c])
        value = F.linear(sources, weight[2 * c :], bias[2 * c :])
        query, key, value = self._heads(query), self._heads(key), self._heads(value)
        weights_map: torch.Tensor | None = None
        if written_out:
            weights = softmax_short_rows(query @ key.transpose(-2, -1))
            weights = dropout(weights, self.dropout, self.training)
            attended = weights @ value
            if need_map:
                weights_map = weights.mean(dim=1)
        else:
            dropout_p = self.dropout if self.training else 0.0
            attended = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout_p)
        return attended.transpose(1, 2), weights_map

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(M, K, C) -> (M, heads, K, C/heads), a view."""
        m, k, c = x.shape
        return x.view(m, k, self.num_heads, c // self.num_heads).transpose(1, 2)
