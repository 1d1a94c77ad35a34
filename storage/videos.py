"""The video manifest: `<root>/videos/manifest/`, one row per video id the store knows.

Each extraction records every input it decoded: its id, path, size, modification time,
content digest, duration, has_audio, window count and decode backend. A file given
again is recognised by its digest (looked up by path, size and modification time first,
so an unchanged file is not read again to hash it); a different file claiming an id
already stored is refused by the stages, naming both paths. Layout and crash safety are
those of `avvp.storage.records`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from os import PathLike
from typing import NamedTuple

import pyarrow as pa

from .records import RecordTable

KIND = "videos"
TABLE = "manifest"
SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("mtime_ns", pa.int64()),
        ("digest", pa.string()),
        ("duration", pa.float64()),
        ("has_audio", pa.bool_()),
        ("windows", pa.int32()),
        ("backend", pa.string()),
        ("declared_duration", pa.float64()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)


class VideoRecord(NamedTuple):
    """One input video as the store knows it."""

    video_id: str
    path: str
    size: int
    mtime_ns: int
    digest: str  # "sha256:<hex>" of the file's bytes
    duration: float | None  # seconds; None when unknown (features imported, not decoded)
    has_audio: bool | None  # None when unknown
    windows: int
    backend: str
    # What the file's header declares, when it does: longer than `duration` for a file
    # cut short. None when the header says nothing, and in older manifests.
    declared_duration: float | None = None


class VideoManifest:
    """The manifest of one store root (local path or fsspec URL)."""

    def __init__(self, root: str | PathLike[str]) -> None:
        self._table = RecordTable(
            root, KIND, TABLE, SCHEMA, "video_id", defaults={"declared_duration": None}
        )

    def read(self) -> dict[str, VideoRecord]:
        """The newest record of every video id."""
        rows = self._table.latest().drop_columns(["recorded_at"]).to_pylist()
        return {row["video_id"]: VideoRecord(**row) for row in rows}

    def count(self) -> int:
        """How many video ids the manifest knows, without building their records."""
        return self._table.count()

    def record(self, records: Iterable[VideoRecord]) -> str | None:
        """Add the records that differ from the stored ones as one part (None: no change)."""
        stored = self.read()
        now = datetime.now(UTC)
        changed = [
            {**record._asdict(), "recorded_at": now}
            for record in records
            if stored.get(record.video_id) != record
        ]
        return self._table.append(changed)
