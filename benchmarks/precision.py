"""Each extractor's network in float32 against bfloat16, on this machine, one window a call.

What `precision="auto"` picks (`avvp.extractors.precision.network_dtype`) rests on this: per
network, the speed of bf16 against float32 in alternating pairs (the ratio of every pair,
their median and spread) and how far bf16's features are from float32's (relative error
of the whole window's features, lowest cosine of a row). Both extractors of a pair are
built from the same weights (the same file, or the same random seed).

    python benchmarks/precision.py [--size paper|tiny] [--extractors clip,r2plus1d,clap]
                                   [--device cpu] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from avvp.extractors import FeatureExtractor, RandomInit, create_extractor
from avvp.extractors.precision import cpu_has_native_bf16, network_dtype
from avvp.pipeline.embedding import window_input

sys.path.insert(0, str(Path(__file__).parent))
from extract import first_window, print_ratios  # noqa: E402  (a script beside this one)


def seconds_per_call(extractor: FeatureExtractor, batch: torch.Tensor) -> float:
    started = time.perf_counter()
    extractor.embed(batch).cpu()
    return time.perf_counter() - started


def compare(name: str, args: argparse.Namespace, folder: Path) -> None:
    weights = RandomInit() if args.size == "paper" else None
    built = {
        precision: create_extractor(
            name, size=args.size, weights=weights, device=args.device, precision=precision
        )
        for precision in ("float32", "bfloat16")
    }
    exact, rounded = built["float32"], built["bfloat16"]
    window = first_window(folder / name, [exact])
    batch = exact.preprocess(window_input(window, exact.input))[None]
    reference, features = exact.embed(batch).cpu(), rounded.embed(batch).cpu()
    relative = ((features - reference).norm() / reference.norm()).item()
    cosine = F.cosine_similarity(features.flatten(0, -2), reference.flatten(0, -2), dim=-1)
    times: dict[str, list[float]] = {"float32": [], "bfloat16": []}
    for repeat in range(args.repeats):
        for precision in ("float32", "bfloat16") if repeat % 2 == 0 else ("bfloat16", "float32"):
            times[precision].append(seconds_per_call(built[precision], batch))
    picked = network_dtype("auto", exact.device, args.size)
    print(
        f"  {name}: float32 {min(times['float32']):.3f} s, bfloat16 "
        f"{min(times['bfloat16']):.3f} s a window (fastest of {args.repeats}); bf16 features "
        f"{relative:.1e} relative from float32's, lowest row cosine {cosine.min():.5f}; "
        f"auto picks {str(picked).removeprefix('torch.')}"
    )
    ratios = [a / b for a, b in zip(times["float32"], times["bfloat16"], strict=True)]
    print_ratios("float32 time / bfloat16", ratios, indent="    ")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extractors", default="clip,r2plus1d,clap")
    parser.add_argument("--size", default="paper", choices=["tiny", "paper"])
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...")
    parser.add_argument("--repeats", type=int, default=5, help="alternating pairs")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(
        f"{args.device}, size {args.size}{' with random weights' if args.size == 'paper' else ''}"
        f", torch threads {torch.get_num_threads()}; this CPU multiplies bf16 natively: "
        f"{'yes' if cpu_has_native_bf16() else 'no'}"
    )
    with tempfile.TemporaryDirectory() as folder:
        for name in args.extractors.split(","):
            (Path(folder) / name).mkdir()
            compare(name, args, Path(folder) / name)


if __name__ == "__main__":
    main()
