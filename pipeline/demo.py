"""`avvp demo`: the whole chain on synthetic data, offline, on a CPU in a few minutes.

From clips (the default): write small synthetic video files with planted audio and
visual events (`avvp synth clips`), extract CLIP, R(2+1)D and CLAP features with the
tiny presets into a local store, import the clips' LLP-format labels, derive noisy
segment pseudo-labels from the planted events (standing in for VALOR's), then train
MM-CSE and the VALOR baseline for a few epochs and score the test split. From features
(`source="features"`): the same chain on the feature-level synthetic mini-LLP, which
skips decoding and extraction.

The scores shown: "weak labels" (the trivial predictor that broadcasts each video's weak
labels to every segment), each network at initialisation ("<name> init") and trained
("<name>"); the init columns show what training added.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import fsspec
import numpy as np
import torch

from avvp.model.factory import create_model
from avvp.model.metrics import segment_and_event_f1
from avvp.pipeline import tables
from avvp.pipeline.chain import ChainConfig
from avvp.pipeline.dataset import DataConfig, load_split, resolve_device
from avvp.pipeline.evaluate import EvaluateConfig, evaluate_run, score_split
from avvp.pipeline.extract import ExtractConfig, extract_videos
from avvp.pipeline.infer import predict
from avvp.pipeline.llp import LLPAnnotations, youtube_id
from avvp.pipeline.llp_labels import import_llp_labels
from avvp.pipeline.synth_clips import planted_dense_labels, write_synthetic_clips
from avvp.pipeline.synthetic import SyntheticLLPConfig, noisy_pseudo_labels, write_synthetic_llp
from avvp.pipeline.train import EpochReport, train
from avvp.pipeline.train_config import ModelSize, TrainConfig
from avvp.storage import LabelStore, Provenance

DEMO_MODELS = {"MM-CSE": "mmcse-clapclip", "VALOR": "valor-clapclip"}
SYNTHETIC_DATA = DataConfig(pseudo_labels="synthetic", annotations="synthetic")
CLIP_DATA = DataConfig(pseudo_labels="synthetic", annotations="corrected")
DEMO_CLIPS = 200
DEMO_ACTIVE_CLASSES = 10  # fewer classes, more examples of each, in a small demo
DemoSource = Literal["clips", "features"]
# Epochs per model. From clips, 40 epochs stopped MM-CSE while its visual scores still
# rose (best epoch 39, Seg-v 49); at 60 it settles (best epoch 52, Seg-v 84). The
# feature-level set is easy: both parsers reach Avg 95+ within 15 epochs.
DEMO_EPOCHS: dict[str, int] = {"clips": 60, "features": 15}


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
    model: str,
    epochs: int,
    device: str,
    size: ModelSize = "auto",
    data: DataConfig = SYNTHETIC_DATA,
) -> TrainConfig:
    """The paper's recipe shortened to a few epochs: one warm-up epoch, a higher peak
    learning rate, batch 16 (more steps), and the tiny sizes on a CPU unless asked otherwise."""
    return TrainConfig(
        model=model,
        size=size,
        data=data,
        epochs=epochs,
        batch_size=16,
        device=device,
        optim={"warmup_epochs": 1, "lr": 1e-3},
    )


def clips_folder(root: str) -> Path:
    """Where the demo writes its clips: beside the store when it is local."""
    fs, path = fsspec.core.url_to_fs(root)
    if "file" in fs.protocol:
        return Path(path) / "clips"
    return Path(tempfile.mkdtemp(prefix="avvp-demo-clips-"))


def write_demo_clips(root: str, n_clips: int, seed: int, say: Callable[[str], None]) -> Path:
    """Synthetic clips, their LLP-format labels and noisy pseudo-labels of their planted
    events (the `synthetic` source, standing in for VALOR's) in `root`; returns the
    clips' folder. The pseudo-labels need only the label files, not the features."""
    folder = clips_folder(root)
    say(f"writing {n_clips} synthetic clips to {folder}")
    write_synthetic_clips(folder, n=n_clips, seed=seed, active_classes=DEMO_ACTIVE_CLASSES)
    filenames = LLPAnnotations.load(folder).split("full")
    dense = planted_dense_labels(folder, filenames)
    weak = dense.max(axis=(1, 2))
    pseudo = noisy_pseudo_labels(dense, weak, 0.15, np.random.default_rng(seed))
    ids = [youtube_id(name) for name in filenames]
    LabelStore(root).segments(tables.pseudo_label_table("synthetic")).write(
        ids,
        np.zeros(len(ids), dtype=np.int32),
        pseudo[:, 0],
        pseudo[:, 1],
        Provenance(source="synthetic-clips-planted-events", version="1", extras={"flip": 0.15}),
    )
    return folder


def demo_chain(
    root: str, folder: Path, model: str, train_config: TrainConfig, device: str
) -> ChainConfig:
    """The extract-and-train parameters of one demo model on the demo clips."""
    train = train_config.model_dump(mode="json", exclude={"model", "epochs", "data"})
    return ChainConfig(
        videos=[str(folder / "videos")],
        labels=str(folder),
        store=root,
        preset="tiny",
        pseudo_labels="synthetic",
        model=model,
        epochs=train_config.epochs,
        config={
            "extract": {"device": device},
            "train": train,
            "evaluate": {"device": device},
            "splits": ["test"],
        },
    )


def extract_clips_directly(root: str, folder: Path, device: str) -> None:
    """The demo's extraction and label import without a flow runner."""
    config = ExtractConfig(preset="tiny", device=device, labels=str(folder))
    summary = extract_videos(folder / "videos", root, config)
    if summary.failures:
        raise ValueError(f"extraction failed for {len(summary.failures)} demo clips")
    import_llp_labels(root, folder)


ChainRunner = Callable[[ChainConfig], dict]


def run_demo(
    root: str,
    config: SyntheticLLPConfig | None = None,
    epochs: int | None = None,
    device: str = "auto",
    size: ModelSize = "auto",
    on_step: Callable[[str], None] | None = None,
    on_epoch: Callable[[str, EpochReport], None] | None = None,
    source: DemoSource = "clips",
    n_clips: int = DEMO_CLIPS,
    run_chain: ChainRunner | None = None,
) -> DemoResult:
    """The demo; from clips, `run_chain` (the extract-and-train flow) does the
    extraction, labels, training and evaluation of each model when given."""
    cfg = config or SyntheticLLPConfig()
    epochs = DEMO_EPOCHS[source] if epochs is None else epochs
    say = on_step or (lambda _: None)
    folder = None
    if source == "clips":
        folder = write_demo_clips(root, n_clips, cfg.seed, say)
        data = CLIP_DATA
        if run_chain is None:
            say("extracting CLIP, R(2+1)D and CLAP features (tiny presets)")
            extract_clips_directly(root, folder, device)
    else:
        say("generating the feature-level synthetic mini-LLP")
        write_synthetic_llp(root, cfg)
        data = SYNTHETIC_DATA

    runs: dict[str, str] = {}
    trained: dict[str, dict[str, float]] = {}
    for name, preset in DEMO_MODELS.items():
        train_config = demo_train_config(preset, epochs, device, size, data)
        if run_chain is not None and folder is not None:
            say(f"running the extract-and-train flow for {name} ({epochs} epochs)")
            summary = run_chain(demo_chain(root, folder, preset, train_config, device))
            runs[name] = summary["train"]["run_url"]
            trained[name] = summary["evaluate"]["test"]["metrics"]
            continue
        say(f"training {name} for {epochs} epochs")
        result = train(
            root,
            train_config,
            on_epoch=(lambda report, name=name: on_epoch(name, report)) if on_epoch else None,
        )
        runs[name] = result.run_url
        evaluation = evaluate_run(result.run_url, EvaluateConfig(split="test", device=device))
        trained[name] = evaluation.metrics

    weak = LabelStore(root).weak().read()
    test = weak.splits == "test"
    dense_table = LabelStore(root).segments(tables.dense_table(data.annotations))
    dense = dense_table.read_videos(weak.video_ids[test])
    truth = np.stack([dense.audio, dense.visual], axis=1)
    pred = weak_label_broadcast(weak.labels[test], truth.shape[2])
    metrics = {"weak labels": segment_and_event_f1(pred, truth)}
    target = resolve_device(device)
    test_split = load_split(root, data, "test", target, with_dense=True)
    for name, preset in DEMO_MODELS.items():
        train_config = demo_train_config(preset, epochs, device, size, data)
        torch.manual_seed(train_config.seed)
        untrained = create_model(train_config.model_config_resolved()).to(target)
        outputs = predict(untrained, test_split.audio, test_split.visual, test_split.visual_st)
        metrics[f"{name} init"] = score_split(outputs, test_split, train_config.filter_resolved())
        metrics[name] = trained[name]

    counts = {split: int((weak.splits == split).sum()) for split in ("train", "val", "test")}
    return DemoResult(root=root, num_videos=counts, metrics=metrics, runs=runs)
