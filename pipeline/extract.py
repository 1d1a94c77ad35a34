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
  failures of that shard (its inner loop: `avvp.pipeline.embedding`). Shards are
  independent: a re-run skips shards already done.
- `record_plan(plan, root)` writes what planning found (files refused before any work,
  files now complete, manifest rows of videos stored before the manifest existed), and
  `summarize(plan, results)` adds the shards up. `extract_videos` runs all four.
  With extractors on a CPU the process then keeps freed memory (`keep_freed_memory`).

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

Input errors: a missing path stops the call before any work (ValueError naming it).
Two different files with one id are both failures and neither is extracted, since
either could be the one meant; a file whose content differs from the file already
stored under its id is refused, naming both paths. An interrupted run keeps every part
already written; a rerun redoes at most the rows that were waiting for their flush.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, Field

from ..extractors import FeatureExtractor
from ..storage import Failure, FailureLog, FeatureStore, VideoManifest, VideoRecord
from ..storage.failures import WorkMarker, WorkMarkers
from .decoding_workers import WindowLoader, close_decoding_workers
from .embedding import (
    PendingVideo,
    WindowItem,
    build_extractors,
    check_extraction_settings,
    keep_freed_memory,
    table_of_extractor,
    table_writers,
    threads_beside,
)
from .extract_config import ExtractConfig
from .sources.llp import llp_video_ids
from .sources.videos import KeyedVideo, file_digest, keyed_videos, split_duplicate_ids

STAGE = "extract"
CRASHED = (
    "the extraction process ended while working on this file (out of memory or a crash); "
    "skipped — pass --retry-failed to try it again"
)

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


class Shard(BaseModel):
    """A group of videos extracted together; `key` changes with anything they produce."""

    key: str
    videos: list[PendingVideo]


class ExtractionPlan(BaseModel):
    """What `plan_extraction` found: the shards to run and what needs no decoding."""

    videos_found: int
    skipped: list[PendingVideo]  # complete in every table
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

    def line(self) -> str:
        """What the call did, in one line that starts "nothing to extract" when no video
        needed decoding."""
        counts = (
            f"{counted(self.videos_found, 'video')}: {self.videos_skipped} already stored, "
            f"{self.videos_extracted} extracted, {len(self.failures)} failed"
        )
        return f"nothing to extract; {counts}" if not self.videos_decoded else counts


def counted(count: int, noun: str) -> str:
    """1 window, 2 windows."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


class VideoOutcome(NamedTuple):
    """How one video of a shard ended (what `extract_shard` reports per video)."""

    video_id: str
    path: str
    status: ProgressStatus
    windows: int
    reason: str = ""
    warning: str = ""


def plan_extraction(
    paths: Iterable[str | Path] | str | Path,
    root: str | os.PathLike[str],
    config: ExtractConfig | None = None,
) -> ExtractionPlan:
    """Find the videos, decide which (video, table) pairs are missing, and shard them."""
    config = config or ExtractConfig()
    manifest = VideoManifest(root).read()
    by_content = config.ids == "content"
    inputs = keyed_videos(paths, manifest, llp_video_ids(config.labels), by_content)
    unique, failures = split_duplicate_ids(inputs, by_content=by_content)
    found: list[PendingVideo] = []
    for video in unique:
        pending, refusal = _pending_video(video, manifest)
        if refusal is not None:
            failures.append(refusal)
        else:
            found.append(pending)
    store = FeatureStore(root)
    stored = {
        name: store.table(table_of_extractor(name)).stored_windows([t.video_id for t in found])
        for name in config.extractors
    }
    # Marks left by ended processes, for this call's files (module docstring, failed files).
    ended: dict[str, list[WorkMarker]] = {}
    paths = {pending.path for pending in found}
    for marker in WorkMarkers(root, STAGE).abandoned():
        if marker.path in paths:
            ended.setdefault(marker.path, []).append(marker)
    failed_before = {} if config.retry_failed else _failed_before(root)
    skipped, missing, updates, not_again = [], [], [], []
    for pending in found:
        pending.stored = {name: sorted(stored[name].get(pending.video_id, ())) for name in stored}
        known = manifest.get(pending.video_id)
        crashed = [m for m in ended.get(pending.path, ()) if m.digest == pending.digest]
        before = failed_before.get(pending.path)
        if pending.complete(known):
            skipped.append(pending)
            if known is None:
                updates.append(pending.record_from_tables())
        elif crashed and not config.retry_failed:
            detail = f"{crashed[-1].process} left it unfinished"
            failures.append(
                Failure(pending.video_id, pending.path, CRASHED, detail, pending.digest)
            )
        elif before is not None and before.digest == pending.digest:
            not_again.append(before)
        else:
            missing.append(pending)
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
    FailureLog(root).record(
        STAGE, plan.failures, resolved=[pending.path for pending in plan.skipped]
    )
    markers = WorkMarkers(root, STAGE)
    for name in plan.ended_markers:
        markers.finish(name)


def window_loader(
    shard: Shard,
    extractors: Sequence[FeatureExtractor],
    root: str | os.PathLike[str],
    config: ExtractConfig,
) -> WindowLoader:
    """The shard's windows, decoded and preprocessed for `extractors` in the configured
    decoding workers (kept from shard to shard: `avvp.pipeline.decoding_workers`), then
    each video's end (`ShardWindows`); `with window_loader(...) as items:`."""
    specs = {extractor.name: (extractor.input, extractor.transform) for extractor in extractors}
    # A daemonic process (a Dask worker) cannot start the loader's processes, and a lone
    # video has nothing to overlap its decoding with: a process started for it only adds
    # its start (the loader of one paper-size 10-s clip took 3.1x as long in a worker on 2
    # CPUs: `benchmarks/extract.py --only loader`).
    in_process = multiprocessing.current_process().daemon or len(shard.videos) < 2
    workers = 0 if in_process else min(config.decoding_workers(), len(shard.videos))
    markers = WorkMarkers(root, STAGE)
    return WindowLoader(shard.videos, specs, markers, workers, config.decoder_threads)


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
    writers = table_writers(root, built, config.dtype, config.batch_size)
    manifest = VideoManifest(root)
    found = {pending.video_id: pending for pending in shard.videos}
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

    loader = window_loader(shard, built, root, config)
    if config.reuse_freed_memory and any(extractor.device.type == "cpu" for extractor in built):
        keep_freed_memory()
    with threads_beside(loader.num_workers, built), loader as items:
        for item in items:
            if isinstance(item, WindowItem):
                for writer in writers:
                    if writer.name in item.inputs:
                        writer.add(item)
                continue
            pending = found[item.video_id]
            if item.failure is not None:
                for writer in writers:
                    writer.discard(item.video_id)
                result.failures.append(item.failure)
                outcome = VideoOutcome(
                    item.video_id, pending.path, "failed", 0, item.failure.reason
                )
            else:
                for writer in writers:
                    writer.finish(item.video_id)
                result.extracted.append(item.video_id)
                finished.append(item.record)
                if item.warning:
                    result.warnings.append(
                        ExtractWarning(item.video_id, pending.path, item.warning)
                    )
                outcome = VideoOutcome(
                    item.video_id,
                    pending.path,
                    "extracted",
                    item.record.windows,
                    warning=item.warning,
                )
                flush(config.flush_windows)
            if on_video is not None:
                on_video(outcome)
        flush(0)
    FailureLog(root).record(
        STAGE, result.failures, resolved=[found[video_id].path for video_id in result.extracted]
    )
    result.seconds = time.perf_counter() - started
    return result


