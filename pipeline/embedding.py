"""The inner loop of extraction: a shard's windows decoded and preprocessed in loader
workers (`ShardWindows`), embedded in batches of a measured size (`BatchSizer`), and
written per whole video, one part per flush (`TableWriter`). The stage around it,
planning and shards, is `avvp.pipeline.extract`.

How a shard works: DataLoader worker processes (`config.workers`, kept from one shard
to the next: `avvp.pipeline.decoding_workers`; 0 decodes in this process, as Dask's
daemonic workers need and as a shard of one video does, which has nothing to overlap a
process's start with) each take some of its videos, decode them
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

A video without an audio track decodes to zero audio of the right length: the CLAP
tables hold the features of that silence, and every table stores `has_audio` False for
its windows, so later stages can tell it from a real silent track.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
from pydantic import BaseModel
from torch.utils.data import IterableDataset, get_worker_info

from ..contract import FPS, WINDOW_SECONDS
from ..extractors import FeatureExtractor, WindowInput, create_extractor
from ..extractors.base import weights_identity
from ..extractors.precision import Precision
from ..storage import (
    Failure,
    FeatureStore,
    FeatureTable,
    Provenance,
    ProvenanceMismatchError,
    VideoRecord,
)
from ..storage.failures import WorkMarkers
from . import catalog
from .sources.decode import DecodeError, Window, open_video

if TYPE_CHECKING:
    from .extract_config import ExtractConfig


def feature_provenance(extractor: FeatureExtractor, dtype: str = "float16") -> Provenance:
    """The provenance of the rows `extractor` writes: backbone, weights, input settings."""
    return _provenance(type(extractor), extractor.size, extractor.weights_identity, dtype)


def configured_provenance(config: ExtractConfig, dtype: str | None) -> dict[str, Provenance]:
    """Extractor name -> the provenance of the rows it would write under `config`, in
    `dtype` or its feature set's, found without building a network (a weight file is
    located and hashed, once per process): checking a store against a run or a config
    costs no model loading when nothing is to extract."""
    provenances = {}
    for name in config.extractors:
        feature = catalog.set_of_extractor(name)
        kind = feature.extractor_class()
        resolved = kind.resolve(config.size, config.weights.get(name))
        if isinstance(resolved, Path) and name in config.weights:
            # A file the user named is refused at once, even with nothing to extract.
            _read_once(kind, resolved, _file_stamp(str(resolved)))
        identity = weights_identity(resolved)
        provenances[name] = _provenance(kind, config.size, identity, dtype or feature.dtype)
    return provenances


def _provenance(kind: type[FeatureExtractor], size: str, weights: str, dtype: str) -> Provenance:
    return Provenance(
        source=kind.name,
        version=kind.version,
        weights=weights,
        fps=kind.input.fps,
        sample_rate=kind.input.sample_rate,
        dtype=dtype,
        shape=kind.output_shape,
        # "preset" is the stored key of the extractors' size (existing stores' contract).
        extras={"preset": size, "window_seconds": WINDOW_SECONDS},
    )


def window_input(window: Window, spec: WindowInput) -> np.ndarray:
    """What an extractor with input `spec` is given of `window`: its frames or its audio."""
    return window.frames if spec.kind == "frames" else window.audio[spec.sample_rate]


class WindowItem(NamedTuple):
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


class VideoEnd(NamedTuple):
    """The last item of a video: its manifest record, or why it failed."""

    video_id: str
    record: VideoRecord | None
    failure: Failure | None
    warning: str = ""


class ShardWindows(IterableDataset):
    """The windows of a shard's videos, decoded and preprocessed, video after video.

    Each loader worker takes every n-th video. Holds only the extractors' transforms and
    input specs, so workers receive no network. The process decoding a video marks it in
    `markers` while it does (module docstring, failed files). `decoder_threads`: each
    video decoder's threads; None shares the CPUs out among the loader's workers (in
    this process: the decoder's own choice).
    """

    def __init__(
        self,
        videos: Sequence[PendingVideo],
        specs: Mapping[str, tuple[WindowInput, Callable[[Any], torch.Tensor]]],
        markers: WorkMarkers,
        decoder_threads: int | None = None,
    ) -> None:
        self.videos, self.specs, self.markers = list(videos), dict(specs), markers
        self.decoder_threads = decoder_threads
        inputs = [spec for spec, _ in self.specs.values()]
        self.fps = next((spec.fps for spec in inputs if spec.fps is not None), FPS)
        self.sample_rates = sorted({spec.sample_rate for spec in inputs} - {None})

    def __iter__(self) -> Iterator[WindowItem | VideoEnd]:
        worker = get_worker_info()
        mine = self.videos if worker is None else self.videos[worker.id :: worker.num_workers]
        threads = self.decoder_threads
        if threads is None and worker is not None:
            # Each decoder's own choice is about every CPU (PyAV's: all but one), so n
            # workers would run n times as many decoding threads as there are CPUs.
            threads = max(1, (os.cpu_count() or 1) // worker.num_workers)
        for pending in mine:
            marker = self.markers.start(pending.video_id, pending.path, pending.digest)
            try:
                yield from self._video(pending, threads)
            finally:  # also when the loader stops early: only a killed process keeps it
                self.markers.finish(marker)

    def _video(self, pending: PendingVideo, threads: int | None) -> Iterator[WindowItem | VideoEnd]:
        try:
            with open_video(
                pending.path, fps=self.fps, sample_rates=self.sample_rates, threads=threads
            ) as stream:
                info = stream.info
                for window in stream.windows():
                    inputs = {
                        name: transform(window_input(window, spec))
                        for name, (spec, transform) in self.specs.items()
                        if window.index not in pending.stored[name]
                    }
                    if inputs:
                        yield WindowItem(
                            pending.video_id,
                            window.index,
                            window.valid_segments,
                            window.has_audio,
                            inputs,
                        )
                backend = stream.backend
        except DecodeError as error:
            yield _failed(pending, error.reason, error.detail)
            return
        except Exception as error:  # any preprocessing error fails this video only
            yield _failed(
                pending,
                "its frames or audio could not be prepared for the extractors",
                f"{type(error).__name__}: {error}",
            )
            return
        record = VideoRecord(
            pending.video_id,
            pending.path,
            pending.size,
            pending.mtime_ns,
            pending.digest,
            info.duration,
            info.has_audio,
            info.windows,
            backend,
            info.declared_duration,
        )
        yield VideoEnd(pending.video_id, record, None, info.cut_short or "")


def _failed(pending: PendingVideo, reason: str, detail: str) -> VideoEnd:
    failure = Failure(pending.video_id, pending.path, reason, detail, pending.digest)
    return VideoEnd(pending.video_id, None, failure)


@contextlib.contextmanager
def threads_beside(workers: int, extractors: Sequence[FeatureExtractor]) -> Iterator[None]:
    """While extractors on the CPU embed beside `workers` decoding processes, torch's
    threads are the CPUs those leave (never more than already set), restored after."""
    previous = torch.get_num_threads()
    on_cpu = any(extractor.device.type == "cpu" for extractor in extractors)
    if on_cpu and workers > 0:
        # On 2 cores with one decoding worker, torch's 2 threads took 1.37x the time of 1
        # (4 alternating pairs of tiny extraction): a thread sharing a core mostly waits.
        torch.set_num_threads(max(1, min(previous, (os.cpu_count() or 1) - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# glibc's mallopt parameters (malloc.h) and how much freed memory the heap keeps.
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
KEPT_FREE_BYTES = 256 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """On glibc: from this call on, the process takes large allocations from its heap
    and keeps up to `KEPT_FREE_BYTES` freed there for the next ones. Returns whether the
    setting took (False on other C libraries, which are left alone).

    Why: by default glibc maps every allocation of 32 MB or more afresh and hands the
    heap's freed top back to the system, so a batch's large tensors are new pages each
    call, one page fault per 4 kB on first write (on the project's 2-core VM a fresh
    65-MB tensor cost about 20 ms): larger batches lost per window. Tiny R(2+1)D, ms per
    window at 1 / 4 / 16 windows per call: 154 / 167 / 272 by default, 111 / 105 / 175
    kept (`benchmarks/extract.py --only batch [--heap system]`). The cost: up to that
    much more resident memory (a 20-minute video's tiny extraction peaked at 1,874 MiB
    against 1,600 by default, `--only memory`). It lasts for the process's life: glibc
    cannot report its settings, so there is nothing exact to restore.
    """
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)  # the C library this process already runs on
    return bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, KEPT_FREE_BYTES))


def as_is(item: Any) -> Any:
    # The loader's default conversion would rebuild the tuples field by field.
    return item


class BatchSizer:
    """Windows per embed call: a fixed size, or "auto": the size doubles from one window
    while the time per window keeps falling, then stays at the fastest size seen.

    Why measure: on a GPU larger batches are faster per window up to the memory; on a
    CPU it depends on the network and on how busy the cores are (fewer, larger calls
    mean fewer waits of torch's threads for each other), so no fixed size fits all.
    Each size is timed twice and its faster call kept: the first call of a new shape
    pays one-off costs (oneDNN kernel choice, allocator growth), and a slow phase of a
    shared machine would otherwise end the search early.

    On a CPU a window that takes `CPU_SLOW_S` or more alone ends the search at one: what
    a batch shares is per-call work of under a millisecond, so a larger batch there can
    only lose (paper-size extraction on 2 cores: a window takes 4-15 s per extractor,
    and batches of 2 went at 0.96x one window per call, with their trials timed in).
    """

    LIMIT = 16  # more windows per call add memory and, on a CPU, little speed
    TIMINGS = 2  # calls timed per size
    CPU_SLOW_S = 1.0

    def __init__(self, setting: int | str, on_cpu: bool = False) -> None:
        self.fixed = None if setting == "auto" else int(setting)
        self.on_cpu = on_cpu
        self._trials: list[int] = [1] * self.TIMINGS
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
        if self.on_cpu and size == 1 and seconds >= self.CPU_SLOW_S:
            self._trials.clear()
            self._per_window[1] = seconds
            return
        self._trials.pop(0)
        self._per_window[size] = min(seconds / size, self._per_window.get(size, float("inf")))
        if self._trials:
            return
        # A size no faster per window than the best one so far ends the search.
        still_faster = self._per_window[size] <= self._per_window[self._best()]
        if still_faster and size * 2 <= self.LIMIT:
            self._trials.extend([size * 2] * self.TIMINGS)

    def _best(self) -> int:
        return min(self._per_window, key=self._per_window.get)


# One "auto" sizer per built extractor, so that the size found by one shard serves the
# next shards of the process instead of being searched for again.
_SIZERS: weakref.WeakKeyDictionary[FeatureExtractor, BatchSizer] = weakref.WeakKeyDictionary()


def _batch_sizer(extractor: FeatureExtractor, setting: int | str) -> BatchSizer:
    if setting != "auto":
        return BatchSizer(setting)  # a fixed size has nothing to remember
    on_cpu = extractor.device.type == "cpu"
    return _SIZERS.setdefault(extractor, BatchSizer(setting, on_cpu))


class TableWriter:
    """One extractor's queue of windows to embed and its embedded rows, per video, until
    a whole video's rows can be written."""

    def __init__(
        self, extractor: FeatureExtractor, table: FeatureTable, dtype: str, batch_size: int | str
    ) -> None:
        self.extractor, self.table = extractor, table
        self.batch = _batch_sizer(extractor, batch_size)
        self.name = extractor.name
        self.table_name = table_of_extractor(extractor.name)
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
        check_table_settings(self.table, self.provenance)

    def add(self, item: WindowItem) -> None:
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


def table_of_extractor(name: str) -> str:
    """The table extractor `name` writes: its feature set's, from the catalog."""
    return catalog.set_of_extractor(name).table


def build_extractors(config: ExtractConfig) -> list[FeatureExtractor]:
    """The configured extractors, built once per process and reused (by name, size,
    weight file and device): a flow running many shards pays the loading once."""
    device = None if config.device == "auto" else config.device
    built = []
    for name in config.extractors:
        weights = config.weights.get(name)
        stamp = _file_stamp(weights) if weights else None
        built.append(_cached_extractor(name, config.size, weights, stamp, device, config.precision))
    return built


@functools.lru_cache(maxsize=16)
def _cached_extractor(
    name: str,
    size: str,
    weights: str | None,
    stamp: tuple[int, int] | None,
    device: str | None,
    precision: Precision,
) -> FeatureExtractor:
    # `stamp` (size, mtime) is only part of the key: a weight file replaced in place
    # gets a fresh extractor.
    return create_extractor(
        catalog.set_of_extractor(name).extractor_ref,
        size=size,
        weights=weights,
        device=device,
        precision=precision,
    )


@functools.lru_cache(maxsize=16)
def _read_once(kind: type[FeatureExtractor], path: Path, stamp: tuple[int, int] | None) -> None:
    # A weight file read (checked) once per process while unchanged: a paper one is GBs.
    kind.read_weights(path)


def _file_stamp(path: str) -> tuple[int, int] | None:
    try:
        stat = Path(path).expanduser().stat()
    except OSError:
        return None  # the builder reports the missing file
    return stat.st_size, stat.st_mtime_ns


def table_writers(
    root: str | os.PathLike[str],
    extractors: Sequence[FeatureExtractor],
    dtype: str | None,
    batch_size: int | str,
) -> list[TableWriter]:
    """One writer per extractor, each in `dtype` or its feature set's (the catalog's);
    refuses a table that holds rows of other settings."""
    store = FeatureStore(root)
    writers = []
    for extractor in extractors:
        feature = catalog.set_of_extractor(extractor.name)
        table = store.table(feature.table)
        writers.append(TableWriter(extractor, table, dtype or feature.dtype, batch_size))
    for writer in writers:
        writer.check_provenance()
    return writers


class PendingVideo(BaseModel):
    """One video of a shard, and the windows each extractor's table already holds."""

    video_id: str
    path: str
    size: int
    mtime_ns: int
    digest: str
    stored: dict[str, list[int]]  # extractor name -> windows stored

    def complete(self, known: VideoRecord | None) -> bool:
        """Every table holds all of the video's windows: the manifest's count (`known`),
        or 0..k without a gap for a video stored before the manifest."""

        def whole(windows: list[int]) -> bool:
            count = known.windows if known is not None else len(windows)
            return bool(windows) and windows == list(range(count))

        return all(whole(windows) for windows in self.stored.values())

    def record_from_tables(self) -> VideoRecord:
        """A manifest row for a video stored before the manifest: what the tables tell."""
        windows = max(len(stored) for stored in self.stored.values())
        return VideoRecord(
            self.video_id,
            self.path,
            self.size,
            self.mtime_ns,
            self.digest,
            duration=None,
            has_audio=None,
            windows=windows,
            backend="",
        )


def check_extraction_settings(
    root: str | os.PathLike[str],
    config: ExtractConfig,
    extractors: Sequence[FeatureExtractor] | None = None,
) -> None:
    """Refuse, before any work, a table that holds rows of other settings than the
    extractors of `config` (built ones, or as `config` would build them) would write."""
    store = FeatureStore(root)
    if extractors is None:
        wanted = configured_provenance(config, config.dtype)
    else:
        wanted = {
            e.name: feature_provenance(e, config.dtype or catalog.set_of_extractor(e.name).dtype)
            for e in extractors
        }
    for name, provenance in wanted.items():
        check_table_settings(store.table(table_of_extractor(name)), provenance)


def check_table_settings(table: FeatureTable, wanted: Provenance) -> None:
    """Refuse a table that holds rows of other settings than `wanted`."""
    stored = table.provenance
    differences = stored.differences(wanted) if stored is not None else []
    if differences:
        raise ProvenanceMismatchError(
            f"{table.url} holds features made with other settings (stored != "
            f"requested): {'; '.join(differences)}. Extract into another store root, or "
            f"delete {table.url} to rebuild it with these settings."
        )
