"""Build an extractor by name, in the manner of torchvision's model builders.

Modules are imported on demand: open_clip, transformers and laion-clap's audio code
take seconds to import, and a command that extracts only R(2+1)D needs none of them.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from .base import FeatureExtractor, Size, WeightsArg
from .precision import Precision

_CLASSES: dict[str, tuple[str, str]] = {
    "clip": ("avvp.extractors.clip", "ClipExtractor"),
    "r2plus1d": ("avvp.extractors.r2plus1d", "R2Plus1DExtractor"),
    "clap": ("avvp.extractors.clap", "ClapMapExtractor"),
    "clap-segments": ("avvp.extractors.clap", "ClapSegmentExtractor"),
}
EXTRACTOR_NAMES: tuple[str, ...] = tuple(_CLASSES)


def extractor_class(name: str) -> type[FeatureExtractor]:
    """The class behind ``name``, imported on first use: one of ``EXTRACTOR_NAMES``, or
    ``module:Class`` for an extractor class outside this package."""
    if ":" in name:
        module, attribute = name.split(":", 1)
    elif name in _CLASSES:
        module, attribute = _CLASSES[name]
    else:
        raise ValueError(f"unknown extractor {name!r}; expected one of {', '.join(_CLASSES)}")
    found = getattr(importlib.import_module(module), attribute, None)
    if not (isinstance(found, type) and issubclass(found, FeatureExtractor)):
        raise ValueError(f"{name}: {attribute} in {module} is not a FeatureExtractor class")
    return found


def create_extractor(
    name: str,
    size: Size = "paper",
    weights: WeightsArg = None,
    device: str | torch.device | None = None,
    precision: Precision = "auto",
    **options: Any,
) -> FeatureExtractor:
    """Build extractor ``name`` ("clip", "r2plus1d", "clap" or "clap-segments").

    size: "paper" (the published backbone) or "tiny" (same classes and output shapes,
        small and randomly initialised; for tests and demos).
    weights: None for the size's default (the released file, found in the backbone
        library's cache, for "paper"), a path to the weight file, the extractor's
        weights enum member, or ``RandomInit(seed)``.
    device: where ``embed`` runs; the default is CUDA when available, else the CPU.
    precision: "auto" (bf16 on CUDA and, for the paper size, on a CPU with native bf16;
        else float32: ``network_dtype``), "float32" or "bfloat16".
    options: extractor-specific; the CLAP ones take ``roberta`` (a local roberta-base
        folder for ``embed_texts`` of the paper size).
    """
    if precision != "auto":
        # Only when asked: extractor classes written before `precision` get "auto".
        options["precision"] = precision
    return extractor_class(name)(size=size, weights=weights, device=device, **options)
