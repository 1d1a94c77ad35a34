"""Failures table: the inputs a stage could not process, one row per input and attempt.

Layout: `<root>/failures/<stage>/part-<time_ns>-<uuid>.parquet`, one part per `record`
call, written under a temporary name and renamed like the feature parts (see
`avvp.storage.table`), so a crash never leaves a half part. Columns: `video_id`,
`path`, `reason` (strings) and `recorded_at` (UTC timestamp). Rows are only ever
added: a video that fails on two runs has two rows, and one that later succeeds keeps
its old rows (the feature tables say what is stored).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from os import PathLike
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from .table import TensorTable, list_tables, open_root

KIND = "failures"
SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("reason", pa.string()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)


class Failure(NamedTuple):
    """One input a stage gave up on, and why (a sentence a user can act on)."""

    video_id: str
    path: str
    reason: str


class FailureLog:
    """The failures tables of every stage under one store root (local path or fsspec URL)."""

    def __init__(self, root: str | PathLike[str]) -> None:
        self.root = str(root)

    def record(self, stage: str, rows: Iterable[tuple[str, str, str]]) -> str | None:
        """Append (video_id, path, reason) rows as one new part; returns its file name.

        Nothing is written (and None returned) when `rows` is empty.
        """
        failures = [Failure(*map(str, row)) for row in rows]
        if not failures:
            return None
        now = datetime.now(UTC)
        table = pa.Table.from_pylist(
            [{**failure._asdict(), "recorded_at": now} for failure in failures], schema=SCHEMA
        )
        folder = self._folder(stage)
        # The part files share the feature tables' crash-safe publishing.
        return folder.write_part(
            lambda temporary: pq.write_table(table, temporary, filesystem=folder.fs)
        )

    def read(self, stage: str) -> pa.Table:
        """Every row recorded for `stage`, oldest part first; empty when none."""
        folder = self._folder(stage)
        parts = [
            pq.read_table(f"{folder.path}/{name}", filesystem=folder.fs, schema=SCHEMA)
            for name in folder.part_names()
        ]
        return pa.concat_tables(parts) if parts else SCHEMA.empty_table()

    def stages(self) -> list[str]:
        """Stages that have a failures folder."""
        fs, path = open_root(self.root)
        return list_tables(fs, f"{path}/{KIND}")

    def _folder(self, stage: str) -> TensorTable:
        return TensorTable.open(self.root, KIND, stage)
