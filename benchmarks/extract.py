"""Extraction speed and memory, each against a reference measured in the same run.

1. Pipeline: `extract_videos` (decoding in worker processes, windows of many videos
   batched through each extractor, parts of many rows in the feature store) against a
   one-video-at-a-time loop in the official repositories' style (decode one video,
   embed one window at a time per extractor, `np.save` one file per video). Both use
   the same extractors, built once; each path first runs on a warm-up clip of its own;
   their features are checked equal (up to the store's float16) before the ratio is
   printed.
2. Decoding alone at 8 FPS: our streaming decoder (decord, frames resized to 224 x 224
   with the extractors' own resize) against the anchors' route: the ffmpeg program
   writing 8-FPS JPEG files, then PIL reading and resizing them. Needs the `bench` extra
   (imageio-ffmpeg ships the ffmpeg program).
3. Windows per embed call: each extractor's time per window at batch sizes 1 to 16
   (what `batch_size="auto"` measures while it runs), against its time at one window.
4. Peak memory: the resident set of a fresh `avvp extract VIDEO --size tiny --device
   cpu` process (CLIP, R(2+1)D and CLAP tiny networks, the stage's defaults otherwise)
   on generated videos, two by two: a 10-s clip of 320 x 240 against one of 2048 x 2048
   (frames over 960 x 480 are scaled in the decoder, and resized one at a time), and a
   320 x 240 video of 2 minutes against one of 20 (decoding streams window by window).
   Each pair's ratio is printed; by design both stay near 1.

    python benchmarks/extract.py [--n 32] [--workers N] [--batch-size auto|N] [--repeats 7]
    python benchmarks/extract.py --size paper --device cuda [--random-weights]
    python benchmarks/extract.py --only pipeline|decode|batch|memory
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as tvf

from avvp.extractors import FeatureExtractor, RandomInit, create_extractor
from avvp.pipeline.embedding import table_of_extractor, window_input
from avvp.pipeline.extract import ExtractConfig, extract_videos
from avvp.pipeline.sources.decode import open_video
from avvp.pipeline.synthetic.clips import write_synthetic_clips
from avvp.storage import FeatureStore

IMAGE_SIZE = 224


def build_extractors(args: argparse.Namespace) -> list[FeatureExtractor]:
    """The `--extractors`, built once with the `--size`, weights and `--device`."""
    weights = RandomInit() if args.random_weights else None
    return [
        create_extractor(name, size=args.size, weights=weights, device=args.device)
        for name in args.extractors.split(",")
    ]


def sample_rates(extractors: list[FeatureExtractor]) -> set[int]:
    """The audio rates the extractors read (none for the visual ones)."""
    return {e.input.sample_rate for e in extractors} - {None}


def find_ffmpeg(skipped: str) -> str | None:
    """imageio-ffmpeg's ffmpeg program; None, after printing `skipped`, without it."""
    try:
        import imageio_ffmpeg
    except ImportError:
        print(skipped)
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def one_video_at_a_time(paths: list[Path], extractors: list[FeatureExtractor], out: Path) -> float:
    """The loop baseline; returns its seconds."""
    rates = sample_rates(extractors)
    for extractor in extractors:
        (out / extractor.name).mkdir(parents=True)
    started = time.perf_counter()
    for path in paths:
        with open_video(path, sample_rates=rates) as stream:
            windows = list(stream.windows())
        for extractor in extractors:
            features = [
                extractor.embed(extractor.preprocess(window_input(window, extractor.input))[None])
                .cpu()
                .numpy()[0]
                for window in windows
            ]
            np.save(out / extractor.name / f"{path.stem}.npy", np.stack(features))
    return time.perf_counter() - started


