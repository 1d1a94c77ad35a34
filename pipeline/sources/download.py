"""Downloads of VALOR's multi-GB archives (`avvp fetch-valor`) into a cache folder,
resumed after interruptions and checked by sha256.

- A dataset file on the Hub (`<Hub>/datasets/<owner>/<name>/resolve/<revision>/<file>`
  on huggingface.co or `HF_ENDPOINT`'s Hub; the default source) comes through
  `huggingface_hub.hf_hub_download`: its cache layout under the cache folder, resumed,
  reused, with huggingface_hub's own progress bar.
- Any other URL (a mirror) comes through requests into `<cache>/<hash of URL>/<name>`:
  the bytes arrive in `<name>.part`, renamed to `<name>` once complete, and
  `<name>.validator` keeps the strong ETag (or Last-Modified) of the response the part
  came from. The rest is asked for with `Range` and `If-Range: <validator>`, so a
  server whose file changed since sends the whole new file, which replaces the part:
  two versions are never spliced. A part without a validator starts again from 0.

Every file used is hashed. The Hub's must match the sha256 it is served as (an LFS
file's ETag), or it is removed from the cache. `--sha256`, when given, must match too;
a mirror's fresh download that fails it is removed, a cached or Hub file is kept (the
digest given may be the wrong one).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, TypeVar
from urllib.parse import unquote, urlsplit

import requests
from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

ProgressCallback = Callable[[int, int | None], None]
T = TypeVar("T")

HUB = "https://huggingface.co"
_HUB_FILE = re.compile(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CONTENT_RANGE = re.compile(r"bytes (\d+)-\d+/(?:\d+|\*)")
_URL_KEY_CHARS = 16
_TIMEOUT_S = 60.0
_CHUNK_BYTES = 1 << 20
_BACKOFF_S = 0.2


class DownloadError(RuntimeError):
    """A download that could not be completed or verified; the message names the URL
    and what to do."""


class _Incomplete(Exception):
    """A response ended before the whole file had arrived; the part keeps its bytes."""


# Failures of the connection, not answers of the server: another request carries on.
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    _Incomplete,
)


@dataclass(frozen=True)
class Downloaded:
    """A complete, verified file in the cache."""

    url: str
    path: Path
    sha256: str  # hex digest of the file
    # bytes in the part when the call started (0: a fresh download); None for a reused
    # file and for the Hub's, whose resumption huggingface_hub does not report
    resumed_from: int | None
    reused: bool  # the complete file was already cached: nothing was transferred


class _HubFile(NamedTuple):
    endpoint: str
    repo_id: str
    revision: str
    filename: str


def cache_path(url: str, cache: Path) -> Path:
    """Where the complete file of a mirror's `url` lives: `<cache>/<hash of url>/<name>`."""
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    if name in ("", ".", "..") or "/" in name or "\\" in name:
        raise DownloadError(f"{url} does not end in a file name; give the URL of the file")
    key = hashlib.sha256(url.encode()).hexdigest()[:_URL_KEY_CHARS]
    return Path(cache) / key / name


def checked_sha256(sha256: str) -> str:
    """`sha256` as 64 lowercase hex digits, or ValueError.

    Checked before the transfer: a typo should not cost a multi-GB download.
    """
    normalised = sha256.strip().lower()
    if not _SHA256_HEX.fullmatch(normalised):
        raise ValueError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    return normalised


def download(
    url: str,
    cache: Path,
    *,
    sha256: str | None = None,
    on_progress: ProgressCallback | None = None,
    retries: int = 3,
) -> Downloaded:
    """Fetch `url` into `cache`, or reuse the complete file there (module docstring).

    `on_progress(done, total)` follows a mirror's transfer (`total` None when the server
    does not say). `retries` counts retries after broken connections within this call;
    then DownloadError says what is kept, and the next call resumes from it.
    """
    expected = None if sha256 is None else checked_sha256(sha256)
    hub = _hub_file(url)
    resumed_from = None
    if hub is None:
        path = cache_path(url, cache)
        reused = path.is_file()
        if not reused:
            resumed_from = _fetch_url(url, path, on_progress, retries)
    else:
        cached = try_to_load_from_cache(
            hub.repo_id, hub.filename, cache, hub.revision, repo_type="dataset"
        )
        kept = f"{cache} keeps what arrived"
        path = Path(_retrying(lambda: _fetch_hub(hub, cache), url, retries, kept))
        reused = cached == str(path)
    with path.open("rb") as file:
        digest = hashlib.file_digest(file, "sha256").hexdigest()
    # The Hub's cache names a file by the ETag it was served with: an LFS file's sha256,
    # which huggingface_hub does not check (it checks the size).
    served = path.resolve().name
    if hub is not None and _SHA256_HEX.fullmatch(served) and digest != served:
        discard(path)
        raise DownloadError(
            f"{url} arrived with sha256 {digest}, but the Hub serves it as {served}; the "
            "download was removed from the cache: run this again to download it afresh"
        )
    if expected is not None and digest != expected:
        if hub is not None:
            # It is what the Hub serves: fetching it again would give the same bytes.
            fix = "check the --sha256 given, or the revision in the URL"
        elif reused:
            fix = f"check the --sha256 given, or delete {path} to download it again"
        else:
            discard(path)
            fix = "the download was removed: check the URL (or mirror) and the --sha256 given"
        raise DownloadError(f"{url} has sha256 {digest}, expected {expected}; {fix}")
    return Downloaded(url, path, digest, resumed_from, reused)


