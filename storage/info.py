"""Summary of every table under a store root, for `avvp store info`."""

from __future__ import annotations

from os import PathLike
from typing import Any

from . import features, labels
from .failures import FailureLog
from .table import TensorTable, list_tables, open_root
from .videos import VideoManifest


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
    fs, path = open_root(root)
    if not fs.isdir(path):
        raise FileNotFoundError(
            f"{root}: no such store (the folder does not exist); check the path, or create "
            "a store with `avvp extract`, `avvp import-labels` or `avvp demo`"
        )
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
