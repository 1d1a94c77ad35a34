"""Where a store lives: its root (a local path or an fsspec URL), the check that the
root can hold a store, and the names and listing of its table folders."""

from __future__ import annotations

import re
import uuid
from os import PathLike

import fsspec

from .atomic import TEMP_PREFIX
from .errors import StoreLocationError

# Big enough that a disk with less room than one small part fails the probe.
_WRITE_PROBE_BYTES = 64 * 1024
_TABLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")


def check_table_name(name: str) -> str:
    if not _TABLE_NAME.fullmatch(name):
        raise ValueError(
            f"table name {name!r} is not a plain folder name: use letters, digits and . _ + -"
        )
    return name


def open_root(root: str | PathLike[str]) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem and path of a store root (a local path or an fsspec URL)."""
    fs, path = fsspec.core.url_to_fs(str(root))
    return fs, path.rstrip("/")


def check_store_root(
    root: str | PathLike[str], *, writable: bool = True, create: bool = True
) -> None:
    """Fail before any work when `root` cannot hold a store (or a run's files).

    A file in the folder's place is refused; with `writable`, the folder is created if
    missing (with `create`; otherwise a missing folder is left for the caller to report)
    and a small probe file is written and removed, so a read-only mount, missing
    permissions or a full disk are reported before hours of work, not after them.
    """
    fs, path = open_root(root)
    if fs.isfile(path):
        raise StoreLocationError(
            f"{root} is a file, not a store folder; give the path of a folder (it is "
            "created when missing)"
        )
    if not writable or (not create and not fs.isdir(path)):
        return
    # The first missing folder on the way: the probe's folders are removed with it, so a
    # refused command (or a check alone) leaves no empty store behind.
    created = None
    folder = path
    while folder and not fs.exists(folder):
        created, folder = folder, folder.rpartition("/")[0]
    probe = f"{path}/{TEMP_PREFIX}write-check-{uuid.uuid4().hex}"
    try:
        fs.makedirs(path, exist_ok=True)
        fs.pipe_file(probe, bytes(_WRITE_PROBE_BYTES))
        fs.rm_file(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise StoreLocationError(
            f"{root} cannot be written ({reason}); choose a writable store folder, or fix "
            "its permissions or free space"
        ) from None
    finally:
        _remove_empty_folders(fs, path, created)


def _remove_empty_folders(fs: fsspec.AbstractFileSystem, path: str, top: str | None) -> None:
    """rmdir from `path` up to `top`, stopping at the first folder that is not empty (a
    writer that started meanwhile keeps its files)."""
    folder = path
    while top is not None and folder.startswith(top):
        try:
            fs.rmdir(folder)
        except OSError:
            return
        folder = folder.rpartition("/")[0]


def list_tables(fs: fsspec.AbstractFileSystem, folder: str) -> list[str]:
    """Names of the table folders directly under `folder` (empty if it does not exist)."""
    try:
        entries = fs.ls(folder, detail=True)
    except FileNotFoundError:
        return []
    return sorted(
        entry["name"].rstrip("/").rsplit("/", 1)[-1]
        for entry in entries
        if entry["type"] == "directory"
    )
