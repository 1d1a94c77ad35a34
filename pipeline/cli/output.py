"""What every command shares on its way out: the consoles, the exit codes, stage errors
and warnings as one plain line, the metrics table and progress (a bar on a terminal, lines
in a log)."""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

# Lines are not broken at the terminal width: paths and commands stay copyable.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2

# The official evaluation skips these rows too; the warning's long list of rows belongs
# in LLPAnnotations.ignored_rows, not on a user's console.
IGNORED_ANNOTATIONS_NOTE = (
    "note: some rows of the LLP annotation files match no val/test video or cover no "
    "segment; they are ignored, as the official evaluation ignores them"
)

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn the errors our stages raise for bad input, and a disk that cannot be written,
    into one readable line and exit 2, and every warning raised meanwhile into one plain
    line on standard error.

    Stages raise ValueError / FileNotFoundError / KeyError subclasses with messages that
    name the file and the fix; a traceback would only hide that message, and a raw
    Python warning shows module paths and source lines a user has no use for.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return func(*args, **kwargs)
            except (ValueError, FileNotFoundError, KeyError) as exc:
                message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
                if isinstance(exc, ValidationError):
                    message = settings_errors(exc)
                err_console.print(f"[bold red]error:[/] {message}", highlight=False)
                raise typer.Exit(EXIT_USAGE) from None
            except OSError as exc:
                # A disk that fills or turns read-only mid-run: what is stored stays whole
                # (parts and run files are published by rename), so say what and where.
                where = f"{exc.filename}: " if exc.filename else ""
                err_console.print(
                    f"[bold red]error:[/] {where}{exc.strerror or exc}; free space, fix the "
                    "folder's permissions or choose another folder, then run again (what was "
                    "stored is kept)",
                    highlight=False,
                )
                raise typer.Exit(EXIT_USAGE) from None
            finally:
                print_warnings(caught)

    return wrapper  # type: ignore[return-value]


def settings_errors(error: ValidationError) -> str:
    """A config's validation errors as `field: message` lines, without pydantic's links."""
    lines = []
    for problem in error.errors():
        where = " ".join([error.title, ".".join(str(part) for part in problem["loc"])]).strip()
        lines.append(f"{where}: {problem['msg'].removeprefix('Value error, ')}")
    return "; ".join(lines)


def print_warnings(caught: list[warnings.WarningMessage]) -> None:
    """Each distinct warning once, as one line in plain words."""
    from ..sources.llp import IgnoredAnnotationWarning

    lines = []
    for warning in caught:
        if issubclass(warning.category, IgnoredAnnotationWarning):
            lines.append(IGNORED_ANNOTATIONS_NOTE)
        elif not issubclass(warning.category, DeprecationWarning | PendingDeprecationWarning):
            first = str(warning.message).strip().splitlines()
            lines.append(f"warning: {first[0] if first else warning.category.__name__}")
    for line in dict.fromkeys(lines):
        err_console.print(line, style="yellow", highlight=False)


def metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> Table:
    """The eleven AVVP metrics as rows, one column per predictor (fits 80 columns)."""
    from ..evaluate import METRIC_KEYS

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name in metrics:
        table.add_column(name, justify="right")
    for key in METRIC_KEYS:
        style = "bold" if key == "Avg" else None
        table.add_row(key, *(f"{values[key]:.1f}" for values in metrics.values()), style=style)
    return table


class ProgressDisplay:
    """Progress on standard error, whatever it is: on a terminal, a bar per node with
    its counts, rate and time left, and the other lines printed above the bars; in a
    log or a pipe, every line, count lines included (a node's `Reporter` writes one at
    least every few seconds). Give `emit` and `count` to a runner or a `Reporter`."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskID,
            TextColumn,
            TimeRemainingColumn,
        )

        self.bar = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[noun]}"),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            )
            if err_console.is_terminal
            else None
        )
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> ProgressDisplay:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def emit(self, level: str, message: str) -> None:
        if self.bar is not None and level == "progress":
            return  # the bar shows the counts
        console = self.bar.console if self.bar is not None else err_console
        console.print(message, style="yellow" if level == "warning" else None, highlight=False)

    def count(self, node: str, done: int, total: int, noun: str) -> None:
        if self.bar is None:
            return
        if node not in self.tasks:
            self.tasks[node] = self.bar.add_task(node, total=total, noun=noun)
        self.bar.update(self.tasks[node], completed=done, total=total)
