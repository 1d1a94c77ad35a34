"""Bad stores, folders and text files: one plain line naming the file and the fix, the
documented exit code (2: usage or configuration), no traceback, nothing half-written.

Read-only and full disks are made with a private mount namespace (`unshare`), where the
machine allows one; those cases are skipped with the reason where it does not.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from avvp.pipeline.cli.app import app
from avvp.pipeline.synthetic.features import SyntheticLLPConfig, write_synthetic_llp
from avvp.storage import check_store, store_info

EXIT_USAGE = 2
CASES: list[str] = []  # every bad input tried, printed at the end of the module
PART = "part-00000000000000000001-aaaaaaaaaaaa.parquet"
BROKEN_PARTS = {
    "empty": b"",
    "garbage": b"not parquet at all\n" * 20,
    "cut": b"PAR1" + bytes(300),  # a write stopped before its footer
}


def refused(result: Result, *named: str, code: int = EXIT_USAGE) -> str:
    """The output of a command that failed with `code`, one error line naming `named`."""
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    for text in named:
        assert text in result.output, (text, result.output)
    return result.output


def invoke(*args: object) -> Result:
    # A wide terminal: at 80 columns rich wraps an error wherever the temporary path's
    # length puts the break, so a phrase the test looks for could be cut in two.
    return CliRunner().invoke(app, [str(arg) for arg in args], env={"COLUMNS": "400"})


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad-input-store")
    write_synthetic_llp(str(root), SyntheticLLPConfig(n_train=16, n_val=8, n_test=8, seed=3))
    return root


@pytest.fixture(scope="module")
def labels_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LLP-format label files of four tiny clips."""
    folder = tmp_path_factory.mktemp("labels")
    result = invoke("synth", "clips", folder, "--n", 4, "--seconds", 1)
    assert result.exit_code == 0, result.output
    return folder


@pytest.mark.parametrize("kind", sorted(BROKEN_PARTS))
def test_a_broken_part_is_named_with_its_repair_and_check_repair_sets_it_aside(
    store: Path, tmp_path: Path, kind: str
) -> None:
    CASES.append(f"{kind} part")
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    before = store_info(copy)["tables"]["clap-htsat-fusion"]["fingerprint"]
    (copy / "features" / "clap-htsat-fusion" / PART).write_bytes(BROKEN_PARTS[kind])

    for command in (("store", "info", copy), ("train", "--store", copy, "--epochs", 1)):
        output = refused(invoke(*command), PART)
        assert f"avvp store check {copy} --repair" in " ".join(output.split())
    check = invoke("store", "check", copy)
    assert check.exit_code == 1 and PART in check.output

    repaired = invoke("store", "check", copy, "--repair", "--yes")
    assert repaired.exit_code == 0, repaired.output
    assert (copy / "broken" / "features" / "clap-htsat-fusion" / PART).read_bytes() == BROKEN_PARTS[
        kind
    ]
    assert check_store(copy) == []
    assert store_info(copy)["tables"]["clap-htsat-fusion"]["fingerprint"] == before


def test_check_without_yes_asks_before_moving_anything(store: Path, tmp_path: Path) -> None:
    CASES.append("repair declined")
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    (copy / "labels" / "weak" / PART).write_bytes(b"")
    declined = CliRunner().invoke(app, ["store", "check", str(copy), "--repair"], input="n\n")
    assert declined.exit_code == 1
    assert (copy / "labels" / "weak" / PART).exists()


def test_a_broken_record_part_is_named_too(store: Path, tmp_path: Path) -> None:
    CASES.append("broken failures part")
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    (copy / "failures" / "extract").mkdir(parents=True)
    (copy / "failures" / "extract" / PART).write_bytes(b"garbage")
    refused(invoke("store", "info", copy), PART, "avvp store check")
    assert [part.path for part in check_store(copy)] == [f"failures/extract/{PART}"]


