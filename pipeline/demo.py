"""`avvp demo`: the whole chain on a synthetic mini-LLP, offline, on a CPU in minutes.

Generate the mini-LLP into a local store, train MM-CSE and the VALOR baseline for a few
epochs on its noisy pseudo-labels, and score on the test split: "weak labels" (the
trivial predictor that broadcasts each video's weak labels to every segment), each
network at initialisation ("<name> init") and each network trained ("<name>"). The
init columns show what training added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from avvp.model.factory import create_model
from avvp.model.metrics import segment_and_event_f1
from avvp.pipeline import tables
from avvp.pipeline.dataset import DataConfig, load_split, resolve_device
from avvp.pipeline.evaluate import evaluate_run, predict, score_split
from avvp.pipeline.synthetic import SyntheticLLPConfig, write_synthetic_llp
from avvp.pipeline.train import EpochReport, train
from avvp.pipeline.train_config import TrainConfig
from avvp.storage import LabelStore

DEMO_MODELS = {"MM-CSE": "mmcse-clapclip", "VALOR": "valor-clapclip"}
SYNTHETIC_DATA = DataConfig(pseudo_labels="synthetic", annotations="synthetic")
# On a CPU the demo trains narrower networks of the same architecture, so the whole chain
# takes a minute or two; on a GPU it trains the paper's sizes.
TINY_ARCHITECTURE = {
    "hidden_dim": 64,
    "class_dim": 32,
    "num_layers": 2,
    "num_heads": 4,
    "ffn_dim": 128,
}
ModelSize = Literal["auto", "paper", "tiny"]


@dataclass
class DemoResult:
    root: str
    num_videos: dict[str, int]
    metrics: dict[str, dict[str, float]]  # predictor name -> the eleven metrics
    runs: dict[str, str]  # model name -> run folder


def weak_label_broadcast(weak: np.ndarray, num_segments: int) -> np.ndarray:
    """Predict every weak class in every segment of both modalities: (N, 2, T, K)."""
    n, k = weak.shape
    return np.broadcast_to(weak[:, None, None, :], (n, 2, num_segments, k)).astype(np.uint8)


def demo_train_config(
    model: str, epochs: int, device: str, size: ModelSize = "auto"
) -> TrainConfig:
    """The paper's recipe shortened to a few epochs: one warm-up epoch, a higher peak
    learning rate, batch 16 (more steps), and the tiny sizes on a CPU unless asked otherwise."""
    if size == "auto":
        size = "paper" if resolve_device(device).type == "cuda" else "tiny"
    return TrainConfig(
        model=model,
        architecture=TINY_ARCHITECTURE if size == "tiny" else {},
        data=SYNTHETIC_DATA,
        epochs=epochs,
        batch_size=16,
        device=device,
        optim={"warmup_epochs": 1, "lr": 1e-3},
    )


def run_demo(
    root: str,
    config: SyntheticLLPConfig | None = None,
    epochs: int = 10,
    device: str = "auto",
    size: ModelSize = "auto",
    on_step: Callable[[str], None] | None = None,
    on_epoch: Callable[[str, EpochReport], None] | None = None,
) -> DemoResult:
    cfg = config or SyntheticLLPConfig()
    say = on_step or (lambda _: None)
    say("generating the synthetic mini-LLP")
    data = write_synthetic_llp(root, cfg)

    weak = LabelStore(root).weak().read()
    test = weak.splits == "test"
    dense = (
        LabelStore(root).segments(tables.dense_table("synthetic")).read_videos(weak.video_ids[test])
    )
    truth = np.stack([dense.audio, dense.visual], axis=1)
    pred = weak_label_broadcast(weak.labels[test], cfg.num_segments)
    metrics = {"weak labels": segment_and_event_f1(pred, truth)}

    target = resolve_device(device)
    test_split = load_split(root, SYNTHETIC_DATA, "test", target, with_dense=True)
    runs: dict[str, str] = {}
    for name, preset in DEMO_MODELS.items():
        train_config = demo_train_config(preset, epochs, device, size)
        torch.manual_seed(train_config.seed)
        untrained = create_model(train_config.model_config_resolved()).to(target)
        outputs = predict(untrained, test_split.audio, test_split.visual, test_split.visual_st)
        metrics[f"{name} init"] = score_split(outputs, test_split, train_config.filter_resolved())

        say(f"training {name} for {epochs} epochs")
        result = train(
            root,
            train_config,
            on_epoch=(lambda report, name=name: on_epoch(name, report)) if on_epoch else None,
        )
        runs[name] = result.run_url
        metrics[name] = evaluate_run(result.run_url, "test", device=device).metrics

    counts = {split: int((data.splits == split).sum()) for split in ("train", "val", "test")}
    return DemoResult(root=root, num_videos=counts, metrics=metrics, runs=runs)
