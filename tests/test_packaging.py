"""The distribution installs every room under one package name, editable and regular."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from support import REPO

ROOMS = ("storage", "model", "extractors", "pipeline", "flows")


def _declared() -> tuple[list[str], dict[str, str]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["packages"], config["package-dir"]


def _packages_on_disk() -> set[str]:
    found = {"avvp"}
    for room in ROOMS:
        for init in (REPO / room).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO).parts
            found.add(".".join(("avvp", *relative)))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    packages, package_dir = _declared()
    assert set(packages) == _packages_on_disk()
    assert {package_dir[f"avvp.{room}"] for room in ROOMS} == set(ROOMS)


IMPORT_ALL = (
    "import importlib, sys; from importlib.resources import files; "
    "names = sys.argv[1].split(','); mods = [importlib.import_module(n) for n in names]; "
    "print(mods[0].__file__); "
    "print(len([f for f in files('avvp.pipeline.data.llp').iterdir() if f.name.endswith('.csv')]))"
)


def _import_everything(env_path: str | None, cwd: Path) -> list[str]:
    packages, _ = _declared()
    env = {"PATH": "/usr/bin:/bin"}
    if env_path:
        env["PYTHONPATH"] = env_path
    result = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, ",".join(packages)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_editable_install_imports_every_package_from_the_checkout(tmp_path: Path) -> None:
    avvp_file, csv_count = _import_everything(None, tmp_path)
    assert Path(avvp_file).parent == REPO
    assert int(csv_count) == 7


@pytest.mark.slow
def test_regular_install_imports_every_package_and_ships_llp_files(tmp_path: Path) -> None:
    target = tmp_path / "site"
    build = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    avvp_file, csv_count = _import_everything(str(target), tmp_path)
    assert Path(avvp_file).is_relative_to(target)
    assert int(csv_count) == 7