@pytest.mark.parametrize(
    "command",
    [
        ("extract", "{videos}", "--store", "{file}"),
        ("import-labels", "--store", "{file}", "--labels", "{videos}"),
        ("train", "--store", "{file}"),
        ("pseudo-labels", "dense", "--store", "{file}", "--labels", "{videos}"),
        (
            "run",
            "--videos",
            "{videos}",
            "--labels",
            "{videos}",
            "--store",
            "{file}",
            "--runner",
            "local",
        ),
        ("parse", "{videos}", "--run", "{videos}", "--store", "{file}"),
        ("store", "info", "{file}"),
    ],
    ids=lambda command: " ".join(part for part in command if not part.startswith("{")),
)
def test_a_file_given_as_the_store_is_refused_before_any_work(
    labels_dir: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    CASES.append(f"file as store: {command[0]}")
    file = tmp_path / "not-a-folder"
    file.write_text("x")
    args = [part.format(videos=labels_dir, file=file) for part in command]
    output = refused(invoke(*args), "is a file, not a store folder")
    assert file.read_text() == "x"
    assert "not-a-folder" in output


def test_a_video_in_two_split_files_names_both_files_and_lines(
    labels_dir: Path, tmp_path: Path
) -> None:
    CASES.append("video in two splits")
    labels = tmp_path / "labels"
    shutil.copytree(labels_dir, labels, ignore=shutil.ignore_patterns("videos"))
    first = (labels / "AVVP_train.csv").read_text().splitlines()[1]
    with (labels / "AVVP_val_pd.csv").open("a") as stream:
        stream.write(first + "\n")
    output = " ".join(
        refused(invoke("import-labels", "--store", tmp_path / "s", "--labels", labels)).split()
    )
    assert "AVVP_train.csv (line 2)" in output and "AVVP_val_pd.csv" in output
    assert not (tmp_path / "s" / "labels").exists()


def test_a_label_file_that_is_not_utf8_is_named(labels_dir: Path, tmp_path: Path) -> None:
    CASES.append("non-UTF-8 label file")
    labels = tmp_path / "labels"
    shutil.copytree(labels_dir, labels, ignore=shutil.ignore_patterns("videos"))
    with (labels / "AVVP_train.csv").open("ab") as stream:
        stream.write("clip9_0_1\tSpeech\n".encode("utf-16"))
    output = refused(invoke("import-labels", "--store", tmp_path / "s", "--labels", labels))
    assert "AVVP_train.csv" in output and "not UTF-8" in output


@pytest.mark.parametrize("suffix", [".toml", ".yaml", ".json"])
def test_a_config_file_that_is_not_utf8_is_named(store: Path, tmp_path: Path, suffix: str) -> None:
    CASES.append(f"non-UTF-8 {suffix}")
    config = tmp_path / f"settings{suffix}"
    config.write_bytes('epochs = "\xff"\n'.encode("latin-1"))
    output = refused(invoke("train", "--store", store, "--config", config))
    assert config.name in output and "not UTF-8" in output


# ---- read-only and full disks --------------------------------------------------------


def in_mount_namespace(script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` with sh in a private mount namespace (mounts there vanish with it)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs util-linux's unshare to make a read-only or full folder")
    probe = subprocess.run(
        [unshare, "--map-root-user", "--mount", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        pytest.skip(f"this machine allows no private mount namespace: {probe.stderr.strip()}")
    avvp = Path(sys.executable).with_name("avvp")
    # Wide enough that no message is folded inside the error box.
    env = {**os.environ, "AVVP": str(avvp), "HF_HUB_OFFLINE": "1", "COLUMNS": "400"}
    return subprocess.run(
        [unshare, "--map-root-user", "--mount", "sh", "-c", f"set -e; {script}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def read_only(folder: Path) -> str:
    return f"mount --bind {folder} {folder}; mount -o remount,ro,bind {folder}; "


def assert_refused(done: subprocess.CompletedProcess[str], *named: str) -> str:
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == EXIT_USAGE, output
    assert "Traceback" not in output
    for text in named:
        assert text in output, (text, output)
    return output


def test_a_read_only_store_is_refused_before_training_extracting_or_evaluating(
    store: Path, labels_dir: Path, tmp_path: Path
) -> None:
    CASES.extend(["read-only store: train", "read-only store: extract", "read-only run"])
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    trained = invoke("train", "--store", copy, "--epochs", 1, "--size", "tiny", "--json")
    assert trained.exit_code == 0, trained.output
    run = copy / "runs" / json.loads(trained.stdout)["run_id"]
    runs_before = sorted(path.name for path in (copy / "runs").iterdir())

    done = in_mount_namespace(read_only(copy) + f'"$AVVP" train --store {copy} --epochs 3')
    output = assert_refused(done, str(copy), "Read-only file system")
    assert "epoch 1" not in output
    assert sorted(path.name for path in (copy / "runs").iterdir()) == runs_before

    done = in_mount_namespace(
        read_only(copy) + f'"$AVVP" extract {labels_dir / "videos"} --store {copy} --size tiny'
    )
    assert_refused(done, "Read-only file system")

    done = in_mount_namespace(read_only(copy) + f'"$AVVP" evaluate {run}')
    assert_refused(done, str(run), "Read-only file system")


def test_a_full_disk_is_named_before_the_work_and_a_disk_filling_midway_leaves_whole_parts(
    labels_dir: Path, tmp_path: Path
) -> None:
    CASES.extend(["full disk before", "disk filling midway"])
    full = tmp_path / "full"
    full.mkdir()
    videos = labels_dir / "videos"
    done = in_mount_namespace(
        f"mount -t tmpfs -o size=32k tmpfs {full}; "
        f'"$AVVP" extract {videos} --store {full} --size tiny'
    )
    assert_refused(done, "No space left on device")

    # Room for the probe and a part or two, not for every table: the write that fails is
    # named, and whatever the store holds afterwards is whole (copied out before unmount).
    kept = tmp_path / "kept"
    done = in_mount_namespace(
        f"mount -t tmpfs -o size=100k tmpfs {full}; "
        f'"$AVVP" extract {videos} --store {full} --size tiny || code=$?; '
        f"cp -r {full} {kept}; exit ${{code:-0}}"
    )
    assert_refused(done, "No space left on device", "what was stored is kept")
    assert not list(kept.rglob(".tmp-*")), "a half-written file was left behind"
    assert check_store(kept) == []


def test_the_matrix_tried_every_case() -> None:
    print(f"\nbad-input matrix (stores, folders, text files): {len(CASES)} cases tried")
    assert len(CASES) >= 15, CASES
