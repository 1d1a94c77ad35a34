"""The measurements behind benchmarks/device.py's steps, each run in a process of its own
by device.py (`MEASURE[step](args, rows)`): the GPU tests, MM-CSE's training and
inference steps against the official-math reference, extraction at paper size on
generated LLP-like clips, and the latency of a parse. Their helpers (the clips, the tiny
run, the one-clip parse) serve benchmarks/device_profile.py and benchmarks/extract.py
too. Like device.py, only the standard library at module level.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HELPERS = "build_pair Batch training_step inference_step time_alternating check_same_function"
# Module constants, so that --smoke swaps them in each step's process.
DEVICE = "cuda"
EXTRACTOR_SIZE = "paper"
EXTRACTORS = ("clip", "r2plus1d", "clap")


def load_train_step() -> ModuleType:
    """benchmarks/train_step.py, loaded by path; fails naming any helper it lacks."""
    spec = importlib.util.spec_from_file_location("train_step", ROOT / "benchmarks/train_step.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if missing := [name for name in HELPERS.split() if not hasattr(module, name)]:
        raise SystemExit(f"benchmarks/train_step.py lacks {', '.join(missing)}")
    return module


def gpu_test_files() -> list[str]:
    """Test files that can hold GPU tests: those naming the gpu mark or CUDA."""
    pattern = re.compile(r"mark\.gpu|cuda\.is_available")
    return sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "tests").glob("test_*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    )


def write_clips(folder: Path, n: int, seconds: float = 10) -> list[Path]:
    """LLP-like clips: 320 x 240 at 30 FPS, H.264 (x264 veryfast: B-frames, as YouTube's
    High profile has) of a moving gradient under fresh grain, a 44.1 kHz tone of its own
    per clip (so each file is its own content). Written with PyAV, which the package
    needs anyway: the GPU machine's image has no imageio-ffmpeg (whose ffmpeg program
    alone is a 68-MB wheel, more than a device call carries)."""
    import numpy as np

    from avvp.pipeline.synthetic.clips import encode_clip

    folder.mkdir(parents=True, exist_ok=True)
    fps, rate = 30, 44_100
    rows, columns = np.mgrid[0:240, 0:320].astype(np.int16)

    def one(index: int) -> Path:
        rng = np.random.default_rng(index)
        shifts = (4 * np.arange(round(seconds * fps), dtype=np.int16) + 40 * index)[:, None, None]
        base = (rows + 2 * columns + shifts) % 256  # moves each frame
        frames = np.stack([base, 255 - base, (base + 85) % 256], axis=-1)
        frames += rng.integers(-12, 13, size=frames.shape, dtype=np.int16)
        times = np.arange(round(seconds * rate)) / rate
        tone = 0.3 * np.sin(2 * np.pi * (200 + 10 * index) * times)
        path = folder / f"llp-like-{index:04d}.mp4"
        clip = np.clip(frames, 0, 255).astype(np.uint8)
        return encode_clip(path, clip, fps, audio=tone, audio_rate=rate, preset="veryfast")

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(one, range(n)))


class Rows(dict[str, list[str]]):
    """A step's rows, written to its result file as each is set: a step killed or failed
    part-way keeps the rows it finished."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path

    def __setitem__(self, key: str, cells: list[str]) -> None:
        super().__setitem__(key, cells)
        partial = self.path.with_suffix(".partial")
        partial.write_text(json.dumps(self))
        partial.replace(self.path)  # whole or not there, even if the step is killed


def mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


class GpuMemory:
    """torch.cuda's allocated-memory counters, read after the queued work ends; zero in a
    --smoke run on the CPU."""

    def __init__(self) -> None:
        import torch

        self.cuda = torch.cuda if DEVICE == "cuda" else None

    def peak(self) -> int:
        if self.cuda is None:
            return 0
        self.cuda.synchronize()
        return self.cuda.max_memory_allocated()

    def resident_after_reset(self) -> int:
        """Restarts the peak; returns what is allocated now."""
        if self.cuda is None:
            return 0
        self.cuda.synchronize()
        self.cuda.reset_peak_memory_stats()
        return self.cuda.memory_allocated()


