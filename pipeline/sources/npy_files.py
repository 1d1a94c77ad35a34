"""Released `<id>.npy` files, in folders or in zip archives read in place; user `.npz`
archives opened without pickles and closed whatever happens (`open_npz`).

An archive is checked as a whole before anything is read (absolute names, `..`, links
refuse it); one file is read through its `.npy` header first, so a header that declares
more data than the file holds is refused before anything is allocated.
"""

from __future__ import annotations

import contextlib
import math
import re
import stat
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np


class UnsafeArchiveError(ValueError):
    """An archive with entries that could write outside a folder if extracted."""


class UnusableFile(Exception):
    """Why one released file cannot be imported."""


@contextlib.contextmanager
def open_npz(path: Path) -> Iterator[np.lib.npyio.NpzFile]:
    """The .npz archive at `path` (no pickled objects), closed on leaving; a ValueError
    saying what the file is instead ("it is not a readable .npz archive", "it holds a
    single .npy array") for the caller to put after the file's name.

    The file is opened here, not by np.load: on a cut-short archive np.load raises with
    the file it opened still open (closed only by the garbage collector, whose warning
    then lands in whatever runs next)."""
    with path.open("rb") as handle:
        try:
            archive = np.load(handle, allow_pickle=False)
        except (OSError, EOFError, ValueError, zipfile.BadZipFile):
            # np.load's words for these (e.g. "Cannot load file containing pickled data")
            # describe its own fallbacks, not the file.
            raise ValueError("it is not a readable .npz archive") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single .npy array")
        with archive:
            yield archive


class NpyEntry(NamedTuple):
    """One released `<id>.npy`: its id, the name shown in messages, how to open it, and
    its size in bytes."""

    video_id: str
    name: str
    open: Callable[[], IO[bytes]]
    size: int


def folder_entries(folder: str | Path) -> list[NpyEntry]:
    """The `<id>.npy` files directly in `folder`, by id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of <id>.npy files")
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .npy files (expected <video id>.npy)")
    return [NpyEntry(path.stem, str(path), _opener(path), path.stat().st_size) for path in files]


def _opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: open(path, "rb")


def check_archive(archive: zipfile.ZipFile, path: str | Path) -> None:
    """Refuse the whole archive if any entry is absolute, climbs out, or is a link."""
    unsafe = [
        f"{info.filename!r} ({problem})"
        for info in archive.infolist()
        if (problem := _unsafe_entry(info))
    ]
    if unsafe:
        shown = "; ".join(unsafe[:3]) + (f"; and {len(unsafe) - 3} more" if len(unsafe) > 3 else "")
        raise UnsafeArchiveError(
            f"{path} is refused as a whole: {shown}. A release never needs such entries; "
            "nothing was imported. Get the archive again from the release (or check the "
            "mirror) and run this again"
        )


def _unsafe_entry(info: zipfile.ZipInfo) -> str:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    if ".." in name.split("/"):
        return "climbs out with '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return ""


def archive_entries(archive: zipfile.ZipFile, path: str | Path, folder: str) -> list[NpyEntry]:
    """The `<top>/<folder>/<id>.npy` members of a checked archive, read in place."""
    pattern = re.compile(rf"(?:[^/]+/)?{re.escape(folder)}/([^/]+)\.npy")
    entries = []
    for info in archive.infolist():
        match = pattern.fullmatch(info.filename)
        if match and not info.is_dir():
            name = f"{path}!{info.filename}"
            entries.append(NpyEntry(match[1], name, _member_opener(archive, info), info.file_size))
    return sorted(entries, key=lambda entry: entry.video_id)


def _member_opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    return lambda: archive.open(info)


def read_header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        major, _ = np.lib.format.read_magic(stream)
        if major == 1:
            return np.lib.format.read_array_header_1_0(stream)
        return np.lib.format.read_array_header_2_0(stream)
    except (ValueError, OSError, EOFError, SyntaxError) as error:
        raise UnusableFile(f"its .npy header is unreadable ({error})") from None


def read_checked(entry: NpyEntry, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """The array of one file, or `UnusableFile` with the reason.

    kind: "features" (floating point, finite) or "labels" (0/1 values).
    """
    with entry.open() as stream:
        found, fortran, dtype = read_header(stream)
        if tuple(found) != tuple(shape):
            raise UnusableFile(f"shape {shape_text(found)}, expected {shape_text(shape)}")
        if kind == "features" and dtype.kind != "f":
            raise UnusableFile(f"holds {dtype}, not floating-point features")
        if dtype.kind not in "biuf":
            raise UnusableFile(f"holds {dtype}, not integer or floating-point labels")
        # In Python's integers: a crafted shape must not overflow into a small size.
        wanted = math.prod(found) * dtype.itemsize
        held = entry.size - stream.tell()
        if wanted > held:
            # Checked before reading: the read would allocate what the header claims.
            raise UnusableFile(
                f"is cut short: its header declares {wanted} data bytes, it holds {held}"
            )
        data = stream.read(wanted)
    array = np.frombuffer(data, dtype).reshape(found, order="F" if fortran else "C")
    if kind == "features":
        if not np.isfinite(array).all():
            raise UnusableFile("holds NaN or Inf values")
    elif not np.isin(array, (0, 1)).all():
        raise UnusableFile("holds values other than 0 and 1")
    return array


def shape_text(shape: Sequence[int]) -> str:
    return " x ".join(str(size) for size in shape)


def parse_shape(text: str) -> tuple[int, ...]:
    """'10x512' (or '10,512') as (10, 512)."""
    parts = [part for part in re.split(r"[x,\s]+", text.strip()) if part]
    if not parts or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"shape {text!r}: give positive sizes such as 10x512")
    return tuple(int(part) for part in parts)