def pipeline(args: argparse.Namespace, folder: Path) -> None:
    extractors = build_extractors(args)
    *paths, warm_up = write_synthetic_clips(folder / "clips", n=args.n + 1, seconds=10)
    config = ExtractConfig(workers=args.workers, batch_size=args.batch_size, device=args.device)
    # Both paths run once on a clip of their own first, so neither pays first-call costs
    # (imports, allocator growth, kernel selection) in the timing.
    one_video_at_a_time([warm_up], extractors, folder / "warm-up-npy")
    extract_videos(warm_up, folder / "warm-up-store", config, extractors=extractors)

    # Alternate the two, each into fresh outputs, so slow phases of a shared machine hit
    # both alike; medians are compared.
    loop_s, batched_s = [], []
    for repeat in range(args.repeats):
        loop_s.append(one_video_at_a_time(paths, extractors, folder / f"npy-{repeat}"))
        summary = extract_videos(paths, folder / f"store-{repeat}", config, extractors=extractors)
        if summary.failures or summary.videos_extracted != len(paths):
            raise SystemExit(f"the batched run did not extract every clip: {summary}")
        batched_s.append(summary.seconds)

    store = FeatureStore(folder / "store-0")
    largest = 0.0
    for extractor in extractors:
        batch = store.table(table_of_extractor(extractor.name)).read_videos(
            [path.stem for path in paths]
        )
        saved = np.stack(
            [np.load(folder / "npy-0" / extractor.name / f"{p.stem}.npy") for p in paths]
        )
        difference = np.abs(batch.features.astype(np.float32) - saved[:, 0]).max()
        largest = max(largest, float(difference / np.abs(saved).max()))

    loop_rate = len(paths) / float(np.median(loop_s))
    batched_rate = len(paths) / float(np.median(batched_s))
    print(
        f"{len(paths)} clips of 10 s, extractors {args.extractors}, size {args.size}, "
        f"device {args.device}, workers {config.decoding_workers()}, batch {args.batch_size}, "
        f"median of {args.repeats}"
    )
    print(f"  one video at a time: {loop_rate:8.2f} videos/s (runs: {_seconds(loop_s)})")
    print(f"  batched pipeline:    {batched_rate:8.2f} videos/s (runs: {_seconds(batched_s)})")
    print(f"  ratio batched / loop: {batched_rate / loop_rate:.2f}")
    paired = sorted(loop / batched for loop, batched in zip(loop_s, batched_s, strict=True))
    print(f"  ratio of each pair, sorted: {', '.join(f'{ratio:.2f}' for ratio in paired)}")
    print(f"  largest feature difference, relative to the largest value: {largest:.1e}")


def _seconds(runs: list[float]) -> str:
    return ", ".join(f"{seconds:.2f} s" for seconds in runs)


def decode_ours(path: Path) -> int:
    """8-FPS frames of every window, resized as the extractors resize; frames made."""
    count = 0
    with open_video(path, sample_rates=()) as stream:
        for window in stream.windows():
            images = torch.from_numpy(window.frames).permute(0, 3, 1, 2).float().div(255)
            tvf.resize(
                images,
                [IMAGE_SIZE, IMAGE_SIZE],
                interpolation=InterpolationMode.BILINEAR,
                antialias=False,
            )
            count += len(images)
    return count


