"""The official AVVP evaluation protocol (segment- and event-level F-scores), vectorised.

Predictions and ground truth are binary arrays of shape (N, 2, T, K) = (video,
[audio, visual], segment, class). The audio-visual track is audio AND visual, for both.
The rules reproduce the official evaluation code of AVVP-ECCV20 (also used by VALOR
and MM-CSE) number for number, for any T:

- per video, modality and class, F = 2TP / (2TP + FP + FN); a class with neither a
  prediction nor a truth is skipped; a video with no scored class scores 1;
- segment level counts segments; event level turns runs of consecutive ones into events,
  a predicted event is a TP when some true event of the same row overlaps it with
  IoU >= 0.5 (else a FP) and a true event with no such predicted event is a FN (the
  matching is not one-to-one);
- "event" pools the audio and visual counts of a class before its F, "type" averages
  the audio, visual and audio-visual metrics; every metric is a mean over videos x 100.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .events import runs_of_ones

METRIC_KEYS: tuple[str, ...] = (
    "Seg-a",
    "Seg-v",
    "Seg-av",
    "Seg-type",
    "Seg-event",
    "Event-a",
    "Event-v",
    "Event-av",
    "Event-type",
    "Event-event",
    "Avg",
)
# The per-video scores every metric of METRIC_KEYS is derived from.
SCORE_KEYS: tuple[str, ...] = (
    "Seg-a",
    "Seg-v",
    "Seg-av",
    "Seg-event",
    "Event-a",
    "Event-v",
    "Event-av",
    "Event-event",
)
FilterRule = Literal["mmcse", "valor"]
FILTER_RULES: tuple[str, ...] = ("mmcse", "valor")
THRESHOLD = 0.5
MIN_EVENT_IOU = 0.5


def binarize_predictions(
    frame_prob: np.ndarray,
    global_prob: np.ndarray,
    v_prob: np.ndarray,
    rule: FilterRule = "mmcse",
    threshold: float = THRESHOLD,
) -> np.ndarray:
    """Threshold model outputs (the protocol's 0.5 by default) and drop segments of
    classes the video level rejects.

    frame_prob: (N, T, 2, K) in the model's layout; global_prob, v_prob: (N, K).
    rule "mmcse" keeps an audio segment only where global_prob >= 0.5 and a visual one
    only where v_prob >= 0.5; rule "valor" (also HAN's) gates both by global_prob.
    Returns pred (N, 2, T, K) uint8 in the layout the metrics take.
    """
    if rule not in FILTER_RULES:
        raise ValueError(f"unknown filter rule {rule!r}: use one of {', '.join(FILTER_RULES)}")
    frame_prob, global_prob, v_prob = (np.asarray(a) for a in (frame_prob, global_prob, v_prob))
    if frame_prob.ndim != 4 or frame_prob.shape[2] != 2:
        raise ValueError(f"frame_prob must be (N, T, 2, K), got shape {frame_prob.shape}")
    video_shape = (frame_prob.shape[0], frame_prob.shape[3])
    for name, prob in (("global_prob", global_prob), ("v_prob", v_prob)):
        if prob.shape != video_shape:
            raise ValueError(f"{name} must be (N, K) = {video_shape}, got shape {prob.shape}")
    audio_gate = global_prob >= threshold
    visual_gate = v_prob >= threshold if rule == "mmcse" else audio_gate
    gate = np.stack([audio_gate, visual_gate], axis=1)[:, :, None, :]  # (N, 2, 1, K)
    segment_on = frame_prob.transpose(0, 2, 1, 3) >= threshold
    return (segment_on & gate).astype(np.uint8)


def class_f_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    valid_segments: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-video, per-class F-scores for each key of SCORE_KEYS.

    pred, truth: binary (N, 2, T, K). valid_segments: optional (N, T) boolean mask or
    (N,) number of leading valid segments; padded segments are zeroed in both arrays.
    Returns key -> (N, K) float64 in [0, 1], NaN where the class is skipped (neither
    predicted nor true in the counted tracks).
    """
    pred_tracks, truth_tracks = _with_audio_visual_track(pred, truth, valid_segments)
    counts = {
        "Seg": _segment_counts(pred_tracks, truth_tracks),
        "Event": _event_counts(pred_tracks, truth_tracks),
    }
    scores: dict[str, np.ndarray] = {}
    for level, (tp, fp, fn) in counts.items():
        for track, name in enumerate(("a", "v", "av")):
            scores[f"{level}-{name}"] = _f_score(tp[:, track], fp[:, track], fn[:, track])
        # Audio and visual counts are pooled per class before the F of "event".
        pooled = (tp[:, :2].sum(axis=1), fp[:, :2].sum(axis=1), fn[:, :2].sum(axis=1))
        scores[f"{level}-event"] = _f_score(*pooled)
    return {key: scores[key] for key in SCORE_KEYS}


def video_f_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    valid_segments: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-video F-scores (N,) in [0, 1] for each key of SCORE_KEYS.

    The mean over a video's scored classes; 1.0 for a video with no scored class.
    Arguments as for class_f_scores.
    """
    return {
        key: _mean_over_scored_classes(scores)
        for key, scores in class_f_scores(pred, truth, valid_segments).items()
    }


def segment_and_event_f1(
    pred: np.ndarray,
    truth: np.ndarray,
    valid_segments: np.ndarray | None = None,
) -> dict[str, float]:
    """The eleven AVVP metrics in percent, keyed and ordered as METRIC_KEYS.

    pred, truth: binary (N, 2, T, K) = (video, [audio, visual], segment, class).
    valid_segments: optional (N, T) mask or (N,) count of valid leading segments.
    """
    per_video = video_f_scores(pred, truth, valid_segments)
    metrics = {key: 100.0 * float(np.mean(scores)) for key, scores in per_video.items()}
    for level in ("Seg", "Event"):
        metrics[f"{level}-type"] = (
            metrics[f"{level}-a"] + metrics[f"{level}-v"] + metrics[f"{level}-av"]
        ) / 3.0
    ordered = {key: metrics[key] for key in METRIC_KEYS[:-1]}
    ordered["Avg"] = float(np.mean(list(ordered.values())))
    return ordered


def segment_f1_per_class(
    pred: np.ndarray,
    truth: np.ndarray,
    valid_segments: np.ndarray | None = None,
) -> np.ndarray:
    """Segment-level F-score of each class, pooled over all videos, in percent: (2, K)
    for [audio, visual].

    Unlike the official metrics (a mean over videos of per-video F-scores), the counts
    of a class are summed over every valid segment of every video before its
    F = 2TP / (2TP + FP + FN): one number per class that says how well the class is found
    across the whole set. NaN where a class has neither a true nor a predicted segment
    in that modality (no F-score is defined, and 0 or 100 would both mislead).
    Arguments as for segment_and_event_f1.
    """
    pred_tracks, truth_tracks = _with_audio_visual_track(pred, truth, valid_segments)
    tp, fp, fn = (count[:, :2].sum(axis=0) for count in _segment_counts(pred_tracks, truth_tracks))
    return 100.0 * _f_score(tp, fp, fn)


def _with_audio_visual_track(
    pred: np.ndarray, truth: np.ndarray, valid_segments: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validate, mask padding and append AV: boolean (N, 3, K, T) with tracks [a, v, av]."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} must have the same shape")
    if pred.ndim != 4 or pred.shape[1] != 2:
        raise ValueError(f"pred and truth must be (N, 2, T, K), got shape {pred.shape}")
    for name, array in (("pred", pred), ("truth", truth)):
        if not np.isin(array, (0, 1)).all():
            raise ValueError(f"{name} must hold only 0 and 1")
    num_videos, _, num_segments, _ = pred.shape
    pred, truth = pred.astype(bool), truth.astype(bool)
    if valid_segments is not None:
        mask = _valid_segment_mask(valid_segments, num_videos, num_segments)[:, None, :, None]
        pred, truth = pred & mask, truth & mask

    def add_av(tracks: np.ndarray) -> np.ndarray:
        tracks = np.concatenate([tracks, tracks[:, :1] & tracks[:, 1:]], axis=1)
        return tracks.transpose(0, 1, 3, 2)

    return add_av(pred), add_av(truth)


def _valid_segment_mask(
    valid_segments: np.ndarray, num_videos: int, num_segments: int
) -> np.ndarray:
    valid_segments = np.asarray(valid_segments)
    if valid_segments.shape == (num_videos,):
        return np.arange(num_segments) < valid_segments[:, None]
    if valid_segments.shape == (num_videos, num_segments):
        return valid_segments.astype(bool)
    raise ValueError(
        f"valid_segments must be ({num_videos},) counts or a ({num_videos}, {num_segments}) "
        f"mask, got shape {valid_segments.shape}"
    )


def _segment_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, ...]:
    """TP, FP, FN over segments: each (N, 3, K)."""
    tp = (pred & truth).sum(axis=-1)
    return tp, pred.sum(axis=-1) - tp, truth.sum(axis=-1) - tp


def _event_counts(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, ...]:
    """TP, FP, FN over events (runs of ones along the last axis): each (N, 3, K)."""
    row_shape = pred.shape[:-1]
    pred_start, pred_end, pred_valid = runs_of_ones(pred.reshape(-1, pred.shape[-1]))
    true_start, true_end, true_valid = runs_of_ones(truth.reshape(-1, truth.shape[-1]))
    # (rows, predicted runs, true runs): overlap of every pair of runs in a row.
    intersection = np.clip(
        np.minimum(pred_end[:, :, None], true_end[:, None, :])
        - np.maximum(pred_start[:, :, None], true_start[:, None, :]),
        0,
        None,
    )
    union = (pred_end - pred_start)[:, :, None] + (true_end - true_start)[:, None, :]
    union -= intersection
    # IoU >= 0.5 without a division: empty slots (union 0) are masked out below.
    matched = (intersection >= MIN_EVENT_IOU * union) & pred_valid[:, :, None]
    matched &= true_valid[:, None, :]
    tp = matched.any(axis=2).sum(axis=1)
    fp = pred_valid.sum(axis=1) - tp
    fn = (true_valid & ~matched.any(axis=1)).sum(axis=1)
    return tuple(count.reshape(row_shape) for count in (tp, fp, fn))


def _f_score(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> np.ndarray:
    """2TP / (2TP + FP + FN), NaN where there is neither prediction nor truth."""
    denominator = (2 * tp + fp + fn).astype(np.float64)
    scored = denominator > 0
    return np.divide(2.0 * tp, denominator, out=np.full(denominator.shape, np.nan), where=scored)


def _mean_over_scored_classes(scores: np.ndarray) -> np.ndarray:
    scored = ~np.isnan(scores)
    num_scored = scored.sum(axis=-1)
    total = np.where(scored, scores, 0.0).sum(axis=-1)
    return np.divide(total, num_scored, out=np.ones(total.shape), where=num_scored > 0)
