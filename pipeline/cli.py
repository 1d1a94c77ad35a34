"""The `avvp` command line: one command per stage, each a thin shell over a stage function.

Exit codes (DESIGN.md): 0 all good, 1 some inputs failed (the rest was done),
2 usage or configuration error.
"""

from __future__ import annotations

import functools
import json
import time
import warnings
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from avvp import __version__

app = typer.Typer(
    help="avvp: raw videos to audio-visual event timelines (LLP, VALOR, MM-CSE).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
store_app = typer.Typer(help="Inspect a feature/label store.", no_args_is_help=True)
app.add_typer(store_app, name="store")

console = Console()
err_console = Console(stderr=True)

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_ROOT = "./avvp-data"

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(func: F) -> F:
    """Turn the errors our stages raise for bad input into one readable line and exit 2.

    Stages raise ValueError / FileNotFoundError / KeyError subclasses with messages that
    name the file and the fix; a traceback would only hide that message.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ValueError, FileNotFoundError, KeyError) as exc:
            message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
            err_console.print(f"[bold red]error:[/] {message}")
            raise typer.Exit(EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


class Annotations(StrEnum):
    corrected = "corrected"
    published = "published"


class FilterRule(StrEnum):
    mmcse = "mmcse"
    valor = "valor"


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


def metrics_table(title: str, metrics: dict[str, dict[str, float]]) -> Table:
    """The eleven AVVP metrics as rows, one column per predictor (fits 80 columns)."""
    from avvp.pipeline.evaluate import METRIC_KEYS

    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for name in metrics:
        table.add_column(name, justify="right")
    for key in METRIC_KEYS:
        style = "bold" if key == "Avg" else None
        table.add_row(key, *(f"{values[key]:.1f}" for values in metrics.values()), style=style)
    return table


@app.command()
@user_errors
def demo(
    root: Annotated[str, typer.Option(help="Store root (local path or fsspec URL).")] = (
        DEFAULT_ROOT
    ),
    epochs: Annotated[int, typer.Option(help="Training epochs per model.")] = 40,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    size: Annotated[
        str, typer.Option(help="Network sizes: auto (tiny on CPU, paper on GPU), tiny, paper.")
    ] = "auto",
    source: Annotated[
        str, typer.Option(help="clips (decode + extract, default) or features (skip both).")
    ] = "clips",
    clips: Annotated[int, typer.Option(help="Number of synthetic clips.")] = 200,
) -> None:
    """Synthetic clips -> features -> MM-CSE and VALOR trained and scored, offline."""
    from rich.progress import Progress

    from avvp.pipeline.demo import run_demo

    with Progress(console=console) as progress:
        tasks: dict[str, Any] = {}

        def on_step(message: str) -> None:
            console.log(message)

        def on_epoch(model: str, report: Any) -> None:
            if model not in tasks:
                tasks[model] = progress.add_task(f"training {model}", total=epochs)
            progress.update(tasks[model], advance=1)

        result = run_demo(
            root,
            epochs=epochs,
            device=device,
            size=size,
            on_step=on_step,
            on_epoch=on_epoch,
            source=source,
            n_clips=clips,
        )
    sizes = ", ".join(f"{n} {split}" for split, n in result.num_videos.items())
    console.print(f"store: [bold]{result.root}[/]  videos: {sizes}")
    for model, run in result.runs.items():
        console.print(f"{model} run: {run}")
    console.print(metrics_table(f"test split of the synthetic {source}", result.metrics))


@app.command("evaluate-predictions")
@user_errors
def evaluate_predictions(
    pred: Annotated[Path, typer.Argument(help="PRED.npz (DESIGN.md exchange format).")],
    annotations: Annotated[
        Annotations, typer.Option(help="LLP audio annotation file to score against.")
    ] = Annotations.corrected,
    filter_rule: Annotated[
        FilterRule,
        typer.Option("--filter", help="Video-level filter of segment predictions."),
    ] = FilterRule.mmcse,
    labels_dir: Annotated[
        Path | None,
        typer.Option(help="Folder with LLP-format label files (default: the vendored LLP)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Score a prediction file with the official AVVP metrics."""
    from avvp.pipeline.evaluate import evaluate_prediction_file, format_metrics_table
    from avvp.pipeline.llp import IgnoredAnnotationWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", IgnoredAnnotationWarning)
        metrics = evaluate_prediction_file(
            pred,
            annotations=annotations.value,
            filter_rule=filter_rule.value,
            labels_dir=labels_dir,
        )
    if any(issubclass(w.category, IgnoredAnnotationWarning) for w in caught):
        # The official evaluation skips these rows too; one line instead of a long list.
        err_console.print(
            "note: annotation rows that match no val/test video or cover no segment are "
            "ignored, as the official evaluation ignores them (LLPAnnotations.ignored_rows)"
        )
    if as_json:
        typer.echo(json.dumps(metrics))
    else:
        typer.echo(format_metrics_table(metrics))


@store_app.command("info")
@user_errors
def store_info(
    root: Annotated[str, typer.Argument(help="Store root (local path or fsspec URL).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List the tables of a store: kind, rows, videos, shape, dtype, provenance."""
    from avvp.storage import store_info as read_store_info

    info = read_store_info(root)
    if as_json:
        typer.echo(json.dumps(info))
        return
    table = Table(title=f"store {info['root']}", title_justify="left")
    for column in ("table", "kind", "rows", "videos", "shape", "dtype", "made by"):
        table.add_column(column)
    for name, entry in sorted(info["tables"].items()):
        provenance = entry.get("provenance", {})
        made_by = " ".join(str(provenance.get(k, "")) for k in ("source", "version")).strip()
        table.add_row(
            name,
            entry["kind"],
            str(entry["rows"]),
            str(entry["videos"]),
            "x".join(map(str, entry["shape"])),
            entry["dtype"],
            made_by,
        )
    console.print(table)


MODEL_ALIASES = {"mmcse": "mmcse-clapclip", "valor": "valor-clapclip"}


@app.command()
@user_errors
def train(
    store: Annotated[str, typer.Option(help="Store root with features and labels.")] = (
        DEFAULT_ROOT
    ),
    model: Annotated[
        str, typer.Option(help="mmcse, valor, or a preset name such as mmcse-vggish-resnet.")
    ] = "mmcse",
    config: Annotated[
        Path | None, typer.Option(help="TOML/YAML/JSON file of TrainConfig settings.")
    ] = None,
    preset: Annotated[str, typer.Option(help="paper (default) or official recipe.")] = "paper",
    epochs: Annotated[int | None, typer.Option(help="Override the number of epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override the batch size.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (CPU runs repeat exactly).")] = None,
    pseudo_labels: Annotated[
        str | None, typer.Option(help="Pseudo-label source (valor, synthetic, generated-...).")
    ] = None,
    annotations: Annotated[
        str | None, typer.Option(help="Dense annotations for validation (corrected, ...).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    force: Annotated[bool, typer.Option(help="Train again even if this run exists.")] = False,
) -> None:
    """Train a parser on stored features and labels -> runs/<id>/."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from avvp.pipeline.train import train as run_training
    from avvp.pipeline.train_config import load_train_config

    overrides: dict[str, Any] = {"model": MODEL_ALIASES.get(model, model), "device": device}
    scalars = {"epochs": epochs, "batch_size": batch_size, "seed": seed}
    overrides.update({k: v for k, v in scalars.items() if v is not None})
    data = {"pseudo_labels": pseudo_labels, "annotations": annotations}
    if data := {k: v for k, v in data.items() if v is not None}:
        overrides["data"] = data
    train_config = load_train_config(preset, config, overrides)

    columns = (
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task(
            f"training {train_config.model}", total=train_config.epochs, status=""
        )

        def on_epoch(report: Any) -> None:
            status = f"loss {report.loss:.4f}  val Seg-type {report.val['Seg-type']:.1f}"
            progress.update(task, advance=1, status=status)

        result = run_training(store, train_config, on_epoch=on_epoch, force=force)
    state = "reused the finished run" if result.reused else f"best epoch {result.best_epoch}"
    console.print(f"run: [bold]{result.run_url}[/] ({state})")
    console.print(metrics_table("validation (best epoch)", {train_config.model: result.best_val}))


@app.command()
@user_errors
def evaluate(
    run: Annotated[str, typer.Argument(help="Run folder, <store>/runs/<id>.")],
    split: Annotated[str, typer.Option(help="val or test.")] = "test",
    annotations: Annotated[
        str | None,
        typer.Option(help="corrected, published or synthetic (default: the run's own)."),
    ] = None,
    filter_rule: Annotated[
        FilterRule | None, typer.Option("--filter", help="Default: the model's own protocol.")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
) -> None:
    """Score a trained run on a split with the official AVVP metrics."""
    from avvp.pipeline.evaluate import evaluate_run

    rule = filter_rule.value if filter_rule else None
    result = evaluate_run(run, split, annotations, rule, device)
    title = f"{result.split} split, {result.annotations} annotations, {result.filter_rule} filter"
    console.print(metrics_table(title, {Path(result.run_url).name: result.metrics}))


class ModelKind(StrEnum):
    mmcse = "mmcse"
    valor = "valor"


@app.command("import-checkpoint")
@user_errors
def import_checkpoint(
    file: Annotated[Path, typer.Argument(help="Official state dict (.pth/.pt).")],
    kind: Annotated[ModelKind, typer.Option(help="Which network the weights belong to.")],
    out: Annotated[Path, typer.Option(help="Where to write the avvp checkpoint.")],
) -> None:
    """Convert an official MM-CSE or VALOR checkpoint into an avvp checkpoint."""
    from avvp.pipeline.checkpoints import import_checkpoint as convert

    config = convert(file, kind.value, out)
    inputs = config.inputs
    console.print(
        f"wrote [bold]{out}[/]: {config.kind}, audio {inputs.audio_kind} {inputs.audio_dim}-d, "
        f"visual {inputs.visual_kind} {inputs.visual_dim}-d, {config.num_layers} layers"
    )


@app.command("infer-features")
@user_errors
def infer_features(
    checkpoint: Annotated[Path, typer.Argument(help="avvp checkpoint.")],
    features: Annotated[Path, typer.Argument(help="FEATURES.npz: audio, visual, visual_st.")],
    out: Annotated[Path, typer.Option(help="OUT.npz to write.")],
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
) -> None:
    """Run a checkpoint on feature arrays and write its outputs."""
    from avvp.pipeline.evaluate import infer_features as run_inference

    count = run_inference(checkpoint, features, out, device=device)
    console.print(f"wrote [bold]{out}[/]: outputs for {count} windows")


@app.command()
@user_errors
def profile(
    model: Annotated[str, typer.Option(help="mmcse, valor, or a preset name.")] = "mmcse",
    batch_size: Annotated[int, typer.Option(help="Batch for the timings.")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
) -> None:
    """Parameters, FLOPs per 10-s video, forward and training-step time."""
    from avvp.pipeline.profile import profile_model

    with console.status("profiling..."):
        report = profile_model(MODEL_ALIASES.get(model, model), batch_size, device)
    table = Table(title=f"{report.model} on {report.device}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("parameters, training graph", f"{report.params_train / 1e6:.2f} M")
    table.add_row("parameters, inference", f"{report.params_inference / 1e6:.2f} M")
    table.add_row("GFLOPs per 10-s video (inference)", f"{report.gflops_per_video:.3f}")
    table.add_row(f"forward, batch {report.batch_size}", f"{report.forward_ms:.1f} ms")
    table.add_row(f"forward+backward, batch {report.batch_size}", f"{report.train_step_ms:.1f} ms")
    console.print(table)


synth_app = typer.Typer(help="Make synthetic test data.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")


@synth_app.command("clips")
@user_errors
def synth_clips(
    out_dir: Annotated[Path, typer.Argument(help="Folder for videos/ and the LLP label files.")],
    n: Annotated[int, typer.Option("--n", help="Number of clips.")] = 8,
    seconds: Annotated[float, typer.Option(help="Length of each clip.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Tiny real video files with planted audio and visual events, plus LLP label files."""
    from avvp.pipeline.synth_clips import write_synthetic_clips

    with console.status(f"writing {n} clips..."):
        paths = write_synthetic_clips(out_dir, n=n, seconds=seconds, seed=seed)
    console.print(f"wrote {len(paths)} clips to [bold]{out_dir / 'videos'}[/] and label files")


@app.command("import-labels")
@user_errors
def import_labels(
    store: Annotated[str, typer.Option(help="Store root.")] = DEFAULT_ROOT,
    labels: Annotated[
        Path | None, typer.Option(help="Folder of LLP-format files (default: vendored LLP).")
    ] = None,
) -> None:
    """Write LLP weak labels (with splits) and dense annotations into the label store."""
    from avvp.pipeline.llp_labels import import_llp_labels

    written = import_llp_labels(store, labels)
    for table, rows in written.items():
        console.print(f"{table}: {rows} rows written")


@app.command()
@user_errors
def extract(
    paths: Annotated[list[Path], typer.Argument(help="Video files and/or folders.")],
    store: Annotated[str, typer.Option(help="Store root.")] = DEFAULT_ROOT,
    extractors: Annotated[
        str, typer.Option(help="Comma-separated: clip, r2plus1d, clap, clap-segments.")
    ] = "clip,r2plus1d,clap",
    preset: Annotated[str, typer.Option(help="paper (real weights) or tiny (random, tests).")] = (
        "paper"
    ),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Windows per forward pass.")] = 16,
    workers: Annotated[
        int | None, typer.Option(help="Decoding processes (default: up to 8).")
    ] = None,
) -> None:
    """Decode videos at 8 FPS and store CLIP, R(2+1)D and CLAP features of missing windows."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from avvp.pipeline.extract import extract_videos

    columns = (
        TextColumn("extracting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("extract", total=None, rate="")
        started = time.perf_counter()

        def on_progress(update: Any) -> None:
            rate = update.done / max(time.perf_counter() - started, 1e-9)
            progress.update(
                task, completed=update.done, total=update.total, rate=f"{rate:.2f} videos/s"
            )
            if update.status == "failed":
                progress.console.print(f"[red]failed[/] {update.path}: {update.reason}")

        summary = extract_videos(
            paths,
            store,
            extractors=[name.strip() for name in extractors.split(",") if name.strip()],
            preset=preset,
            device=device,
            batch_size=batch_size,
            workers=workers,
            on_progress=on_progress,
        )
    console.print(
        f"{summary.videos_found} videos: {summary.videos_extracted} extracted, "
        f"{summary.videos_skipped} already stored, {len(summary.failures)} failed "
        f"({summary.seconds:.1f} s, {summary.videos_per_second:.2f} videos/s)"
    )
    for table, rows in summary.windows_written.items():
        console.print(f"  {table}: {rows} windows written")
    for failure in summary.failures:
        console.print(f"  [red]failed[/] {failure.path}: {failure.reason}")
    if summary.failures:
        console.print(f"failures are recorded in {store}/failures/extract/")
        raise typer.Exit(EXIT_SOME_FAILED)
