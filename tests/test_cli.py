"""The `avvp` command line: commands, JSON outputs, exit codes and readable errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avvp.pipeline.cli import app
from avvp.pipeline.synthetic import SyntheticLLPConfig, write_synthetic_llp

runner = CliRunner()
METRIC_KEYS = [
    *("Seg-a", "Seg-v", "Seg-av", "Seg-type", "Seg-event"),
    *("Event-a", "Event-v", "Event-av", "Event-type", "Event-event"),
    "Avg",
]


def invoke(*args: str) -> tuple[int, str]:
    """Exit code and everything printed (stdout and stderr, as a terminal shows them)."""
    result = runner.invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.output


def invoke_json(*args: str) -> dict:
    """The JSON object a --json command prints on stdout (notes go to stderr)."""
    result = runner.invoke(app, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("cli-store"))
    write_synthetic_llp(root, SyntheticLLPConfig(n_train=48, n_val=16, n_test=16, seed=5))
    return root


def test_help_lists_every_stage_command() -> None:
    code, output = invoke("--help")
    assert code == 0
    for command in (
        "demo",
        "train",
        "evaluate",
        "evaluate-predictions",
        "store",
        "import-checkpoint",
        "infer-features",
        "profile",
    ):
        assert command in output


def test_store_info_json_describes_feature_and_label_tables(store: str) -> None:
    info = invoke_json("store", "info", store, "--json")
    assert info["root"] == store
    clip = info["tables"]["clip-vit-l-14"]
    assert clip["kind"] == "features" and clip["rows"] == 80 and clip["videos"] == 80
    assert clip["shape"] == [10, 768] and clip["dtype"] == "float16"
    assert info["tables"]["clap-htsat-map"]["shape"] == [64, 768]
    assert info["tables"]["weak"]["kind"] == "labels"
    assert info["tables"]["dense-synthetic"]["rows"] == 32
    assert set(clip["provenance"]) >= {"source", "version", "weights", "dtype", "shape"}


def test_store_info_table_is_readable(store: str) -> None:
    code, output = invoke("store", "info", store)
    assert code == 0 and "clip-vit-l-14" in output and "features" in output


def test_evaluate_predictions_json_matches_the_official_numbers(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    arrays = np.load(fixtures_dir / "metrics_public.npz")
    expected = json.loads((fixtures_dir / "metrics_public.json").read_text())
    pred = tmp_path / "pred.npz"
    np.savez(pred, video_ids=arrays["video_ids"], pred=arrays["pred_shift1"])
    metrics = invoke_json("evaluate-predictions", pred, "--annotations", "published", "--json")
    assert list(metrics) == METRIC_KEYS
    for key in METRIC_KEYS:
        assert metrics[key] == pytest.approx(expected["published"]["shift1"][key], abs=1e-9)


def test_evaluate_predictions_prints_a_table_without_json(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    arrays = np.load(fixtures_dir / "metrics_public.npz")
    pred = tmp_path / "pred.npz"
    np.savez(pred, video_ids=arrays["video_ids"], pred=arrays["pred_flip15"])
    code, output = invoke("evaluate-predictions", pred)
    assert code == 0 and "Segment" in output and "Event" in output and "Avg" in output


def test_a_missing_prediction_file_exits_2_naming_it(tmp_path: Path) -> None:
    code, output = invoke("evaluate-predictions", tmp_path / "nope.npz")
    assert code == 2
    assert "nope.npz" in output


def test_import_checkpoint_then_infer_features_reproduces_the_official_outputs(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    reference = torch.load(fixtures_dir / "mmcse_official_clapclip.pt", weights_only=True)
    official = tmp_path / "checkpoint_best.pth"
    torch.save({"model": reference["state_dict"]}, official)
    ours = tmp_path / "mmcse.pt"
    code, output = invoke("import-checkpoint", official, "--kind", "mmcse", "--out", ours)
    assert code == 0, output
    assert "clap_map" in output

    features = tmp_path / "features.npz"
    np.savez(features, **{k: v.numpy() for k, v in reference["inputs"].items()})
    out = tmp_path / "out.npz"
    code, output = invoke("infer-features", ours, features, "--out", out, "--device", "cpu")
    assert code == 0, output
    with np.load(out) as result:
        assert set(result.files) == {
            "global_prob",
            "a_prob",
            "v_prob",
            "frame_prob",
            "frame_logits",
        }
        for key, value in reference["test"].items():
            np.testing.assert_allclose(result[key], value.numpy(), atol=1e-5, err_msg=key)
            assert result[key].dtype == np.float32


def test_import_checkpoint_lists_missing_and_unexpected_keys(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.pth"
    torch.save({"encoder.weight": torch.zeros(3, 3)}, bogus)
    code, output = invoke("import-checkpoint", bogus, "--kind", "valor", "--out", tmp_path / "x")
    assert code == 2
    assert "bogus.pth" in output and "missing" in output.lower()


def test_infer_features_refuses_arrays_of_the_wrong_shape(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    reference = torch.load(fixtures_dir / "mmcse_official_clapclip.pt", weights_only=True)
    official = tmp_path / "official.pth"
    torch.save(reference["state_dict"], official)
    ours = tmp_path / "mmcse.pt"
    assert invoke("import-checkpoint", official, "--kind", "mmcse", "--out", ours)[0] == 0
    features = tmp_path / "features.npz"
    np.savez(
        features,
        audio=np.zeros((2, 10, 128)),
        visual=np.zeros((2, 10, 768)),
        visual_st=np.zeros((2, 10, 512)),
    )
    code, output = invoke("infer-features", ours, features, "--out", tmp_path / "o.npz")
    assert code == 2 and "audio" in output and "(2, 64, 768)" in output


def test_train_and_evaluate_commands_make_and_score_a_run(store: str, tmp_path: Path) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "architecture: {hidden_dim: 32, class_dim: 16, num_layers: 1, num_heads: 2, ffn_dim: 32}\n"
        "optim: {warmup_epochs: 1}\nbatch_size: 16\n"
    )
    code, output = invoke(
        "train",
        "--store",
        store,
        "--model",
        "valor",
        "--config",
        config,
        "--epochs",
        "2",
        "--pseudo-labels",
        "synthetic",
        "--annotations",
        "synthetic",
        "--device",
        "cpu",
    )
    assert code == 0, output
    runs = list(Path(store, "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoint.pt").is_file()
    code, output = invoke("evaluate", runs[0], "--split", "test", "--device", "cpu")
    assert code == 0, output
    assert "Avg" in output and (runs[0] / "eval-test-synthetic-valor.json").is_file()


def test_train_with_an_unknown_model_exits_2(store: str) -> None:
    code, output = invoke("train", "--store", store, "--model", "nonet")
    assert code == 2 and "nonet" in output


def test_profile_reports_parameters_flops_and_times() -> None:
    code, output = invoke("profile", "--model", "valor", "--batch-size", "2", "--device", "cpu")
    assert code == 0, output
    assert "parameters" in output and "GFLOPs" in output and "ms" in output
