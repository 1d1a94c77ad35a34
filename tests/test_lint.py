"""The code base follows the house style (ruff finds nothing) and DESIGN.md's import
directions between rooms."""

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from support import REPO


def test_ruff_reports_no_problems() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rooms_import_downwards_only() -> None:
    """import-linter's layer contract in pyproject.toml (flows > pipeline > model |
    extractors | storage > contract) holds for every module of the package."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 kept, 0 broken" in result.stdout
    analyzed = int(re.search(r"Analyzed (\d+) files", result.stdout).group(1))
    assert analyzed >= 40, result.stdout  # the whole package, not an empty match


def test_the_synthetic_contract_names_every_production_module() -> None:
    """The contract that keeps synthetic data out of production code lists its sources
    by name: a new room or top-level module of the package must be added there (or to
    the command line, the one room allowed to import synthetic data), or this fails."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    (contract,) = [
        c
        for c in config["tool"]["importlinter"]["contracts"]
        if c.get("forbidden_modules") == ["avvp.pipeline.synthetic"]
    ]
    modules = {"avvp.contract"}
    modules |= {f"avvp.{room}" for room in ("flows", "storage", "model", "extractors")}
    pipeline = REPO / "pipeline"
    modules |= {f"avvp.pipeline.{p.stem}" for p in pipeline.glob("*.py") if p.stem != "__init__"}
    modules |= {f"avvp.pipeline.{p.parent.name}" for p in pipeline.glob("*/__init__.py")}
    modules -= {"avvp.pipeline.cli", "avvp.pipeline.synthetic", "avvp.pipeline.data"}
    assert set(contract["source_modules"]) == modules


def test_vulture_finds_no_dead_code_in_the_package() -> None:
    """Nothing vulture is at least 80% sure is dead: unused imports and arguments,
    unreachable code. (Unused functions and attributes score 60%: reviews find those.)"""
    rooms = [str(REPO / room) for room in ("pipeline", "storage", "model", "extractors", "flows")]
    result = subprocess.run(
        [sys.executable, "-m", "vulture", "--min-confidence", "80", *rooms],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
