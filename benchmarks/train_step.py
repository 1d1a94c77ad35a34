"""Training and inference speed of our MM-CSE against the official-layout reference.

Both networks get the same weights (the reference's random initialisation, imported into
ours with the official-state-dict importer); before timing, their outputs, auxiliaries
and loss terms on the benchmark batch must agree to --atol, or nothing is timed. A
training step is the trainer's (forward with auxiliaries, mmcse_loss, backward, gradient
clipping, its fused AdamW step) for both networks; an inference step is the forward
without auxiliaries under inference_mode. Repeats of the two networks alternate (A B,
B A, ...) so they share the machine's noise; each repeat of the two is a pair, and the
ratio reference time / ours of every pair is printed with their median and spread.
--profile adds the top ops of one inference and one training step of each, and the
ratio bound that ours' matrix products alone set.

    python benchmarks/train_step.py [--device cpu|cuda|all] [--batch 64] [--steps 3]
                                    [--repeats 5] [--threads N] [--profile] [--amp]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from avvp.model.config import ModelConfig, get_model_config
from avvp.model.losses import MMCSELoss, mmcse_loss
from avvp.model.mmcse import MMCSE, build_mmcse
from avvp.model.mmcse_import import mmcse_from_official_state_dict
from avvp.model.outputs import ParserOutput
from avvp.pipeline.train import create_optimizer
from avvp.pipeline.train_config import OptimConfig

PRESET = "mmcse-clapclip"
PREDICTIONS = ("global_prob", "a_prob", "v_prob", "frame_prob", "frame_logits")


def load_reference_module() -> ModuleType:
    """benchmarks/mmcse_reference.py, loaded by path (benchmarks/ is not a package)."""
    path = Path(__file__).with_name("mmcse_reference.py")
    spec = importlib.util.spec_from_file_location("mmcse_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class Batch:
    """Random CLAP + CLIP + R(2+1)D inputs with weak labels and pseudo-labels."""

    audio: torch.Tensor
    visual: torch.Tensor
    visual_st: torch.Tensor
    labels: torch.Tensor
    audio_pseudo: torch.Tensor
    visual_pseudo: torch.Tensor

    @classmethod
    def random(cls, batch_size: int, device: torch.device, seed: int = 0) -> Batch:
        spec = get_model_config(PRESET).inputs
        generator = torch.Generator().manual_seed(seed)
        segments, classes = spec.num_segments, spec.num_classes
        labels = (torch.rand(batch_size, classes, generator=generator) < 0.15).float()
        # Pseudo-labels only ever mark classes of the weak label.
        pseudo = torch.rand(2, batch_size, segments, classes, generator=generator) < 0.6
        pseudo = pseudo.float() * labels[:, None, :]
        tensors = cls(
            audio=torch.randn(batch_size, 64, spec.audio_dim, generator=generator),
            visual=torch.randn(batch_size, segments, spec.visual_dim, generator=generator),
            visual_st=torch.randn(batch_size, segments, spec.st_dim, generator=generator),
            labels=labels,
            audio_pseudo=pseudo[0],
            visual_pseudo=pseudo[1],
        )
        return cls(**{name: t.to(device) for name, t in vars(tensors).items()})


def build_pair(seed: int = 0, config: ModelConfig | None = None) -> tuple[MMCSE, nn.Module]:
    """(ours, reference) with equal weights: the reference's random initialisation, taken
    to ours through the official-state-dict importer. Default config: the CLAP+CLIP preset."""
    reference_module = load_reference_module()
    config = config or get_model_config(PRESET)
    torch.manual_seed(seed)
    reference = reference_module.ReferenceMMCSE(config)
    config, state = mmcse_from_official_state_dict(
        reference.state_dict(), num_heads=config.num_heads, source="the reference network"
    )
    ours = build_mmcse(config)
    ours.load_state_dict(state, strict=True)
    return ours, reference


def forward_with_loss(model: nn.Module, batch: Batch) -> tuple[ParserOutput, MMCSELoss]:
    output = model(batch.audio, batch.visual, batch.visual_st, with_aux=True)
    loss = mmcse_loss(output, batch.labels, batch.audio_pseudo, batch.visual_pseudo)
    return output, loss


def output_differences(
    ours: tuple[ParserOutput, MMCSELoss], reference: tuple[ParserOutput, MMCSELoss]
) -> dict[str, float]:
    """Max absolute difference of every prediction, auxiliary and loss term, by name."""

    def named(result: tuple[ParserOutput, MMCSELoss]) -> dict[str, torch.Tensor]:
        output, loss = result
        return {
            **{name: getattr(output, name) for name in PREDICTIONS},
            **output.aux,
            **loss.terms,
            "loss_total": loss.total,
        }

    ours_named, reference_named = named(ours), named(reference)
    if ours_named.keys() != reference_named.keys():
        raise ValueError(
            f"the two networks return different outputs: ours only "
            f"{sorted(ours_named.keys() - reference_named.keys())}, reference only "
            f"{sorted(reference_named.keys() - ours_named.keys())}"
        )
    return {
        name: (ours_named[name].float() - reference_named[name].float()).abs().max().item()
        for name in ours_named
    }


def check_same_function(ours: nn.Module, reference: nn.Module, batch: Batch, atol: float) -> float:
    """Largest difference of the two networks (eval mode, so no dropout) on `batch`;
    raises ValueError naming the outputs that differ by more than atol."""
    ours.eval()
    reference.eval()
    with torch.no_grad():
        differences = output_differences(
            forward_with_loss(ours, batch), forward_with_loss(reference, batch)
        )
    ours.train()
    reference.train()
    over = {name: diff for name, diff in differences.items() if not diff <= atol}
    if over:
        listed = ", ".join(f"{name} {diff:.2e}" for name, diff in over.items())
        raise ValueError(f"ours and the reference differ by more than {atol:g}: {listed}")
    return max(differences.values())


def training_step(model: nn.Module, optimizer: torch.optim.Optimizer, batch: Batch) -> None:
    """The trainer's step: forward with auxiliaries, loss, backward, clip, AdamW."""
    optimizer.zero_grad(set_to_none=True)
    _, loss = forward_with_loss(model, batch)
    loss.total.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), OptimConfig().grad_clip)
    optimizer.step()


