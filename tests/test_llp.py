"""LLP annotation files: splits, weak labels, dense truth, and clear errors for bad rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avvp.model.classes import CLASS_INDEX
from avvp.pipeline.sources.llp import (
    AUDIO_FILES,
    SPLIT_FILES,
    VISUAL_FILE,
    AnnotationError,
    IgnoredAnnotationWarning,
    LLPAnnotations,
    youtube_id,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::avvp.pipeline.sources.llp.IgnoredAnnotationWarning"
)

WEAK_HEADER = "filename\tevent_labels\n"
DENSE_HEADER = "filename\tonset\toffset\tevent_labels\n"


@pytest.fixture(scope="module")
def corrected() -> LLPAnnotations:
    return LLPAnnotations.load()


def write_llp_folder(folder: Path, audio_rows: str = "", visual_rows: str = "") -> Path:
    """Six LLP-format files: one train, one val and one test video."""
    weak = {
        "train": "trainvideo1_0_10\tDog\n",
        "val": "valvideo001_0_10\tSpeech,Dog\n",
        "test": "testvideo01_5_15\tCat\n",
    }
    weak["full"] = "".join(weak.values())
    for split, rows in weak.items():
        (folder / SPLIT_FILES[split]).write_text(WEAK_HEADER + rows)
    default_audio = "valvideo001_0_10\t0\t3\tSpeech\ntestvideo01_5_15\t2\t10\tCat\n"
    (folder / AUDIO_FILES["corrected"]).write_text(DENSE_HEADER + (audio_rows or default_audio))
    (folder / VISUAL_FILE).write_text(
        DENSE_HEADER + (visual_rows or "valvideo001_0_10\t4\t6\tDog\n")
    )
    return folder


def test_vendored_splits_have_the_llp_sizes(corrected: LLPAnnotations) -> None:
    sizes = {name: len(corrected.split(name)) for name in ("train", "val", "test", "full")}
    assert sizes == {"train": 10_000, "val": 649, "test": 1_200, "full": 11_849}
    assert corrected.split("test")[:2] == ["4YdbENYcIyE_23_33", "KSRjje7GH44_60_70"]


def test_weak_labels_are_multi_hot_in_class_order(corrected: LLPAnnotations) -> None:
    labels = corrected.weak_labels(["KSRjje7GH44_60_70", "4YdbENYcIyE_23_33"])
    assert labels.shape == (2, 25) and labels.dtype == np.uint8
    assert np.flatnonzero(labels[0]).tolist() == sorted(
        [CLASS_INDEX["Blender"], CLASS_INDEX["Speech"]]
    )
    assert np.flatnonzero(labels[1]).tolist() == [CLASS_INDEX["Baby_cry_infant_cry"]]


def test_dense_truth_covers_onset_to_offset_minus_one_per_modality(
    corrected: LLPAnnotations,
) -> None:
    truth = corrected.dense(["KSRjje7GH44_60_70"])
    assert truth.shape == (1, 2, 10, 25) and truth.dtype == np.uint8
    blender = CLASS_INDEX["Blender"]
    assert np.flatnonzero(truth[0, 0, :, blender]).tolist() == [8, 9]  # audio 8..10
    assert np.flatnonzero(truth[0, 1, :, blender]).tolist() == list(range(10))  # visual 0..10


def test_dense_truth_of_repeated_filenames_is_repeated(corrected: LLPAnnotations) -> None:
    names = ["KSRjje7GH44_60_70", "4YdbENYcIyE_23_33", "KSRjje7GH44_60_70"]
    truth = corrected.dense(names)
    np.testing.assert_array_equal(truth[0], truth[2])
    np.testing.assert_array_equal(truth[1], corrected.dense(names[1:2])[0])


def test_published_audio_file_differs_only_where_its_rows_match_no_video() -> None:
    with pytest.warns(IgnoredAnnotationWarning, match="Baby_cry_infant_cry") as caught:
        published = LLPAnnotations.load(audio="published")
    assert "KvIjsmANkxI_10_20`" in str(caught[0].message)
    published_file = str(Path(published.source) / AUDIO_FILES["published"])
    ignored = {
        (row.line, row.filename) for row in published.ignored_rows if row.file == published_file
    }
    assert {
        (930, "Baby_cry_infant_cry"),
        (931, "Baby_cry_infant_cry"),
        (2449, "KvIjsmANkxI_10_20`"),
    } <= ignored

    corrected = LLPAnnotations.load(audio="corrected")
    test_videos = corrected.split("test") + corrected.split("val")
    differs = np.flatnonzero(
        (published.dense(test_videos) != corrected.dense(test_videos)).any(axis=(1, 2, 3))
    )
    assert sorted(test_videos[i] for i in differs) == ["JfZEqeLZqWk_30_40", "KvIjsmANkxI_10_20"]
    speech = corrected.dense(["JfZEqeLZqWk_30_40"])[0, 0, :, CLASS_INDEX["Speech"]]
    assert np.flatnonzero(speech).tolist() == [0, 1, 2, 3, 7, 8, 9]


def test_youtube_id_strips_start_and_end_seconds() -> None:
    assert youtube_id("4YdbENYcIyE_23_33") == "4YdbENYcIyE"
    assert youtube_id("-12_ndzRFRw_14_24") == "-12_ndzRFRw"
    assert youtube_id("AP0061o0Nvk_101.8_111.8") == "AP0061o0Nvk"
    with pytest.raises(AnnotationError, match="Baby_cry_infant_cry"):
        youtube_id("Baby_cry_infant_cry")


def test_video_ids_map_to_filenames(corrected: LLPAnnotations) -> None:
    assert corrected.to_filenames(["KSRjje7GH44", "4YdbENYcIyE_23_33"]) == [
        "KSRjje7GH44_60_70",
        "4YdbENYcIyE_23_33",
    ]
    with pytest.raises(AnnotationError, match="'nosuchvideo'"):
        corrected.to_filenames(["KSRjje7GH44", "nosuchvideo"])


def test_dense_truth_of_a_training_video_is_refused_by_name(corrected: LLPAnnotations) -> None:
    train_video = corrected.split("train")[0]
    with pytest.raises(AnnotationError, match=f"'{train_video}'.*no dense annotations"):
        corrected.dense([train_video, "KSRjje7GH44_60_70"])


def test_a_folder_of_llp_files_loads_with_any_number_of_segments(tmp_path: Path) -> None:
    llp = LLPAnnotations.load(write_llp_folder(tmp_path))
    assert llp.split("val") == ["valvideo001_0_10"]
    truth = llp.dense(["testvideo01_5_15", "valvideo001_0_10"], num_segments=12)
    assert truth.shape == (2, 2, 12, 25)
    assert np.flatnonzero(truth[0, 0, :, CLASS_INDEX["Cat"]]).tolist() == list(range(2, 10))
    assert np.flatnonzero(truth[1, 1, :, CLASS_INDEX["Dog"]]).tolist() == [4, 5]
    assert truth[0, 1].sum() == 0


@pytest.mark.parametrize(
    ("audio_rows", "expected"),
    [
        ("valvideo001_0_10\t0\t3\n", r"line 2: expected 4 tab-separated fields"),
        (
            "valvideo001_0_10\t0\t3\tSpeech\nvalvideo001_0_10\t0\t2.5\tDog\n",
            r"line 3: offset '2.5'",
        ),
        ("valvideo001_0_10\t-1\t3\tSpeech\n", r"line 2: onset '-1'"),
        ("valvideo001_0_10\t0\t3\tSpeach\n", r"line 2: unknown class name 'Speach'"),
    ],
)
def test_malformed_dense_row_error_names_file_line_and_value(
    tmp_path: Path, audio_rows: str, expected: str
) -> None:
    write_llp_folder(tmp_path, audio_rows=audio_rows)
    with pytest.raises(AnnotationError, match=rf"AVVP_eval_audio\.csv, {expected}"):
        LLPAnnotations.load(tmp_path)


def test_unknown_weak_class_error_names_file_line_and_value(tmp_path: Path) -> None:
    write_llp_folder(tmp_path)
    (tmp_path / SPLIT_FILES["val"]).write_text(WEAK_HEADER + "valvideo001_0_10\tSpeech,Doggo\n")
    with pytest.raises(
        AnnotationError, match=r"AVVP_val_pd\.csv, line 2: unknown class name 'Doggo'"
    ):
        LLPAnnotations.load(tmp_path)


def test_event_ending_after_the_last_segment_is_an_error_naming_file_line_and_value(
    tmp_path: Path,
) -> None:
    llp = LLPAnnotations.load(write_llp_folder(tmp_path))
    with pytest.raises(
        AnnotationError, match=r"AVVP_eval_audio\.csv, line 3: offset 10 .* 8 segments"
    ):
        llp.dense(["testvideo01_5_15"], num_segments=8)


def test_rows_covering_nothing_are_reported_not_fatal(tmp_path: Path) -> None:
    rows = (
        "valvideo001_0_10\t0\t3\tSpeech\nvalvideo001_0_10\t5\t5\tDog\nelsewhere01_0_10\t0\t3\tCat\n"
    )
    write_llp_folder(tmp_path, audio_rows=rows)
    with pytest.warns(IgnoredAnnotationWarning, match=r"'elsewhere01_0_10'.*lines 3"):
        llp = LLPAnnotations.load(tmp_path)
    assert [(row.line, row.filename) for row in llp.ignored_rows] == [
        (3, "valvideo001_0_10"),
        (4, "elsewhere01_0_10"),
    ]
    assert llp.dense(["valvideo001_0_10"])[0, 0].sum() == 3


def test_wrong_header_and_missing_file_are_named(tmp_path: Path) -> None:
    write_llp_folder(tmp_path)
    (tmp_path / VISUAL_FILE).write_text("filename,onset,offset,event_labels\n")
    with pytest.raises(AnnotationError, match=r"AVVP_eval_visual\.csv, line 1: header"):
        LLPAnnotations.load(tmp_path)
    (tmp_path / VISUAL_FILE).unlink()
    with pytest.raises(AnnotationError, match=r"AVVP_eval_visual\.csv is missing"):
        LLPAnnotations.load(tmp_path)
    with pytest.raises(AnnotationError, match=r"AVVP_eval_audio\.published\.csv is missing"):
        LLPAnnotations.load(tmp_path, audio="published")


def test_a_filename_listed_twice_with_other_labels_names_the_file_and_both_lines(
    tmp_path: Path,
) -> None:
    write_llp_folder(tmp_path)
    (tmp_path / SPLIT_FILES["train"]).write_text(
        WEAK_HEADER + "trainvideo1_0_10\tDog\nother000001_0_10\tCat\nthird000001_0_10\tCat\n"
        "trainvideo1_0_10\tSpeech,Dog\n"
    )
    with pytest.raises(
        AnnotationError,
        match=r"AVVP_train\.csv: 'trainvideo1_0_10' is listed on line 2 with Dog and on line 5 "
        r"with Speech,Dog; keep one",
    ):
        LLPAnnotations.load(tmp_path)


def test_a_split_file_and_the_full_file_disagreeing_on_labels_is_an_error_naming_both(
    tmp_path: Path,
) -> None:
    write_llp_folder(tmp_path)
    (tmp_path / SPLIT_FILES["full"]).write_text(
        WEAK_HEADER + "trainvideo1_0_10\tDog\nvalvideo001_0_10\tSpeech\ntestvideo01_5_15\tCat\n"
    )
    with pytest.raises(AnnotationError) as raised:
        LLPAnnotations.load(tmp_path)
    message = str(raised.value)
    assert "'valvideo001_0_10' is listed in" in message
    assert f"{SPLIT_FILES['val']} on line 2 with Speech,Dog" in message
    assert f"{SPLIT_FILES['full']} on line 3 with Speech; keep one" in message


def test_a_filename_repeated_with_the_same_labels_loads_and_counts_once(tmp_path: Path) -> None:
    write_llp_folder(tmp_path)
    (tmp_path / SPLIT_FILES["val"]).write_text(
        WEAK_HEADER + "valvideo001_0_10\tSpeech,Dog\nvalvideo001_0_10\tDog,Speech\n"
    )
    full = (tmp_path / SPLIT_FILES["full"]).read_text()
    (tmp_path / SPLIT_FILES["full"]).write_text(full + "valvideo001_0_10\tSpeech,Dog\n")

    llp = LLPAnnotations.load(tmp_path)

    assert llp.split("val") == ["valvideo001_0_10"]
    assert llp.split("full") == ["trainvideo1_0_10", "valvideo001_0_10", "testvideo01_5_15"]
    labels = llp.weak_labels(["valvideo001_0_10"])[0]
    assert np.flatnonzero(labels).tolist() == sorted([CLASS_INDEX["Speech"], CLASS_INDEX["Dog"]])


def test_the_vendored_weak_label_files_list_no_filename_with_two_label_sets(
    corrected: LLPAnnotations,
) -> None:
    # The load checks every filename of the four weak-label files against the others.
    assert len(set(corrected.split("full"))) == len(corrected.split("full")) == 11_849