def measure_tests(args: argparse.Namespace, rows: Rows) -> None:
    files = gpu_test_files()
    report = Path(tempfile.mkdtemp(prefix="avvp-device-")) / "gpu-tests.xml"
    command = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", *files]
    subprocess.run([sys.executable, *command, f"--junitxml={report}"], cwd=ROOT, check=False)
    counts = dict.fromkeys(("tests", "failures", "errors", "skipped"), 0)
    for suite in ElementTree.parse(report).getroot().iter("testsuite"):
        for name in counts:
            counts[name] += int(suite.get(name, 0))
    failed = counts["failures"] + counts["errors"]
    passed = counts["tests"] - failed - counts["skipped"]
    verdict = "all pass" if passed and not failed and not counts["skipped"] else "NOT all pass"
    value = f"{passed} passed, {failed} failed, {counts['skipped']} skipped"
    rows["tests"] = [value, verdict, "python " + " ".join(command)]


def under_bf16(step: Callable[[], None], cache: bool = True) -> Callable[[], None]:
    """`step` under bf16 autocast on CUDA as the trainer runs it (avvp.pipeline.dataset's
    `autocast`), float32 on the CPU; `cache` False drops autocast's cache of cast weights."""
    import torch

    def run() -> None:
        on_cuda = DEVICE == "cuda"
        with torch.autocast(DEVICE, torch.bfloat16, enabled=on_cuda, cache_enabled=cache):
            step()

    return run


def measure_train(args: argparse.Namespace, rows: Rows) -> None:
    import statistics

    import torch

    from avvp.pipeline.train import create_optimizer
    from avvp.pipeline.train_config import OptimConfig

    helpers, device = load_train_step(), torch.device(DEVICE)
    ours, reference = helpers.build_pair()
    models = {"ours": ours.to(device).train(), "reference": reference.to(device).train()}
    batch = helpers.Batch.random(args.batch, device)
    # Equality is checked in float32, where the two must agree; timing is under bf16.
    largest = helpers.check_same_function(models["ours"], models["reference"], batch, args.atol)
    optimizers = {
        name: create_optimizer(m.parameters(), OptimConfig()) for name, m in models.items()
    }

    def row(kind: str) -> list[str]:
        steps = train if kind == "train" else infer
        helpers.time_alternating(steps, 1, 1, device)  # kernels, allocator, optimizer state
        seconds = helpers.time_alternating(steps, args.steps, args.repeats, device)
        ours_s, reference_s = (statistics.median(seconds[name]) for name in models)
        anchor = f"reference {1 / reference_s:,.1f} steps/s, ratio ours/reference "
        anchor += f"{reference_s / ours_s:.2f} (median of {args.repeats})"
        return [f"{1 / ours_s:,.1f} steps/s", f"{anchor}; equal to {largest:.0e}"]

    train = {
        name: under_bf16(lambda m=model, o=optimizers[name]: helpers.training_step(m, o, batch))
        for name, model in models.items()
    }
    infer = {
        name: under_bf16(lambda m=model: helpers.inference_step(m, batch))
        for name, model in models.items()
    }
    rows["train"] = row("train")
    # What one training step of ours adds over what is resident (both networks, states).
    memory = GpuMemory()
    peak = memory.peak()
    resident = memory.resident_after_reset()
    train["ours"]()
    step_peak = memory.peak() - resident
    for model in models.values():
        model.eval()
    rows["infer"] = row("infer")
    peak = max(peak, memory.peak())
    rows["train_memory"] = [mib(peak), f"both networks resident; ours' step adds {mib(step_peak)}"]
    # Last: a failed capture may leave the CUDA context unusable for what follows.
    reference_steps = {"train_graph": train["reference"], "infer_graph": infer["reference"]}
    graphed_rows(helpers, models, batch, reference_steps, args, rows)


