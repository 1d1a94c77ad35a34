"""The AVVP metrics reproduce the official evaluation, directly and through PRED.npz files."""

from __future__ import annotations

import gc
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from avvp.model.metrics import (
    METRIC_KEYS,
    SCORE_KEYS,
    binarize_predictions,
    class_f_scores,
    segment_and_event_f1,
    segment_f1_per_class,
    video_f_scores,
)
from avvp.pipeline.evaluate import (
    PredictionFileError,
    evaluate_prediction_file,
    format_metrics_table,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::avvp.pipeline.sources.llp.IgnoredAnnotationWarning"
)

K = 25


@pytest.fixture(scope="module")
def public(fixtures_dir: Path) -> tuple[dict[str, np.ndarray], dict]:
    with np.load(fixtures_dir / "metrics_public.npz") as archive:
        arrays = {key: archive[key] for key in archive.files}
    return arrays, json.loads((fixtures_dir / "metrics_public.json").read_text())


def assert_metrics_match(metrics: dict[str, float], expected: dict[str, float]) -> None:
    assert list(metrics) == list(METRIC_KEYS)
    for key in METRIC_KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9, rel=0), key


@pytest.mark.parametrize("annotations", ["published", "corrected"])
@pytest.mark.parametrize("name", ["flip15", "shift1"])
def test_binary_prediction_file_matches_official_metrics(
    public: tuple[dict[str, np.ndarray], dict], tmp_path: Path, annotations: str, name: str
) -> None:
    arrays, expected = public
    path = tmp_path / "PRED.npz"
    np.savez(path, video_ids=arrays["video_ids"], pred=arrays[f"pred_{name}"])
    metrics = evaluate_prediction_file(path, annotations=annotations)
    assert_metrics_match(metrics, expected[annotations][name])


@pytest.mark.parametrize(
    ("rule", "name"), [("mmcse", "mmcse_filter"), ("valor", "valor_han_filter")]
)
def test_model_output_file_matches_official_metrics_for_each_filter(
    public: tuple[dict[str, np.ndarray], dict], tmp_path: Path, rule: str, name: str
) -> None:
    arrays, expected = public
    path = tmp_path / "PRED.npz"
    np.savez(
        path,
        video_ids=arrays["video_ids"],
        frame_prob=arrays["probs_frame"],
        global_prob=arrays["probs_global"],
        a_prob=arrays["probs_a"],
        v_prob=arrays["probs_v"],
    )
    metrics = evaluate_prediction_file(path, annotations="published", filter_rule=rule)
    assert_metrics_match(metrics, expected["probs_published"][name])


def test_bare_youtube_ids_score_like_llp_filenames(
    public: tuple[dict[str, np.ndarray], dict], tmp_path: Path
) -> None:
    arrays, expected = public
    path = tmp_path / "PRED.npz"
    bare_ids = np.array([name[:11] for name in arrays["video_ids"]])
    np.savez(path, video_ids=bare_ids, pred=arrays["pred_shift1"])
    assert_metrics_match(evaluate_prediction_file(path), expected["corrected"]["shift1"])


def one_video(num_segments: int = 10) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.zeros((1, 2, num_segments, K), np.uint8),
        np.zeros((1, 2, num_segments, K), np.uint8),
    )


def test_classes_without_prediction_or_truth_are_skipped() -> None:
    pred, truth = one_video()
    pred[0, 0, :3, 0] = truth[0, 0, :3, 0] = 1  # class 0: perfect
    pred[0, 0, 5, 1] = 1  # class 1: a false alarm; the other 23 classes stay empty
    scores = class_f_scores(pred, truth)["Seg-a"][0]
    assert scores[:2].tolist() == [1.0, 0.0] and np.isnan(scores[2:]).all()
    assert segment_and_event_f1(pred, truth)["Seg-a"] == pytest.approx(50.0)


def test_video_with_nothing_predicted_or_true_scores_one() -> None:
    pred, truth = one_video()
    pred[0, 0, 0, 3] = truth[0, 0, 0, 3] = 1  # audio only: visual and AV have no scored class
    per_video = video_f_scores(pred, truth)
    assert {key: float(per_video[key][0]) for key in SCORE_KEYS} == dict.fromkeys(SCORE_KEYS, 1.0)
    assert segment_and_event_f1(*one_video())["Avg"] == pytest.approx(100.0)


