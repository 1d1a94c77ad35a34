"""Parsing speed: the parse-folder chain on a folder of generated clips against a
one-video-at-a-time loop, and the latency of one 10-s clip end to end.

Set-up (not timed): `--n` synthetic 10-s clips and a few more, and a tiny MM-CSE run
trained for one epoch on the extra clips (the speed of parsing does not depend on how
well the run learned); then each path once on two clips (kernel choice, allocator
growth, the extractors built into this process's cache, which both paths then read).

1. Batched: the parse-folder chain (`avvp parse`) into a fresh store: the run opened,
   the extractors looked up, extraction of every window (batched extractors, streaming
   decode), the run on all windows in large batches, events, `events.parquet/csv`,
   `videos.csv`, `index.html` (timelines off: drawing PNGs is not parsing).
2. Loop: the run opened and its extractors looked up as the chain does (inside its
   timer, like the chain's), then per video: decode its windows, embed each window with
   each extractor, run the model on the video's windows, cut its events with the same
   `video_events`.
3. Latency: the same two paths on one more 10-s clip (a fresh store each time), warm.
4. Cached re-parse: `avvp parse` run as a user runs it (a new process each time, with
   timelines and the viewer) on the folder, first into a fresh store and output folder,
   then again on the same ones, where everything is found stored.

Sections 1 and 3 run in alternating pairs (loop first in odd pairs, chain first in even
ones) so that a busy machine slows both alike; every pair's ratio is printed, then the
median and the spread. Both paths use the same extractors and the same run; their
event counts are checked equal in every pair.

    python benchmarks/parse.py [--n 32] [--device cpu|cuda] [--repeats 3]
                               [--only-cached | --skip-cached]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

# benchmarks/device_steps.py (this script's folder is on sys.path): the same tiny run.
from device_steps import quiet, tiny_run

from avvp.model.metrics import binarize_predictions
from avvp.pipeline.chain import (
    PARSE_FOLDER,
    ParseFolderConfig,
    run_local,
)
from avvp.pipeline.embedding import build_extractors, keep_freed_memory, window_input
from avvp.pipeline.infer import forget_loaded_runs, load_run, predict
from avvp.pipeline.parse import ParseConfig, parse_extract_config, video_events
from avvp.pipeline.sources.decode import open_video
from avvp.pipeline.synthetic.clips import write_synthetic_clips


def one_video_at_a_time(paths: list[Path], run_url: str, config: ParseConfig) -> tuple[float, int]:
    """The loop baseline: (seconds, events)."""
    forget_loaded_runs()  # each side loads the run once inside its timer
    started = time.perf_counter()
    # The set-up the chain does inside its own timer: the run and its extractors.
    loaded = load_run(run_url, config.device)
    extractors = build_extractors(parse_extract_config(loaded, config))
    by_name = {extractor.name: extractor for extractor in extractors}
    rates = sorted({e.input.sample_rate for e in extractors} - {None})
    rule = loaded.config.filter_resolved()
    events = 0
    for path in paths:
        with open_video(path, sample_rates=rates) as stream:
            windows = list(stream.windows())
        features = {
            name: torch.stack(
                [
                    extractor.embed(extractor.preprocess(window_input(w, extractor.input))[None])[0]
                    for w in windows
                ]
            )
            # Through the store's precision, as the batched path reads them back.
            .half()
            .float()
            for name, extractor in by_name.items()
        }
        outputs = predict(
            loaded.model,
            features["clap"].to(loaded.device),
            features["clip"].to(loaded.device),
            features["r2plus1d"].to(loaded.device),
            amp=loaded.config.amp,
        )
        on = binarize_predictions(
            outputs["frame_prob"], outputs["global_prob"], outputs["v_prob"], rule
        )
        prob = outputs["frame_prob"].transpose(0, 2, 1, 3)
        valid = np.array([w.valid_segments for w in windows])
        events += len(video_events(on, prob, valid, windows[0].has_audio))
    return time.perf_counter() - started, events


def batched(paths: list[Path], run_url: str, config: ParseConfig, work: Path) -> tuple[float, int]:
    """The parse-folder chain into a fresh store and output folder: (seconds, events)."""
    store, out = work / "parse-store", work / "parse-out"
    for folder in (store, out):
        shutil.rmtree(folder, ignore_errors=True)
    params = ParseFolderConfig(
        videos=[str(path) for path in paths],
        run=run_url,
        out=str(out),
        store=str(store),
        config=config.model_dump(),
    )
    forget_loaded_runs()
    started = time.perf_counter()
    result = run_local(PARSE_FOLDER, params, quiet).parse
    seconds = time.perf_counter() - started
    assert not result.failed, result.failed
    return seconds, sum(result.events.values())


def paired(
    title: str, paths: list[Path], run_url: str, config: ParseConfig, work: Path, pairs: int
) -> None:
    """Loop and chain on `paths` in `pairs` alternating pairs; each pair's ratio printed."""
    loop_s, chain_s = [], []
    for number in range(pairs):
        # Odd pairs run the loop first, even ones the chain: drift hits both alike.
        order = ("loop", "chain") if number % 2 == 0 else ("chain", "loop")
        counts = {}
        for side in order:
            if side == "loop":
                seconds, counts[side] = one_video_at_a_time(paths, run_url, config)
                loop_s.append(seconds)
            else:
                seconds, counts[side] = batched(paths, run_url, config, work)
                chain_s.append(seconds)
        assert counts["loop"] == counts["chain"], counts
    ratios = [loop / chain for loop, chain in zip(loop_s, chain_s, strict=True)]
    print(f"{title}: {len(paths)} clip(s) of 10 s, {counts['chain']} events, {pairs} pairs")
    for number, (loop, chain, ratio) in enumerate(zip(loop_s, chain_s, ratios, strict=True), 1):
        first = "loop first " if number % 2 else "chain first"
        print(
            f"  pair {number} ({first}): loop {loop:6.2f} s, chain {chain:6.2f} s, "
            f"chain / loop speed {ratio:.2f}x"
        )
    print(
        f"  loop {np.median(loop_s):.2f} s ({len(paths) / np.median(loop_s):.2f} videos/s), "
        f"chain {np.median(chain_s):.2f} s ({len(paths) / np.median(chain_s):.2f} videos/s) "
        f"median; chain / loop speed median {np.median(ratios):.2f}x "
        f"(pairs {min(ratios):.2f}-{max(ratios):.2f})"
    )


