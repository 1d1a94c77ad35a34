"""Run reports: the figures, the self-contained HTML page, and the MM-CSE internals
(SECM attention, CAFD class features) they are drawn from."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import TINY_SIZES, synthetic_data, tiny_config

from avvp.model.config import ModelConfig, get_model_config
from avvp.model.metrics import METRIC_KEYS
from avvp.model.mmcse import MMCSE, forward_internals
from avvp.pipeline.dataset import load_split
from avvp.pipeline.evaluate import EvaluateConfig, RunEvaluation, evaluate_run
from avvp.pipeline.infer import load_run
from avvp.pipeline.reports.page import coverage_html
from avvp.pipeline.reports.plots import TimelineEvent, plot_timeline, timeline_bars
from avvp.pipeline.reports.report import ReportConfig, ReportResult, write_report
from avvp.pipeline.synthetic.features import SyntheticLLPConfig, write_synthetic_llp
from avvp.pipeline.train import train

SMALL = SyntheticLLPConfig(n_train=64, n_val=24, n_test=24, seed=3)
DATA = synthetic_data()
ON_CPU = ReportConfig(device="cpu")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TRACKS = ("audio", "visual")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("store"))
    write_synthetic_llp(root, SMALL)
    return root


@pytest.fixture(scope="module")
def mmcse_report(store: str) -> ReportResult:
    return write_report(train(store, tiny_config("mmcse-clapclip")).run_url, ON_CPU)


@pytest.fixture(scope="module")
def valor_report(store: str) -> ReportResult:
    return write_report(train(store, tiny_config("valor-clapclip")).run_url, ON_CPU)


def report_files(result: ReportResult) -> dict[str, Path]:
    """The files a report wrote, by name, as local paths."""
    return {Path(name).name: Path(result.run_url, name) for name in result.files}


def page(result: ReportResult) -> str:
    return Path(result.run_url, result.html).read_text()


def truth_of_test_split(store: str) -> tuple[dict[tuple[str, int], int], np.ndarray]:
    """The row of each (video, window) of the test split and its dense truth (N, 2, T, K)."""
    split = load_split(store, DATA, "test", torch.device("cpu"), with_dense=True)
    assert split.dense is not None
    row_of = {key: row for row, key in enumerate(split.keys)}
    return row_of, split.dense


def tsne_points(
    path: Path, row_of: dict[tuple[str, int], int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(rows, segments, labels, 2-D points) of a report's tsne_<modality>.npz."""
    with np.load(path) as saved:
        keys = zip(saved["video_ids"].tolist(), saved["windows"].tolist(), strict=True)
        rows = np.array([row_of[key] for key in keys], dtype=np.int64)
        return rows, saved["segments"], saved["labels"], saved["points"]


def test_an_mmcse_report_writes_its_pngs_and_a_page_embedding_every_one(
    mmcse_report: ReportResult,
) -> None:
    files = report_files(mmcse_report)
    pngs = {name: path for name, path in files.items() if name.endswith(".png")}
    timelines = [name for name in pngs if name.startswith("timeline_")]
    assert len(timelines) == ON_CPU.timeline_videos
    assert {"co_occurrence_av.png", "tsne_audio.png", "tsne_visual.png"} <= set(pngs)
    assert mmcse_report.html == "report/report.html" and "report.html" in files
    for path in files.values():
        assert path.stat().st_size > 0, path
    text = page(mmcse_report)
    for name, path in pngs.items():
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert f"data:image/png;base64,{base64.b64encode(data).decode()}" in text, name
    assert text.count("<figcaption>") == len(pngs)
    # Self-contained: no fetched stylesheet, script or image, no link anywhere.
    assert not re.search(r"https?://|<link|<script|src='(?!data:)", text)
    assert mmcse_report.run_id in text and "mmcse-clapclip" in text
    assert not mmcse_report.notes
    assert not [
        name for name in Path(mmcse_report.run_url, "report").iterdir() if ".tmp" in name.name
    ]


def test_the_page_holds_both_metrics_tables_with_the_numbers_of_evaluate_run(
    mmcse_report: ReportResult,
) -> None:
    text = page(mmcse_report)
    for split in ("val", "test"):
        evaluation = evaluate_run(mmcse_report.run_url, EvaluateConfig(split=split, device="cpu"))
        assert evaluation.reused  # the report's scores are evaluate_run's cached ones
        assert mmcse_report.metrics[split] == evaluation.metrics
        table = re.search(rf"<table class='metrics' id='metrics-{split}'>.*?</table>", text, re.S)
        assert table is not None, split
        cells = dict(re.findall(r"data-metric='([^']+)'[^>]*>([^<]+)<", table.group(0)))
        assert cells == {key: f"{evaluation.metrics[key]:.2f}" for key in METRIC_KEYS}
        count = getattr(SMALL, f"n_{split}")
        assert (evaluation.videos_in_split, evaluation.videos_scored) == (count, count)
        assert f"scored {count} of {count} videos of the {split} split" in text


