"""Failures table: per stage, the input files that failed on their latest attempt.

Layout: `<root>/failures/<stage>/part-<time_ns>-<uuid>.parquet`, written under a
temporary name and renamed like the feature parts (see `avvp.storage.table`), so a crash
never leaves a half part. Columns: `video_id`, `path`, `reason` (one short sentence a
person can act on), `detail` (the decoder's or library's own words, for debugging),
`recorded_at` (UTC, when this reason was first seen) and `resolved` (the file has since
been processed).

A part holds only changes: a file that fails again for the same reason adds nothing,
one that fails for another reason adds a row, and one that later succeeds adds a
`resolved` row. Reading keeps the newest row of each path and drops resolved ones, so
`read` shows each failing file once however often a stage ran on it. Because parts are
only ever added, writers on several machines never lose each other's rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from os import PathLike
from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from .records import RecordTable
from .table import list_tables, open_root

KIND = "failures"
SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
        ("resolved", pa.bool_()),
    ]
)
COLUMNS = ("video_id", "path", "reason", "detail", "recorded_at")
# Parts written before `detail` and `resolved` existed read with these values.
_DEFAULTS = {"detail": "", "resolved": False}


class Failure(NamedTuple):
    """One input a stage gave up on: a short reason in plain words, and the raw detail."""

    video_id: str
    path: str
    reason: str
    detail: str = ""


class FailureLog:
    """The failures tables of every stage under one store root (local path or fsspec URL)."""

    def __init__(self, root: str | PathLike[str]) -> None:
        self.root = str(root)

    def record(
        self,
        stage: str,
        failures: Iterable[Failure | tuple[str, ...]],
        resolved: Iterable[str] = (),
    ) -> str | None:
        """Note this attempt's failures, and the paths that now succeeded.

        Writes one part holding only what changed (returns its file name), or nothing
        (returns None) when every failure is already recorded with the same reason and
        no resolved path was failing.
        """
        failed = {failure.path: failure for failure in map(_as_failure, failures)}
        current = {row["path"]: row for row in self.read(stage).to_pylist()}
        changed = [
            failure
            for path, failure in failed.items()
            if path not in current
            or (current[path]["video_id"], current[path]["reason"], current[path]["detail"])
            != (failure.video_id, failure.reason, failure.detail)
        ]
        cleared = [
            current[path]
            for path in dict.fromkeys(map(str, resolved))
            if path in current and path not in failed
        ]
        now = datetime.now(UTC)
        rows = [{**failure._asdict(), "recorded_at": now, "resolved": False} for failure in changed]
        rows += [{**row, "recorded_at": now, "resolved": True} for row in cleared]
        return self._table(stage).append(rows)

    def read(self, stage: str) -> pa.Table:
        """The files failing now: one row per path, its newest reason; empty when none."""
        latest = self._table(stage).latest()
        return latest.filter(pc.invert(latest["resolved"])).select(COLUMNS)

    def stages(self) -> list[str]:
        """Stages that have a failures folder."""
        fs, path = open_root(self.root)
        return list_tables(fs, f"{path}/{KIND}")

    def _table(self, stage: str) -> RecordTable:
        return RecordTable(self.root, KIND, stage, SCHEMA, "path", _DEFAULTS)


def _as_failure(row: Failure | tuple[str, ...]) -> Failure:
    return row if isinstance(row, Failure) else Failure(*map(str, row))
