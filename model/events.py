"""Events: runs of consecutive positive segments, with their onset and offset.

The official event-level metrics compare such runs; batch parsing reports them. Both
use these helpers, so an event means the same thing in a score and in a timeline.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


def runs_of_ones(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of ones in each row of a boolean (R, T) array.

    Returns start, end (exclusive), valid: (R, M) with M the most runs of any row; slots
    past a row's last run are invalid.
    """
    edges = np.diff(rows.astype(np.int8), axis=-1, prepend=0, append=0)  # (R, T + 1)
    rises = edges == 1
    run_number = np.cumsum(rises, axis=-1)  # label of the run each position belongs to
    start_row, start_pos = np.nonzero(rises)
    end_row, end_pos = np.nonzero(edges == -1)
    # nonzero walks row by row, so the i-th rise and the i-th fall bound the same run.
    slot = run_number[start_row, start_pos] - 1
    max_runs = max(int(run_number[:, -1].max(initial=0)), 1)
    start = np.zeros((rows.shape[0], max_runs), dtype=np.int64)
    end = np.zeros_like(start)
    valid = np.zeros(start.shape, dtype=bool)
    start[start_row, slot] = start_pos
    end[end_row, slot] = end_pos
    valid[start_row, slot] = True
    return start, end, valid


class Events(NamedTuple):
    """Events as parallel arrays: `index` locates the event's row in the input's
    leading axes (a tuple of arrays, as np.nonzero gives), onset and offset are
    segment positions along the last axis (offset exclusive)."""

    index: tuple[np.ndarray, ...]
    onset: np.ndarray
    offset: np.ndarray


def segment_events(pred: np.ndarray) -> Events:
    """Every run of ones along the last axis of a binary (..., T) array.

    For parser output (N, 3, T, K) transposed to (N, 3, K, T), `index` is (video,
    modality, class) of each event, in row order, and runs in time order within a row.
    """
    leading = pred.shape[:-1]
    start, end, valid = runs_of_ones(pred.reshape(-1, pred.shape[-1]).astype(bool))
    row, slot = np.nonzero(valid)
    return Events(np.unravel_index(row, leading), start[row, slot], end[row, slot])
