"""The `avvp` command line: one command per stage, each a thin shell over a stage function.

Exit codes (DESIGN.md): 0 all good, 1 some inputs failed (the rest was done),
2 usage or configuration error.

Results go to standard output (a table, or one JSON object with --json); progress,
notes and warnings go to standard error, so `--json` output can be piped as it is.
Long work shows a progress bar on a terminal and one line per step otherwise (a log
file gets no bar redrawn a thousand times).
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
from pydantic import ValidationError
from rich import box
from rich.console import Console
from rich.table import Table

from ... import __version__
from .memory import use_one_malloc_arena

# Before torch is imported and its threads allocate (pipeline/cli/memory.py).
use_one_malloc_arena()

app = typer.Typer(
    help="avvp: raw videos to audio-visual event timelines (LLP, VALOR, MM-CSE).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
store_app = typer.Typer(
    help="Inspect, check and compact a feature/label store.", no_args_is_help=True
)
app.add_typer(store_app, name="store")

# Lines are not broken at the terminal width: paths and commands stay copyable.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_ROOT = "./avvp-data"
# The official evaluation skips these rows too; the warning's long list of rows belongs
# in LLPAnnotations.ignored_rows, not on a user's console.
IGNORED_ANNOTATIONS_NOTE = (
    "note: some rows of the LLP annotation files match no val/test video or cover no "
    "segment; they are ignored, as the official evaluation ignores them"
)

F = TypeVar("F", bound=Callable[..., Any])


# Options several commands share, spelled once.
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


StoreRoot = Annotated[
    str, typer.Option(metavar="ROOT", help="Store root.", callback=writable_store)
]
ReadStoreRoot = Annotated[str, typer.Option(metavar="ROOT", help="Store root.")]
StoreArgument = Annotated[
    str, typer.Argument(metavar="ROOT", help="Store root (local path or fsspec URL).")
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


class Annotations(StrEnum):
    corrected = "corrected"
    published = "published"


class FilterRule(StrEnum):
    mmcse = "mmcse"
    valor = "valor"


class Size(StrEnum):
    auto = "auto"
    tiny = "tiny"
    paper = "paper"


class DemoSource(StrEnum):
    clips = "clips"
    features = "features"


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
    from ..evaluate import METRIC_KEYS

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
    root: Annotated[
        str, typer.Option(metavar="ROOT", help="Store root (local path or fsspec URL).")
    ] = DEFAULT_ROOT,
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
        root,
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


@app.command("evaluate-predictions")
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
        bool, typer.Option(help="Move unreadable parts to ROOT/broken/ (asks first).")
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


@app.command()
@user_errors
def train(
    store: Annotated[
        str,
        typer.Option(
            metavar="ROOT", help="Store root with features and labels.", callback=writable_store
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
    preset: Annotated[
        str, typer.Option(metavar="RECIPE", help="paper (default) or official recipe.")
    ] = "paper",
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
    train_config = load_train_config(preset, config, overrides)

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


@app.command()
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


def given(**options: Any) -> dict[str, Any]:
    """The options the user gave (not None): overrides over a config file's settings."""
    return {name: value for name, value in options.items() if value is not None}


class ModelKind(StrEnum):
    mmcse = "mmcse"
    valor = "valor"


@app.command("import-checkpoint")
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


@app.command("infer-features")
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


@app.command()
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


synth_app = typer.Typer(help="Make synthetic test data.", no_args_is_help=True)
app.add_typer(synth_app, name="synth")


@synth_app.command("clips")
@user_errors
def synth_clips(
    out_dir: Annotated[
        Path, typer.Argument(metavar="DIR", help="Folder for videos/ and the LLP label files.")
    ],
    n: Annotated[int, typer.Option("--n", metavar="N", help="Number of clips.")] = 8,
    seconds: Annotated[float, typer.Option(metavar="S", help="Length of each clip.")] = 10.0,
    seed: Annotated[int, typer.Option(metavar="N", help="Random seed.")] = 0,
) -> None:
    """Tiny real video files with planted audio and visual events, plus LLP label files."""
    from ..synthetic.clips import write_synthetic_clips

    with err_console.status(f"writing {n} clips..."):
        paths = write_synthetic_clips(out_dir, n=n, seconds=seconds, seed=seed)
    console.print(f"wrote {len(paths)} clips to [bold]{out_dir / 'videos'}[/] and label files")


@app.command("import-labels")
@user_errors
def import_labels(
    store: StoreRoot = DEFAULT_ROOT,
    labels: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Folder of LLP-format files (default: vendored LLP)."),
    ] = None,
) -> None:
    """Write LLP weak labels (with splits) and dense annotations into the label store."""
    from ..llp_labels import import_llp_labels

    result = import_llp_labels(store, labels)
    for line in result.lines():
        console.print(line, highlight=False)


