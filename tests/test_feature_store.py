"""Feature store semantics: keyed reads, idempotent writes, provenance, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from avvp.storage import plain
from avvp.storage import table as table_module
from avvp.storage.errors import MissingKeysError, ProvenanceMismatchError, StoreError
from avvp.storage.features import FeatureStore, FeatureTable
from avvp.storage.info import store_info
from avvp.storage.keys import Keys
from avvp.storage.provenance import Provenance

SHAPE = (10, 16)


def clip_provenance(**changes: object) -> Provenance:
    settings = {"source": "clip-vit-l-14", "version": "1", "weights": "sha256:ab12", "fps": 8.0}
    return Provenance(**{**settings, **changes})


def rows(count: int, dtype: str = "float16", seed: int = 0) -> dict:
    """Synthetic rows: two windows per video, ids unique to the seed."""
    rng = np.random.default_rng(seed)
    video_ids = [f"vid{seed}_{i // 2}" for i in range(count)]
    windows = np.arange(count) % 2
    return {
        "video_ids": video_ids,
        "windows": windows,
        "features": rng.standard_normal((count, *SHAPE)).astype(dtype),
        "valid_segments": rng.integers(1, 11, count),
        "has_audio": rng.random(count) < 0.5,
    }


def write(table: FeatureTable, batch: dict, provenance: Provenance | None = None):
    return table.write(**batch, provenance=provenance or clip_provenance())


def parquet_files(folder: Path, prefix: str) -> list[Path]:
    return sorted(folder.glob(f"{prefix}*.parquet"))


@pytest.fixture
def memory_root() -> Iterator[str]:
    root = f"memory://avvp-test-{uuid.uuid4().hex}"
    yield root
    fs, path = fsspec.core.url_to_fs(root)
    if fs.exists(path):
        fs.rm(path, recursive=True)


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_read_returns_shuffled_keys_in_request_order_across_parts(tmp_path, monkeypatch, dtype):
    monkeypatch.setattr(table_module, "ROW_GROUP_BYTES", 4000)  # a few rows per row group
    table = FeatureStore(tmp_path).table("clip")
    batches = [rows(40, dtype, seed) for seed in range(3)]
    for batch in batches:
        write(table, batch)
    keys = Keys.of(
        sum((b["video_ids"] for b in batches), []), np.concatenate([b["windows"] for b in batches])
    )
    expected = np.concatenate([b["features"] for b in batches])
    order = np.random.default_rng(1).permutation(len(keys))

    got = table.read(keys[order])

    parts = parquet_files(tmp_path / "features" / "clip", "part-")
    assert len(parts) == 3 and pq.ParquetFile(parts[0]).num_row_groups >= 3
    assert got.dtype == np.dtype(dtype) and got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected[order])
    batch = table.read_batch(list(keys[order]))
    np.testing.assert_array_equal(
        batch.valid_segments, np.concatenate([b["valid_segments"] for b in batches])[order]
    )
    np.testing.assert_array_equal(
        batch.has_audio, np.concatenate([b["has_audio"] for b in batches])[order]
    )


def plain_columns(part: Path) -> list[str]:
    return json.loads((pq.read_schema(part).metadata or {}).get(plain.PLAIN_KEY, b"[]"))


def shuffled(batch: dict, seed: int = 1) -> tuple[Keys, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(batch["video_ids"]))
    return Keys.of(batch["video_ids"], batch["windows"])[order], order


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_features_are_copied_from_plain_pages_equal_to_arrows_decoding(
    tmp_path, monkeypatch, dtype
):
    monkeypatch.setattr(table_module, "ROW_GROUP_BYTES", 4000)  # a few rows per row group
    table = FeatureStore(tmp_path).table("clip")
    batch = rows(40, dtype)
    write(table, batch)
    (part,) = parquet_files(tmp_path / "features" / "clip", "part-")
    keys, order = shuffled(batch)

    def no_decoding(*args: object) -> None:
        raise AssertionError("a plain part's rows were decoded by Arrow")

    monkeypatch.setattr(table_module.TensorTable, "_read_group", no_decoding)
    got = FeatureStore(tmp_path).table("clip").read_batch(keys)

    assert plain_columns(part) == ["feature"] and pq.ParquetFile(part).num_row_groups >= 3
    arrow = pq.read_table(part)["feature"].combine_chunks().to_numpy_ndarray()
    np.testing.assert_array_equal(arrow, batch["features"])
    assert got.features.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got.features, batch["features"][order])
    np.testing.assert_array_equal(got.valid_segments, batch["valid_segments"][order])
    np.testing.assert_array_equal(got.has_audio, batch["has_audio"][order])


def test_a_part_whose_pages_do_not_end_with_its_rows_is_written_without_the_plain_name(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(table_module, "ROW_GROUP_BYTES", 4000)
    # Pages far smaller than a row group: each chunk is several pages, its tail mixed.
    monkeypatch.setattr(plain, "page_bytes", lambda schema, rows_per_group: 1000)
    table = FeatureStore(tmp_path).table("clip")
    batch = rows(40)
    write(table, batch)
    (part,) = parquet_files(tmp_path / "features" / "clip", "part-")
    keys, order = shuffled(batch)

    assert plain_columns(part) == []
    np.testing.assert_array_equal(table.read(keys), batch["features"][order])


def test_parts_without_plain_pages_still_read_and_compaction_makes_them_plain(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    first, second = rows(20, seed=0), rows(20, seed=1)
    write(table, first)
    (old,) = parquet_files(tmp_path / "features" / "clip", "part-")
    # As an avvp before plain pages left it: no plain name, pages compressed.
    arrow = pq.read_table(old)
    metadata = {k: v for k, v in arrow.schema.metadata.items() if k != plain.PLAIN_KEY}
    pq.write_table(arrow.replace_schema_metadata(metadata), old, compression="snappy")
    write(table, second)
    both = {name: np.concatenate([first[name], second[name]]) for name in first}
    keys, order = shuffled(both)

    mixed = FeatureStore(tmp_path).table("clip").read_batch(keys)
    assert plain_columns(old) == []
    assert table.compact() == 2
    (merged,) = parquet_files(tmp_path / "features" / "clip", "part-")
    compacted = FeatureStore(tmp_path).table("clip").read_batch(keys)

    assert plain_columns(merged) == ["feature"]
    for got in (mixed, compacted):
        np.testing.assert_array_equal(got.features, both["features"][order])
        np.testing.assert_array_equal(got.valid_segments, both["valid_segments"][order])


def test_read_videos_returns_every_window_in_request_order(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    batch = rows(12)
    write(table, {name: values[::-1] for name, values in batch.items()})

    got = table.read_videos(["vid0_5", "vid0_0"])

    assert list(got.keys) == [("vid0_5", 0), ("vid0_5", 1), ("vid0_0", 0), ("vid0_0", 1)]
    np.testing.assert_array_equal(got.features, batch["features"][[10, 11, 0, 1]])


def test_second_write_of_stored_keys_is_skipped_not_duplicated(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    first, more = rows(20), rows(30)
    write(table, {k: v[:20] for k, v in first.items()})

    result = write(table, more)
    again = write(table, more)

    assert (result.written, result.skipped) == (10, 20)
    assert (again.written, again.skipped, again.part) == (0, 30, None)
    assert len(table.keys()) == 30 and len(table.table.part_names()) == 2
    np.testing.assert_array_equal(
        table.read(Keys.of(more["video_ids"], more["windows"])), more["features"]
    )


def test_a_feature_table_skips_stored_keys_even_with_other_values(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    batch = rows(6)
    write(table, batch)
    fingerprint = table.fingerprint()
    changed = {**batch, "features": batch["features"] + 1}

    result = write(table, changed)

    assert result == (0, 6, None, 0)
    np.testing.assert_array_equal(table.read(table.keys()), batch["features"])
    assert table.fingerprint() == fingerprint and len(table.table.part_names()) == 1


def test_write_repeating_a_key_in_one_call_is_refused(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    batch = rows(4)
    batch["windows"][1] = 0  # row 1 now repeats row 0's key

    with pytest.raises(ValueError, match="repeats keys.*vid0_0"):
        write(table, batch)
    assert table.table.part_names() == []


def test_provenance_mismatch_is_refused_naming_table_and_fields(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    write(table, rows(5))

    with pytest.raises(ProvenanceMismatchError) as refused:
        write(table, rows(5, seed=1), clip_provenance(weights="sha256:ff00", fps=4.0))

    message = str(refused.value)
    assert str(tmp_path / "features" / "clip") in message
    assert "weights" in message and "fps" in message and "version" not in message
    assert "another table name" in message
    assert len(table.keys()) == 5


def test_write_from_another_avvp_version_joins_the_table(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    write(table, rows(5))

    result = write(table, rows(5, seed=1), clip_provenance(created_by="9.9.9"))

    assert result.written == 5


def test_feature_array_of_wrong_shape_is_refused_naming_the_table(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    batch = rows(3)
    batch["features"] = batch["features"][:, :, :4]

    with pytest.raises(ValueError, match=r"features/clip.*shape \(3, 10, 4\)"):
        write(table, batch, clip_provenance(shape=SHAPE))


def test_missing_keys_error_names_table_and_first_missing_keys(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    write(table, rows(3))

    with pytest.raises(MissingKeysError) as missing:
        table.read([("vid0_1", 0), ("nope", 0), ("vid0_1", 7)])

    message = str(missing.value)
    assert "features/clip" in message and "2 of 3" in message
    assert "('nope', 0)" in message and "('vid0_1', 7)" in message


def test_reading_an_empty_table_says_it_holds_no_rows(tmp_path):
    with pytest.raises(MissingKeysError, match="holds no rows yet"):
        FeatureStore(tmp_path).table("clip").read([("a", 0)])


def test_reader_sees_parts_written_by_another_store_instance(tmp_path):
    reader = FeatureStore(tmp_path).table("clip")
    writer = FeatureStore(tmp_path).table("clip")
    first, second = rows(5), rows(5, seed=1)
    write(writer, first)
    assert len(reader.keys()) == 5

    write(writer, second)

    np.testing.assert_array_equal(
        reader.read(Keys.of(second["video_ids"], second["windows"])), second["features"]
    )


def test_unreadable_part_gives_an_error_naming_the_file(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    write(table, rows(3))
    (tmp_path / "features" / "clip" / "part-9-broken.parquet").write_bytes(b"not parquet")

    with pytest.raises(StoreError, match=r"part-9-broken.parquet.*avvp store check .* --repair"):
        table.keys()


def test_compaction_keeps_content_and_leaves_one_part(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    batches = [rows(30, seed=seed) for seed in range(4)]
    for batch in batches:
        write(table, batch)
    keys = table.keys()
    before = table.read(keys)

    merged = table.compact()

    assert merged == 4 and len(table.table.part_names()) == 1
    assert list(table.keys()) == list(keys)
    np.testing.assert_array_equal(table.read(keys), before)
    assert table.provenance.to_dict() == clip_provenance(dtype="float16", shape=SHAPE).to_dict()


def test_interrupted_compaction_shows_every_key_once(tmp_path, monkeypatch):
    table = FeatureStore(tmp_path).table("clip")
    for seed in range(3):
        write(table, rows(10, seed=seed))
    keys = table.keys()
    before = table.read(keys)
    real_rm, removed = table.table.fs.rm, []

    def crash_after_first_delete(path, *args, **kwargs):
        if removed:
            raise OSError("simulated crash")
        removed.append(path)
        real_rm(path, *args, **kwargs)

    monkeypatch.setattr(table.table.fs, "rm", crash_after_first_delete)
    with pytest.raises(OSError, match="simulated crash"):
        table.compact()
    monkeypatch.undo()

    assert len(table.table.part_names()) == 3  # two inputs left beside the merged part
    assert sorted(table.keys()) == sorted(keys)
    np.testing.assert_array_equal(table.read(keys), before)
    assert store_info(str(tmp_path))["tables"]["clip"]["rows"] == 30
    table.compact()
    assert len(table.table.part_names()) == 1
    np.testing.assert_array_equal(table.read(keys), before)


def test_memory_root_supports_write_read_info_and_compact(memory_root):
    store = FeatureStore(memory_root)
    table = store.table("clap")
    batches = [rows(8, "float32", seed) for seed in range(2)]
    for batch in batches:
        write(table, batch, clip_provenance(source="clap", sample_rate=48000))
    keys = table.keys()

    assert table.compact() == 2
    info = store_info(memory_root)

    assert store.table_names() == ["clap"]
    np.testing.assert_array_equal(
        table.read(keys), np.concatenate([b["features"] for b in batches])
    )
    assert info["root"] == memory_root
    summary = info["tables"]["clap"]
    assert summary["provenance"]["sample_rate"] == 48000
    del summary["provenance"]
    assert summary == {
        "kind": "features",
        "rows": 16,
        "videos": 8,
        "shape": list(SHAPE),
        "dtype": "float32",
        "fingerprint": table.fingerprint(),
    }


def test_parts_are_plain_parquet_readable_without_avvp(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    batch = rows(6)
    write(table, batch)
    (part,) = parquet_files(tmp_path / "features" / "clip", "part-")

    arrow = pq.read_table(part)
    frame = pd.read_parquet(part)
    parquet_columns = [c.path for c in pq.ParquetFile(part).schema]

    assert "feature.list.element" in parquet_columns  # a plain list column in Parquet
    assert b"avvp.provenance" in pq.read_schema(part).metadata
    assert frame["video_id"].tolist() == batch["video_ids"]
    as_lists = np.stack(frame["feature"].map(np.asarray).tolist())
    np.testing.assert_array_equal(as_lists.reshape(6, *SHAPE), batch["features"])
    np.testing.assert_array_equal(arrow["valid_segments"].to_numpy(), batch["valid_segments"])


# Writes one part, then stalls inside the second write (a real partial Parquet file
# under its temporary name) and tells the parent through a file that it got there.
_STALLING_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import pyarrow.parquet as pq
    from test_feature_store import rows, write
    from avvp.storage.features import FeatureStore

    root, inside = sys.argv[1:3]
    table = FeatureStore(root).table("clip")
    write(table, rows(50, seed=0))

    def stalling_write_table(data, where, filesystem=None, **options):
        with pq.ParquetWriter(where, data.schema, filesystem=filesystem) as writer:
            writer.write_table(data.slice(0, 10))
            Path(inside).write_text("inside the write")
            time.sleep(120)

    pq.write_table = stalling_write_table
    write(table, rows(50, seed=1))
    """
)