def graphed_rows(
    helpers: ModuleType,
    models: dict[str, Any],
    batch: Any,
    reference_steps: dict[str, Any],
    args: argparse.Namespace,
    rows: Rows,
) -> None:
    """Ours' training and inference steps replayed from CUDA graphs against the
    reference's eager steps as timed above (`reference_steps`, by row key): a trial for
    the trainer, which does not capture yet. A capture that fails says why in its row."""
    import copy
    import statistics

    import torch

    from avvp.pipeline.train import create_optimizer
    from avvp.pipeline.train_config import OptimConfig

    if DEVICE != "cuda":
        for key in reference_steps:
            rows[key] = ["needs CUDA", "not captured on the CPU"]
        return
    device = torch.device(DEVICE)
    ours = copy.deepcopy(models["ours"])
    optimizer = create_optimizer(ours.parameters(), OptimConfig())
    for group in optimizer.param_groups:
        group["capturable"] = True  # its step count stays on the GPU, as capture needs

    # A cast cache would hold tensors made outside the graph's memory pool.
    ours_steps = {
        "train_graph": under_bf16(lambda: helpers.training_step(ours, optimizer, batch), False),
        "infer_graph": under_bf16(lambda: helpers.inference_step(ours, batch), False),
    }
    failed = ""
    for key, step in ours_steps.items():
        if failed:
            rows[key] = [f"not tried: {failed}", ""]
            continue
        training = key == "train_graph"
        for model in (ours, models["reference"]):
            model.train(training)
        try:
            graph = captured(step)
        except Exception as error:  # a trial: its row says why, the rows before it stand
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            rows[key] = [f"capture failed: {first[:120]}", type(error).__name__]
            failed = f"{key} failed, and a failed capture can leave CUDA unusable"
            continue
        steps = {"ours": graph.replay, "reference": reference_steps[key]}
        helpers.time_alternating(steps, 1, 1, device)
        seconds = helpers.time_alternating(steps, args.steps, args.repeats, device)
        ours_s, reference_s = (statistics.median(seconds[name]) for name in steps)
        rows[key] = [
            f"{1 / ours_s:,.1f} steps/s",
            f"reference {1 / reference_s:,.1f} steps/s, ratio ours/reference "
            f"{reference_s / ours_s:.2f} (median of {args.repeats})",
        ]


