"""Feature store: one table per extractor under `<root>/features/<name>/`.

A row is one 10-s window of one video: `video_id`, `window`, `feature` (fixed-shape
tensor, float16 or float32, e.g. 10 x 768 for CLIP), `valid_segments` (int8, 1..10:
the segments of a padded last window that hold real content) and `has_audio` (bool).
Layout, crash safety and provenance rules are those of `avvp.storage.table`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from os import PathLike
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike

from ..contract import SEGMENTS_PER_WINDOW
from .keys import Keys, as_keys
from .location import list_tables, open_root
from .provenance import Provenance
from .table import TableView, TensorTable, WriteResult

KIND = "features"


class FeatureBatch(NamedTuple):
    keys: Keys
    features: np.ndarray  # (N, *shape)
    valid_segments: np.ndarray  # (N,) int8
    has_audio: np.ndarray  # (N,) bool


class FeatureTable(TableView):
    """One extractor's features; reads return rows in request order."""

    def write(
        self,
        video_ids: Iterable[str],
        windows: ArrayLike,
        features: ArrayLike,
        valid_segments: ArrayLike,
        has_audio: ArrayLike,
        provenance: Provenance,
    ) -> WriteResult:
        """Store the windows not stored yet as one new part (see `TensorTable.write`);
        windows already stored are skipped, whatever their values (features are keyed)."""
        keys = Keys.of(video_ids, windows)
        valid = np.asarray(valid_segments)
        if valid.size and (valid.min() < 1 or valid.max() > SEGMENTS_PER_WINDOW):
            raise ValueError(
                f"{self.url}: valid_segments must lie in 1..{SEGMENTS_PER_WINDOW}, got "
                f"{valid.min()}..{valid.max()}"
            )
        return self.table.write(
            keys,
            tensors={"feature": features},
            scalars={
                "valid_segments": pa.array(valid, pa.int8()),
                "has_audio": pa.array(np.asarray(has_audio), pa.bool_()),
            },
            provenance=provenance,
        )

    def read(self, keys: Keys | Iterable[tuple[str, int]]) -> np.ndarray:
        """Features of the given keys as one contiguous (N, *shape) array."""
        return self.table.read(keys, ["feature"])["feature"]

    def read_batch(self, keys: Keys | Iterable[tuple[str, int]]) -> FeatureBatch:
        keys = as_keys(keys)
        columns = self.table.read(keys, ["feature", "valid_segments", "has_audio"])
        return FeatureBatch(
            keys, columns["feature"], columns["valid_segments"], columns["has_audio"]
        )

    def read_videos(self, video_ids: Iterable[str]) -> FeatureBatch:
        """All windows of the given videos, videos in request order, windows ascending."""
        return self.read_batch(self.table.keys_of_videos(video_ids))

    def stored_windows(self, video_ids: Sequence[str]) -> dict[str, set[int]]:
        """Windows stored per video, for the given videos only (reads the key columns);
        videos the table lacks are absent."""
        keys = self.keys()
        wanted = pc.is_in(
            pa.array(keys.video_ids, pa.string()), value_set=pa.array(list(video_ids), pa.string())
        ).to_numpy(zero_copy_only=False)
        result: dict[str, set[int]] = {}
        for video_id, window in zip(
            keys.video_ids[wanted].tolist(), keys.windows[wanted].tolist(), strict=True
        ):
            result.setdefault(video_id, set()).add(window)
        return result

    def compact(self) -> int:
        return self.table.compact()

    def cleanup(self, min_age_s: float = 3600.0) -> int:
        return self.table.cleanup(min_age_s)


class FeatureStore:
    """Feature tables under one root (a local path or an fsspec URL)."""

    def __init__(self, root: str | PathLike[str]) -> None:
        self.root = str(root)
        self._tables: dict[str, FeatureTable] = {}

    def table(self, name: str) -> FeatureTable:
        if name not in self._tables:
            self._tables[name] = FeatureTable(TensorTable.open(self.root, KIND, name))
        return self._tables[name]

    def table_names(self) -> list[str]:
        fs, path = open_root(self.root)
        return list_tables(fs, f"{path}/{KIND}")
