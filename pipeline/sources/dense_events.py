"""The dense events file: per-modality truth a labels folder may carry.

`planted_events.csv` in an LLP-format labels folder: LLP's dense annotation format
(`filename  onset  offset  event_labels`, tab-separated, a header line, integer seconds,
an event covering segments onset..offset-1) with a `modality` column (`audio` or
`visual`) after the filename, for clips of every split, train included. `avvp synth
clips` writes it (the events it planted); a user may write one for their own annotated
videos. The `dense` pseudo-label source reads it.

- `write_planted_events`: the file from (filename, modality, onset, offset, class) rows;
- `planted_dense_labels`: (N, 2, T, 25) segment truth of some of its clips;
- `planted_rows`: every window of every clip it names, with that window's truth.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ...contract import SEGMENTS_PER_WINDOW
from ...model.classes import LLP_CLASSES, NUM_CLASSES
from .decode import DecodeError, window_valid_segments
from .llp import youtube_id

PLANTED_EVENTS_FILE = "planted_events.csv"
_HEADER = ("filename", "modality", "onset", "offset", "event_labels")


class PlantedRows(NamedTuple):
    """Every window of the clips of a dense events file: the video id and window number
    of each row and its (rows, T, K) audio and visual truth."""

    video_ids: list[str]
    windows: np.ndarray
    audio: np.ndarray
    visual: np.ndarray


def write_planted_events(
    folder: str | Path, rows: Iterable[tuple[str, str, int, int, str]]
) -> None:
    """Write `folder/planted_events.csv` from (filename, modality, onset, offset, class
    name) rows."""
    with (Path(folder) / PLANTED_EVENTS_FILE).open("w", encoding="utf-8", newline="") as stream:
        csv.writer(stream, delimiter="\t", lineterminator="\n").writerows([_HEADER, *rows])


def planted_dense_labels(
    folder: str | Path, filenames: Sequence[str], num_segments: int = SEGMENTS_PER_WINDOW
) -> np.ndarray:
    """Segment truth (N, 2, T, 25) uint8 of clips from `planted_events.csv`, any split."""
    path = Path(folder) / PLANTED_EVENTS_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no answer key; write the clips with write_synthetic_clips"
        )
    row_of = {name: i for i, name in enumerate(filenames)}
    dense = np.zeros((len(filenames), 2, num_segments, NUM_CLASSES), dtype=np.uint8)
    with path.open(encoding="utf-8", newline="") as stream:
        reader = csv.reader(stream, delimiter="\t")
        next(reader)
        for filename, modality, onset, offset, label in reader:
            if filename in row_of:
                track = 0 if modality == "audio" else 1
                k = LLP_CLASSES.index(label)
                dense[row_of[filename], track, int(onset) : int(offset), k] = 1
    return dense


def _planted_filenames(path: Path) -> list[str]:
    with path.open(encoding="utf-8", newline="") as stream:
        rows = list(csv.reader(stream, delimiter="\t"))
    return list(dict.fromkeys(row[0] for row in rows[1:] if row))


def _clip_seconds(filename: str, path: Path) -> float:
    """The duration an LLP-style filename `<id>_<start>_<end>` states."""
    try:
        _, start, end = filename.rsplit("_", 2)
        return float(end) - float(start)
    except ValueError:
        raise ValueError(
            f"{path}: {filename!r} is not a clip filename <id>_<start>_<end>"
        ) from None


def planted_rows(folder: Path) -> PlantedRows:
    """Every window of every clip of `folder/planted_events.csv` (as many as its
    filename's duration holds) with its audio and visual truth."""
    path = folder / PLANTED_EVENTS_FILE
    filenames = _planted_filenames(path)
    try:
        windows = [window_valid_segments(_clip_seconds(name, path), name) for name in filenames]
    except DecodeError as error:
        raise ValueError(f"{path}: {error}") from None
    longest = max((len(valid) for valid in windows), default=1)
    dense = planted_dense_labels(folder, filenames, longest * SEGMENTS_PER_WINDOW)
    ids, window_numbers, audio, visual = [], [], [], []
    for row, (filename, valid) in enumerate(zip(filenames, windows, strict=True)):
        for window in range(len(valid)):
            span = slice(window * SEGMENTS_PER_WINDOW, (window + 1) * SEGMENTS_PER_WINDOW)
            ids.append(youtube_id(filename))
            window_numbers.append(window)
            audio.append(dense[row, 0, span])
            visual.append(dense[row, 1, span])
    empty = np.zeros((0, SEGMENTS_PER_WINDOW, len(LLP_CLASSES)), np.uint8)
    return PlantedRows(
        ids,
        np.asarray(window_numbers, np.int64),
        np.stack(audio) if audio else empty,
        np.stack(visual) if visual else empty,
    )
