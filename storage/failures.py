"""Failures table: per stage, the input files that failed on their latest attempt; and
the files a stage is working on, so that one that ends the process is known after it.

Layout: `<root>/failures/<stage>/part-<time_ns>-<uuid>.parquet`, written under a
temporary name and renamed like the feature parts (see `avvp.storage.table`), so a crash
never leaves a half part. Columns: `video_id`, `path`, `reason` (one short sentence a
person can act on), `detail` (the decoder's or library's own words, for debugging),
`digest` (the content digest of a file that failed while it was worked on, so later
runs can pass over it while it is unchanged; empty for a file refused before any work,
which every run checks again), `recorded_at` (UTC, when this reason was first seen) and
`resolved` (the file has since been processed).

A part holds only changes: a file that fails again for the same reason adds nothing,
one that fails for another reason adds a row, and one that later succeeds adds a
`resolved` row. Reading keeps the newest row of each path and drops resolved ones, so
`read` shows each failing file once however often a stage ran on it. Because parts are
only ever added, writers on several machines never lose each other's rows.

Work markers (`WorkMarkers`): `<root>/in-progress/<stage>/<uuid>.json`, one small file
per file being worked on and process, written under a temporary name and renamed
before the work starts, removed when it ends, however it ends, unless the process is
killed (the out-of-memory killer, a crash): then the marker stays, naming the file, the
machine and the process. `abandoned()` gives the markers whose process is gone. A
process can only be looked at from its own machine (same host name and boot): there it
is gone when its id is free or taken by a process started at another time. A marker of
a running process, or of another machine, is never taken for a crash.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any, NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from .atomic import TEMP_PREFIX, atomic_write_bytes
from .location import list_tables, open_root
from .records import RecordTable

KIND = "failures"
SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("digest", pa.string()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
        ("resolved", pa.bool_()),
    ]
)
COLUMNS = ("video_id", "path", "reason", "detail", "digest", "recorded_at")
# Parts written before `detail`, `digest` and `resolved` existed read with these values.
_DEFAULTS = {"detail": "", "digest": "", "resolved": False}
MARKERS = "in-progress"
_MARKER_SUFFIX = ".json"


class Failure(NamedTuple):
    """One input a stage gave up on: a short reason in plain words, the raw detail, and
    the file's content digest when it failed while being worked on (module docstring)."""

    video_id: str
    path: str
    reason: str
    detail: str = ""
    digest: str = ""


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
            or tuple(current[path][field] for field in ("video_id", "reason", "detail", "digest"))
            != (failure.video_id, failure.reason, failure.detail, failure.digest)
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


class WorkMarker(NamedTuple):
    """A file being worked on, and by which process (module docstring)."""

    name: str  # the marker's file name
    video_id: str
    path: str
    digest: str
    process: str  # "process <pid> on <host>, from <time>": for failure details


class WorkMarkers:
    """The work markers of one stage under a store root (module docstring)."""

    def __init__(self, root: str | PathLike[str], stage: str) -> None:
        self._fs, root_path = open_root(root)
        self._folder = f"{root_path}/{MARKERS}/{stage}"

    def start(self, video_id: str, path: str, digest: str) -> str:
        """Mark `path` as being worked on by this process; returns the marker's name."""
        name = f"{uuid.uuid4().hex}{_MARKER_SUFFIX}"
        record = {"video_id": video_id, "path": path, "digest": digest, **_this_process()}
        record["at"] = datetime.now(UTC).isoformat(timespec="seconds")
        atomic_write_bytes(f"{self._folder}/{name}", json.dumps(record).encode(), self._fs)
        return name

    def finish(self, name: str) -> None:
        """The work of marker `name` ended (or is given up): remove it."""
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(f"{self._folder}/{name}")

    def abandoned(self) -> list[WorkMarker]:
        """The markers left by processes that are gone, oldest first."""
        self._fs.invalidate_cache(self._folder)
        try:
            names = sorted(
                entry.rstrip("/").rsplit("/", 1)[-1]
                for entry in self._fs.ls(self._folder, detail=False)
            )
        except FileNotFoundError:
            return []
        found: list[tuple[str, WorkMarker]] = []
        for name in names:
            if name.startswith(TEMP_PREFIX) or not name.endswith(_MARKER_SUFFIX):
                continue
            try:
                record = json.loads(self._fs.cat_file(f"{self._folder}/{name}"))
            except FileNotFoundError:  # its work ended since the listing
                continue
            if _process_gone(record):
                process = f"process {record['pid']} on {record['host']}, from {record['at']}"
                marker = WorkMarker(
                    name, record["video_id"], record["path"], record["digest"], process
                )
                found.append((record["at"], marker))
        return [marker for _, marker in sorted(found)]


def _this_process() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": pid, "ticks": _ticks(pid)}


def _process_gone(record: dict[str, Any]) -> bool:
    """Whether the process that wrote `record` has certainly ended (module docstring)."""
    if record["host"] != socket.gethostname():
        return False  # its processes cannot be seen from here
    if record["boot"] != _boot_id():
        return True  # the machine restarted since
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a process of another user holds the id
        pass
    ticks = _ticks(record["pid"])
    return None not in (ticks, record["ticks"]) and ticks != record["ticks"]


def _boot_id() -> str:
    """This boot of the machine (Linux); empty where the system does not say."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _ticks(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (Linux), else None: with the
    id, it tells a process from a later one that was given the same id."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name, which is in parentheses and may hold spaces.
    return int(stat.rsplit(")", 1)[1].split()[19])
