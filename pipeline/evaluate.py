"""Scoring of prediction files (PRED.npz) with the official AVVP metrics.

PRED.npz holds `video_ids` (N,) str (LLP filenames `<id>_<start>_<end>` or bare YouTube
ids) and either `pred` (N, 2, T, 25) binary, scored as given, or the model outputs
`frame_prob` (N, T, 2, 25), `global_prob` and `v_prob` (N, 25), thresholded and
filtered by the evaluation protocol first (`a_prob` may be present; no rule uses it).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from ..model.classes import NUM_CLASSES
from ..model.factory import create_model
from ..model.metrics import (
    FILTER_RULES,
    METRIC_KEYS,
    FilterRule,
    binarize_predictions,
    segment_and_event_f1,
)
from ..storage import RunDir, open_run
from .code_version import code_version
from .dataset import (
    ANNOTATIONS,
    DataConfig,
    SplitTensors,
    check_label_source,
    load_split,
    split_fingerprints,
    split_keys,
    split_videos,
)
from .infer import load_run, predict
from .sources.llp import AnnotationError, AudioAnnotations, LLPAnnotations
from .sources.npy_files import open_npz
from .train_config import TrainConfig

__all__ = [
    "METRIC_KEYS",
    "REFERENCE_ROWS",
    "EvaluateConfig",
    "PredictionFileError",
    "RunEvaluation",
    "coverage_warning",
    "evaluate_prediction_file",
    "evaluate_run",
    "format_metrics_table",
    "read_prediction_file",
    "reference_metrics",
    "score_split",
    "weak_label_broadcast",
]

PROB_KEYS: tuple[str, ...] = ("frame_prob", "global_prob", "v_prob")
_TABLE_ROWS = (("Segment", "Seg"), ("Event", "Event"))
_TABLE_COLUMNS = (("A", "a"), ("V", "v"), ("AV", "av"), ("Type", "type"), ("Event", "event"))
# Ids of videos without features named in an evaluation's result and warning.
MISSING_EXAMPLES = 5
WEAK_LABELS = "weak labels"
UNTRAINED = "untrained network"
# What a trained run is read against, in the order `reference_metrics` returns them.
REFERENCE_ROWS: tuple[str, ...] = (WEAK_LABELS, UNTRAINED)


class PredictionFileError(ValueError):
    """A prediction file is unreadable, incomplete or inconsistent."""


def evaluate_prediction_file(
    path: str | Path,
    annotations: AudioAnnotations = "corrected",
    filter_rule: FilterRule = "mmcse",
    labels_dir: str | Path | None = None,
) -> dict[str, float]:
    """The eleven AVVP metrics (percent, ordered as METRIC_KEYS) of a PRED.npz.

    annotations: the audio annotation file, "corrected" or "published" (the one behind
    the published numbers). filter_rule: "mmcse" or "valor", used only for the model
    output form. labels_dir: a folder of LLP-format files instead of the vendored ones.
    """
    video_ids, pred = read_prediction_file(path, filter_rule)
    llp = LLPAnnotations.load(labels_dir, audio=annotations)
    try:
        truth = llp.dense(llp.to_filenames(video_ids), num_segments=pred.shape[2])
    except AnnotationError as error:
        raise PredictionFileError(f"{path}: {error}") from None
    return segment_and_event_f1(pred, truth)


def read_prediction_file(
    path: str | Path, filter_rule: FilterRule = "mmcse"
) -> tuple[list[str], np.ndarray]:
    """video ids and binary predictions (N, 2, T, 25) uint8 of a PRED.npz, validated."""
    if filter_rule not in FILTER_RULES:
        raise PredictionFileError(
            f"unknown filter rule {filter_rule!r}: use one of {', '.join(FILTER_RULES)}"
        )
    arrays = _load_arrays(Path(path))
    video_ids = _video_ids(path, arrays)
    num_videos = len(video_ids)
    if "pred" in arrays:
        if present := [key for key in PROB_KEYS if key in arrays]:
            raise PredictionFileError(
                f"{path} holds both `pred` and {', '.join(present)}: keep one form, the binary "
                "`pred` or the model outputs"
            )
        pred = arrays["pred"]
        _check_shape(path, "pred", pred, (num_videos, 2, None, NUM_CLASSES))
        if not np.isin(pred, (0, 1)).all():
            raise PredictionFileError(f"{path}: `pred` must hold only 0 and 1")
        return video_ids, pred.astype(np.uint8)
    if missing := [key for key in PROB_KEYS if key not in arrays]:
        raise PredictionFileError(
            f"{path} lacks {', '.join(missing)} (it has {', '.join(arrays)}): give either "
            f"`pred` (N, 2, T, 25) or the model outputs {', '.join(PROB_KEYS)}"
        )
    frame_prob = arrays["frame_prob"]
    _check_shape(path, "frame_prob", frame_prob, (num_videos, None, 2, NUM_CLASSES))
    for key in ("global_prob", "v_prob"):
        _check_shape(path, key, arrays[key], (num_videos, NUM_CLASSES))
    for key in PROB_KEYS:
        if not np.issubdtype(arrays[key].dtype, np.floating):
            raise PredictionFileError(
                f"{path}: `{key}` must hold probabilities (float), not {arrays[key].dtype}"
            )
        if num_nan := int(np.isnan(arrays[key]).sum()):
            raise PredictionFileError(f"{path}: `{key}` holds {num_nan} NaN values")
    pred = binarize_predictions(frame_prob, arrays["global_prob"], arrays["v_prob"], filter_rule)
    return video_ids, pred


def format_metrics_table(metrics: Mapping[str, float]) -> str:
    """A readable table: segment and event level x A, V, AV, Type, Event, then Avg."""
    if missing := [key for key in METRIC_KEYS if key not in metrics]:
        raise ValueError(f"metrics lack {', '.join(missing)}")
    lines = ["".ljust(9) + "".join(f"{name:>8}" for name, _ in _TABLE_COLUMNS)]
    for label, prefix in _TABLE_ROWS:
        cells = "".join(f"{metrics[f'{prefix}-{suffix}']:>8.2f}" for _, suffix in _TABLE_COLUMNS)
        lines.append(label.ljust(9) + cells)
    lines.append("Avg".ljust(9) + f"{metrics['Avg']:>8.2f}")
    return "\n".join(lines)


def _load_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise PredictionFileError(f"{path} does not exist")
    try:
        with open_npz(path) as archive:
            return {key: archive[key] for key in archive.files}
    except (ValueError, OSError, zipfile.BadZipFile) as error:
        raise PredictionFileError(
            f"{path} is not a readable .npz of plain arrays ({error}); write it with "
            "numpy.savez and str (not object) video ids"
        ) from None


def _video_ids(path: str | Path, arrays: dict[str, np.ndarray]) -> list[str]:
    if "video_ids" not in arrays:
        raise PredictionFileError(
            f"{path} lacks `video_ids` (N,) str (it has {', '.join(arrays)}); for the output "
            "of `avvp infer-features`, put `video_ids` into its FEATURES.npz and run it again"
        )
    video_ids = arrays["video_ids"]
    if video_ids.ndim != 1 or video_ids.dtype.kind != "U" or video_ids.size == 0:
        raise PredictionFileError(
            f"{path}: `video_ids` must be a non-empty (N,) str array, got {video_ids.dtype} "
            f"of shape {video_ids.shape}"
        )
    names, counts = np.unique(video_ids, return_counts=True)
    if (counts > 1).any():
        repeated = ", ".join(repr(str(name)) for name in names[counts > 1][:5])
        raise PredictionFileError(f"{path}: `video_ids` repeats {repeated}")
    return video_ids.tolist()


def _check_shape(
    path: str | Path, key: str, array: np.ndarray, expected: tuple[int | None, ...]
) -> None:
    """None in `expected` stands for the number of segments T (any, at least 1)."""
    fits = array.ndim == len(expected) and all(
        size == want if want is not None else size >= 1
        for size, want in zip(array.shape, expected, strict=True)
    )
    if not fits:
        wanted = ", ".join("T" if want is None else str(want) for want in expected)
        raise PredictionFileError(f"{path}: `{key}` must have shape ({wanted}), got {array.shape}")


def score_split(
    outputs: Mapping[str, np.ndarray], split: SplitTensors, rule: FilterRule
) -> dict[str, float]:
    """The eleven AVVP metrics of model outputs against a split's dense annotations."""
    if split.dense is None:
        raise ValueError("score_split needs a split loaded with with_dense=True")
    pred = binarize_predictions(
        outputs["frame_prob"], outputs["global_prob"], outputs["v_prob"], rule
    )
    return segment_and_event_f1(pred, split.dense, split.valid_segments.cpu().numpy())


