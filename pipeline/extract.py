"""Decode and embed video files into the feature store, only where features are missing.

How the work is split:

- DataLoader worker processes each take one video: decode it (`decode_video`), cut it
  into windows (`split_windows`) and run every extractor's `transform` on the windows
  its table still lacks. A video that fails there (a `DecodeError`, or any error while
  preprocessing) comes back as a failure record (a plain reason, the raw detail apart);
  the loader and the other videos go on. A file that decodes only in part (cut short)
  is extracted as far as it decodes and reported as a warning.
- The main process only batches and embeds: it queues each video's preprocessed
  windows per extractor, embeds full batches of `batch_size` windows on the device,
  and writes a table's rows as one new part once `flush_windows` rows have gathered
  (and at the end), always after a whole video.

Which videos are skipped, without decoding: those present in every requested table
with windows 0..k and no gap. A video's window count is only known after decoding it,
but no marker is needed, because every writer of feature tables (this stage, feature
import, the synthetic mini-LLP) writes all windows of a video in one part, and parts
appear atomically: a video found in a table is complete there. A video missing from
some tables is decoded, and only the tables that lack it are embedded and written.

A video without an audio track decodes to zero audio of the right length: the CLAP
tables hold the features of that silence, and every table stores `has_audio` False
for its windows, so later stages can tell it from a real silent track.

Input errors: a missing path stops the call before any work (ValueError naming it);
two different files with the same video id (`video_id_for`) are both listed as
failures and neither is extracted, since either could be the one meant.

Limits: a loader item holds all of one video's network inputs (about 19 MB per 10-s
window for CLIP, R(2+1)D and CLAP maps of the paper preset), passed from workers
through shared memory, so very long videos need memory to match (and containers a
large /dev/shm). An interrupted run keeps every part already written; a rerun redoes
at most the rows that were waiting for their flush.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, Dataset

from avvp.contract import FPS, WINDOW_SECONDS
from avvp.extractors import FeatureExtractor, WindowInput, create_extractor, extractor_class
from avvp.extractors.base import Preset
from avvp.pipeline import tables
from avvp.pipeline.decode import (
    DecodeError,
    Window,
    decode_video,
    split_windows,
    video_id_for,
)
from avvp.storage import (
    Failure,
    FailureLog,
    FeatureStore,
    FeatureTable,
    Provenance,
    ProvenanceMismatchError,
)

STAGE = "extract"
TABLE_FOR_EXTRACTOR: dict[str, str] = {
    "clip": tables.VISUAL_TABLE,
    "r2plus1d": tables.VISUAL_ST_TABLE,
    "clap": tables.AUDIO_MAP_TABLE,
    "clap-segments": tables.AUDIO_SEGMENT_TABLE,
}
DEFAULT_EXTRACTORS = ("clip", "r2plus1d", "clap")
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp"}
)
FEATURE_DTYPES = ("float16", "float32")

ProgressStatus = Literal["skipped", "extracted", "failed"]


class ExtractProgress(NamedTuple):
    """One video is done: `done` of `total` input videos have been handled so far.

    `windows` is the video's window count (0 when skipped or failed); an extracted
    video's rows reach the store at the next flush. `reason` says why a video failed,
    `warning` what was wrong with one that was extracted anyway.
    """

    video_id: str
    path: str
    status: ProgressStatus
    done: int
    total: int
    windows: int
    reason: str = ""
    warning: str = ""


class ExtractWarning(NamedTuple):
    """A video that was extracted, but not all of it (e.g. a file cut short)."""

    video_id: str
    path: str
    message: str


@dataclass
class ExtractSummary:
    """What one `extract_videos` call did."""

    videos_found: int = 0  # distinct input files
    videos_skipped: int = 0  # complete in every requested table: not decoded
    videos_decoded: int = 0  # handed to the decoders (failed ones included)
    videos_extracted: int = 0  # decoded, embedded and written
    windows_written: dict[str, int] = field(default_factory=dict)  # table -> new rows
    failures: list[Failure] = field(default_factory=list)
    warnings: list[ExtractWarning] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def videos_per_second(self) -> float:
        """Extracted videos per second of the whole call (model loading included)."""
        return self.videos_extracted / self.seconds if self.seconds > 0 else 0.0


def find_videos(paths: Iterable[str | Path]) -> list[Path]:
    """Video files named or found (recursively, by extension) under the given folders.

    Files named explicitly are kept whatever their extension. Each file appears once,
    in the order given (folders sorted). Raises ValueError for a path that does not exist.
    """
    # Keyed by the resolved file, so one file reached twice counts once; the path kept is
    # the one given, because a symlink's own name is the video id the user chose.
    found: dict[Path, Path] = {}
    for given in paths:
        path = Path(given).expanduser()
        if path.is_file():
            found.setdefault(path.resolve(), path.absolute())
        elif path.is_dir():
            for candidate in sorted(path.rglob("*")):
                # Dot files are editor and OS leftovers (macOS `._clip.mp4`), not videos.
                hidden = any(part.startswith(".") for part in candidate.relative_to(path).parts)
                video = candidate.suffix.lower() in VIDEO_EXTENSIONS and candidate.is_file()
                if video and not hidden:
                    found.setdefault(candidate.resolve(), candidate.absolute())
        else:
            raise ValueError(f"{path}: no such file or folder; pass video files or folders")
    return list(found.values())


def feature_provenance(extractor: FeatureExtractor, dtype: str = "float16") -> Provenance:
    """The provenance of the rows `extractor` writes: backbone, weights, input settings."""
    return Provenance(
        source=extractor.name,
        version=extractor.version,
        weights=extractor.weights_identity,
        fps=extractor.input.fps,
        sample_rate=extractor.input.sample_rate,
        dtype=dtype,
        shape=extractor.output_shape,
        extras={"preset": extractor.preset, "window_seconds": WINDOW_SECONDS},
    )


def window_input(window: Window, spec: WindowInput) -> np.ndarray:
    """What an extractor with input `spec` is given of `window`: its frames or its audio."""
    return window.frames if spec.kind == "frames" else window.audio[spec.sample_rate]


def extract_videos(
    paths: Iterable[str | Path] | str | Path,
    root: str | os.PathLike[str],
    extractors: Sequence[str | FeatureExtractor] = DEFAULT_EXTRACTORS,
    preset: Preset = "paper",
    device: str = "auto",
    batch_size: int = 16,
    workers: int | None = None,
    on_progress: Callable[[ExtractProgress], None] | None = None,
    weights: Mapping[str, str | Path] | None = None,
    flush_windows: int = 256,
    dtype: str = "float16",
) -> ExtractSummary:
    """Embed the windows of `paths` (files and folders) that the store at `root` lacks.

    extractors: names ("clip", "r2plus1d", "clap", "clap-segments"), each written to its
        standard table (`TABLE_FOR_EXTRACTOR`), or extractors already built (then
        `preset`, `device` and `weights` do not apply to them).
    preset: "paper" (released weights, found locally) or "tiny" (tests and demos; it
        writes the same table names, so a store holds one preset or the other).
    device: "auto" (CUDA when available), "cpu", "cuda:1", ...
    batch_size: windows per `embed` call, per extractor.
    workers: decoding processes (0 decodes in this process); default: the CPU count, at
        most 8.
    on_progress: called once per input video (see `ExtractProgress`).
    weights: extractor name -> weight file, for names whose default should not be used.
    flush_windows: rows a table gathers before they are written as one part.
    dtype: "float16" or "float32", the stored precision.

    Failed videos are listed in the summary and recorded in the failures table
    (`FailureLog(root).read("extract")`); the module docstring has the skip rule.
    """
    started = time.perf_counter()
    batch_size, flush_windows = int(batch_size), int(flush_windows)
    workers = min(8, os.cpu_count() or 1) if workers is None else int(workers)
    if batch_size < 1 or flush_windows < 1 or workers < 0:
        raise ValueError(
            f"need batch_size >= 1, flush_windows >= 1 and workers >= 0; got {batch_size}, "
            f"{flush_windows} and {workers}"
        )
    if dtype not in FEATURE_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(FEATURE_DTYPES)}, not {dtype!r}")
    videos = find_videos([paths] if isinstance(paths, str | Path) else paths)
    built = _build_extractors(extractors, preset, device, weights or {})
    store = FeatureStore(root)
    writers = [
        _TableWriter(extractor, store.table(TABLE_FOR_EXTRACTOR[extractor.name]), dtype)
        for extractor in built
    ]
    for writer in writers:
        writer.check_provenance()

    summary = ExtractSummary(
        videos_found=len(videos), windows_written={writer.table_name: 0 for writer in writers}
    )

    def report(video_id: str, path: Path | str, status: ProgressStatus, **details: Any) -> None:
        if on_progress is not None:
            done = summary.videos_skipped + summary.videos_extracted + len(summary.failures)
            on_progress(ExtractProgress(video_id, str(path), status, done, len(videos), **details))

    unique, duplicates = _split_duplicate_ids(videos)
    for failure in duplicates:
        summary.failures.append(failure)
        report(failure.video_id, failure.path, "failed", windows=0, reason=failure.reason)
    stored = {writer.name: writer.stored_windows(unique) for writer in writers}
    jobs, succeeded = [], []
    for video_id, path in unique.items():
        known = {name: windows.get(video_id, frozenset()) for name, windows in stored.items()}
        if all(_complete(windows) for windows in known.values()):
            summary.videos_skipped += 1
            succeeded.append(str(path))
            report(video_id, path, "skipped", windows=0)
        else:
            jobs.append(_VideoJob(path, video_id, known))
    summary.videos_decoded = len(jobs)

    loader = DataLoader(
        _PrepareVideos(jobs, {extractor.name: extractor for extractor in built}),
        batch_size=None,
        num_workers=min(workers, len(jobs)),
        collate_fn=_as_is,
    )
    for prepared in loader:
        if prepared.failure is not None:
            summary.failures.append(prepared.failure)
            report(
                prepared.video_id,
                prepared.path,
                "failed",
                windows=0,
                reason=prepared.failure.reason,
            )
            continue
        for writer in writers:
            if writer.name in prepared.inputs:
                writer.add(prepared, *prepared.inputs[writer.name], batch_size)
                writer.flush_if(flush_windows, batch_size)
        summary.videos_extracted += 1
        succeeded.append(str(prepared.path))
        if prepared.warning:
            summary.warnings.append(
                ExtractWarning(prepared.video_id, str(prepared.path), prepared.warning)
            )
        report(
            prepared.video_id,
            prepared.path,
            "extracted",
            windows=len(prepared.valid_segments),
            warning=prepared.warning,
        )
    for writer in writers:
        writer.flush_if(1, batch_size)
        summary.windows_written[writer.table_name] = writer.written
    # Written after the features: a file counts as resolved only once its rows are stored.
    FailureLog(root).record(STAGE, summary.failures, resolved=succeeded)
    summary.seconds = time.perf_counter() - started
    return summary


def _build_extractors(
    extractors: Sequence[str | FeatureExtractor],
    preset: Preset,
    device: str,
    weights: Mapping[str, str | Path],
) -> list[FeatureExtractor]:
    names = [item if isinstance(item, str) else item.name for item in extractors]
    unknown = sorted(set(names) - TABLE_FOR_EXTRACTOR.keys())
    unused_weights = sorted(set(weights) - set(names))
    if not names or unknown or len(set(names)) < len(names) or unused_weights:
        raise ValueError(
            f"extractors must be distinct names among {', '.join(TABLE_FOR_EXTRACTOR)} "
            f"(got {names}), and weights may only name those (got {sorted(weights)})"
        )
    frame_rates = {extractor_class(name).input.fps for name in names} - {None}
    if len(frame_rates) > 1:
        raise ValueError(f"the extractors want frames at different rates {frame_rates}")
    return [
        item
        if isinstance(item, FeatureExtractor)
        else create_extractor(
            item,
            preset=preset,
            weights=weights.get(item),
            device=None if device == "auto" else device,
        )
        for item in extractors
    ]


def _split_duplicate_ids(videos: Sequence[Path]) -> tuple[dict[str, Path], list[Failure]]:
    """(video id -> path for ids given by one file, failures for ids given by several)."""
    by_id: dict[str, list[Path]] = {}
    for path in videos:
        by_id.setdefault(video_id_for(path), []).append(path)
    unique = {video_id: paths[0] for video_id, paths in by_id.items() if len(paths) == 1}
    failures = [
        Failure(
            video_id,
            str(path),
            f"video id {video_id!r} is also the id of "
            f"{', '.join(str(other) for other in paths if other != path)}; rename or leave "
            "out all but one of these files",
        )
        for video_id, paths in by_id.items()
        if len(paths) > 1
        for path in paths
    ]
    return unique, failures


def _complete(windows: frozenset[int]) -> bool:
    """Stored windows 0..k without a gap (see the skip rule in the module docstring)."""
    return bool(windows) and max(windows) == len(windows) - 1


@dataclass(frozen=True)
class _VideoJob:
    path: Path
    video_id: str
    stored: dict[str, frozenset[int]]  # extractor name -> windows its table already holds


@dataclass(frozen=True, eq=False)
class _PreparedVideo:
    """A worker's result: network inputs per extractor, or why the video failed."""

    video_id: str
    path: Path
    valid_segments: np.ndarray  # (windows,) per window index
    has_audio: bool
    inputs: dict[str, tuple[np.ndarray, torch.Tensor]]  # name -> (window indices, inputs)
    failure: Failure | None = None
    warning: str = ""


