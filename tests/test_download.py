"""Resumable downloads (avvp.pipeline.download) against a local HTTP server: fresh,
cut and resumed, retried, from servers that ignore ranges, verified, reused from the
cache. No network beyond 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_server import LoggedRequest, PayloadServer

from avvp.pipeline import download as download_module
from avvp.pipeline.download import DownloadError, ProgressCallback, cache_path, download

PAYLOAD = random.Random(0).randbytes(300_000)
PAYLOAD_SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
CUT = 120_000  # 40 % of the payload, not a multiple of CHUNK
CHUNK = 16 * 1024
PATH = "/datasets/valor/CLIP.zip"


@pytest.fixture
def server() -> Iterator[PayloadServer]:
    with PayloadServer() as running:
        yield running


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retries without waiting; the waits asked for are returned."""
    waits: list[float] = []
    monkeypatch.setattr(download_module.time, "sleep", waits.append)
    return waits


def _part(url: str, cache: Path) -> Path:
    final = cache_path(url, cache)
    return final.with_name(final.name + ".part")


def test_cache_path_keeps_the_file_name_and_separates_mirrors(tmp_path: Path) -> None:
    first = cache_path("https://a.example/x/CLIP.zip?download=true", tmp_path)
    second = cache_path("https://b.example/y/CLIP.zip", tmp_path)
    assert first.name == second.name == "CLIP.zip"
    assert first.parent.parent == second.parent.parent == tmp_path
    assert first.parent != second.parent
    assert cache_path("https://a.example/x/CLIP.zip?download=true", tmp_path) == first


def test_fresh_download_equals_the_payload_in_one_request_without_range(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD)
    got = download(url, tmp_path, chunk_bytes=CHUNK)

    assert got.path == cache_path(url, tmp_path)
    assert got.path.read_bytes() == PAYLOAD
    assert (got.sha256, got.size, got.resumed_from, got.reused) == (
        PAYLOAD_SHA256,
        len(PAYLOAD),
        0,
        False,
    )
    assert PAYLOAD_SHA256 in got.path.with_name("CLIP.zip.sha256").read_text()
    assert not _part(url, tmp_path).exists()
    assert server.log == [LoggedRequest(PATH, None, 200)]


def test_cut_download_keeps_the_part_and_the_next_call_resumes_with_a_range(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD)
    server.cut_next(PATH, after_bytes=CUT)
    with pytest.raises(DownloadError, match="run the command again to resume") as failure:
        download(url, tmp_path, retries=0, chunk_bytes=CHUNK)
    assert url in str(failure.value)
    part = _part(url, tmp_path)
    assert part.read_bytes() == PAYLOAD[:CUT]
    assert not cache_path(url, tmp_path).exists()

    got = download(url, tmp_path, retries=0, chunk_bytes=CHUNK)
    assert server.log == [
        LoggedRequest(PATH, None, 200),
        LoggedRequest(PATH, f"bytes={CUT}-", 206),
    ]
    assert got.path.read_bytes() == PAYLOAD
    assert (got.sha256, got.resumed_from, got.reused) == (PAYLOAD_SHA256, CUT, False)
    assert not part.exists()


def test_cut_connection_is_retried_within_the_call_with_a_range(
    server: PayloadServer, tmp_path: Path, no_backoff: list[float]
) -> None:
    url = server.add(PATH, PAYLOAD)
    server.cut_next(PATH, after_bytes=CUT)
    got = download(url, tmp_path, retries=2, chunk_bytes=CHUNK)

    assert got.path.read_bytes() == PAYLOAD
    assert got.sha256 == PAYLOAD_SHA256
    assert got.resumed_from == 0
    assert server.log == [
        LoggedRequest(PATH, None, 200),
        LoggedRequest(PATH, f"bytes={CUT}-", 206),
    ]
    assert len(no_backoff) == 1


def test_retries_run_out_after_the_given_number(
    server: PayloadServer, tmp_path: Path, no_backoff: list[float]
) -> None:
    url = server.add(PATH, PAYLOAD)
    server.cut_next(PATH, after_bytes=CHUNK + 100, times=3)
    with pytest.raises(DownloadError, match="failed 3 time"):
        download(url, tmp_path, retries=2, chunk_bytes=CHUNK)
    assert len(server.log) == 3
    # Each cut response sent CHUNK + 100 bytes more, from where the last one ended.
    assert _part(url, tmp_path).read_bytes() == PAYLOAD[: 3 * (CHUNK + 100)]


def test_server_ignoring_ranges_restarts_from_zero_and_yields_the_payload(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD, ignore_ranges=True)
    server.cut_next(PATH, after_bytes=CUT)
    with pytest.raises(DownloadError):
        download(url, tmp_path, retries=0, chunk_bytes=CHUNK)
    assert _part(url, tmp_path).stat().st_size == CUT

    progress: list[tuple[int, int | None]] = []
    got = download(url, tmp_path, retries=0, chunk_bytes=CHUNK, on_progress=_recorder(progress))
    assert server.log[-1] == LoggedRequest(PATH, f"bytes={CUT}-", 200)
    assert got.path.read_bytes() == PAYLOAD
    assert got.sha256 == PAYLOAD_SHA256
    assert progress[0] == (0, len(PAYLOAD))  # started again from byte 0


