"""The extract-and-train chain, through both runners (Prefect's flow on the embedded API,
and the local runner without Prefect): the store, not any record of earlier runs,
decides what is done; labels are content; failed inputs are never hidden; a stage's key
changes with its own code only."""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from typer.testing import CliRunner

from avvp.pipeline import catalog
from avvp.pipeline.chain import (
    EXTRACT_AND_TRAIN,
    STAGES,
    ChainConfig,
    ExtractAndTrainSummary,
    run_local,
)
from avvp.pipeline.synthetic.clips import write_synthetic_clips
from avvp.storage import FeatureStore, LabelStore

RUNNERS = ("local", "prefect")
TINY_TRAIN = {"device": "cpu", "size": "tiny", "batch_size": 4, "optim": {"warmup_epochs": 1}}
# One window per embed call: features, and so run ids, do not depend on timings.
EXTRACT = {"device": "cpu", "shard_videos": 3, "batch_size": 1}
TEST_CLIP = "synclip0004"  # a test-split clip (SPLIT_CYCLE: train, train, val, test)
TRAIN_CLIP = "synclip0001"
Run = Callable[[ChainConfig], ExtractAndTrainSummary]


def chain(clips: Path, store: Path, labels: Path | None = None) -> ChainConfig:
    return ChainConfig(
        videos=[str(clips / "videos")],
        labels=str(labels or clips),
        store=str(store),
        extractor_size="tiny",
        pseudo_labels="dense",
        epochs=1,
        config={
            "extract": EXTRACT,
            "train": TINY_TRAIN,
            "evaluate": {"device": "cpu"},
            "report": {"timeline_videos": 1, "tsne_max_segments": 50},
            "splits": ["test"],
        },
    )


def run_with(runner: str) -> Run:
    if runner == "local":
        return functools.partial(run_local, EXTRACT_AND_TRAIN)
    from avvp.flows.runner import run_extract_and_train

    return run_extract_and_train


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    write_synthetic_clips(folder, n=8, seconds=10)
    return folder


@pytest.fixture(scope="module", params=RUNNERS)
def runner(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="module")
def made(
    clips: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, ExtractAndTrainSummary]]:
    """The chain run once by each runner on the clips, each into a store of its own."""
    stores = {}
    for name in RUNNERS:
        store = tmp_path_factory.mktemp(f"made-{name}") / "store"
        stores[name] = (store, run_with(name)(chain(clips, store)))
    return stores


def copied(made: dict[str, tuple[Path, ExtractAndTrainSummary]], runner: str, to: Path) -> Path:
    shutil.copytree(made[runner][0], to)
    return to


def statuses(summary: ExtractAndTrainSummary) -> dict[str, str]:
    return {outcome.node: outcome.status for outcome in summary.nodes}


def fingerprints(store: Path) -> dict[str, str]:
    features, labels = FeatureStore(store), LabelStore(store)
    prints = {f"features/{n}": features.table(n).fingerprint() for n in features.table_names()}
    for name in labels.table_names():
        table = labels.weak() if name == catalog.WEAK_LABELS_TABLE else labels.segments(name)
        prints[f"labels/{name}"] = table.fingerprint()
    return prints


