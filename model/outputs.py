"""The output contract shared by every parser (MM-CSE, VALOR)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class ParserOutput:
    """Predictions of a parser for a batch of B windows of T segments and K classes.

    global_prob, a_prob, v_prob: (B, K) video-level probabilities (MMIL pooling).
    frame_prob, frame_logits: (B, T, 2, K), modality order [audio, visual].
    aux: training-only tensors (attention maps, reconstruction and orthogonality
    losses); empty in the inference forward.
    """

    global_prob: torch.Tensor
    a_prob: torch.Tensor
    v_prob: torch.Tensor
    frame_prob: torch.Tensor
    frame_logits: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
