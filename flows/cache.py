"""Where the flows' task results persist: under the store root, so the Prefect UI of
any machine sharing the store can show them. They are never read in place of the
store: a unit task runs only when the stage's plan finds its outputs missing
(`avvp.flows.tasks`)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import fsspec
from prefect.filesystems import RemoteFileSystem, WritableFileSystem

RESULTS_FOLDER = "prefect-results"


def result_storage(store: str) -> Path | WritableFileSystem:
    """Where task results persist: `<store>/prefect-results/`.

    A local folder is given as a path (Prefect makes the file system of it); a remote
    store needs its file system saved as a block, named after the store's URL.
    """
    fs, path = fsspec.core.url_to_fs(store)
    if "file" in fs.protocol:
        return Path(path).resolve() / RESULTS_FOLDER
    block = RemoteFileSystem(basepath=f"{store.rstrip('/')}/{RESULTS_FOLDER}")
    block.save(f"avvp-results-{hashlib.sha256(store.encode()).hexdigest()[:16]}", overwrite=True)
    return block