def parse_weights(values: list[str]) -> dict[str, str]:
    """`--weights NAME=PATH` options as {extractor name: path}."""
    from ..extract import TABLE_FOR_EXTRACTOR

    weights: dict[str, str] = {}
    for value in values:
        name, equals, path = value.partition("=")
        if not equals or not name or not path or name not in TABLE_FOR_EXTRACTOR:
            raise ValueError(
                f"--weights {value!r}: give NAME=PATH with NAME one of "
                f"{', '.join(TABLE_FOR_EXTRACTOR)}, e.g. --weights clip=~/weights/ViT-L-14.pt"
            )
        if name in weights:
            raise ValueError(f"--weights names {name!r} twice")
        weights[name] = path
    return weights


@app.command()
@user_errors
def extract(
    paths: Annotated[
        list[Path], typer.Argument(metavar="PATH...", help="Video files and/or folders.")
    ],
    store: StoreRoot = DEFAULT_ROOT,
    config: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="TOML/YAML/JSON file of ExtractConfig settings."),
    ] = None,
    extractors: Annotated[
        str | None,
        typer.Option(
            metavar="NAMES",
            help="Comma-separated: clip, r2plus1d, clap, clap-segments \\[default: "
            "clip,r2plus1d,clap].",
        ),
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(
            metavar="PRESET", help="paper (real weights, the default) or tiny (random, tests)."
        ),
    ] = None,
    weights: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=PATH",
            help="A weight file for one extractor, e.g. clip=ViT-L-14.pt (repeat per "
            "extractor; default: the library's cache).",
        ),
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(
            metavar="DIR",
            help="LLP-format label folder whose YouTube ids name LLP files (default: the "
            "vendored LLP).",
        ),
    ] = None,
    device: DeviceOverride = None,
    batch_size: Annotated[
        int | None, typer.Option(metavar="N", help="Windows per forward pass \\[default: 16].")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(metavar="N", help="Decoding processes (default: up to 8).")
    ] = None,
    retry_failed: RetryFailed = False,
) -> None:
    """Decode videos at 8 FPS and store CLIP, R(2+1)D and CLAP features of missing windows."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ..extract import ExtractConfig, extract_videos
    from ..sources.config_files import load_config

    names = [name.strip() for name in extractors.split(",") if name.strip()] if extractors else None
    overrides = given(
        extractors=names,
        preset=preset,
        weights=parse_weights(weights) if weights else None,
        labels=str(labels) if labels else None,
        device=device,
        batch_size=batch_size,
        workers=workers,
        retry_failed=retry_failed or None,
    )
    extract_config = load_config(ExtractConfig, config, overrides)
    columns = (
        TextColumn("extracting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
    )
    with Progress(*columns, console=err_console, disable=not err_console.is_terminal) as progress:
        task = progress.add_task("extract", total=None, rate="")
        started = time.perf_counter()

        def on_progress(update: Any) -> None:
            rate = update.done / max(time.perf_counter() - started, 1e-9)
            progress.update(
                task, completed=update.done, total=update.total, rate=f"{rate:.2f} videos/s"
            )
            # Each file's problem is printed once, here, as it happens.
            if update.status == "failed":
                progress.console.print(
                    f"[red]failed[/] {update.path}: {update.reason}",
                    highlight=False,
                )
            elif update.warning:
                progress.console.print(
                    f"[yellow]warning[/] {update.path}: {update.warning}",
                    highlight=False,
                )

        summary = extract_videos(paths, store, extract_config, on_progress=on_progress)
    warned = f", {len(summary.warnings)} with warnings" if summary.warnings else ""
    console.print(
        f"{summary.videos_found} videos: {summary.videos_extracted} extracted{warned}, "
        f"{summary.videos_skipped} already stored, {len(summary.failures)} failed "
        f"({summary.seconds:.1f} s, {summary.videos_per_second:.2f} videos/s)"
    )
    for table, rows in summary.windows_written.items():
        console.print(f"  {table}: {rows} windows written")
    if summary.failures:
        console.print(
            f"the failed files are listed above and in {store}/failures/extract/ (its "
            "`detail` column has the decoders' own words); re-encode or replace them, e.g. "
            "`ffmpeg -i FILE -c:v libx264 -c:a aac FILE.mp4`, and run this again (a file "
            "that failed is skipped while it is unchanged; --retry-failed tries it again)"
        )
        raise typer.Exit(EXIT_SOME_FAILED)


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


@app.command("fetch-valor")
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

    from ..release import CorruptArchiveError, FetchConfig, fetch_valor
    from ..sources.download import DownloadError

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
                "import-features DIR --preset han-r2plus1d`"
                if result.missing_tables == ["r2plus1d-18"]
                else f"`avvp train` also needs {', '.join(result.missing_tables)}",
                highlight=False,
            )
        else:
            console.print(f"ready: `avvp train --store {store}`", highlight=False)
    if result.skipped:
        raise typer.Exit(EXIT_SOME_FAILED)


class FeaturePreset(StrEnum):
    han_vggish = "han-vggish"
    han_res152 = "han-res152"
    han_r2plus1d = "han-r2plus1d"
    valor_clip = "valor-clip"
    valor_clap = "valor-clap"


@app.command("import-features")
@user_errors
def import_features(
    folder: Annotated[Path, typer.Argument(metavar="DIR", help="A folder of <id>.npy files.")],
    store: StoreRoot = DEFAULT_ROOT,
    table: Annotated[
        str | None, typer.Option(metavar="NAME", help="Feature table \\[default: the preset's].")
    ] = None,
    preset: Annotated[
        FeaturePreset | None,
        typer.Option(help="A released layout: its table and shape (README: released data)."),
    ] = None,
    shape: Annotated[
        str | None, typer.Option(metavar="AxB", help="Shape of one file, e.g. 10x512.")
    ] = None,
    labels: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="LLP-format label folder whose ids are known."),
    ] = None,
) -> None:
    """Import a folder of released <id>.npy features (HAN's, VALOR's) into a feature table.

    Files with the wrong shape, NaN/Inf, an unreadable header or an unknown id are
    reported and skipped (exit 1); importing again does no work.
    """
    from ..release import ImportFeaturesConfig, import_features, parse_shape

    config = ImportFeaturesConfig(
        **given(
            table=table,
            preset=preset.value if preset else None,
            shape=parse_shape(shape) if shape else None,
            labels=str(labels) if labels else None,
        )
    )
    result = import_features(folder, store, config)
    print_skipped(result.skipped)
    console.print(import_line(result), highlight=False)
    if result.skipped:
        raise typer.Exit(EXIT_SOME_FAILED)


labels_app = typer.Typer(
    help="Segment pseudo-labels: import, generate (VALOR's zero-shot), dense, score.",
    no_args_is_help=True,
)
app.add_typer(labels_app, name="pseudo-labels")


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
    labels: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="LLP-format label folder whose ids are known."),
    ] = None,
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
    preset: Annotated[
        str, typer.Option(metavar="PRESET", help="The preset the embeddings were made with.")
    ] = "paper",
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
) -> None:
    """VALOR's zero-shot pseudo-labels from stored CLIP and CLAP segment embeddings.

    Needs `avvp extract --extractors clip,clap-segments` first. Only videos with weak
    labels get pseudo-labels (the labels are restricted to the weak classes); videos
    without weak labels are counted and left out. Writes the source
    generated-<clip weights>+<clap weights>.
    """
    from ..pseudo_labels import GenerateConfig, generate_pseudo_labels

    if labels is not None:
        from ..llp_labels import import_llp_labels

        import_llp_labels(store, labels)
    config = GenerateConfig(
        **given(
            preset=preset,
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


def print_progress(level: str, message: str) -> None:
    """A progress line of the local runner, on standard error."""
    style = "yellow" if level == "warning" else None
    err_console.print(message, style=style, highlight=False)


@app.command("run")
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
        str | None, typer.Option(metavar="ROOT", help="Store root.", callback=writable_store)
    ] = None,
    preset: Annotated[
        str | None, typer.Option(metavar="PRESET", help="Extractors: paper or tiny.")
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
        preset=preset,
        pseudo_labels=pseudo_labels,
        model=model,
        epochs=epochs,
        config={"extract": {"retry_failed": True}} if retry_failed else None,
    )
    chain = load_config(ChainConfig, config, overrides)
    if runner == ChainRunnerChoice.local:
        summary = run_local(EXTRACT_AND_TRAIN, chain, print_progress)
    else:
        from ...flows.runner import run_extract_and_train

        summary = run_extract_and_train(chain, task_runner.value, dask_address, dask_workers)
    if as_json:
        typer.echo(summary.model_dump_json())
    else:
        print_chain_summary(summary)
    if not summary.ok:
        raise typer.Exit(EXIT_SOME_FAILED)


@app.command()
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


@app.command()
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
        typer.Option(metavar="ROOT", help="The new videos' feature store \\[default: OUT/store]."),
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
    summary = run_local(PARSE_FOLDER, params, print_progress)
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
        console.print(table)
        counts = ", ".join(f"{n} {modality}" for modality, n in result.events.items())
        console.print(
            f"{len(result.videos) - len(result.failed)} of {len(result.videos)} files parsed; "
            f"events: {counts}; {result.out}/events.csv, videos.csv, timelines/",
            highlight=False,
        )
    # As `avvp extract` words them: a file parsed only in part (cut short), for one.
    for warning in summary.warnings:
        err_console.print(f"[yellow]warning[/] {warning}", highlight=False)
    if not summary.ok:
        raise typer.Exit(EXIT_SOME_FAILED)


@app.command()
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
