"""`avvp train`, `evaluate`, `evaluate-predictions`, `report` and the commands on a
checkpoint (`import-checkpoint`, `infer-features`, `profile`)."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from .options import (
    DEFAULT_ROOT,
    Device,
    DeviceOverride,
    JsonOutput,
    OldPreset,
    Size,
    given,
    renamed,
    writable_run,
    writable_store,
)
from .output import console, err_console, metrics_table, user_errors


class Annotations(StrEnum):
    corrected = "corrected"
    published = "published"


class FilterRule(StrEnum):
    mmcse = "mmcse"
    valor = "valor"


@user_errors
def evaluate_predictions(
    pred: Annotated[
        Path, typer.Argument(metavar="PRED.npz", help="Predictions (README: exchange formats).")
    ],
    annotations: Annotated[
        Annotations, typer.Option(help="LLP audio annotation file to score against.")
    ] = Annotations.corrected,
    filter_rule: Annotated[
        FilterRule,
        typer.Option("--filter", help="Video-level filter of segment predictions."),
    ] = FilterRule.mmcse,
    labels_dir: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR", help="Folder with LLP-format label files (default: the vendored LLP)."
        ),
    ] = None,
    as_json: JsonOutput = False,
) -> None:
    """Score a prediction file with the official AVVP metrics."""
    from ..evaluate import evaluate_prediction_file, format_metrics_table

    metrics = evaluate_prediction_file(
        pred,
        annotations=annotations.value,
        filter_rule=filter_rule.value,
        labels_dir=labels_dir,
    )
    if as_json:
        typer.echo(json.dumps(metrics))
    else:
        typer.echo(format_metrics_table(metrics))


@user_errors
def train(
    store: Annotated[
        str,
        typer.Option(
            metavar="STORE", help="The store with features and labels.", callback=writable_store
        ),
    ] = DEFAULT_ROOT,
    model: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            help="mmcse, valor, or a preset name such as mmcse-vggish-resnet \\[default: mmcse].",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="TOML/YAML/JSON file of TrainConfig settings."),
    ] = None,
    recipe: Annotated[
        str | None,
        typer.Option(metavar="RECIPE", help="The training recipe: paper (default) or official."),
    ] = None,
    size: Annotated[
        Size | None,
        typer.Option(
            help="Network sizes: paper (the default), tiny (same architecture, narrower: "
            "seconds per epoch on a CPU), auto (tiny on a CPU, paper on a GPU)."
        ),
    ] = None,
    epochs: Annotated[
        int | None, typer.Option(metavar="N", help="Override the number of epochs.")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(metavar="N", help="Override the batch size.")
    ] = None,
    seed: Annotated[
        int | None, typer.Option(metavar="N", help="Random seed (CPU runs repeat exactly).")
    ] = None,
    pseudo_labels: Annotated[
        str | None,
        typer.Option(
            metavar="SOURCE",
            help="Pseudo-label source (valor, synthetic, ...) \\[default: valor, or the "
            "store's only source].",
        ),
    ] = None,
    annotations: Annotated[
        str | None,
        typer.Option(
            metavar="SET",
            help="Dense annotations for validation \\[default: corrected, or the store's "
            "only set].",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(metavar="DEVICE", help="auto, cpu, cuda, cuda:1, ... \\[default: auto]"),
    ] = None,
    force: Annotated[bool, typer.Option(help="Train again even if this run exists.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object (run id, metrics) at the end.")
    ] = False,
    preset: OldPreset = None,
) -> None:
    """Train a parser on stored features and labels -> runs/<id>/."""
    from ..train import train as run_training
    from ..train_config import load_train_config

    overrides = given(
        model=model,
        device=device,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        size=size.value if size else None,
    )
    if data := given(pseudo_labels=pseudo_labels, annotations=annotations):
        overrides["data"] = data
    train_config = load_train_config(
        renamed(recipe, preset, "--recipe") or "paper", config, overrides
    )

    with TrainingProgress(train_config.model, train_config.epochs) as progress:
        result = run_training(
            store,
            train_config,
            on_epoch=progress.epoch,
            on_estimate=progress.estimate,
            on_note=progress.note,
            force=force,
        )
    state = "reused the finished run" if result.reused else f"best epoch {result.best_epoch}"
    if as_json:
        summary = {
            "run_id": result.run_id,
            "run": result.run_url,
            "reused": result.reused,
            "best_epoch": result.best_epoch,
            "split": "val",
            "metrics": result.best_val,
            "notes": result.notes,
        }
        typer.echo(json.dumps(summary))
        return
    console.print(f"run: [bold]{result.run_url}[/] ({state})")
    console.print(metrics_table("validation (best epoch)", {train_config.model: result.best_val}))


class TrainingProgress:
    """What `avvp train` shows while it trains, on standard error: the estimate of the
    run's length, then a progress bar on a terminal, or one line per epoch otherwise."""

    def __init__(self, model: str, epochs: int) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self.model, self.epochs = model, epochs
        self.started = time.perf_counter()
        self.bar = (
            Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=err_console,
            )
            if err_console.is_terminal
            else None
        )
        self.task = None

    def __enter__(self) -> TrainingProgress:
        if self.bar is not None:
            self.bar.start()
            self.task = self.bar.add_task(f"training {self.model}", total=self.epochs, status="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def say(self, line: str) -> None:
        console = self.bar.console if self.bar is not None else err_console
        console.print(line, highlight=False)

    def note(self, message: str) -> None:
        self.say(f"note: {message}")

    def estimate(self, estimate: Any) -> None:
        from ..chain.stage import duration_text

        line = (
            f"training {self.model} for {estimate.epochs} epochs on {estimate.device}: about "
            f"{duration_text(estimate.seconds)} ({duration_text(estimate.epoch_seconds)} per "
            f"epoch, timed on the first {estimate.timed_batches} batches)"
        )
        if estimate.device == "cpu" and estimate.seconds > 600:
            line += "; on a CPU, --size tiny trains a narrower network of the same design"
        self.say(line)

    def epoch(self, report: Any) -> None:
        from ..chain.stage import duration_text

        done = report.epoch  # counted from 1
        status = f"loss {report.loss:.4f}  val Seg-type {report.val['Seg-type']:.1f}"
        if self.bar is not None:
            self.bar.update(self.task, advance=1, status=status)
            return
        left = (time.perf_counter() - self.started) / done * (self.epochs - done)
        remaining = f"about {duration_text(left)} left" if done < self.epochs else "done"
        self.say(
            f"epoch {done}/{self.epochs}  loss {report.loss:.4f}  val Avg "
            f"{report.val['Avg']:.1f}  Seg-type {report.val['Seg-type']:.1f}  "
            f"{report.seconds:.1f} s  {remaining}"
        )


@user_errors
def evaluate(
    run: Annotated[
        str,
        typer.Argument(metavar="RUN", help="Run folder, <store>/runs/<id>.", callback=writable_run),
    ],
    config: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="TOML/YAML/JSON file of EvaluateConfig settings."),
    ] = None,
    split: Annotated[
        str | None, typer.Option(metavar="SPLIT", help="val or test \\[default: test].")
    ] = None,
    annotations: Annotated[
        str | None,
        typer.Option(
            metavar="SET", help="corrected, published or synthetic \\[default: the run's own]."
        ),
    ] = None,
    filter_rule: Annotated[
        FilterRule | None, typer.Option("--filter", help="Default: the model's own protocol.")
    ] = None,
    device: DeviceOverride = None,
    force: Annotated[
        bool, typer.Option(help="Score again even if these rows were scored before.")
    ] = False,
    as_json: JsonOutput = False,
) -> None:
    """Score a trained run on a split with the official AVVP metrics (cached per rows read)."""
    from ..evaluate import EvaluateConfig, evaluate_run
    from ..sources.config_files import load_config

    overrides = given(
        split=split,
        annotations=annotations,
        filter_rule=filter_rule.value if filter_rule else None,
        device=device,
    )
    result = evaluate_run(run, load_config(EvaluateConfig, config, overrides), force=force)
    if result.warning:
        err_console.print(f"warning: {result.warning}", style="yellow", highlight=False)
    if as_json:
        summary = {
            "run_id": result.run_id,
            "run": result.run_url,
            "reused": result.reused,
            "split": result.split,
            "annotations": result.annotations,
            "filter": result.filter_rule,
            "videos_in_split": result.videos_in_split,
            "videos_scored": result.videos_scored,
            "videos_without_features": result.videos_without_features,
            "missing_examples": result.missing_examples,
            "warning": result.warning,
            "metrics": result.metrics,
        }
        typer.echo(json.dumps(summary))
        return
    title = f"{result.split} split, {result.annotations} annotations, {result.filter_rule} filter"
    console.print(metrics_table(title, {Path(result.run_url).name: result.metrics}))
    console.print(
        f"scored {result.videos_scored} of {result.videos_in_split} videos of the "
        f"{result.split} split",
        highlight=False,
    )


