"""`avvp parse`: folders of any videos -> events, videos.csv and timelines with a trained
run; odd files fail with reasons, events merge across windows and stay inside videos."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from support import SAMPLES
from typer.testing import CliRunner

from avvp.model.classes import CLASS_INDEX, LLP_CLASSES
from avvp.pipeline.chain import PARSE_FOLDER, ParseFolderConfig, ParseFolderSummary, run_local
from avvp.pipeline.cli.app import app
from avvp.pipeline.parse import video_events
from avvp.pipeline.sources.dense_events import PLANTED_EVENTS_FILE
from avvp.pipeline.sources.llp import LLPAnnotations
from avvp.pipeline.synthetic.clips import (
    PlantedEvent,
    encode_clip,
    render_audio,
    render_frames,
)

K = len(LLP_CLASSES)


def parse(
    paths: list[Path], run: str, out: Path, store: Path | None = None, **config: object
) -> ParseFolderSummary:
    """The parse-folder chain here, as `avvp parse` runs it."""
    params = ParseFolderConfig(
        videos=[str(path) for path in paths],
        run=run,
        out=str(out),
        store=None if store is None else str(store),
        config={"device": "cpu", **config},
    )
    return run_local(PARSE_FOLDER, params)


def encode_audio_only(path: Path, seconds: float) -> Path:
    audio = render_audio([], seconds, np.random.default_rng(0))
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16_000, layout="mono")
        for start in range(0, len(audio), 1024):
            frame = av.AudioFrame.from_ndarray(
                audio[None, start : start + 1024], format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16_000, start
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def odd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Files a user's folder holds: long, silent, short, audio-only, empty, text, cut."""
    folder = tmp_path_factory.mktemp("odd")
    rng = np.random.default_rng(1)
    events = [PlantedEvent(CLASS_INDEX["Dog"], "audio", 8, 14), PlantedEvent(3, "visual", 2, 30)]
    encode_clip(
        folder / "long.mp4", render_frames(events, 35.0), audio=render_audio(events, 35.0, rng)
    )
    (folder / "trips").mkdir()
    encode_clip(folder / "trips" / "silent.mp4", render_frames(events, 12.0))
    encode_clip(folder / "blink.mp4", render_frames(events, 0.4))
    encode_audio_only(folder / "voice.m4a", 3.0)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("these are my notes, not a video\n" * 50)
    whole = encode_clip(tmp_path_factory.mktemp("whole") / "whole.mkv", render_frames(events, 10.0))
    (folder / "cut.mkv").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (folder / "llp").mkdir()
    shutil.copy(SAMPLES / "BjCEufrlXm4.mp4", folder / "llp" / "BjCEufrlXm4.mp4")
    (folder / "README.txt").write_text("not a video, and not named like one\n")
    return folder


EXPECTED = {
    "long": ("ok", ""),
    "trips/silent": ("ok", ""),
    "blink": ("failed", "too short"),
    "voice": ("failed", "no video stream"),
    "empty": ("failed", "empty file"),
    "notes": ("failed", "not a media file"),
    "cut": ("ok", ""),
    "BjCEufrlXm4": ("ok", ""),
}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


