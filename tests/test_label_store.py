"""Label store semantics: weak labels with splits, segment labels per source, store info."""

from __future__ import annotations

import numpy as np
import pytest

from avvp.storage.errors import ProvenanceMismatchError
from avvp.storage.features import FeatureStore
from avvp.storage.info import store_info
from avvp.storage.keys import Keys
from avvp.storage.labels import LabelStore
from avvp.storage.provenance import Provenance

CLASSES = 25


def weak_rows(count: int, seed: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    video_ids = [f"weak{seed}_{i}" for i in range(count)]
    labels = rng.integers(0, 2, (count, CLASSES))
    splits = [("train", "val", "test")[i % 3] for i in range(count)]
    return video_ids, labels, splits


def segment_rows(count: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "video_ids": [f"seg{seed}_{i}" for i in range(count)],
        "windows": np.zeros(count, np.int64),
        "audio": rng.integers(0, 2, (count, 10, CLASSES), dtype=np.uint8),
        "visual": rng.integers(0, 2, (count, 10, CLASSES), dtype=np.uint8),
    }


def test_weak_labels_read_back_with_splits_in_request_order(tmp_path):
    weak = LabelStore(tmp_path).weak()
    video_ids, labels, splits = weak_rows(9)
    weak.write(video_ids, labels, splits, Provenance("llp", "1"))
    order = [7, 0, 4]

    got_ids, got_labels, got_splits = weak.read([video_ids[i] for i in order])

    assert got_ids.tolist() == [video_ids[i] for i in order]
    assert got_labels.dtype == np.uint8 and got_labels.shape == (3, CLASSES)
    np.testing.assert_array_equal(got_labels, labels[order])
    assert got_splits.tolist() == [splits[i] for i in order]


def test_weak_labels_read_without_ids_returns_every_stored_video(tmp_path):
    weak = LabelStore(tmp_path).weak()
    for seed in range(2):
        weak.write(*weak_rows(5, seed), Provenance("llp", "1"))

    got = weak.read()

    assert sorted(got.video_ids) == sorted(weak_rows(5, 0)[0] + weak_rows(5, 1)[0])
    assert got.labels.shape == (10, CLASSES)


def test_weak_label_values_outside_uint8_are_refused(tmp_path):
    video_ids, labels, splits = weak_rows(3)
    labels[1, 2] = 300

    with pytest.raises(ValueError, match="labels/weak.*does not fit.*uint8"):
        LabelStore(tmp_path).weak().write(video_ids, labels, splits, Provenance("llp", "1"))


def test_segment_labels_of_each_source_read_back_in_request_order(tmp_path):
    store = LabelStore(tmp_path)
    valor, generated = segment_rows(6, seed=0), segment_rows(6, seed=1)
    store.segments("segment-valor").write(**valor, provenance=Provenance("valor", "1"))
    store.segments("segment-generated-tiny").write(**generated, provenance=Provenance("gen", "1"))
    order = np.array([5, 2, 3])

    got = store.segments("segment-valor").read(Keys.of(np.array(valor["video_ids"])[order]))

    assert store.table_names() == ["segment-generated-tiny", "segment-valor"]
    np.testing.assert_array_equal(got.audio, valor["audio"][order])
    np.testing.assert_array_equal(got.visual, valor["visual"][order])
    assert got.audio.shape == (3, 10, CLASSES) and got.visual.dtype == np.uint8


def test_label_table_keeps_its_provenance_and_refuses_another(tmp_path):
    table = LabelStore(tmp_path).segments("dense-corrected")
    table.write(**segment_rows(2), provenance=Provenance("llp-dense", "corrected"))

    with pytest.raises(ProvenanceMismatchError, match="dense-corrected.*version"):
        table.write(**segment_rows(2, seed=1), provenance=Provenance("llp-dense", "published"))
    assert table.provenance.source == "llp-dense"
    assert table.provenance.shape == (10, CLASSES) and table.provenance.dtype == "uint8"


def test_weak_is_not_accepted_as_a_segment_label_table(tmp_path):
    with pytest.raises(ValueError, match="weak"):
        LabelStore(tmp_path).segments("weak")


def test_store_info_lists_feature_and_label_tables_with_counts(tmp_path):
    root = str(tmp_path)
    FeatureStore(root).table("clip").write(
        ["a", "a", "b"],
        [0, 1, 0],
        np.zeros((3, 10, 8), np.float16),
        [10, 4, 10],
        [True, True, False],
        Provenance("clip", "1", weights="openai"),
    )
    labels = LabelStore(root)
    labels.weak().write(*weak_rows(4), Provenance("llp", "1"))
    labels.segments("segment-valor").write(**segment_rows(3), provenance=Provenance("valor", "1"))
    labels.segments("clip").write(**segment_rows(2), provenance=Provenance("clip-zero-shot", "1"))

    tables = store_info(root)["tables"]

    assert sorted(tables) == ["clip", "labels/clip", "segment-valor", "weak"]
    summary = {
        name: (t["kind"], t["rows"], t["videos"], t["shape"], t["dtype"])
        for name, t in tables.items()
    }
    assert summary == {
        "clip": ("features", 3, 2, [10, 8], "float16"),
        "labels/clip": ("labels", 2, 2, [10, CLASSES], "uint8"),
        "segment-valor": ("labels", 3, 3, [10, CLASSES], "uint8"),
        "weak": ("labels", 4, 4, [CLASSES], "uint8"),
    }
    assert tables["clip"]["provenance"]["weights"] == "openai"


def test_a_changed_label_row_replaces_the_stored_one_for_readers(tmp_path):
    store = LabelStore(tmp_path)
    weak = store.weak()
    video_ids, labels, splits = weak_rows(6)
    weak.write(video_ids, labels, splits, Provenance("llp", "1"))
    edited, edited_splits = labels.copy(), list(splits)
    edited[2] = 1 - edited[2]
    edited_splits[4] = "train" if splits[4] != "train" else "val"

    result = weak.write(
        [*video_ids, "new"],
        np.vstack([edited, labels[:1]]),
        [*edited_splits, "test"],
        Provenance("llp", "1"),
    )

    assert (result.written, result.replaced, result.skipped) == (1, 2, 4)
    got = weak.read([*video_ids, "new"])
    np.testing.assert_array_equal(got.labels, np.vstack([edited, labels[:1]]))
    assert got.splits.tolist() == [*edited_splits, "test"]
    assert sorted(weak.keys().video_ids.tolist()) == sorted([*video_ids, "new"])
    assert len(weak.table.part_names()) == 2

    segments = store.segments("segment-dense")
    rows = segment_rows(3)
    segments.write(**rows, provenance=Provenance("dense", "1"))
    rows["visual"][1, 4, 7] = 1 - rows["visual"][1, 4, 7]
    again = segments.write(**rows, provenance=Provenance("dense", "1"))
    assert (again.written, again.replaced, again.skipped) == (0, 1, 2)
    np.testing.assert_array_equal(segments.read_videos(rows["video_ids"]).visual, rows["visual"])


def test_label_fingerprint_changes_with_a_changed_row_and_not_with_an_identical_write(tmp_path):
    weak = LabelStore(tmp_path).weak()
    video_ids, labels, splits = weak_rows(5)
    weak.write(video_ids, labels, splits, Provenance("llp", "1"))
    before, before_others = weak.fingerprint(), weak.fingerprint(video_ids[:3])

    same = weak.write(video_ids, labels, splits, Provenance("llp", "1"))

    assert (same.written, same.replaced, same.skipped, same.part) == (0, 0, 5, None)
    assert weak.fingerprint() == before
    labels[3, 0] = 1 - labels[3, 0]
    weak.write(video_ids, labels, splits, Provenance("llp", "1"))
    assert weak.fingerprint() != before
    assert weak.fingerprint(video_ids[:3]) == before_others
    labels[3, 0] = 1 - labels[3, 0]  # back to the first labels: back to the first digest
    weak.write(video_ids, labels, splits, Provenance("llp", "1"))
    assert weak.fingerprint() == before


def test_compaction_keeps_the_newest_row_of_a_replaced_key(tmp_path):
    weak = LabelStore(tmp_path).weak()
    video_ids, labels, splits = weak_rows(4)
    weak.write(video_ids, labels, splits, Provenance("llp", "1"))
    edited = labels.copy()
    edited[1] = 1 - edited[1]
    weak.write(video_ids, edited, splits, Provenance("llp", "1"))
    weak.write(["later"], labels[:1], ["test"], Provenance("llp", "1"))
    fingerprint = weak.fingerprint()

    merged = weak.table.compact()

    assert merged == 3 and len(weak.table.part_names()) == 1
    np.testing.assert_array_equal(weak.read(video_ids).labels, edited)
    assert weak.fingerprint() == fingerprint
    assert len(weak.keys()) == 5


def test_interrupted_compaction_still_shows_the_replaced_row(tmp_path, monkeypatch):
    weak = LabelStore(tmp_path).weak()
    video_ids, labels, splits = weak_rows(4)
    weak.write(video_ids, labels, splits, Provenance("llp", "1"))
    edited = labels.copy()
    edited[2] = 1 - edited[2]
    weak.write(video_ids, edited, splits, Provenance("llp", "1"))
    fingerprint = weak.fingerprint()
    fs = weak.table.fs
    real_rm = fs.rm

    def crash(path, *args, **kwargs):
        raise OSError("simulated crash before deleting the merged inputs")

    monkeypatch.setattr(fs, "rm", crash)
    with pytest.raises(OSError, match="simulated crash"):
        weak.table.compact()
    monkeypatch.setattr(fs, "rm", real_rm)

    assert len(weak.table.part_names()) == 3  # the merged part beside both inputs
    np.testing.assert_array_equal(weak.read(video_ids).labels, edited)
    assert weak.fingerprint() == fingerprint and len(weak.keys()) == 4
    labels_again = edited.copy()
    labels_again[0] = 1 - labels_again[0]
    weak.write(video_ids, labels_again, splits, Provenance("llp", "1"))
    np.testing.assert_array_equal(weak.read(video_ids).labels, labels_again)