def captured(step: Any) -> Any:
    """`step` captured as one CUDA graph after three warm-up calls on a side stream (as
    torch's whole-network capture asks: the allocator and the kernels settle first)."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph


def loader_alone(
    paths: list[Path], root: Path, config: Any, extractors: list[Any], fresh: bool = False
) -> float:
    """Seconds for the extraction stage's own loader (plan, decoding workers, the
    extractors' transforms) to deliver every window of `paths` with no network behind it:
    the rate extraction with those workers approaches when the GPU waits on decoding.
    `fresh`: each shard starts its own decoding workers (the stage keeps them)."""
    from avvp.pipeline.decoding_workers import close_decoding_workers
    from avvp.pipeline.embedding import VideoEnd
    from avvp.pipeline.extract import plan_extraction, window_loader

    close_decoding_workers()
    started = time.perf_counter()
    ends = []
    for shard in plan_extraction(paths, root, config).shards:
        if fresh:
            close_decoding_workers()
        with window_loader(shard, extractors, root, config) as items:
            ends += [item for item in items if isinstance(item, VideoEnd)]
    if len(ends) != len(paths) or any(end.failure is not None for end in ends):
        raise SystemExit(f"the loader did not decode every clip: {len(ends)} of {len(paths)}")
    return time.perf_counter() - started


def measure_extract(args: argparse.Namespace, rows: Rows) -> None:
    import statistics

    from avvp.extractors import RandomInit, create_extractor
    from avvp.pipeline.extract import ExtractConfig, extract_videos

    work = Path(tempfile.mkdtemp(prefix="avvp-device-"))
    *paths, warm_up, single = write_clips(work / "clips", args.clips + 2)
    weights = RandomInit()
    extractors = [
        create_extractor(n, size=EXTRACTOR_SIZE, weights=weights, device=DEVICE) for n in EXTRACTORS
    ]
    config = ExtractConfig(device=DEVICE, workers=args.workers)
    wide = config.model_copy(update={"workers": max(1, (os.cpu_count() or 2) - 1)})
    stores = itertools.count()

    def run(videos: Path | list[Path], settings: ExtractConfig = config) -> float:
        store = work / f"store-{next(stores)}"
        summary = extract_videos(videos, store, settings, extractors=extractors)
        wanted = len(videos) if isinstance(videos, list) else 1
        if summary.failures or summary.videos_extracted != wanted:
            raise SystemExit(f"extraction did not extract every clip: {summary.line()}")
        return summary.seconds

    def rate(measure: Any) -> float:
        return len(paths) / statistics.median(measure() for _ in range(args.repeats))

    def loaded(settings: ExtractConfig, fresh: bool = False) -> float:
        """Videos/s of the stage's loader alone with `settings` (`loader_alone`)."""

        def once() -> float:
            store = work / f"store-{next(stores)}"
            return loader_alone(paths, store, settings, extractors, fresh)

        return rate(once)

    run(warm_up)  # first calls: kernels, allocator, the batch size measurement
    extracted = rate(lambda: run(paths))
    workers = config.decoding_workers()
    anchor = f"{extracted * 10:,.0f} s of video per s; {workers} decoding workers"
    rows["extract"] = [f"{extracted:,.2f} videos/s", f"{anchor}; median of {args.repeats}"]
    decoded = loaded(config)
    rows["decode"] = [
        f"{decoded:,.2f} videos/s",
        f"{workers} workers; extraction ran at {extracted / decoded:.0%} of it",
    ]
    cpus = os.cpu_count() or 1
    unshared = config.model_copy(update={"decoder_threads": cpus})
    unshared_rate = loaded(unshared)
    rows["decode_unshared"] = [
        f"{unshared_rate:,.2f} videos/s",
        f"{cpus} decoder threads each, not "
        f"{max(1, cpus // workers) if workers else 'its own choice'}; the "
        f"shared threads' rate is {decoded / unshared_rate:.2f}x this",
    ]
    small_shards = config.model_copy(update={"shard_videos": 8})
    small_rate, fresh_rate = loaded(small_shards), loaded(small_shards, fresh=True)
    shards = -(-len(paths) // config.shard_videos)
    rows["decode_small_shards"] = [
        f"{small_rate:,.2f} videos/s",
        f"shards of 8 videos ({-(-len(paths) // 8)}) with the workers kept, not of "
        f"{config.shard_videos} ({shards}): {small_rate / decoded:.2f}x that rate; "
        f"{small_rate / fresh_rate:.2f}x shards of 8 each starting its workers",
    ]
    wide_rate = rate(lambda: run(paths, wide))
    rows["extract_wide"] = [
        f"{wide_rate:,.2f} videos/s",
        f"{wide.decoding_workers()} workers; {wide_rate / extracted:.2f}x the rate with {workers}",
    ]
    rows["extract_latency"] = [f"{run(single):.2f} s", "warm extractors, fresh store"]
    per_window = networks_alone(single, extractors, args.repeats)
    rows["extract_networks"] = [
        f"{1 / sum(per_window.values()):,.2f} videos/s",
        "ms per window (one per 10-s clip), copy to the GPU included: "
        + ", ".join(f"{name} {seconds * 1000:.1f}" for name, seconds in per_window.items()),
    ]
    clip = next(e for e in extractors if e.name == "clip")
    cast, difference = clip_with_bf16_weights(single, clip, args.repeats)
    rows["extract_clip_cast"] = [
        f"{cast * 1000:,.1f} ms per window",
        f"{per_window['clip'] / cast:.2f}x the speed of CLIP as it runs above "
        f"({per_window['clip'] * 1000:.1f} ms); features within {difference:.1e} relative",
    ]
    rows["extract_memory"] = [mib(GpuMemory().peak()), ", ".join(EXTRACTORS)]


def steady_batches(path: Path, extractors: list[Any]) -> dict[str, Any]:
    """Each extractor's input batch of 16 copies of `path`'s first window
    (`BatchSizer.LIMIT`, the size the GPU settles at), by extractor name."""
    from avvp.pipeline.embedding import BatchSizer, window_input
    from avvp.pipeline.sources.decode import open_video

    rates = sorted({e.input.sample_rate for e in extractors} - {None})
    with open_video(path, sample_rates=rates) as stream:
        window = next(iter(stream.windows()))
    batches = {}
    for extractor in extractors:
        one = extractor.preprocess(window_input(window, extractor.input))
        batches[extractor.name] = one.expand(BatchSizer.LIMIT, *one.shape).contiguous()
    return batches


def seconds_per_window(call: Any, windows: int, repeats: int) -> float:
    """Median seconds of `call()` over `repeats` after a first call, per window."""
    import statistics

    import torch

    seconds = []
    for _ in range(repeats + 1):
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        call()
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[1:]) / windows


