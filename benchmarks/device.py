"""Every GPU figure of the project in one markdown table, each step in its own time budget.

Steps, each in a process of its own (a hang, a crash or an out-of-memory error costs its
own rows only, and its peak GPU memory is its own):
  tests    the tests marked `gpu` (pytest -m gpu), pass / fail counts
  train    MM-CSE at paper size, batch 64, bf16 autocast as the trainer runs on a GPU:
           training and inference steps/s against the official-math reference with
           the same weights (benchmarks/train_step.py's helpers), checked equal first;
           then ours captured as one CUDA graph per step against the same reference
           (both are bound by kernel launches at batch 64: what capture would give)
  extract  paper-size extractors with random weights on generated LLP-like clips
           (320 x 240 H.264 + AAC, 10 s): videos/s of `extract_videos`, decoding in CPU
           worker processes beside the GPU, against the stage's loader alone (decoding
           and preprocessing the same clips, no network: the most extraction can reach
           with those workers; again with each video decoder on all CPUs instead of
           its share), then with one worker per CPU but one; the latency of one clip;
           the networks alone (embedding calls of 16 windows, the steady state's
           size): the rate the GPU's work alone allows
  parse    the parse-folder chain on a 10-s clip, a tiny run trained here: the median
           of 5 warm calls
The steps' measuring code is benchmarks/device_steps.py; this file runs them, shares out
the budget and prints the table.
A step that outruns its share of --budget is killed and its rows say "timed out".
--smoke runs every step on the CPU at toy sizes (batch 2, one clip, one repeat and step,
tiny extractors): it checks the measuring code before a GPU session spends its minutes
on it, and its figures, marked "smoke", measure nothing.

    bash benchmarks/device.sh [--dry-run]        (bare machine: venv, install, then this)
    python benchmarks/device.py [--dry-run | --smoke] [--only tests,train,extract,parse]
                                [--budget S] [--batch 64] [--clips 64] [--repeats 3]
                                [--out DIR]
    python benchmarks/device.py --not-run "REASON"    (the table, every row REASON)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from importlib import import_module
from pathlib import Path

# Only the standard library at module level, here and in device_steps (this script's
# folder, first on sys.path): device.sh prints the table with this file and the system's
# python3 when the install itself failed.
import device_steps as steps

STEPS = ("tests", "train", "extract", "parse")
# Each step's seconds when the budget allows them all; shares shrink when it does not.
BUDGETS = {"tests": 45, "train": 75, "extract": 200, "parse": 100}
# (step, row key, figure); {batch} and {clips} are filled from the arguments.
ROWS = (
    ("tests", "tests", "GPU tests (pytest -m gpu)"),
    ("train", "train", "training step, MM-CSE paper size, batch {batch}, bf16"),
    ("train", "infer", "inference step, MM-CSE paper size, batch {batch}, bf16"),
    ("train", "train_memory", "peak GPU memory, training + inference"),
    ("train", "train_graph", "training step as above, ours captured as one CUDA graph"),
    ("train", "infer_graph", "inference step as above, ours captured as one CUDA graph"),
    ("extract", "extract", "extraction, paper size, random weights, {clips} LLP-like 10-s clips"),
    ("extract", "decode", "the extraction's loader alone (decode, preprocess), same clips"),
    ("extract", "decode_unshared", "the loader alone, every video decoder on all CPUs"),
    ("extract", "decode_small_shards", "the loader alone, shards of 8 videos"),
    ("extract", "extract_wide", "extraction as above, one decoding worker per CPU but one"),
    ("extract", "extract_latency", "extraction of one 10-s clip, paper size"),
    ("extract", "extract_networks", "the three networks alone, 16 windows per call"),
    ("extract", "extract_clip_cast", "CLIP alone, bf16 weights instead of autocast"),
    ("extract", "extract_memory", "peak GPU memory, extraction"),
    ("parse", "parse", "parse latency of one 10-s clip (tiny run, warm, median of 5)"),
    ("parse", "parse_memory", "peak GPU memory, parse"),
)
# What the steps import, checked by --dry-run (module: names).
NEEDS = {
    "pytest": "main",
    "avvp.extractors": "RandomInit create_extractor",
    "avvp.pipeline.chain": "EXTRACT_AND_TRAIN PARSE_FOLDER ChainConfig ParseFolderConfig run_local",
    "avvp.pipeline.dataset": "autocast",
    "avvp.pipeline.embedding": "BatchSizer VideoEnd window_input",
    "avvp.pipeline.extract": "ExtractConfig extract_videos plan_extraction window_loader",
    "avvp.pipeline.parse": "ParseConfig",
    "avvp.pipeline.sources.decode": "open_video",
    "avvp.pipeline.synthetic.clips": "encode_clip write_synthetic_clips",
    "avvp.pipeline.train": "create_optimizer",
    "avvp.pipeline.train_config": "OptimConfig",
}


def run_step(
    step: str, timeout: float, args: argparse.Namespace, out: Path
) -> dict[str, list[str]]:
    """One step in a process (and session) of its own; its rows, or why it has none."""
    # Results stay out of `out`: the device tool brings back at most 8 files from there.
    result = Path(tempfile.mkdtemp(prefix="avvp-device-")) / f"{step}.json"
    log = out / f"device-{step}.log"
    command = [sys.executable, __file__, "--step", step, "--result", str(result)]
    command += ["--smoke"] if args.smoke else []
    for name in ("batch", "clips", "repeats", "steps", "workers", "atol"):
        if (value := getattr(args, name)) is not None:
            command += [f"--{name}", str(value)]
    with log.open("w") as stream:
        process = subprocess.Popen(
            command, stdout=stream, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code, timed_out = process.wait(timeout), False
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # the step and its pytest or decoders
            code, timed_out = process.wait(), True
    found = json.loads(result.read_text()) if result.is_file() else {}
    if timed_out:
        found["*"] = [f"timed out after {timeout:.0f} s", f"see {log.name}"]
    elif code != 0:
        lines = log.read_text(errors="replace").strip().splitlines() or ["no output"]
        found["*"] = [f"failed (exit {code}): {lines[-1][:160]}", f"see {log.name}"]
    return found


def table(rows: dict[str, list[str]], args: argparse.Namespace) -> str:
    """The markdown table; a row without a result of its own takes its step's "*" entry."""
    lines = ["| figure | value | anchor / ratio | command |", "| --- | --- | --- | --- |"]
    for step, key, figure in ROWS:
        cells = rows.get(key) or rows.get(f"{step}:*") or rows.get("*") or ["not selected", ""]
        cells = [*cells, f"python benchmarks/device.py --only {step}"][:3]
        label = figure.format(batch=args.batch, clips=args.clips)
        value = f"smoke: {cells[0]}" if args.smoke and cells[0] else cells[0]
        text = [label, value, cells[1], f"`{cells[2]}`"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in text) + " |")
    return "\n".join(lines)


