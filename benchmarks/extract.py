"""Extraction speed and memory, each against a reference measured in the same run.

1. Pipeline: `extract_videos` (decoding in worker processes, windows of many videos
   batched through each extractor, parts of many rows in the feature store) against a
   one-video-at-a-time loop in the official repositories' style (decode one video,
   embed one window at a time per extractor, `np.save` one file per video). Both use
   the same extractors, built once, in this process with torch's same threads; each
   path first runs on a warm-up clip of its own; then `--repeats` alternating pairs
   (which side goes first takes turns), each pair's ratio printed with their median
   and spread, and the features checked equal (up to the store's float16). On a CPU,
   paper sizes take a minute a clip: `--size paper --random-weights --n 2 --repeats 3`.
2. Decoding alone at 8 FPS, from the file path to 224 x 224 uint8 frames (the size CLIP
   takes, R(2+1)D's 112 resized from it): our streaming decoder
   (`open_video(..., frame_size=(224, 224))`: PyAV skipping the frames no output needs,
   scaling in swscale, converting to RGB on a thread beside the decoder; its frames come
   as the extractors take them, one (80, 224, 224, 3) array per window) against the
   official feature scripts' route (one (N, 224, 224, 3) array), the ffmpeg
   program writing 8-FPS JPEG files, then PIL reading and resizing them. On the LLP
   sample clip and on generated 640 x 360 clips (x264 ultrafast at 25 FPS, and x264's
   default preset, with B-frames, at 30 FPS); per kind, alternating pairs, each pair's
   ratio, the median and spread, with both sides' frame counts checked equal; after each
   pair, the decoding inside ours alone (PyAV on one thread, the same frames skipped,
   none converted), whose time bounds the ratio ours can reach. Needs the `bench` extra
   (imageio-ffmpeg ships the ffmpeg program).
3. Windows per embed call: each extractor's time per window at batch sizes 1 to 16
   (1 and 2 for paper sizes on a CPU), what `batch_size="auto"` measures while it
   runs, against one window per call: each shape called once first, then `--repeats`
   rounds of one call per size (ascending, then descending), each round's ratios
   printed with their median and spread. Every section runs with freed memory kept for
   reuse, as the extraction stage runs on a CPU; `--only batch --heap system` shows the
   same with glibc's defaults, where large batches lose (`keep_freed_memory`).
4. Layout: R(2+1)D as its extractor runs it (conv3d in channels-last layout on a CPU)
   against the same network in torch's default layout, one window per call,
   alternating pairs, with the largest difference of their outputs.
5. Peak memory: the resident set of a fresh `avvp extract VIDEO --size tiny --device
   cpu` process (CLIP, R(2+1)D and CLAP tiny networks, the stage's defaults otherwise)
   on generated videos, two by two: a 10-s clip of 320 x 240 against one of 2048 x 2048
   (frames over 960 x 480 are scaled in the decoder, and resized one at a time), and a
   320 x 240 video of 2 minutes against one of 20 (decoding streams window by window).
   Each pair's ratio is printed; by design both stay near 1. A third pair runs the
   20-minute video with glibc's heap defaults against freed memory kept for reuse.
6. Loader: the extraction stage's own loader alone (`window_loader`: decoding and the
   extractors' transforms, no network) on generated LLP-like clips (320 x 240, 30 FPS,
   B-frames: device.py's), alternating pairs. First `--workers` decoding processes
   (default: one per CPU, all of them busy) with each video decoder's threads shared
   out among them, the stage's default, against every decoder on as many threads as
   there are CPUs (about each decoder's own choice); then one clip decoded in this
   process, as the stage now does a shard of one video, against one worker process
   for it (the process's start included, as in the stage).

    python benchmarks/extract.py [--n 32] [--workers N] [--batch-size auto|N] [--repeats 7]
    python benchmarks/extract.py --size paper --device cuda [--random-weights]
    python benchmarks/extract.py --only pipeline|decode|batch|layout|memory|loader
    python benchmarks/extract.py --only batch --heap system
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from avvp.contract import FPS
from avvp.extractors import FeatureExtractor, RandomInit, create_extractor
from avvp.pipeline.embedding import keep_freed_memory, table_of_extractor, window_input
from avvp.pipeline.extract import ExtractConfig, extract_videos
from avvp.pipeline.sources.decode import Window, open_video
from avvp.pipeline.sources.frame_readers import PyAVFrames
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

    def loop(out: Path) -> float:
        return one_video_at_a_time(paths, extractors, out)

    def batched(out: Path) -> float:
        started = time.perf_counter()
        summary = extract_videos(paths, out, config, extractors=extractors)
        if summary.failures or summary.videos_extracted != len(paths):
            raise SystemExit(f"the batched run did not extract every clip: {summary}")
        return time.perf_counter() - started

    # Both paths run once on a clip of their own first, so neither pays first-call costs
    # (imports, allocator growth, kernel selection) in the timing; both then run in this
    # process with the same extractors and torch's same threads.
    one_video_at_a_time([warm_up], extractors, folder / "warm-up-npy")
    extract_videos(warm_up, folder / "warm-up-store", config, extractors=extractors)

    # Alternating pairs, each into fresh outputs, the first of a pair taking turns, so
    # slow phases of a shared machine and any order effect hit both alike.
    loop_s, batched_s = [], []
    for repeat in range(args.repeats):
        runs = [(loop, loop_s, "npy"), (batched, batched_s, "store")]
        for run, times, kind in runs if repeat % 2 == 0 else runs[::-1]:
            times.append(run(folder / f"{kind}-{repeat}"))

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

    print(
        f"{len(paths)} clips of 10 s, extractors {args.extractors}, size {args.size}, "
        f"device {args.device}, workers {config.decoding_workers()}, batch {args.batch_size}, "
        f"torch threads {torch.get_num_threads()}, {args.repeats} alternating pairs"
    )
    print(f"  one video at a time: {len(paths) / np.median(loop_s):8.3f} videos/s (median)")
    print(f"  batched pipeline:    {len(paths) / np.median(batched_s):8.3f} videos/s (median)")
    print(f"    loop runs:    {_seconds(loop_s)}")
    print(f"    batched runs: {_seconds(batched_s)}")
    paired = zip(loop_s, batched_s, strict=True)
    print_ratios("batched / loop", [one / many for one, many in paired])
    print(f"  largest feature difference, relative to the largest value: {largest:.1e}")


def _seconds(runs: list[float]) -> str:
    return ", ".join(f"{seconds:.2f} s" for seconds in runs)


def print_ratios(label: str, ratios: list[float], indent: str = "  ") -> None:
    """Speed ratios of alternating pairs: their median, spread and each of them."""
    ordered = sorted(ratios)
    print(
        f"{indent}ratio {label}: median {np.median(ordered):.2f} "
        f"(pairs {ordered[0]:.2f} to {ordered[-1]:.2f}: {', '.join(f'{r:.2f}' for r in ordered)})"
    )


def decode_ours(path: Path) -> tuple[list[np.ndarray], int]:
    """Our streaming decoder (`open_video` windows), frames scaled in the decoder to the
    extractors' input size: each window's 8-FPS frames (80, 224, 224, 3) uint8, as the
    extractors take them, and the clip's frame count."""
    with open_video(path, sample_rates=(), frame_size=(IMAGE_SIZE, IMAGE_SIZE)) as stream:
        return [window.frames for window in stream.windows()], stream.info.frame_count


