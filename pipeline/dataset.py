"""Reading a split from the stores into device tensors, once per run.

A split's features are read once and kept on the device; training and evaluation form
batches by indexing these tensors, never by per-sample file reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import torch
from pydantic import BaseModel, ConfigDict, Field

from avvp.pipeline import tables
from avvp.storage import FeatureStore, Keys, LabelStore


class DataConfig(BaseModel):
    """Which tables a run reads."""

    model_config = ConfigDict(extra="forbid")

    audio_table: str = tables.AUDIO_MAP_TABLE
    visual_table: str = tables.VISUAL_TABLE
    visual_st_table: str = tables.VISUAL_ST_TABLE
    pseudo_labels: str = Field("valor", description="segment pseudo-label source")
    annotations: str = Field("corrected", description="dense annotations for validation")
    train_split: str = "train"
    val_split: str = "val"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class SplitTensors:
    """One split, every array on the device, rows aligned by index."""

    keys: Keys
    audio: torch.Tensor
    visual: torch.Tensor
    visual_st: torch.Tensor
    valid_segments: torch.Tensor  # (N,)
    weak: torch.Tensor  # (N, K) float
    pseudo: torch.Tensor | None  # (N, 2, T, K) float, training split only
    dense: np.ndarray | None  # (N, 2, T, K) uint8, evaluation splits only

    def __len__(self) -> int:
        return len(self.keys)


def split_keys(root: str, data: DataConfig, split: str) -> Keys:
    """The (video, window) keys of a split's videos that have all three features."""
    weak = LabelStore(root).weak().read()
    videos = set(weak.video_ids[weak.splits == split].tolist())
    if not videos:
        raise ValueError(f"{root}: no video of split {split!r} in the weak-label table")
    features = FeatureStore(root)
    stored = features.table(data.audio_table).keys()
    keep = np.isin(stored.video_ids, list(videos))
    for name in (data.visual_table, data.visual_st_table):
        other = features.table(name).keys()
        keep &= pc.is_in(stored.joined(), value_set=other.joined()).to_numpy(zero_copy_only=False)
    if not keep.any():
        raise ValueError(
            f"{root}: no window of split {split!r} has features in all of "
            f"{data.audio_table}, {data.visual_table}, {data.visual_st_table}; run "
            "`avvp extract` or `avvp import-features` first"
        )
    return stored[keep]


def load_split(
    root: str,
    data: DataConfig,
    split: str,
    device: torch.device,
    *,
    with_pseudo: bool = False,
    with_dense: bool = False,
) -> SplitTensors:
    """Read one split from the stores into device tensors."""
    keys = split_keys(root, data, split)
    features = FeatureStore(root)
    labels = LabelStore(root)
    audio = features.table(data.audio_table).read_batch(keys)
    visual = features.table(data.visual_table).read(keys)
    visual_st = features.table(data.visual_st_table).read(keys)
    weak = labels.weak().read(keys.video_ids).labels

    def on_device(array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
        return tensor.float() if tensor.is_floating_point() or array.dtype == np.uint8 else tensor

    for name, array in (("audio", audio.features), ("visual", visual), ("visual_st", visual_st)):
        if not np.isfinite(array).all():
            raise ValueError(f"{root}: NaN or infinite values in the {name} features of {split}")

    pseudo = dense = None
    if with_pseudo:
        segments = labels.segments(tables.pseudo_label_table(data.pseudo_labels)).read(keys)
        pseudo = on_device(np.stack([segments.audio, segments.visual], axis=1))
    if with_dense:
        segments = labels.segments(tables.dense_table(data.annotations)).read(keys)
        dense = np.stack([segments.audio, segments.visual], axis=1)
    return SplitTensors(
        keys=keys,
        audio=on_device(audio.features),
        visual=on_device(visual),
        visual_st=on_device(visual_st),
        valid_segments=torch.from_numpy(audio.valid_segments.astype(np.int64)).to(device),
        weak=on_device(weak),
        pseudo=pseudo,
        dense=dense,
    )


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )
