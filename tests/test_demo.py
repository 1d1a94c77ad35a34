"""`avvp demo`: the whole synthetic chain runs offline and both parsers learn."""

from __future__ import annotations

from pathlib import Path

import pytest

from avvp.pipeline.demo import run_demo
from avvp.pipeline.synthetic import SyntheticLLPConfig


@pytest.mark.slow
def test_both_parsers_score_far_above_their_untrained_selves(tmp_path: Path) -> None:
    # Less noise than the demo's default so that a short CI run shows the learning clearly.
    config = SyntheticLLPConfig(n_train=192, n_val=48, n_test=48, noise=0.03, pseudo_label_flip=0.1)
    result = run_demo(str(tmp_path), config, epochs=10, device="cpu")
    avg = {name: metrics["Avg"] for name, metrics in result.metrics.items()}
    assert set(avg) == {"weak labels", "MM-CSE init", "MM-CSE", "VALOR init", "VALOR"}
    for model in ("MM-CSE", "VALOR"):
        assert avg[model] > avg[f"{model} init"] + 25, avg
    assert set(result.runs) == {"MM-CSE", "VALOR"}
    assert all(Path(run, "checkpoint.pt").is_file() for run in result.runs.values())
