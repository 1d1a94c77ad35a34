"""Decode and embed video files into the feature store, only where features are missing.

The stage in three steps, each a function a flow can run as its own task:

- `plan_extraction(paths, root, config)`: find the videos and their ids
  (`avvp.pipeline.sources.videos`), their content digests (taken from the manifest when path,
  size and modification time match, else read), and which (video, table) pairs the
  store lacks; group those videos into shards of `config.shard_videos`, each with a
  key that digests its videos' contents, the tables they lack and the output settings
  of `config`. Reads the store; writes nothing.
- `extract_shard(shard, root, config)`: decode the shard's videos window by window,
  embed the windows each table lacks, and write the rows, the manifest records and the
  failures of that shard. Shards are independent: a re-run skips shards already done.
- `record_plan(plan, root)` writes what planning found (files refused before any work,
  files now complete, manifest rows of videos stored before the manifest existed), and
  `summarize(plan, results)` adds the shards up. `extract_videos` runs all four.

How a shard works: DataLoader worker processes (`config.workers`; 0 decodes in this
process, as Dask's daemonic workers need) each take some of its videos, decode them
one 10-s window at a time (`open_video`) and run every extractor's `transform` on the
windows its table lacks, yielding one item per window and a closing item per video
(its facts, or why it failed). The main process embeds full batches of windows of any
videos on the device and writes a table's rows as one part once `flush_windows` rows
of finished videos have gathered (and at the end), always whole videos: a video fails
as a whole (its rows are dropped) and is found complete or absent in each table. Memory
holds a few windows' network inputs per worker (frames no larger than the decoder's
960 x 480, see `avvp.pipeline.sources.decode`) and the embedded rows of the videos in flight,
in the tables' dtype: 123 kB a window with the default extractors in float16, 15 MB
for a 20-minute video.

Which videos are skipped, without decoding: those present in every requested table
with all their windows (the manifest's count, or 0..k without a gap for videos stored
before the manifest). Every writer of feature tables writes all windows of a video in
one part, and parts appear atomically, so a video found in a table is complete there.
A video missing from some tables is decoded, and only the tables that lack it are
embedded and written.

Failed files: a file that failed while it was decoded or embedded is recorded with its
content digest (`FailureLog`), and later runs pass over it, as failed, while its content
is unchanged, unless `config.retry_failed`; a replaced file is tried again. Files
refused before any work (below) are checked again by every run. A file being decoded
is marked in the store first (`WorkMarkers`, by the process decoding it), and the mark
is removed when its decoding ends, however it ends, unless the process is killed (out
of memory, a crash). Planning turns a mark left by a process that is gone into a
failure of that file (`CRASHED`), skipped like any other, so a file that kills the
process is not tried again and again; a mark of a running process (another run at
work) is left alone.

A video without an audio track decodes to zero audio of the right length: the CLAP
tables hold the features of that silence, and every table stores `has_audio` False for
its windows, so later stages can tell it from a real silent track.

Input errors: a missing path stops the call before any work (ValueError naming it).
Two different files with one id are both failures and neither is extracted, since
either could be the one meant; a file whose content differs from the file already
stored under its id is refused, naming both paths. An interrupted run keeps every part
already written; a rerun redoes at most the rows that were waiting for their flush.
"""

from __future__ import annotations

import functools
import hashlib
import json
import multiprocessing
import os
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from ..contract import FPS, WINDOW_SECONDS
from ..extractors import FeatureExtractor, WindowInput, create_extractor, extractor_class
from ..storage import (
    Failure,
    FailureLog,
    FeatureStore,
    FeatureTable,
    Provenance,
    ProvenanceMismatchError,
    VideoManifest,
    VideoRecord,
)
from ..storage.failures import WorkMarker, WorkMarkers
from . import tables
from .dataset import resolve_device
from .sources.decode import DecodeError, Window, open_video
from .sources.llp import llp_video_ids
from .sources.videos import file_digest, find_videos

STAGE = "extract"
TABLE_FOR_EXTRACTOR: dict[str, str] = {
    "clip": tables.VISUAL_TABLE,
    "r2plus1d": tables.VISUAL_ST_TABLE,
    "clap": tables.AUDIO_MAP_TABLE,
    "clap-segments": tables.AUDIO_SEGMENT_TABLE,
}
DEFAULT_EXTRACTORS = ("clip", "r2plus1d", "clap")
CONTENT_ID_HEX = 16  # 64 bits of the sha256: a collision among a store's files is unheard of
CRASHED = (
    "the extraction process ended while working on this file (out of memory or a crash); "
    "skipped — pass --retry-failed to try it again"
)

