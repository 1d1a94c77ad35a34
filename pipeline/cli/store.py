"""`avvp store info|check|compact`: a store's tables, its unreadable parts, its parts merged."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from .options import JsonOutput, StoreArgument
from .output import EXIT_SOME_FAILED, console, err_console, user_errors

store_app = typer.Typer(
    help="Inspect, check and compact a feature/label store.", no_args_is_help=True
)


@store_app.command("info")
@user_errors
def store_info(
    root: StoreArgument,
    as_json: JsonOutput = False,
) -> None:
    """List the tables of a store (kind, rows, videos, shape, dtype, provenance) and its
    failures."""
    from ...storage import store_info as read_store_info

    info = read_store_info(root)
    if as_json:
        typer.echo(json.dumps(info))
        return
    rows = [
        [
            name,
            entry["kind"],
            str(entry["rows"]),
            str(entry["videos"]),
            "x".join(map(str, entry["shape"])),
            entry["dtype"],
            " ".join(str(entry["provenance"].get(k, "")) for k in ("source", "version")).strip(),
        ]
        for name, entry in sorted(info["tables"].items())
    ]
    rows += [
        [f"failures/{stage}", "failures", str(count), str(count), "", "", ""]
        for stage, count in sorted(info["failures"].items())
    ]
    if info["videos"]:
        rows.append(
            ["videos/manifest", "videos", str(info["videos"]), str(info["videos"])] + [""] * 3
        )
    # Names are what a user types next: never cut. The provenance column gives way when
    # the table is wider than the console (--json has all of it); the short columns fold
    # before a name would.
    widths = [
        max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(STORE_COLUMNS)
    ]
    with_made_by = sum(widths) + 2 * len(widths) <= console.width
    console.print(store_table(info["root"], rows, with_made_by))


STORE_COLUMNS = ("table", "kind", "rows", "videos", "shape", "dtype", "made by")


@store_app.command("compact")
@user_errors
def store_compact(root: StoreArgument) -> None:
    """Merge each feature and label table's parts into one (fingerprints and rows
    unchanged) and remove temporary files that writers killed over an hour ago left."""
    from ...storage import compact_store

    done = compact_store(root)
    for table in done:
        if table.parts_merged or table.temporary_removed:
            console.print(
                f"{table.table}: {table.parts_merged} parts merged into one, "
                f"{table.temporary_removed} temporary files removed",
                highlight=False,
            )
    merged = sum(table.parts_merged for table in done)
    console.print(f"{root}: {len(done)} tables, {merged} parts merged", highlight=False)


@store_app.command("check")
@user_errors
def store_check(
    root: StoreArgument,
    repair: Annotated[
        bool, typer.Option(help="Move unreadable parts to STORE/broken/ (asks first).")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Repair without asking.")] = False,
) -> None:
    """Find table parts that cannot be read (a cut, empty or foreign file); with --repair,
    move them out of the store's tables so the steps that wrote them can run again.
    Exit 1 while unreadable parts remain."""
    from ...storage import check_store, set_aside

    broken = check_store(root)
    for part in broken:
        err_console.print(f"unreadable: {part.path}: {part.reason}", highlight=False)
    if not broken:
        console.print(f"{root}: every part is readable")
        return
    if repair and (yes or typer.confirm(f"Move {len(broken)} unreadable part(s) aside?")):
        folder = set_aside(root, broken)
        console.print(
            f"moved {len(broken)} unreadable part(s) to {folder}; re-run the steps that "
            "wrote them (their rows are missing now)"
        )
        return
    raise typer.Exit(EXIT_SOME_FAILED)


def store_table(root: str, rows: list[list[str]], with_made_by: bool) -> Table:
    # No vertical rules: two spaces between columns leave the names room in 80 columns.
    table = Table(title=f"store {root}", title_justify="left", box=box.SIMPLE_HEAD)
    name, *short, made_by = STORE_COLUMNS
    table.add_column(name, no_wrap=True, min_width=max((len(row[0]) for row in rows), default=5))
    for column in short:
        table.add_column(column, no_wrap=True)
    if with_made_by:
        table.add_column(made_by, overflow="fold")
    for row in rows:
        table.add_row(*(row if with_made_by else row[:-1]))
    return table
