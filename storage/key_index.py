"""The key index of a tensor table: every part's keys, row groups and row hashes, and
which row of each key is visible (the newest; see `avvp.storage.table`, duplicates)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .keys import Keys, joined_keys, positions_in
from .provenance import Provenance
from .rows import ROW_HASH_BYTES


@dataclass(frozen=True, eq=False)
class Part:
    name: str
    metadata: pq.FileMetaData
    schema: pa.Schema
    provenance: Provenance
    row_group_starts: np.ndarray  # first row of each group, then the row count
    video_ids: pa.Array
    windows: np.ndarray
    row_hashes: np.ndarray  # (rows, ROW_HASH_BYTES) uint8
    # Plain tensor columns: file offset of each row group's first value (storage.plain).
    value_starts: dict[str, np.ndarray]


@dataclass(frozen=True, eq=False)
class KeyIndex:
    """All parts' keys and row groups, concatenated in part-name order (oldest first)."""

    parts: tuple[Part, ...]
    part_starts: np.ndarray  # first row of each part, then the row count
    group_starts: np.ndarray  # first row of each row group, then the row count
    group_part: np.ndarray  # part number of each row group
    group_in_part: np.ndarray  # row group number within its part
    video_ids: pa.Array
    windows: np.ndarray
    joined: pa.Array
    visible: np.ndarray  # True on the last (newest) occurrence of each key
    visible_rows: np.ndarray  # positions of the visible rows, ascending
    visible_joined: pa.Array  # joined keys of the visible rows, each key once
    row_hashes: np.ndarray  # (rows, ROW_HASH_BYTES) uint8

    @classmethod
    def build(cls, parts: Sequence[Part]) -> KeyIndex:
        part_starts = np.cumsum([0] + [part.metadata.num_rows for part in parts])
        group_counts = [len(part.row_group_starts) - 1 for part in parts]
        group_starts = np.concatenate(
            [p.row_group_starts[:-1] + start for p, start in zip(parts, part_starts, strict=False)]
            + [part_starts[-1:]]
        )
        video_ids = pa.concat_arrays([part.video_ids for part in parts] or [pa.array([], "str")])
        windows = np.concatenate([part.windows for part in parts] + [np.zeros(0, np.int32)])
        row_hashes = np.concatenate(
            [part.row_hashes for part in parts] + [np.zeros((0, ROW_HASH_BYTES), np.uint8)]
        )
        joined = joined_keys(video_ids, windows)
        # The newest occurrence is the first one counted from the end.
        count = len(joined)
        newest_first = joined.take(pa.array(np.arange(count - 1, -1, -1)))
        visible = (positions_in(newest_first, newest_first) == np.arange(count))[::-1].copy()
        visible_rows = np.flatnonzero(visible)
        return cls(
            parts=tuple(parts),
            part_starts=part_starts,
            group_starts=group_starts,
            group_part=np.repeat(np.arange(len(parts)), group_counts),
            group_in_part=np.concatenate([np.arange(n) for n in group_counts] + [np.zeros(0, int)]),
            video_ids=video_ids,
            windows=windows,
            joined=joined,
            visible=visible,
            visible_rows=visible_rows,
            visible_joined=joined.take(pa.array(visible_rows)),
            row_hashes=row_hashes,
        )

    def rows_of(self, keys: Keys) -> np.ndarray:
        """The visible (newest) row of each key, -1 where the key is not stored."""
        return self.rows_of_joined(keys.joined())

    def rows_of_joined(self, joined: pa.Array) -> np.ndarray:
        found = positions_in(joined, self.visible_joined)
        rows = np.full(len(found), -1, np.int64)
        hit = found >= 0
        rows[hit] = self.visible_rows[found[hit]]
        return rows

    def visible_keys(self) -> Keys:
        ids = self.video_ids.filter(pa.array(self.visible))
        return Keys(ids.to_numpy(zero_copy_only=False), self.windows[self.visible])
