"""Cache keys and result storage for the flows' tasks.

Prefect's default cache policy includes the flow run's id, so it never reuses a result
across runs. Every cached task here has a key built from what it reads instead: the
shard key (its videos' content digests and the output settings), the fingerprints of
the rows a training or evaluation reads, or the digest of a label folder; plus the
stage's settings and `CODE_VERSION`. Results persist under the store root, so a cache
hit survives a new process, and another machine sharing the store sees it too. The
stages are idempotent against the store anyway: a cache hit only saves their checks.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import fsspec
from prefect.filesystems import RemoteFileSystem, WritableFileSystem

import avvp

RESULTS_FOLDER = "prefect-results"


# The package's own sources. In a checkout the root package is the repository folder
# (pyproject's package-dir), so walking all of it would also hash `.venv`, `tests` and
# stale `build/lib` copies; naming the modules and rooms reads the same files whether
# avvp runs from a checkout or from an installed wheel.
SOURCE_MODULES = ("__init__.py", "contract.py")
SOURCE_ROOMS = ("extractors", "flows", "model", "pipeline", "storage")


@functools.cache
def code_version() -> str:
    """Digest of the installed avvp sources: a changed stage never reuses old results."""
    package = Path(avvp.__file__).parent
    sources = [package / name for name in SOURCE_MODULES]
    for room in SOURCE_ROOMS:
        sources.extend((package / room).rglob("*.py"))
    digest = hashlib.sha256(avvp.__version__.encode())
    for path in sorted(sources):
        digest.update(path.relative_to(package).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def result_storage(store: str) -> Path | WritableFileSystem:
    """Where task results persist: `<store>/prefect-results/`.

    A local folder is given as a path (Prefect makes the file system of it); a remote
    store needs its file system saved as a block, named after the store's URL.
    """
    fs, path = fsspec.core.url_to_fs(store)
    if "file" in fs.protocol:
        return Path(path).resolve() / RESULTS_FOLDER
    block = RemoteFileSystem(basepath=f"{store.rstrip('/')}/{RESULTS_FOLDER}")
    block.save(f"avvp-results-{settings_digest(store)}", overwrite=True)
    return block


def settings_digest(*parts: Any) -> str:
    """A short digest of JSON-able settings (pydantic models are dumped first)."""
    text = json.dumps(list(parts), sort_keys=True, default=_plain)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _plain(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else str(value)


def folder_digest(folder: str | None) -> str:
    """Digest of the files directly in a label folder (None: the vendored LLP); its
    subfolders (the videos beside `avvp synth clips` labels) are not labels."""
    if folder is None:
        return f"vendored-{avvp.__version__}"
    digest = hashlib.sha256()
    for path in sorted(Path(folder).iterdir()):
        if path.is_file():
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def task_key(stage: str, *parts: Any) -> str:
    return f"{stage}-{settings_digest(*parts)}-{code_version()}"
