"""Downloads (avvp.pipeline.sources.download) from a local HTTP server: a mirror's file cut and
resumed with Range + If-Range, fetched afresh when it changed, verified; a fake Hub's
file through huggingface_hub, resumed, reused and refused when its bytes do not match
its sha256. No network beyond 127.0.0.1."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from http_server import Logged, PayloadServer
from huggingface_hub import constants
from huggingface_hub.utils import reset_sessions

from avvp.pipeline.sources import download as download_module
from avvp.pipeline.sources.download import DownloadError, cache_path, download

PAYLOAD = random.Random(0).randbytes(3_000_000)
SHA256 = hashlib.sha256(PAYLOAD).hexdigest()
ETAG = f'"{SHA256}"'
CUT = 1_200_000  # the first response stops here
PATH = "/mirror/CLIP.zip"
HUB_PATH = "/datasets/owner/valor/resolve/main/CLIP.zip"


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


@pytest.fixture
def hub(server: PayloadServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[PayloadServer]:
    """The server as the Hugging Face Hub (its dataset URLs go through huggingface_hub,
    with the server as the endpoint), and huggingface_hub online for this test only (it
    reads HF_HUB_OFFLINE when imported)."""
    monkeypatch.setattr(download_module, "HUB", server.url())
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    # Its chunks are 10 MB, and a cut drops the chunk in flight: small ones keep most of
    # what arrived before a cut of this small payload.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    reset_sessions()  # a session made while offline refuses every request
    yield server
    reset_sessions()


def hub_headers(body: bytes, sha256: str | None = None) -> dict[str, str]:
    """What the Hub sends with an LFS file: the commit, its sha256 and its size."""
    return {
        "X-Repo-Commit": "c0ffee" * 6 + "0123",
        "X-Linked-Etag": f'"{sha256 or hashlib.sha256(body).hexdigest()}"',
        "X-Linked-Size": str(len(body)),
    }


def part_of(url: str, cache: Path) -> Path:
    final = cache_path(url, cache)
    return final.with_name(final.name + ".part")


def test_cache_path_keeps_the_file_name_and_separates_mirrors(tmp_path: Path) -> None:
    first = cache_path("https://a.example/x/CLIP.zip?download=true", tmp_path)
    second = cache_path("https://b.example/y/CLIP.zip", tmp_path)
    assert first.name == second.name == "CLIP.zip"
    assert first.parent.parent == second.parent.parent == tmp_path
    assert first.parent != second.parent


def test_a_mirror_download_cut_mid_way_resumes_with_range_and_if_range(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD)
    server.cut_next(PATH, after_bytes=CUT)
    with pytest.raises(DownloadError, match="run the command again to resume") as failure:
        download(url, tmp_path, retries=0)
    assert url in str(failure.value)
    kept = part_of(url, tmp_path).read_bytes()
    assert 0 < len(kept) <= CUT and PAYLOAD.startswith(kept)
    assert not cache_path(url, tmp_path).exists()

    progress: list[tuple[int, int | None]] = []
    got = download(url, tmp_path, retries=0, on_progress=lambda *p: progress.append(p))
    assert server.log[-1] == Logged("GET", PATH, f"bytes={len(kept)}-", ETAG, 206)
    assert got.path.read_bytes() == PAYLOAD
    assert (got.sha256, got.resumed_from, got.reused) == (SHA256, len(kept), False)
    assert progress[0] == (len(kept), len(PAYLOAD)) and progress[-1] == (len(PAYLOAD),) * 2
    assert not part_of(url, tmp_path).exists()

    again = download(url, tmp_path, sha256=SHA256)
    assert again.reused and again.sha256 == SHA256 and len(server.log) == 2


def test_a_cut_connection_is_retried_within_the_call(
    server: PayloadServer, tmp_path: Path, no_backoff: list[float]
) -> None:
    url = server.add(PATH, PAYLOAD)
    server.cut_next(PATH, after_bytes=CUT, times=2)
    assert download(url, tmp_path, retries=2).path.read_bytes() == PAYLOAD
    assert [entry.status for entry in server.log] == [200, 206, 206]
    assert len(no_backoff) == 2


def test_a_file_changed_on_the_mirror_between_runs_is_downloaded_afresh(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD)
    server.cut_next(PATH, after_bytes=CUT)
    with pytest.raises(DownloadError):
        download(url, tmp_path, retries=0)
    changed = random.Random(1).randbytes(len(PAYLOAD))
    server.add(PATH, changed)

    got = download(url, tmp_path, retries=0)
    # The part's ETag no longer matches: the server sends the whole new file, which
    # replaces the part instead of being appended to it.
    assert server.log[-1].if_range == ETAG and server.log[-1].status == 200
    assert got.path.read_bytes() == changed
    assert got.sha256 == hashlib.sha256(changed).hexdigest()


def test_a_part_without_a_strong_validator_is_fetched_again_from_zero(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD, {"ETag": 'W/"weak"'})
    server.cut_next(PATH, after_bytes=CUT)
    with pytest.raises(DownloadError):
        download(url, tmp_path, retries=0)
    assert download(url, tmp_path).path.read_bytes() == PAYLOAD
    assert server.log[-1] == Logged("GET", PATH, None, None, 200)


def test_a_wrong_sha256_removes_a_fresh_download_but_keeps_a_cached_one(
    server: PayloadServer, tmp_path: Path
) -> None:
    url = server.add(PATH, PAYLOAD)
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(DownloadError, match="the download was removed") as failure:
        download(url, tmp_path, sha256=wrong)
    assert wrong in str(failure.value) and SHA256 in str(failure.value)
    assert not cache_path(url, tmp_path).exists()

    download(url, tmp_path, sha256=SHA256.upper())
    with pytest.raises(DownloadError, match="check the --sha256 given"):
        download(url, tmp_path, sha256=wrong)
    assert cache_path(url, tmp_path).read_bytes() == PAYLOAD
    assert len(server.log) == 2


def test_a_malformed_sha256_is_refused_before_any_request(
    server: PayloadServer, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="64 hexadecimal digits"):
        download(server.add(PATH, PAYLOAD), tmp_path, sha256="abc123")
    assert server.log == []


def test_a_missing_file_names_the_url_and_the_status(server: PayloadServer, tmp_path: Path) -> None:
    url = server.url("/mirror/MISSING.zip")
    with pytest.raises(DownloadError, match="404") as failure:
        download(url, tmp_path)
    assert url in str(failure.value)
    assert not part_of(url, tmp_path).exists()


def test_a_hub_file_is_resumed_verified_and_reused_through_huggingface_hub(
    hub: PayloadServer, tmp_path: Path
) -> None:
    url = hub.add(HUB_PATH, PAYLOAD, hub_headers(PAYLOAD))
    hub.cut_next(HUB_PATH, after_bytes=CUT)
    with pytest.raises(DownloadError, match="again to resume"):
        download(url, tmp_path, retries=0)

    got = download(url, tmp_path, sha256=SHA256)
    resumed = [entry for entry in hub.log if entry.method == "GET"][-1]
    assert resumed.range is not None and resumed.status == 206
    assert got.path.read_bytes() == PAYLOAD and got.sha256 == SHA256 and not got.reused
    assert got.path.is_relative_to(tmp_path / "datasets--owner--valor")
    assert got.path.resolve().name == SHA256  # the Hub's cache names it by its sha256

    gets = sum(entry.method == "GET" for entry in hub.log)
    again = download(url, tmp_path)
    assert again.reused and again.path == got.path
    assert sum(entry.method == "GET" for entry in hub.log) == gets


def test_a_hub_file_whose_bytes_do_not_match_its_sha256_is_refused_and_removed(
    hub: PayloadServer, tmp_path: Path
) -> None:
    served = random.Random(2).randbytes(len(PAYLOAD))  # what a corrupting proxy delivers
    url = hub.add(HUB_PATH, served, hub_headers(PAYLOAD, SHA256))
    with pytest.raises(DownloadError, match=f"the Hub serves it as {SHA256}"):
        download(url, tmp_path)
    repo = tmp_path / "datasets--owner--valor"
    assert list((repo / "blobs").iterdir()) == [] and list(repo.glob("snapshots/*/*")) == []