def dry_run(args: argparse.Namespace) -> None:
    """Everything a measured run needs, short of CUDA: imports, helpers, configs, the
    three extractors (tiny: each network's library imported and built), a clip."""
    for module, names in NEEDS.items():
        if missing := [n for n in names.split() if not hasattr(import_module(module), n)]:
            raise SystemExit(f"{module} lacks {', '.join(missing)}")
    from avvp.extractors import RandomInit, create_extractor
    from avvp.pipeline.extract import ExtractConfig
    from avvp.pipeline.parse import ParseConfig

    for name in steps.EXTRACTORS:
        create_extractor(name, size="tiny", weights=RandomInit(), device="cpu")

    steps.load_train_step()
    ExtractConfig(device="cuda", workers=args.workers)
    ParseConfig(device="cuda", timelines=False)
    with tempfile.TemporaryDirectory() as folder:
        steps.write_clips(Path(folder), 1, seconds=1)
    files = ", ".join(steps.gpu_test_files()) or "none"
    print(f"dry run: no step measured; GPU test files: {files}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="check everything but CUDA")
    parser.add_argument(
        "--smoke", action="store_true", help="run the steps on the CPU at toy sizes"
    )
    parser.add_argument("--not-run", metavar="REASON", help="print the table, every row REASON")
    parser.add_argument("--only", default=",".join(STEPS), help=f"steps, of {','.join(STEPS)}")
    parser.add_argument("--budget", type=float, default=420, help="seconds for all steps")
    parser.add_argument("--batch", type=int, default=64, help="training and inference batch")
    parser.add_argument("--clips", type=int, default=64, help="clips per extraction run")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (medians)")
    parser.add_argument("--steps", type=int, default=5, help="training steps per repeat")
    parser.add_argument("--workers", type=int, help="decoding processes (default: the stage's)")
    # benchmarks/train_step.py's 1e-4 is a CPU figure; CUDA's float32 kernels sum in
    # other orders, and a paper-size network's outputs then differ more.
    parser.add_argument("--atol", type=float, default=1e-3, help="ours vs reference, float32")
    out = os.environ.get("OUT") or Path(tempfile.gettempdir(), "avvp-device")
    parser.add_argument("--out", type=Path, default=out, help="table and step logs")
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    only = [step.strip() for step in args.only.split(",") if step.strip()]
    if unknown := set(only) - set(STEPS):
        parser.error(f"--only: unknown steps {', '.join(sorted(unknown))}")
    if min(args.batch, args.clips, args.repeats, args.steps, args.budget) <= 0:
        parser.error("--batch, --clips, --repeats, --steps and --budget must be positive")
    if args.smoke:
        steps.DEVICE, steps.EXTRACTOR_SIZE = "cpu", "tiny"
        args.batch, args.clips, args.repeats, args.steps = 2, 1, 1, 1
    if args.step:
        steps.MEASURE[args.step](args, steps.Rows(args.result))
        return
    rows: dict[str, list[str]] = {}
    if args.not_run:
        rows["*"] = [args.not_run, ""]
    elif args.dry_run:
        dry_run(args)
        rows.update({f"{step}:*": ["dry run (not measured)", ""] for step in only})
    else:
        import torch

        if args.smoke:
            print(f"smoke run on the CPU, toy sizes, torch {torch.__version__}: nothing measured")
        elif not torch.cuda.is_available():
            parser.exit(2, "device.py: torch sees no CUDA device here; --dry-run checks the rest\n")
        else:
            name = torch.cuda.get_device_name()
            print(
                f"{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
                f"{os.cpu_count()} CPUs"
            )
        args.out.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + args.budget
        for index, step in enumerate(only):
            later = sum(BUDGETS[s] for s in only[index + 1 :])
            left = deadline - time.monotonic()
            share = min(BUDGETS[step], left * BUDGETS[step] / (BUDGETS[step] + later))
            if args.smoke:
                # A check of code, not a figure: a loaded machine (CI) must not fail it,
                # so a step may take what is left but 30 s for each step after it.
                share = left - 30 * (len(only) - index - 1)
            if share < 10:
                rows[f"{step}:*"] = ["not run: the budget was spent", f"--budget {args.budget:g}"]
                continue
            started = time.monotonic()
            found = run_step(step, share, args, args.out)
            rows.update({f"{step}:*" if key == "*" else key: cells for key, cells in found.items()})
            print(f"{step}: {time.monotonic() - started:.0f} s of {share:.0f}", flush=True)
    text = table(rows, args)
    print(text)
    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "device-table.md").write_text(text + "\n")
    if any(cells[0].startswith(("failed", "timed out")) for cells in rows.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
