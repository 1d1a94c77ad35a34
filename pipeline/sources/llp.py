"""The LLP annotation files: splits, weak video labels and dense per-modality truth.

Six tab-separated files with a header line (vendored in `avvp.pipeline.data.llp`, or
any directory holding files of the same names and format):

- AVVP_train.csv, AVVP_val_pd.csv, AVVP_test_pd.csv, AVVP_dataset_full.csv:
  `filename  event_labels`, filename `<YouTube id>_<start>_<end>`, labels
  comma-separated class names;
- AVVP_eval_audio.csv, AVVP_eval_visual.csv: `filename  onset  offset  event_labels`,
  integer seconds; an event covers segments onset..offset-1.

A filename listed twice with different labels, in one weak-label file or in two of
them (a split file and the full file), is an error naming both lines: which labels are
meant cannot be guessed. Listed twice with the same labels, it counts once.

Dense rows are matched to videos by exact filename, as the official evaluation does.
Rows that match no val/test video, or whose onset is not before their offset, cover
nothing there; they are kept out the same way here and reported in one warning. That is
how the published numbers came about with the older audio file
(AVVP_eval_audio.published.csv: two rows carry a class name as filename, one filename
ends in a stray back-tick).
"""

from __future__ import annotations

import csv
import functools
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np

from ...contract import SEGMENTS_PER_WINDOW
from ...model.classes import CLASS_INDEX, NUM_CLASSES

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

AudioAnnotations = Literal["corrected", "published"]
SPLIT_FILES: dict[str, str] = {
    "train": "AVVP_train.csv",
    "val": "AVVP_val_pd.csv",
    "test": "AVVP_test_pd.csv",
    "full": "AVVP_dataset_full.csv",
}
AUDIO_FILES: dict[str, str] = {
    "corrected": "AVVP_eval_audio.csv",
    "published": "AVVP_eval_audio.published.csv",
}
VISUAL_FILE = "AVVP_eval_visual.csv"
DENSELY_ANNOTATED_SPLITS = ("val", "test")
_WEAK_HEADER = ("filename", "event_labels")
_DENSE_HEADER = ("filename", "onset", "offset", "event_labels")
_FILENAME = re.compile(r"(?P<id>.+)_(?P<start>\d+(?:\.\d+)?)_(?P<end>\d+(?:\.\d+)?)")
_SHOWN = 5  # offending names quoted in one error message


class AnnotationError(ValueError):
    """An LLP annotation file is missing or malformed, or a video has no annotation."""


class IgnoredAnnotationWarning(UserWarning):
    """Rows of a dense annotation file that cover nothing (kept out, as officially)."""


@dataclass(frozen=True)
class IgnoredRow:
    """A dense annotation row that contributes to no video's ground truth."""

    file: str
    line: int
    filename: str
    reason: str


class _WeakRow(NamedTuple):
    """One row of a weak-label file."""

    line: int
    filename: str
    class_indices: list[int]
    event_labels: str  # as written in the file


@dataclass(frozen=True, eq=False)
class _DenseEvents:
    """One dense annotation file, one entry per (row, class)."""

    file: str
    filename: np.ndarray  # str
    onset: np.ndarray
    offset: np.ndarray
    class_index: np.ndarray
    line: np.ndarray


def llp_video_ids(source: str | Path | None = None) -> frozenset[str]:
    """The YouTube ids of every video in an LLP-format folder (default: the vendored
    LLP), read from its full weak-label file."""
    return _llp_video_ids(None if source is None else str(Path(source).resolve()))


@functools.lru_cache(maxsize=8)
def _llp_video_ids(source: str | None) -> frozenset[str]:
    full = _source_folder(source) / SPLIT_FILES["full"]
    return frozenset(youtube_id(row.filename) for row in _read_weak(full))


def youtube_id(filename: str) -> str:
    """The YouTube id of an LLP filename `<id>_<start>_<end>` (11 characters in LLP).

    Feature files are keyed by this id.
    """
    match = _FILENAME.fullmatch(filename)
    if match is None:
        raise AnnotationError(
            f"{filename!r} is not an LLP filename: expected <YouTube id>_<start>_<end>, "
            "e.g. 4YdbENYcIyE_23_33"
        )
    return match["id"]