def summarize(
    plan: ExtractionPlan, results: Sequence[ShardResult], config: ExtractConfig
) -> ExtractSummary:
    """One summary of a plan and its shards' results."""
    written = {table_of_extractor(name): 0 for name in config.extractors}
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
    on_plan: Callable[[ExtractionPlan], None] | None = None,
) -> ExtractSummary:
    """Embed the windows of `paths` (files and folders) that the store at `root` lacks:
    plan, record the plan, run every shard, summarize (module docstring).

    extractors: extractors already built, used instead of `build_extractors(config)`
    (config.extractors is taken from their names). on_plan: called with the plan before
    any work. on_progress: called once per input, stored videos first.
    Failed videos are listed in the summary and in the failures table
    (`FailureLog(root).read("extract")`).
    """
    started = time.perf_counter()
    config = config or ExtractConfig()
    if extractors is not None:
        config = config.model_copy(update={"extractors": [e.name for e in extractors]})
    check_extraction_settings(root, config, extractors)  # refuse other settings first
    plan = plan_extraction(paths, root, config)
    record_plan(plan, root)
    if on_plan is not None:
        on_plan(plan)
    # Networks are built only when there is something to embed.
    built = extractors if extractors is not None or not plan.shards else build_extractors(config)
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

    for pending in plan.skipped:  # first: a display can count what is left to do
        report(VideoOutcome(pending.video_id, pending.path, "skipped", 0))
    for failure in [*plan.failures, *plan.failed_before]:
        report(VideoOutcome(failure.video_id, failure.path, "failed", 0, failure.reason))
    try:
        results = [
            extract_shard(shard, root, config, extractors=built, on_video=report)
            for shard in plan.shards
        ]
    finally:
        close_decoding_workers()  # kept from shard to shard, not beyond the run
    summary = summarize(plan, results, config)
    summary.seconds = time.perf_counter() - started
    return summary


def _pending_video(
    video: KeyedVideo, manifest: Mapping[str, VideoRecord]
) -> tuple[PendingVideo | None, Failure | None]:
    """The video to extract, or why it is refused: another file's content holds its id."""
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
    pending = PendingVideo(
        video_id=video.key,
        path=str(video.path),
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        digest=digest,
        stored={},
    )
    return pending, None


def _shard(found: list[PendingVideo], config: ExtractConfig) -> Shard:
    content = [
        (pending.video_id, pending.digest, sorted(pending.stored.items())) for pending in found
    ]
    key = hashlib.sha256(
        json.dumps([config.output_settings(), content], sort_keys=True).encode()
    ).hexdigest()
    return Shard(key=f"{STAGE}-{key[:16]}", videos=found)
