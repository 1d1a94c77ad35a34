"""`avvp pseudo-labels import|generate|dense|score`: segment pseudo-label sources."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from .options import (
    DEFAULT_ROOT,
    Device,
    JsonOutput,
    KnownIds,
    OldPreset,
    ReadStoreRoot,
    StoreRoot,
    given,
    parse_weights,
    renamed,
)
from .output import EXIT_SOME_FAILED, console, metrics_table, user_errors
from .release import import_line, label_rows_line, print_skipped

labels_app = typer.Typer(
    help="Segment pseudo-labels: import, generate (VALOR's zero-shot), dense, score.",
    no_args_is_help=True,
)


class Modality(StrEnum):
    audio = "audio"
    visual = "visual"


@labels_app.command("import")
@user_errors
def pseudo_labels_import(
    folder: Annotated[
        Path,
        typer.Argument(
            metavar="DIR", help="<id>.npy files of 10 x 25 0/1 labels, or audio/ and visual/."
        ),
    ],
    source: Annotated[str, typer.Option(metavar="NAME", help="The source's name.")],
    store: StoreRoot = DEFAULT_ROOT,
    modality: Annotated[
        Modality | None,
        typer.Option(help="The folder holds this modality only \\[default: audio/ and visual/]."),
    ] = None,
    labels: KnownIds = None,
) -> None:
    """Import segment pseudo-labels as source NAME (`avvp train --pseudo-labels NAME`).

    A folder of one modality waits for the other one: import both, in any order.
    """
    from ..release import ImportLabelsConfig, import_pseudo_labels

    config = ImportLabelsConfig(
        **given(
            source=source,
            modality=modality.value if modality else None,
            labels=str(labels) if labels else None,
        )
    )
    result = import_pseudo_labels(folder, store, config)
    skipped = result.skipped
    print_skipped(skipped)
    for staged in result.staged:
        console.print(import_line(staged), highlight=False)
    console.print(
        label_rows_line(
            f"segment-{result.source}",
            result.videos_written,
            result.videos_replaced,
            result.videos_unchanged,
            "videos",
        ),
        highlight=False,
    )
    for missing, count in result.waiting.items():
        console.print(
            f"{count} videos wait for their {missing} labels: `avvp pseudo-labels import DIR "
            f"--source {result.source} --modality {missing}`",
            highlight=False,
        )
    if skipped:
        raise typer.Exit(EXIT_SOME_FAILED)


@labels_app.command("generate")
@user_errors
def pseudo_labels_generate(
    store: StoreRoot = DEFAULT_ROOT,
    labels: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="LLP-format label folder: its weak labels are stored first (default: the "
            "store's weak labels).",
        ),
    ] = None,
    size: Annotated[
        str | None,
        typer.Option(
            metavar="SIZE", help="The extractors' size the embeddings were made with (paper)."
        ),
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=PATH",
            help="Weight file of clip or clap, as given to `avvp extract` (repeat).",
        ),
    ] = None,
    roberta: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Local roberta-base folder (CLAP's text tower)."),
    ] = None,
    device: Device = "auto",
    as_json: JsonOutput = False,
    preset: OldPreset = None,
) -> None:
    """VALOR's zero-shot pseudo-labels from stored CLIP and CLAP segment embeddings.

    Needs `avvp extract --extractors clip,clap-segments` first. Only videos with weak
    labels get pseudo-labels (the labels are restricted to the weak classes); videos
    without weak labels are counted and left out. Writes the source
    generated-<clip weights>+<clap weights>.
    """
    from ..pseudo_labels import GenerateConfig, generate_pseudo_labels

    if labels is not None:
        from ..release import import_llp_labels

        import_llp_labels(store, labels)
    config = GenerateConfig(
        **given(
            size=renamed(size, preset, "--size"),
            weights=parse_weights(weights) if weights else None,
            roberta=str(roberta) if roberta else None,
            device=device,
        )
    )
    result = generate_pseudo_labels(store, config)
    if as_json:
        typer.echo(json.dumps(result.model_dump()))
        return
    console.print(
        f"{result.table}: {result.videos_labelled} videos labelled ({result.windows_written} "
        f"windows written, {result.windows_replaced} replaced, {result.windows_unchanged} "
        f"unchanged), {result.videos_without_weak_labels} without weak labels, "
        f"{result.videos_missing_embeddings} missing an embedding table's rows",
        highlight=False,
    )
    console.print(
        f"train on them with `avvp train --store {store} --pseudo-labels {result.source}`",
        highlight=False,
    )


@labels_app.command("dense")
@user_errors
def pseudo_labels_dense(
    store: StoreRoot = DEFAULT_ROOT,
    labels: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="Output folder of `avvp synth clips` (its planted events; every split).",
        ),
    ] = None,
    annotations: Annotated[
        str,
        typer.Option(metavar="SET", help="Without --labels: the stored dense set to copy."),
    ] = "corrected",
) -> None:
    """The `dense` source: segment labels from dense annotations (an oracle upper bound,
    and the pseudo-labels of synthetic clips)."""
    from ..pseudo_labels import write_dense_source

    result = write_dense_source(store, labels_dir=labels, annotations=annotations)
    console.print(
        f"segment-{result.source} (from {result.origin}): {result.videos} videos, "
        f"{result.windows_written} windows written, {result.windows_replaced} replaced, "
        f"{result.windows_already_stored} unchanged",
        highlight=False,
    )


@labels_app.command("score")
@user_errors
def pseudo_labels_score(
    source: Annotated[str, typer.Option(metavar="NAME", help="The pseudo-label source.")],
    store: ReadStoreRoot = DEFAULT_ROOT,
    split: Annotated[str, typer.Option(metavar="SPLIT", help="val or test.")] = "test",
    annotations: Annotated[
        str | None,
        typer.Option(
            metavar="SET",
            help="Dense annotations: corrected, published, ... \\[default: corrected, or the "
            "only set stored].",
        ),
    ] = None,
    as_json: JsonOutput = False,
) -> None:
    """The official segment- and event-level F-scores of a pseudo-label source itself
    against dense annotations: which source is better, before training."""
    from ..pseudo_labels import score_label_source

    result = score_label_source(store, source, split=split, annotations=annotations)
    if as_json:
        typer.echo(json.dumps(result.model_dump()))
        return
    title = (
        f"pseudo-labels {result.source} on {result.split} ({result.videos} videos, "
        f"{result.annotations} annotations)"
    )
    console.print(metrics_table(title, {result.source: result.metrics}))