@dataclass(frozen=True, eq=False)
class LLPAnnotations:
    """The LLP splits, weak labels and dense annotations of one source directory.

    Build it with `LLPAnnotations.load`.
    """

    source: str
    audio: AudioAnnotations
    splits: dict[str, tuple[str, ...]]
    ignored_rows: tuple[IgnoredRow, ...]
    _weak_row: dict[str, int]
    _weak_matrix: np.ndarray
    _filename_of_id: dict[str, str]
    _annotated: frozenset[str]
    _dense: tuple[_DenseEvents, _DenseEvents]

    @classmethod
    def load(
        cls,
        source: str | Path | None = None,
        audio: AudioAnnotations = "corrected",
    ) -> LLPAnnotations:
        """Read the six LLP files from `source` (default: the vendored copy).

        audio: "corrected" reads AVVP_eval_audio.csv, "published" the older
        AVVP_eval_audio.published.csv that produced the published numbers; the visual
        file is the same for both. Rows that cover nothing are reported in one
        IgnoredAnnotationWarning and listed in `ignored_rows`.
        """
        if audio not in AUDIO_FILES:
            raise AnnotationError(
                f"unknown audio annotations {audio!r}: use one of {', '.join(AUDIO_FILES)}"
            )
        folder = _source_folder(source)
        weak_files = _read_weak_files(folder)
        full_file = str(folder / SPLIT_FILES["full"])
        weak_rows = weak_files["full"]
        weak_matrix = np.zeros((len(weak_rows), NUM_CLASSES), dtype=np.uint8)
        for row, weak_row in enumerate(weak_rows):
            weak_matrix[row, weak_row.class_indices] = 1
        splits = {split: tuple(row.filename for row in rows) for split, rows in weak_files.items()}
        annotated = frozenset(name for split in DENSELY_ANNOTATED_SPLITS for name in splits[split])
        dense = (
            _read_dense(folder / AUDIO_FILES[audio]),
            _read_dense(folder / VISUAL_FILE),
        )
        ignored = tuple(row for events in dense for row in _ignored_rows(events, annotated))
        _warn_ignored(ignored)
        return cls(
            source=str(folder),
            audio=audio,
            splits=splits,
            ignored_rows=ignored,
            _weak_row={weak_row.filename: row for row, weak_row in enumerate(weak_rows)},
            _weak_matrix=weak_matrix,
            _filename_of_id={
                _youtube_id_at(full_file, row.line, row.filename): row.filename for row in weak_rows
            },
            _annotated=annotated,
            _dense=dense,
        )

    def split(self, name: str) -> list[str]:
        """Filenames of a split ("train", "val", "test" or "full"), in file order."""
        if name not in self.splits:
            raise AnnotationError(f"unknown split {name!r}: use one of {', '.join(self.splits)}")
        return list(self.splits[name])

    def to_filenames(self, video_ids: Sequence[str]) -> list[str]:
        """Map LLP filenames or bare YouTube ids to LLP filenames."""
        filenames = [
            video_id if video_id in self._weak_row else self._filename_of_id.get(video_id)
            for video_id in video_ids
        ]
        unknown = [
            video_id for video_id, name in zip(video_ids, filenames, strict=True) if name is None
        ]
        if unknown:
            raise AnnotationError(
                f"{_count_and_examples(unknown)} are neither LLP filenames nor YouTube ids of "
                f"{self.source}/{SPLIT_FILES['full']}"
            )
        return filenames

    def weak_labels(self, filenames: Sequence[str]) -> np.ndarray:
        """Video-level labels (N, 25) uint8 in class order."""
        unknown = [name for name in filenames if name not in self._weak_row]
        if unknown:
            raise AnnotationError(
                f"{_count_and_examples(unknown)} have no weak labels in "
                f"{self.source}/{SPLIT_FILES['full']}"
            )
        return self._weak_matrix[[self._weak_row[name] for name in filenames]]

    def dense(
        self, filenames: Sequence[str], num_segments: int = SEGMENTS_PER_WINDOW
    ) -> np.ndarray:
        """Dense ground truth (N, 2, T, 25) uint8, modality order [audio, visual].

        Only val and test videos are densely annotated; asking for another is an error,
        as is an event ending after segment `num_segments`.
        """
        missing = [name for name in filenames if name not in self._annotated]
        if missing:
            raise AnnotationError(
                f"{_count_and_examples(missing)} have no dense annotations: only the videos of "
                f"{SPLIT_FILES['val']} and {SPLIT_FILES['test']} in {self.source} have them"
            )
        if not filenames:
            return np.zeros((0, 2, num_segments, NUM_CLASSES), dtype=np.uint8)
        unique_names, video_of_request = np.unique(
            np.asarray(filenames, dtype=str), return_inverse=True
        )
        truth = np.zeros((len(unique_names), 2, num_segments, NUM_CLASSES), dtype=np.uint8)
        for modality, events in enumerate(self._dense):
            slot = np.searchsorted(unique_names, events.filename).clip(max=len(unique_names) - 1)
            selected = (unique_names[slot] == events.filename) & (events.onset < events.offset)
            too_late = selected & (events.offset > num_segments)
            if too_late.any():
                first = np.flatnonzero(too_late)[0]
                raise AnnotationError(
                    f"{events.file}, line {events.line[first]}: offset {events.offset[first]} "
                    f"is beyond the {num_segments} segments of a video"
                )
            covers = np.arange(num_segments) >= events.onset[selected, None]
            covers &= np.arange(num_segments) < events.offset[selected, None]
            event, segment = np.nonzero(covers)
            truth[slot[selected][event], modality, segment, events.class_index[selected][event]] = 1
        return truth[video_of_request]


