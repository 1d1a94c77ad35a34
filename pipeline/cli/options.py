"""Options several commands share, spelled once, and the helpers that read them."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

DEFAULT_ROOT = "./avvp-data"


def writable_store(root: str | None) -> str | None:
    """Refuse a store that cannot be written (a file, a read-only or full disk) before
    any work starts (None: the command's default, checked when it is known)."""
    from ...storage import check_store_root

    if root is None:
        return None
    try:
        check_store_root(root)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return root


def writable_run(run: str) -> str:
    """Refuse a run folder whose results could not be written, before computing them."""
    from ...storage import check_store_root

    try:
        check_store_root(run, create=False)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    return run


STORE_HELP = "The store: a folder or fsspec URL."
StoreRoot = Annotated[str, typer.Option(metavar="STORE", help=STORE_HELP, callback=writable_store)]
ReadStoreRoot = Annotated[str, typer.Option(metavar="STORE", help=STORE_HELP)]
StoreArgument = Annotated[str, typer.Argument(metavar="STORE", help=STORE_HELP)]
KnownIds = Annotated[
    Path | None, typer.Option(metavar="DIR", help="LLP-format label folder whose ids are known.")
]
JsonOutput = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
Device = Annotated[str, typer.Option(metavar="DEVICE", help="auto, cpu, cuda, ...")]
DeviceOverride = Annotated[
    str | None, typer.Option(metavar="DEVICE", help="auto, cpu, cuda, ... \\[default: auto]")
]
RetryFailed = Annotated[
    bool,
    typer.Option(
        "--retry-failed",
        help="Try again the files that failed on an earlier run (by default they are "
        "skipped while unchanged).",
    ),
]


class Size(StrEnum):
    auto = "auto"
    tiny = "tiny"
    paper = "paper"


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave (not None): overrides over a config file's settings."""
    return {name: value for name, value in options.items() if value is not None}


def parse_weights(values: list[str]) -> dict[str, str]:
    """`--weights NAME=PATH` options as {extractor name: path}."""
    from ..catalog import extracted_sets

    known = extracted_sets()
    weights: dict[str, str] = {}
    for value in values:
        name, equals, path = value.partition("=")
        if not equals or not name or not path or name not in known:
            raise ValueError(
                f"--weights {value!r}: give NAME=PATH with NAME one of "
                f"{', '.join(known)}, e.g. --weights clip=~/weights/ViT-L-14.pt"
            )
        if name in weights:
            raise ValueError(f"--weights names {name!r} twice")
        weights[name] = path
    return weights


# `--preset` named four things before 0.2: the extractors' size, the training recipe, a
# released layout and the generation's size; `avvp demo --root` named the store. The old
# names stay, hidden, for one release.
OldPreset = Annotated[
    str | None, typer.Option("--preset", hidden=True, help="Deprecated name; see the warning.")
]
OldRoot = Annotated[
    str | None, typer.Option("--root", hidden=True, help="Deprecated name of --store.")
]


def renamed(value: Any, old_value: Any, new: str, old: str = "--preset") -> Any:
    """The value of option `new`, or of `old`, its deprecated name, with a warning."""
    if old_value is None:
        return value
    if value is not None:
        raise typer.BadParameter(f"give {new} only: {old} is its deprecated name")
    from .output import err_console

    err_console.print(
        f"[yellow]warning[/] {old} is now {new} here; {old} will stop working in the next release",
        highlight=False,
    )
    return old_value
