"""Put LLP's labels into the label store: weak labels with splits, and dense truth.

Feature tables are keyed by the 11-character YouTube id with window 0 (an LLP clip is one
10-s window), so the label tables use the same keys. Dense truth is written for both
audio annotation files (`dense-corrected`, `dense-published`) so an evaluation can pick
either without touching the CSV files again.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np

from avvp.pipeline import tables
from avvp.pipeline.llp import (
    AUDIO_FILES,
    DENSELY_ANNOTATED_SPLITS,
    AudioAnnotations,
    LLPAnnotations,
    youtube_id,
)
from avvp.storage import LabelStore, Provenance

LABELS_VERSION = "1"


def import_llp_labels(root: str, source: str | Path | None = None) -> dict[str, int]:
    """Write weak labels (all splits) and dense truth (val, test) of an LLP-format folder.

    `source` is a folder with the six LLP files (default: the vendored LLP release).
    Returns the number of rows written per table; rerunning writes nothing new.
    """
    store = LabelStore(root)
    written: dict[str, int] = {}
    origin = "llp-vendored" if source is None else f"llp-folder:{Path(source).name}"
    annotations = LLPAnnotations.load(source)
    filenames, splits = [], []
    for split in ("train", "val", "test"):
        names = annotations.split(split)
        filenames += names
        splits += [split] * len(names)
    ids = [youtube_id(name) for name in filenames]
    provenance = Provenance(source=origin, version=LABELS_VERSION)
    result = store.weak().write(ids, annotations.weak_labels(filenames), splits, provenance)
    written[tables.WEAK_LABELS_TABLE] = result.written

    for audio in get_args(AudioAnnotations):
        if source is not None and not (Path(source) / AUDIO_FILES[audio]).is_file():
            continue  # a folder of LLP-format files may carry only the corrected audio file
        annotations = LLPAnnotations.load(source, audio=audio)
        provenance = Provenance(source=origin, version=LABELS_VERSION, extras={"audio": audio})
        evaluated = [
            name for split in DENSELY_ANNOTATED_SPLITS for name in annotations.split(split)
        ]
        dense = annotations.dense(evaluated)
        ids = [youtube_id(name) for name in evaluated]
        windows = np.zeros(len(ids), dtype=np.int32)
        result = store.segments(tables.dense_table(audio)).write(
            ids, windows, dense[:, 0], dense[:, 1], provenance
        )
        written[tables.dense_table(audio)] = result.written
    return written