def _source_folder(source: str | Path | None) -> Traversable:
    if source is None:
        return resources.files("avvp.pipeline.data.llp")
    source = Path(source)
    if not source.is_dir():
        raise AnnotationError(
            f"{source} is not a directory: point it at a folder holding the six LLP files "
            f"({', '.join([*SPLIT_FILES.values(), AUDIO_FILES['corrected'], VISUAL_FILE])})"
        )
    return source


def _read_rows(resource: Traversable, header: tuple[str, ...]) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each non-blank row after the checked header."""
    if not resource.is_file():
        raise AnnotationError(
            f"{resource} is missing: an LLP annotation folder needs it"
            " (see avvp.pipeline.sources.llp)"
        )
    with resource.open("r", encoding="utf-8", newline="") as stream:
        rows = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            first = tuple(next(rows, []))
            if first != header:
                raise AnnotationError(
                    f"{resource}, line 1: header {first} should be the tab-separated columns "
                    f"{header}"
                )
            for fields in rows:
                if fields:
                    if len(fields) != len(header):
                        raise AnnotationError(
                            f"{resource}, line {rows.line_num}: expected {len(header)} "
                            f"tab-separated fields {header}, found {len(fields)}: {tuple(fields)}"
                        )
                    yield rows.line_num, fields
        except UnicodeDecodeError as error:
            raise AnnotationError(
                f"{resource}: not UTF-8 text ({error.reason} at "
                f"byte 0x{error.object[error.start]:02x}); save the file as UTF-8"
            ) from None


def _class_indices(file: str, line: int, event_labels: str) -> list[int]:
    names = event_labels.split(",")
    unknown = [name for name in names if name not in CLASS_INDEX]
    if unknown:
        raise AnnotationError(
            f"{file}, line {line}: unknown class name {unknown[0]!r}; the LLP classes are "
            "listed in avvp.model.classes.LLP_CLASSES"
        )
    return [CLASS_INDEX[name] for name in names]


def _read_weak(resource: Traversable) -> Iterator[_WeakRow]:
    """Each row of a weak-label file."""
    for line, (filename, event_labels) in _read_rows(resource, _WEAK_HEADER):
        yield _WeakRow(
            line, filename, _class_indices(str(resource), line, event_labels), event_labels
        )


def _read_weak_files(folder: Traversable) -> dict[str, list[_WeakRow]]:
    """The rows of the four weak-label files per split, each filename once per file.

    A filename listed again with the same labels (in any order) is dropped; listed with
    other labels, in the same file or in another of the four, it is an AnnotationError
    naming both files and lines.
    """
    first: dict[str, tuple[str, _WeakRow]] = {}  # filename -> where it was first listed
    split_of: dict[str, tuple[str, _WeakRow]] = {}  # filename -> its train/val/test file
    weak_files: dict[str, list[_WeakRow]] = {}
    for split, name in SPLIT_FILES.items():
        file = str(folder / name)
        rows: dict[str, _WeakRow] = {}
        for row in _read_weak(folder / name):
            if row.filename in first:
                _check_same_labels(*first[row.filename], file, row)
            else:
                first[row.filename] = (file, row)
            if split != "full":
                other_file, other = split_of.setdefault(row.filename, (file, row))
                if other_file != file:
                    raise AnnotationError(
                        f"{row.filename!r} is listed in two split files, {other_file} (line "
                        f"{other.line}) and {file} (line {row.line}); a video belongs to one "
                        "split: delete one of the two lines"
                    )
            rows.setdefault(row.filename, row)
        weak_files[split] = list(rows.values())
    return weak_files


def _check_same_labels(file: str, row: _WeakRow, other_file: str, other: _WeakRow) -> None:
    if set(row.class_indices) == set(other.class_indices):
        return
    if file == other_file:
        where = (
            f"{file}: {row.filename!r} is listed on line {row.line} with {row.event_labels} "
            f"and on line {other.line} with {other.event_labels}"
        )
    else:
        where = (
            f"{row.filename!r} is listed in {file} on line {row.line} with "
            f"{row.event_labels} and in {other_file} on line {other.line} with "
            f"{other.event_labels}"
        )
    raise AnnotationError(f"{where}; keep one")


def _youtube_id_at(file: str, line: int, filename: str) -> str:
    try:
        return youtube_id(filename)
    except AnnotationError as error:
        raise AnnotationError(f"{file}, line {line}: {error}") from None


def _read_dense(resource: Traversable) -> _DenseEvents:
    file = str(resource)
    columns: dict[str, list] = {
        name: [] for name in ("filename", "onset", "offset", "class", "line")
    }
    for line, (filename, onset, offset, event_labels) in _read_rows(resource, _DENSE_HEADER):
        bounds = [
            _second(file, line, name, value)
            for name, value in (("onset", onset), ("offset", offset))
        ]
        for class_index in _class_indices(file, line, event_labels):
            for name, value in zip(columns, (filename, *bounds, class_index, line), strict=True):
                columns[name].append(value)
    return _DenseEvents(
        file=file,
        filename=np.asarray(columns["filename"], dtype=str),
        onset=np.asarray(columns["onset"], dtype=np.int64),
        offset=np.asarray(columns["offset"], dtype=np.int64),
        class_index=np.asarray(columns["class"], dtype=np.int64),
        line=np.asarray(columns["line"], dtype=np.int64),
    )


def _second(file: str, line: int, column: str, value: str) -> int:
    try:
        second = int(value)
    except ValueError:
        second = -1
    if second < 0:
        raise AnnotationError(
            f"{file}, line {line}: {column} {value!r} is not a whole number of seconds >= 0"
        )
    return second


_UNMATCHED = "matches no val or test video"


def _ignored_rows(events: _DenseEvents, annotated: frozenset[str]) -> Iterator[IgnoredRow]:
    unmatched = ~np.isin(events.filename, list(annotated))
    empty = events.onset >= events.offset
    for index in np.flatnonzero(unmatched | empty):
        reason = (
            _UNMATCHED
            if unmatched[index]
            else f"onset {events.onset[index]} >= offset {events.offset[index]} covers no segment"
        )
        yield IgnoredRow(events.file, int(events.line[index]), str(events.filename[index]), reason)


def _warn_ignored(ignored: Sequence[IgnoredRow]) -> None:
    """One warning: per file, the unmatched filenames and the lines of empty events."""
    parts = []
    for file in dict.fromkeys(row.file for row in ignored):
        rows = [row for row in ignored if row.file == file]
        unmatched = list(dict.fromkeys(row.filename for row in rows if row.reason == _UNMATCHED))
        empty_lines = [str(row.line) for row in rows if row.reason != _UNMATCHED]
        notes = [f"{len(rows)} rows ignored"]
        if unmatched:
            notes.append(f"filenames of no val/test video: {', '.join(map(repr, unmatched))}")
        if empty_lines:
            notes.append(f"onset >= offset on lines {', '.join(empty_lines)}")
        parts.append(f"{file}: {'; '.join(notes)}")
    if parts:
        warnings.warn(
            "dense annotation rows that add nothing to the ground truth, ignored as the "
            "official evaluation ignores them (details in LLPAnnotations.ignored_rows):\n"
            + "\n".join(parts),
            IgnoredAnnotationWarning,
            stacklevel=3,
        )


def _count_and_examples(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:_SHOWN])
    more = f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else ""
    return f"{len(names)} video(s) ({shown}{more})"
