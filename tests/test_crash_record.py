"""A file that ends the extraction process (the out-of-memory killer, a crash) is known
on the next run: it fails with a plain reason and is skipped until asked to retry, while
the rest of the folder is extracted. Work marks of running processes, or of another
machine, are never taken for crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from avvp.pipeline import catalog
from avvp.pipeline.chain.stages import ExtractInput, ExtractStage
from avvp.pipeline.cli.app import app
from avvp.pipeline.extract import CRASHED, STAGE, ExtractConfig, plan_extraction, record_plan
from avvp.pipeline.sources.videos import file_digest
from avvp.pipeline.synthetic.clips import write_synthetic_clips
from avvp.storage import FailureLog, FeatureStore
from avvp.storage import failures as failure_records
from avvp.storage.failures import MARKERS, Failure, WorkMarkers

DEADLY = "synclip0002"
CLIP_ONLY = ExtractConfig(extractors=["clip"], size="tiny", device="cpu", workers=0)

# `avvp extract` in a process that is killed, as the out-of-memory killer kills (no
# exception, no clean-up), when it starts decoding the file named first.
KILLED_ON = """
import os, signal, sys
from pathlib import Path

from avvp.pipeline import embedding
from avvp.pipeline.cli.app import app

open_video = embedding.open_video


def open_or_die(path, *args, **kwargs):
    if Path(path).name == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
    return open_video(path, *args, **kwargs)


embedding.open_video = open_or_die
app(sys.argv[2:])
"""

# A process that marks a file as being worked on, then ends without finishing it.
MARKS_AND_ENDS = """
import sys
from avvp.storage.failures import WorkMarkers

WorkMarkers(sys.argv[1], sys.argv[2]).start(*sys.argv[3:])
"""


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three 10-s clips, synclip0001..3.mp4."""
    folder = tmp_path_factory.mktemp("clips")
    write_synthetic_clips(folder, n=3, seconds=10)
    return folder / "videos"


def invoke(*args: object) -> tuple[int, str]:
    result = CliRunner().invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.output


def markers_left(store: Path) -> list[Path]:
    return sorted((store / MARKERS / STAGE).glob("*.json"))


def stored_ids(store: Path) -> list[str]:
    return sorted(FeatureStore(store).table(catalog.VISUAL_TABLE).video_ids())


