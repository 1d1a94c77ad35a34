"""Code versions: a stage's version follows the code it imports and nothing else."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import avvp
from avvp.pipeline.code_version import code_version

SOURCE_FILES = ("__init__.py", "contract.py")
SOURCE_FOLDERS = ("extractors", "model", "pipeline", "storage", "flows")


@pytest.fixture()
def package(tmp_path: Path) -> Path:
    """A copy of the avvp package's sources, free to edit."""
    installed = Path(avvp.__file__).parent
    copy = tmp_path / "avvp"
    copy.mkdir()
    for name in SOURCE_FILES:
        shutil.copy2(installed / name, copy / name)
    for name in SOURCE_FOLDERS:
        shutil.copytree(installed / name, copy / name, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def versions(package: Path, *modules: str) -> dict[str, str]:
    """The code version of each module, computed afresh (code_version caches by argument)."""
    code_version.cache_clear()
    return {module: code_version(module, package=package) for module in modules}


def append_comment(path: Path) -> None:
    with path.open("a") as file:
        file.write("# an edit that changes no behaviour\n")


def test_the_copy_has_the_installed_versions(package: Path) -> None:
    modules = ("avvp.pipeline.train", "avvp.pipeline.evaluate", "avvp.pipeline.extract")
    assert versions(package, *modules) == {module: code_version(module) for module in modules}


def test_the_report_plots_and_command_line_are_outside_the_versions_of_train_and_extract(
    package: Path,
) -> None:
    modules = ("avvp.pipeline.train", "avvp.pipeline.extract", "avvp.pipeline.reports.report")
    before = versions(package, *modules)
    for name in ("reports/report.py", "reports/plots.py", "cli/app.py", "cli/train.py"):
        append_comment(package / "pipeline" / name)
    after = versions(package, *modules)
    assert after["avvp.pipeline.train"] == before["avvp.pipeline.train"]
    assert after["avvp.pipeline.extract"] == before["avvp.pipeline.extract"]
    assert after["avvp.pipeline.reports.report"] != before["avvp.pipeline.reports.report"]


def test_an_edit_of_the_network_changes_the_training_version(package: Path) -> None:
    before = versions(package, "avvp.pipeline.train")
    append_comment(package / "model" / "mmcse.py")
    assert versions(package, "avvp.pipeline.train") != before


def test_a_module_outside_the_package_is_refused(package: Path) -> None:
    with pytest.raises(ValueError, match="not a module"):
        code_version("avvp.pipeline.no_such_stage", package=package)


def test_an_edit_of_the_viewers_script_changes_the_parse_version(package: Path) -> None:
    before = versions(package, "avvp.pipeline.parse")
    with (package / "pipeline" / "reports" / "viewer.js").open("a") as file:
        file.write("// an edit of the page's script\n")
    assert versions(package, "avvp.pipeline.parse") != before
