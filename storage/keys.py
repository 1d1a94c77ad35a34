"""Row keys of the tensor tables: `Keys` (video id and window per row) and the joined
one-string form that Arrow hash joins match stored keys with."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import ArrayLike

# Joins request keys with stored keys as one string; the window is last and has no
# separator, so the joined key is unambiguous whatever the video id contains.
_KEY_SEPARATOR = "\x1f"


@dataclass(frozen=True, eq=False)
class Keys:
    """Row keys: parallel arrays of video ids (object array of str) and windows (int32)."""

    video_ids: np.ndarray
    windows: np.ndarray

    @classmethod
    def of(cls, video_ids: Iterable[str], windows: ArrayLike | None = None) -> Keys:
        """Keys from parallel sequences; windows default to 0 (one window per video)."""
        if isinstance(video_ids, str):
            raise TypeError(
                f"video_ids must be a sequence of strings, not the string {video_ids!r}"
            )
        listed = video_ids if isinstance(video_ids, np.ndarray) else list(video_ids)
        ids = np.asarray(listed, dtype=object).reshape(-1)
        wins = np.zeros(len(ids), np.int32) if windows is None else np.asarray(windows)
        if wins.shape != ids.shape:
            raise ValueError(f"{len(ids)} video ids but windows of shape {wins.shape}")
        if wins.size and (wins.dtype.kind not in "iu" or wins.min() < 0 or wins.max() >= 2**31):
            raise ValueError(f"windows must be non-negative int32 values, got {wins.dtype}")
        return cls(ids, wins.astype(np.int32))

    @classmethod
    def from_pairs(cls, pairs: Iterable[tuple[str, int]]) -> Keys:
        pairs = list(pairs)
        ids, windows = zip(*pairs, strict=True) if pairs else ((), ())
        return cls.of(ids, np.asarray(windows, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, index: ArrayLike | slice) -> Keys:
        return Keys(self.video_ids[index], self.windows[index])

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return zip(self.video_ids.tolist(), self.windows.tolist(), strict=True)

    def joined(self) -> pa.Array:
        """Each key as one string, for Arrow hash joins."""
        try:
            ids = pa.array(self.video_ids, pa.string())
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise ValueError(f"video ids must be strings: {error}") from None
        return joined_keys(ids, self.windows)

    def describe(self, limit: int = 5) -> str:
        shown = ", ".join(f"({vid!r}, {win})" for vid, win in list(self[:limit]))
        return shown + (", ..." if len(self) > limit else "")


def as_keys(keys: Keys | Iterable[tuple[str, int]]) -> Keys:
    return keys if isinstance(keys, Keys) else Keys.from_pairs(keys)


def joined_keys(video_ids: pa.Array, windows: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(
        video_ids, pc.cast(pa.array(windows, pa.int32()), pa.string()), _KEY_SEPARATOR
    )


def positions_in(values: pa.Array, value_set: pa.Array) -> np.ndarray:
    """Index of each value's first occurrence in value_set, -1 where absent."""
    return pc.index_in(values, value_set=value_set).fill_null(-1).to_numpy().astype(np.int64)