def test_a_split_scored_in_part_says_so_under_its_table() -> None:
    evaluation = RunEvaluation(
        run_url="runs/x",
        split="test",
        annotations="corrected",
        filter_rule="mmcse",
        metrics={},
        videos_in_split=2,
        videos_scored=1,
        videos_without_features=1,
        missing_examples=["synclip0004"],
        warning="scored 1 of 2 videos of the test split: 1 have no features (synclip0004); "
        "extract them and evaluate again",
    )
    text = coverage_html(evaluation)
    assert "scored 1 of 2 videos of the test split</p>" in text
    assert f"<p class='note'>{html.escape(evaluation.warning)}</p>" in text


def test_the_page_names_the_chosen_epoch_counted_from_1(mmcse_report: ReportResult) -> None:
    metrics = json.loads(Path(mmcse_report.run_url, "metrics.json").read_text())
    assert metrics["best_epoch"] in (1, 2)  # tiny_config trains 2 epochs
    assert f"epoch {metrics['best_epoch']} of 2 (val Seg-type" in page(mmcse_report)


def test_the_co_occurrence_map_is_the_mean_audio_to_visual_secm_attention_rows_summing_to_1(
    mmcse_report: ReportResult, store: str
) -> None:
    matrix = np.load(report_files(mmcse_report)["co_occurrence_av.npy"])
    assert matrix.shape == (25, 25)
    assert (matrix >= 0).all()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-5)
    # The same map straight from the network: the last layer's map_av of the training
    # forward, in eval mode. Every synthetic test video is one window of 10 valid
    # segments, so the mean over videos of per-video means is the plain mean.
    loaded = load_run(mmcse_report.run_url, "cpu")
    split = load_split(store, DATA, "test", torch.device("cpu"), with_dense=True)
    with torch.no_grad():
        output = loaded.model(split.audio, split.visual, split.visual_st, with_aux=True)
    expected = output.aux["map_av"].double().mean(dim=(0, 1)).numpy()
    np.testing.assert_allclose(matrix, expected, atol=1e-6)


def test_the_tsne_has_one_point_per_test_segment_and_true_class(
    mmcse_report: ReportResult, store: str
) -> None:
    row_of, dense = truth_of_test_split(store)
    files = report_files(mmcse_report)
    for index, modality in enumerate(TRACKS):
        rows, segments, labels, points = tsne_points(files[f"tsne_{modality}.npz"], row_of)
        assert len(labels) == int(dense[:, index].sum()) > 0  # under the cap: every pair
        assert points.shape == (len(labels), 2) and np.isfinite(points).all()
        assert dense[rows, index, segments, labels].all()  # each point is a true class
        pairs = set(zip(rows.tolist(), segments.tolist(), labels.tolist(), strict=True))
        assert len(pairs) == len(labels)  # and no pair twice


def test_the_tsne_cap_draws_that_many_segments_each_with_all_its_true_classes(
    mmcse_report: ReportResult, store: str
) -> None:
    # A copy of the run, so that the module's report stays as it is.
    source = Path(mmcse_report.run_url)
    copy = source.with_name(f"{source.name}-capped")
    shutil.copytree(source, copy)
    cap = 15
    result = write_report(
        str(copy), ReportConfig(device="cpu", tsne_max_segments=cap, timeline_videos=1)
    )
    row_of, dense = truth_of_test_split(store)
    files = report_files(result)
    for index, modality in enumerate(TRACKS):
        rows, segments, labels, _ = tsne_points(files[f"tsne_{modality}.npz"], row_of)
        drawn = np.unique(np.stack([rows, segments], axis=1), axis=0)
        assert len(drawn) == cap
        assert len(labels) == int(dense[drawn[:, 0], index, drawn[:, 1]].sum())
        assert dense[rows, index, segments, labels].all()
    # The earlier report's other timelines are gone: the folder shows this report only.
    assert len(list((copy / "report").glob("timeline_*.png"))) == 1


