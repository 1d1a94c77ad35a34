"""Feature extractors (CLIP, R(2+1)D, CLAP) behind one small protocol. No store, no Prefect.

``create_extractor(name, size, weights, device)`` builds one of ``EXTRACTOR_NAMES``:

- ``clip``: CLIP ViT-L/14 (OpenAI), frames at 8 FPS -> 10 x 768; ``embed_texts`` and
  ``logit_scale`` for visual pseudo-labels.
- ``r2plus1d``: torchvision R(2+1)D-18 (Kinetics-400), frames at 8 FPS -> 10 x 512.
- ``clap``: LAION-CLAP HTSAT-tiny 630k fusion, mono audio at 48 kHz -> 64 x 768 map.
- ``clap-segments``: same network, audio -> 10 x 512 segment embeddings;
  ``embed_texts`` and ``logit_scale_a`` for audio pseudo-labels.

Every extractor (``FeatureExtractor``) has ``name``, ``version``, ``input`` (what one
window must be), ``output_shape``, ``weights_identity``, ``transform`` / ``preprocess``
(one window array -> network input, CPU, picklable for DataLoader workers), ``embed``
(a stacked batch -> features on its device) and ``metadata()`` for feature tables.
Weights are never downloaded: see ``WeightsNotFoundError``. Size "tiny" builds small,
seeded random versions of the same classes with the same output shapes.
"""

from .base import (
    FeatureExtractor,
    RandomInit,
    WeightsNotFoundError,
    WindowInput,
)
from .registry import EXTRACTOR_NAMES, create_extractor, extractor_class

__all__ = [
    "EXTRACTOR_NAMES",
    "FeatureExtractor",
    "RandomInit",
    "WeightsNotFoundError",
    "WindowInput",
    "create_extractor",
    "extractor_class",
]
