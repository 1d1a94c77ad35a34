"""`avvp demo`: the whole synthetic chain runs offline and both parsers learn."""

from __future__ import annotations

from pathlib import Path

import pytest

from avvp.pipeline.demo import run_demo
from avvp.pipeline.synthetic import SyntheticLLPConfig


@pytest.mark.slow
def test_on_synthetic_features_both_parsers_score_far_above_their_untrained_selves(
    tmp_path: Path,
) -> None:
    # Less noise than the demo's default so that a short CI run shows the learning clearly.
    config = SyntheticLLPConfig(n_train=192, n_val=48, n_test=48, noise=0.03, pseudo_label_flip=0.1)
    result = run_demo(str(tmp_path), config, epochs=10, device="cpu", source="features")
    avg = {name: metrics["Avg"] for name, metrics in result.metrics.items()}
    assert set(avg) == {"weak labels", "MM-CSE init", "MM-CSE", "VALOR init", "VALOR"}
    for model in ("MM-CSE", "VALOR"):
        assert avg[model] > avg[f"{model} init"] + 25, avg
    assert set(result.runs) == {"MM-CSE", "VALOR"}
    assert all(Path(run, "checkpoint.pt").is_file() for run in result.runs.values())


@pytest.mark.slow
def test_the_demo_from_clips_extracts_trains_and_scores_every_predictor(tmp_path: Path) -> None:
    result = run_demo(str(tmp_path), epochs=1, device="cpu", n_clips=16)
    assert result.num_videos == {"train": 8, "val": 4, "test": 4}
    assert set(result.metrics) == {"weak labels", "MM-CSE init", "MM-CSE", "VALOR init", "VALOR"}
    assert all(0 <= metrics["Avg"] <= 100 for metrics in result.metrics.values())
    tables = {path.name for path in (tmp_path / "features").iterdir()}
    assert tables == {"clip-vit-l-14", "r2plus1d-18", "clap-htsat-map"}
    assert (tmp_path / "clips" / "videos" / "synclip0016.mp4").is_file()