@pytest.mark.slow
def test_parse_writes_one_row_per_file_events_inside_each_video_and_exits_1_without_traceback(
    clips_demo, odd_folder: Path, tmp_path: Path
) -> None:
    _, demo = clips_demo
    out, store = tmp_path / "parsed", tmp_path / "store"
    result = CliRunner().invoke(
        app,
        ["parse", str(odd_folder), "--run", demo.runs["MM-CSE"], "--out", str(out)]
        + ["--store", str(store), "--device", "cpu"],
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    videos = {row["video_id"]: row for row in read_csv(out / "videos.csv")}
    assert videos.keys() == EXPECTED.keys()
    for video_id, (status, reason) in EXPECTED.items():
        assert videos[video_id]["status"] == status, videos[video_id]
        assert reason in videos[video_id]["reason"]
    assert videos["long"]["windows"] == "4"
    assert float(videos["long"]["duration_s"]) == pytest.approx(35.0, abs=0.05)
    assert videos["trips/silent"]["has_audio"] == "false"
    # Times to the millisecond, not the decoder's float noise.
    for row in videos.values():
        for column in ("duration_s", "declared_duration_s", "cut_at_s"):
            assert len(row[column].partition(".")[2]) <= 3, (column, row)
    # The cut file ends where its content does, short of what its header declares.
    cut = videos["cut"]
    assert float(cut["cut_at_s"]) == float(cut["duration_s"])
    assert float(cut["declared_duration_s"]) == pytest.approx(10.0, abs=0.2)
    assert float(cut["duration_s"]) < float(cut["declared_duration_s"]) - 1
    assert videos["long"]["cut_at_s"] == ""  # a whole file
    # The summary table keeps each file on one line outside a terminal.
    lines = result.stdout.splitlines()
    assert len([line for line in lines if "trips/silent" in line]) == 1

    events = pq.read_table(out / "events.parquet").to_pylist()
    assert events == [
        {
            **row,
            "onset_s": float(row["onset_s"]),
            "offset_s": float(row["offset_s"]),
            "score": pytest.approx(float(row["score"])),
        }
        for row in read_csv(out / "events.csv")
    ]
    for event in events:
        duration = float(videos[event["video_id"]]["duration_s"])
        assert 0 <= event["onset_s"] < event["offset_s"] <= duration, event
        assert 0.0 <= event["score"] <= 1.0
    silent = [e for e in events if e["video_id"] == "trips/silent"]
    assert all(e["modality"] == "visual" for e in silent)
    for video_id, (status, _) in EXPECTED.items():
        timeline = out / "timelines" / f"{video_id}.png"
        assert timeline.is_file() == (status == "ok")
        assert status != "ok" or timeline.stat().st_size > 1000


@pytest.mark.slow
def test_parsing_the_same_folder_again_reuses_the_features_and_gives_the_same_events(
    clips_demo, odd_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, demo = clips_demo
    store = tmp_path / "store"
    first = parse([odd_folder], demo.runs["MM-CSE"], tmp_path / "a", store)

    def no_network(*_: object) -> None:
        raise AssertionError("an extractor was built although nothing is to extract")

    # Nothing to extract: the run's settings are checked without building a network.
    monkeypatch.setattr("avvp.pipeline.embedding.build_extractors", no_network)
    monkeypatch.setattr("avvp.pipeline.extract.build_extractors", no_network)
    again = parse([odd_folder], demo.runs["MM-CSE"], tmp_path / "b", store)
    assert again.outcome("extract").line.startswith("nothing to extract; ")
    assert first.extract.videos_extracted == 4  # long, silent, cut, the LLP clip
    # The four failing files are not tried again while unchanged: they stay failed.
    assert again.extract.videos_extracted == 0 and again.extract.videos_decoded == 0
    assert again.extract.videos_failed_before == 4 and len(again.failures) == 4
    assert (tmp_path / "a" / "events.csv").read_bytes() == (
        tmp_path / "b" / "events.csv"
    ).read_bytes()
    # The same output folder again: the parse finds its outputs in place.
    same = parse([odd_folder], demo.runs["MM-CSE"], tmp_path / "b", store)
    assert same.outcome("parse").status == "stored" and same.parse == again.parse


def window_arrays(windows: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((windows, 2, 10, K), np.uint8), np.full((windows, 2, 10, K), 0.9, np.float32)


def test_an_event_across_a_window_boundary_is_one_event() -> None:
    on, prob = window_arrays(2)
    on[0, 0, 7:, 3] = 1  # audio, class 3, from 7 s to the end of the first window
    on[1, 0, :4, 3] = 1  # ... and on into the second window until 14 s
    on[:, 1, :, 5] = 1  # visual class 5 over both windows
    events = video_events(on, prob, np.array([10, 10]), has_audio=True)
    spans = {(e["modality"], e["class"]): (e["onset_s"], e["offset_s"]) for e in events}
    assert spans == {
        ("audio", LLP_CLASSES[3]): (7.0, 14.0),
        ("visual", LLP_CLASSES[5]): (0.0, 20.0),
    }


def test_padded_segments_never_start_or_extend_an_event() -> None:
    on, prob = window_arrays(2)
    on[1, 1, 2:, 4] = 1  # visual class 4 from 12 s, into the padding after 15 s
    on[1, 0, 7:, 6] = 1  # audio class 6 only inside the padding
    events = video_events(on, prob, np.array([10, 5]), has_audio=True)
    assert [(e["modality"], e["onset_s"], e["offset_s"]) for e in events] == [
        ("visual", 12.0, 15.0)
    ]


def test_a_video_without_audio_gets_no_audio_or_audio_visual_events() -> None:
    on, prob = window_arrays(1)
    on[0, :, 2:6, 1] = 1
    events = video_events(on, prob, np.array([10]), has_audio=False)
    assert [e["modality"] for e in events] == ["visual"]


@pytest.mark.slow
def test_a_trained_demo_run_finds_most_planted_events_of_the_test_clips(
    clips_demo, tmp_path: Path
) -> None:
    root, demo = clips_demo
    clips = root / "clips"
    test = set(LLPAnnotations.load(clips).split("test"))
    folder = tmp_path / "test-clips"
    folder.mkdir()
    for name in test:
        video = name.split("_")[0] + ".mp4"
        (folder / video).symlink_to(clips / "videos" / video)
    summary = parse(
        [folder], demo.runs["MM-CSE"], tmp_path / "out", labels=str(clips), timelines=False
    )
    assert summary.ok and summary.extract.videos_extracted == len(test)  # a store of its own
    found = pq.read_table(tmp_path / "out" / "events.parquet").to_pylist()
    with (clips / PLANTED_EVENTS_FILE).open() as stream:
        planted = [row for row in csv.DictReader(stream, delimiter="\t") if row["filename"] in test]
    hits = 0
    for event in planted:
        video = event["filename"].split("_")[0]
        onset, offset = float(event["onset"]), float(event["offset"])
        hits += any(
            e["video_id"] == video
            and e["modality"] == event["modality"]
            and e["class"] == event["event_labels"]
            and e["onset_s"] < offset
            and onset < e["offset_s"]
            for e in found
        )
    assert len(planted) > 40 and hits / len(planted) >= 0.7, (hits, len(planted))
