"""The device script (benchmarks/device.sh, benchmarks/device.py) checked without a GPU:
its shell syntax, its arguments, and a dry run that imports and resolves everything a
measured run uses and prints the table it would fill."""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from support import REPO

DEVICE_PY = REPO / "benchmarks" / "device.py"
ROW_NAMES = (
    "GPU tests (pytest -m gpu)",
    "training step, MM-CSE paper size, batch 64, bf16",
    "inference step, MM-CSE paper size, batch 64, bf16",
    "peak GPU memory, training + inference",
    "training step as above, ours captured as one CUDA graph",
    "inference step as above, ours captured as one CUDA graph",
    "extraction, paper size, random weights, 64 LLP-like 10-s clips",
    "the extraction's loader alone (decode, preprocess), same clips",
    "the loader alone, every video decoder on all CPUs",
    "the loader alone, shards of 8 videos",
    "extraction as above, one decoding worker per CPU but one",
    "extraction of one 10-s clip, paper size",
    "the three networks alone, 16 windows per call",
    "CLIP alone, bf16 weights instead of autocast",
    "peak GPU memory, extraction",
    "parse latency of one 10-s clip (tiny run, warm, median of 5)",
    "peak GPU memory, parse",
)


def device_py(*args: str, out: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OUT": str(out)}
    return subprocess.run(
        [sys.executable, str(DEVICE_PY), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=600,  # above device.py's default --budget of 420 s
    )


def table_rows(stdout: str) -> dict[str, list[str]]:
    """Figure -> the other cells, of every markdown table row but the header's."""
    rows = {}
    for line in stdout.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
        if line.startswith("| ") and cells[0] not in ("figure", "---"):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("script", ["device.sh", "device_packages.sh"])
def test_the_shell_scripts_parse(script: str) -> None:
    result = subprocess.run(
        ["bash", "-n", str(REPO / "benchmarks" / script)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def packed_copy(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """The GPU machine's way (no package index there): a copy of the repository without
    .venv, a probe module packed into .whl/device-site.tar.xz, and the machine's python
    as a wrapper that notes the PYTHONPATH of each run in tmp_path/paths."""
    copy = tmp_path / "repo"
    skip = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".*_cache", ".whl")

    def leave_out(folder: str, names: list[str]) -> set[str]:
        fixtures = {"data"} if Path(folder) == REPO / "tests" else set()  # 29 MB, unread
        return skip(folder, names) | fixtures

    shutil.copytree(REPO, copy, ignore=leave_out)
    (copy / ".whl").mkdir()
    probe = tmp_path / "avvp_device_probe.py"
    probe.write_text("PACKED = True\n")
    with tarfile.open(copy / ".whl" / "device-site.tar.xz", "w:xz") as pack:
        pack.add(probe, arcname=probe.name)
    python = tmp_path / "python"
    python.write_text(
        f'#!/bin/sh\necho "$PYTHONPATH" >> {tmp_path}/paths\nexec {sys.executable} "$@"\n'
    )
    python.chmod(0o755)
    env = {**os.environ, "AVVP_DEVICE_PYTHON": str(python), "TMPDIR": str(tmp_path)}
    return copy, env | {"OUT": str(tmp_path / "out")}


def test_without_a_venv_the_script_runs_on_the_packed_packages(tmp_path: Path) -> None:
    copy, env = packed_copy(tmp_path)
    result = subprocess.run(
        ["bash", str(copy / "benchmarks" / "device.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (site,) = tmp_path.glob("avvp-device-site-*")
    assert (site / "avvp_device_probe.py").read_text() == "PACKED = True\n"
    assert f"packages from {site}" in result.stdout
    source = tmp_path / "avvp-device-source"
    assert (source / "avvp").resolve() == copy.resolve()  # the package is the copy
    # The path device.py ran with (the last run of the machine's python).
    ran_with = (tmp_path / "paths").read_text().splitlines()[-1]
    assert ran_with.split(":")[:2] == [str(source), str(site)]
    assert list(table_rows(result.stdout)) == list(ROW_NAMES)
    assert "installing into .venv" not in result.stdout


def test_the_script_profiles_instead_when_asked(tmp_path: Path) -> None:
    copy, env = packed_copy(tmp_path)
    command = ["bash", str(copy / "benchmarks" / "device.sh"), "--profile", "--cpu"]
    result = subprocess.run(
        [*command, "--only", "train"], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert [path.name for path in (tmp_path / "out").glob("profile-*")] == ["profile-train.txt"]
    assert "| figure |" not in result.stdout  # device.py's table: not run


def test_dry_run_prints_every_row_unmeasured(tmp_path: Path) -> None:
    result = device_py("--dry-run", out=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert list(rows) == list(ROW_NAMES)
    for figure, (value, _, command) in rows.items():
        assert value == "dry run (not measured)", figure
        assert command.startswith("`python benchmarks/device.py --only "), figure
    assert "tests/test_valor_model.py" in result.stdout  # found holding GPU tests
    assert not list(tmp_path.iterdir()), "a dry run writes no files"


def test_a_step_without_rows_of_its_own_shows_why_and_others_are_not_selected(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.syspath_prepend(str(DEVICE_PY.parent))  # as for a script: device_steps
    spec = importlib.util.spec_from_file_location("device", DEVICE_PY)
    assert spec is not None and spec.loader is not None
    device = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(device)
    rows = {"train": ["12.0 steps/s", "ratio 1.5"], "train:*": ["timed out after 50 s", "log"]}
    text = device.table(rows, argparse.Namespace(batch=8, clips=64, smoke=False))
    values = {figure: cells[:2] for figure, cells in table_rows(text).items()}
    assert values["training step, MM-CSE paper size, batch 8, bf16"] == [
        "12.0 steps/s",
        "ratio 1.5",
    ]
    assert values["inference step, MM-CSE paper size, batch 8, bf16"] == [
        "timed out after 50 s",
        "log",
    ]
    assert values["GPU tests (pytest -m gpu)"] == ["not selected", ""]


def test_a_smoke_run_takes_every_step_through_its_measuring_code_on_the_cpu(
    tmp_path: Path,
) -> None:
    """The steps' code runs for real (toy sizes, CPU for CUDA), not only its imports: a
    GPU session must not be the first place it runs."""
    result = device_py("--smoke", out=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert list(rows) == list(ROW_NAMES[:1]) + [
        name.replace("batch 64", "batch 2").replace("64 LLP", "1 LLP") for name in ROW_NAMES[1:]
    ]
    values = {name: cells[0] for name, cells in rows.items()}
    assert all(value.startswith("smoke: ") for value in values.values()), values
    assert values["training step, MM-CSE paper size, batch 2, bf16"].endswith("steps/s")
    assert values["extraction, paper size, random weights, 1 LLP-like 10-s clips"].endswith(
        "videos/s"
    )
    assert values["the three networks alone, 16 windows per call"].endswith("videos/s")
    # CUDA graphs need CUDA: the smoke run says so rather than failing or faking a figure.
    graphed = [value for name, value in values.items() if "CUDA graph" in name]
    assert graphed == ["smoke: needs CUDA"] * 2
    assert "equal to" in rows["training step, MM-CSE paper size, batch 2, bf16"][1]
    assert (tmp_path / "device-table.md").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--only", "train,render"], "unknown steps render"),
        (["--clips", "0"], "must be positive"),
        (["--batch", "many"], "invalid int value"),
    ],
)
def test_bad_arguments_are_refused(tmp_path: Path, args: list[str], message: str) -> None:
    result = device_py("--dry-run", *args, out=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


def test_help_names_the_options(tmp_path: Path) -> None:
    result = device_py("--help", out=tmp_path)
    assert result.returncode == 0, result.stderr
    for option in ("--dry-run", "--only", "--budget", "--batch", "--clips", "--not-run"):
        assert option in result.stdout


def test_not_run_fills_the_table_with_the_reason(tmp_path: Path) -> None:
    result = device_py("--not-run", "not run yet: no GPU at hand", out=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    assert list(rows) == list(ROW_NAMES)
    assert {cells[0] for cells in rows.values()} == {"not run yet: no GPU at hand"}
    assert (tmp_path / "device-table.md").read_text().strip() == result.stdout.strip()


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA, a measured run would start")
def test_a_measured_run_without_cuda_exits_2_saying_why(tmp_path: Path) -> None:
    result = device_py(out=tmp_path)
    assert result.returncode == 2
    assert "no CUDA device" in result.stderr
    assert "--dry-run" in result.stderr


def test_the_profile_script_writes_each_sections_profile_on_the_cpu(tmp_path: Path) -> None:
    """benchmarks/device_profile.py, what a GPU session runs to see where time goes, runs
    through every section (toy sizes, CPU for CUDA) before a GPU session relies on it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(REPO / "benchmarks" / "device_profile.py"), "--cpu"]
    result = subprocess.run(
        [*command, "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    written = {path.name: path.read_text() for path in tmp_path.iterdir()}
    assert sorted(written) == ["profile-extract.txt", "profile-parse.txt", "profile-train.txt"]
    assert "extract_videos" in written["profile-extract.txt"]
    assert "run_local" in written["profile-parse.txt"]
    assert "kernel launches per step" in written["profile-train.txt"]
