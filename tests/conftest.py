"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import FIXTURES, SHARED


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """Outputs of the official code (shared/fixtures beside the checkout)."""
    if not FIXTURES.is_dir():
        pytest.fail(f"expected the shared fixtures at {FIXTURES} (shared/ beside the checkout)")
    return FIXTURES


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return SHARED
