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

from avvp.extractors.base import RandomInit
from avvp.model.classes import LLP_CLASSES
from avvp.model.config import ModelConfig, get_model_config
from avvp.model.factory import create_model
from avvp.model.internals import forward_internals
from avvp.model.metrics import (
    METRIC_KEYS,
    binarize_predictions,
    segment_and_event_f1,
    segment_f1_per_class,
)
from avvp.model.mmcse import MMCSE
from avvp.pipeline import catalog
from avvp.pipeline.dataset import load_split
from avvp.pipeline.evaluate import EvaluateConfig, RunEvaluation, evaluate_run, score_split
from avvp.pipeline.infer import load_run, predict
from avvp.pipeline.reports.context import describe_table
from avvp.pipeline.reports.page import coverage_html
from avvp.pipeline.reports.plots import TimelineEvent, plot_timeline, timeline_bars
from avvp.pipeline.reports.report import ReportConfig, ReportResult, write_report
from avvp.pipeline.synthetic.features import SyntheticLLPConfig, write_synthetic_llp
from avvp.pipeline.train import train
from avvp.storage import FeatureStore, Provenance

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


# ---- what the numbers are read against -----------------------------------------------


def random_init_provenance(table: str) -> Provenance:
    """What extraction records for a table written by its tiny extractor (randomly
    initialised: `RandomInit(0)`), as `embedding.feature_provenance` writes it."""
    feature = catalog.FEATURE_SETS[table]
    assert feature.extractor is not None
    return Provenance(
        source=feature.extractor,
        version="1",
        weights=RandomInit(0).identity,
        dtype="float16",
        shape=feature.shape,
        extras={"preset": "tiny", "window_seconds": 10},
    )


@pytest.fixture(scope="module")
def random_init_report(
    mmcse_report: ReportResult, store: str, tmp_path_factory: pytest.TempPathFactory
) -> ReportResult:
    """The MM-CSE run's report in a copy of its store whose three feature tables hold the
    same rows under the provenance of tiny random-init extractors."""
    copy = tmp_path_factory.mktemp("random-init") / "store"
    shutil.copytree(store, copy, ignore=shutil.ignore_patterns("features"))
    source, target = FeatureStore(store), FeatureStore(copy)
    for table in (catalog.AUDIO_MAP_TABLE, catalog.VISUAL_TABLE, catalog.VISUAL_ST_TABLE):
        rows = source.table(table).read_videos(source.table(table).video_ids())
        target.table(table).write(
            rows.keys.video_ids,
            rows.keys.windows,
            rows.features,
            rows.valid_segments,
            rows.has_audio,
            random_init_provenance(table),
        )
    run = copy / "runs" / Path(mmcse_report.run_url).name
    return write_report(
        str(run), ReportConfig(device="cpu", timeline_videos=1, tsne_max_segments=20)
    )


def banner(text: str) -> str:
    """The provenance banner: the first element after the page's title."""
    found = re.search(r"</h1>\n(<div id='provenance'[^>]*>.*?</div>)\n<h2>Run</h2>", text, re.S)
    assert found is not None, "no provenance banner right under the title"
    return html.unescape(found.group(1))


def test_a_run_on_random_init_features_opens_with_a_warning_of_random_tiny_networks(
    random_init_report: ReportResult,
) -> None:
    text = page(random_init_report)
    shown = banner(text)
    assert shown.startswith("<div id='provenance' class='warning'>")
    assert "random (untrained) tiny networks" in shown
    assert "say nothing about what the networks these tables are named after" in shown
    for table in (catalog.AUDIO_MAP_TABLE, catalog.VISUAL_TABLE, catalog.VISUAL_ST_TABLE):
        title = catalog.FEATURE_SETS[table].title
        assert f"table {table} ({title}): extracted by this pipeline's" in shown
    assert shown.count("random weights (random-init-seed-0), not a trained network") == 3
    assert random_init_report.provenance_warning in shown
    assert len(random_init_report.provenance) == 3
    # The run's summary names each table by what made it, not by the networks it is
    # named after alone.
    row = re.search(r"<th scope='row'>features</th><td>([^<]*)</td>", text)
    assert row is not None
    assert html.unescape(row.group(1)) == (
        "audio clap-htsat-fusion (clap extractor, tiny size, random weights); "
        "visual clip-vit-l-14 (clip extractor, tiny size, random weights); "
        "visual_st r2plus1d-18 (r2plus1d extractor, tiny size, random weights)"
    )


def test_a_run_on_synthetic_features_says_they_are_synthetic(mmcse_report: ReportResult) -> None:
    shown = banner(page(mmcse_report))
    assert shown.startswith("<div id='provenance' class='warning'>")
    assert "features are synthetic, generated without any video or network" in shown
    assert shown.count("synthetic, generated by avvp's synthetic data generator") == 3
    assert "random" not in shown


def test_imported_features_and_a_table_without_provenance_are_named_as_such() -> None:
    imported = describe_table(
        "visual",
        catalog.VISUAL_TABLE,
        Provenance(
            source="valor-release",
            version="1",
            dtype="float32",
            shape=(10, 768),
            extras={"preset": "valor-clip"},
        ),
    )
    assert imported.origin == "imported" and not imported.random_weights
    assert (
        "imported from released features (source valor-release, layout valor-clip), "
        "computed outside this pipeline; float32 rows of 10 x 768" in imported.text
    )
    unknown = describe_table("audio", "my-table", None)
    assert (
        unknown.text
        == "audio features, table my-table: unknown provenance (the store records none)."
    )
    assert unknown.short == "my-table (unknown provenance)"