def inference_step(model: nn.Module, batch: Batch) -> None:
    with torch.inference_mode():
        model(batch.audio, batch.visual, batch.visual_st)


def time_alternating(
    steps: dict[str, Callable[[], None]], n_steps: int, repeats: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per step of each callable, one value per repeat; the order of the callables
    flips every repeat so slow phases of a shared machine hit both alike."""

    def synchronize() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    seconds: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for repeat in range(repeats):
        for name in names if repeat % 2 == 0 else names[::-1]:
            synchronize()
            start = time.perf_counter()
            for _ in range(n_steps):
                steps[name]()
            synchronize()
            seconds[name].append((time.perf_counter() - start) / n_steps)
    return seconds


def report(kind: str, seconds: dict[str, list[float]]) -> None:
    """Steps/s of both (median repeat) and the ratio reference/ours of every alternating
    pair (repeat i of each), with their median and spread."""
    median = {name: statistics.median(values) for name, values in seconds.items()}
    pairs = [
        reference / ours
        for ours, reference in zip(seconds["ours"], seconds["reference"], strict=True)
    ]
    print(
        f"  {kind:<9} ours {1 / median['ours']:8.3g} steps/s   reference "
        f"{1 / median['reference']:8.3g} steps/s   ratio ours/reference "
        f"{statistics.median(pairs):5.2f} (median of {len(pairs)} pairs, "
        f"{min(pairs):.2f}-{max(pairs):.2f})"
    )
    print(f"  {'':<9} pairs in order: {', '.join(f'{ratio:.2f}' for ratio in pairs)}")


MATRIX_PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")


def profile_step(kind: str, steps: dict[str, Callable[[], None]], on_cuda: bool) -> None:
    """Top ops of one `kind` step of each network, then the bound that ours' matrix
    products alone put on the ratio: what the ratio would be if every other op were free."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if on_cuda else [])]
    sort_by = "self_cuda_time_total" if on_cuda else "self_cpu_time_total"
    seconds: dict[str, tuple[float, float]] = {}
    for name, step in steps.items():
        with profile(activities=activities) as profiler:
            step()
        events = profiler.key_averages()
        print(f"  profile of one {name} {kind} step, top ops by self time:")
        print(events.table(sort_by=sort_by, row_limit=15))
        self_us = [
            (event.key, event.self_device_time_total if on_cuda else event.self_cpu_time_total)
            for event in events
        ]
        total = sum(us for _, us in self_us) / 1e6
        products = sum(us for key, us in self_us if key in MATRIX_PRODUCTS) / 1e6
        seconds[name] = (total, products)
    (ours_total, ours_products), (reference_total, _) = seconds["ours"], seconds["reference"]
    print(
        f"  {kind}: ours' matrix products {ours_products:.2f} s of {ours_total:.2f} s "
        f"profiled; reference {reference_total:.2f} s. With every other op of ours free, "
        f"the ratio would be at most {reference_total / ours_products:.2f}"
    )


def run_on(device: torch.device, args: argparse.Namespace) -> None:
    ours, reference = build_pair()
    models = {"ours": ours.to(device).train(), "reference": reference.to(device).train()}
    batch = Batch.random(args.batch, device)
    largest = check_same_function(models["ours"], models["reference"], batch, args.atol)
    print(
        f"{device.type}, {torch.get_num_threads()} thread(s), batch {args.batch}: same weights "
        f"give the same outputs, aux and losses (max abs diff {largest:.1e} <= {args.atol:g})"
    )
    optimizers = {
        name: create_optimizer(model.parameters(), OptimConfig()) for name, model in models.items()
    }
    trainer = "the trainer's on GPU" if device.type == "cuda" else "the trainer stays float32"
    print(f"  precision: {f'bfloat16 autocast ({trainer})' if args.amp else 'float32'}")

    def timed(step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            # torch's autocast, not the trainer's: that one is CUDA's only, and this
            # also times a CPU with bf16 instructions (the trainer stays float32 there).
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
                step()

        return run

    train = {
        name: timed(lambda m=model, o=optimizers[name]: training_step(m, o, batch))
        for name, model in models.items()
    }
    infer = {
        name: timed(lambda m=model: inference_step(m, batch)) for name, model in models.items()
    }
    time_alternating(train, 1, 1, device)  # warm-up: allocator, kernels, optimizer state
    print(f"  {args.repeats} alternating pairs of {args.steps} steps each")
    report("training", time_alternating(train, args.steps, args.repeats, device))
    for model in models.values():
        model.eval()
    time_alternating(infer, 1, 1, device)
    report("inference", time_alternating(infer, args.steps, args.repeats, device))
    if args.profile:
        profile_step("inference", infer, device.type == "cuda")
        for model in models.values():
            model.train()
        profile_step("training", train, device.type == "cuda")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda", "all"], default="all")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    parser.add_argument("--atol", type=float, default=1e-4, help="equality check tolerance")
    parser.add_argument("--profile", action="store_true", help="profile one training step")
    parser.add_argument(
        "--amp", action="store_true", help="time both under bfloat16 autocast (CUDA or CPU)"
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device here; use --device cpu")
    every_device = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    for device in every_device if args.device == "all" else [args.device]:
        try:
            run_on(torch.device(device), args)
        except ValueError as error:
            sys.exit(f"not timed: {error}")


if __name__ == "__main__":
    main()
