"""Extraction speed: our batched pipeline against a one-video-at-a-time loop.

Writes N synthetic 10-s clips to a temporary folder, builds the extractors once, then
in the same run times, into fresh temporary outputs:

- loop: the official repositories' style: decode one video, preprocess and embed one
  window at a time per extractor, `np.save` one file per video per extractor;
- batched: `extract_videos` (decoding in worker processes, batches of windows, parts
  of many rows in the feature store).

Both start after a warm-up embed per extractor, so neither pays first-call costs.
Prints videos/s of each, the ratio batched / loop, and the largest difference between
their features (they must agree up to float rounding: the store keeps float16).

    python benchmarks/extract.py [--n 16] [--workers 2] [--batch-size 16]
    python benchmarks/extract.py --preset paper --device cuda [--random-weights]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from avvp.extractors import FeatureExtractor, RandomInit, create_extractor
from avvp.pipeline.decode import decode_video, split_windows
from avvp.pipeline.extract import TABLE_FOR_EXTRACTOR, extract_videos, window_input
from avvp.pipeline.synth_clips import write_synthetic_clips
from avvp.storage import FeatureStore


def one_video_at_a_time(paths: list[Path], extractors: list[FeatureExtractor], out: Path) -> float:
    """The loop baseline; returns its seconds."""
    sample_rates = {e.input.sample_rate for e in extractors} - {None}
    for extractor in extractors:
        (out / extractor.name).mkdir(parents=True)
    started = time.perf_counter()
    for path in paths:
        decoded = decode_video(path, sample_rates=sample_rates)
        windows = split_windows(decoded)
        for extractor in extractors:
            features = [
                extractor.embed(extractor.preprocess(window_input(window, extractor.input))[None])
                .cpu()
                .numpy()[0]
                for window in windows
            ]
            np.save(out / extractor.name / f"{decoded.video_id}.npy", np.stack(features))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=16, help="synthetic 10-s clips")
    parser.add_argument("--extractors", default="clip,r2plus1d,clap")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="paper preset with random weights (timing without the weight files)",
    )
    args = parser.parse_args()

    weights = RandomInit() if args.random_weights else None
    extractors = [
        create_extractor(name, preset=args.preset, weights=weights, device=args.device)
        for name in args.extractors.split(",")
    ]
    with tempfile.TemporaryDirectory() as folder:
        paths = write_synthetic_clips(Path(folder) / "clips", n=args.n, seconds=10)
        (warm_up,) = split_windows(decode_video(paths[0]))
        for extractor in extractors:
            extractor.embed(extractor.preprocess(window_input(warm_up, extractor.input))[None])

        loop_s = one_video_at_a_time(paths, extractors, Path(folder) / "npy")
        summary = extract_videos(
            paths,
            Path(folder) / "store",
            extractors=extractors,
            workers=args.workers,
            batch_size=args.batch_size,
        )
        if summary.failures or summary.videos_extracted != len(paths):
            raise SystemExit(f"the batched run did not extract every clip: {summary}")

        store = FeatureStore(Path(folder) / "store")
        largest = 0.0
        for extractor in extractors:
            batch = store.table(TABLE_FOR_EXTRACTOR[extractor.name]).read_videos(
                [path.stem for path in paths]
            )
            saved = np.stack(
                [np.load(Path(folder) / "npy" / extractor.name / f"{p.stem}.npy") for p in paths]
            )
            difference = np.abs(batch.features.astype(np.float32) - saved[:, 0]).max()
            largest = max(largest, float(difference / np.abs(saved).max()))

    loop_rate = len(paths) / loop_s
    batched_rate = summary.videos_per_second
    print(
        f"{len(paths)} clips of 10 s, extractors {args.extractors}, preset {args.preset}, "
        f"device {args.device}, workers {args.workers}, batch {args.batch_size}"
    )
    print(f"one video at a time: {loop_rate:8.2f} videos/s ({loop_s:.1f} s)")
    print(f"batched pipeline:    {batched_rate:8.2f} videos/s ({summary.seconds:.1f} s)")
    print(f"ratio batched / loop: {batched_rate / loop_rate:.2f}")
    print(f"largest feature difference, relative to the largest value: {largest:.1e}")


if __name__ == "__main__":
    main()