def decode_floor(path: Path) -> int:
    """The libavcodec work inside ours: PyAV on one decoder thread decoding the frames our
    decoder decodes (it skips the same ones), converting none; the frames decoded."""
    reader = PyAVFrames(path, FPS, None, threads=1)
    try:
        return sum(1 for _ in reader._decoded)
    finally:
        reader.close()


def joined(windows: list[np.ndarray], count: int) -> np.ndarray:
    """The clip's frames from its windows (a padded last window repeats its last frame)."""
    return np.concatenate(windows)[:count]


def decode_anchors(path: Path, folder: Path, ffmpeg: str) -> np.ndarray:
    """The official feature scripts' route: the ffmpeg program writes 8-FPS JPEG files,
    PIL reads each and resizes it to the extractors' input size; (N, 224, 224, 3) uint8."""
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
    images = []
    for image in sorted(frames.glob("*.jpg")):
        with Image.open(image) as picture:
            resized = picture.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
            images.append(np.asarray(resized))
    return np.stack(images)


def write_decode_clip(ffmpeg: str, path: Path, rate: int) -> Path:
    """A 10-s 640 x 360 moving picture at `rate` FPS in H.264 with libx264's default
    preset (B-frames, as uploads from cameras and editors commonly have), no audio."""
    subprocess.run(
        [
            ffmpeg,
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=640x360:rate={rate}",
            "-t",
            "10",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            str(path),
        ],
        check=True,
    )
    return path


