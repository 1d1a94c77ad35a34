"""Reading a split from the stores into device tensors, once per run.

A split's features are read once and kept on the device; training and evaluation form
batches by indexing these tensors, never by per-sample file reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..storage import FeatureStore, Keys, LabelStore
from . import catalog

DEFAULT_PSEUDO_LABELS = "valor"
DEFAULT_ANNOTATIONS = "corrected"


class DataConfig(BaseModel):
    """Which tables a run reads. Label sources left as None are chosen by
    `resolve_label_sources` from what the store holds."""

    model_config = ConfigDict(extra="forbid")

    audio_table: str = catalog.AUDIO_MAP_TABLE
    visual_table: str = catalog.VISUAL_TABLE
    visual_st_table: str = catalog.VISUAL_ST_TABLE
    pseudo_labels: str | None = Field(
        None,
        description="segment pseudo-label source; None: valor, or the store's only source",
    )
    annotations: str | None = Field(
        None,
        description="dense annotations for validation; None: corrected, or the store's only set",
    )
    train_split: str = "train"
    val_split: str = "val"


@dataclass(frozen=True)
class LabelKind:
    """One kind of segment label table: its name prefix, default, option and wording."""

    prefix: str
    default: str
    option: str  # the command-line option and the config field that choose a source
    field: str
    noun: str


PSEUDO_LABELS = LabelKind(
    catalog.PSEUDO_LABEL_PREFIX,
    DEFAULT_PSEUDO_LABELS,
    "--pseudo-labels",
    "pseudo_labels",
    "pseudo-label source",
)
ANNOTATIONS = LabelKind(
    catalog.DENSE_PREFIX,
    DEFAULT_ANNOTATIONS,
    "--annotations",
    "annotations",
    "dense annotation set",
)


def stored_label_sources(root: str, kind: LabelKind) -> list[str]:
    """Names of the label sources of one kind that hold rows in the store at `root`."""
    labels = LabelStore(root)
    return [
        name.removeprefix(kind.prefix)
        for name in labels.table_names()
        if name.startswith(kind.prefix) and labels.segments(name).provenance is not None
    ]


def check_label_source(root: str, kind: LabelKind, name: str) -> None:
    """Raise a ValueError naming the sources the store holds when `name` is not one."""
    stored = stored_label_sources(root, kind)
    if name not in stored:
        raise _missing_source(root, kind, name, stored)


def resolve_label_source(root: str, kind: LabelKind, name: str | None) -> tuple[str, str | None]:
    """The source to read, and a note when it was chosen for the user.

    An explicit name must be stored. None means the default when it is stored, else the
    store's only source of that kind (with a note saying so).
    """
    stored = stored_label_sources(root, kind)
    if name is not None or kind.default in stored:
        chosen = name if name is not None else kind.default
        if chosen not in stored:
            raise _missing_source(root, kind, chosen, stored)
        return chosen, None
    if len(stored) != 1:
        raise _missing_source(root, kind, kind.default, stored)
    note = (
        f"using the {kind.noun} {stored[0]!r}, the only one in {root} "
        f"({kind.option} chooses another)"
    )
    return stored[0], note


def _missing_source(root: str, kind: LabelKind, name: str, stored: list[str]) -> ValueError:
    if stored:
        held = (
            f"it holds {', '.join(repr(source) for source in stored)}; choose one with "
            f"{kind.option} NAME ({kind.field} in a config file)"
        )
    elif kind is ANNOTATIONS:
        held = "it holds none yet (`avvp import-labels` writes LLP's dense annotations)"
    else:
        held = "it holds none yet (`avvp demo` writes synthetic ones)"
    return ValueError(
        f"{root} has no {kind.noun} {name!r} (table labels/{kind.prefix}{name}); {held}"
    )


def resolve_label_sources(root: str, data: DataConfig) -> tuple[DataConfig, list[str]]:
    """`data` with both label sources chosen (see `resolve_label_source`), and notes."""
    pseudo, pseudo_note = resolve_label_source(root, PSEUDO_LABELS, data.pseudo_labels)
    dense, dense_note = resolve_label_source(root, ANNOTATIONS, data.annotations)
    resolved = data.model_copy(update={"pseudo_labels": pseudo, "annotations": dense})
    return resolved, [note for note in (pseudo_note, dense_note) if note]


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


def split_videos(root: str, split: str) -> list[str]:
    """The ids of a split's videos in the weak-label table, in the table's order (with
    or without features: `split_keys` keeps those that have them)."""
    weak = LabelStore(root).weak().read()
    return [str(video) for video in weak.video_ids[weak.splits == split].tolist()]


def split_keys(root: str, data: DataConfig, split: str, *, videos: list[str] | None = None) -> Keys:
    """The (video, window) keys of a split's videos that have all three features.
    videos: the split's `split_videos`, when the caller has read them already."""
    videos = set(split_videos(root, split) if videos is None else videos)
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
            "`avvp extract` on its videos first"
        )
    return stored[keep]


