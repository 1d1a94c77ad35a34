"""LLP labels in the label store: weak labels with splits and both dense annotation sets."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from avvp.model.classes import CLASS_INDEX
from avvp.pipeline.release import LLPLabelsResult, TableRows, import_llp_labels
from avvp.pipeline.sources.llp import (
    AUDIO_FILES,
    SPLIT_FILES,
    VISUAL_FILE,
    LLPAnnotations,
    youtube_id,
)
from avvp.storage import LabelStore

pytestmark = pytest.mark.filterwarnings(
    "ignore::avvp.pipeline.sources.llp.IgnoredAnnotationWarning"
)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("llp-labels"))
    with pytest.warns(UserWarning):  # the annotation rows that match no video
        import_llp_labels(root)
    return root


def test_weak_labels_of_all_splits_are_stored_under_youtube_ids(store: str) -> None:
    weak = LabelStore(store).weak().read()
    counts = {split: int((weak.splits == split).sum()) for split in ("train", "val", "test")}
    assert counts == {"train": 10000, "val": 649, "test": 1200}
    assert all(len(video_id) == 11 for video_id in weak.video_ids[:100])


def test_dense_tables_equal_the_annotation_files_for_both_audio_versions(store: str) -> None:
    for audio in ("corrected", "published"):
        llp = LLPAnnotations.load(audio=audio)
        test = llp.split("test")
        stored = (
            LabelStore(store)
            .segments(f"dense-{audio}")
            .read_videos([youtube_id(name) for name in test])
        )
        expected = llp.dense(test)
        np.testing.assert_array_equal(stored.audio, expected[:, 0])
        np.testing.assert_array_equal(stored.visual, expected[:, 1])


def test_importing_again_writes_nothing_new(store: str) -> None:
    with pytest.warns(UserWarning):
        result = import_llp_labels(store)
    assert {table: (rows.written, rows.replaced) for table, rows in result.tables.items()} == {
        "weak": (0, 0),
        "dense-corrected": (0, 0),
        "dense-published": (0, 0),
    }
    assert result.tables["weak"].unchanged == 11_849


def test_a_folder_with_only_the_corrected_audio_file_imports(tmp_path: Path) -> None:
    from avvp.pipeline.synthetic.clips import write_synthetic_clips

    write_synthetic_clips(tmp_path / "clips", n=4)
    result = import_llp_labels(str(tmp_path / "store"), tmp_path / "clips")
    assert result == LLPLabelsResult(
        tables={"weak": TableRows(written=4), "dense-corrected": TableRows(written=2)}
    )


def copy_vendored_llp(folder: Path) -> Path:
    folder.mkdir()
    vendored = resources.files("avvp.pipeline.data.llp")
    for name in [*SPLIT_FILES.values(), *AUDIO_FILES.values(), VISUAL_FILE]:
        with resources.as_file(vendored / name) as path:
            shutil.copy(path, folder / name)
    return folder


def relabel(folder: Path, filename: str, event_labels: str) -> None:
    """Give `filename` other weak labels in every weak-label file that lists it."""
    for name in SPLIT_FILES.values():
        path = folder / name
        lines = path.read_text().splitlines(keepends=True)
        path.write_text(
            "".join(
                f"{filename}\t{event_labels}\n" if line.split("\t")[0] == filename else line
                for line in lines
            )
        )


def test_an_edited_weak_label_replaces_exactly_that_row_and_says_so(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from avvp.pipeline.cli.app import app

    folder = copy_vendored_llp(tmp_path / "llp")
    root = str(tmp_path / "store")
    import_llp_labels(root, folder)
    weak = LabelStore(root).weak()
    before = weak.read()
    edited = "BjCEufrlXm4_20_30"  # first train video: Speech,Dog
    relabel(folder, edited, "Cat")

    output = CliRunner().invoke(app, ["import-labels", "--store", root, "--labels", str(folder)])

    assert output.exit_code == 0, output.output
    assert "weak: 0 rows written, 1 replaced, 11848 unchanged" in output.stdout
    assert "dense-corrected: 0 rows written, 0 replaced, 1849 unchanged" in output.stdout
    after = weak.read(before.video_ids)
    changed = np.flatnonzero((after.labels != before.labels).any(axis=1))
    assert before.video_ids[changed].tolist() == [youtube_id(edited)]
    assert np.flatnonzero(after.labels[changed[0]]).tolist() == [CLASS_INDEX["Cat"]]
    assert after.splits.tolist() == before.splits.tolist()
