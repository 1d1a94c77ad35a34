"""`avvp import-labels`, `fetch-valor` and `import-features`: LLP's labels and released
features (and VALOR's pseudo-labels) into the store."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..catalog import release_layouts
from .options import DEFAULT_ROOT, JsonOutput, KnownIds, OldPreset, StoreRoot, given, renamed
from .output import EXIT_SOME_FAILED, console, err_console, user_errors


@user_errors
def import_labels(
    store: StoreRoot = DEFAULT_ROOT,
    labels: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Folder of LLP-format files (default: vendored LLP)."),
    ] = None,
) -> None:
    """Write LLP weak labels (with splits) and dense annotations into the label store."""
    from ..release import import_llp_labels

    result = import_llp_labels(store, labels)
    for line in result.lines():
        console.print(line, highlight=False)


def print_skipped(skipped: list[Any]) -> None:
    """One line per released file that was not imported, on standard error."""
    from ..release import describe_skipped

    for line in describe_skipped(skipped):
        err_console.print(f"[yellow]skipped[/] {line}", highlight=False)


def import_line(result: Any) -> str:
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    replaced = f", {result.replaced} replaced" if result.replaced else ""
    return (
        f"{result.table}: {result.imported} videos imported{replaced}, {result.already_stored} "
        f"already stored{skipped}"
    )


def label_rows_line(table: str, written: int, replaced: int, unchanged: int, unit: str) -> str:
    """'<table>: N <unit> written, M replaced, K unchanged' for a label write."""
    return f"{table}: {written} {unit} written, {replaced} replaced, {unchanged} unchanged"


@user_errors
def fetch_valor(
    store: StoreRoot = DEFAULT_ROOT,
    url: Annotated[
        list[str] | None,
        typer.Option(
            metavar="URL",
            help="An archive's URL, once per archive (default: CLIP.zip and CLAP.zip of the "
            "Hugging Face dataset NTUBarista/valor_features).",
        ),
    ] = None,
    from_zip: Annotated[
        list[Path] | None,
        typer.Option(metavar="ZIP", help="A local CLIP.zip / CLAP.zip, instead of downloading."),
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Where downloads are kept \\[default: ~/.cache/avvp/downloads]."
        ),
    ] = None,
    sha256: Annotated[
        list[str] | None,
        typer.Option(metavar="HEX", help="Expected digest of each archive, in their order."),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="LLP-format label folder (default: the vendored LLP)."),
    ] = None,
    features: Annotated[
        bool,
        typer.Option(
            help="Import the features too; --no-features: only the pseudo-labels (a store "
            "of features extracted from the videos)."
        ),
    ] = True,
    as_json: JsonOutput = False,
) -> None:
    """Download VALOR's released CLIP and CLAP features and pseudo-labels into the store.

    The archives are read in place (nothing is extracted to disk); downloads resume
    after an interruption. Writes clip-vit-l-14, clap-htsat-fusion, the `valor`
    pseudo-labels and LLP's labels, or nothing when an archive is damaged. Exit 1 when
    some files were skipped or an archive could not be used.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from ..sources.download import DownloadError
    from ..valor import CorruptArchiveError, FetchConfig, fetch_valor

    fetch_config = FetchConfig(
        **given(
            urls=url,
            from_zips=[str(path) for path in from_zip] if from_zip else None,
            cache=str(cache) if cache else None,
            sha256=sha256,
            labels=str(labels) if labels else None,
        ),
        features=features,
    )
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    # Started by the first mirror download only: huggingface_hub draws its own bar for
    # the Hub's files, which a live display would hold back until the download ends.
    progress = Progress(*columns, console=err_console, disable=not err_console.is_terminal)
    tasks: dict[str, Any] = {}

    def on_download(address: str, done: int, total: int | None) -> None:
        if not tasks:
            progress.start()
        if address not in tasks:
            tasks[address] = progress.add_task(address.rsplit("/", 1)[-1], total=total)
        progress.update(tasks[address], completed=done, total=total)

    try:
        result = fetch_valor(store, fetch_config, on_download=on_download)
    except (DownloadError, CorruptArchiveError) as error:
        # Failed inputs (exit 1), not usage errors: the same command works on good bytes.
        err_console.print(f"[bold red]error:[/] {error}", highlight=False)
        raise typer.Exit(EXIT_SOME_FAILED) from None
    finally:
        progress.stop()
    print_skipped(result.skipped)
    if as_json:
        typer.echo(json.dumps(result.model_dump()))
    else:
        for archive, digest in result.archives.items():
            console.print(f"{archive}: {digest}", highlight=False)
        for imported in result.features:
            console.print(import_line(imported), highlight=False)
        waiting = "".join(
            f", {count} without {modality} labels"
            for modality, count in result.labels.waiting.items()
        )
        for line in result.llp_labels.lines():
            console.print(line, highlight=False)
        joined = result.labels
        console.print(
            label_rows_line(
                "segment-valor",
                joined.videos_written,
                joined.videos_replaced,
                joined.videos_unchanged,
                "videos",
            )
            + waiting,
            highlight=False,
        )
        if result.missing_tables:
            console.print(
                f"`avvp train` also needs {', '.join(result.missing_tables)}: VALOR's release "
                "has no R(2+1)D features; import HAN's `r2plus1d_18` folder with `avvp "
                "import-features DIR --layout han-r2plus1d`"
                if result.missing_tables == ["r2plus1d-18"]
                else f"`avvp train` also needs {', '.join(result.missing_tables)}",
                highlight=False,
            )
        else:
            console.print(f"ready: `avvp train --store {store}`", highlight=False)
    if result.skipped:
        raise typer.Exit(EXIT_SOME_FAILED)


# The released layouts of the feature catalog, as the option's choices.
Layout = StrEnum("Layout", {name: name for name in release_layouts()})


@user_errors
def import_features(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A folder of <id>.npy files.")],
    store: StoreRoot = DEFAULT_ROOT,
    table: Annotated[
        str | None, typer.Option(metavar="NAME", help="Feature table \\[default: the layout's].")
    ] = None,
    layout: Annotated[
        Layout | None,
        typer.Option(help="A released layout: its table and shape (README: released data)."),
    ] = None,
    shape: Annotated[
        str | None, typer.Option(metavar="AxB", help="Shape of one file, e.g. 10x512.")
    ] = None,
    labels: KnownIds = None,
    preset: OldPreset = None,
) -> None:
    """Import a folder of released <id>.npy features (HAN's, VALOR's) into a feature table.

    Files with the wrong shape, NaN/Inf, an unreadable header or an unknown id are
    reported and skipped (exit 1); importing again does no work.
    """
    from ..release import ImportFeaturesConfig, import_features
    from ..sources.npy_files import parse_shape

    config = ImportFeaturesConfig(
        **given(
            table=table,
            layout=renamed(layout.value if layout else None, preset, "--layout"),
            shape=parse_shape(shape) if shape else None,
            labels=str(labels) if labels else None,
        )
    )
    result = import_features(folder, store, config)
    print_skipped(result.skipped)
    console.print(import_line(result), highlight=False)
    if result.skipped:
        raise typer.Exit(EXIT_SOME_FAILED)
