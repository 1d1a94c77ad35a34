"""Run artifacts: `<root>/runs/<run-id>/` holds a run's resolved config, checkpoint,
metrics and reports.

Every file is written under a temporary name and renamed, so a crash never leaves a
half-written checkpoint or metrics file; a reader sees either the old file or the new.
"""

from __future__ import annotations

import json
from typing import Any

import fsspec

from .atomic import atomic_write_bytes
from .location import check_table_name, open_root

RUNS_FOLDER = "runs"


class RunDir:
    """One run folder on any fsspec filesystem."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, url: str) -> None:
        self.fs, self.path, self.url = fs, path, url

    @property
    def run_id(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def exists(self, name: str) -> bool:
        return self.fs.exists(f"{self.path}/{name}")

    def names(self) -> list[str]:
        if not self.fs.exists(self.path):
            return []
        return sorted(entry.rsplit("/", 1)[-1] for entry in self.fs.ls(self.path, detail=False))

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.fs.cat_file(f"{self.path}/{name}")
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url}/{name}: no such run file") from None

    def read_text(self, name: str) -> str:
        return self.read_bytes(name).decode()

    def read_json(self, name: str) -> Any:
        return json.loads(self.read_bytes(name))

    def write_bytes(self, name: str, data: bytes) -> None:
        atomic_write_bytes(f"{self.path}/{name}", data, self.fs)

    def write_text(self, name: str, text: str) -> None:
        self.write_bytes(name, text.encode())

    def write_json(self, name: str, data: Any) -> None:
        self.write_text(name, json.dumps(data, indent=2, sort_keys=True) + "\n")


class RunStore:
    """The run folders under a store root."""

    def __init__(self, root: str) -> None:
        self.root = str(root)
        self.fs, self.path = open_root(self.root)

    def run(self, run_id: str) -> RunDir:
        check_table_name(run_id)
        return RunDir(
            self.fs,
            f"{self.path}/{RUNS_FOLDER}/{run_id}",
            f"{self.root.rstrip('/')}/{RUNS_FOLDER}/{run_id}",
        )


def open_run(url: str) -> tuple[str, RunDir]:
    """(store root, run folder) of a run URL `<root>/runs/<run-id>`."""
    trimmed = str(url).rstrip("/")
    root, _, run_id = trimmed.rpartition(f"/{RUNS_FOLDER}/")
    if not root or not run_id or "/" in run_id:
        raise ValueError(f"{url}: not a run folder; expected <store>/{RUNS_FOLDER}/<run-id>")
    run = RunStore(root).run(run_id)
    if not run.exists("config.json"):
        raise FileNotFoundError(f"{url}: no such run (config.json missing)")
    return root, run
