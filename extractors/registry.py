"""Build an extractor by name, in the manner of torchvision's model builders.

Modules are imported on demand: open_clip, transformers and laion-clap's audio code
take seconds to import, and a command that extracts only R(2+1)D needs none of them.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from .base import FeatureExtractor, Preset, WeightsArg

_CLASSES: dict[str, tuple[str, str]] = {
    "clip": ("avvp.extractors.clip", "ClipExtractor"),
    "r2plus1d": ("avvp.extractors.r2plus1d", "R2Plus1DExtractor"),
    "clap": ("avvp.extractors.clap", "ClapMapExtractor"),
    "clap-segments": ("avvp.extractors.clap", "ClapSegmentExtractor"),
}
EXTRACTOR_NAMES: tuple[str, ...] = tuple(_CLASSES)


def extractor_class(name: str) -> type[FeatureExtractor]:
    """The class behind ``name``, imported on first use."""
    if name not in _CLASSES:
        raise ValueError(f"unknown extractor {name!r}; expected one of {', '.join(_CLASSES)}")
    module, attribute = _CLASSES[name]
    return getattr(importlib.import_module(module), attribute)


def create_extractor(
    name: str,
    preset: Preset = "paper",
    weights: WeightsArg = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> FeatureExtractor:
    """Build extractor ``name`` ("clip", "r2plus1d", "clap" or "clap-segments").

    preset: "paper" (the published backbone) or "tiny" (same classes and output shapes,
        small and randomly initialised; for tests and demos).
    weights: None for the preset's default (the released file, found in the backbone
        library's cache, for "paper"), a path to the weight file, the extractor's
        weights enum member, or ``RandomInit(seed)``.
    device: where ``embed`` runs; the default is CUDA when available, else the CPU.
    options: extractor-specific; the CLAP ones take ``roberta`` (a local roberta-base
        folder for ``embed_texts`` of the paper preset).
    """
    return extractor_class(name)(preset=preset, weights=weights, device=device, **options)