def test_the_training_curves_come_from_history_json_with_the_kept_epoch(
    mmcse_report: ReportResult,
) -> None:
    files = report_files(mmcse_report)
    assert files["curves.png"].read_bytes().startswith(PNG_MAGIC)
    text = page(mmcse_report)
    training = text[text.index("<h2>Training</h2>") : text.index("<h2>Per-class")]
    assert "<figure id='curves'>" in training
    history = json.loads(Path(mmcse_report.run_url, "history.json").read_text())
    assert [row.model_dump() for row in mmcse_report.history] == [
        {key: row[key] for key in ("epoch", "loss", "lr", "val")} for row in history
    ]
    best = json.loads(Path(mmcse_report.run_url, "metrics.json").read_text())["best_epoch"]
    assert mmcse_report.best_epoch == best
    assert f"Dashed line: epoch {best}, the one kept" in mmcse_report.captions["curves.png"]


def test_a_run_without_history_json_gets_a_note_and_no_curves(mmcse_report: ReportResult) -> None:
    source = Path(mmcse_report.run_url)
    copy = source.with_name(f"{source.name}-no-history")
    shutil.copytree(source, copy)
    (copy / "history.json").unlink()
    result = write_report(
        str(copy), ReportConfig(device="cpu", timeline_videos=0, tsne_max_segments=20)
    )
    assert not (copy / "report" / "curves.png").exists()  # the copied one is removed
    assert result.history == [] and "curves.png" not in result.captions
    assert result.notes == [
        "training curves skipped: the run folder holds no history.json (a checkpoint "
        "imported, not trained here)"
    ]
    assert "No training curves (see the notes)." in page(result)


def test_the_per_class_table_has_a_row_per_llp_class_with_the_runs_pooled_f_scores(
    mmcse_report: ReportResult, store: str
) -> None:
    text = page(mmcse_report)
    table = re.search(r"<table class='metrics' id='per-class'>.*?</table>", text, re.S)
    assert table is not None
    rows = re.findall(r"<tr data-class='([^']+)'>(.*?)</tr>", table.group(0))
    assert [name for name, _ in rows] == list(LLP_CLASSES)
    # The scores of the test split, predicted as the metrics tables predict.
    loaded = load_run(mmcse_report.run_url, "cpu")
    split = load_split(store, DATA, "test", torch.device("cpu"), with_dense=True)
    assert split.dense is not None
    outputs = predict(loaded.model, split.audio, split.visual, split.visual_st)
    pred = binarize_predictions(
        outputs["frame_prob"], outputs["global_prob"], outputs["v_prob"], "mmcse"
    )
    expected = segment_f1_per_class(pred, split.dense, split.valid_segments.numpy())
    true_segments = split.dense.sum(axis=(0, 2))  # every synthetic segment is valid
    assert mmcse_report.per_class_split == "test"
    for k, (name, cells) in enumerate(rows):
        shown = dict(re.findall(r"data-column='([^']+)'>([^<]+)<", cells))
        for index, column in enumerate(("audio_f", "visual_f")):
            value = expected[index, k]
            assert shown[column] == ("n/a" if np.isnan(value) else f"{value:.2f}"), name
        assert shown["audio_segments"] == str(true_segments[0, k]), name
        assert shown["visual_segments"] == str(true_segments[1, k]), name
    assert sum(score.audio_segments for score in mmcse_report.per_class) > 0
    assert "<figure id='per_class'>" in text


def test_the_baselines_table_sets_the_run_beside_weak_labels_and_the_untrained_network(
    mmcse_report: ReportResult, store: str
) -> None:
    text = page(mmcse_report)
    table = re.search(r"<table class='metrics' id='baselines'>.*?</table>", text, re.S)
    assert table is not None
    shown = {
        (split, row): dict(re.findall(r"data-metric='([^']+)'[^>]*>([^<]+)<", cells))
        for split, row, cells in re.findall(
            r"<tr data-split='([^']+)' data-row='([^']+)'>(.*?)</tr>", table.group(0)
        )
    }
    rows = ("trained run", "weak labels", "untrained network")
    assert list(shown) == [(split, row) for split in ("val", "test") for row in rows]
    loaded = load_run(mmcse_report.run_url, "cpu")
    for split in ("val", "test"):
        tensors = load_split(store, DATA, split, torch.device("cpu"), with_dense=True)
        assert tensors.dense is not None
        weak = tensors.weak.numpy().astype(np.uint8)
        every_segment = np.broadcast_to(weak[:, None, None, :], tensors.dense.shape)
        torch.manual_seed(loaded.config.seed)  # as training drew the first weights
        untrained = create_model(loaded.config.model_config_resolved())
        outputs = predict(untrained, tensors.audio, tensors.visual, tensors.visual_st)
        expected = {
            "trained run": mmcse_report.metrics[split],
            "weak labels": segment_and_event_f1(every_segment, tensors.dense),
            "untrained network": score_split(outputs, tensors, "mmcse"),
        }
        assert list(mmcse_report.baselines[split]) == list(expected)
        for row, metrics in expected.items():
            assert mmcse_report.baselines[split][row] == pytest.approx(metrics), (split, row)
            assert shown[(split, row)] == {key: f"{metrics[key]:.2f}" for key in METRIC_KEYS}
    assert "the score of a parser that locates nothing in time" in text
