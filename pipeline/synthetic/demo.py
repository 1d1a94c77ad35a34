"""`avvp demo`: the whole chain on synthetic data, offline, on a CPU in a few minutes.

From clips (the default): write small synthetic video files with planted audio and
visual events (`avvp synth clips`) and their LLP-format labels, and noisy segment
pseudo-labels from the planted events (standing in for VALOR's); then the
extract-and-train chain, once per parser, imports the labels, extracts CLIP, R(2+1)D
and CLAP features with tiny networks into a local store, trains MM-CSE and the
VALOR baseline for a few epochs and scores the test split. From features
(`source="features"`): the feature-level synthetic mini-LLP, on which the same chain
has nothing to extract or import.

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

from ...storage import LabelStore, Provenance
from .. import catalog
from ..chain import (
    EXTRACT_AND_TRAIN,
    ChainConfig,
    ExtractAndTrainSummary,
    run_local,
)
from ..dataset import DataConfig, load_split, resolve_device
from ..evaluate import UNTRAINED, WEAK_LABELS, reference_metrics
from ..sources.dense_events import planted_dense_labels
from ..sources.llp import LLPAnnotations, youtube_id
from ..train_config import ModelSize, TrainConfig
from .clips import write_synthetic_clips
from .features import SyntheticLLPConfig, noisy_pseudo_labels, write_synthetic_llp

DEMO_MODELS = {"MM-CSE": "mmcse-clapclip", "VALOR": "valor-clapclip"}
SYNTHETIC_DATA = DataConfig(pseudo_labels="synthetic", annotations="synthetic")
CLIP_DATA = DataConfig(pseudo_labels="synthetic", annotations="corrected")
DEMO_CLIPS = 200
DEMO_ACTIVE_CLASSES = 10  # fewer classes, more examples of each, in a small demo
DemoSource = Literal["clips", "features"]
# Epochs per model. From clips, 40 epochs stopped MM-CSE while its visual scores still
# rose (best epoch 40 of 40, Seg-v 49); at 60 it settles (best epoch 53, Seg-v 84). The
# feature-level set is easy: both parsers reach Avg 95+ within 15 epochs.
DEMO_EPOCHS: dict[str, int] = {"clips": 60, "features": 15}


@dataclass
class DemoResult:
    root: str
    num_videos: dict[str, int]
    metrics: dict[str, dict[str, float]]  # predictor name -> the eleven metrics
    runs: dict[str, str]  # model name -> run folder
    summaries: dict[str, ExtractAndTrainSummary]  # model name -> its chain's summary


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
    LabelStore(root).segments(catalog.pseudo_label_table("synthetic")).write(
        ids,
        np.zeros(len(ids), dtype=np.int32),
        pseudo[:, 0],
        pseudo[:, 1],
        Provenance(source="synthetic-clips-planted-events", version="1", extras={"flip": 0.15}),
    )
    return folder


def demo_chain(
    root: str, folder: Path | None, train_config: TrainConfig, device: str
) -> ChainConfig:
    """The extract-and-train parameters of one demo model: from the clips in `folder`
    (their labels imported, their videos extracted), or, without a folder, on the
    synthetic features and labels already in the store."""
    train = train_config.model_dump(mode="json", exclude={"model", "epochs"})
    return ChainConfig(
        videos=[] if folder is None else [str(folder / "videos")],
        labels=None if folder is None else str(folder),
        store=root,
        extractor_size="tiny",
        pseudo_labels="synthetic",
        model=train_config.model,
        epochs=train_config.epochs,
        config={
            "extract": {"device": device},
            "train": train,
            "evaluate": {"device": device},
            "splits": ["test"],
            "import_labels": folder is not None,
        },
    )


ChainRunner = Callable[[ChainConfig], ExtractAndTrainSummary]


def run_demo(
    root: str,
    config: SyntheticLLPConfig | None = None,
    epochs: int | None = None,
    device: str = "auto",
    size: ModelSize = "auto",
    on_step: Callable[[str], None] | None = None,
    source: DemoSource = "clips",
    n_clips: int = DEMO_CLIPS,
    run_chain: ChainRunner | None = None,
) -> DemoResult:
    """The demo: synthetic data, then the extract-and-train chain once per model
    (`run_chain`: the flow, or by default the local runner), then the baselines."""
    cfg = config or SyntheticLLPConfig()
    epochs = DEMO_EPOCHS[source] if epochs is None else epochs
    say = on_step or (lambda _: None)
    runner = run_chain or (lambda params: run_local(EXTRACT_AND_TRAIN, params))
    folder = None
    if source == "clips":
        folder = write_demo_clips(root, n_clips, cfg.seed, say)
        data = CLIP_DATA
    else:
        say("generating the feature-level synthetic mini-LLP")
        write_synthetic_llp(root, cfg)
        data = SYNTHETIC_DATA

    summaries: dict[str, ExtractAndTrainSummary] = {}
    for name, preset in DEMO_MODELS.items():
        train_config = demo_train_config(preset, epochs, device, size, data)
        say(f"running the extract-and-train chain for {name} ({epochs} epochs)")
        summaries[name] = runner(demo_chain(root, folder, train_config, device))

    test_split = load_split(root, data, "test", resolve_device(device), with_dense=True)
    references = {
        name: reference_metrics(test_split, demo_train_config(preset, epochs, device, size, data))
        for name, preset in DEMO_MODELS.items()
    }
    # The weak labels are the same predictor for every model: shown once, first.
    metrics = {"weak labels": next(iter(references.values()))[WEAK_LABELS]}
    for name in DEMO_MODELS:
        metrics[f"{name} init"] = references[name][UNTRAINED]
        metrics[name] = summaries[name].evaluate.splits["test"].metrics

    weak = LabelStore(root).weak().read()
    counts = {split: int((weak.splits == split).sum()) for split in ("train", "val", "test")}
    return DemoResult(
        root=root,
        num_videos=counts,
        metrics=metrics,
        runs={name: summary.train.run_url for name, summary in summaries.items()},
        summaries=summaries,
    )