def weak_label_broadcast(weak: np.ndarray, num_segments: int) -> np.ndarray:
    """Predict every weak class in every segment of both modalities: (N, 2, T, K)."""
    n, k = weak.shape
    return np.broadcast_to(weak[:, None, None, :], (n, 2, num_segments, k)).astype(np.uint8)


def reference_metrics(
    split: SplitTensors, trained: TrainConfig, batch_size: int = 256
) -> dict[str, dict[str, float]]:
    """The eleven AVVP metrics of the two predictors a trained run is read against, on
    the rows of a split loaded with its dense annotations, keyed as REFERENCE_ROWS:

    - "weak labels": each window's weak (video-level) labels in every segment of both
      modalities, the score a parser gets without locating anything in time;
    - "untrained network": the run's network as training built it before its first step
      (same model config, weights drawn after `torch.manual_seed(trained.seed)`), scored
      by the run's protocol; what training added is the distance to it.
    """
    if split.dense is None:
        raise ValueError("reference_metrics needs a split loaded with with_dense=True")
    valid = split.valid_segments.cpu().numpy()
    weak = (split.weak.cpu().numpy() >= 0.5).astype(np.uint8)
    broadcast = weak_label_broadcast(weak, split.dense.shape[2])
    metrics = {WEAK_LABELS: segment_and_event_f1(broadcast, split.dense, valid)}
    # Drawn in a fork of the random state (CPU and CUDA, both of which manual_seed
    # seeds): the caller's draws after this call stay as they were.
    with torch.random.fork_rng():
        torch.manual_seed(trained.seed)
        untrained = create_model(trained.model_config_resolved())
    outputs = predict(
        untrained.to(split.audio.device),
        split.audio,
        split.visual,
        split.visual_st,
        batch_size=batch_size,
        amp=trained.amp,
    )
    metrics[UNTRAINED] = score_split(outputs, split, trained.filter_resolved())
    return metrics


