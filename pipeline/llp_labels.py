"""Put LLP's labels into the label store: weak labels with splits, and dense truth.

Feature tables are keyed by the 11-character YouTube id with window 0 (an LLP clip is one
10-s window), so the label tables use the same keys. Dense truth is written for both
audio annotation files (`dense-corrected`, `dense-published`) so an evaluation can pick
either without touching the CSV files again.

Labels are content: importing an edited folder again replaces exactly the rows whose
labels (or split) changed, and the result says how many rows of each table were new,
replaced and unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import numpy as np
from pydantic import BaseModel, Field

from ..storage import LabelStore, Provenance, WriteResult
from . import tables
from .sources.llp import (
    AUDIO_FILES,
    DENSELY_ANNOTATED_SPLITS,
    AudioAnnotations,
    LLPAnnotations,
    youtube_id,
)

LABELS_VERSION = "1"
# The rows' provenance is the file format, not the folder they were read from: labels are
# content, so the same videos' labels read from another folder replace the changed rows.
LABELS_SOURCE = "llp-format-files"


class TableRows(BaseModel):
    """What one write did to one label table, in rows."""

    written: int = 0  # new keys
    replaced: int = 0  # stored keys whose labels changed
    unchanged: int = 0  # stored keys with the same labels

    @classmethod
    def of(cls, result: WriteResult) -> TableRows:
        return cls(written=result.written, replaced=result.replaced, unchanged=result.skipped)


class LLPLabelsResult(BaseModel):
    """What `import_llp_labels` wrote, per label table (JSON-serialisable)."""

    tables: dict[str, TableRows] = Field(default_factory=dict)

    def lines(self) -> list[str]:
        """One line per table, e.g. 'weak: 0 rows written, 1 replaced, 199 unchanged'."""
        return [
            f"{table}: {rows.written} rows written, {rows.replaced} replaced, "
            f"{rows.unchanged} unchanged"
            for table, rows in self.tables.items()
        ]


def import_llp_labels(root: str, source: str | Path | None = None) -> LLPLabelsResult:
    """Write weak labels (all splits) and dense truth (val, test) of an LLP-format folder.

    `source` is a folder with the six LLP files (default: the vendored LLP release).
    Returns the rows written, replaced and unchanged per table: rerunning on the same
    files writes nothing, and after an edit only the changed rows are replaced.
    """
    store = LabelStore(root)
    result = LLPLabelsResult()
    annotations = LLPAnnotations.load(source)
    filenames, splits = [], []
    for split in ("train", "val", "test"):
        names = annotations.split(split)
        filenames += names
        splits += [split] * len(names)
    ids = [youtube_id(name) for name in filenames]
    provenance = Provenance(source=LABELS_SOURCE, version=LABELS_VERSION)
    written = store.weak().write(ids, annotations.weak_labels(filenames), splits, provenance)
    result.tables[tables.WEAK_LABELS_TABLE] = TableRows.of(written)

    for audio in get_args(AudioAnnotations):
        if source is not None and not (Path(source) / AUDIO_FILES[audio]).is_file():
            continue  # a folder of LLP-format files may carry only the corrected audio file
        annotations = LLPAnnotations.load(source, audio=audio)
        provenance = Provenance(
            source=LABELS_SOURCE, version=LABELS_VERSION, extras={"audio": audio}
        )
        evaluated = [
            name for split in DENSELY_ANNOTATED_SPLITS for name in annotations.split(split)
        ]
        dense = annotations.dense(evaluated)
        ids = [youtube_id(name) for name in evaluated]
        windows = np.zeros(len(ids), dtype=np.int32)
        written = store.segments(tables.dense_table(audio)).write(
            ids, windows, dense[:, 0], dense[:, 1], provenance
        )
        result.tables[tables.dense_table(audio)] = TableRows.of(written)
    return result
