"""`avvp parse`: new videos of any length parsed with a trained run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from .options import Device, JsonOutput, RetryFailed, parse_weights
from .output import EXIT_SOME_FAILED, ProgressDisplay, console, err_console, user_errors


@user_errors
def parse(
    folder: Annotated[
        list[Path], typer.Argument(metavar="DIR...", help="Video folders and/or files.")
    ],
    run: Annotated[str, typer.Option(metavar="RUN", help="A trained run folder.")],
    out: Annotated[Path, typer.Option(metavar="DIR", help="Where events and timelines go.")] = Path(
        "./avvp-parsed"
    ),
    store: Annotated[
        str | None,
        typer.Option(metavar="STORE", help="The new videos' feature store \\[default: OUT/store]."),
    ] = None,
    threshold: Annotated[
        float, typer.Option(metavar="P", help="Segment and video-level threshold.")
    ] = 0.5,
    weights: Annotated[
        list[str] | None,
        typer.Option(metavar="NAME=PATH", help="Weight file of an extractor (repeat)."),
    ] = None,
    device: Device = "auto",
    timelines: Annotated[
        bool, typer.Option(help="Draw timelines/<video_id>.png per video.")
    ] = True,
    retry_failed: RetryFailed = False,
    as_json: JsonOutput = False,
) -> None:
    """Parse new videos of any length with a trained run: events, videos.csv, timelines.

    Runs the parse-folder chain here: extracts, with the run's extractors, only the
    windows its store lacks (a store of its own, OUT/store by default: never the
    training store), then parses. Exit 1 when some files failed (the rest is parsed),
    2 for usage errors.
    """
    from ..chain import PARSE_FOLDER, ParseFolderConfig, run_local

    params = ParseFolderConfig(
        videos=[str(path) for path in folder],
        run=run,
        out=str(out),
        store=store,
        threshold=threshold,
        config={
            "device": device,
            "weights": parse_weights(weights) if weights else {},
            "timelines": timelines,
            "extract": {"retry_failed": True} if retry_failed else {},
        },
    )
    with ProgressDisplay() as progress:
        summary = run_local(PARSE_FOLDER, params, progress.emit, progress.count)
    result = summary.parse
    if as_json:
        typer.echo(result.model_dump_json())
    else:
        table = Table(title=f"parsed into {result.out}", title_justify="left", box=box.SIMPLE_HEAD)
        for column in ("video", "status", "duration", "windows", "events", "reason"):
            table.add_column(column, overflow="fold")
        for video in result.videos:
            duration = "" if video.duration_s is None else f"{video.duration_s:.1f} s"
            status = "[green]ok[/]" if video.status == "ok" else "[red]failed[/]"
            table.add_row(
                video.video_id,
                status,
                duration,
                str(video.windows),
                str(video.events),
                video.reason,
            )
        # Outside a terminal (a file, a pipe) rows are never wrapped: each stays one line.
        width = None if console.is_terminal else console.measure(table).maximum
        console.print(table, width=width)
        counts = ", ".join(f"{n} {modality}" for modality, n in result.events.items())
        console.print(
            f"{len(result.videos) - len(result.failed)} of {len(result.videos)} files parsed; "
            f"events: {counts}; {result.out}/events.csv, videos.csv, timelines/; to watch "
            f"them: open {result.out}/index.html in a browser",
            highlight=False,
        )
    # As `avvp extract` words them: a file parsed only in part (cut short), for one.
    for warning in summary.warnings:
        err_console.print(f"[yellow]warning[/] {warning}", highlight=False)
    if not summary.ok:
        raise typer.Exit(EXIT_SOME_FAILED)
