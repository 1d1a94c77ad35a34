"""Summary of every table under a store root, for `avvp store info`."""

from __future__ import annotations

from os import PathLike
from typing import Any, NamedTuple

from . import failures, features, labels, videos
from .errors import BrokenPartError
from .failures import FailureLog
from .location import check_store_root, list_tables, open_root
from .table import BROKEN_FOLDER, TensorTable
from .videos import VideoManifest

# Every folder of tables a store holds: tensor tables and record tables alike.
TABLE_KINDS = (features.KIND, labels.KIND, failures.KIND, videos.KIND)


class Compaction(NamedTuple):
    table: str  # <kind>/<table>
    parts_merged: int  # 0: the table had one part (or none) already
    temporary_removed: int  # files of writes killed over an hour ago


class BrokenPart(NamedTuple):
    path: str  # relative to the store root: <kind>/<table>/<part>
    reason: str


def store_info(root: str | PathLike[str]) -> dict[str, Any]:
    """Rows, videos, shape, dtype and provenance of each table, reading only key columns.

    Returns `{"root": root, "tables": {name: {"kind", "rows", "videos", "shape",
    "dtype", "provenance", "fingerprint"}}, "failures": {stage: count of files failing
    now}, "videos": count of videos in the manifest}`.
    Tables are named by their folder name; a label table whose name is also a feature
    table's is listed as `labels/<name>`. `shape` and `dtype` describe one row of each
    tensor column (label tables with `audio` and `visual` columns share them). Tables
    without any part are left out. Raises FileNotFoundError when the root does not exist.
    """
    fs, path = _existing_store(root)
    feature_names = list_tables(fs, f"{path}/{features.KIND}")
    tables: dict[str, dict[str, Any]] = {}
    for kind in (features.KIND, labels.KIND):
        for name in list_tables(fs, f"{path}/{kind}"):
            table = TensorTable.open(root, kind, name)
            provenance = table.provenance
            if provenance is None:
                continue
            keys = table.keys()
            listed = f"{kind}/{name}" if kind == labels.KIND and name in feature_names else name
            tables[listed] = {
                "kind": kind,
                "rows": len(keys),
                "videos": len(set(keys.video_ids.tolist())),
                "shape": list(provenance.shape),
                "dtype": provenance.dtype,
                "provenance": provenance.to_dict(),
                "fingerprint": table.fingerprint(),
            }
    log = FailureLog(root)
    failures = {stage: log.read(stage).num_rows for stage in log.stages()}
    videos = VideoManifest(root).count()
    return {"root": str(root), "tables": tables, "failures": failures, "videos": videos}


def check_store(root: str | PathLike[str]) -> list[BrokenPart]:
    """Every part of every table whose Parquet footer cannot be read (a cut or empty file,
    or one that is not Parquet), with the reason; reads footers only, so it is quick on
    stores of any size."""
    fs, path = _existing_store(root)
    broken = []
    for kind in TABLE_KINDS:
        for name in list_tables(fs, f"{path}/{kind}"):
            table = TensorTable.open(root, kind, name)
            for part in table.part_names():
                try:
                    table.read_part(part, columns=[])
                except BrokenPartError as error:
                    broken.append(BrokenPart(f"{kind}/{name}/{part}", error.detail))
    return broken


def compact_store(root: str | PathLike[str]) -> list[Compaction]:
    """Merge each feature and label table's parts into one (fingerprints unchanged: see
    `TensorTable.compact`) and remove the temporary files killed writers left in every
    table folder."""
    fs, path = _existing_store(root)
    check_store_root(root)
    done = []
    for kind in TABLE_KINDS:
        for name in list_tables(fs, f"{path}/{kind}"):
            table = TensorTable.open(root, kind, name)
            removed = table.cleanup()
            merged = table.compact() if kind in (features.KIND, labels.KIND) else 0
            done.append(Compaction(f"{kind}/{name}", merged, removed))
    return done


def set_aside(root: str | PathLike[str], parts: list[BrokenPart]) -> str:
    """Move broken parts to `<root>/broken/<kind>/<table>/`, out of every reader's sight
    but not deleted; returns that folder."""
    fs, path = _existing_store(root)
    check_store_root(root)
    for part in parts:
        target = f"{path}/{BROKEN_FOLDER}/{part.path}"
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.mv(f"{path}/{part.path}", target)
    return f"{str(root).rstrip('/')}/{BROKEN_FOLDER}"


def _existing_store(root: str | PathLike[str]) -> tuple[Any, str]:
    check_store_root(root, writable=False)
    fs, path = open_root(root)
    if not fs.isdir(path):
        raise FileNotFoundError(
            f"{root}: no such store (the folder does not exist); check the path, or create "
            "a store with `avvp extract`, `avvp import-labels` or `avvp demo`"
        )
    return fs, path
