"""Summary of every table under a store root, for `avvp store info`."""

from __future__ import annotations

from os import PathLike
from typing import Any

from . import features, labels
from .table import TensorTable, list_tables, open_root


def store_info(root: str | PathLike[str]) -> dict[str, Any]:
    """Rows, videos, shape, dtype and provenance of each table, reading only key columns.

    Returns `{"root": root, "tables": {name: {"kind", "rows", "videos", "shape",
    "dtype", "provenance"}}}`. Tables are named by their folder name; a label table
    whose name is also a feature table's is listed as `labels/<name>`. `shape` and
    `dtype` describe one row of each tensor column (label tables with `audio` and
    `visual` columns share them). Tables without any part are left out.
    """
    fs, path = open_root(root)
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
            }
    return {"root": str(root), "tables": tables}