def decode_clip_kinds(ffmpeg: str, folder: Path) -> dict[str, list[Path]]:
    """The clips each decoding comparison runs on, by kind."""
    folder.mkdir()
    sample = Path(__file__).resolve().parents[1] / "tests" / "data" / "BjCEufrlXm4.mp4"
    return {
        "LLP sample (320 x 240, 29.9 FPS, B-frames)": [sample],
        "640 x 360, 25 FPS, x264 ultrafast (no B-frames)": [
            write_test_video(ffmpeg, folder / f"ultrafast-{i}.mp4", "640x360", 10) for i in range(2)
        ],
        "640 x 360, 30 FPS, x264 default preset (B-frames)": [
            write_decode_clip(ffmpeg, folder / f"default-{i}.mp4", 30) for i in range(2)
        ],
    }


def decode(args: argparse.Namespace, folder: Path) -> None:
    ffmpeg = find_ffmpeg("decoding: skipped, needs imageio-ffmpeg (pip install -e '.[bench]')")
    if ffmpeg is None:
        return
    kinds = decode_clip_kinds(ffmpeg, folder / "clips")
    jpegs = folder / "jpegs"
    print(
        f"decoding 10-s clips at 8 FPS into {IMAGE_SIZE} x {IMAGE_SIZE} uint8 frames, from the "
        f"file path, {args.repeats} alternating pairs per kind (ratio: anchors' time / ours):"
    )
    for number, (kind, paths) in enumerate(kinds.items()):
        # Same frames on both sides: their count, and how far apart the pictures are: the
        # first frames are one source frame (scaling and JPEG differences); later ones differ
        # in choice too (the anchors' fps filter takes the nearest frame, ours the one shown).
        (jpegs / f"check-{number}").mkdir(parents=True)
        pictures = [
            (joined(*decode_ours(p)), decode_anchors(p, jpegs / f"check-{number}", ffmpeg))
            for p in paths
        ]
        if any(len(ours) != len(anchors) for ours, anchors in pictures):
            counts = [(len(ours), len(anchors)) for ours, anchors in pictures]
            raise SystemExit(f"{kind}: frame counts differ (ours, anchors): {counts}")
        apart = np.mean([np.abs(o.astype(np.int16) - a).mean() for o, a in pictures])
        first = np.mean([np.abs(o[0].astype(np.int16) - a[0]).mean() for o, a in pictures])
        seconds: dict[str, list[float]] = {"ours": [], "anchors": []}
        floor: list[float] = []
        for repeat in range(args.repeats):
            out = jpegs / f"{number}-{repeat}"
            out.mkdir()
            # Alternate which side goes first, so slow phases of a shared machine hit both.
            for name in ("ours", "anchors")[:: 1 if repeat % 2 == 0 else -1]:
                started = time.perf_counter()
                for path in paths:
                    decode_ours(path) if name == "ours" else decode_anchors(path, out, ffmpeg)
                seconds[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            decoded = sum(decode_floor(path) for path in paths)
            floor.append(time.perf_counter() - started)
        ratios = [a / o for o, a in zip(seconds["ours"], seconds["anchors"], strict=True)]
        frames = sum(len(ours) for ours, _ in pictures)
        print(f"  {kind}: {len(paths)} clip(s), {frames} frames each way")
        for name, runs in seconds.items():
            print(f"    {name:8s} median {np.median(runs):6.2f} s (runs: {_seconds(runs)})")
        print(
            f"    ratio per pair: {', '.join(f'{r:.2f}' for r in ratios)}; median "
            f"{np.median(ratios):.2f}, spread {min(ratios):.2f}-{max(ratios):.2f}"
        )
        print(f"    mean |ours - anchors|: first frames {first:.1f}, all {apart:.1f} levels")
        bound = np.median(seconds["anchors"]) / np.median(floor)
        print(
            f"    of ours, decoding alone ({decoded} frames on one thread, after each pair): "
            f"median {np.median(floor):.2f} s; anchors / that {bound:.2f}, the most ours "
            "could reach on this machine without decoding faster"
        )


def first_window(folder: Path, extractors: list[FeatureExtractor]) -> Window:
    """The first window of a synthetic 10-s clip written into `folder`, decoded for
    `extractors`."""
    (clip,) = write_synthetic_clips(folder, n=1, seconds=10)
    with open_video(clip, sample_rates=sample_rates(extractors)) as stream:
        return next(iter(stream.windows()))


def batch_sizes(args: argparse.Namespace, folder: Path) -> None:
    extractors = build_extractors(args)
    window = first_window(folder / "batch", extractors)
    # A paper network on a CPU takes seconds to a minute per window: fewer sizes there.
    sizes = (1, 2, 4, 8, 16) if args.size == "tiny" or args.device != "cpu" else (1, 2)
    print(
        f"ms per window by windows per embed call ({args.device}, size {args.size}, torch "
        f"threads {torch.get_num_threads()}; median of {args.repeats} alternating rounds):"
    )
    for extractor in extractors:
        item = extractor.preprocess(window_input(window, extractor.input))
        batches = {size: torch.stack([item] * size) for size in sizes}
        for batch in batches.values():
            extractor.embed(batch).cpu()  # first call of a shape: kernel choice, allocations
        # One call of each size per round, ascending then descending in turn, so that a
        # slow phase of a shared machine hits every size alike.
        rounds: list[dict[int, float]] = []
        for repeat in range(args.repeats):
            per_window = {}
            for size in sizes if repeat % 2 == 0 else sizes[::-1]:
                started = time.perf_counter()
                extractor.embed(batches[size]).cpu()
                per_window[size] = (time.perf_counter() - started) / size * 1000
            rounds.append(per_window)
        median = {size: float(np.median([r[size] for r in rounds])) for size in sizes}
        shown = "  ".join(f"{size}: {ms:7.1f}" for size, ms in median.items())
        print(f"  {extractor.name:14s} {shown}")
        for size in sizes[1:]:
            ratios = [r[1] / r[size] for r in rounds]
            print_ratios(f"{size} windows / 1 window per call", ratios, indent="    ")


def layout(args: argparse.Namespace, folder: Path) -> None:
    """R(2+1)D as the extractor runs it (channels-last conv3d on a CPU) against the same
    network in torch's default layout, one window per call, alternating pairs."""
    weights = RandomInit() if args.random_weights else None
    extractor = create_extractor("r2plus1d", size=args.size, weights=weights, device=args.device)
    window = first_window(folder / "layout", [extractor])
    batch = extractor.preprocess(window_input(window, extractor.input))[None]
    default = copy.deepcopy(extractor.network).to(memory_format=torch.contiguous_format)

    def ours() -> torch.Tensor:
        return extractor.embed(batch).cpu()

    def anchor() -> torch.Tensor:
        with torch.no_grad():
            return default(batch.flatten(0, 1).to(args.device)).cpu()

    difference = (ours().flatten() - anchor().flatten()).abs().max().item()  # first calls
    seconds: dict[str, list[float]] = {"ours": [], "anchor": []}
    for repeat in range(args.repeats):
        for name, run in [("anchor", anchor), ("ours", ours)][:: 1 if repeat % 2 else -1]:
            started = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - started)
    print(
        f"R(2+1)D, size {args.size}, {args.device}, torch threads {torch.get_num_threads()}, "
        f"one window per call: the extractor's layout "
        f"{np.median(seconds['ours']) * 1000:.1f} ms, torch's default "
        f"{np.median(seconds['anchor']) * 1000:.1f} ms (medians); largest difference "
        f"{difference:.1e}"
    )
    paired = zip(seconds["anchor"], seconds["ours"], strict=True)
    print_ratios("default layout time / ours", [a / o for a, o in paired])


