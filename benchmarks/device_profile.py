"""Where the time of device.py's steps goes, for the next change rather than the README.

  extract  cProfile of a warm `extract_videos` on generated LLP-like clips (paper-size
           extractors, random weights, 16 windows per embedding call: the largest size
           the stage's "auto" tries): the main process waits on the decoding workers
           (DataLoader's `_next_data`), on the GPU (where results come back to the CPU),
           or on the store
  parse    cProfile of a warm parse of one 10-s clip (tiny run trained here)
  train    torch.profiler over three of ours' training steps (paper size, batch 64,
           bf16 autocast): kernels by GPU time, and the step's CPU time against its GPU
           time (a step whose CPU time exceeds its kernels' waits on kernel launches)

Each section writes profile-SECTION.txt into --out ($OUT on the device machine) as it
ends. `--cpu` runs the same code on the CPU at toy sizes, to check it before a GPU
session spends its minutes.

    python benchmarks/device_profile.py [--only extract,parse,train] [--cpu] [--clips 16]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import tempfile
import time
from importlib import import_module
from pathlib import Path
from types import ModuleType

SECTIONS = ("extract", "parse", "train")


def profiled(call: object, lines: int = 45) -> tuple[float, str]:
    """Seconds of one call under cProfile, and its top functions by cumulative time."""
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.runcall(call)  # type: ignore[arg-type]
    seconds = time.perf_counter() - started
    text = io.StringIO()
    pstats.Stats(profile, stream=text).sort_stats("cumulative").print_stats(lines)
    return seconds, text.getvalue()


def profile_extract(device: ModuleType, args: argparse.Namespace) -> str:
    from avvp.extractors import RandomInit, create_extractor
    from avvp.pipeline.embedding import BatchSizer
    from avvp.pipeline.extract import ExtractConfig, extract_videos

    work = Path(tempfile.mkdtemp(prefix="avvp-profile-"))
    warm_up, *paths = device.write_clips(work / "clips", args.clips + 1)
    extractors = [
        create_extractor(name, size=device.EXTRACTOR_SIZE, weights=RandomInit(), device=args.device)
        for name in device.EXTRACTORS
    ]
    # At the largest batch "auto" tries: a profile of its search (1, 2, 4... windows per
    # call) would show the search, not the steady state.
    config = ExtractConfig(device=args.device, batch_size=BatchSizer.LIMIT)
    extract_videos(warm_up, work / "warm-up", config, extractors=extractors)
    seconds, text = profiled(
        lambda: extract_videos(paths, work / "store", config, extractors=extractors)
    )
    head = f"{len(paths)} clips in {seconds:.2f} s ({len(paths) / seconds:.2f} videos/s, "
    head += f"{config.decoding_workers()} decoding workers, {BatchSizer.LIMIT} windows per call, "
    return head + f"under cProfile)\n{text}"


def profile_parse(device: ModuleType, args: argparse.Namespace) -> str:
    work = Path(tempfile.mkdtemp(prefix="avvp-profile-"))
    run_url = device.tiny_run(work, args.device)
    clips = device.write_clips(work / "clips", 3)
    for index in (0, 1):
        device.parse_clip(run_url, clips[index], work / f"parse-{index}", args.device)
    seconds, text = profiled(
        lambda: device.parse_clip(run_url, clips[2], work / "parse-2", args.device)
    )
    return f"third parse in the process: {seconds:.2f} s under cProfile\n{text}"


def profile_train(device: ModuleType, args: argparse.Namespace) -> str:
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from avvp.pipeline.dataset import autocast
    from avvp.pipeline.train import create_optimizer
    from avvp.pipeline.train_config import OptimConfig

    helpers, target = device.load_train_step(), torch.device(args.device)
    model = helpers.build_pair()[0].to(target).train()
    optimizer = create_optimizer(model.parameters(), OptimConfig())
    batch = helpers.Batch.random(args.batch, target)

    def step() -> None:
        with autocast(target, True):
            helpers.training_step(model, optimizer, batch)

    for _ in range(3):
        step()
    on_cuda = target.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    started = time.perf_counter()
    with profile(activities=activities) as trace:
        for _ in range(3):
            step()
        if on_cuda:
            torch.cuda.synchronize()
    wall = (time.perf_counter() - started) / 3
    events = trace.key_averages()
    sort = "self_cuda_time_total" if on_cuda else "self_cpu_time_total"
    # Kernels only: an op's row also carries its kernels' device time.
    kernel_events = [e for e in events if e.device_type == DeviceType.CUDA]
    kernels = sum(e.self_device_time_total for e in kernel_events) / 3 / 1e6
    host = sum(e.self_cpu_time_total for e in events) / 3 / 1e6
    launches = sum(e.count for e in events if e.key.startswith("cuda") and "Launch" in e.key) / 3
    head = f"step wall {wall * 1e3:.1f} ms (profiled), CPU time {host * 1e3:.1f} ms, "
    head += f"GPU kernel time {kernels * 1e3:.1f} ms, "
    head += f"{launches:.0f} kernel launches per step\n"
    return head + events.table(sort_by=sort, row_limit=30)


PROFILE = {"extract": profile_extract, "parse": profile_parse, "train": profile_train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"of {','.join(SECTIONS)}")
    parser.add_argument("--cpu", action="store_true", help="on the CPU at toy sizes")
    parser.add_argument("--clips", type=int, default=32, help="clips in the profiled extraction")
    parser.add_argument("--batch", type=int, default=64, help="training batch")
    out = os.environ.get("OUT") or Path(tempfile.gettempdir(), "avvp-device")
    parser.add_argument("--out", type=Path, default=out, help="where profile-*.txt go")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device = import_module("device_steps")  # this script's folder is on sys.path
    args.device = "cpu" if args.cpu else "cuda"
    if args.cpu:
        device.EXTRACTOR_SIZE, args.clips, args.batch = "tiny", 2, 2
    args.out.mkdir(parents=True, exist_ok=True)
    for section in [s.strip() for s in args.only.split(",") if s.strip()]:
        started = time.perf_counter()
        text = PROFILE[section](device, args)
        (args.out / f"profile-{section}.txt").write_text(text)
        print(
            f"{section}: {time.perf_counter() - started:.0f} s; {text.splitlines()[0]}", flush=True
        )


if __name__ == "__main__":
    main()
