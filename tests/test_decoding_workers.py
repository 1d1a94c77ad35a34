"""Decoding worker processes kept from one shard to the next, and when they are not."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import BaseModel

from avvp.extractors import FeatureExtractor, create_extractor
from avvp.pipeline import decoding_workers
from avvp.pipeline.chain import STAGES, Chain, ChainError, ChainSummary, Node, run_local, stages
from avvp.pipeline.chain.stages import ExtractInput
from avvp.pipeline.decoding_workers import close_decoding_workers
from avvp.pipeline.embedding import VideoEnd, WindowItem, table_of_extractor
from avvp.pipeline.extract import (
    ExtractConfig,
    ExtractSummary,
    Shard,
    extract_shard,
    extract_videos,
    plan_extraction,
    window_loader,
)
from avvp.pipeline.synthetic.clips import write_synthetic_clips
from avvp.storage import FeatureStore

TWO_WORKERS = ExtractConfig(workers=2, shard_videos=2)


@pytest.fixture(scope="module")
def clip() -> FeatureExtractor:
    return create_extractor("clip", size="tiny", device="cpu")


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Six 10-s clips: three shards of two."""
    folder = tmp_path_factory.mktemp("clips")
    return write_synthetic_clips(folder, n=6, seconds=10)


# Child processes that were there before the test (another module's, say): not workers.
_OTHER_CHILDREN: set[int] = set()


@pytest.fixture(autouse=True)
def _other_children() -> None:
    _OTHER_CHILDREN.clear()
    _OTHER_CHILDREN.update(process.pid for process in multiprocessing.active_children())


def _workers() -> set[int]:
    """The decoding workers alive: child processes the test started."""
    return {process.pid for process in multiprocessing.active_children()} - _OTHER_CHILDREN


def _config(clip: FeatureExtractor) -> ExtractConfig:
    return TWO_WORKERS.model_copy(update={"extractors": [clip.name]})


def _ends(shard: Shard, clip: FeatureExtractor, root: Path, config: ExtractConfig) -> list[str]:
    """A whole pass of the shard's loader: the ids of the videos that ended well."""
    with window_loader(shard, [clip], root, config) as items:
        ends = [item for item in items if isinstance(item, VideoEnd)]
    assert all(end.failure is None for end in ends)
    return [end.video_id for end in ends]


def test_a_run_decodes_its_shards_with_the_same_workers_stops_them_and_stores_the_same(
    clip: FeatureExtractor, clips: list[Path], tmp_path: Path
) -> None:
    config = _config(clip)
    seen: list[set[int]] = []
    summary = extract_videos(
        clips,
        tmp_path / "kept",
        config,
        extractors=[clip],
        on_progress=lambda _: seen.append(_workers()),
    )
    assert summary.shards == 3 and summary.videos_extracted == 6 and not summary.failures
    assert len(seen) == 6 and len(seen[0]) == 2 and all(pids == seen[0] for pids in seen)
    assert _workers() == set()  # no idle worker outlives its run

    # Each shard with workers of its own: the stored features are the same.
    fresh = tmp_path / "fresh"
    for start in range(0, len(clips), 2):
        extract_videos(clips[start : start + 2], fresh, config, extractors=[clip])
    ids = sorted(path.stem for path in clips)
    table = table_of_extractor(clip.name)
    got = FeatureStore(tmp_path / "kept").table(table).read_videos(ids)
    want = FeatureStore(fresh).table(table).read_videos(ids)
    assert got.keys.video_ids.tolist() == want.keys.video_ids.tolist()
    np.testing.assert_array_equal(got.features, want.features)


def test_workers_are_closed_when_a_shard_stops_before_its_end(
    clip: FeatureExtractor, clips: list[Path], tmp_path: Path
) -> None:
    config = _config(clip)
    shard, *_ = plan_extraction(clips, tmp_path, config).shards
    with window_loader(shard, [clip], tmp_path, config) as items:
        assert isinstance(next(items), WindowItem)
        assert len(_workers()) == 2
    # Stopped mid-shard: no worker is kept halfway through a video or with a stale job.
    assert _workers() == set()
    with pytest.raises(KeyError), window_loader(shard, [clip], tmp_path, config) as items:
        next(items)
        raise KeyError("the consumer failed")
    assert _workers() == set()
    # The next shard starts fresh workers and gets all its videos.
    assert len(_ends(shard, clip, tmp_path, config)) == 2
    assert len(_workers()) == 2


