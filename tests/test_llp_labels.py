"""LLP labels in the label store: weak labels with splits and both dense annotation sets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avvp.pipeline.llp import LLPAnnotations, youtube_id
from avvp.pipeline.llp_labels import import_llp_labels
from avvp.storage import LabelStore

pytestmark = pytest.mark.filterwarnings("ignore::avvp.pipeline.llp.IgnoredAnnotationWarning")


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
        written = import_llp_labels(store)
    assert set(written.values()) == {0}


def test_a_folder_with_only_the_corrected_audio_file_imports(tmp_path: Path) -> None:
    from avvp.pipeline.synth_clips import write_synthetic_clips

    write_synthetic_clips(tmp_path / "clips", n=4)
    written = import_llp_labels(str(tmp_path / "store"), tmp_path / "clips")
    assert written == {"weak": 4, "dense-corrected": 2}
