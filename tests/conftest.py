"""Shared pytest fixtures."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
from support import FIXTURES

# Prefect's embedded API keeps its database under PREFECT_HOME: one fresh home for the
# whole session (created once: 9 s on an idle machine, more when loaded), never the
# user's ~/.prefect. Set before
# any test imports prefect, which reads its settings when first imported.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="avvp-tests-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.pop("PREFECT_API_URL", None)
# Prefect's INFO lines (one per task) would crowd pytest's output, and the embedded API
# logs its shutdown after pytest has closed the captured streams.
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Outputs of the official code, kept in tests/data/ (see tests/data/README.md)."""
    if not FIXTURES.is_dir():
        pytest.fail(f"expected the official-output fixtures at {FIXTURES}")
    return FIXTURES


@pytest.fixture(scope="session")
def clips_demo(tmp_path_factory: pytest.TempPathFactory):
    """The demo exactly as `avvp demo` runs it on a CPU (200 clips, 60 epochs, tiny
    sizes, through the extract-and-train flow): (store root, DemoResult). Shared by the
    demo, parse and report tests, which only read it."""
    from avvp.flows.runner import run_extract_and_train
    from avvp.pipeline.synthetic.demo import run_demo

    root = tmp_path_factory.mktemp("demo")
    return root, run_demo(str(root), device="cpu", run_chain=run_extract_and_train)


@pytest.fixture(autouse=True)
def _no_kept_decoding_workers():
    """Each test starts without decoding workers kept by an earlier one: forked before a
    test's monkeypatches, they would not see them (`avvp.pipeline.decoding_workers`)."""
    yield
    kept = sys.modules.get("avvp.pipeline.decoding_workers")
    if kept is not None:
        kept.close_decoding_workers()