class _PrepareVideos(Dataset):
    """Item i: video i decoded, windowed and preprocessed, or a failure record.

    Holds only the extractors' transforms and input specs, so workers receive no network.
    """

    def __init__(self, jobs: Sequence[_VideoJob], extractors: Mapping[str, FeatureExtractor]):
        self.jobs = list(jobs)
        self.specs: dict[str, tuple[WindowInput, Callable[[Any], torch.Tensor]]] = {
            name: (extractor.input, extractor.transform) for name, extractor in extractors.items()
        }
        inputs = [spec for spec, _ in self.specs.values()]
        self.fps = next((spec.fps for spec in inputs if spec.fps is not None), FPS)
        self.sample_rates = sorted({spec.sample_rate for spec in inputs} - {None})

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int) -> _PreparedVideo:
        job = self.jobs[index]
        try:
            decoded = decode_video(job.path, fps=self.fps, sample_rates=self.sample_rates)
            windows = split_windows(decoded)
            inputs = {}
            for name, (spec, transform) in self.specs.items():
                missing = [window for window in windows if window.index not in job.stored[name]]
                if missing:
                    inputs[name] = (
                        np.array([window.index for window in missing]),
                        torch.stack([transform(window_input(window, spec)) for window in missing]),
                    )
        except DecodeError as error:
            return _failed(job, error.reason, error.detail)
        except Exception as error:  # any preprocessing error fails this video only
            return _failed(
                job,
                "its frames or audio could not be prepared for the extractors",
                f"{type(error).__name__}: {error}",
            )
        return _PreparedVideo(
            job.video_id,
            job.path,
            np.array([window.valid_segments for window in windows]),
            decoded.has_audio,
            inputs,
            warning=decoded.cut_short or "",
        )