ProgressStatus = Literal["skipped", "extracted", "failed"]


class ExtractConfig(BaseModel):
    """How to extract: which extractors, with which weights, on what, in what batches."""

    model_config = ConfigDict(extra="forbid")

    extractors: list[str] = Field(
        default_factory=lambda: list(DEFAULT_EXTRACTORS),
        description=f"any of {', '.join(TABLE_FOR_EXTRACTOR)}, each into its standard table",
    )
    preset: Literal["paper", "tiny"] = Field(
        "paper", description="paper: released weights; tiny: small random networks (tests)"
    )
    weights: dict[str, str] = Field(
        default_factory=dict, description="extractor name -> weight file (default: its cache)"
    )
    device: str = "auto"
    batch_size: int | Literal["auto"] = Field(
        "auto",
        description="windows per embed call; auto: per extractor, the fastest size up to 16 "
        "measured on the first batches (large on a GPU, often one window on a CPU)",
    )
    workers: int | None = Field(
        None,
        ge=0,
        description="decoding processes; default: min(8, CPUs) beside a GPU, CPUs / 2 - 1 "
        "on a CPU (decoding there competes with the extractors' threads)",
    )
    dtype: Literal["float16", "float32"] = "float16"
    flush_windows: int = Field(256, ge=1, description="rows a table gathers before a part")
    shard_videos: int = Field(32, ge=1, description="videos per shard, the unit of work")
    labels: str | None = Field(
        None,
        description="LLP-format folder whose ids name LLP files (default: the vendored LLP)",
    )
    ids: Literal["name", "content"] = Field(
        "name",
        description="what a video's rows are stored under: the id of its name (DESIGN.md), "
        "or its content digest (a parse's store: files of one name, different content)",
    )
    retry_failed: bool = Field(
        False,
        description="try again the files that failed on an earlier run (by default they "
        "are skipped while their content is unchanged)",
    )

    @field_validator("extractors")
    @classmethod
    def _known_extractors(cls, names: list[str]) -> list[str]:
        unknown = sorted(set(names) - TABLE_FOR_EXTRACTOR.keys())
        if not names or unknown or len(set(names)) < len(names):
            raise ValueError(
                f"extractors must be distinct names among {', '.join(TABLE_FOR_EXTRACTOR)}, "
                f"got {names}"
            )
        frame_rates = {extractor_class(name).input.fps for name in names} - {None}
        if len(frame_rates) > 1:
            raise ValueError(f"the extractors want frames at different rates {frame_rates}")
        return names

    @model_validator(mode="after")
    def _weights_for_named_extractors(self) -> ExtractConfig:
        if unused := sorted(set(self.weights) - set(self.extractors)):
            raise ValueError(
                f"weights name {', '.join(unused)}, which are not among the extractors "
                f"({', '.join(self.extractors)})"
            )
        return self

    @field_validator("batch_size")
    @classmethod
    def _positive_batch(cls, size: int | str) -> int | str:
        if size != "auto" and size < 1:
            raise ValueError(f"batch_size must be at least 1 or 'auto', not {size}")
        return size

    def decoding_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        cpus = os.cpu_count() or 1
        on_gpu = resolve_device(self.device).type != "cpu"
        # Measured on 2 cores (benchmarks/extract.py): a decoding process beside CPU
        # extraction slows the extractors' two threads more than it saves.
        return min(8, cpus) if on_gpu else max(0, min(8, cpus // 2 - 1))

    def output_settings(self) -> dict[str, Any]:
        """The settings that change what is written (not where or how fast it runs)."""
        return {
            "extractors": self.extractors,
            "preset": self.preset,
            "weights": self.weights,
            "dtype": self.dtype,
        }


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


class VideoTask(BaseModel):
    """One video of a shard, and the windows each extractor's table already holds."""

    video_id: str
    path: str
    size: int
    mtime_ns: int
    digest: str
    stored: dict[str, list[int]]  # extractor name -> windows stored


class Shard(BaseModel):
    """A group of videos extracted together; `key` changes with anything they produce."""

    key: str
    videos: list[VideoTask]


class ExtractionPlan(BaseModel):
    """What `plan_extraction` found: the shards to run and what needs no decoding."""

    videos_found: int
    skipped: list[VideoTask]  # complete in every table
    failures: list[Failure]  # refused before any work, or found to have ended a process
    shards: list[Shard]
    manifest_updates: list[VideoRecord]  # complete videos the manifest lacks
    failed_before: list[Failure] = Field(default_factory=list)  # recorded, not tried again
    ended_markers: list[str] = Field(default_factory=list)  # abandoned marks now handled


class ShardResult(BaseModel):
    """What `extract_shard` did."""

    key: str
    extracted: list[str]  # video ids
    windows_written: dict[str, int]  # table -> new rows
    failures: list[Failure]
    warnings: list[ExtractWarning]
    seconds: float


class ExtractSummary(BaseModel):
    """What one `extract_videos` call did."""

    videos_found: int = 0  # distinct input files
    videos_skipped: int = 0  # complete in every requested table: not decoded
    videos_decoded: int = 0  # handed to the decoders (failed ones included)
    videos_extracted: int = 0  # decoded, embedded and written
    videos_failed_before: int = 0  # failed on an earlier run: not tried again, in failures
    shards: int = 0
    windows_written: dict[str, int] = Field(default_factory=dict)  # table -> new rows
    failures: list[Failure] = Field(default_factory=list)
    warnings: list[ExtractWarning] = Field(default_factory=list)
    seconds: float = 0.0

    @property
    def videos_per_second(self) -> float:
        """Extracted videos per second of the whole call (model loading included)."""
        return self.videos_extracted / self.seconds if self.seconds > 0 else 0.0


class VideoOutcome(NamedTuple):
    """How one video of a shard ended (what `extract_shard` reports per video)."""

    video_id: str
    path: str
    status: ProgressStatus
    windows: int
    reason: str = ""
    warning: str = ""


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


def build_extractors(config: ExtractConfig) -> list[FeatureExtractor]:
    """The configured extractors, built once per process and reused (by name, preset,
    weight file and device): a flow running many shards pays the loading once."""
    device = None if config.device == "auto" else config.device
    built = []
    for name in config.extractors:
        weights = config.weights.get(name)
        stamp = _file_stamp(weights) if weights else None
        built.append(_cached_extractor(name, config.preset, weights, stamp, device))
    return built


@functools.lru_cache(maxsize=16)
def _cached_extractor(
    name: str, preset: str, weights: str | None, stamp: tuple[int, int] | None, device: str | None
) -> FeatureExtractor:
    # `stamp` (size, mtime) is only part of the key: a weight file replaced in place
    # gets a fresh extractor.
    return create_extractor(name, preset=preset, weights=weights, device=device)


def _file_stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = Path(path).expanduser().stat()
    except OSError:
        return None  # the builder reports the missing file
    return stat.st_size, stat.st_mtime_ns


def plan_extraction(
    paths: Iterable[str | Path] | str | Path,
    root: str | os.PathLike[str],
    config: ExtractConfig | None = None,
) -> ExtractionPlan:
    """Find the videos, decide which (video, table) pairs are missing, and shard them."""
    config = config or ExtractConfig()
    manifest = VideoManifest(root).read()
    inputs = keyed_videos(paths, manifest, config)
    unique, failures = _split_duplicate_ids(inputs, by_content=config.ids == "content")
    tasks: list[VideoTask] = []
    for video in unique:
        task, refusal = _video_task(video, manifest)
        if refusal is not None:
            failures.append(refusal)
        else:
            tasks.append(task)
    store = FeatureStore(root)
    stored = {
        name: store.table(TABLE_FOR_EXTRACTOR[name]).stored_windows([t.video_id for t in tasks])
        for name in config.extractors
    }
    # Marks left by ended processes, for this call's files (module docstring, failed files).
    ended: dict[str, list[WorkMarker]] = {}
    paths = {task.path for task in tasks}
    for marker in WorkMarkers(root, STAGE).abandoned():
        if marker.path in paths:
            ended.setdefault(marker.path, []).append(marker)
    failed_before = {} if config.retry_failed else _failed_before(root)
    skipped, missing, updates, not_again = [], [], [], []
    for task in tasks:
        task.stored = {name: sorted(stored[name].get(task.video_id, ())) for name in stored}
        known = manifest.get(task.video_id)
        crashed = [m for m in ended.get(task.path, ()) if m.digest == task.digest]
        before = failed_before.get(task.path)
        if all(_complete(windows, known) for windows in task.stored.values()):
            skipped.append(task)
            if known is None:
                updates.append(_record_from_tables(task))
        elif crashed and not config.retry_failed:
            detail = f"{crashed[-1].process} left it unfinished"
            failures.append(Failure(task.video_id, task.path, CRASHED, detail, task.digest))
        elif before is not None and before.digest == task.digest:
            not_again.append(before)
        else:
            missing.append(task)
    shards = [
        _shard(missing[start : start + config.shard_videos], config)
        for start in range(0, len(missing), config.shard_videos)
    ]
    return ExtractionPlan(
        videos_found=len(inputs),
        skipped=skipped,
        failures=failures,
        shards=shards,
        manifest_updates=updates,
        failed_before=not_again,
        ended_markers=[marker.name for markers in ended.values() for marker in markers],
    )


def _failed_before(root: str | os.PathLike[str]) -> dict[str, Failure]:
    """The failures recorded for files that were worked on (they carry a digest)."""
    rows = FailureLog(root).read(STAGE).to_pylist()
    return {
        row["path"]: Failure(*(row[field] for field in Failure._fields))
        for row in rows
        if row["digest"]
    }


def record_plan(plan: ExtractionPlan, root: str | os.PathLike[str]) -> None:
    """Write what planning found: refused files and those that ended a process, skipped
    ones (no longer failing), and the manifest rows of complete videos stored before the
    manifest existed; then remove the marks of ended processes it handled."""
    VideoManifest(root).record(plan.manifest_updates)
    FailureLog(root).record(STAGE, plan.failures, resolved=[task.path for task in plan.skipped])
    markers = WorkMarkers(root, STAGE)
    for name in plan.ended_markers:
        markers.finish(name)


def extract_shard(
    shard: Shard,
    root: str | os.PathLike[str],
    config: ExtractConfig | None = None,
    *,
    extractors: Sequence[FeatureExtractor] | None = None,
    on_video: Callable[[VideoOutcome], None] | None = None,
) -> ShardResult:
    """Embed the windows the shard's videos lack and write them (module docstring).

    extractors: built extractors to use instead of `build_extractors(config)` (their
    names must be config.extractors'). on_video: called once per video of the shard.
    """
    started = time.perf_counter()
    config = config or ExtractConfig()
    built = list(extractors) if extractors is not None else build_extractors(config)
    if [extractor.name for extractor in built] != config.extractors:
        raise ValueError(
            f"extractors {[e.name for e in built]} are not the configured {config.extractors}"
        )
    writers = _writers(root, built, config.dtype, config.batch_size)
    manifest = VideoManifest(root)
    tasks = {task.video_id: task for task in shard.videos}
    result = ShardResult(
        key=shard.key,
        extracted=[],
        windows_written={writer.table_name: 0 for writer in writers},
        failures=[],
        warnings=[],
        seconds=0.0,
    )
    finished: list[VideoRecord] = []

    def flush(min_rows: int) -> None:
        if sum(writer.ready_rows for writer in writers) < min_rows:
            return
        for writer in writers:
            result.windows_written[writer.table_name] += writer.flush()
        # After the features: a manifest row says the video's rows are stored.
        manifest.record(finished)
        finished.clear()

    dataset = _ShardWindows(
        shard.videos, {e.name: (e.input, e.transform) for e in built}, WorkMarkers(root, STAGE)
    )
    loader = DataLoader(
        dataset,
        batch_size=None,
        # A daemonic process (a Dask worker) cannot start the loader's processes.
        num_workers=0
        if multiprocessing.current_process().daemon
        else min(config.decoding_workers(), len(shard.videos)),
        collate_fn=_as_is,
    )
    for item in loader:
        if isinstance(item, _WindowItem):
            for writer in writers:
                if writer.name in item.inputs:
                    writer.add(item)
            continue
        task = tasks[item.video_id]
        if item.failure is not None:
            for writer in writers:
                writer.discard(item.video_id)
            result.failures.append(item.failure)
            outcome = VideoOutcome(item.video_id, task.path, "failed", 0, item.failure.reason)
        else:
            for writer in writers:
                writer.finish(item.video_id)
            result.extracted.append(item.video_id)
            finished.append(item.record)
            if item.warning:
                result.warnings.append(ExtractWarning(item.video_id, task.path, item.warning))
            outcome = VideoOutcome(
                item.video_id, task.path, "extracted", item.record.windows, warning=item.warning
            )
            flush(config.flush_windows)
        if on_video is not None:
            on_video(outcome)
    flush(0)
    FailureLog(root).record(
        STAGE, result.failures, resolved=[tasks[video_id].path for video_id in result.extracted]
    )
    result.seconds = time.perf_counter() - started
    return result


def summarize(
    plan: ExtractionPlan, results: Sequence[ShardResult], config: ExtractConfig
) -> ExtractSummary:
    """One summary of a plan and its shards' results."""
    written = {TABLE_FOR_EXTRACTOR[name]: 0 for name in config.extractors}
    for result in results:
        for table, rows in result.windows_written.items():
            written[table] += rows
    return ExtractSummary(
        videos_found=plan.videos_found,
        videos_skipped=len(plan.skipped),
        videos_decoded=sum(len(shard.videos) for shard in plan.shards),
        videos_extracted=sum(len(result.extracted) for result in results),
        videos_failed_before=len(plan.failed_before),
        shards=len(plan.shards),
        windows_written=written,
        failures=[
            *plan.failures,
            *plan.failed_before,
            *(failure for result in results for failure in result.failures),
        ],
        warnings=[warning for result in results for warning in result.warnings],
        seconds=sum(result.seconds for result in results),
    )


def extract_videos(
    paths: Iterable[str | Path] | str | Path,
    root: str | os.PathLike[str],
    config: ExtractConfig | None = None,
    *,
    extractors: Sequence[FeatureExtractor] | None = None,
    on_progress: Callable[[ExtractProgress], None] | None = None,
) -> ExtractSummary:
    """Embed the windows of `paths` (files and folders) that the store at `root` lacks:
    plan, record the plan, run every shard, summarize (module docstring).

    extractors: extractors already built, used instead of `build_extractors(config)`
    (config.extractors is taken from their names). on_progress: called once per input.
    Failed videos are listed in the summary and in the failures table
    (`FailureLog(root).read("extract")`).
    """
    started = time.perf_counter()
    config = config or ExtractConfig()
    if extractors is not None:
        config = config.model_copy(update={"extractors": [e.name for e in extractors]})
    built = list(extractors) if extractors is not None else build_extractors(config)
    check_extraction_settings(root, config, built)  # refuse other settings first
    plan = plan_extraction(paths, root, config)
    record_plan(plan, root)
    done = 0

    def report(outcome: VideoOutcome) -> None:
        nonlocal done
        done += 1
        if on_progress is not None:
            on_progress(
                ExtractProgress(
                    outcome.video_id,
                    outcome.path,
                    outcome.status,
                    done,
                    plan.videos_found,
                    outcome.windows,
                    outcome.reason,
                    outcome.warning,
                )
            )

    for failure in [*plan.failures, *plan.failed_before]:
        report(VideoOutcome(failure.video_id, failure.path, "failed", 0, failure.reason))
    for task in plan.skipped:
        report(VideoOutcome(task.video_id, task.path, "skipped", 0))
    results = [
        extract_shard(shard, root, config, extractors=built, on_video=report)
        for shard in plan.shards
    ]
    summary = summarize(plan, results, config)
    summary.seconds = time.perf_counter() - started
    return summary


def check_extraction_settings(
    root: str | os.PathLike[str],
    config: ExtractConfig,
    extractors: Sequence[FeatureExtractor] | None = None,
) -> None:
    """Refuse, before any work, a table that holds rows of other settings than the
    extractors of `config` (built ones, or built from `config`) would write."""
    built = list(extractors) if extractors is not None else build_extractors(config)
    _writers(root, built, config.dtype, config.batch_size)


def _writers(
    root: str | os.PathLike[str],
    extractors: Sequence[FeatureExtractor],
    dtype: str,
    batch_size: int | str,
) -> list[_TableWriter]:
    """One writer per extractor; refuses a table that holds rows of other settings."""
    store = FeatureStore(root)
    writers = [
        _TableWriter(extractor, store.table(TABLE_FOR_EXTRACTOR[extractor.name]), dtype, batch_size)
        for extractor in extractors
    ]
    for writer in writers:
        writer.check_provenance()
    return writers


class KeyedVideo(NamedTuple):
    """An input file, the id it is known by, and the id its rows are stored under."""

    path: Path
    video_id: str  # the id of its name (videos.py)
    key: str  # video_id, or the content id when the store keys videos by content
    digest: str | None  # "sha256:<hex>" when already known


def content_id(digest: str) -> str:
    """The id a file's rows are stored under in a store keyed by content."""
    return digest.removeprefix("sha256:")[:CONTENT_ID_HEX]


def keyed_videos(
    paths: Iterable[str | Path] | str | Path,
    manifest: Mapping[str, VideoRecord],
    config: ExtractConfig,
) -> list[KeyedVideo]:
    """The video files of `paths` (`find_videos`) with their ids and stored ids. Keyed by
    content, a file's digest is read from the manifest when its path, size and
    modification time match a record, and computed otherwise."""
    found = find_videos(
        [paths] if isinstance(paths, str | Path) else paths, llp_video_ids(config.labels)
    )
    if config.ids == "name":
        return [KeyedVideo(video.path, video.video_id, video.video_id, None) for video in found]
    known = {(r.path, r.size, r.mtime_ns): r.digest for r in manifest.values()}
    keyed = []
    for video in found:
        stat = video.path.stat()
        digest = known.get((str(video.path), stat.st_size, stat.st_mtime_ns))
        digest = digest or file_digest(video.path)
        keyed.append(KeyedVideo(video.path, video.video_id, content_id(digest), digest))
    return keyed


def _split_duplicate_ids(
    videos: Sequence[KeyedVideo], by_content: bool
) -> tuple[list[KeyedVideo], list[Failure]]:
    """(videos whose stored id is given by one file, failures for ids given by several).
    Files of one content, in a store keyed by content, are one video: the first is kept."""
    by_id: dict[str, list[KeyedVideo]] = {}
    for video in videos:
        by_id.setdefault(video.key, []).append(video)
    if by_content:
        return [group[0] for group in by_id.values()], []
    unique = [group[0] for group in by_id.values() if len(group) == 1]
    failures = [
        Failure(
            video_id,
            str(video.path),
            f"video id {video_id!r} is also the id of "
            f"{', '.join(str(other.path) for other in group if other != video)}; rename or "
            "leave out all but one of these files",
        )
        for video_id, group in by_id.items()
        if len(group) > 1
        for video in group
    ]
    return unique, failures


def _video_task(
    video: KeyedVideo, manifest: Mapping[str, VideoRecord]
) -> tuple[VideoTask | None, Failure | None]:
    """The video's task, or why it is refused: another file's content holds its id."""
    stat = video.path.stat()
    known = manifest.get(video.key)
    unchanged = (
        known is not None
        and known.path == str(video.path)
        and (known.size, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    )
    digest = video.digest or (known.digest if unchanged and known else file_digest(video.path))
    if known is not None and known.digest != digest:
        return None, Failure(
            video.key,
            str(video.path),
            f"video id {video.key!r} is already stored for {known.path}, whose content "
            f"differs from {video.path}; rename this file, or extract it into another store",
            f"stored {known.digest}, this file {digest}",
        )
    task = VideoTask(
        video_id=video.key,
        path=str(video.path),
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        digest=digest,
        stored={},
    )
    return task, None


def _complete(windows: Sequence[int], known: VideoRecord | None) -> bool:
    """All of the video's windows are stored (see the skip rule in the module docstring)."""
    count = known.windows if known is not None else len(windows)
    return bool(windows) and list(windows) == list(range(count))


def _record_from_tables(task: VideoTask) -> VideoRecord:
    """A manifest row for a video stored before the manifest: what the tables tell."""
    windows = max(len(stored) for stored in task.stored.values())
    return VideoRecord(
        task.video_id, task.path, task.size, task.mtime_ns, task.digest, None, None, windows, ""
    )


def _shard(tasks: list[VideoTask], config: ExtractConfig) -> Shard:
    content = [(task.video_id, task.digest, sorted(task.stored.items())) for task in tasks]
    key = hashlib.sha256(
        json.dumps([config.output_settings(), content], sort_keys=True).encode()
    ).hexdigest()
    return Shard(key=f"{STAGE}-{key[:16]}", videos=tasks)


class _WindowItem(NamedTuple):
    """One window's network inputs, for the extractors whose tables lack it."""

    video_id: str
    window: int
    valid_segments: int
    has_audio: bool
    inputs: dict[str, torch.Tensor]  # extractor name -> preprocessed window


class _Row(NamedTuple):
    """Where one embedded window goes: its key and per-window columns."""

    video_id: str
    window: int
    valid_segments: int
    has_audio: bool


class _VideoEnd(NamedTuple):
    """The last item of a video: its manifest record, or why it failed."""

    video_id: str
    record: VideoRecord | None
    failure: Failure | None
    warning: str = ""


class _ShardWindows(IterableDataset):
    """The windows of a shard's videos, decoded and preprocessed, video after video.

    Each loader worker takes every n-th video. Holds only the extractors' transforms and
    input specs, so workers receive no network. The process decoding a video marks it in
    `markers` while it does (module docstring, failed files).
    """

    def __init__(
        self,
        videos: Sequence[VideoTask],
        specs: Mapping[str, tuple[WindowInput, Callable[[Any], torch.Tensor]]],
        markers: WorkMarkers,
    ) -> None:
        self.videos, self.specs, self.markers = list(videos), dict(specs), markers
        inputs = [spec for spec, _ in self.specs.values()]
        self.fps = next((spec.fps for spec in inputs if spec.fps is not None), FPS)
        self.sample_rates = sorted({spec.sample_rate for spec in inputs} - {None})

    def __iter__(self) -> Iterator[_WindowItem | _VideoEnd]:
        worker = get_worker_info()
        mine = self.videos if worker is None else self.videos[worker.id :: worker.num_workers]
        for task in mine:
            marker = self.markers.start(task.video_id, task.path, task.digest)
            try:
                yield from self._video(task)
            finally:  # also when the loader stops early: only a killed process keeps it
                self.markers.finish(marker)

    def _video(self, task: VideoTask) -> Iterator[_WindowItem | _VideoEnd]:
        try:
            with open_video(task.path, fps=self.fps, sample_rates=self.sample_rates) as stream:
                info = stream.info
                for window in stream.windows():
                    inputs = {
                        name: transform(window_input(window, spec))
                        for name, (spec, transform) in self.specs.items()
                        if window.index not in task.stored[name]
                    }
                    if inputs:
                        yield _WindowItem(
                            task.video_id,
                            window.index,
                            window.valid_segments,
                            window.has_audio,
                            inputs,
                        )
                backend = stream.backend
        except DecodeError as error:
            yield _failed(task, error.reason, error.detail)
            return
        except Exception as error:  # any preprocessing error fails this video only
            yield _failed(
                task,
                "its frames or audio could not be prepared for the extractors",
                f"{type(error).__name__}: {error}",
            )
            return
        record = VideoRecord(
            task.video_id,
            task.path,
            task.size,
            task.mtime_ns,
            task.digest,
            info.duration,
            info.has_audio,
            info.windows,
            backend,
        )
        yield _VideoEnd(task.video_id, record, None, info.cut_short or "")


def _failed(task: VideoTask, reason: str, detail: str) -> _VideoEnd:
    failure = Failure(task.video_id, task.path, reason, detail, task.digest)
    return _VideoEnd(task.video_id, None, failure)


def _as_is(item: Any) -> Any:
    # The loader's default conversion would rebuild the tuples field by field.
    return item


class BatchSizer:
    """Windows per embed call: a fixed size, or "auto": the size doubles from one window
    while the time per window keeps falling, then stays at the fastest size seen.

    Why measure: on a GPU larger batches are faster per window up to the memory; on a
    CPU the tiny networks run fastest one window at a time (their activations fall out
    of cache), while CLAP still gains from batching. The first call of each size may
    include warm-up costs, so size one is timed twice.
    """

    LIMIT = 16  # more windows per call add memory and, on a CPU, little speed

    def __init__(self, setting: int | str) -> None:
        self.fixed = None if setting == "auto" else int(setting)
        self._trials: list[int] = [1, 1]
        self._per_window: dict[int, float] = {}

    @property
    def size(self) -> int:
        if self.fixed is not None:
            return self.fixed
        return self._trials[0] if self._trials else self._best()

    def record(self, size: int, seconds: float) -> None:
        """Time taken by one embed call of `size` windows."""
        if self.fixed is not None or not self._trials or size != self._trials[0]:
            return
        self._trials.pop(0)
        self._per_window[size] = seconds / size
        if self._trials:
            return
        # A size no faster per window than the best one so far ends the search.
        still_faster = self._per_window[size] <= self._per_window[self._best()]
        if still_faster and size * 2 <= self.LIMIT:
            self._trials.append(size * 2)

    def _best(self) -> int:
        return min(self._per_window, key=self._per_window.get)


# One "auto" sizer per built extractor, so that the size found by one shard serves the
# next shards of the process instead of being searched for again.
_SIZERS: weakref.WeakKeyDictionary[FeatureExtractor, BatchSizer] = weakref.WeakKeyDictionary()


def _batch_sizer(extractor: FeatureExtractor, setting: int | str) -> BatchSizer:
    if setting != "auto":
        return BatchSizer(setting)  # a fixed size has nothing to remember
    return _SIZERS.setdefault(extractor, BatchSizer(setting))


class _TableWriter:
    """One extractor's queue of windows to embed and its embedded rows, per video, until
    a whole video's rows can be written."""

    def __init__(
        self, extractor: FeatureExtractor, table: FeatureTable, dtype: str, batch_size: int | str
    ) -> None:
        self.extractor, self.table = extractor, table
        self.batch = _batch_sizer(extractor, batch_size)
        self.name = extractor.name
        self.table_name = TABLE_FOR_EXTRACTOR[extractor.name]
        self.provenance = feature_provenance(extractor, dtype)
        # Windows not embedded yet, oldest first: only this extractor's input is kept, so a
        # long queue here does not hold the other extractors' inputs alive.
        self._queue: list[tuple[_Row, torch.Tensor]] = []
        self._rows: dict[str, list[tuple[_Row, np.ndarray]]] = {}  # embedded, per video
        self._ready: list[str] = []  # finished videos, in order

    @property
    def ready_rows(self) -> int:
        queued = sum(1 for row, _ in self._queue if row.video_id in self._ready)
        return queued + sum(len(self._rows.get(video_id, ())) for video_id in self._ready)

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

    def add(self, item: _WindowItem) -> None:
        """Queue one window; embed when a batch is full."""
        row = _Row(item.video_id, item.window, item.valid_segments, item.has_audio)
        self._queue.append((row, item.inputs[self.name]))
        if len(self._queue) >= self.batch.size:
            self._embed(self.batch.size)

    def finish(self, video_id: str) -> None:
        self._ready.append(video_id)

    def discard(self, video_id: str) -> None:
        """Forget a failed video's windows, embedded or not."""
        self._queue = [queued for queued in self._queue if queued[0].video_id != video_id]
        self._rows.pop(video_id, None)

    def flush(self) -> int:
        """Embed what is queued and write the finished videos' rows as one part."""
        while self._queue:
            self._embed(self.batch.size)
        rows = [row for video_id in self._ready for row in self._rows.pop(video_id, ())]
        self._ready = []
        if not rows:
            return 0
        keys = [row for row, _ in rows]
        result = self.table.write(
            [row.video_id for row in keys],
            np.array([row.window for row in keys]),
            np.stack([feature for _, feature in rows]),
            np.array([row.valid_segments for row in keys]),
            np.array([row.has_audio for row in keys]),
            self.provenance,
        )
        return result.written

    def _embed(self, count: int) -> None:
        batch, self._queue = self._queue[:count], self._queue[count:]
        started = time.perf_counter()
        inputs = [tensor for _, tensor in batch]
        # One window needs no copy into a new batch tensor.
        stacked = inputs[0][None] if len(inputs) == 1 else torch.stack(inputs)
        features = self.extractor.embed(stacked)
        features = features.cpu().numpy()  # waits for the device: the timing is complete
        self.batch.record(len(batch), time.perf_counter() - started)
        for (row, _), feature in zip(batch, features, strict=True):
            # A copy (a view would keep the whole batch's output alive), in the table's
            # dtype already, as the write would convert it: a long video's rows wait
            # for its end in half the memory.
            stored = feature.astype(self.provenance.dtype)
            self._rows.setdefault(row.video_id, []).append((row, stored))