class ModelKind(StrEnum):
    mmcse = "mmcse"
    valor = "valor"


@user_errors
def import_checkpoint(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Official state dict (.pth/.pt).")],
    kind: Annotated[ModelKind, typer.Option(help="Which network the weights belong to.")],
    out: Annotated[Path, typer.Option(metavar="CKPT", help="Where to write the avvp checkpoint.")],
) -> None:
    """Convert an official MM-CSE or VALOR checkpoint into an avvp checkpoint."""
    from ..sources.checkpoints import import_checkpoint as convert

    config = convert(file, kind.value, out)
    inputs = config.inputs
    console.print(
        f"wrote [bold]{out}[/]: {config.kind}, audio {inputs.audio_kind} {inputs.audio_dim}-d, "
        f"visual {inputs.visual_kind} {inputs.visual_dim}-d, {config.num_layers} layers"
    )


@user_errors
def infer_features(
    checkpoint: Annotated[Path, typer.Argument(metavar="CKPT", help="avvp checkpoint.")],
    features: Annotated[
        Path,
        typer.Argument(
            metavar="FEATURES.npz",
            help="audio, visual, visual_st, video_ids (README: exchange formats).",
        ),
    ],
    out: Annotated[Path, typer.Option(metavar="OUT.npz", help="Where to write the outputs.")],
    device: Device = "auto",
) -> None:
    """Run a checkpoint on feature arrays and write its outputs (scored by
    `avvp evaluate-predictions OUT.npz` when FEATURES.npz has video_ids)."""
    from ..infer import infer_features as run_inference

    count = run_inference(checkpoint, features, out, device=device)
    console.print(f"wrote [bold]{out}[/]: outputs for {count} windows")


