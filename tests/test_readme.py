"""The README's examples of reading the store as plain Parquet run as written."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from support import REPO

from avvp.pipeline.synthetic.features import SyntheticLLPConfig, write_synthetic_llp

SECTION = "### Reading the store with pandas, polars and DuckDB"


def readme_python_blocks() -> list[str]:
    """The Python blocks of the README's section on reading the store."""
    text = (REPO / "README.md").read_text()
    after = text[text.index(SECTION) + len(SECTION) :]
    section = re.split(r"\n#{2,3} ", after, maxsplit=1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


@pytest.fixture()
def beside_a_store(tmp_path: Path) -> Path:
    """A working folder holding `avvp-data/`, with the tables the demo writes."""
    write_synthetic_llp(
        str(tmp_path / "avvp-data"), SyntheticLLPConfig(n_train=8, n_val=4, n_test=4)
    )
    cwd = Path.cwd()
    os.chdir(tmp_path)
    yield tmp_path
    os.chdir(cwd)


def test_the_readme_parquet_examples_run_as_written_and_read_the_store(beside_a_store) -> None:
    (block,) = readme_python_blocks()
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # the README's own example

    assert scope["clip"].shape == (16, 10, 768)
    assert scope["features"].shape == (16, 10, 768)
    assert (scope["features"] == scope["clip"]).all()
    assert scope["per_video"].height == 16
    rows = scope["rows"]
    assert len(rows) == 4 and {row[0] for row in rows} == {"test"}
    assert all(row[2] == 0 and row[3] == 10 for row in rows)
