"""Progress in every mode: a count line at least every few seconds in a log even while
no item finishes, a bar on a terminal, "nothing to extract" said as such, and the
settings of a run checked without building a network."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from avvp.extractors import create_extractor
from avvp.pipeline.chain import Reporter
from avvp.pipeline.cli import output
from avvp.pipeline.cli.app import app
from avvp.pipeline.embedding import configured_provenance, feature_provenance
from avvp.pipeline.extract import ExtractConfig
from avvp.pipeline.synthetic.clips import write_synthetic_clips


def test_a_running_node_says_its_counts_while_no_item_finishes() -> None:
    lines: list[tuple[str, str]] = []
    said = threading.Event()

    def emit(level: str, line: str) -> None:
        lines.append((level, line))
        said.set()

    reporter = Reporter("extract", 3, "videos", emit, every_s=0.05)
    with reporter.running():
        # A first video that takes long (a model being built): the log still hears.
        assert said.wait(timeout=30)
    level, line = lines[0]
    assert level == "progress"
    assert line.startswith("extract: 0/3 videos, ") and line.endswith(" so far")
    quiet = len(lines)
    threading.Event().wait(0.2)
    assert len(lines) == quiet  # nothing after the node ended


def test_a_terminal_shows_a_bar_and_a_log_every_line(monkeypatch: pytest.MonkeyPatch) -> None:
    for terminal in (True, False):
        stream = io.StringIO()
        console = Console(file=stream, force_terminal=terminal, width=100)
        monkeypatch.setattr(output, "err_console", console)
        with output.ProgressDisplay() as progress:
            reporter = Reporter(
                "extract", 2, "videos", progress.emit, every_s=0, on_count=progress.count
            )
            reporter.advance("a")
            reporter.warn("failed b.mp4: empty file")
            reporter.advance("b")
        shown = stream.getvalue()
        assert "extract: failed b.mp4: empty file" in shown
        if terminal:
            assert progress.bar is not None and list(progress.tasks) == ["extract"]
            task = progress.bar.tasks[0]
            assert (task.completed, task.total) == (2, 2)
            assert "2/2 videos, " not in shown  # the bar shows the counts
        else:
            assert progress.bar is None
            assert "extract: 1/2 videos, " in shown and "extract: 2/2 videos, " in shown


@pytest.mark.parametrize("size", ["tiny"])
def test_the_provenance_of_configured_extractors_is_that_of_the_built_ones(size: str) -> None:
    config = ExtractConfig(size=size)
    found = configured_provenance(config, "float16")
    assert list(found) == config.extractors
    for name in config.extractors:
        built = create_extractor(name, size=size, device="cpu")
        assert found[name].differences(feature_provenance(built, "float16")) == []


def test_extract_again_says_nothing_to_extract_and_counts_only_what_it_decodes(
    tmp_path: Path,
) -> None:
    write_synthetic_clips(tmp_path / "clips", n=2, seconds=3)
    videos, store = tmp_path / "clips" / "videos", tmp_path / "store"
    command = ["extract", str(videos), "--store", str(store), "--size", "tiny"]
    first = CliRunner().invoke(app, [*command, "--extractors", "clip"])
    assert first.exit_code == 0, first.output
    assert "extract: 2/2 videos, " in first.stderr
    assert first.stdout.startswith("2 videos: 0 already stored, 2 extracted, 0 failed")
    again = CliRunner().invoke(app, [*command, "--extractors", "clip"])
    assert again.exit_code == 0, again.output
    assert again.stdout.startswith(
        "nothing to extract; 2 videos: 2 already stored, 0 extracted, 0 failed"
    )
    assert "windows written" not in again.stdout and "2/2" not in again.stderr
