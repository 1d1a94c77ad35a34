"""Decoding worker processes kept from one shard to the next, and when they are not."""

from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path

import numpy as np
import pytest

from avvp.extractors import FeatureExtractor, create_extractor
from avvp.pipeline import decoding_workers
from avvp.pipeline.decoding_workers import close_decoding_workers
from avvp.pipeline.embedding import VideoEnd, WindowItem, table_of_extractor
from avvp.pipeline.extract import (
    ExtractConfig,
    Shard,
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


def test_the_same_workers_decode_every_shard_of_a_run_and_store_what_fresh_ones_do(
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
    kept = _workers()
    assert len(kept) == 2 and all(pids == kept for pids in seen)
    # Another run of the same set-up takes them too.
    more = write_synthetic_clips(tmp_path / "more", n=2, seconds=10, seed=7)
    extract_videos(more, tmp_path / "more-store", config, extractors=[clip])
    assert _workers() == kept
    close_decoding_workers()
    assert _workers() == set()

    # Each shard with workers of its own: the stored features are the same.
    fresh = tmp_path / "fresh"
    for start in range(0, len(clips), 2):
        close_decoding_workers()
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
    first, second, _ = plan_extraction(clips, tmp_path, config).shards
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


def test_a_shard_running_while_another_holds_the_kept_workers_gets_its_own(
    clip: FeatureExtractor, clips: list[Path], tmp_path: Path
) -> None:
    config = _config(clip)
    first, second, _ = plan_extraction(clips, tmp_path, config).shards
    with window_loader(first, [clip], tmp_path, config) as items:
        kept = _workers()
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