def split_fingerprints(
    root: str,
    data: DataConfig,
    split: str,
    *,
    with_pseudo: bool = False,
    with_dense: bool = False,
    keys: Keys | None = None,
) -> dict[str, str]:
    """Fingerprints of exactly the rows `load_split` reads for these arguments (the
    split's videos that have all three features; see `read_fingerprints`). keys: the
    split's `split_keys`, when the caller has read them already."""
    keys = split_keys(root, data, split) if keys is None else keys
    video_ids = pc.unique(pa.array(keys.video_ids, pa.string()))
    return read_fingerprints(
        root, data, video_ids.to_pylist(), with_pseudo=with_pseudo, with_dense=with_dense
    )


def read_fingerprints(
    root: str,
    data: DataConfig,
    video_ids: list[str],
    *,
    with_pseudo: bool = False,
    with_dense: bool = False,
) -> dict[str, str]:
    """Fingerprints of the rows of `video_ids` in each table `data` reads: the three
    feature tables, the weak labels, and the pseudo-labels or dense annotations when
    asked. Reads key and row-hash columns only."""
    if with_pseudo or with_dense:
        _require_resolved(data)
    features, labels = FeatureStore(root), LabelStore(root)
    names = (data.audio_table, data.visual_table, data.visual_st_table)
    prints = {f"features/{name}": features.table(name).fingerprint(video_ids) for name in names}
    prints[f"labels/{catalog.WEAK_LABELS_TABLE}"] = labels.weak().fingerprint(video_ids)
    if with_pseudo:
        name = catalog.pseudo_label_table(data.pseudo_labels)
        prints[f"labels/{name}"] = labels.segments(name).fingerprint(video_ids)
    if with_dense:
        name = catalog.dense_table(data.annotations)
        prints[f"labels/{name}"] = labels.segments(name).fingerprint(video_ids)
    return prints


def _require_resolved(data: DataConfig) -> None:
    if data.pseudo_labels is None or data.annotations is None:
        raise ValueError("resolve the label sources first (resolve_label_sources)")


@dataclass
class WindowFeatures:
    """The three feature arrays of some windows, on the device, rows aligned with keys."""

    keys: Keys
    audio: torch.Tensor
    visual: torch.Tensor
    visual_st: torch.Tensor
    valid_segments: torch.Tensor  # (N,) int64
    has_audio: torch.Tensor  # (N,) bool


def load_window_features(
    root: FeatureStore | str, data: DataConfig, keys: Keys, device: torch.device
) -> WindowFeatures:
    """The given windows' features from the tables `data` names, checked finite.

    root: a store path, or an open FeatureStore, whose tables keep their key indexes
    between calls (a caller reading many chunks builds them once).
    """
    features = root if isinstance(root, FeatureStore) else FeatureStore(root)
    audio = features.table(data.audio_table).read_batch(keys)
    visual = features.table(data.visual_table).read(keys)
    visual_st = features.table(data.visual_st_table).read(keys)
    for name, array in (("audio", audio.features), ("visual", visual), ("visual_st", visual_st)):
        if not np.isfinite(array).all():
            raise ValueError(f"{features.root}: NaN or infinite values in the {name} features read")
    return WindowFeatures(
        keys=keys,
        audio=_on_device(audio.features, device),
        visual=_on_device(visual, device),
        visual_st=_on_device(visual_st, device),
        valid_segments=torch.from_numpy(audio.valid_segments.astype(np.int64)).to(device),
        has_audio=torch.from_numpy(audio.has_audio.astype(bool)).to(device),
    )


def _on_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """float32 for features and 0/1 labels; other dtypes as they are."""
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    return tensor.float() if tensor.is_floating_point() or array.dtype == np.uint8 else tensor


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
    _require_resolved(data)
    keys = split_keys(root, data, split)
    features = load_window_features(root, data, keys, device)
    labels = LabelStore(root)
    weak = labels.weak().read(keys.video_ids).labels
    pseudo = dense = None
    if with_pseudo:
        segments = labels.segments(catalog.pseudo_label_table(data.pseudo_labels)).read(keys)
        pseudo = _on_device(np.stack([segments.audio, segments.visual], axis=1), device)
    if with_dense:
        segments = labels.segments(catalog.dense_table(data.annotations)).read(keys)
        dense = np.stack([segments.audio, segments.visual], axis=1)
    return SplitTensors(
        keys=keys,
        audio=features.audio,
        visual=features.visual,
        visual_st=features.visual_st,
        valid_segments=features.valid_segments,
        weak=_on_device(weak, device),
        pseudo=pseudo,
        dense=dense,
    )


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    return torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda"
    )