@user_errors
def profile(
    model: Annotated[
        str, typer.Option(metavar="MODEL", help="mmcse, valor, or a preset name.")
    ] = "mmcse",
    batch_size: Annotated[int, typer.Option(metavar="N", help="Batch for the timings.")] = 64,
    device: Device = "auto",
) -> None:
    """Parameters, FLOPs per 10-s video, forward and training-step time."""
    from ..reports.profile import profile_model

    with err_console.status("profiling..."):
        report = profile_model(model, batch_size, device)
    table = Table(title=f"{report.model} on {report.device}", title_justify="left")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("parameters, training graph", f"{report.params_train / 1e6:.2f} M")
    table.add_row("parameters, inference", f"{report.params_inference / 1e6:.2f} M")
    table.add_row("GFLOPs per 10-s video (inference)", f"{report.gflops_per_video:.3f}")
    table.add_row(f"forward, batch {report.batch_size}", f"{report.forward_ms:.1f} ms")
    table.add_row(f"forward+backward, batch {report.batch_size}", f"{report.train_step_ms:.1f} ms")
    console.print(table)


@user_errors
def report(
    run: Annotated[
        str, typer.Argument(metavar="RUN", help="A trained run folder.", callback=writable_run)
    ],
    device: Device = "auto",
    timeline_videos: Annotated[
        int, typer.Option(metavar="N", help="Test videos drawn as timelines.")
    ] = 4,
    tsne_max_segments: Annotated[
        int, typer.Option(metavar="N", help="Test segments in the t-SNE.")
    ] = 2000,
    seed: Annotated[int, typer.Option(metavar="N", help="Seed of the samples drawn.")] = 0,
) -> None:
    """Write RUN/report/: metrics tables, co-occurrence map, t-SNE, timelines, report.html."""
    from ..reports.report import ReportConfig, write_report

    config = ReportConfig(
        device=device,
        timeline_videos=timeline_videos,
        tsne_max_segments=tsne_max_segments,
        seed=seed,
    )
    result = write_report(run, config)
    for note in result.notes:
        err_console.print(f"note: {note}", style="yellow", highlight=False)
    console.print(f"{len(result.files)} files in {run}/report/", highlight=False)
    console.print(f"{run}/{result.html}", highlight=False)
