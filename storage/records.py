"""Record tables: small tables of plain rows (no tensors) where each key's newest row
is what counts, e.g. the failures of a stage or the video manifest.

Layout: `<root>/<kind>/<name>/part-<time_ns>-<uuid>.parquet`, each part written under
a temporary name and renamed like the tensor tables' (`avvp.storage.table`). Parts are
only ever added, so writers on several machines never lose each other's rows; reading
concatenates the parts in name (= time) order and keeps the last row of each key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .table import TensorTable


class RecordTable:
    """One record table: `schema` for its rows, `key` the column that identifies one."""

    def __init__(
        self,
        root: str | PathLike[str],
        kind: str,
        name: str,
        schema: pa.Schema,
        key: str,
        defaults: Mapping[str, Any] | None = None,
    ) -> None:
        self.folder = TensorTable.open(root, kind, name)
        self.schema, self.key = schema, key
        # Values of columns added to the schema after older parts were written.
        self.defaults = dict(defaults or {})

    def append(self, rows: Sequence[Mapping[str, Any]]) -> str | None:
        """Write `rows` as one new part; returns its name (None when `rows` is empty)."""
        if not rows:
            return None
        table = pa.Table.from_pylist(list(rows), schema=self.schema)
        folder = self.folder
        return folder.write_part(
            lambda temporary: pq.write_table(table, temporary, filesystem=folder.fs)
        )

    def count(self) -> int:
        """How many distinct keys are recorded; reads only the key column of each part."""
        parts = [self.folder.read_part(name, [self.key]) for name in self.folder.part_names()]
        if not parts:
            return 0
        return pc.count_distinct(pa.concat_tables(parts)[self.key], mode="all").as_py()

    def latest(self) -> pa.Table:
        """The newest row of each key, in the order those rows were recorded."""
        parts = [
            self._with_defaults(self.folder.read_part(name)) for name in self.folder.part_names()
        ]
        if not parts:
            return self.schema.empty_table()
        rows = pa.concat_tables(parts)
        order = pa.array(np.arange(rows.num_rows))
        newest = (
            rows.append_column("_order", order)
            .group_by(self.key, use_threads=False)
            .aggregate([("_order", "max")])["_order_max"]
        )
        return rows.take(np.sort(newest.to_numpy()))

    def _with_defaults(self, part: pa.Table) -> pa.Table:
        for name, value in self.defaults.items():
            if name not in part.column_names:
                field = self.schema.field(name)
                part = part.append_column(field, pa.array([value] * part.num_rows, field.type))
        return part.select(self.schema.names).cast(self.schema)
