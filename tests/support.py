"""Helpers shared by test modules (importable because pytest puts tests/ on sys.path)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Everything a test reads lives in the repository: outputs of the official code
# (`metrics_public.*`, `mmcse_official_clapclip.pt`) and the LLP sample clip.
DATA = REPO / "tests" / "data"
FIXTURES = DATA
SAMPLES = DATA