def test_part_already_complete_is_finished_on_416(server: PayloadServer, tmp_path: Path) -> None:
    url = server.add(PATH, PAYLOAD)
    part = _part(url, tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)

    got = download(url, tmp_path, sha256=PAYLOAD_SHA256)
    assert server.log == [LoggedRequest(PATH, f"bytes={len(PAYLOAD)}-", 416)]
    assert got.path.read_bytes() == PAYLOAD
    assert got.resumed_from == len(PAYLOAD)
    assert not part.exists()


def test_part_longer_than_the_file_is_replaced_by_a_fresh_download(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD)
    part = _part(url, tmp_path)
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD + b"stale tail")

    got = download(url, tmp_path)
    assert server.log == [
        LoggedRequest(PATH, f"bytes={len(PAYLOAD) + 10}-", 416),
        LoggedRequest(PATH, None, 200),
    ]
    assert got.path.read_bytes() == PAYLOAD


def test_wrong_sha256_raises_and_leaves_neither_file_nor_part(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD)
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(DownloadError) as failure:
        download(url, tmp_path, sha256=wrong, chunk_bytes=CHUNK)
    assert wrong in str(failure.value)
    assert PAYLOAD_SHA256 in str(failure.value)
    assert not cache_path(url, tmp_path).exists()
    assert not _part(url, tmp_path).exists()

    got = download(url, tmp_path, sha256=PAYLOAD_SHA256.upper(), chunk_bytes=CHUNK)
    assert got.path.read_bytes() == PAYLOAD


def test_wrong_sha256_of_a_cached_file_raises_and_keeps_it(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD)
    download(url, tmp_path)
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(DownloadError, match="delete it or give the right --sha256"):
        download(url, tmp_path, sha256=wrong)
    assert cache_path(url, tmp_path).read_bytes() == PAYLOAD
    assert len(server.log) == 1


def test_malformed_sha256_is_refused_before_any_request(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD)
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        download(url, tmp_path, sha256="abc123")
    assert server.log == []


def test_second_call_reuses_the_cached_file_and_its_recorded_digest(
    server: PayloadServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = server.add(PATH, PAYLOAD)
    download(url, tmp_path, chunk_bytes=CHUNK)
    requests_so_far = len(server.log)

    hashed: list[Path] = []
    real_hash_file = download_module._hash_file

    def counting_hash_file(path: Path) -> hashlib._Hash:
        hashed.append(path)
        return real_hash_file(path)

    monkeypatch.setattr(download_module, "_hash_file", counting_hash_file)
    again = download(url, tmp_path, sha256=PAYLOAD_SHA256)
    assert again.reused
    assert again.sha256 == PAYLOAD_SHA256
    assert again.path.read_bytes() == PAYLOAD
    assert len(server.log) == requests_so_far
    assert hashed == []

    # A file changed since its digest was recorded is hashed again, once.
    stat = again.path.stat()
    os.utime(again.path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert download(url, tmp_path).sha256 == PAYLOAD_SHA256
    assert download(url, tmp_path).sha256 == PAYLOAD_SHA256
    assert hashed == [again.path]
    assert len(server.log) == requests_so_far


def test_missing_file_raises_naming_the_url_and_status(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.url("/datasets/valor/MISSING.zip")
    with pytest.raises(DownloadError, match="404") as failure:
        download(url, tmp_path)
    assert url in str(failure.value)
    assert not _part(url, tmp_path).exists()
    assert server.log == [LoggedRequest("/datasets/valor/MISSING.zip", None, 404)]


def test_progress_rises_to_the_size_with_the_right_total(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD)
    progress: list[tuple[int, int | None]] = []
    download(url, tmp_path, chunk_bytes=CHUNK, on_progress=_recorder(progress))

    done = [d for d, _ in progress]
    assert done[0] == 0
    assert done[-1] == len(PAYLOAD)
    assert all(later > earlier for earlier, later in zip(done, done[1:], strict=False))
    assert len(done) > 10  # reported chunk by chunk, not once at the end
    assert {total for _, total in progress} == {len(PAYLOAD)}


def test_progress_of_a_resumed_download_starts_at_the_part_size(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD)
    server.cut_next(PATH, after_bytes=CUT)
    with pytest.raises(DownloadError):
        download(url, tmp_path, retries=0, chunk_bytes=CHUNK)

    progress: list[tuple[int, int | None]] = []
    download(url, tmp_path, chunk_bytes=CHUNK, on_progress=_recorder(progress))
    assert progress[0] == (CUT, len(PAYLOAD))
    assert progress[-1] == (len(PAYLOAD), len(PAYLOAD))


def test_unknown_length_reports_no_total_and_still_completes(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD, send_length=False)
    progress: list[tuple[int, int | None]] = []
    got = download(url, tmp_path, chunk_bytes=CHUNK, on_progress=_recorder(progress))
    assert got.path.read_bytes() == PAYLOAD
    assert {total for _, total in progress} == {None}


def test_redirect_is_followed_and_cached_under_the_requested_url(
    server: PayloadServer, tmp_path: Path
) -> None:
    server.add("/cdn/blob", PAYLOAD)
    url = server.redirect(PATH, "/cdn/blob")
    got = download(url, tmp_path)
    assert got.path == cache_path(url, tmp_path)
    assert got.path.read_bytes() == PAYLOAD
    assert [(entry.path, entry.status) for entry in server.log] == [
        (PATH, 302),
        ("/cdn/blob", 200),
    ]


def _recorder(into: list[tuple[int, int | None]]) -> ProgressCallback:
    def record(done: int, total: int | None) -> None:
        into.append((done, total))

    return record
