"""`avvp extract`: decode videos and store their features."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from .options import (
    DEFAULT_ROOT,
    DeviceOverride,
    OldPreset,
    RetryFailed,
    StoreRoot,
    given,
    parse_weights,
    renamed,
)
from .output import EXIT_SOME_FAILED, ProgressDisplay, console, user_errors


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
    size: Annotated[
        str | None,
        typer.Option(
            metavar="SIZE", help="paper (real weights, the default) or tiny (random, tests)."
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
    precision: Annotated[
        str | None,
        typer.Option(
            metavar="P",
            help="auto (bfloat16 on CUDA and, at the paper size, on a CPU with bf16 "
            "instructions; float32 otherwise), float32 or bfloat16 \\[default: auto].",
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help="Windows per forward pass (default: per extractor, the fastest up to 16, "
            "measured on the first batches).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(metavar="N", help="Decoding processes (default: up to 8).")
    ] = None,
    retry_failed: RetryFailed = False,
    preset: OldPreset = None,
) -> None:
    """Decode videos at 8 FPS and store CLIP, R(2+1)D and CLAP features of missing windows."""
    from ..chain.stage import Reporter
    from ..extract import ExtractConfig, counted, extract_videos
    from ..sources.config_files import load_config

    names = [name.strip() for name in extractors.split(",") if name.strip()] if extractors else None
    overrides = given(
        extractors=names,
        size=renamed(size, preset, "--size"),
        weights=parse_weights(weights) if weights else None,
        labels=str(labels) if labels else None,
        device=device,
        precision=precision,
        batch_size=batch_size,
        workers=workers,
        retry_failed=retry_failed or None,
    )
    extract_config = load_config(ExtractConfig, config, overrides)
    with ProgressDisplay() as progress, contextlib.ExitStack() as running:
        reporter = Reporter("extract", 0, "videos", progress.emit, on_count=progress.count)

        def on_plan(plan: Any) -> None:
            # Counts are of the videos to decode; stored ones are said at the end.
            reporter.total = sum(len(shard.videos) for shard in plan.shards)
            reporter.total += len(plan.failures) + len(plan.failed_before)
            if reporter.total:
                running.enter_context(reporter.running())

        def on_progress(update: Any) -> None:
            if update.status == "skipped":
                return
            # Each file's problem is printed once, here, as it happens.
            if update.status == "failed":
                reporter.warn(f"failed {update.path}: {update.reason}")
            elif update.warning:
                reporter.warn(f"{update.path}: {update.warning}")
            reporter.advance(update.path)

        summary = extract_videos(
            paths, store, extract_config, on_progress=on_progress, on_plan=on_plan
        )
    warned = f", {len(summary.warnings)} with warnings" if summary.warnings else ""
    rate = f", {summary.videos_per_second:.2f} videos/s" if summary.videos_extracted else ""
    console.print(f"{summary.line()}{warned} ({summary.seconds:.1f} s{rate})", highlight=False)
    for table, rows in summary.windows_written.items():
        if rows:
            console.print(f"  {table}: {counted(rows, 'window')} written", highlight=False)
    if summary.failures:
        console.print(
            f"the failed files are listed above and in {store}/failures/extract/ (its "
            "`detail` column has the decoders' own words); re-encode or replace them, e.g. "
            "`ffmpeg -i FILE -c:v libx264 -c:a aac FILE.mp4`, and run this again (a file "
            "that failed is skipped while it is unchanged; --retry-failed tries it again)"
        )
        raise typer.Exit(EXIT_SOME_FAILED)


@user_errors
def catalog() -> None:
    """List the feature catalog: each table, its shape, what computes it, the released
    layouts that fill it, and its extractor's weights (source, sha256, preprocessing)."""
    from ..catalog import FEATURE_SETS, describe

    for feature, line in zip(FEATURE_SETS.values(), describe(), strict=True):
        console.print(line, highlight=False)
        for weights in feature.weights():
            digest = weights.sha256 or "not published"
            digest += "..." if len(digest) < 64 and weights.sha256 else ""
            console.print(
                f"  weights: {weights.title}, {weights.file_name} (sha256 {digest}) from "
                f"{weights.download}; {weights.preprocessing}",
                highlight=False,
                soft_wrap=True,
            )