_MEASURE = """
import resource, sys
from avvp.pipeline.cli.app import app
try:
    app(sys.argv[1:])
except SystemExit as done:
    assert not done.code, done.code
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


# (label, frame size, seconds, freed memory kept): each pair is measured and compared.
MEMORY_PAIRS = (
    (
        ("10-s clip, 320 x 240", "320x240", 10, True),
        ("10-s clip, 2048 x 2048", "2048x2048", 10, True),
    ),
    (
        ("2 minutes, 320 x 240", "320x240", 120, True),
        ("20 minutes, 320 x 240", "320x240", 1200, True),
    ),
    (
        ("20 minutes, glibc's heap", "320x240", 1200, False),
        ("20 minutes, freed kept", "320x240", 1200, True),
    ),
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


def peak_memory(video: Path, store: Path, kept: bool) -> tuple[float, int, float]:
    """(peak resident MiB, windows stored, seconds) of `avvp extract` in a fresh process,
    with freed memory kept for reuse (the stage's default) or not."""
    started = time.perf_counter()
    settings = store.with_suffix(".json")
    settings.write_text(json.dumps({"reuse_freed_memory": kept}))
    command = ["extract", str(video), "--store", str(store), "--size", "tiny"]
    command += ["--config", str(settings)]
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
    # Each (video, heap) is measured once: the heap pair reuses the 20-minute kept run.
    measured: dict[tuple[str, int, bool], tuple[float, int, float]] = {}
    for pair in MEMORY_PAIRS:
        peaks = []
        for label, size, seconds, kept in pair:
            name = f"{size}-{seconds}s"
            if (size, seconds, kept) not in measured:
                video = folder / f"{name}.mp4"
                if not video.exists():
                    write_test_video(ffmpeg, video, size, seconds)
                store = folder / f"store-{name}-{'kept' if kept else 'system'}"
                measured[size, seconds, kept] = peak_memory(video, store, kept)
            peak, rows, spent = measured[size, seconds, kept]
            peaks.append(peak)
            print(f"  {label:24s} {peak:8.0f} MiB ({rows} windows, {spent:.0f} s)")
        print(f"  ratio {pair[1][0]} / {pair[0][0]}: {peaks[1] / peaks[0]:.2f}")


def loader(args: argparse.Namespace, folder: Path) -> None:
    """The stage's loader alone: decoder threads shared out among the decoding processes
    against every decoder on all CPUs; one clip in this process against a worker; the
    clips as one shard against shards of 8 videos; shards of 8 with the decoding workers
    kept from shard to shard against each shard starting its own."""
    from device_steps import write_clips  # this script's folder is on sys.path
    from torch.utils.data import DataLoader

    from avvp.pipeline.decoding_workers import close_decoding_workers
    from avvp.pipeline.embedding import VideoEnd, as_is
    from avvp.pipeline.extract import plan_extraction, window_loader

    extractors = build_extractors(args)
    workers = args.workers or os.cpu_count() or 1
    clips = write_clips(folder / "clips", max(args.n, 2 * workers) + 1)
    *paths, single = clips
    shared = ExtractConfig(
        extractors=[e.name for e in extractors],
        device=args.device,
        workers=workers,
        shard_videos=len(paths),
    )
    unshared = shared.model_copy(update={"decoder_threads": os.cpu_count() or 1})
    stores = iter(range(10**6))

    def timed(videos: list[Path], config: ExtractConfig, forced_workers: int | str | None) -> float:
        """Seconds for every window of `videos` out of the stage's loader, shard after
        shard; with `forced_workers`, the stage's dataset in that many worker processes;
        with "fresh", the decoding workers kept from an earlier shard closed first (each
        shard starts its own, as the stage did before it kept them)."""
        root = folder / f"store-{next(stores)}"
        started = time.perf_counter()
        ends = []
        for shard in plan_extraction(videos, root, config).shards:
            stage = window_loader(shard, extractors, root, config)
            if forced_workers == "fresh":
                close_decoding_workers()
            elif forced_workers is not None:
                loader = DataLoader(
                    stage.dataset, batch_size=None, num_workers=forced_workers, collate_fn=as_is
                )
                ends += [item for item in loader if isinstance(item, VideoEnd)]
                continue
            with stage as items:
                ends += [item for item in items if isinstance(item, VideoEnd)]
        close_decoding_workers()  # each timing starts with none kept
        assert len(ends) == len(videos) and all(end.failure is None for end in ends)
        return time.perf_counter() - started

    small_shards = shared.model_copy(update={"shard_videos": 8})
    cases = (
        (paths, "shared out", (shared, None), "all CPUs each", (unshared, None)),
        ([single], "in this process", (shared, None), "one worker", (shared, 1)),
        (paths, "one shard", (shared, None), "shards of 8 videos", (small_shards, None)),
        (
            paths,
            "shards of 8, workers kept",
            (small_shards, None),
            "shards of 8, each starting its workers",
            (small_shards, "fresh"),
        ),
    )
    for videos, ours_name, ours, anchor_name, anchor in cases:
        timed(videos[:2], *ours)
        timed(videos[:2], *anchor)
        seconds: dict[str, list[float]] = {"ours": [], "anchor": []}
        for repeat in range(args.repeats):
            for name, case in [("ours", ours), ("anchor", anchor)][:: 1 if repeat % 2 else -1]:
                seconds[name].append(timed(videos, *case))
        print(
            f"the stage's loader alone, {len(videos)} LLP-like 10-s clip(s), "
            f"{args.extractors} ({args.size}), {os.cpu_count()} CPUs, decoding processes "
            f"{workers if len(videos) > 1 else '0 / 1'}: {ours_name} "
            f"{_seconds(seconds['ours'])}; {anchor_name} {_seconds(seconds['anchor'])}"
        )
        paired = zip(seconds["anchor"], seconds["ours"], strict=True)
        print_ratios(f"{anchor_name} time / {ours_name}", [a / o for a, o in paired])


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
    parser.add_argument(
        "--only", choices=["pipeline", "decode", "batch", "layout", "memory", "loader"]
    )
    parser.add_argument(
        "--heap",
        choices=["kept", "system"],
        default="kept",
        help="kept: freed memory kept for reuse from the start, as the extraction stage "
        "does on a CPU (`keep_freed_memory`); system: glibc's defaults, for the batch and "
        "layout sections (the pipeline section runs the stage, which keeps it)",
    )
    args = parser.parse_args()
    if args.heap == "system" and args.only not in ("batch", "layout", "decode"):
        parser.error("--heap system needs --only batch, layout or decode")
    if args.heap == "kept":
        kept = keep_freed_memory()
        print(f"heap: freed memory {'kept for reuse' if kept else 'as the C library does'}")
    sections = {
        "pipeline": pipeline,
        "decode": decode,
        "batch": batch_sizes,
        "layout": layout,
        "memory": memory,
        "loader": loader,
    }
    with tempfile.TemporaryDirectory() as folder:
        for name, section in sections.items():
            if args.only in (None, name):
                (Path(folder) / name).mkdir()
                section(args, Path(folder) / name)


if __name__ == "__main__":
    main()
