"""Decoding worker processes kept from one shard to the next.

A shard's videos are decoded in DataLoader worker processes (`ShardWindows`). Started
afresh for every shard, they cost each shard their start and their import of the
process image: about 0.15 s a shard on 2 CPUs, where 32 clips in shards of 8 took 1.19x
the time of one shard (`benchmarks/extract.py --only loader`); on a GPU machine a
shard of 32 videos is about half a second of its 8 workers' decoding, so their starts
would be a large share of it. So the workers are kept: one process-wide DataLoader
with persistent workers, whose dataset takes each shard's job (its videos and where
their work markers go) from a queue that gets one copy per worker before the shard's
pass; each worker keeps its every-n-th video of it, as `ShardWindows` does.

They are kept for the shards of one run, and stopped at its end (`close_decoding_workers`).
The shard stays the unit of work: one pass is one shard, and the workers are handed back
only after a pass that ran to its end. A pass that stopped early or raised (a consumer's
error, a worker that died) closes them, so no worker is left mid-video or holding a stale
job; the next shard starts fresh ones, and a dead worker's unfinished video keeps its
work marker, as before. A worker that dies while kept and idle between two shards (the
system's out-of-memory killer, say) fails nothing: the next shard finds it dead before
it hands out its job and starts fresh workers. Workers are kept for one set-up at a
time (worker count, decoder threads, the extractors' inputs and transforms, compared
pickled); another set-up replaces them. Shards running at the same time in one process
(a thread pool of tasks) take fresh workers while another holds the kept ones.
"""

from __future__ import annotations

import atexit
import multiprocessing
import pickle
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data._utils import signal_handling

from ..extractors import WindowInput
from ..storage.failures import WorkMarkers
from .embedding import PendingVideo, ShardWindows, VideoEnd, WindowItem, as_is

Specs = Mapping[str, tuple[WindowInput, Callable[[Any], torch.Tensor]]]


class _QueuedShards(IterableDataset):
    """`ShardWindows` of the shard whose job this worker takes from `jobs` at each pass."""

    def __init__(self, jobs: Any, specs: Specs, decoder_threads: int | None) -> None:
        self.jobs, self.specs, self.decoder_threads = jobs, dict(specs), decoder_threads

    def __iter__(self) -> Iterator[WindowItem | VideoEnd]:
        # A generator: the job is taken at the pass's first item, after its copies are in.
        videos, markers = self.jobs.get()
        yield from ShardWindows(videos, self.specs, markers, self.decoder_threads)


class _Kept(NamedTuple):
    key: tuple[int, int | None, bytes]
    jobs: Any
    loader: DataLoader


_kept: _Kept | None = None
_kept_lock = threading.Lock()


def close_decoding_workers() -> None:
    """Stop the kept decoding workers, unless a shard is using them (then it keeps them).
    Extraction calls this at the end of a run (`extract_videos`, the chain's extract
    node), so no idle worker outlives the run that started it (a notebook's kernel, a
    long-lived process); the next run starts fresh ones."""
    if _kept_lock.acquire(blocking=False):
        try:
            _close()
        finally:
            _kept_lock.release()


def _close() -> None:
    global _kept
    kept, _kept = _kept, None
    if kept is None:
        return
    # torch keeps a persistent loader's workers in its iterator and has no public close;
    # dropping the last reference would stop them too, but only once nothing (a
    # traceback, say) holds it.
    iterator = kept.loader._iterator
    if iterator is not None:
        iterator._shutdown_workers()
    kept.jobs.close()


def _stop_watching(iterator: Any) -> None:
    """Take the kept workers out of torch's SIGCHLD watch once a pass has ended: torch
    raises in the main thread, wherever it is, when a worker it watches dies, which is
    right during a pass (its shard fails) but not between passes, where no work is lost
    and the next shard can start fresh workers. Through the loader iterator's private
    fields: the DataLoader has no public switch for this."""
    signal_handling._remove_worker_pids(id(iterator))
    iterator._worker_pids_set = False


def _watch_if_alive(iterator: Any) -> bool:
    """Watch the kept workers again for the next pass; False, watching none, when one
    died since the last (the out-of-memory killer, say)."""
    if not all(worker.is_alive() for worker in iterator._workers):
        return False
    signal_handling._set_worker_pids(id(iterator), tuple(w.pid for w in iterator._workers))
    iterator._worker_pids_set = True
    return True


# Before multiprocessing's own exit handler ends them: they get their stop message.
atexit.register(close_decoding_workers)


class WindowLoader:
    """The windows of a shard's videos and each video's end, in decoding workers kept
    across shards (module docstring), or in this process when `num_workers` is 0.

    `with window_loader(...) as items:` iterates them once."""

    def __init__(
        self,
        videos: Sequence[PendingVideo],
        specs: Specs,
        markers: WorkMarkers,
        num_workers: int,
        decoder_threads: int | None,
    ) -> None:
        self.dataset = ShardWindows(videos, specs, markers, decoder_threads)
        self.num_workers = num_workers
        self._holds_kept = False
        self._drained = False

    def __enter__(self) -> Iterator[WindowItem | VideoEnd]:
        if self.num_workers == 0:
            return iter(self.dataset)
        key = self._key()
        if key is None or not _kept_lock.acquire(blocking=False):
            return iter(self._loader(self.dataset, persistent=False))
        self._holds_kept = True
        try:
            kept = self._kept_for(key)
            job = (self.dataset.videos, self.dataset.markers)
            for _ in range(self.num_workers):
                kept.jobs.put(job)
            return self._drain(iter(kept.loader))
        except BaseException:
            self._release()
            raise

    def __exit__(self, *exc: object) -> None:
        if self._holds_kept:
            self._release()

    def _release(self) -> None:
        self._holds_kept = False
        if self._drained and _kept is not None:
            _stop_watching(_kept.loader._iterator)
        else:
            _close()
        _kept_lock.release()

    def _drain(self, items: Iterator[WindowItem | VideoEnd]) -> Iterator[WindowItem | VideoEnd]:
        yield from items
        self._drained = True

    def _key(self) -> tuple[int, int | None, bytes] | None:
        """The set-up kept workers must share; None when the transforms do not pickle
        (fork starts workers without pickling them, but they cannot be compared)."""
        try:
            specs = pickle.dumps(self.dataset.specs)
        except Exception:
            return None
        return self.num_workers, self.dataset.decoder_threads, specs

    def _kept_for(self, key: tuple[int, int | None, bytes]) -> _Kept:
        global _kept
        # Kept workers have served a whole pass, so their loader has its iterator.
        if _kept is not None and (_kept.key != key or not _watch_if_alive(_kept.loader._iterator)):
            _close()
        if _kept is None:
            context = multiprocessing.get_context()
            jobs = context.Queue()
            dataset = _QueuedShards(jobs, self.dataset.specs, self.dataset.decoder_threads)
            _kept = _Kept(key, jobs, self._loader(dataset, persistent=True, context=context))
        return _kept

    def _loader(
        self, dataset: IterableDataset, persistent: bool, context: Any = None
    ) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=as_is,
            persistent_workers=persistent,
            multiprocessing_context=context,
        )