def test_a_file_that_kills_the_process_fails_on_the_next_run_and_waits_for_retry_failed(
    videos: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    extract = ("extract", videos, "--store", store, "--extractors", "clip", "--size", "tiny")
    extract += ("--workers", "0", "--device", "cpu")
    killed = subprocess.run(
        [sys.executable, "-c", KILLED_ON, f"{DEADLY}.mp4", *map(str, extract)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(markers_left(store)) == 1  # the mark of the file it was killed on

    code, output = invoke(*extract)
    assert code == 1, output
    assert f"{DEADLY}.mp4" in output and "out of memory or a crash" in output
    (row,) = FailureLog(store).read(STAGE).to_pylist()
    assert (row["video_id"], row["reason"]) == (DEADLY, CRASHED)
    assert Path(row["path"]).name == f"{DEADLY}.mp4"
    assert row["detail"].startswith("process ") and row["digest"].startswith("sha256:")
    assert stored_ids(store) == ["synclip0001", "synclip0003"]
    assert markers_left(store) == []

    code, output = invoke(*extract)  # skipped again: it is not tried without being asked
    assert code == 1, output
    assert "0 extracted" in output and "out of memory or a crash" in output
    assert len(FailureLog(store).read(STAGE)) == 1

    code, output = invoke(*extract, "--retry-failed")
    assert code == 0, output
    assert stored_ids(store) == ["synclip0001", "synclip0002", "synclip0003"]
    assert FailureLog(store).read(STAGE).num_rows == 0
    assert markers_left(store) == []


def test_a_mark_left_by_an_ended_process_is_a_failure_and_removed_once_recorded(
    videos: Path, tmp_path: Path
) -> None:
    path = videos / f"{DEADLY}.mp4"
    subprocess.run(
        [sys.executable, "-c", MARKS_AND_ENDS, str(tmp_path), STAGE, DEADLY, str(path)]
        + [file_digest(path)],
        check=True,
        timeout=120,
    )

    plan = plan_extraction(videos, tmp_path, CLIP_ONLY)
    (failure,) = plan.failures
    assert (failure.video_id, failure.reason) == (DEADLY, CRASHED)
    assert [task.video_id for shard in plan.shards for task in shard.videos] == [
        "synclip0001",
        "synclip0003",
    ]
    record_plan(plan, tmp_path)
    assert markers_left(tmp_path) == []
    assert FailureLog(tmp_path).read(STAGE)["reason"].to_pylist() == [CRASHED]


def test_a_mark_of_a_running_process_is_left_alone(videos: Path, tmp_path: Path) -> None:
    # Another run at work on the file: this one plans it as usual.
    path = videos / f"{DEADLY}.mp4"
    WorkMarkers(tmp_path, STAGE).start(DEADLY, str(path), file_digest(path))

    plan = plan_extraction(videos, tmp_path, CLIP_ONLY)

    assert plan.failures == [] and plan.ended_markers == []
    assert sum(len(shard.videos) for shard in plan.shards) == 3


def test_a_mark_of_a_process_whose_id_was_given_to_a_later_one_is_a_crash(
    videos: Path, tmp_path: Path
) -> None:
    path = videos / f"{DEADLY}.mp4"
    name = WorkMarkers(tmp_path, STAGE).start(DEADLY, str(path), file_digest(path))
    marker = tmp_path / MARKERS / STAGE / name
    record = json.loads(marker.read_text())
    assert record["pid"] == os.getpid()
    record["ticks"] -= 1  # this id's process started earlier: not this one
    marker.write_text(json.dumps(record))

    (ended,) = WorkMarkers(tmp_path, STAGE).abandoned()
    assert (ended.name, ended.video_id) == (name, DEADLY)


def test_a_mark_from_another_machine_is_left_alone(
    videos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = videos / f"{DEADLY}.mp4"
    subprocess.run(
        [sys.executable, "-c", MARKS_AND_ENDS, str(tmp_path), STAGE, DEADLY, str(path), "x"],
        check=True,
        timeout=120,
    )
    # Seen from elsewhere, the process that wrote it cannot be looked at.
    monkeypatch.setattr(failure_records.socket, "gethostname", lambda: "another-machine")
    assert WorkMarkers(tmp_path, STAGE).abandoned() == []


def test_a_failed_file_is_tried_again_when_asked_or_when_its_content_changed(
    videos: Path, tmp_path: Path
) -> None:
    path = videos / f"{DEADLY}.mp4"
    copy = tmp_path / "videos" / path.name
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    failure = Failure(DEADLY, str(copy), "corrupt video data at 3.0 s", "", file_digest(copy))
    FailureLog(tmp_path / "store").record(STAGE, [failure])
    store = tmp_path / "store"

    assert plan_extraction(copy, store, CLIP_ONLY).failed_before == [failure]
    retry = CLIP_ONLY.model_copy(update={"retry_failed": True})
    assert [t.video_id for s in plan_extraction(copy, store, retry).shards for t in s.videos] == [
        DEADLY
    ]
    # The chain's extract stage plans it the same way, from the same setting.
    stage_plan = ExtractStage().plan(str(store), ExtractInput(videos=[str(copy)], config=retry))
    assert len(stage_plan.units) == 1
    assert (
        ExtractStage().plan(str(store), ExtractInput(videos=[str(copy)], config=CLIP_ONLY)).units
        == []
    )

    copy.write_bytes(videos.joinpath("synclip0001.mp4").read_bytes())  # replaced by the user
    replanned = plan_extraction(copy, store, CLIP_ONLY)
    assert replanned.failed_before == [] and len(replanned.shards) == 1


@pytest.mark.parametrize("command", ["extract", "run", "parse"])
def test_extract_run_and_parse_take_retry_failed(command: str) -> None:
    code, output = invoke(command, "--help")
    assert code == 0 and "--retry-failed" in output
