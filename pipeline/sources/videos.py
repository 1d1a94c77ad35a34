"""Which files are videos, which id each one is stored under, and what its content is.

Ids (DESIGN.md, data contracts): a file whose name is an LLP name (`<YouTube id>` or
`<YouTube id>_<start>_<end>`) is stored under that YouTube id when the annotation files
in use know it; any other file under its path relative to the folder it was found in,
without the extension (`cam1/clip`), or under its name without the extension when it was
given directly. An id depends on nothing but the file and the folder named, never on
which other files are present, and a `_<n>_<n>` tail is dropped only for LLP's ids:
`cat_and_dog_5_15.mp4` is `cat_and_dog_5_15`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from ...storage import Failure, VideoRecord
from .llp import AnnotationError, youtube_id

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".mpg", ".mpeg", ".flv", ".wmv", ".3gp"}
)
_DIGEST_CHUNK_BYTES = 8 * 1024 * 1024
# Container signatures at the start of a file: (offset, bytes). Enough to find videos
# whatever their names (a camera's `.MTS`, a download without extension); the decoder
# has the last word.
_MEDIA_SIGNATURES: tuple[tuple[int, bytes], ...] = (
    *((4, box) for box in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip")),  # MP4/MOV
    (0, b"\x1a\x45\xdf\xa3"),  # Matroska / WebM
    (8, b"AVI "),  # RIFF AVI
    (0, b"FLV"),
    (0, b"\x00\x00\x01\xba"),  # MPEG program stream
    (0, b"\x30\x26\xb2\x75"),  # ASF / WMV
    (0, b"OggS"),
)
# One read covers every signature and the sync bytes of three MPEG-TS packets.
_MEDIA_HEAD_BYTES = 188 * 3 + 1


def looks_like_media(path: Path) -> bool:
    """The file starts like a media container (see `_MEDIA_SIGNATURES`)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(_MEDIA_HEAD_BYTES)
    except OSError:
        return False
    if _mpeg_ts(head):
        return True
    return any(head[offset : offset + len(magic)] == magic for offset, magic in _MEDIA_SIGNATURES)


def _mpeg_ts(head: bytes) -> bool:
    # A transport stream repeats its sync byte 0x47 every 188 bytes.
    return len(head) > 376 and head[0] == head[188] == head[376] == 0x47


class VideoInput(NamedTuple):
    """A file to process and the id it is stored under."""

    path: Path  # absolute, as given or found (a symlink keeps its own name)
    video_id: str


def find_videos(
    paths: Iterable[str | Path], llp_ids: frozenset[str] = frozenset()
) -> list[VideoInput]:
    """Video files named or found (recursively: by extension, or by content for other
    names) under the given folders, each with its id (module docstring).

    Files named explicitly are kept whatever their extension. Each file appears once,
    in the order given (folders sorted). Raises ValueError for a path that does not exist.
    """
    # Keyed by the resolved file, so one file reached twice counts once; the path kept is
    # the one given, because a symlink's own name is the video id the user chose.
    found: dict[Path, VideoInput] = {}
    for given in paths:
        path = Path(given).expanduser()
        if path.is_file():
            found.setdefault(
                path.resolve(), VideoInput(path.absolute(), video_id_for(path, None, llp_ids))
            )
        elif path.is_dir():
            for candidate in sorted(path.rglob("*")):
                # Dot files are editor and OS leftovers (macOS `._clip.mp4`), not videos;
                # skipped before their content is sniffed.
                if any(part.startswith(".") for part in candidate.relative_to(path).parts):
                    continue
                if candidate.is_file() and (
                    candidate.suffix.lower() in VIDEO_EXTENSIONS or looks_like_media(candidate)
                ):
                    found.setdefault(
                        candidate.resolve(),
                        VideoInput(candidate.absolute(), video_id_for(candidate, path, llp_ids)),
                    )
        else:
            raise ValueError(f"{path}: no such file or folder; pass video files or folders")
    return list(found.values())


def video_id_for(
    path: str | Path, folder: str | Path | None = None, llp_ids: frozenset[str] = frozenset()
) -> str:
    """The id `path` is stored under (module docstring): its LLP YouTube id when
    `llp_ids` holds it, else its path relative to `folder` without the extension, else
    its name without the extension."""
    path = Path(path)
    try:
        candidate = youtube_id(path.stem)
    except AnnotationError:
        candidate = path.stem
    if candidate in llp_ids:
        return candidate
    if folder is None:
        return path.stem
    return path.relative_to(folder).with_suffix("").as_posix()


def file_digest(path: str | Path) -> str:
    """`sha256:<hex>` of the file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_DIGEST_CHUNK_BYTES):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}"


CONTENT_ID_HEX = 16  # 64 bits of the sha256: a collision among a store's files is unheard of


class KeyedVideo(NamedTuple):
    """An input file, the id it is known by, and the id its rows are stored under."""

    path: Path
    video_id: str  # the id of its name (videos.py)
    key: str  # video_id, or the content id when the store keys videos by content
    digest: str | None  # "sha256:<hex>" when already known


def content_id(digest: str) -> str:
    """The id a file's rows are stored under in a store keyed by content."""
    return digest.removeprefix("sha256:")[:CONTENT_ID_HEX]


def keyed_videos(
    paths: Iterable[str | Path] | str | Path,
    manifest: Mapping[str, VideoRecord],
    llp_ids: frozenset[str],
    by_content: bool,
) -> list[KeyedVideo]:
    """The video files of `paths` (`find_videos`, `llp_ids` the LLP ids known) with their
    ids and stored ids. Keyed by content, a file's digest is read from the manifest when
    its path, size and modification time match a record, and computed otherwise."""
    found = find_videos([paths] if isinstance(paths, str | Path) else paths, llp_ids)
    if not by_content:
        return [KeyedVideo(video.path, video.video_id, video.video_id, None) for video in found]
    known = {(r.path, r.size, r.mtime_ns): r.digest for r in manifest.values()}
    keyed = []
    for video in found:
        stat = video.path.stat()
        digest = known.get((str(video.path), stat.st_size, stat.st_mtime_ns))
        digest = digest or file_digest(video.path)
        keyed.append(KeyedVideo(video.path, video.video_id, content_id(digest), digest))
    return keyed


def split_duplicate_ids(
    videos: Sequence[KeyedVideo], by_content: bool
) -> tuple[list[KeyedVideo], list[Failure]]:
    """(videos whose stored id is given by one file, failures for ids given by several).
    Files of one content, in a store keyed by content, are one video: the first is kept."""
    by_id: dict[str, list[KeyedVideo]] = {}
    for video in videos:
        by_id.setdefault(video.key, []).append(video)
    if by_content:
        return [group[0] for group in by_id.values()], []
    unique = [group[0] for group in by_id.values() if len(group) == 1]
    failures = [
        Failure(
            video_id,
            str(video.path),
            f"video id {video_id!r} is also the id of "
            f"{', '.join(str(other.path) for other in group if other != video)}; rename or "
            "leave out all but one of these files",
        )
        for video_id, group in by_id.items()
        if len(group) > 1
        for video in group
    ]
    return unique, failures