def _failed(job: _VideoJob, reason: str, detail: str) -> _PreparedVideo:
    failure = Failure(job.video_id, str(job.path), reason, detail)
    return _PreparedVideo(job.video_id, job.path, np.zeros(0, np.int64), False, {}, failure)


def _as_is(item: _PreparedVideo) -> _PreparedVideo:
    # The loader's default conversion would rebuild the dataclass field by field.
    return item


class _TableWriter:
    """One extractor's queue of network inputs and of embedded rows awaiting a write."""

    def __init__(self, extractor: FeatureExtractor, table: FeatureTable, dtype: str) -> None:
        self.extractor, self.table = extractor, table
        self.name = extractor.name
        self.table_name = TABLE_FOR_EXTRACTOR[extractor.name]
        self.provenance = feature_provenance(extractor, dtype)
        self.written = 0
        self._pending: list[torch.Tensor] = []  # inputs not embedded yet, oldest first
        self._pending_count = 0
        self._features: list[np.ndarray] = []  # embedded rows not written yet
        self._rows: list[tuple[str, np.ndarray, np.ndarray, bool]] = []

    def check_provenance(self) -> None:
        """Refuse before any work if the table holds rows of other settings."""
        stored = self.table.provenance
        differences = stored.differences(self.provenance) if stored is not None else []
        if differences:
            raise ProvenanceMismatchError(
                f"{self.table.url} holds features made with other settings (stored != "
                f"requested): {'; '.join(differences)}. Extract into another store root, or "
                f"delete {self.table.url} to rebuild it with these settings."
            )

    def stored_windows(self, videos: Mapping[str, Path]) -> dict[str, frozenset[int]]:
        """Windows stored per video, for the given videos only."""
        keys = self.table.keys()
        ids = pa.array(keys.video_ids, pa.string())
        wanted = pc.is_in(ids, value_set=pa.array(list(videos), pa.string())).to_numpy(
            zero_copy_only=False
        )
        result: dict[str, set[int]] = {}
        for video_id, window in zip(
            keys.video_ids[wanted].tolist(), keys.windows[wanted].tolist(), strict=True
        ):
            result.setdefault(video_id, set()).add(window)
        return {video_id: frozenset(windows) for video_id, windows in result.items()}

    def add(
        self, video: _PreparedVideo, indices: np.ndarray, inputs: torch.Tensor, batch_size: int
    ) -> None:
        """Queue one video's windows; embed every full batch."""
        self._rows.append((video.video_id, indices, video.valid_segments[indices], video.has_audio))
        self._pending.append(inputs)
        self._pending_count += len(inputs)
        while self._pending_count >= batch_size:
            self._embed(batch_size)

    def flush_if(self, min_rows: int, batch_size: int) -> None:
        """Embed what is queued and write it as one part, once `min_rows` rows gathered."""
        queued = sum(len(indices) for _, indices, _, _ in self._rows)
        if queued == 0 or queued < min_rows:
            return
        while self._pending_count:
            self._embed(min(batch_size, self._pending_count))
        video_ids = [video_id for video_id, indices, _, _ in self._rows for _ in indices]
        result = self.table.write(
            video_ids,
            np.concatenate([indices for _, indices, _, _ in self._rows]),
            np.concatenate(self._features),
            np.concatenate([valid for _, _, valid, _ in self._rows]),
            np.concatenate([np.full(len(indices), audio) for _, indices, _, audio in self._rows]),
            self.provenance,
        )
        self.written += result.written
        self._features, self._rows = [], []

    def _embed(self, count: int) -> None:
        queued = torch.cat(self._pending) if len(self._pending) > 1 else self._pending[0]
        batch, rest = queued[:count], queued[count:]
        self._pending = [rest] if len(rest) else []
        self._pending_count -= count
        self._features.append(self.extractor.embed(batch).cpu().numpy())
