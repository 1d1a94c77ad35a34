"""Downloads of one URL into a cache folder that resume after interruptions
(`avvp fetch-valor` fetches VALOR's multi-GB `CLIP.zip` and `CLAP.zip` with them).

Cache layout: the complete file of a URL is `cache_path(url, cache)`, that is
`<cache>/<key>/<name>`, where `<key>` is a short hash of the whole URL (two mirrors'
`CLIP.zip` do not clash) and `<name>` the URL's last path component without the query.
Beside it:

- `<name>.part` holds the bytes received so far. The file appears under its final name
  only by renaming the part once the transfer is complete and its digest checked, so a
  crash never leaves a file that looks complete, and a file that failed `sha256` is
  deleted, never renamed.
- `<name>.sha256` records the complete file's digest as JSON (size, mtime_ns, sha256),
  so reusing a cached multi-GB file does not hash it again; a record whose size or
  mtime no longer match the file is ignored and the file hashed anew.

Resume rules for a part of N > 0 bytes: the request carries `Range: bytes=N-`, and

- 206 whose Content-Range starts at N: the body is appended to the part;
- 200 (the server ignores ranges): the part is truncated and the file fetched from 0;
- 416 whose Content-Range is `bytes */N`: the part is already the whole file;
- 416 with any other length: the part is not a prefix of this file; fetched from 0.

A connection that breaks mid-transfer (or delivers less than its Content-Length) keeps
the part, and the same call retries with a Range request up to `retries` times; after
that a DownloadError says the part is kept, and the next call resumes from it.
"""

# The resume logic is by hand: huggingface_hub's resumable download only works against
# Hub repositories (not arbitrary mirrors), and fsspec's HTTP files need aiohttp and
# raise on servers that ignore ranges; no well-kept library resumes a plain URL into a
# file. requests does the HTTP itself (connections, redirects, timeouts).

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import requests
import urllib3

ProgressCallback = Callable[[int, int | None], None]

_URL_KEY_CHARS = 16
_HASH_READ_BYTES = 8 * 1024 * 1024
_BACKOFF_S = 0.2
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_UNSATISFIED_RANGE = re.compile(r"bytes \*/(\d+)")
# Failures of the connection rather than answers of the server: the part stays valid and
# a Range request can carry on from it. requests raises its own while connecting (its
# SSLError and ConnectTimeout are ConnectionErrors too); the body is read from urllib3
# directly (`_Transfer.request` says why), which raises urllib3's.
_CONNECTION_FAILURES = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
)


class DownloadError(RuntimeError):
    """A download that could not be completed or verified; the message names the URL
    and what to do."""


@dataclass(frozen=True)
class Downloaded:
    """A complete (and, when a digest was given, verified) file in the cache."""

    url: str
    path: Path  # the complete file in the cache
    sha256: str  # hex digest of the complete file
    size: int
    # bytes already present when the call started: 0 for a fresh download, the part's
    # size for a resumed one, the whole size for a reused file
    resumed_from: int
    reused: bool  # the complete file was already cached: nothing was transferred


