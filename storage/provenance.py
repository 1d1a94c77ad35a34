"""Provenance of a stored table: which producer, weights and settings made its rows.

A table accepts rows from one provenance only; `Provenance.differences` is the rule
that decides whether a write may join a table (the avvp version that wrote the rows
does not count: a newer avvp may add rows to a table made by an older one).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any


@functools.cache
def _avvp_version() -> str:
    # Read from the installed distribution: storage imports nothing of avvp. Once per
    # process: each read scans the environment's metadata (3 ms, 9 per extracted shard).
    try:
        return metadata.version("avvp")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, eq=False)
class Provenance:
    """Who and what produced a table's rows.

    `source` is the extractor or label source (e.g. "clip-vit-l-14", "valor"),
    `weights` the weights identity (sha256 or release tag; empty for label sources),
    `dtype` and `shape` describe every tensor column of one row; left as None they are
    taken from the first write's arrays. `extras` holds any JSON-able settings.
    """

    source: str
    version: str
    weights: str = ""
    fps: float | None = None
    sample_rate: int | None = None
    dtype: str | None = None
    shape: tuple[int, ...] | None = None
    created_by: str = field(default_factory=_avvp_version)
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(int(size) for size in self.shape))

    def differences(self, other: Provenance) -> list[str]:
        """Fields, other than `created_by`, whose values differ, as 'name: mine != other'."""
        return [
            f"{name}: {getattr(self, name)!r} != {getattr(other, name)!r}"
            for name in (f.name for f in dataclasses.fields(self))
            if name != "created_by" and getattr(self, name) != getattr(other, name)
        ]

    def to_dict(self) -> dict[str, Any]:
        as_dict = dataclasses.asdict(self)
        as_dict["shape"] = None if self.shape is None else list(self.shape)
        return as_dict

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Provenance:
        return cls(**json.loads(text))