def test_a_worker_killed_mid_shard_fails_that_shard_and_the_next_one_starts_fresh_workers(
    clip: FeatureExtractor, clips: list[Path], tmp_path: Path
) -> None:
    config = _config(clip)
    first, *_ = plan_extraction(clips, tmp_path, config).shards
    # Clips of four windows: a worker is mid-video when killed (it runs at most two items
    # ahead of the consumer), never done with its part already.
    long_clips = write_synthetic_clips(tmp_path / "long", n=2, seconds=40, seed=3)
    (second,) = plan_extraction(long_clips, tmp_path, config).shards
    assert len(_ends(first, clip, tmp_path, config)) == 2
    victims = _workers()
    assert len(victims) == 2
    with (
        pytest.raises(RuntimeError, match="worker"),
        window_loader(second, [clip], tmp_path, config) as items,
    ):
        next(items)
        os.kill(min(victims), signal.SIGKILL)  # mid-pass
        list(items)
    assert not _workers() & victims
    assert len(_ends(second, clip, tmp_path, config)) == 2
    assert _workers() and not _workers() & victims


def test_a_kept_worker_that_dies_between_shards_is_replaced_by_the_next_shard(
    clip: FeatureExtractor, clips: list[Path], tmp_path: Path
) -> None:
    config = _config(clip)
    first, second, _ = plan_extraction(clips, tmp_path, config).shards
    assert len(_ends(first, clip, tmp_path, config)) == 2
    victims = _workers()
    os.kill(min(victims), signal.SIGKILL)  # idle, between two shards (an OOM kill, say)
    os.waitid(os.P_PID, min(victims), os.WEXITED | os.WNOWAIT)  # dead, not yet reaped
    time.sleep(0.2)  # the main thread handles its SIGCHLD here: nothing may be raised
    # The next shard notices before it hands out its job, and gets fresh workers.
    assert _ends(second, clip, tmp_path, config) == [v.video_id for v in second.videos]
    assert len(_workers()) == 2 and not _workers() & victims


def test_a_shard_running_while_another_holds_the_kept_workers_gets_its_own(
    clip: FeatureExtractor, clips: list[Path], tmp_path: Path
) -> None:
    config = _config(clip)
    first, second, _ = plan_extraction(clips, tmp_path, config).shards
    with window_loader(first, [clip], tmp_path, config) as items:
        kept = _workers()
        close_decoding_workers()  # another run's end: the shard keeps its workers
        others = _ends(second, clip, tmp_path, config)
        ends = [item.video_id for item in items if isinstance(item, VideoEnd)]
    assert ends == [video.video_id for video in first.videos]
    assert others == [video.video_id for video in second.videos]
    assert len(kept) == 2 and _workers() == kept  # the second shard's own ones ended


def test_another_set_up_replaces_the_kept_workers(
    clip: FeatureExtractor, clips: list[Path], tmp_path: Path
) -> None:
    config = _config(clip)
    shard, *_ = plan_extraction(clips, tmp_path, config).shards
    _ends(shard, clip, tmp_path, config)
    before = _workers()
    _ends(shard, clip, tmp_path, config.model_copy(update={"decoder_threads": 1}))
    after = _workers()
    assert len(before) == len(after) == 2 and not before & after
    assert decoding_workers._kept is not None and decoding_workers._kept.key[1] == 1


class _ExtractOnly(BaseModel):
    videos: list[str]
    store: str


class _ExtractOnlySummary(ChainSummary):
    extract: ExtractSummary


_SETTINGS = TWO_WORKERS.model_copy(update={"extractors": ["clip"], "size": "tiny", "device": "cpu"})
EXTRACT_ONLY = Chain(
    name="extract-only",
    params=_ExtractOnly,
    summary=_ExtractOnlySummary,
    nodes=(
        Node(
            "extract",
            STAGES["extract"],
            lambda params, _: ExtractInput(videos=params.videos, config=_SETTINGS),
        ),
    ),
    store=lambda params: params.store,
    writes=lambda params: (params.store,),
)


def _params(clips: list[Path], store: Path) -> dict[str, Any]:
    return {"videos": [str(path) for path in clips], "store": str(store)}


def test_the_chains_extract_node_keeps_its_workers_across_its_units_and_stops_them_after(
    clips: list[Path], tmp_path: Path
) -> None:
    seen: list[set[int]] = []
    summary = run_local(
        EXTRACT_ONLY,
        _params(clips, tmp_path / "store"),
        emit=lambda *_: None,
        on_count=lambda *_: seen.append(_workers()),
    )
    assert summary.extract.shards == 3 and summary.extract.videos_extracted == 6
    assert len(seen[-1]) == 2 and all(pids == seen[-1] for pids in seen if pids)
    assert _workers() == set()


def test_a_failed_extract_unit_still_stops_the_workers(
    clips: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails_after_its_shard(*args: Any, **kwargs: Any) -> Any:
        extract_shard(*args, **kwargs)  # its workers are kept for the next unit
        assert len(_workers()) == 2
        raise OSError("the disk filled up")

    monkeypatch.setattr(stages, "extract_shard", fails_after_its_shard)
    with pytest.raises(ChainError, match="3 of 3 extract units failed"):
        run_local(EXTRACT_ONLY, _params(clips, tmp_path / "store"), emit=lambda *_: None)
    assert _workers() == set()