class EvaluateConfig(BaseModel):
    """What `evaluate_run` scores: a split, against which annotations, by which filter."""

    model_config = ConfigDict(extra="forbid")

    split: str = "test"
    annotations: str | None = Field(
        None, description="dense annotation set; default: the one the run validated on"
    )
    filter_rule: Literal["mmcse", "valor"] | None = Field(
        None, description="video-level filter; default: the model's own protocol"
    )
    device: str = "auto"
    batch_size: int = Field(256, ge=1)


class RunEvaluation(BaseModel):
    """What `evaluate_run` did: JSON-serialisable (`model_dump()`)."""

    run_url: str
    split: str
    annotations: str
    filter_rule: str
    metrics: dict[str, float]
    run_id: str = ""
    reused: bool = False  # the same run on the same rows was scored before
    videos_in_split: int = 0  # videos of the split in the weak-label table
    videos_scored: int = 0  # those with features in all three tables: the ones scored
    videos_without_features: int = 0
    missing_examples: list[str] = Field(default_factory=list)  # first few, weak-table order
    warning: str = ""  # empty when every video of the split was scored


def coverage_warning(split: str, videos_in_split: int, missing: Sequence[str]) -> str:
    """The line that says an evaluation scored only part of its split ("" if all)."""
    if not missing:
        return ""
    examples = ", ".join(missing[:MISSING_EXAMPLES])
    if len(missing) > MISSING_EXAMPLES:
        examples += ", ..."
    return (
        f"scored {videos_in_split - len(missing)} of {videos_in_split} videos of the {split} "
        f"split: {len(missing)} have no features ({examples}); extract them and evaluate again"
    )


@dataclass(frozen=True)
class EvaluationPlan:
    """What `evaluate_run` will read and the key its cached result is filed under."""

    root: str  # the run's store, which holds the rows scored
    run: RunDir
    trained: TrainConfig
    data: DataConfig  # the run's data settings with the annotations to score against
    filter_rule: str
    name: str  # eval-<split>-<annotations>-<rule>
    inputs: dict[str, str]  # fingerprints of the rows read
    cache_key: str
    split: str = ""
    videos_in_split: int = 0  # videos of the split in the weak-label table
    missing: tuple[str, ...] = ()  # those without features, in weak-table order
    checkpoint_sha256: str = ""
    code_version: str = ""  # of avvp.pipeline.evaluate

    def coverage(self) -> dict[str, Any]:
        """How much of the split is scored: the coverage fields of `RunEvaluation`."""
        return {
            "videos_in_split": self.videos_in_split,
            "videos_scored": self.videos_in_split - len(self.missing),
            "videos_without_features": len(self.missing),
            "missing_examples": list(self.missing[:MISSING_EXAMPLES]),
            "warning": coverage_warning(self.split, self.videos_in_split, self.missing),
        }


