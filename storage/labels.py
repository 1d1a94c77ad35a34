"""Label store: label tables under `<root>/labels/<name>/`.

- `weak`: one row per video (`window` 0): `labels` (fixed-shape tensor, (25,) uint8,
  class order of the caller) and `split` (string: train, val, test, ...).
- segment labels per source, e.g. `segment-valor`, `segment-generated-<model>`,
  `dense-corrected`, `dense-published`: one row per (video, window) with `audio` and
  `visual` fixed-shape tensors, (10, 25) uint8 (segment x class).

Label tables keep a provenance like feature tables (source name, version, ...); its
dtype and shape describe every tensor column of the table. Layout and crash safety are
those of `avvp.storage.table`.

Labels are content, not keys: a write replaces the stored rows whose labels (or split)
changed, skips identical ones and adds new keys (`TensorTable.write(replace=True)`), so
an edited label file imported again changes exactly the rows it changes. Its
`WriteResult` counts them: `written` new, `replaced` changed, `skipped` unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from os import PathLike
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from numpy.typing import ArrayLike

from .keys import Keys, as_keys
from .location import check_table_name, list_tables, open_root
from .provenance import Provenance
from .table import TableView, TensorTable, WriteResult

KIND = "labels"
WEAK_TABLE = "weak"


class WeakLabels(NamedTuple):
    video_ids: np.ndarray  # (N,) str objects
    labels: np.ndarray  # (N, classes) uint8
    splits: np.ndarray  # (N,) str objects


class SegmentLabels(NamedTuple):
    keys: Keys
    audio: np.ndarray  # (N, segments, classes) uint8
    visual: np.ndarray  # (N, segments, classes) uint8


class WeakLabelTable(TableView):
    """Weak (video-level) labels and the split of each video."""

    def write(
        self,
        video_ids: Iterable[str],
        labels: ArrayLike,
        splits: Iterable[str],
        provenance: Provenance,
    ) -> WriteResult:
        """Store each video's labels and split; changed rows replace the stored ones."""
        keys = Keys.of(video_ids)
        return self.table.write(
            keys,
            tensors={"labels": labels},
            scalars={"split": pa.array(list(splits), pa.string())},
            provenance=replace_dtype(provenance, "uint8"),
            replace=True,
        )

    def read(self, video_ids: Iterable[str] | None = None) -> WeakLabels:
        """Weak labels of the given videos in request order, or of all stored videos."""
        keys = self.table.keys() if video_ids is None else Keys.of(video_ids)
        columns = self.table.read(keys, ["labels", "split"])
        return WeakLabels(keys.video_ids, columns["labels"], columns["split"])


class SegmentLabelTable(TableView):
    """Segment labels of one source, per window: audio and visual (segments, classes)."""

    def write(
        self,
        video_ids: Iterable[str],
        windows: ArrayLike,
        audio: ArrayLike,
        visual: ArrayLike,
        provenance: Provenance,
    ) -> WriteResult:
        """Store each window's labels; changed rows replace the stored ones."""
        return self.table.write(
            Keys.of(video_ids, windows),
            tensors={"audio": audio, "visual": visual},
            scalars={},
            provenance=replace_dtype(provenance, "uint8"),
            replace=True,
        )

    def read(self, keys: Keys | Iterable[tuple[str, int]]) -> SegmentLabels:
        keys = as_keys(keys)
        columns = self.table.read(keys, ["audio", "visual"])
        return SegmentLabels(keys, columns["audio"], columns["visual"])

    def read_videos(self, video_ids: Iterable[str]) -> SegmentLabels:
        return self.read(self.table.keys_of_videos(video_ids))


def replace_dtype(provenance: Provenance, dtype: str) -> Provenance:
    """Labels default to uint8 when the caller's provenance leaves the dtype unset."""
    return provenance if provenance.dtype else replace(provenance, dtype=dtype)


class LabelStore:
    """Label tables under one root (a local path or an fsspec URL)."""

    def __init__(self, root: str | PathLike[str]) -> None:
        self.root = str(root)
        self._tables: dict[str, TensorTable] = {}

    def _table(self, name: str) -> TensorTable:
        if name not in self._tables:
            self._tables[name] = TensorTable.open(self.root, KIND, name)
        return self._tables[name]

    def weak(self) -> WeakLabelTable:
        return WeakLabelTable(self._table(WEAK_TABLE))

    def segments(self, name: str) -> SegmentLabelTable:
        """Segment labels of one source, e.g. 'segment-valor' or 'dense-corrected'."""
        if check_table_name(name) == WEAK_TABLE:
            raise ValueError(f"'{WEAK_TABLE}' holds weak video labels; use LabelStore.weak()")
        return SegmentLabelTable(self._table(name))

    def table_names(self) -> list[str]:
        fs, path = open_root(self.root)
        return list_tables(fs, f"{path}/{KIND}")
