"""The `avvp` command line: one command per stage, each a thin shell over a stage function.

Exit codes (DESIGN.md): 0 all good, 1 some inputs failed (the rest was done),
2 usage or configuration error.

Results go to standard output (a table, or one JSON object with --json); progress,
notes and warnings go to standard error, so `--json` output can be piped as it is.
Long work shows a progress bar on a terminal and one line per step otherwise (a log
file gets no bar redrawn a thousand times).

This module assembles the commands, in the order `avvp --help` lists them; each group of
commands lives in a module of its own, the options they share in options.py and the
output they share in output.py.
"""

from __future__ import annotations

import inspect
from typing import Annotated

import typer

from ... import __version__
from . import extract, flows, labels, parse, release, store, synth, train
from .memory import use_one_malloc_arena
from .output import console

# Before torch is imported and its threads allocate (pipeline/cli/memory.py).
use_one_malloc_arena()

app = typer.Typer(
    help="avvp: raw videos to audio-visual event timelines (LLP, VALOR, MM-CSE).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

for name, command in (
    ("demo", flows.demo),
    ("evaluate-predictions", train.evaluate_predictions),
    ("train", train.train),
    ("evaluate", train.evaluate),
    ("import-checkpoint", train.import_checkpoint),
    ("infer-features", train.infer_features),
    ("profile", train.profile),
    ("import-labels", release.import_labels),
    ("extract", extract.extract),
    ("catalog", extract.catalog),
    ("fetch-valor", release.fetch_valor),
    ("import-features", release.import_features),
    ("run", flows.run_flow),
    ("serve", flows.serve),
    ("parse", parse.parse),
    ("report", train.report),
):
    app.command(name)(command)
app.add_typer(store.store_app, name="store")
app.add_typer(synth.synth_app, name="synth")
app.add_typer(labels.labels_app, name="pseudo-labels")


def _paragraphs(text: str) -> str:
    """A docstring's paragraphs, each on one line: Typer keeps the line breaks of all
    but the first, which shows a source line's end as a break in `--help`."""
    return "\n\n".join(" ".join(part.split()) for part in inspect.cleandoc(text).split("\n\n"))


for info in [
    *app.registered_commands,
    *(
        command
        for group in app.registered_groups
        for command in group.typer_instance.registered_commands
    ),
]:
    doc = info.help or (info.callback.__doc__ if info.callback else None)
    if doc:
        info.help = _paragraphs(doc)


def _version(value: bool) -> None:
    if value:
        console.print(f"avvp {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show version.")
    ] = False,
) -> None:
    """avvp: raw videos to audio-visual event timelines."""
