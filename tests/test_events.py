"""Events as runs of positive segments: what the event metrics compare and parsing reports."""

from __future__ import annotations

import numpy as np

from avvp.model.events import runs_of_ones, segment_events


def test_runs_of_ones_give_each_rows_runs_in_time_order() -> None:
    rows = np.array([[0, 1, 1, 0, 1], [0, 0, 0, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    start, end, valid = runs_of_ones(rows)
    assert valid.tolist() == [[True, True], [False, False], [True, False]]
    assert start[valid].tolist() == [1, 4, 0] and end[valid].tolist() == [3, 5, 5]


def test_segment_events_locate_each_event_by_its_leading_indices() -> None:
    pred = np.zeros((2, 3, 4, 10), dtype=np.uint8)  # (video, modality, class, segment)
    pred[0, 1, 2, 3:6] = 1
    pred[1, 0, 0, [0, 1, 9]] = 1
    events = segment_events(pred)
    located = list(
        zip(
            *(axis.tolist() for axis in events.index),
            events.onset.tolist(),
            events.offset.tolist(),
            strict=True,
        )
    )
    assert located == [(0, 1, 2, 3, 6), (1, 0, 0, 0, 2), (1, 0, 0, 9, 10)]


def test_no_positive_segment_gives_no_event() -> None:
    events = segment_events(np.zeros((3, 10), dtype=bool))
    assert events.onset.size == 0 and events.index[0].size == 0