def test_writer_killed_mid_write_leaves_table_readable_without_half_part(tmp_path):
    inside = tmp_path / "inside"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    child = subprocess.Popen(
        [sys.executable, "-c", _STALLING_WRITER, str(tmp_path / "store"), str(inside)], env=env
    )
    try:
        deadline = time.monotonic() + 60
        while not inside.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert inside.exists(), "the writer never reached its second write"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()

    folder = tmp_path / "store" / "features" / "clip"
    table = FeatureStore(tmp_path / "store").table("clip")
    first = rows(50, seed=0)
    assert child.returncode == -signal.SIGKILL
    assert len(parquet_files(folder, ".tmp-")) == 1  # killed inside the write
    for part in parquet_files(folder, "part-"):
        pq.read_table(part)  # every visible part is whole
    assert list(table.keys()) == list(Keys.of(first["video_ids"], first["windows"]))
    np.testing.assert_array_equal(table.read(table.keys()), first["features"])
    assert table.cleanup() == 0  # a fresh temporary may belong to a live writer
    assert table.cleanup(min_age_s=0) == 1
    assert parquet_files(folder, ".tmp-") == []


# ---- fingerprints ------------------------------------------------------------------


def test_fingerprint_does_not_depend_on_how_rows_are_split_into_parts(tmp_path):
    batches = [rows(10, seed=seed) for seed in range(3)]
    in_parts = FeatureStore(tmp_path / "a").table("clip")
    for batch in batches:
        write(in_parts, batch)
    at_once = FeatureStore(tmp_path / "b").table("clip")
    write(at_once, {key: np.concatenate([b[key] for b in batches]) for key in batches[0]})
    before = in_parts.fingerprint()

    assert before == at_once.fingerprint()
    assert in_parts.compact() == 3
    assert in_parts.fingerprint() == before


