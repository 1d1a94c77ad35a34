"""One factory for every parser: build from a config, compute its training loss, import
official weights. Callers never branch on the model kind themselves."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from .config import ModelConfig, get_model_config
from .losses import MMCSELossConfig, mmcse_loss
from .mmcse import build_mmcse
from .mmcse_import import mmcse_from_official_state_dict
from .outputs import ParserOutput
from .valor import build_valor, valor_from_official_state_dict, valor_loss


@dataclass
class TrainingLoss:
    total: torch.Tensor
    terms: dict[str, torch.Tensor]


def create_model(config: ModelConfig | str) -> nn.Module:
    """A randomly initialised parser for a config or a preset name (`mmcse-clapclip`, ...)."""
    if isinstance(config, str):
        config = get_model_config(config)
    builders = {"mmcse": build_mmcse, "valor": build_valor}
    return builders[config.kind](config)


def needs_aux(config: ModelConfig, loss: MMCSELossConfig) -> bool:
    """Whether the training forward must compute the auxiliary outputs."""
    return config.kind == "mmcse" and (
        loss.reconstruction or loss.orthogonality or loss.co_occurrence
    )


def training_loss(
    config: ModelConfig,
    output: ParserOutput,
    weak_labels: torch.Tensor,
    audio_pseudo: torch.Tensor,
    visual_pseudo: torch.Tensor,
    loss: MMCSELossConfig | None = None,
) -> TrainingLoss:
    """The loss each network's official training step minimises."""
    if config.kind == "mmcse":
        result = mmcse_loss(output, weak_labels, audio_pseudo, visual_pseudo, loss)
        return TrainingLoss(result.total, result.terms)
    terms = valor_loss(output, weak_labels, audio_pseudo, visual_pseudo)
    total = terms.pop("total")
    return TrainingLoss(total, terms)


def from_official_state_dict(
    state_dict: Mapping[str, object], kind: str
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Map an official MM-CSE or VALOR state dict to (our config, our state dict)."""
    importers = {"mmcse": mmcse_from_official_state_dict, "valor": valor_from_official_state_dict}
    if kind not in importers:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {sorted(importers)}")
    return importers[kind](state_dict)
