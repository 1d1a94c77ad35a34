"""What an extractor's network computes in: float32 or bfloat16, by device and size.

On CUDA bf16 runs under autocast; on a CPU the weights themselves are cast (see
`FeatureExtractor`), and only where the CPU multiplies bf16 in hardware is bf16 the
default: elsewhere torch emulates it, far slower than float32.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from .base import Size

Precision = Literal["auto", "float32", "bfloat16"]


def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AVX512-BF16 or AMX): there
    bf16 products run 2-3x float32's; elsewhere torch emulates them, about 9x slower."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def to_bf16_but_scalars(network: torch.nn.Module) -> torch.nn.Module:
    """`network` with its floating tensors in bf16, in place, but for its scalars (CLIP's
    and CLAP's logit scales), which stay float32 and exact: a 0-dim tensor does not
    promote the bf16 tensors it meets, so the products stay bf16."""
    for tensor in (*network.parameters(), *network.buffers()):
        if tensor.is_floating_point() and tensor.ndim > 0:
            tensor.data = tensor.data.to(torch.bfloat16)
    return network


def network_dtype(precision: Precision, device: torch.device, size: Size) -> torch.dtype:
    """The dtype an extractor's network computes in.

    "auto": bfloat16 on CUDA (under autocast) and, for the paper networks, on a CPU
    with native bf16 (measured on 2 Zen 4 cores: CLIP 1.97x, R(2+1)D 1.95x, CLAP 1.61x
    float32's speed, features within 1.1% relative: `benchmarks/precision.py`); float32
    otherwise. The tiny networks stay float32 on every CPU so that tests and demos
    give the same features on every machine.
    """
    if precision != "auto":
        return torch.bfloat16 if precision == "bfloat16" else torch.float32
    on_bf16_cpu = device.type == "cpu" and size == "paper" and cpu_has_native_bf16()
    return torch.bfloat16 if device.type == "cuda" or on_bf16_cpu else torch.float32