def cli_parse(paths: list[Path], run_url: str, out: Path, device: str) -> float:
    """Seconds of one `avvp parse` process on `paths` into `out` (its store inside)."""
    # The console script of this interpreter's environment, as a user runs it.
    avvp = str(Path(sys.executable).with_name("avvp"))
    command = [avvp, "parse", *map(str, paths), "--run", run_url]
    command += ["--out", str(out), "--device", device]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def cached_reparse(paths: list[Path], run_url: str, work: Path, device: str, pairs: int) -> None:
    """Section 4: a fresh parse, then the same parse again, in `pairs` pairs."""
    first_s, cached_s = [], []
    for _ in range(pairs):
        out = work / "cli-out"
        shutil.rmtree(out, ignore_errors=True)
        first_s.append(cli_parse(paths, run_url, out, device))
        cached_s.append(cli_parse(paths, run_url, out, device))
    ratios = [first / cached for first, cached in zip(first_s, cached_s, strict=True)]
    print(f"`avvp parse` of {len(paths)} clips of 10 s, a new process each, {pairs} pairs:")
    for number, (first, cached) in enumerate(zip(first_s, cached_s, strict=True), 1):
        print(f"  pair {number}: first {first:6.2f} s, cached re-parse {cached:6.2f} s")
    print(
        f"  cached re-parse: {np.median(cached_s):.2f} s against {np.median(first_s):.2f} s; "
        f"first / cached median {np.median(ratios):.2f}x (pairs {min(ratios):.2f}-"
        f"{max(ratios):.2f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="clips of 10 s to parse")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="pairs per section")
    sections = parser.add_mutually_exclusive_group()
    sections.add_argument(
        "--only-cached", action="store_true", help="only section 4, the cached re-parse"
    )
    sections.add_argument(
        "--skip-cached", action="store_true", help="sections 1-3 only (minutes fewer)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        run_url = tiny_run(work, args.device)
        *paths, latency_clip = write_synthetic_clips(work / "clips", n=args.n + 1, seconds=10)
        if not args.skip_cached:
            cached_reparse(paths, run_url, work, args.device, args.repeats)
        if args.only_cached:
            return
        config = ParseConfig(device=args.device, timelines=False)
        # The chain's extraction keeps freed memory for reuse on a CPU, for the rest of
        # the process: set from the start, so that both paths run with it.
        kept = keep_freed_memory()
        print(f"heap: freed memory {'kept for reuse' if kept else 'as the C library does'}")
        # Both paths once first: kernel choice, allocator growth, extractors built.
        batched(paths[:2], run_url, config, work)
        one_video_at_a_time(paths[:2], run_url, config)
        print(f"tiny networks, device {args.device}, torch threads {torch.get_num_threads()}")
        paired("parsing a folder", paths, run_url, config, work, args.repeats)
        latency = "latency of one 10-s clip end to end"
        paired(latency, [latency_clip], run_url, config, work, args.repeats)


if __name__ == "__main__":
    main()
