"""The extract-and-train flow in this process (Prefect's embedded API): a flow that
fails half-way resumes without extracting anything twice, Dask runs the shards to the
same tables, the stage commands reuse what the flow made, and parse-folder gives the
events of `avvp parse` from a store of its own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from avvp.flows.runner import run_extract_and_train, run_parse_folder
from avvp.model.classes import LLP_CLASSES
from avvp.pipeline import catalog
from avvp.pipeline.chain import (
    PARSE_FOLDER,
    ChainConfig,
    ChainError,
    ExtractAndTrainSummary,
    ParseFolderConfig,
    is_transient,
    run_local,
)
from avvp.pipeline.chain import stages as chain_stages
from avvp.pipeline.synthetic.clips import write_synthetic_clips
from avvp.storage import FeatureStore, VideoManifest

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
        extractor_size="tiny",
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
) -> tuple[ChainConfig, ExtractAndTrainSummary]:
    """The chain run once on `clips`: its config and summary, for tests that only read."""
    config = chain(clips, tmp_path_factory.mktemp("chained") / "store")
    return config, run_extract_and_train(config)


def feature_fingerprints(store: Path) -> dict[str, str]:
    features = FeatureStore(store)
    return {name: features.table(name).fingerprint() for name in features.table_names()}


def test_a_flow_that_fails_half_way_resumes_without_extracting_anything_twice(
    clips: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = chain_stages.extract_shard
    calls: list[int] = []

    def second_shard_fails(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("the second shard breaks (a bug, not a transient error)")
        return real(*args, **kwargs)

    monkeypatch.setattr(chain_stages, "extract_shard", second_shard_fails)
    with pytest.raises(ChainError, match="1 of 3 extract units failed"):
        run_extract_and_train(chain(clips, tmp_path / "store"))
    assert len(calls) == 3  # not retried: only transient errors are
    first = set(FeatureStore(tmp_path / "store").table(catalog.VISUAL_TABLE).video_ids())
    assert len(first) == 5  # shards of 3, 3 and 2 videos: the second one failed

    monkeypatch.setattr(chain_stages, "extract_shard", real)
    again = run_extract_and_train(chain(clips, tmp_path / "store"))
    assert again.extract.videos_skipped == 5 and again.outcome("extract").units == 1
    assert again.extract.videos_extracted == 3
    assert set(again.extract.windows_written.values()) == {3}
    stored = set(FeatureStore(tmp_path / "store").table(catalog.VISUAL_TABLE).video_ids())
    assert len(stored) == 8 and first < stored
    assert again.outcome("train").status == "ran" and again.evaluate.splits["test"].metrics


def test_dask_runs_the_shards_to_the_same_tables_as_the_default_runner(
    clips: Path, tmp_path: Path
) -> None:
    # Equal bits need equal arithmetic: Dask's workers run torch on one thread each
    # (distributed sets OMP_NUM_THREADS=1), and a measured batch size could differ, so
    # the default runner here runs on one thread too, both with one window per call.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        default = run_extract_and_train(chain(clips, tmp_path / "default", batch_size=1))
    finally:
        torch.set_num_threads(threads)
    dask = run_extract_and_train(
        chain(clips, tmp_path / "dask", batch_size=1), "dask", dask_workers=2
    )
    assert dask.outcome("extract").units == default.outcome("extract").units == 3
    assert dask.extract.videos_extracted == 8
    assert feature_fingerprints(tmp_path / "dask") == feature_fingerprints(tmp_path / "default")
    assert dask.train.run_id == default.train.run_id


def test_only_transient_errors_are_retried() -> None:
    assert is_transient(OSError("stale NFS handle"))
    assert is_transient(TimeoutError("read timed out"))
    assert is_transient(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert not is_transient(FileNotFoundError("no such video"))
    assert not is_transient(PermissionError("read-only store"))
    assert not is_transient(ValueError("bad config"))
    assert not is_transient(RuntimeError("a bug"))


def test_the_stage_commands_reuse_what_the_flow_made(
    chained: tuple[ChainConfig, ExtractAndTrainSummary],
) -> None:
    from avvp.pipeline.evaluate import evaluate_run
    from avvp.pipeline.extract import extract_videos
    from avvp.pipeline.train import train

    config, summary = chained
    stored = extract_videos(config.videos, config.store, config.extract_config())
    assert stored.videos_skipped == 8 and stored.videos_extracted == 0
    trained = train(config.store, config.train_config("dense"))
    assert trained.reused and trained.run_id == summary.train.run_id
    scored = evaluate_run(trained.run_url, config.evaluate_config("test"))
    assert scored.reused and scored.metrics == summary.evaluate.splits["test"].metrics


def test_the_summary_for_the_prefect_ui_shows_the_report_as_text_without_file_urls(
    chained: tuple[ChainConfig, ExtractAndTrainSummary],
) -> None:
    _, summary = chained
    report = summary.report
    markdown = summary.markdown()
    assert "file://" not in markdown
    # Features of the tiny extractors: the warning comes first, before the nodes' lines.
    assert markdown.index("> **Warning:** The ") < markdown.index("- **extract**")
    assert "features come from random (untrained) tiny networks" in markdown
    assert len(report.provenance) == 3
    for line in report.provenance:
        assert f"> - {line}" in markdown and "random-init-seed-0" in line
    assert list(report.baselines) == ["test"]  # the chain's splits (`chain` above)
    assert "## Against two baselines (test split)" in markdown
    for row in ("trained run", "weak labels", "untrained network"):
        assert markdown.count(f"| {row} | ") == 1
    assert all(f"| {name} | " in markdown for name in LLP_CLASSES)
    assert "| 1 | " in markdown and "| yes |" in markdown  # the epoch kept (of 1)
    assert f"In the report, `{summary.train.run_url}/report/report.html`:" in markdown
    assert {"curves.png", "per_class.png"} <= set(report.captions)
    for name, caption in report.captions.items():
        assert f"- `{name}`: {caption}" in markdown
    tables = {table.key: table for table in summary.tables()}
    assert set(tables) == {
        "metrics-test",
        "baselines-test",
        "per-class",
        "training-curve",
        "failures",
    }
    assert [row["predictor"] for row in tables["baselines-test"].rows] == [
        "trained run",
        "weak labels",
        "untrained network",
    ]
    assert [row["class"] for row in tables["per-class"].rows] == list(LLP_CLASSES)
    assert tables["training-curve"].rows == [
        {
            "epoch": 1,
            "loss": round(report.history[0].loss, 4),
            "val Avg": round(report.history[0].val["Avg"], 2),
            "kept": "yes",
        }
    ]
    # What the flow stored reads back equal (classes without a score are None, not NaN).
    stored = json.loads(Path(summary.summary_file).read_text())
    assert ExtractAndTrainSummary.model_validate(stored).report == report
    page = Path(summary.train.run_url, report.html).read_text()
    assert "<div id='provenance' class='warning'>" in page


def test_the_parse_folder_flow_gives_the_events_of_avvp_parse(
    clips: Path, chained: tuple[ChainConfig, ExtractAndTrainSummary], tmp_path: Path
) -> None:
    run = chained[1].train.run_url
    params = ParseFolderConfig(
        videos=[str(clips / "videos")], run=run, out=str(tmp_path / "flow"), config=ON_CPU
    )
    flowed = run_parse_folder(params)
    assert flowed.ok and flowed.extract.videos_extracted == 8  # into a store of its own
    assert flowed.store == str(tmp_path / "flow" / "store")
    direct = run_local(PARSE_FOLDER, params.model_copy(update={"out": str(tmp_path / "direct")}))
    assert flowed.parse.events == direct.parse.events
    assert (tmp_path / "flow" / "events.csv").read_bytes() == (
        tmp_path / "direct" / "events.csv"
    ).read_bytes()


def test_parsing_keeps_to_its_own_store_and_parses_two_files_of_one_name(
    clips: Path, chained: tuple[ChainConfig, ExtractAndTrainSummary], tmp_path: Path
) -> None:
    """Different files named `clip.mp4` in two folders both parse, one folder after the
    other into the same output, and the training store is left as it was."""
    config, summary = chained
    training = Path(config.store)
    before = (feature_fingerprints(training), VideoManifest(training).read())
    for folder, clip in (("first", "synclip0001"), ("second", "synclip0002")):
        (tmp_path / folder).mkdir()
        shutil.copy(clips / "videos" / f"{clip}.mp4", tmp_path / folder / "clip.mp4")
    out = tmp_path / "parsed"
    for folder in ("first", "second"):
        params = ParseFolderConfig(
            videos=[str(tmp_path / folder)], run=summary.train.run_url, out=str(out), config=ON_CPU
        )
        parsed = run_local(PARSE_FOLDER, params)
        assert parsed.ok and [v.video_id for v in parsed.parse.videos] == ["clip"]
        assert parsed.parse.videos[0].path == str(tmp_path / folder / "clip.mp4")
    assert len(VideoManifest(out / "store").read()) == 2  # one per content
    assert (feature_fingerprints(training), VideoManifest(training).read()) == before
    both = run_local(
        PARSE_FOLDER,
        params.model_copy(update={"videos": [str(tmp_path / "first"), str(tmp_path / "second")]}),
    )
    assert both.ok and both.extract.videos_extracted == 0
    assert sorted(Path(name).name for name in both.parse.files if "timelines" in name) == sorted(
        f"clip-{video.key[:8]}.png" for video in both.parse.videos
    )
