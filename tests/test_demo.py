"""`avvp demo`: the whole synthetic chain runs offline and both parsers learn."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from avvp.pipeline.evaluate import METRIC_KEYS
from avvp.pipeline.synthetic.demo import DEMO_CLIPS, run_demo
from avvp.pipeline.synthetic.features import SyntheticLLPConfig

PREDICTORS = {"weak labels", "MM-CSE init", "MM-CSE", "VALOR init", "VALOR"}


@pytest.mark.slow
def test_on_synthetic_features_both_parsers_score_far_above_their_untrained_selves(
    tmp_path: Path,
) -> None:
    # Less noise than the demo's default so that a short CI run shows the learning clearly.
    config = SyntheticLLPConfig(n_train=192, n_val=48, n_test=48, noise=0.03, pseudo_label_flip=0.1)
    result = run_demo(str(tmp_path), config, epochs=10, device="cpu", source="features")
    avg = {name: metrics["Avg"] for name, metrics in result.metrics.items()}
    assert set(avg) == PREDICTORS
    for model in ("MM-CSE", "VALOR"):
        assert avg[model] > avg[f"{model} init"] + 25, avg
    assert set(result.runs) == {"MM-CSE", "VALOR"}
    assert all(Path(run, "checkpoint.pt").is_file() for run in result.runs.values())


@pytest.mark.slow
def test_the_demo_from_clips_extracts_trains_and_scores_every_predictor(clips_demo) -> None:
    root, result = clips_demo
    assert sum(result.num_videos.values()) == DEMO_CLIPS
    assert result.num_videos == {"train": 100, "val": 50, "test": 50}
    assert set(result.metrics) == PREDICTORS
    tables = {path.name for path in (root / "features").iterdir()}
    assert tables == {"clip-vit-l-14", "r2plus1d-18", "clap-htsat-fusion"}
    assert (root / "clips" / "videos" / "synclip0200.mp4").is_file()
    # Through the flow: each parser's run published a summary, the second extracted nothing.
    first, second = result.summaries.values()
    assert first.extract.videos_extracted == DEMO_CLIPS and first.ok
    assert second.outcome("extract").status == "stored"
    assert all(Path(summary.summary_file).is_file() for summary in (first, second))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["MM-CSE", "VALOR"])
def test_both_trained_parsers_beat_the_weak_label_baseline_on_all_eleven_metrics(
    clips_demo, model: str
) -> None:
    _, result = clips_demo
    trained, baseline = result.metrics[model], result.metrics["weak labels"]
    below = {
        key: (trained[key], baseline[key]) for key in METRIC_KEYS if trained[key] <= baseline[key]
    }
    assert not below, f"{model} at or under the weak-label baseline on {below}"


@pytest.mark.slow
def test_the_flow_writes_each_demo_runs_report_with_its_figures(clips_demo) -> None:
    _, result = clips_demo
    for summary in result.summaries.values():
        html = Path(summary.train.run_url, summary.report.html)
        assert html.stat().st_size > 10_000
        figures = [Path(summary.train.run_url, name) for name in summary.report.files]
        figures = [path for path in figures if path.suffix == ".png"]
        assert any("timeline" in path.name for path in figures)
        for path in figures:
            assert path.stat().st_size > 5_000 and path.read_bytes()[:4] == b"\x89PNG"
    mmcse = Path(result.runs["MM-CSE"]) / "report"
    assert {"co_occurrence_av.png", "tsne_audio.png", "tsne_visual.png"} <= {
        path.name for path in mmcse.iterdir()
    }


@pytest.mark.slow
@pytest.mark.parametrize("model", ["MM-CSE", "VALOR"])
def test_the_demo_report_says_its_features_come_from_random_tiny_networks_and_shows_baselines(
    clips_demo, model: str
) -> None:
    _, result = clips_demo
    summary = result.summaries[model]
    text = Path(summary.train.run_url, summary.report.html).read_text()
    banner = re.search(r"<div id='provenance' class='warning'>(.*?)</div>", text, re.S)
    assert banner is not None, "no warning banner"
    assert text.index("id='provenance'") < text.index("<h2>")  # first thing on the page
    for table in ("clip-vit-l-14", "r2plus1d-18", "clap-htsat-fusion"):
        assert table in banner.group(1)
    assert "random" in banner.group(1) and "tiny" in banner.group(1)
    # The training curves and the per-class scores, as figures and a table.
    assert "<figure id='curves'>" in text and "<figure id='per_class'>" in text
    assert len(re.findall(r"<tr data-class='", text)) == 25
    # Beside the run: the weak-label baseline and the untrained network, the same
    # numbers as the demo's own table.
    rows = dict(
        re.findall(
            r"<tr data-split='test' data-row='([^']+)'>.*?data-metric='Avg'[^>]*>([^<]+)<",
            text,
            re.S,
        )
    )
    assert list(rows) == ["trained run", "weak labels", "untrained network"]
    assert float(rows["weak labels"]) == pytest.approx(
        result.metrics["weak labels"]["Avg"], abs=0.01
    )
    assert float(rows["untrained network"]) == pytest.approx(
        result.metrics[f"{model} init"]["Avg"], abs=0.01
    )
    assert float(rows["trained run"]) == pytest.approx(result.metrics[model]["Avg"], abs=0.01)