def plan_evaluation(run_url: str, config: EvaluateConfig | None = None) -> EvaluationPlan:
    """The cache key of an evaluation (run, checkpoint digest, split, annotations,
    filter, the fingerprints of the rows it reads and the evaluation's code version),
    and how many of the split's videos it scores, found without scoring."""
    config = config or EvaluateConfig()
    root, run = open_run(run_url)
    trained = TrainConfig.model_validate(run.read_json("config.json")["train"])
    annotations = config.annotations or trained.data.annotations
    data = trained.data.model_copy(update={"annotations": annotations})
    check_label_source(root, ANNOTATIONS, annotations)
    rule = config.filter_rule or trained.filter_resolved()
    videos = split_videos(root, config.split)
    keys = split_keys(root, data, config.split, videos=videos)
    inputs = split_fingerprints(root, data, config.split, with_dense=True, keys=keys)
    scored = set(keys.video_ids.tolist())
    checkpoint = hashlib.sha256(run.read_bytes("checkpoint.pt")).hexdigest()
    code = code_version("avvp.pipeline.evaluate")
    key = hashlib.sha256(
        json.dumps(
            [run.run_id, config.split, annotations, rule, inputs, checkpoint, code], sort_keys=True
        ).encode()
    ).hexdigest()
    return EvaluationPlan(
        root,
        run,
        trained,
        data,
        rule,
        f"eval-{config.split}-{annotations}-{rule}",
        inputs,
        key,
        split=config.split,
        videos_in_split=len(videos),
        missing=tuple(video for video in videos if video not in scored),
        checkpoint_sha256=checkpoint,
        code_version=code,
    )


def planned_evaluation(plan: EvaluationPlan, metrics: dict[str, float]) -> RunEvaluation:
    """The result of the evaluation `plan` describes, with its metrics."""
    return RunEvaluation(
        run_url=plan.run.url,
        split=plan.split,
        annotations=str(plan.data.annotations),
        filter_rule=plan.filter_rule,
        metrics=metrics,
        run_id=plan.run.run_id,
        **plan.coverage(),
    )


def stored_evaluation(plan: EvaluationPlan) -> RunEvaluation | None:
    """The evaluation `plan` describes, if the run folder holds it under its key
    (None: it must be scored)."""
    name = f"{plan.name}.json"
    if not plan.run.exists(name):
        return None
    cached = plan.run.read_json(name)
    if cached.get("cache_key") != plan.cache_key:
        return None
    return planned_evaluation(plan, cached["metrics"]).model_copy(update={"reused": True})


def evaluate_run(
    run_url: str, config: EvaluateConfig | None = None, *, force: bool = False
) -> RunEvaluation:
    """Score a trained run on a split; writes `eval-<split>-<annotations>-<rule>.json`.

    The result is cached in the run folder under a key of the run, its checkpoint's
    digest, split, annotations, filter, the fingerprints of the rows read and the
    evaluation's code version: asking again reuses it until one of those changes (or
    `force`). Only the split's videos with all three features are scored; the result
    counts them (read afresh each time, cached or not) and warns when some are missing.
    """
    config = config or EvaluateConfig()
    plan = plan_evaluation(run_url, config)
    run = plan.run
    stored = None if force else stored_evaluation(plan)
    if stored is not None:
        return stored
    loaded = load_run(run_url, config.device)
    tensors = load_split(plan.root, plan.data, config.split, loaded.device, with_dense=True)
    outputs = predict(
        loaded.model,
        tensors.audio,
        tensors.visual,
        tensors.visual_st,
        batch_size=config.batch_size,
        amp=plan.trained.amp,
    )
    metrics = score_split(outputs, tensors, plan.filter_rule)
    run.write_text(f"{plan.name}.txt", format_metrics_table(metrics) + "\n")
    # Written last: a cache entry exists only for a finished evaluation.
    run.write_json(
        f"{plan.name}.json",
        {
            "cache_key": plan.cache_key,
            "inputs": plan.inputs,
            "checkpoint_sha256": plan.checkpoint_sha256,
            "code_version": plan.code_version,
            "metrics": metrics,
            **plan.coverage(),
        },
    )
    return planned_evaluation(plan, metrics)