def test_event_matches_a_true_event_from_iou_one_half() -> None:
    pred, truth = one_video()
    truth[0, 0, 0:4, 0] = truth[0, 0, 6:10, 0] = 1  # true events [0, 4) and [6, 10)
    pred[0, 0, 0:2, 0] = 1  # IoU 2/4: a hit
    pred[0, 0, 7, 0] = 1  # IoU 1/4: a false alarm, and [6, 10) stays missed
    event_f = class_f_scores(pred, truth)["Event-a"][0, 0]
    assert event_f == pytest.approx(2 * 1 / (2 * 1 + 1 + 1))
    pred[0, 0, 0:2, 0] = 0
    pred[0, 0, 0, 0] = 1  # IoU 1/4 now
    assert class_f_scores(pred, truth)["Event-a"][0, 0] == 0.0


def test_audio_visual_track_is_the_product_of_audio_and_visual() -> None:
    pred, truth = one_video()
    pred[0, 0, :5, 2] = pred[0, 1, 3:, 2] = 1  # predicted AV: segments 3, 4
    truth[0, 0, :, 2] = truth[0, 1, 3:5, 2] = 1  # true AV: segments 3, 4
    scores = video_f_scores(pred, truth)
    assert scores["Seg-av"][0] == 1.0 and scores["Event-av"][0] == 1.0
    assert scores["Seg-a"][0] == pytest.approx(2 * 5 / (2 * 5 + 5))


def test_padded_segments_are_ignored_in_prediction_and_truth() -> None:
    pred, truth = one_video()
    pred[0, :, :6, 4] = truth[0, :, :6, 4] = 1
    pred[0, 0, 6:, 7] = 1  # disagreements only in the padding
    truth[0, 1, 8:, 9] = 1
    assert segment_and_event_f1(pred, truth)["Avg"] < 100.0
    mask = np.arange(10)[None, :] < 6
    assert segment_and_event_f1(pred, truth, valid_segments=mask)["Avg"] == pytest.approx(100.0)
    assert segment_and_event_f1(pred, truth, valid_segments=np.array([6]))["Avg"] == pytest.approx(
        100.0
    )


def test_mmcse_filter_gates_visual_by_visual_prob_and_valor_by_video_prob() -> None:
    frame_prob = np.full((1, 3, 2, K), 0.5, np.float32)
    frame_prob[0, 2] = 0.49
    global_prob = np.zeros((1, K), np.float32)
    v_prob = np.zeros((1, K), np.float32)
    global_prob[0, 0] = v_prob[0, 1] = 0.5
    mmcse = binarize_predictions(frame_prob, global_prob, v_prob, rule="mmcse")
    valor = binarize_predictions(frame_prob, global_prob, v_prob, rule="valor")
    assert mmcse.shape == (1, 2, 3, K) and mmcse.dtype == np.uint8
    on = {(m, t, k) for m, t, k in zip(*np.nonzero(mmcse[0]), strict=True)}
    assert on == {(0, 0, 0), (0, 1, 0), (1, 0, 1), (1, 1, 1)}
    on = {(m, t, k) for m, t, k in zip(*np.nonzero(valor[0]), strict=True)}
    assert on == {(0, 0, 0), (0, 1, 0), (1, 0, 0), (1, 1, 0)}


def reference_runs(sequence: np.ndarray) -> list[tuple[int, int]]:
    runs, start = [], None
    for t, on in enumerate([*sequence.tolist(), 0]):
        if on and start is None:
            start = t
        elif not on and start is not None:
            runs.append((start, t))
            start = None
    return runs


def reference_counts(pred: np.ndarray, truth: np.ndarray, level: str) -> tuple[int, int, int]:
    if level == "Seg":
        tp = int((pred & truth).sum())
        return tp, int(pred.sum()) - tp, int(truth.sum()) - tp

    def iou(a: tuple[int, int], b: tuple[int, int]) -> float:
        inter = max(0, min(a[1], b[1]) - max(a[0], b[0]))
        return inter / (a[1] - a[0] + b[1] - b[0] - inter)

    predicted, true = reference_runs(pred), reference_runs(truth)
    tp = sum(any(iou(p, g) >= 0.5 for g in true) for p in predicted)
    fn = sum(not any(iou(g, p) >= 0.5 for p in predicted) for g in true)
    return tp, len(predicted) - tp, fn


