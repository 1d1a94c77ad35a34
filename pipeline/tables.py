"""Names of the standard tables in a store, shared by every stage.

A stage that writes features for the parser writes them under these names, so that
training finds CLAP maps, CLIP and R(2+1)D features wherever they came from
(extraction, import of a release, or the synthetic mini-LLP).
"""

from __future__ import annotations

AUDIO_MAP_TABLE = "clap-htsat-fusion"  # (64, 768) CLAP token map per window (630k fusion)
AUDIO_SEGMENT_TABLE = "clap-htsat-segment"  # (10, 512) CLAP joint-space embedding per segment
VISUAL_TABLE = "clip-vit-l-14"  # (10, 768) CLIP image embedding per segment
VISUAL_ST_TABLE = "r2plus1d-18"  # (10, 512) R(2+1)D clip embedding per segment

WEAK_LABELS_TABLE = "weak"


PSEUDO_LABEL_PREFIX = "segment-"
DENSE_PREFIX = "dense-"


def pseudo_label_table(source: str) -> str:
    """Segment pseudo-labels of one source: `valor`, `generated-<model>`, `synthetic`."""
    return f"{PSEUDO_LABEL_PREFIX}{source}"


def dense_table(annotations: str) -> str:
    """Dense evaluation annotations: `corrected`, `published` (LLP) or `synthetic`."""
    return f"{DENSE_PREFIX}{annotations}"