def cache_path(url: str, cache: Path) -> Path:
    """Where the complete file of `url` lives: `<cache>/<short hash of url>/<name>`."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise DownloadError(f"{url} does not end in a file name; give the URL of the file")
    key = hashlib.sha256(url.encode()).hexdigest()[:_URL_KEY_CHARS]
    return Path(cache) / key / name


def download(
    url: str,
    cache: Path,
    *,
    sha256: str | None = None,
    on_progress: ProgressCallback | None = None,
    retries: int = 3,
    timeout_s: float = 60.0,
    chunk_bytes: int = 1 << 20,
) -> Downloaded:
    """Fetch `url` into `cache_path(url, cache)`, resuming a `.part` left by an earlier
    call, or reuse the file already there (module docstring: layout and resume rules).

    `sha256` (hex), when given, must match the complete file, or DownloadError.
    `on_progress(done, total)` is called when a response starts (with the bytes already
    in the part) and after every chunk; `total` is None when the server does not say.
    A reused file reports once, `(size, size)`. `retries` counts retries after broken
    connections, not HTTP errors, which raise at once.
    """
    expected = None if sha256 is None else checked_sha256(sha256)
    final = cache_path(url, cache)
    if final.is_file():
        return _reuse(url, final, expected, on_progress)

    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    transfer = _Transfer(url, part, on_progress, timeout_s, chunk_bytes)
    resumed_from = transfer.size
    failures = 0
    with requests.Session() as session:
        while not transfer.complete:
            try:
                transfer.request(session)
            except (*_CONNECTION_FAILURES, _ShortBody) as failure:
                failures += 1
                if failures > retries:
                    raise DownloadError(
                        f"downloading {url} failed {failures} time(s), last: {failure}; "
                        f"the partial file ({transfer.size} bytes) is kept at {part}: "
                        "run the command again to resume"
                    ) from failure
                time.sleep(_BACKOFF_S * failures)
            except requests.RequestException as failure:
                raise DownloadError(f"cannot download {url}: {failure}") from failure

    digest = transfer.hexdigest()
    if expected is not None and digest != expected:
        part.unlink()
        raise DownloadError(
            f"{url} downloaded with sha256 {digest}, expected {expected}; the download "
            "was deleted: check the URL (or mirror) and the --sha256 given"
        )
    part.replace(final)
    _record_digest(final, digest)
    return Downloaded(url, final, digest, transfer.size, resumed_from, reused=False)


class _ShortBody(Exception):
    """The body ended before its Content-Length; the part holds what arrived."""


class _Transfer:
    """The `.part` of one download and the digest of the bytes in it, carried across
    the requests (first and retries) of one call."""

    def __init__(
        self,
        url: str,
        part: Path,
        on_progress: ProgressCallback | None,
        timeout_s: float,
        chunk_bytes: int,
    ) -> None:
        self.url = url
        self.part = part
        self.on_progress = on_progress
        self.timeout_s = timeout_s
        self.chunk_bytes = chunk_bytes
        self.size = part.stat().st_size if part.exists() else 0
        # None while the part on disk has not been hashed yet: hashing it waits until
        # the server agrees to continue it (a 200 would make that read wasted).
        self._digest: hashlib._Hash | None = None
        self.complete = False

    def hexdigest(self) -> str:
        return self._part_digest().hexdigest()

    def request(self, session: requests.Session) -> None:
        """One GET from the current size on; sets `complete` once the part is whole."""
        # identity: Content-Length and ranges must count the file's bytes, not gzip's.
        headers = {"Accept-Encoding": "identity"}
        if self.size:
            headers["Range"] = f"bytes={self.size}-"
        with session.get(self.url, headers=headers, stream=True, timeout=self.timeout_s) as got:
            if got.status_code == 416 and self.size:
                match = _UNSATISFIED_RANGE.fullmatch(got.headers.get("Content-Range", ""))
                if match and int(match[1]) == self.size:
                    self._report(self.size)
                    self.complete = True
                else:
                    self._restart()
                return
            if got.status_code == 206 and self.size:
                total = self._continued_total(got)
                digest = self._part_digest()
            elif got.status_code == 200:
                self._restart()
                total = _content_length(got)
                digest = self._part_digest()
            else:
                raise DownloadError(
                    f"{self.url} answered HTTP {got.status_code} {got.reason}; "
                    "check the URL or use another mirror"
                )
            if got.headers.get("Content-Encoding", "identity") != "identity":
                raise DownloadError(
                    f"{self.url} sent its body encoded as {got.headers['Content-Encoding']!r} "
                    "although asked for the bytes as they are; use another mirror"
                )
            body_start = self.size
            body_end = _content_length(got)
            if body_end is not None:
                body_end += body_start
            self._report(total)
            with self.part.open("ab") as file:
                # Not iter_content: when a connection breaks, its decoding buffer drops
                # the bytes of the last, incomplete chunk, which the part should keep.
                for chunk in got.raw.stream(self.chunk_bytes, decode_content=False):
                    file.write(chunk)
                    digest.update(chunk)
                    self.size += len(chunk)
                    self._report(total)
                # On disk before the rename to the final name, which must not survive a
                # power cut as a complete-looking file of missing bytes.
                file.flush()
                os.fsync(file.fileno())
        if body_end is not None and self.size < body_end:
            raise _ShortBody(f"the connection closed {body_end - self.size} bytes early")
        # A 206 may carry only part of the rest; the next request asks for what is left
        # (and an empty one counts as a failure, so a server cannot keep the loop going).
        self.complete = total is None or self.size >= total
        if not self.complete and self.size == body_start:
            raise _ShortBody("the server sent no bytes")

    def _continued_total(self, got: requests.Response) -> int | None:
        match = _CONTENT_RANGE.fullmatch(got.headers.get("Content-Range", ""))
        if match is None or int(match[1]) != self.size:
            raise DownloadError(
                f"{self.url} answered a request for bytes {self.size}- with Content-Range "
                f"{got.headers.get('Content-Range')!r}; delete {self.part} to start again"
            )
        return None if match[3] == "*" else int(match[3])

    def _restart(self) -> None:
        self.part.write_bytes(b"")
        self.size = 0
        self._digest = hashlib.sha256()

    def _part_digest(self) -> hashlib._Hash:
        if self._digest is None:
            self._digest = _hash_file(self.part)
        return self._digest

    def _report(self, total: int | None) -> None:
        if self.on_progress is not None:
            self.on_progress(self.size, total)


def _content_length(got: requests.Response) -> int | None:
    value = got.headers.get("Content-Length", "")
    return int(value) if value.isdigit() else None


def checked_sha256(sha256: str) -> str:
    """`sha256` as 64 lowercase hex digits, or ValueError.

    Checked before the transfer: a typo should not cost a multi-GB download.
    """
    normalised = sha256.strip().lower()
    if not _SHA256_HEX.fullmatch(normalised):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    return normalised


def _reuse(
    url: str, final: Path, expected: str | None, on_progress: ProgressCallback | None
) -> Downloaded:
    digest = _recorded_digest(final)
    size = final.stat().st_size
    if expected is not None and digest != expected:
        raise DownloadError(
            f"the cached download of {url} at {final} has sha256 {digest}, expected "
            f"{expected}: delete it or give the right --sha256"
        )
    if on_progress is not None:
        on_progress(size, size)
    return Downloaded(url, final, digest, size, resumed_from=size, reused=True)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_digest(path: Path) -> str:
    """The digest recorded beside `path` while it still describes the file, else a
    fresh hash (recorded for next time)."""
    stat = path.stat()
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        record = json.loads(_sidecar(path).read_text())
        if (
            record["size"] == stat.st_size
            and record["mtime_ns"] == stat.st_mtime_ns
            and _SHA256_HEX.fullmatch(record["sha256"])
        ):
            return record["sha256"]
    digest = _hash_file(path).hexdigest()
    _record_digest(path, digest)
    return digest


def _record_digest(path: Path, digest: str) -> None:
    stat = path.stat()
    record = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
    # The record only saves time; a read-only cache still serves its files.
    with contextlib.suppress(OSError):
        _sidecar(path).write_text(json.dumps(record) + "\n")


def _hash_file(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while block := file.read(_HASH_READ_BYTES):
            digest.update(block)
    return digest