def test_fingerprint_changes_with_one_value_of_one_row(tmp_path):
    batch = rows(10)
    first = FeatureStore(tmp_path / "a").table("clip")
    write(first, batch)
    changed = {**batch, "features": batch["features"].copy()}
    changed["features"][7, 3, 5] += np.float16(0.5)
    second = FeatureStore(tmp_path / "b").table("clip")
    write(second, changed)
    flipped = {**batch, "has_audio": batch["has_audio"].copy()}
    flipped["has_audio"][0] = not flipped["has_audio"][0]
    third = FeatureStore(tmp_path / "c").table("clip")
    write(third, flipped)

    assert len({first.fingerprint(), second.fingerprint(), third.fingerprint()}) == 3
    videos = ["vid0_0", "vid0_1", "vid0_2"]  # row 7 is video vid0_3
    assert first.fingerprint(videos) == second.fingerprint(videos)
    assert first.fingerprint(["vid0_3"]) != second.fingerprint(["vid0_3"])


def test_fingerprint_changes_with_an_added_row_and_not_for_other_videos(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    write(table, rows(10, seed=0))
    whole, some = table.fingerprint(), table.fingerprint(["vid0_0", "vid0_1"])
    write(table, rows(4, seed=1))

    assert table.fingerprint() != whole
    assert table.fingerprint(["vid0_0", "vid0_1"]) == some


def test_fingerprint_includes_the_provenance(tmp_path):
    batch = rows(4)
    first = FeatureStore(tmp_path / "a").table("clip")
    write(first, batch)
    second = FeatureStore(tmp_path / "b").table("clip")
    write(second, batch, clip_provenance(weights="sha256:other"))
    assert first.fingerprint() != second.fingerprint()


def test_a_part_without_row_hashes_is_refused_with_its_repair(tmp_path):
    table = FeatureStore(tmp_path).table("clip")
    write(table, rows(6))
    (part,) = parquet_files(tmp_path / "features" / "clip", "part-")
    pq.write_table(pq.read_table(part).drop_columns([table_module.ROW_HASH_COLUMN]), part)

    with pytest.raises(StoreError, match=rf"{part.name} is not a readable avvp part.*--repair"):
        FeatureStore(tmp_path).table("clip").fingerprint()


def test_store_compact_keeps_every_fingerprint_and_leaves_one_part_per_table(tmp_path):
    from typer.testing import CliRunner

    from avvp.pipeline.cli.app import app

    store = FeatureStore(tmp_path)
    for name, parts in (("clip", 3), ("clap", 2)):
        for seed in range(parts):
            write(store.table(name), rows(6, seed=seed), clip_provenance(source=name))
    clip = tmp_path / "features" / "clip"
    stale, fresh = clip / ".tmp-stale-part-1.parquet", clip / ".tmp-fresh-part-2.parquet"
    stale.write_bytes(b"killed writer")
    fresh.write_bytes(b"live writer")
    os.utime(stale, (time.time() - 7200,) * 2)
    before = {name: t["fingerprint"] for name, t in store_info(tmp_path)["tables"].items()}
    assert len(parquet_files(clip, "part-")) == 3

    result = CliRunner().invoke(app, ["store", "compact", str(tmp_path)])

    assert result.exit_code == 0, result.output
    after = {name: t["fingerprint"] for name, t in store_info(tmp_path)["tables"].items()}
    assert after == before and len(before) == 2
    for folder in (tmp_path / "features").iterdir():
        assert len(parquet_files(folder, "part-")) == 1, folder
    assert not stale.exists() and fresh.exists()


def test_store_info_gives_each_table_a_fingerprint_of_its_content_alone(tmp_path):
    def fingerprint(root: Path) -> str:
        return store_info(root)["tables"]["clip"]["fingerprint"]

    batch = rows(4)
    write(FeatureStore(tmp_path / "a").table("clip"), batch)
    write(FeatureStore(tmp_path / "b").table("clip"), batch)
    first = fingerprint(tmp_path / "a")
    assert len(first) >= 16 and first == fingerprint(tmp_path / "b")
    write(FeatureStore(tmp_path / "a").table("clip"), rows(2, seed=1))
    assert fingerprint(tmp_path / "a") not in (first, fingerprint(tmp_path / "b"))
