"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import FIXTURES


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Outputs of the official code, kept in tests/data/ (see tests/data/README.md)."""
    if not FIXTURES.is_dir():
        pytest.fail(f"expected the official-output fixtures at {FIXTURES}")
    return FIXTURES
