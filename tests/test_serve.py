"""End to end: a real Prefect server on 127.0.0.1, `avvp serve`, and the deployment run
from Prefect's command line, then three re-runs checked by the work each one did, and
a parse-folder run whose every file fails, which `--watch` reports as not successful."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from prefect_server import (
    Background,
    PrefectServer,
    flow_run_states,
    run_deployment,
    wait_for_deployment,
)

from avvp.pipeline import catalog
from avvp.pipeline.chain import ExtractAndTrainSummary, summaries_folder
from avvp.pipeline.synthetic.clips import write_synthetic_clips
from avvp.storage import FeatureStore, LabelStore

DEPLOYMENT = "extract-and-train/default"
HELD_BACK = "synclip0009"  # a train-split clip (SPLIT_CYCLE: train, train, val, test)
LABEL_FILES = ("AVVP_train.csv", "AVVP_dataset_full.csv", "planted_events.csv")


def hold_back(clips: Path, aside: Path) -> None:
    """Take one clip and its label rows out of the folders, keeping them in `aside`."""
    aside.mkdir()
    shutil.move(clips / "videos" / f"{HELD_BACK}.mp4", aside / f"{HELD_BACK}.mp4")
    for name in LABEL_FILES:
        shutil.copy(clips / name, aside / name)
        lines = (clips / name).read_text().splitlines(keepends=True)
        (clips / name).write_text("".join(line for line in lines if HELD_BACK not in line))


def give_back(clips: Path, aside: Path) -> None:
    shutil.move(aside / f"{HELD_BACK}.mp4", clips / "videos" / f"{HELD_BACK}.mp4")
    for name in LABEL_FILES:
        shutil.copy(aside / name, clips / name)


@pytest.mark.slow
def test_the_served_deployment_runs_the_chain_and_reruns_do_only_new_work(
    tmp_path: Path,
) -> None:
    clips, store = tmp_path / "clips", tmp_path / "store"
    write_synthetic_clips(clips, n=9, seconds=10)
    hold_back(clips, tmp_path / "aside")
    params = {
        "videos": str(clips / "videos"),
        "labels": str(clips),
        "store": str(store),
        "extractor_size": "tiny",
        "pseudo_labels": "dense",
        "epochs": 2,
    }
    avvp = Path(sys.executable).parent / "avvp"
    with PrefectServer(tmp_path / "prefect") as server:
        serving = Background(
            [avvp, "serve"], env=server.env, log_path=tmp_path / "serve.log", cwd=tmp_path
        )
        with serving:
            wait_for_deployment(server, DEPLOYMENT, timeout_s=120, serving=serving)

            def run() -> ExtractAndTrainSummary:
                done = run_deployment(server, DEPLOYMENT, params, timeout_s=400)
                assert done.returncode == 0, done.stdout[-3000:] + serving.log_tail()
                folder = summaries_folder(str(store), "extract-and-train")
                return ExtractAndTrainSummary.model_validate(folder.read_json(folder.names()[-1]))

            def ran(summary: ExtractAndTrainSummary) -> set[str]:
                return set(summary.ran())

            first = run()
            clip_rows = FeatureStore(store).table(catalog.VISUAL_TABLE).video_ids()
            assert len(clip_rows) == 8 and first.outcome("extract").units == 1  # one shard
            assert first.pseudo_labels.source == "dense"
            assert LabelStore(store).segments("segment-dense").video_ids()
            run_folder = Path(first.train.run_url)
            assert (run_folder / "checkpoint.pt").is_file() and "train" in ran(first)
            assert set(first.evaluate.splits) == {"val", "test"}
            assert len(first.evaluate.splits["test"].metrics) == 11
            with server.client() as client:
                shown = client.post("/artifacts/filter", json={}).json()
            keys = {artifact["key"] for artifact in shown}
            assert {"metrics-val", "metrics-test", "failures", "summary"} <= keys
            assert {"baselines-val", "baselines-test", "per-class", "training-curve"} <= keys
            assert "extract-progress" in keys
            # Text and tables only: nothing that points at a file of the serving machine.
            assert not [artifact for artifact in shown if artifact["type"] == "image"]
            summary = next(a for a in shown if a["key"] == "summary")["data"]
            assert first.train.run_url in summary and "file://" not in summary
            assert "features come from random (untrained) tiny networks" in summary

            # Nothing new: every stage only plans, and the run is the same.
            second = run()
            assert ran(second) == set() and second.extract.videos_skipped == 8
            assert second.train.run_id == first.train.run_id

            # A new clip that no label file names: only its windows are extracted; training
            # reads none of its rows, so the run is the same and is not trained again.
            other = tmp_path / "other"
            write_synthetic_clips(other, n=1, seconds=10, seed=11)
            shutil.copy(other / "videos" / "synclip0001.mp4", clips / "videos" / "unnamed.mp4")
            third = run()
            assert ran(third) == {"extract"} and third.extract.videos_extracted == 1
            assert set(third.extract.windows_written.values()) == {1}
            assert third.train.run_id == first.train.run_id

            # A new train-split clip in the label files: only it is extracted, and the
            # training reads new rows, so a new run trains.
            give_back(clips, tmp_path / "aside")
            fourth = run()
            assert fourth.extract.videos_extracted == 1
            assert set(fourth.extract.windows_written.values()) == {1}
            assert "train" in ran(fourth) and not fourth.train.reused
            assert fourth.train.run_id != first.train.run_id

            # The second deployment parses the folder with the new run.
            wait_for_deployment(server, "parse-folder/default", timeout_s=60, serving=serving)
            parse = {
                "videos": str(clips / "videos"),
                "run": fourth.train.run_url,
                "out": str(tmp_path / "parsed"),
            }
            parsed = run_deployment(server, "parse-folder/default", parse, timeout_s=300)
            assert parsed.returncode == 0, parsed.stdout[-3000:] + serving.log_tail()
            videos = (tmp_path / "parsed" / "videos.csv").read_text().splitlines()
            assert len(videos) == 1 + 10 and all(',"ok",' in line for line in videos[1:])

            # A folder in which every file fails: the run does all it can, then ends
            # Failed, with a message counting the failures, and --watch exits 1.
            broken = tmp_path / "broken"
            broken.mkdir()
            for name in ("a.mp4", "b.mp4"):
                (broken / name).write_bytes(b"no video here" * 64)
            failing = {**parse, "videos": str(broken), "out": str(tmp_path / "broken-out")}
            watched = run_deployment(server, "parse-folder/default", failing, timeout_s=300)
            assert watched.returncode == 1, watched.stdout[-3000:] + serving.log_tail()
            assert "Failed" in watched.stdout
            last = flow_run_states(server, "parse-folder")[-1]
            assert last.state_type == "FAILED"
            with server.client() as client:
                state = client.get(f"flow_runs/{last.id}").json()["state"]
            assert "2 input(s) failed" in state["message"]
            videos = (tmp_path / "broken-out" / "videos.csv").read_text().splitlines()
            assert len(videos) == 1 + 2 and all(',"failed",' in line for line in videos[1:])


def test_serve_without_a_server_says_how_to_start_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from avvp.pipeline.cli.app import app

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = CliRunner().invoke(app, ["serve"])
    assert result.exit_code == 2
    assert "prefect server start" in result.output and "--api-url" in result.output