def reference_metrics(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The protocol written out video by video and class by class."""
    sums = dict.fromkeys(SCORE_KEYS, 0.0)
    for video in range(pred.shape[0]):
        tracks_p = [pred[video, 0], pred[video, 1], pred[video, 0] & pred[video, 1]]
        tracks_g = [truth[video, 0], truth[video, 1], truth[video, 0] & truth[video, 1]]
        for level in ("Seg", "Event"):
            scores: dict[str, list[float]] = {f"{level}-{n}": [] for n in ("a", "v", "av", "event")}
            for k in range(pred.shape[-1]):
                counts = [
                    reference_counts(p[:, k], g[:, k], level)
                    for p, g in zip(tracks_p, tracks_g, strict=True)
                ]
                pooled = [a + v for a, v in zip(counts[0], counts[1], strict=True)]
                for name, (tp, fp, fn) in zip(
                    ("a", "v", "av", "event"), [*counts, pooled], strict=True
                ):
                    if tp + fp + fn:
                        scores[f"{level}-{name}"].append(2 * tp / (2 * tp + fp + fn))
            for key, values in scores.items():
                sums[key] += sum(values) / len(values) if values else 1.0
    metrics = {key: 100 * total / pred.shape[0] for key, total in sums.items()}
    for level in ("Seg", "Event"):
        metrics[f"{level}-type"] = sum(metrics[f"{level}-{n}"] for n in ("a", "v", "av")) / 3
    metrics["Avg"] = sum(metrics[key] for key in METRIC_KEYS[:-1]) / 10
    return metrics


@pytest.mark.parametrize("num_segments", [10, 7])
def test_vectorised_metrics_equal_a_per_video_per_class_reference(num_segments: int) -> None:
    rng = np.random.default_rng(num_segments)
    shape = (24, 2, num_segments, K)
    # Per-class densities from 0 to 0.7 give empty, sparse and busy rows alike.
    density = rng.uniform(0.0, 0.7, size=(24, 2, 1, K)) * (rng.random((24, 1, 1, K)) < 0.3)
    truth = (rng.random(shape) < density).astype(np.uint8)
    flips = rng.random(shape) < 0.15
    pred = (truth ^ flips).astype(np.uint8) * (rng.random((24, 1, 1, K)) < 0.4)
    metrics = segment_and_event_f1(pred, truth)
    expected = reference_metrics(pred.astype(bool), truth.astype(bool))
    for key in METRIC_KEYS:
        assert metrics[key] == pytest.approx(expected[key], abs=1e-9), key


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"pred": np.zeros((2, 2, 10, K), np.uint8)}, r"lacks `video_ids`"),
        (
            {"video_ids": np.array(["KSRjje7GH44_60_70", "4YdbENYcIyE_23_33"])},
            r"lacks frame_prob, global_prob, v_prob",
        ),
        (
            {
                "video_ids": np.array(["KSRjje7GH44_60_70"]),
                "pred": np.zeros((1, 10, 2, K), np.uint8),
            },
            r"`pred` must have shape \(1, 2, T, 25\), got \(1, 10, 2, 25\)",
        ),
        (
            {
                "video_ids": np.array(["KSRjje7GH44_60_70"]),
                "frame_prob": np.full((1, 10, 2, K), np.nan, np.float32),
                "global_prob": np.zeros((1, K), np.float32),
                "v_prob": np.zeros((1, K), np.float32),
            },
            r"`frame_prob` holds 500 NaN values",
        ),
        (
            {
                "video_ids": np.array(["KSRjje7GH44_60_70"]),
                "pred": np.full((1, 2, 10, K), 2, np.uint8),
            },
            r"`pred` must hold only 0 and 1",
        ),
    ],
)
def test_bad_prediction_file_error_names_the_file_and_problem(
    tmp_path: Path, arrays: dict[str, np.ndarray], expected: str
) -> None:
    path = write_npz(tmp_path / "PRED.npz", **arrays)
    with pytest.raises(PredictionFileError, match=rf"PRED\.npz.*{expected}"):
        evaluate_prediction_file(path)


def test_videos_without_dense_annotations_are_named(tmp_path: Path) -> None:
    video_ids = np.array(["KSRjje7GH44_60_70", "BjCEufrlXm4_20_30", "nosuchvideo"])
    path = write_npz(
        tmp_path / "PRED.npz", video_ids=video_ids, pred=np.zeros((3, 2, 10, K), np.uint8)
    )
    with pytest.raises(PredictionFileError, match=r"PRED\.npz: 1 video\(s\) \('nosuchvideo'\)"):
        evaluate_prediction_file(path)
    path = write_npz(
        tmp_path / "PRED.npz", video_ids=video_ids[:2], pred=np.zeros((2, 2, 10, K), np.uint8)
    )
    with pytest.raises(PredictionFileError, match=r"'BjCEufrlXm4_20_30'\).*no dense annotations"):
        evaluate_prediction_file(path)


def test_metrics_table_shows_both_levels_and_the_average() -> None:
    metrics = dict(zip(METRIC_KEYS, np.arange(11) + 0.25, strict=True))
    lines = format_metrics_table(metrics).splitlines()
    assert lines[0].split() == ["A", "V", "AV", "Type", "Event"]
    assert lines[1].split() == ["Segment", "0.25", "1.25", "2.25", "3.25", "4.25"]
    assert lines[2].split() == ["Event", "5.25", "6.25", "7.25", "8.25", "9.25"]
    assert lines[3].split() == ["Avg", "10.25"]


def test_per_class_segment_f1_pools_the_counts_of_every_video_before_the_f_score() -> None:
    # Two videos, 4 segments, 3 classes. Audio class 0: video 0 has 2 true segments,
    # both predicted (TP 2); video 1 has 1 true segment, missed (FN 1), and 1 predicted
    # where nothing is true (FP 1): pooled F = 2*2 / (2*2 + 1 + 1) = 4/6. A mean of the
    # per-video F-scores would give (1 + 0) / 2 instead.
    truth = np.zeros((2, 2, 4, 3), np.uint8)
    pred = np.zeros_like(truth)
    truth[0, 0, :2, 0] = 1
    pred[0, 0, :2, 0] = 1
    truth[1, 0, 3, 0] = 1
    pred[1, 0, 0, 0] = 1
    # Visual class 1: predicted everywhere in video 0, true in segments 1..2: TP 2, FP 2.
    truth[0, 1, 1:3, 1] = 1
    pred[0, 1, :, 1] = 1
    # Audio class 2: true in video 1 only, never predicted: F = 0.
    truth[1, 0, 1, 2] = 1
    scores = segment_f1_per_class(pred, truth)
    assert scores.shape == (2, 3)
    assert scores[0, 0] == pytest.approx(100 * 4 / 6)
    assert scores[1, 1] == pytest.approx(100 * 4 / 6)
    assert scores[0, 2] == 0.0
    # No true and no predicted segment: no F-score (NaN), neither 0 nor 100.
    assert np.isnan(scores[0, 1]) and np.isnan(scores[1, 0]) and np.isnan(scores[1, 2])


def test_per_class_segment_f1_leaves_out_padded_segments() -> None:
    truth = np.zeros((1, 2, 4, 2), np.uint8)
    pred = np.zeros_like(truth)
    truth[0, 0, 0, 0] = pred[0, 0, 0, 0] = 1  # a hit in a valid segment
    pred[0, 0, 3, 0] = 1  # a false alarm in a padded one
    truth[0, 1, 3, 1] = 1  # a miss in a padded one
    assert segment_f1_per_class(pred, truth)[0, 0] == pytest.approx(100 * 2 / 3)
    for valid in (np.array([3]), np.array([[True, True, True, False]])):
        scores = segment_f1_per_class(pred, truth, valid)
        assert scores[0, 0] == 100.0
        assert np.isnan(scores[1, 1])  # its only segment is padding
    with pytest.raises(ValueError, match="same shape"):
        segment_f1_per_class(pred, truth[:, :, :3])


def test_a_cut_short_prediction_file_is_refused_and_closed_at_once(tmp_path: Path) -> None:
    whole = write_npz(tmp_path / "whole.npz", pred=np.zeros((64, 2, 10, K), np.uint8))
    cut = tmp_path / "PRED.npz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(PredictionFileError, match=r"PRED\.npz is not a readable \.npz"):
            evaluate_prediction_file(cut)
        gc.collect()  # np.load's own open file would warn here
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
