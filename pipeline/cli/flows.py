"""`avvp demo`, `avvp run` and `avvp serve`: the chains, on Prefect or without it (the
only commands that import the flows, DESIGN.md)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from .options import (
    DEFAULT_ROOT,
    Device,
    JsonOutput,
    OldPreset,
    OldRoot,
    RetryFailed,
    Size,
    given,
    renamed,
    writable_store,
)
from .output import (
    EXIT_SOME_FAILED,
    ProgressDisplay,
    console,
    err_console,
    metrics_table,
    user_errors,
)


class DemoSource(StrEnum):
    clips = "clips"
    features = "features"


@user_errors
def demo(
    store: Annotated[
        str | None,
        typer.Option(
            metavar="STORE", help="The store: a folder or fsspec URL \\[default: ./avvp-data]."
        ),
    ] = None,
    epochs: Annotated[
        int | None,
        typer.Option(metavar="N", help="Epochs per model \\[default: 60 from clips, 15 features]."),
    ] = None,
    device: Device = "auto",
    size: Annotated[
        Size, typer.Option(help="Network sizes: auto (tiny on CPU, paper on GPU), tiny, paper.")
    ] = Size.auto,
    source: Annotated[
        DemoSource,
        typer.Option(help="clips: decode and extract synthetic clips; features: skip both."),
    ] = DemoSource.clips,
    clips: Annotated[int, typer.Option(metavar="N", help="Number of synthetic clips.")] = 200,
    root: OldRoot = None,
) -> None:
    """Synthetic clips -> features -> MM-CSE and VALOR trained and scored, offline.

    From clips, the extract-and-train flow runs in this process (Prefect's embedded
    API) once per model: the second run finds the features stored. From features, the
    same chain runs without Prefect.
    """
    from ..synthetic.demo import DEMO_EPOCHS, run_demo

    chain_runner = None
    if source == DemoSource.clips:
        from ...flows.runner import run_extract_and_train as chain_runner

    result = run_demo(
        renamed(store, root, "--store", old="--root") or DEFAULT_ROOT,
        epochs=DEMO_EPOCHS[source.value] if epochs is None else epochs,
        device=device,
        size=size.value,
        on_step=lambda message: err_console.print(message, highlight=False),
        source=source.value,
        n_clips=clips,
        run_chain=chain_runner,
    )
    sizes = ", ".join(f"{n} {split}" for split, n in result.num_videos.items())
    console.print(f"store: [bold]{result.root}[/]  videos: {sizes}")
    for model, run in result.runs.items():
        console.print(f"{model} run: {run}", highlight=False)
    console.print(metrics_table(f"test split of the synthetic {source.value}", result.metrics))


class TaskRunnerChoice(StrEnum):
    default = "default"
    dask = "dask"


class ChainRunnerChoice(StrEnum):
    prefect = "prefect"
    local = "local"


def print_chain_summary(summary: Any) -> None:
    """What one chain run did, node by node, then its failures, warnings and metrics."""
    for outcome in summary.nodes:
        console.print(f"{outcome.node} ({outcome.status}): {outcome.line}", highlight=False)
    console.print(f"summary: {summary.summary_file}", highlight=False)
    for failure in summary.failures:
        err_console.print(f"[red]failed:[/] {failure.path}: {failure.reason}", highlight=False)
    for warning in summary.warnings:
        err_console.print(f"warning: {warning}", style="yellow", highlight=False)
    metrics = getattr(summary, "metrics", None)
    if metrics:
        console.print(metrics_table("metrics", metrics))


@user_errors
def run_flow(
    videos: Annotated[
        list[str] | None,
        typer.Option(metavar="PATH", help="A video folder or file (repeat for several)."),
    ] = None,
    labels: Annotated[
        str | None,
        typer.Option(metavar="DIR", help="LLP-format annotation files (default: vendored LLP)."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            metavar="STORE", help="The store: a folder or fsspec URL.", callback=writable_store
        ),
    ] = None,
    extractor_size: Annotated[
        str | None, typer.Option(metavar="SIZE", help="The extractors' sizes: paper or tiny.")
    ] = None,
    pseudo_labels: Annotated[
        str | None,
        typer.Option(metavar="SOURCE", help="valor (fetched), dense, generated, or a stored one."),
    ] = None,
    model: Annotated[str | None, typer.Option(metavar="MODEL", help="mmcse or valor.")] = None,
    epochs: Annotated[int | None, typer.Option(metavar="N", help="Training epochs.")] = None,
    config: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="TOML/YAML/JSON file of the flow's parameters."),
    ] = None,
    runner: Annotated[
        ChainRunnerChoice,
        typer.Option(help="prefect: the flow (embedded API); local: the same chain, no Prefect."),
    ] = ChainRunnerChoice.prefect,
    task_runner: Annotated[
        TaskRunnerChoice,
        typer.Option(help="prefect: default runs tasks one at a time; dask: shards on a cluster."),
    ] = TaskRunnerChoice.default,
    dask_address: Annotated[
        str | None,
        typer.Option(metavar="ADDR", help="An existing Dask scheduler, e.g. tcp://host:8786."),
    ] = None,
    dask_workers: Annotated[
        int | None, typer.Option(metavar="N", help="Workers of the local Dask cluster.")
    ] = None,
    retry_failed: RetryFailed = False,
    as_json: JsonOutput = False,
    preset: OldPreset = None,
) -> None:
    """Run the extract-and-train chain in this process (the flow on Prefect's embedded
    API, or with --runner local the same chain without Prefect).

    The same flow as `prefect deployment run 'extract-and-train/default'` after
    `avvp serve`; parameters mirror its --param names. Only what the store lacks is
    done. Exit 1 when some inputs failed (the rest was done).
    """
    from ..chain import EXTRACT_AND_TRAIN, ChainConfig, run_local
    from ..sources.config_files import load_config

    overrides = given(
        videos=videos,
        labels=labels,
        store=store,
        extractor_size=renamed(extractor_size, preset, "--extractor-size"),
        pseudo_labels=pseudo_labels,
        model=model,
        epochs=epochs,
        config={"extract": {"retry_failed": True}} if retry_failed else None,
    )
    chain = load_config(ChainConfig, config, overrides)
    if runner == ChainRunnerChoice.local:
        with ProgressDisplay() as progress:
            summary = run_local(EXTRACT_AND_TRAIN, chain, progress.emit, progress.count)
    else:
        from ...flows.runner import run_extract_and_train

        summary = run_extract_and_train(chain, task_runner.value, dask_address, dask_workers)
    if as_json:
        typer.echo(summary.model_dump_json())
    else:
        print_chain_summary(summary)
    if not summary.ok:
        raise typer.Exit(EXIT_SOME_FAILED)


@user_errors
def serve(
    api_url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="The Prefect API, e.g. http://127.0.0.1:4200/api \\[default: PREFECT_API_URL].",
        ),
    ] = None,
    task_runner: Annotated[
        TaskRunnerChoice, typer.Option(help="Task runner of the served flows.")
    ] = TaskRunnerChoice.default,
    dask_address: Annotated[
        str | None, typer.Option(metavar="ADDR", help="An existing Dask scheduler.")
    ] = None,
) -> None:
    """Serve the deployments extract-and-train/default and parse-folder/default.

    Start a server first (`prefect server start`), then run a deployment with
    `prefect deployment run 'extract-and-train/default' --param videos=DIR ...`.
    Stop with Ctrl-C.
    """
    import os

    if api_url:
        os.environ["PREFECT_API_URL"] = api_url
    if not os.environ.get("PREFECT_API_URL"):
        raise ValueError(
            "no Prefect server to serve to: start one with `prefect server start` and give "
            "its API with --api-url http://127.0.0.1:4200/api (or set PREFECT_API_URL); "
            "`avvp run` runs the flow here without a server"
        )
    from ...flows.runner import serve_deployments

    serve_deployments(task_runner.value, dask_address)
