"""What a report inspects inside MM-CSE: its class features and co-occurrence maps, from
the same steps `MMCSE.forward` runs (opt-in; the forward itself is unchanged)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .mmcse import MMCSE
from .outputs import ParserOutput


class MMCSEInternals(NamedTuple):
    """What `forward_internals` gives: the outputs and the tensors a report inspects.

    output: the ParserOutput of the inference forward (aux empty).
    audio_class_features, visual_class_features: (B, T, K, C) CAFD class features, the
    tokens the first FGSE layer takes (with decoupling off, the one shared projection
    repeated for every class).
    co_occurrence: the last FGSE layer's head-averaged SECM weights (B, T, K, K) by name,
    as forward(with_aux=True) names them: map_aa, map_vv (intra path), map_av, map_va
    (cross path; map_av has audio class queries and visual class keys), as far as the
    ablation options keep them. Taken in eval mode they are plain softmax rows.
    """

    output: ParserOutput
    audio_class_features: torch.Tensor
    visual_class_features: torch.Tensor
    co_occurrence: dict[str, torch.Tensor]


def forward_internals(
    model: MMCSE, audio: torch.Tensor, visual: torch.Tensor, visual_st: torch.Tensor
) -> MMCSEInternals:
    """MMCSE.forward's steps with the CAFD class features and the last layer's SECM maps
    kept. The maps are asked for as forward(with_aux=True) asks for them, so the outputs
    equal that forward's; the training-only decoders and losses are not run."""
    encoded = model._encode(audio, visual, visual_st, with_maps=True)
    return MMCSEInternals(
        model.head.pool(encoded.scores),
        encoded.audio_classes.tokens,
        encoded.visual_classes.tokens,
        encoded.maps,
    )
