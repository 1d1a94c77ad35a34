"""Files published whole: written under a temporary name beside their final one, made
durable, then renamed.

Readers list or open only final names, so a crash (or a full disk) never shows them a
half-written file; a temporary file left by a killed writer keeps the `.tmp-` prefix
that `TensorTable.cleanup` and `avvp store compact` remove. On a local disk the file's
data is flushed to the device (`fsync`) before the rename and the folder's entry after
it, so a power cut cannot leave a final name pointing at missing data. Object stores
publish a finished upload whole by themselves: there is nothing to flush.

One writer per final name: two writers of the same name each publish a whole file and
the last rename wins; every final name the store writes holds a fresh unique token or
content that is the same whoever writes it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable
from os import PathLike

import fsspec
from fsspec.implementations.local import LocalFileSystem

TEMP_PREFIX = ".tmp-"


def atomic_write(
    path: str | PathLike[str],
    write: Callable[[str], object],
    fs: fsspec.AbstractFileSystem | None = None,
) -> str:
    """Have `write(temporary path)` write the file, then publish it as `path`; the
    temporary file is removed when `write` fails. Returns `path` as given to `fs`."""
    if fs is None:
        fs, path = fsspec.core.url_to_fs(str(path))
    path = str(path)
    folder, _, name = path.rpartition("/")
    temporary = f"{folder}/{TEMP_PREFIX}{uuid.uuid4().hex}-{name}"
    fs.makedirs(folder, exist_ok=True)
    try:
        write(temporary)
        _flush(fs, temporary)
        fs.mv(temporary, path)
        _flush(fs, folder)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if fs.exists(temporary):
                fs.rm_file(temporary)
    return path


def atomic_write_bytes(
    path: str | PathLike[str], data: bytes, fs: fsspec.AbstractFileSystem | None = None
) -> str:
    """`atomic_write` of bytes held in memory."""
    if fs is None:
        fs, path = fsspec.core.url_to_fs(str(path))
    target = fs
    return atomic_write(path, lambda temporary: target.pipe_file(temporary, data), fs)


def _flush(fs: fsspec.AbstractFileSystem, path: str) -> None:
    """fsync a local file or folder (module docstring); nothing elsewhere."""
    if not isinstance(fs, LocalFileSystem):
        return
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