def discard(path: Path) -> None:
    """Remove a cached download (for the Hub's, the snapshot's link and the file)."""
    target = path.resolve()
    path.unlink(missing_ok=True)
    target.unlink(missing_ok=True)


def _hub_file(url: str) -> _HubFile | None:
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}"
    match = _HUB_FILE.fullmatch(parts.path)
    if match is None or origin not in (HUB, constants.ENDPOINT):
        return None
    return _HubFile(origin, match[1], unquote(match[2]), unquote(match[3]))


def _fetch_hub(hub: _HubFile, cache: Path) -> str:
    return hf_hub_download(
        hub.repo_id,
        hub.filename,
        repo_type="dataset",
        revision=hub.revision,
        cache_dir=cache,
        endpoint=hub.endpoint,
    )


# ---- mirrors -----------------------------------------------------------------------
# By hand: huggingface_hub resumes only from a Hub (a partial file is kept under the
# sha256 the Hub announced, and no If-Range is sent), and neither requests nor urllib3
# resume a body into a file. requests does the HTTP itself.


def _fetch_url(url: str, final: Path, on_progress: ProgressCallback | None, retries: int) -> int:
    """Complete `final` from its part; returns the part's size when the call started."""
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    started = part.stat().st_size if part.exists() else 0
    with requests.Session() as session:

        def request() -> None:
            # At most twice: a part the server cannot continue is dropped, and the next
            # request asks for the whole file.
            while not _request(session, url, final, on_progress):
                pass

        _retrying(request, url, retries, f"the partial file is kept at {part}")
    part.replace(final)
    final.with_name(final.name + ".validator").unlink(missing_ok=True)
    return started


def _request(
    session: requests.Session, url: str, final: Path, on_progress: ProgressCallback | None
) -> bool:
    """One GET for the rest of the file: True once the part is complete, False when the
    part was dropped because the server cannot continue it."""
    part = final.with_name(final.name + ".part")
    validator = final.with_name(final.name + ".validator")
    report = on_progress or (lambda done, total: None)
    size = part.stat().st_size if part.exists() else 0
    known = validator.read_text() if size and validator.exists() else ""
    # identity: Content-Length and ranges must count the file's bytes, not gzip's.
    headers = {"Accept-Encoding": "identity"}
    if known:
        headers |= {"Range": f"bytes={size}-", "If-Range": known}
    with session.get(url, headers=headers, stream=True, timeout=_TIMEOUT_S) as got:
        match = _CONTENT_RANGE.fullmatch(got.headers.get("Content-Range", ""))
        continued = got.status_code == 206 and match is not None and int(match[1]) == size
        if known and (
            got.status_code == 416
            or (got.status_code == 206 and (not continued or _validator(got) not in ("", known)))
        ):
            # A range that does not continue this part (a server that ignores If-Range, a
            # part whole already after a crash before its rename): start again from 0.
            part.unlink()
            return False
        if got.status_code not in (200, 206):
            raise DownloadError(
                f"{url} answered HTTP {got.status_code} {got.reason}; check the URL or use "
                "another mirror"
            )
        if not continued:
            # Emptied before the new validator is written: a crash in between leaves an
            # empty part, never old bytes under the new file's validator.
            part.write_bytes(b"")
            size = 0
            validator.write_text(_validator(got))
        length = got.headers.get("Content-Length", "")
        total = size + int(length) if length.isdigit() else None
        report(size, total)
        with part.open("ab") as file:
            for chunk in got.iter_content(_CHUNK_BYTES):
                file.write(chunk)
                size += len(chunk)
                report(size, total)
            # On disk before the rename to the final name, which must not survive a power
            # cut as a complete-looking file of missing bytes.
            file.flush()
            os.fsync(file.fileno())
    if total is not None and size < total:
        raise _Incomplete(f"the connection closed {total - size} bytes early")
    return True


def _validator(got: requests.Response) -> str:
    """What If-Range may quote for this response: a strong ETag, else Last-Modified."""
    etag = got.headers.get("ETag", "")
    return etag if etag and not etag.startswith("W/") else got.headers.get("Last-Modified", "")


def _retrying(attempt: Callable[[], T], url: str, retries: int, kept: str) -> T:
    """`attempt()`, again after a broken connection, up to `retries` times."""
    failures = 0
    while True:
        try:
            return attempt()
        except _TRANSIENT as failure:
            failures += 1
            if failures > retries:
                raise DownloadError(
                    f"downloading {url} failed {failures} time(s), last: {failure}; {kept}: "
                    "run the command again to resume"
                ) from failure
            time.sleep(_BACKOFF_S * failures)
        except (requests.RequestException, OSError, ValueError) as failure:
            # huggingface_hub's errors are these too (HTTP errors, a file not cached
            # while offline).
            raise DownloadError(f"cannot download {url}: {failure}") from failure
