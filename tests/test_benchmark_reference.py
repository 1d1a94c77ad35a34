"""The benchmarks compare the same function: the training-step benchmark's official-layout
reference network reproduces the official outputs, and ours with the same weights equals
it; the precision benchmark runs one network in both precisions from the same weights."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
import torch
from support import REPO

from avvp.model.config import get_model_config
from avvp.model.losses import mmcse_loss
from avvp.model.mmcse import build_mmcse
from avvp.model.mmcse_import import mmcse_from_official_state_dict

ATOL = 1e-5
PREDICTIONS = ("global_prob", "a_prob", "v_prob", "frame_prob", "frame_logits")
# A small network of the same structure: the pair tests need no full-size weights.
TINY = replace(
    get_model_config("mmcse-clapclip"),
    hidden_dim=32,
    class_dim=16,
    num_layers=2,
    num_heads=2,
    ffn_dim=24,
)


def load_benchmark(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def reference_module() -> ModuleType:
    return load_benchmark("mmcse_reference")


@pytest.fixture(scope="module")
def train_step() -> ModuleType:
    return load_benchmark("train_step")


@pytest.fixture(scope="module")
def official(fixtures_dir: Path) -> dict:
    return torch.load(fixtures_dir / "mmcse_official_clapclip.pt", weights_only=True)


@pytest.fixture(scope="module")
def official_reference(reference_module: ModuleType, official: dict) -> torch.nn.Module:
    """The reference network with the fixture's official weights (eval mode, not trained)."""
    model = reference_module.ReferenceMMCSE(get_model_config("mmcse-clapclip"))
    return reference_module.load_official_state_dict(model, official["state_dict"]).eval()


def ours_from_fixture(official: dict) -> torch.nn.Module:
    config, state = mmcse_from_official_state_dict(official["state_dict"])
    model = build_mmcse(config)
    model.load_state_dict(state, strict=True)
    return model.eval()


def training_results(model: torch.nn.Module, official: dict) -> dict[str, torch.Tensor]:
    """Predictions, auxiliaries and loss terms of the fixture's inputs and labels."""
    inputs, labels = official["inputs"], official["loss"]
    with torch.no_grad():
        output = model(inputs["audio"], inputs["visual"], inputs["visual_st"], with_aux=True)
        loss = mmcse_loss(
            output,
            labels["labels"],
            labels["audio_pseudo_labels"],
            labels["visual_pseudo_labels"],
        )
    return {
        **{name: getattr(output, name) for name in PREDICTIONS},
        **output.aux,
        **loss.terms,
        "loss_total": loss.total,
    }


def assert_all_close(produced: dict, expected: dict) -> None:
    assert produced.keys() == expected.keys()
    for name, tensor in expected.items():
        torch.testing.assert_close(produced[name], tensor, atol=ATOL, rtol=0, msg=name)


def test_reference_loads_the_official_state_dict_and_reproduces_its_training_outputs(
    official_reference: torch.nn.Module, official: dict
) -> None:
    produced = training_results(official_reference, official)
    assert_all_close(produced, {**official["train"], **official["loss"]["terms"]})


def test_reference_and_ours_with_the_fixture_weights_give_equal_training_outputs(
    official_reference: torch.nn.Module, official: dict
) -> None:
    assert_all_close(
        training_results(ours_from_fixture(official), official),
        training_results(official_reference, official),
    )


def test_reference_inference_forward_reproduces_the_official_test_outputs(
    official_reference: torch.nn.Module, official: dict
) -> None:
    inputs = official["inputs"]
    with torch.no_grad():
        output = official_reference(inputs["audio"], inputs["visual"], inputs["visual_st"])
    assert output.aux == {}
    for name, tensor in official["test"].items():
        torch.testing.assert_close(getattr(output, name), tensor, atol=ATOL, rtol=0, msg=name)


def test_benchmark_pair_gives_equal_outputs_and_equal_gradients_for_every_parameter(
    train_step: ModuleType,
) -> None:
    ours, reference = train_step.build_pair(seed=3, config=TINY)
    batch = train_step.Batch.random(2, torch.device("cpu"), seed=1)
    assert train_step.check_same_function(ours, reference, batch, atol=ATOL) <= ATOL
    # Without dropout the training losses, hence the gradients, must agree too; the
    # reference's gradients under official names map onto ours as its weights do.
    ours.eval()
    reference.eval()
    for model in (ours, reference):
        train_step.forward_with_loss(model, batch)[1].total.backward()
    reference_grads = {name: p.grad for name, p in reference.named_parameters()}
    _, mapped_grads = mmcse_from_official_state_dict(reference_grads, num_heads=TINY.num_heads)
    ours_grads = {name: p.grad for name, p in ours.named_parameters()}
    assert ours_grads.keys() == mapped_grads.keys()
    for name, grad in ours_grads.items():
        torch.testing.assert_close(grad, mapped_grads[name], atol=1e-6, rtol=1e-4, msg=name)


def test_benchmark_refuses_to_time_networks_whose_outputs_differ(train_step: ModuleType) -> None:
    ours, reference = train_step.build_pair(seed=3, config=TINY)
    with torch.no_grad():
        reference.fc_prob.fc[4].bias += 0.5
    batch = train_step.Batch.random(2, torch.device("cpu"), seed=1)
    with pytest.raises(ValueError, match="differ by more than 1e-05: global_prob"):
        train_step.check_same_function(ours, reference, batch, atol=ATOL)


def test_the_precision_benchmark_compares_float32_and_bfloat16_features(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "precision.py"), "--size", "tiny"]
        + ["--extractors", "clap", "--repeats", "2", "--threads", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("  clap:"))
    assert "relative from float32's" in line and "auto picks float32" in line
    assert "ratio float32 time / bfloat16" in result.stdout
