"""Inference: a trained run or checkpoint -> per-window outputs (the OUT.npz layout).

Evaluation scores these outputs; batch parsing of new videos will turn them into events.
Both load a run with `load_run` and predict with `predict` / `predict_windows`, so a
window is scored and parsed by exactly the same code path.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..storage import Keys, RunDir, open_run
from .dataset import (
    SplitTensors,
    WindowFeatures,
    autocast,
    load_window_features,
    resolve_device,
)
from .sources.checkpoints import load_checkpoint, read_checkpoint, read_feature_file
from .train_config import TrainConfig

OUTPUT_KEYS: tuple[str, ...] = ("global_prob", "a_prob", "v_prob", "frame_prob", "frame_logits")


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    audio: torch.Tensor,
    visual: torch.Tensor,
    visual_st: torch.Tensor,
    batch_size: int = 256,
    amp: bool = True,
) -> dict[str, np.ndarray]:
    """Model outputs for stacked windows as float32 NumPy arrays (the OUT.npz layout)."""
    model.eval()
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name in OUTPUT_KEYS}
    for start in range(0, len(audio), batch_size):
        rows = slice(start, start + batch_size)
        with autocast(audio.device, amp):
            out = model(audio[rows], visual[rows], visual_st[rows])
        for name in OUTPUT_KEYS:
            outputs[name].append(getattr(out, name).float().cpu())
    return {name: torch.cat(parts).numpy() for name, parts in outputs.items()}


@dataclass
class LoadedRun:
    """A finished run's store root, folder, training config and network (eval mode)."""

    root: str
    run: RunDir
    config: TrainConfig
    model: torch.nn.Module
    device: torch.device


# The run loaded last, under the digest of what it was loaded from: a parse opens its run
# twice (its extraction settings, then its predictions), and the unpickling and building
# cost more than the whole rest of a one-clip parse (0.08-0.11 s of 0.55 s, tiny run).
_LAST_LOADED: dict[str, LoadedRun] = {}


def load_run(run_url: str, device: str = "auto") -> LoadedRun:
    """Open a run folder `<store>/runs/<id>` and load its checkpoint onto `device`.

    A run loaded again from the same bytes onto the same device is the same object (its
    network in eval mode, which no caller changes); any other load replaces it.
    """
    root, run = open_run(run_url)
    if not run.exists("checkpoint.pt"):
        raise FileNotFoundError(f"{run.url} holds no checkpoint.pt: is it a finished run?")
    config_bytes, checkpoint = run.read_bytes("config.json"), run.read_bytes("checkpoint.pt")
    target = resolve_device(device)
    digest = hashlib.sha256(config_bytes)
    digest.update(checkpoint)
    key = f"{run.url}|{target}|{digest.hexdigest()}"
    if key in _LAST_LOADED:
        return _LAST_LOADED[key]
    forget_loaded_runs()  # no two networks held at once
    config = TrainConfig.model_validate(json.loads(config_bytes)["train"])
    model, _ = load_checkpoint(checkpoint, target, f"{run.url}/checkpoint.pt")
    _LAST_LOADED[key] = LoadedRun(root, run, config, model.to(target).eval(), target)
    return _LAST_LOADED[key]


def forget_loaded_runs() -> None:
    """Drop the run `load_run` holds (its network's memory; a benchmark's equal start)."""
    _LAST_LOADED.clear()


def predict_windows(
    loaded: LoadedRun, keys: Keys, batch_size: int = 256, root: str | None = None
) -> dict[str, np.ndarray]:
    """Outputs for the given (video, window) keys of a store (default: the run's own),
    read from the feature tables the run was trained on."""
    features = load_window_features(root or loaded.root, loaded.config.data, keys, loaded.device)
    return predict_loaded(loaded, features, batch_size)


def predict_loaded(
    loaded: LoadedRun, features: WindowFeatures | SplitTensors, batch_size: int = 256
) -> dict[str, np.ndarray]:
    """The run's outputs for windows' features (or a split's) already on its device."""
    return predict(
        loaded.model,
        features.audio,
        features.visual,
        features.visual_st,
        batch_size=batch_size,
        amp=loaded.config.amp,
    )


def infer_features(
    checkpoint: str | Path,
    features: str | Path,
    out: str | Path,
    batch_size: int = 256,
    device: str = "auto",
) -> int:
    """Run a checkpoint on a FEATURES.npz and write OUT.npz (float32); returns N.

    The `video_ids` of FEATURES.npz, when it has them, are copied into OUT.npz, which
    `evaluate_prediction_file` (`avvp evaluate-predictions`) then scores as it is.
    """
    target = resolve_device(device)
    model, _ = read_checkpoint(checkpoint, target)
    arrays, video_ids = read_feature_file(features, model.config)
    tensors = {key: torch.from_numpy(value).to(target) for key, value in arrays.items()}
    outputs = predict(model.to(target), **tensors, batch_size=batch_size)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    ids = {} if video_ids is None else {"video_ids": video_ids}
    np.savez(out, **ids, **{key: value.astype(np.float32) for key, value in outputs.items()})
    return len(arrays["audio"])
