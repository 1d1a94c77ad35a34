"""The extract-and-train flow in this process (Prefect's embedded API): a flow that
fails half-way resumes without extracting anything twice, Dask runs the shards to the
same tables, and `avvp run` prints the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from avvp.flows import tasks
from avvp.flows.runner import run_chain
from avvp.pipeline import tables
from avvp.pipeline.chain import ChainConfig
from avvp.pipeline.synth_clips import write_synthetic_clips
from avvp.storage import FeatureStore

ON_CPU = {"device": "cpu"}
TINY_TRAIN = {"device": "cpu", "size": "tiny", "batch_size": 4, "optim": {"warmup_epochs": 1}}


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    write_synthetic_clips(folder, n=8, seconds=10)
    return folder


def chain(clips: Path, store: Path, **extract: Any) -> ChainConfig:
    return ChainConfig(
        videos=[str(clips / "videos")],
        labels=str(clips),
        store=str(store),
        preset="tiny",
        pseudo_labels="dense",
        epochs=1,
        config={
            "extract": {**ON_CPU, "shard_videos": 3, **extract},
            "train": TINY_TRAIN,
            "evaluate": ON_CPU,
            "splits": ["test"],
        },
    )


@pytest.fixture(scope="module")
def chained(
    clips: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[ChainConfig, dict[str, Any]]:
    """The chain run once on `clips`: its config and summary, for tests that only read."""
    config = chain(clips, tmp_path_factory.mktemp("chained") / "store")
    return config, run_chain(config)


def feature_fingerprints(store: Path) -> dict[str, str]:
    features = FeatureStore(store)
    return {name: features.table(name).fingerprint() for name in features.table_names()}


def test_a_flow_that_fails_half_way_resumes_without_extracting_anything_twice(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tasks.extract_shard
    calls: list[int] = []

    def second_shard_fails(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the second shard breaks (a bug, not a transient error)")
        return real(*args, **kwargs)

    monkeypatch.setattr(tasks, "extract_shard", second_shard_fails)
    with pytest.raises(RuntimeError, match="extraction shards failed"):
        run_chain(chain(clips, tmp_path / "store"))
    assert len(calls) == 3  # not retried: only transient errors are
    first = set(FeatureStore(tmp_path / "store").table(tables.VISUAL_TABLE).video_ids())
    assert len(first) == 5  # shards of 3, 3 and 2 videos: the second one failed

    monkeypatch.setattr(tasks, "extract_shard", real)
    again = run_chain(chain(clips, tmp_path / "store"))
    extraction = again["extraction"]
    assert extraction["videos_skipped"] == 5 and extraction["ran"] == 1
    assert set(extraction["videos_extracted"]).isdisjoint(first)
    assert len(extraction["videos_extracted"]) == 3
    assert extraction["windows_written"] == {name: 3 for name in extraction["windows_written"]}
    assert again["train"]["task"] == "ran" and again["evaluate"]["test"]["metrics"]


def test_dask_runs_the_shards_to_the_same_tables_as_the_default_runner(
    clips: Path, tmp_path: Path
) -> None:
    # Equal bits need equal arithmetic: Dask's workers run torch on one thread each
    # (distributed sets OMP_NUM_THREADS=1), and a measured batch size could differ, so
    # the default runner here runs on one thread too, both with one window per call.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        default = run_chain(chain(clips, tmp_path / "default", batch_size=1))
    finally:
        torch.set_num_threads(threads)
    dask = run_chain(chain(clips, tmp_path / "dask", batch_size=1), "dask", dask_workers=2)
    assert dask["extraction"]["ran"] == default["extraction"]["ran"] == 3
    assert feature_fingerprints(tmp_path / "dask") == feature_fingerprints(tmp_path / "default")
    assert dask["train"]["run_id"] == default["train"]["run_id"]


def test_only_transient_errors_are_retried() -> None:
    assert tasks.is_transient(OSError("stale NFS handle"))
    assert tasks.is_transient(TimeoutError("read timed out"))
    assert tasks.is_transient(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not tasks.is_transient(FileNotFoundError("no such video"))
    assert not tasks.is_transient(PermissionError("read-only store"))
    assert not tasks.is_transient(ValueError("bad config"))
    assert not tasks.is_transient(RuntimeError("a bug"))


def test_the_stage_commands_reuse_what_the_flow_made(
    chained: tuple[ChainConfig, dict[str, Any]],
) -> None:
    from avvp.pipeline.evaluate import evaluate_run
    from avvp.pipeline.extract import extract_videos
    from avvp.pipeline.train import train

    config, summary = chained
    stored = extract_videos(config.videos, config.store, config.extract_config())
    assert stored.videos_skipped == 8 and stored.videos_extracted == 0
    trained = train(config.store, config.train_config("dense"))
    assert trained.reused and trained.run_id == summary["train"]["run_id"]
    scored = evaluate_run(trained.run_url, config.evaluate_config("test"))
    assert scored.reused and scored.metrics == summary["evaluate"]["test"]["metrics"]


def test_the_parse_folder_flow_gives_the_events_of_avvp_parse(
    clips: Path, chained: tuple[ChainConfig, dict[str, Any]], tmp_path: Path
) -> None:
    from avvp.flows.parse_folder import parse_folder
    from avvp.pipeline.parse import ParseConfig, parse_videos

    run = chained[1]["train"]["run_url"]
    flowed = parse_folder(
        videos=str(clips / "videos"), run=run, out=str(tmp_path / "flow"), config=ON_CPU
    )
    assert flowed["extraction"]["videos_skipped"] == 8  # the chain stored them all
    direct = parse_videos(
        [clips / "videos"], run, tmp_path / "direct", config=ParseConfig(**ON_CPU)
    )
    assert flowed["parse"]["events"] == direct.events
    assert (tmp_path / "flow" / "events.csv").read_bytes() == (
        tmp_path / "direct" / "events.csv"
    ).read_bytes()