def decode_anchors(path: Path, folder: Path, ffmpeg: str) -> int:
    """ffmpeg writes 8-FPS JPEGs, PIL reads and resizes each; frames made."""
    from PIL import Image

    frames = folder / path.stem
    frames.mkdir()
    subprocess.run(
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-i",
            str(path),
            "-vf",
            "fps=8",
            "-q:v",
            "2",
            str(frames / "%05d.jpg"),
        ],
        check=True,
    )
    count = 0
    for image in sorted(frames.glob("*.jpg")):
        with Image.open(image) as picture:
            np.asarray(picture.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
        count += 1
    return count


def decode(args: argparse.Namespace, folder: Path) -> None:
    ffmpeg = find_ffmpeg("decoding: skipped, needs imageio-ffmpeg (pip install -e '.[bench]')")
    if ffmpeg is None:
        return
    paths = write_synthetic_clips(folder / "decode", n=args.n, seconds=10)
    timings = {}
    for name, run in (
        ("ours (streaming windows)", decode_ours),
        ("ffmpeg JPEGs + PIL", lambda p: decode_anchors(p, folder / "jpegs", ffmpeg)),
    ):
        (folder / "jpegs").mkdir(exist_ok=True)
        started = time.perf_counter()
        frames = sum(run(path) for path in paths)
        timings[name] = (time.perf_counter() - started, frames)
    print(f"decoding {len(paths)} clips of 10 s at 8 FPS, frames resized to {IMAGE_SIZE}:")
    for name, (seconds, frames) in timings.items():
        print(f"  {name:26s} {len(paths) / seconds:8.2f} videos/s ({frames} frames)")
    (ours_s, _), (anchors_s, _) = timings.values()
    print(f"  ratio ours / anchors: {anchors_s / ours_s:.2f}")


def batch_sizes(args: argparse.Namespace, folder: Path) -> None:
    (clip,) = write_synthetic_clips(folder / "batch", n=1, seconds=10)
    extractors = build_extractors(args)
    with open_video(clip, sample_rates=sample_rates(extractors)) as stream:
        window = next(iter(stream.windows()))
    print(f"ms per window by windows per embed call ({args.device}, size {args.size}):")
    for extractor in extractors:
        item = extractor.preprocess(window_input(window, extractor.input))
        per_window = {}
        for size in (1, 2, 4, 8, 16):
            batch = torch.stack([item] * size)
            extractor.embed(batch)  # first call of a shape: kernel choice, allocations
            calls = max(2, 32 // size)
            started = time.perf_counter()
            for _ in range(calls):
                extractor.embed(batch).cpu()
            per_window[size] = (time.perf_counter() - started) / (calls * size) * 1000
        shown = "  ".join(f"{size}: {ms:6.2f}" for size, ms in per_window.items())
        best = min(per_window, key=per_window.get)
        print(
            f"  {extractor.name:14s} {shown}   fastest {best} "
            f"({per_window[1] / per_window[best]:.2f}x one window)"
        )


_MEASURE = """
import resource, sys
from avvp.pipeline.cli.app import app
try:
    app(sys.argv[1:])
except SystemExit as done:
    assert not done.code, done.code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


# (label, frame size, seconds): each pair is measured and compared.
MEMORY_PAIRS = (
    (("10-s clip, 320 x 240", "320x240", 10), ("10-s clip, 2048 x 2048", "2048x2048", 10)),
    (("2 minutes, 320 x 240", "320x240", 120), ("20 minutes, 320 x 240", "320x240", 1200)),
)


def write_test_video(ffmpeg: str, path: Path, size: str, seconds: int) -> Path:
    """A moving test pattern with a tone, H.264 (a keyframe every 10 s) and AAC."""
    subprocess.run(
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc=size={size}:rate=25",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:sample_rate=44100",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-c:a",
            "aac",
            "-shortest",
            str(path),
        ],
        check=True,
    )
    return path


def peak_memory(video: Path, store: Path) -> tuple[float, int, float]:
    """(peak resident MiB, windows stored, seconds) of `avvp extract` in a fresh process."""
    started = time.perf_counter()
    command = ["extract", str(video), "--store", str(store), "--size", "tiny"]
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command, "--device", "cpu"],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = len(FeatureStore(store).table(table_of_extractor("clip")).keys())
    return float(result.stdout.split()[-1]), rows, time.perf_counter() - started


def memory(args: argparse.Namespace, folder: Path) -> None:
    ffmpeg = find_ffmpeg("memory: skipped, needs imageio-ffmpeg to write the videos ('.[bench]')")
    if ffmpeg is None:
        return
    print(
        "peak resident memory of `avvp extract VIDEO --size tiny --device cpu` "
        "(a fresh process each):"
    )
    for pair in MEMORY_PAIRS:
        peaks = []
        for label, size, seconds in pair:
            name = f"{size}-{seconds}s"
            video = write_test_video(ffmpeg, folder / f"{name}.mp4", size, seconds)
            peak, rows, spent = peak_memory(video, folder / f"store-{name}")
            peaks.append(peak)
            print(f"  {label:24s} {peak:8.0f} MiB ({rows} windows, {spent:.0f} s)")
        print(f"  ratio {pair[1][0]} / {pair[0][0]}: {peaks[1] / peaks[0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="synthetic 10-s clips")
    parser.add_argument("--extractors", default="clip,r2plus1d,clap")
    parser.add_argument("--size", default="tiny", choices=["tiny", "paper"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--workers", type=int, default=None, help="default: the stage's")
    parser.add_argument("--batch-size", type=lambda v: v if v == "auto" else int(v), default="auto")
    # On a shared 2-core machine one run of either path varies by about 10%; seven
    # alternating pairs make the median ratio repeatable to about 2%.
    parser.add_argument("--repeats", type=int, default=7, help="alternating runs of each")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="paper size with random weights (timing without the weight files)",
    )
    parser.add_argument("--only", choices=["pipeline", "decode", "batch", "memory"])
    args = parser.parse_args()
    sections = {"pipeline": pipeline, "decode": decode, "batch": batch_sizes, "memory": memory}
    with tempfile.TemporaryDirectory() as folder:
        for name, section in sections.items():
            if args.only in (None, name):
                (Path(folder) / name).mkdir()
                section(args, Path(folder) / name)


if __name__ == "__main__":
    main()
