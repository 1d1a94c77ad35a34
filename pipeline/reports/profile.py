"""`avvp profile`: parameters, FLOPs and step times of a parser, like the paper's Table 5.

Parameter counts are of the parameters a graph actually uses (those that receive a
gradient), so modules built but never called do not inflate them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from ...model.config import InputSpec, get_model_config, resolve_model_name
from ...model.factory import create_model, needs_aux, training_loss
from ...model.losses import MMCSELossConfig
from ..dataset import resolve_device


@dataclass
class ProfileReport:
    model: str
    device: str
    batch_size: int
    params_train: int
    params_inference: int
    gflops_per_video: float
    forward_ms: float
    train_step_ms: float


def random_inputs(spec: InputSpec, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Random feature batches with the shapes a parser with these inputs consumes."""
    return tuple(
        torch.randn(batch, *shape, device=device) for shape in spec.feature_shapes().values()
    )


def random_targets(spec: InputSpec, batch: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Weak labels (B, K) and audio/visual pseudo-labels (B, T, K) drawn at random."""
    k, t = spec.num_classes, spec.num_segments
    weak = (torch.rand(batch, k, device=device) < 0.1).float()
    pseudo = (torch.rand(2, batch, t, k, device=device) < 0.1).float() * weak[None, :, None]
    return weak, pseudo[0], pseudo[1]


def _used_parameters(model: torch.nn.Module, loss: torch.Tensor) -> int:
    model.zero_grad(set_to_none=True)
    loss.backward()
    used = sum(p.numel() for p in model.parameters() if p.grad is not None)
    model.zero_grad(set_to_none=True)
    return used


def _time_ms(step: Callable[[], None], device: torch.device, repeats: int) -> float:
    step()  # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / repeats * 1000


def profile_model(
    model_name: str = "mmcse-clapclip",
    batch_size: int = 64,
    device: str = "auto",
    repeats: int = 5,
) -> ProfileReport:
    config = get_model_config(model_name)
    target = resolve_device(device)
    torch.manual_seed(0)
    model = create_model(config).to(target)
    loss_config = MMCSELossConfig()
    with_aux = needs_aux(config, loss_config)
    inputs = random_inputs(config.inputs, batch_size, target)
    targets = random_targets(config.inputs, batch_size, target)

    def train_loss() -> torch.Tensor:
        output = model(*inputs, with_aux=with_aux)
        return training_loss(config, output, *targets, loss_config).total

    model.eval()  # dropout off: counts and FLOPs of the deterministic graph
    params_train = _used_parameters(model, train_loss())
    params_inference = _used_parameters(model, model(*inputs).frame_logits.sum())
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(*(x[:1] for x in inputs))
    gflops = counter.get_total_flops() / 1e9

    def forward() -> None:
        with torch.no_grad():
            model(*inputs)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        train_loss().backward()

    forward_ms = _time_ms(forward, target, repeats)
    model.train()
    return ProfileReport(
        model=resolve_model_name(model_name),
        device=str(target),
        batch_size=batch_size,
        params_train=params_train,
        params_inference=params_inference,
        gflops_per_video=gflops,
        forward_ms=forward_ms,
        train_step_ms=_time_ms(train_step, target, repeats),
    )
