"""Import of official MM-CSE state dicts (MMCSE_Net of PengchengZhao1001/MM-CSE).

The official network keeps one nn.Linear per class (a_unmix.<k>, v_unmix.<k>,
fc_prob.fc.<k>, ...); ours stacks them. Input kinds and sizes are read from weight
shapes; the head count is not in the weights (the official code always uses 8).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .config import InputSpec, ModelConfig
from .mmcse import build_mmcse

# Input feature kinds by the input width of fc_a / fc_v.
AUDIO_KIND_BY_DIM = {768: "clap_map", 128: "segment"}  # CLAP maps, VGGish
VISUAL_KIND_BY_DIM = {768: "segment", 2048: "frames8"}  # CLIP ViT-L/14, ResNet-152
# Built by the official code but never used in its forward; accepted and dropped.
UNUSED_OFFICIAL_KEYS = frozenset(
    f"av_enhance.final_norm_{modality}.{param}" for modality in "av" for param in ("weight", "bias")
)
HEADS = ("fc_prob", "fc_frame_att", "fc_av_att")  # order of MMILHead.weight's first axis
_PARAMS = ("weight", "bias")
_ATTENTION_PARAMS = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")


def _official_sources(config: ModelConfig) -> dict[str, list[str]]:
    """Our parameter name -> the official keys stacked (in order) to make it."""
    classes = config.inputs.num_classes
    branches = range(classes + 1)
    renames = {
        "features.audio_proj": "fc_a",
        "features.visual_proj": "fc_v",
        "features.st_proj": "fc_st",
        "features.fusion": "fc_fusion",
        "audio_classes.gate.1": "alpha_a.model.1",
        "audio_classes.gate.4": "alpha_a.model.4",
        "visual_classes.gate.1": "alpha_v.model.1",
        "visual_classes.gate.4": "alpha_v.model.4",
        "audio_classes.fuse": "reduce_a.0",
        "visual_classes.fuse": "reduce_v.0",
        "decoders.audio.0": "a_recon.0",
        "decoders.audio.2": "a_recon.2",
        "decoders.visual.0": "v_recon.model.1",
        "decoders.visual.2": "v_recon.model.3",
    }
    for layer in range(config.num_layers):
        ours, theirs = f"encoder.layers.{layer}", f"av_enhance.layers.{layer}"
        renames |= {
            f"{ours}.paths.intra.lgsf.local_proj": f"{theirs}.LGSF_1.glob1",
            f"{ours}.paths.intra.lgsf.global_proj": f"{theirs}.LGSF_1.glob2",
            f"{ours}.paths.cross.lgsf.local_proj": f"{theirs}.LGSF_2.glob",
            f"{ours}.paths.intra.out_proj": f"{theirs}.fc1",
            f"{ours}.paths.cross.out_proj": f"{theirs}.fc2",
            f"{ours}.norm": f"{theirs}.norm1",
            f"{ours}.ffn.0": f"{theirs}.linear1",
            f"{ours}.ffn.3": f"{theirs}.linear2",
        }
    sources = {f"{o}.{p}": [f"{t}.{p}"] for o, t in renames.items() for p in _PARAMS}
    for layer in range(config.num_layers):
        for path, secm in (("intra", "SECM_1"), ("cross", "SECM_2")):
            for param in _ATTENTION_PARAMS:
                sources[f"encoder.layers.{layer}.paths.{path}.secm.attn.{param}"] = [
                    f"av_enhance.layers.{layer}.{secm}.attn.{param}"
                ]
    for param in _PARAMS:
        sources[f"head.{param}"] = [f"{h}.fc.{k}.{param}" for h in HEADS for k in range(classes)]
        sources[f"audio_classes.branches.in_{param}"] = [f"a_unmix.{k}.1.{param}" for k in branches]
        sources[f"visual_classes.branches.in_{param}"] = [
            f"v_unmix.{k}.1.{param}" for k in branches
        ]
        sources[f"visual_classes.branches.out_{param}"] = [
            f"v_unmix.{k}.4.{param}" for k in branches
        ]
    return sources


def _infer_config(state: Mapping[str, Any], num_heads: int) -> ModelConfig | None:
    """The config the weights describe, or None when the probe keys are missing/unknown."""
    try:
        audio_dim = state["fc_a.weight"].shape[1]
        visual_dim = state["fc_v.weight"].shape[1]
        hidden_dim = state["fc_a.weight"].shape[0]
        inputs = InputSpec(
            audio_kind=AUDIO_KIND_BY_DIM[audio_dim],
            audio_dim=audio_dim,
            visual_kind=VISUAL_KIND_BY_DIM[visual_dim],
            visual_dim=visual_dim,
            st_dim=state["fc_st.weight"].shape[1],
            num_classes=sum(1 for key in state if re.fullmatch(r"fc_prob\.fc\.\d+\.weight", key)),
        )
        return ModelConfig(
            kind="mmcse",
            inputs=inputs,
            hidden_dim=hidden_dim,
            class_dim=state["reduce_a.0.weight"].shape[0],
            num_layers=len(
                {m[1] for key in state if (m := re.match(r"av_enhance\.layers\.(\d+)\.", key))}
            ),
            num_heads=num_heads,
            ffn_dim=state["av_enhance.layers.0.linear1.weight"].shape[0],
        )
    except (KeyError, IndexError, ValueError, AttributeError):
        return None


def _unwrap(checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    for holder in ("state_dict", "model"):
        inner = checkpoint.get(holder)
        if isinstance(inner, Mapping):
            checkpoint = inner
            break
    # DataParallel saves every key under "module.".
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def _listing(keys: set[str], limit: int = 12) -> str:
    shown = sorted(keys)[:limit]
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(shown) + more if keys else "none"


def mmcse_from_official_state_dict(
    state_dict: Mapping[str, Any], *, num_heads: int = 8, source: str = "the state dict"
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Map an official MM-CSE state dict to (our config, our state dict).

    Accepts the raw state dict, a checkpoint holding it under "state_dict" or "model",
    and DataParallel "module." prefixes. Raises ValueError naming `source` with the
    missing and unexpected keys, or the shape that does not fit, for anything else.
    """
    state = _unwrap(state_dict)
    inferred = _infer_config(state, num_heads)
    config = inferred or ModelConfig(kind="mmcse", num_heads=num_heads)
    sources = _official_sources(config)
    expected = {key for keys in sources.values() for key in keys}
    missing = expected - state.keys()
    unexpected = state.keys() - expected - UNUSED_OFFICIAL_KEYS
    unexpected |= {key for key, value in state.items() if not isinstance(value, torch.Tensor)}
    if inferred is None or missing or unexpected:
        kinds = (
            f"fc_a input widths {sorted(AUDIO_KIND_BY_DIM)} and fc_v input widths "
            f"{sorted(VISUAL_KIND_BY_DIM)} are known"
        )
        raise ValueError(
            f"{source} is not an official MM-CSE (MMCSE_Net) state dict: "
            f"missing keys: {_listing(missing)}; unexpected keys: {_listing(unexpected)} "
            f"({kinds}). Pass the checkpoint saved by the official main_avvp.py "
            f"(e.g. checkpoint_best.pth), or use --kind valor for a VALOR checkpoint."
        )

    with torch.device("meta"):
        target_shapes = {k: v.shape for k, v in build_mmcse(config).state_dict().items()}
    ours: dict[str, torch.Tensor] = {}
    for name, keys in sources.items():
        tensors = [state[key] for key in keys]
        target = target_shapes[name]
        fits = (
            tensors[0].shape == target
            if len(tensors) == 1
            else len({t.shape for t in tensors}) == 1
            and len(tensors) * tensors[0].numel() == target.numel()
        )
        if not fits:
            odd = next(
                (k for k, t in zip(keys, tensors, strict=True) if t.shape != tensors[0].shape),
                keys[0],
            )
            raise ValueError(
                f"{source}: {odd} has shape {tuple(state[odd].shape)}, which does not fit our "
                f"{name} {tuple(target)} for the config inferred from fc_a, fc_v and fc_st "
                f"({config.inputs}); the file is corrupted or from another network"
            )
        # Stacking the per-class tensors (K or 3K of them) gives our stacked parameter.
        ours[name] = (tensors[0] if len(tensors) == 1 else torch.stack(tensors)).reshape(target)
    return config, ours
