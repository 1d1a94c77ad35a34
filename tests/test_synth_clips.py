"""Synthetic clips: real video files with planted events and LLP-format label files."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np
import pytest

from avvp.model.classes import LLP_CLASSES, NUM_CLASSES
from avvp.pipeline.sources.decode import decode_video
from avvp.pipeline.sources.dense_events import PLANTED_EVENTS_FILE, planted_dense_labels
from avvp.pipeline.sources.llp import LLPAnnotations, llp_video_ids
from avvp.pipeline.sources.videos import video_id_for
from avvp.pipeline.synthetic.clips import (
    PlantedEvent,
    encode_clip,
    render_audio,
    render_frames,
    write_synthetic_clips,
)

LABEL_FILES = (
    "AVVP_train.csv",
    "AVVP_val_pd.csv",
    "AVVP_test_pd.csv",
    "AVVP_dataset_full.csv",
    "AVVP_eval_audio.csv",
    "AVVP_eval_visual.csv",
)


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("synthetic")
    write_synthetic_clips(folder, n=8, seed=3, no_audio=[2])
    return folder


def test_clips_go_to_videos_folder_with_ids_that_video_id_for_maps_to_llp_filenames(
    synthetic_dir: Path,
) -> None:
    paths = sorted((synthetic_dir / "videos").glob("*.mp4"))
    annotations = LLPAnnotations.load(synthetic_dir)

    ids = [
        video_id_for(path, synthetic_dir / "videos", llp_video_ids(synthetic_dir)) for path in paths
    ]
    assert ids == [f"synclip{i:04d}" for i in range(1, 9)]
    assert annotations.to_filenames(ids) == [f"{video_id}_0_10" for video_id in ids]
    written = sorted(path.name for path in synthetic_dir.glob("*.csv"))
    assert written == sorted([*LABEL_FILES, PLANTED_EVENTS_FILE])


def test_planted_events_give_the_dense_truth_of_every_split_matching_the_llp_files(
    synthetic_dir: Path,
) -> None:
    annotations = LLPAnnotations.load(synthetic_dir)
    evaluated = annotations.split("val") + annotations.split("test")
    np.testing.assert_array_equal(
        planted_dense_labels(synthetic_dir, evaluated), annotations.dense(evaluated)
    )
    train = annotations.split("train")
    truth = planted_dense_labels(synthetic_dir, train)
    np.testing.assert_array_equal(truth.max(axis=(1, 2)), annotations.weak_labels(train))


def test_active_classes_limit_the_classes_that_occur(tmp_path: Path) -> None:
    write_synthetic_clips(tmp_path, n=12, seed=4, active_classes=3)
    annotations = LLPAnnotations.load(tmp_path)
    weak = annotations.weak_labels(annotations.split("full"))
    assert 1 <= int((weak.sum(axis=0) > 0).sum()) <= 3


def test_label_files_parse_with_the_llp_reader_into_train_val_and_test(
    synthetic_dir: Path,
) -> None:
    annotations = LLPAnnotations.load(synthetic_dir)

    splits = {name: annotations.split(name) for name in ("train", "val", "test", "full")}
    assert [len(splits[name]) for name in ("train", "val", "test", "full")] == [4, 2, 2, 8]
    assert sorted(splits["train"] + splits["val"] + splits["test"]) == sorted(splits["full"])
    assert annotations.ignored_rows == ()
    weak = annotations.weak_labels(splits["full"])
    assert ((weak.sum(axis=1) >= 1) & (weak.sum(axis=1) <= 3)).all()


def test_weak_labels_of_annotated_clips_are_the_union_of_their_dense_events(
    synthetic_dir: Path,
) -> None:
    annotations = LLPAnnotations.load(synthetic_dir)
    annotated = annotations.split("val") + annotations.split("test")

    dense = annotations.dense(annotated)  # (N, [audio, visual], T, classes)

    np.testing.assert_array_equal(dense.max(axis=(1, 2)), annotations.weak_labels(annotated))
    assert not dense.all(axis=(1, 3)).any()  # some segments are background


def test_clip_written_without_audio_has_no_audio_track_and_only_visual_events(
    synthetic_dir: Path,
) -> None:
    silent = synthetic_dir / "videos" / "synclip0003.mp4"  # index 2; it falls in val
    annotations = LLPAnnotations.load(synthetic_dir)

    decoded = decode_video(silent)

    assert not decoded.info.has_audio
    dense = annotations.dense(["synclip0003_0_10"])
    assert not dense[0, 0].any()
    assert dense[0, 1].any()


def test_synthetic_clips_decode_to_one_window_of_80_frames_and_480000_samples(
    synthetic_dir: Path,
) -> None:
    windows = decode_video(synthetic_dir / "videos" / "synclip0001.mp4").windows

    assert len(windows) == 1
    assert windows[0].frames.shape == (80, 64, 64, 3)
    assert windows[0].audio[48_000].shape == (480_000,)


def test_same_seed_gives_the_same_labels_and_another_seed_other_labels(tmp_path: Path) -> None:
    for folder, seed in (("a", 1), ("b", 1), ("c", 2)):
        write_synthetic_clips(tmp_path / folder, n=4, seed=seed)

    def labels(folder: str) -> list[str]:
        return [(tmp_path / folder / name).read_text() for name in LABEL_FILES]

    assert labels("a") == labels("b")
    assert labels("a") != labels("c")


def test_longer_clips_get_whole_second_events_beyond_ten_seconds(tmp_path: Path) -> None:
    paths = write_synthetic_clips(tmp_path, n=4, seconds=35.0, seed=0)
    annotations = LLPAnnotations.load(tmp_path)

    windows = decode_video(paths[0]).windows
    dense = annotations.dense(annotations.split("val") + annotations.split("test"), 35)

    assert annotations.split("full")[0] == "synclip0001_0_35"
    assert [w.valid_segments for w in windows] == [10, 10, 10, 5]
    assert dense.any()


def class_colour(class_index: int) -> np.ndarray:
    return 255 * np.array(colorsys.hsv_to_rgb(class_index / NUM_CLASSES, 1.0, 1.0))


@pytest.mark.parametrize("class_index", [0, 5, 10, 19])
def test_visual_event_shows_its_class_colour_only_during_its_segments(class_index: int) -> None:
    frames = render_frames([PlantedEvent(class_index, "visual", 2, 5)], seconds=10.0, fps=12)

    near = np.abs(frames.astype(float) - class_colour(class_index)).max(axis=-1) < 8
    pixels = near.sum(axis=(1, 2))

    seconds = np.arange(len(frames)) / 12
    during = (seconds >= 2) & (seconds < 5)
    assert (pixels[during] > 20).all()
    assert (pixels[~during] == 0).all()


def test_visual_events_of_different_classes_differ_in_colour() -> None:
    colours = {tuple(np.round(class_colour(k)).astype(int)) for k in range(NUM_CLASSES)}

    assert len(colours) == len(LLP_CLASSES)


def test_audio_event_is_audible_in_the_encoded_clip_only_during_its_segments(
    tmp_path: Path,
) -> None:
    events = [PlantedEvent(9, "audio", 3, 7)]  # Cello: a steady tone at 220 x 2^(9/8) Hz
    rng = np.random.default_rng(0)
    path = encode_clip(
        tmp_path / "tone.mp4", render_frames(events, 10.0), audio=render_audio(events, 10.0, rng)
    )

    audio = decode_video(path, sample_rates=(16_000,)).audio[16_000]

    loudness = np.sqrt(np.mean(audio[: 10 * 16_000].reshape(10, -1) ** 2, axis=1))
    assert loudness[3:7].min() > 5 * loudness[[0, 1, 8, 9]].max()
    tone = audio[int(3.5 * 16_000) : int(6.5 * 16_000)]
    peak_hz = np.argmax(np.abs(np.fft.rfft(tone))) * 16_000 / len(tone)
    assert peak_hz == pytest.approx(220 * 2 ** (9 / 8), abs=1)


@pytest.mark.parametrize("class_index", [1, 2])  # noise bursts, chirp
def test_each_audio_style_is_louder_inside_its_event_than_the_background(class_index: int) -> None:
    audio = render_audio(
        [PlantedEvent(class_index, "audio", 4, 6)], 10.0, np.random.default_rng(0), rate=8000
    )

    loudness = np.sqrt(np.mean(audio.reshape(10, -1) ** 2, axis=1))

    assert loudness[4:6].min() > 5 * np.delete(loudness, [4, 5]).max()