def task_run_names(flow_run: str) -> list[str]:
    """The names of the task runs of a flow run, from Prefect's API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run)]))
        )
    return [run.name for run in runs]


def test_a_first_run_runs_every_stage_and_the_two_runners_agree(
    made: dict[str, tuple[Path, ExtractAndTrainSummary]],
) -> None:
    local_store, local = made["local"]
    prefect_store, flowed = made["prefect"]
    assert set(statuses(local).values()) == {"ran"} and local.ok
    assert local.extract.videos_extracted == 8 and local.evaluate.splits["test"].videos_scored == 2

    def comparable(summary: ExtractAndTrainSummary, store: Path) -> Any:
        text = summary.model_dump_json().replace(str(store), "STORE")
        return drop_keys(json.loads(text), {"seconds", "run_label", "summary_file"})

    assert comparable(flowed, prefect_store) == comparable(local, local_store)
    assert fingerprints(prefect_store) == fingerprints(local_store)
    assert Path(local.summary_file).is_file() and Path(flowed.summary_file).is_file()


def drop_keys(value: Any, keys: set[str]) -> Any:
    if isinstance(value, dict):
        return {k: drop_keys(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [drop_keys(item, keys) for item in value]
    return value


def test_a_rerun_with_nothing_new_only_plans_and_returns_the_same_run(
    clips: Path, made: dict[str, tuple[Path, ExtractAndTrainSummary]], runner: str, tmp_path: Path
) -> None:
    store = copied(made, runner, tmp_path / "store")
    again = run_with(runner)(chain(clips, store))
    assert set(statuses(again).values()) == {"stored"}
    assert again.train.run_id == made[runner][1].train.run_id
    if runner == "prefect":
        names = task_run_names(again.run_label)
        assert names and all(name.startswith("plan-") for name in names), names


@pytest.mark.parametrize(
    ("deleted", "made_again"),
    [
        (("features", "videos"), {"extract"}),
        (("labels",), {"labels", "pseudo-labels"}),
        (("runs",), {"train", "evaluate", "report"}),
    ],
)
def test_deleted_outputs_are_made_again_by_a_rerun(
    clips: Path,
    made: dict[str, tuple[Path, ExtractAndTrainSummary]],
    runner: str,
    tmp_path: Path,
    deleted: tuple[str, ...],
    made_again: set[str],
) -> None:
    store = copied(made, runner, tmp_path / "store")
    before = fingerprints(store)
    for folder in deleted:
        shutil.rmtree(store / folder)
    again = run_with(runner)(chain(clips, store))
    assert {node for node, status in statuses(again).items() if status == "ran"} == made_again
    assert again.ok and fingerprints(store) == before
    run = Path(again.train.run_url)
    assert run.parent.parent == store and (run / "checkpoint.pt").is_file()
    assert again.train.run_id == made[runner][1].train.run_id


def test_a_rerun_on_a_copied_store_reports_runs_inside_that_store(
    clips: Path, made: dict[str, tuple[Path, ExtractAndTrainSummary]], runner: str, tmp_path: Path
) -> None:
    store = copied(made, runner, tmp_path / "copy")
    again = run_with(runner)(chain(clips, store))
    assert Path(again.train.run_url) == store / "runs" / again.train.run_id
    assert again.report.run_url.startswith(str(store))
    assert Path(again.summary_file).parent.parent.parent == store


def test_editing_one_train_videos_weak_labels_gives_a_new_run(
    clips: Path, made: dict[str, tuple[Path, ExtractAndTrainSummary]], runner: str, tmp_path: Path
) -> None:
    store = copied(made, runner, tmp_path / "store")
    labels = tmp_path / "labels"
    labels.mkdir()
    for path in clips.glob("*.csv"):
        text = path.read_text()
        if path.name in ("AVVP_train.csv", "AVVP_dataset_full.csv"):
            lines = [
                f"{TRAIN_CLIP}_0_10\tSpeech" if line.startswith(f"{TRAIN_CLIP}_") else line
                for line in text.splitlines()
            ]
            text = "\n".join(lines) + "\n"
        (labels / path.name).write_text(text)
    again = run_with(runner)(chain(clips, store, labels=labels))
    assert again.labels.imported is not None
    assert again.labels.imported.tables["weak"].replaced == 1
    assert statuses(again)["train"] == "ran"
    assert again.train.run_id != made[runner][1].train.run_id
    weak = LabelStore(store).weak().read([TRAIN_CLIP])
    assert weak.labels[0].sum() == 1


def test_one_undecodable_test_clip_exits_1_names_it_and_the_evaluation_counts_its_videos(
    clips: Path, runner: str, tmp_path: Path
) -> None:
    from avvp.pipeline.cli.app import app

    videos = tmp_path / "clips" / "videos"
    shutil.copytree(clips / "videos", videos)
    (videos / f"{TEST_CLIP}.mp4").write_bytes(b"not a video at all" * 100)
    config = chain(clips, tmp_path / "store").model_copy(update={"videos": [str(videos)]})
    config_file = tmp_path / "chain.json"
    config_file.write_text(config.model_dump_json())
    result = CliRunner().invoke(
        app, ["run", "--config", str(config_file), "--runner", runner, "--json"]
    )
    assert result.exit_code == 1, result.output
    summary = ExtractAndTrainSummary.model_validate_json(result.stdout.strip().splitlines()[-1])
    assert [Path(failure.path).name for failure in summary.failures] == [f"{TEST_CLIP}.mp4"]
    test = summary.evaluate.splits["test"]
    assert (test.videos_scored, test.videos_in_split, test.missing_examples) == (1, 2, [TEST_CLIP])
    assert any("scored 1 of 2" in warning for warning in summary.warnings)
    assert summary.report.html  # everything else was done


def test_stage_keys_change_with_their_own_code_only(
    made: dict[str, tuple[Path, ExtractAndTrainSummary]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each stage's key holds the version of the code it declares (its import closure,
    tests/test_code_version.py): an edit of the report or the plots leaves the
    extraction and training keys alone; a changed version changes the plan's key."""
    import avvp
    from avvp.pipeline import code_version as versions
    from avvp.pipeline.chain.stages import ExtractInput
    from avvp.pipeline.extract import ExtractConfig

    source, package = Path(avvp.__file__).parent, tmp_path / "avvp"
    shutil.copytree(
        source,
        package,
        ignore=lambda folder, names: [
            name
            for name in names
            if Path(folder) == source and name not in STAGE_SOURCES or name == "__pycache__"
        ],
    )

    def stage_versions() -> dict[str, str]:
        versions.code_version.cache_clear()  # it caches by arguments, not by file contents
        return {
            name: versions.code_version(*STAGES[name].code, package=package)
            for name in ("extract", "train", "report")
        }

    before = stage_versions()
    for edited in (
        "pipeline/reports/report.py",
        "pipeline/reports/plots.py",
        "pipeline/cli/app.py",
    ):
        with (package / edited).open("a") as stream:
            stream.write("\n# an edit of the report's page\n")
    after = stage_versions()
    assert (after["extract"], after["train"]) == (before["extract"], before["train"])
    assert after["report"] != before["report"]

    extract, store = STAGES["extract"], str(made["local"][0])
    config = ExtractInput(videos=[], config=ExtractConfig(size="tiny", device="cpu"))
    key = extract.plan(store, config).key
    monkeypatch.setattr(type(extract), "code_version", lambda self: "another-version")
    assert extract.plan(store, config).key != key


STAGE_SOURCES = {"__init__.py", "contract.py", "extractors", "model", "pipeline", "storage"}


def test_progress_lines_say_counts_rate_and_time_left_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from avvp.pipeline.chain import Reporter
    from avvp.pipeline.chain import stage as stage_module

    clock = [0.0]
    monkeypatch.setattr(stage_module.time, "monotonic", lambda: clock[0])
    lines: list[str] = []
    fractions: list[float] = []
    reporter = Reporter(
        "extract", 200, "videos", lambda _, line: lines.append(line), fractions.append
    )
    for number in range(200):
        clock[0] += 0.25  # four videos a second
        reporter.advance(f"video{number}")
    reporter.absorb(["video3", "video7"])  # counted already: no double count
    assert lines[0] == "extract: 20/200 videos, 4.0 videos/s, about 45 s left"
    assert lines[1] == "extract: 40/200 videos, 4.0 videos/s, about 40 s left"
    assert lines[-1] == "extract: 200/200 videos, 4.0 videos/s"
    assert len(lines) == 10 and reporter.done == 200  # one line per 5 s, and the last
    assert fractions[0] == 0.1 and fractions[-1] == 1.0