def test_forward_internals_gives_forward_outputs_cafd_features_and_last_layer_maps() -> None:
    config = ModelConfig.from_dict(
        {**get_model_config("mmcse").to_dict(), **TINY_SIZES, "num_layers": 2}
    )
    torch.manual_seed(0)
    model = MMCSE(config).eval()
    audio, visual, visual_st = (
        torch.randn(3, 64, 768),
        torch.randn(3, 10, 768),
        torch.randn(3, 10, 512),
    )
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda _, __, out, name=name: captured.__setitem__(name, out.tokens)
        )
        for name in ("audio_classes", "visual_classes")
    ]
    with torch.no_grad():
        reference = model(audio, visual, visual_st, with_aux=True)
        inference = model(audio, visual, visual_st)
        internals = forward_internals(model, audio, visual, visual_st)
    for hook in hooks:
        hook.remove()
    for name in ("global_prob", "a_prob", "v_prob", "frame_prob", "frame_logits"):
        assert torch.equal(getattr(internals.output, name), getattr(reference, name)), name
        torch.testing.assert_close(getattr(internals.output, name), getattr(inference, name))
    assert internals.output.aux == {} and inference.aux == {}
    assert set(internals.co_occurrence) == {"map_aa", "map_av", "map_vv", "map_va"}
    for name, weights in internals.co_occurrence.items():
        assert torch.equal(weights, reference.aux[name]), name
        assert weights.shape == (3, 10, 25, 25)
    torch.testing.assert_close(internals.co_occurrence["map_av"].sum(-1), torch.ones(3, 10, 25))
    assert internals.audio_class_features.shape == (3, 10, 25, TINY_SIZES["class_dim"])
    assert torch.equal(internals.audio_class_features, captured["audio_classes"])
    assert torch.equal(internals.visual_class_features, captured["visual_classes"])


def test_a_valor_report_has_the_tables_and_timelines_and_notes_the_skipped_figures(
    valor_report: ReportResult,
) -> None:
    names = set(report_files(valor_report))
    assert len([name for name in names if name.startswith("timeline_")]) == 4
    assert not [name for name in names if name.startswith(("tsne_", "co_occurrence"))]
    assert set(valor_report.metrics) == {"val", "test"}
    text = page(valor_report)
    assert "id='metrics-val'" in text and "id='metrics-test'" in text
    assert len(valor_report.notes) == 2
    assert any("co-occurrence map skipped" in note for note in valor_report.notes)
    assert any("t-SNE of class features skipped" in note for note in valor_report.notes)
    for note in valor_report.notes:
        assert html.escape(note) in text


def test_a_timeline_of_a_video_without_events_still_writes_a_png(tmp_path: Path) -> None:
    for truth in (None, []):
        path = plot_timeline(tmp_path / "empty.png", 10.0, [], truth=truth, title="no events")
        assert path == tmp_path / "empty.png"
        assert path.read_bytes().startswith(PNG_MAGIC) and path.stat().st_size > 1000
    assert [p.name for p in tmp_path.iterdir()] == ["empty.png"]  # no temporary left


def test_timeline_bars_lie_within_the_video(mmcse_report: ReportResult, tmp_path: Path) -> None:
    listing = json.loads(report_files(mmcse_report)["timelines.json"].read_text())
    assert len(listing) == 4
    for video in listing:
        predicted = [TimelineEvent(**event) for event in video["predicted"]]
        truth = [TimelineEvent(**event) for event in video["truth"]]
        assert truth  # the report prefers videos with true events
        bars = timeline_bars(video["duration_s"], predicted, truth)
        assert len(bars) == len(predicted) + len(truth)
        assert all(0 <= bar.start_s < bar.end_s <= video["duration_s"] for bar in bars)
    # Events reaching outside the video are clipped to it, or dropped when wholly out;
    # audio-visual ones and plain 4-tuples are accepted.
    events = [
        TimelineEvent("audio", "Dog", -2.0, 4.0),
        ("visual", "Car", 8.0, 13.0),
        ("visual", "Car", 11.0, 12.0),
        TimelineEvent("audio-visual", "Dog", 0.0, 4.0),
    ]
    spans = [(bar.track, bar.start_s, bar.end_s) for bar in timeline_bars(10.0, events)]
    assert spans == [("audio", 0.0, 4.0), ("visual", 8.0, 10.0)]
    assert plot_timeline(tmp_path / "t.png", 10.0, events, title="clipped").stat().st_size > 0
    with pytest.raises(ValueError, match="unknown modality"):
        timeline_bars(10.0, [TimelineEvent("speech", "Dog", 0.0, 1.0)])