def networks_alone(path: Path, extractors: list[Any], repeats: int) -> dict[str, float]:
    """Seconds per window of each extractor's embedding calls of 16 windows, median of
    `repeats` after a first call: the GPU's share of extraction, no decoding behind it."""
    batches = steady_batches(path, extractors)
    return {
        e.name: seconds_per_window(
            lambda e=e: e.embed(batches[e.name]), len(batches[e.name]), repeats
        )
        for e in extractors
    }


def clip_with_bf16_weights(path: Path, clip: Any, repeats: int) -> tuple[float, float]:
    """A trial: seconds per window of CLIP's image tower with its weights cast to bf16
    and no autocast (torch then takes nn.MultiheadAttention's fused path, as the
    extractors do on a CPU), 16 windows per call, and the largest relative difference of
    its features from the extractor's own (autocast on CUDA)."""
    import copy

    import torch
    import torch.nn.functional as F

    batch = steady_batches(path, [clip])[clip.name]
    frames = batch.flatten(0, 1).to(DEVICE, torch.bfloat16)
    network = copy.deepcopy(clip.network).to(torch.bfloat16)

    def embed() -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(network.encode_image(frames).float(), dim=-1)

    own = clip.embed(batch).flatten(0, 1)
    difference = ((embed() - own).norm(dim=-1) / own.norm(dim=-1)).max().item()
    return seconds_per_window(embed, len(batch), repeats), difference


def quiet(level: str, message: str) -> None:
    """The chain's progress lines: not figures."""


def tiny_run(work: Path, device: str) -> str:
    """The URL of a tiny run trained on `device` by the extract-and-train chain, on 12
    generated 10-s clips in `work`."""
    from avvp.pipeline import chain as chains
    from avvp.pipeline.synthetic.clips import write_synthetic_clips

    write_synthetic_clips(work / "train-clips", n=12, seconds=10, seed=7)
    on_device = {"device": device}
    chain = chains.ChainConfig(
        videos=[str(work / "train-clips" / "videos")],
        labels=str(work / "train-clips"),
        store=str(work / "run-store"),
        extractor_size="tiny",
        pseudo_labels="dense",
        epochs=1,
        config={
            **{"extract": on_device, "train": {**on_device, "size": "tiny"}},
            "evaluate": on_device,
            "splits": ["test"],
        },
    )
    return chains.run_local(chains.EXTRACT_AND_TRAIN, chain, quiet).train.run_url


def parse_clip(run_url: str, path: Path, out: Path, device: str) -> None:
    """The parse-folder chain on one clip, as a user runs it; stops on a failed parse."""
    from avvp.pipeline import chain as chains
    from avvp.pipeline.parse import ParseConfig

    settings = ParseConfig(device=device, timelines=False).model_dump()
    params = chains.ParseFolderConfig(
        videos=[str(path)], run=run_url, out=str(out), config=settings
    )
    if failed := chains.run_local(chains.PARSE_FOLDER, params, quiet).parse.failed:
        raise SystemExit(f"the parse of {path} failed: {failed}")


def measure_parse(args: argparse.Namespace, rows: Rows) -> None:
    import statistics

    work = Path(tempfile.mkdtemp(prefix="avvp-device-"))
    run_url = tiny_run(work, DEVICE)

    def parse(path: Path, name: str) -> float:
        started = time.perf_counter()
        parse_clip(run_url, path, work / f"parse-{name}", DEVICE)
        return time.perf_counter() - started

    first, *others = write_clips(work / "clips", 6)
    cold = parse(first, "cold")
    warm = statistics.median(parse(path, f"warm-{i}") for i, path in enumerate(others))
    rows["parse"] = [f"{warm:.2f} s", f"first call in the process {cold:.2f} s"]
    rows["parse_memory"] = [mib(GpuMemory().peak()), "tiny networks"]


MEASURE = {"tests": measure_tests, "train": measure_train, "extract": measure_extract}
MEASURE["parse"] = measure_parse
