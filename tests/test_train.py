"""Training and evaluation on stored features: learning, repeatability, run folders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support import TINY_SIZES, synthetic_data, tiny_config

from avvp.pipeline.code_version import code_version
from avvp.pipeline.dataset import read_fingerprints
from avvp.pipeline.evaluate import EvaluateConfig, evaluate_run, plan_evaluation
from avvp.pipeline.infer import load_run, predict_windows
from avvp.pipeline.sources.checkpoints import load_checkpoint
from avvp.pipeline.sources.config_files import load_config
from avvp.pipeline.synthetic.features import (
    SyntheticLLP,
    SyntheticLLPConfig,
    write_synthetic_llp,
)
from avvp.pipeline.train import EpochReport, learning_rate_factor, planned_run_id, train
from avvp.pipeline.train_config import OptimConfig, TrainConfig, load_train_config
from avvp.storage import FeatureStore, LabelStore, RunStore

SMALL = SyntheticLLPConfig(n_train=96, n_val=32, n_test=32, seed=3)
DATA = synthetic_data()
ON_CPU = EvaluateConfig(split="test", device="cpu")
FEATURE_TABLES = (DATA.audio_table, DATA.visual_table, DATA.visual_st_table)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = str(tmp_path_factory.mktemp("store"))
    write_synthetic_llp(root, SMALL)
    return root


def test_a_run_folder_holds_config_checkpoint_metrics_and_the_fingerprints_it_read(
    store: str,
) -> None:
    reports: list[EpochReport] = []
    result = train(store, tiny_config("mmcse-clapclip"), on_epoch=reports.append)
    run = RunStore(store).run(result.run_id)
    assert {"config.json", "checkpoint.pt", "metrics.json", "inputs.json", "history.json"} <= set(
        run.names()
    )
    config = run.read_json("config.json")
    assert config["train"]["model"] == "mmcse-clapclip"
    assert config["model"]["hidden_dim"] == TINY_SIZES["hidden_dim"]
    features = {f"features/{name}" for name in FEATURE_TABLES}
    inputs = run.read_json("inputs.json")
    assert set(inputs["train"]) == {*features, "labels/weak", "labels/segment-synthetic"}
    assert set(inputs["val"]) == {*features, "labels/weak", "labels/dense-synthetic"}
    metrics = run.read_json("metrics.json")
    assert metrics["selection_metric"] == "Seg-type"
    assert len(metrics["val"]) == 11
    model, state = load_checkpoint(run.read_bytes("checkpoint.pt"))
    assert state["epoch"] == metrics["best_epoch"]
    assert sum(p.numel() for p in model.parameters()) > 0
    assert inputs["code"] == code_version("avvp.pipeline.train")


def test_epochs_are_numbered_from_1_in_reports_history_metrics_and_checkpoint(
    store: str,
) -> None:
    reports: list[EpochReport] = []
    result = train(store, tiny_config("valor-clapclip", seed=21), on_epoch=reports.append)
    assert not result.reused
    assert [report.epoch for report in reports] == [1, 2]
    assert [report.epoch for report in result.history] == [1, 2]
    run = RunStore(store).run(result.run_id)
    assert [entry["epoch"] for entry in run.read_json("history.json")] == [1, 2]
    best = run.read_json("metrics.json")["best_epoch"]
    assert best == result.best_epoch and best in (1, 2)
    assert load_checkpoint(run.read_bytes("checkpoint.pt"))[1]["epoch"] == best
    best_report = reports[best - 1]
    assert best_report.val == result.best_val
    assert train(store, tiny_config("valor-clapclip", seed=21)).best_epoch == best


def test_training_twice_with_one_config_reuses_the_finished_run(store: str) -> None:
    config = tiny_config("valor-clapclip", epochs=1)
    first = train(store, config)
    second = train(store, config)
    assert second.reused and second.run_id == first.run_id
    assert second.best_val == first.best_val


def test_the_same_seed_on_cpu_gives_the_same_checkpoint(store: str) -> None:
    config = tiny_config("mmcse-clapclip", epochs=1, seed=11)
    first = train(store, config, force=True)
    checkpoint = RunStore(store).run(first.run_id).read_bytes("checkpoint.pt")
    weights_first = load_checkpoint(checkpoint)[0].state_dict()
    train(store, config, force=True)
    weights_second = load_checkpoint(RunStore(store).run(first.run_id).read_bytes("checkpoint.pt"))[
        0
    ].state_dict()
    for name, tensor in weights_first.items():
        assert torch.equal(tensor, weights_second[name]), name


def test_evaluate_run_scores_the_test_split_and_writes_its_report(store: str) -> None:
    result = train(store, tiny_config("valor-clapclip", epochs=1))
    evaluation = evaluate_run(result.run_url, ON_CPU)
    assert evaluation.annotations == "synthetic" and evaluation.filter_rule == "valor"
    run = RunStore(store).run(result.run_id)
    assert run.read_json("eval-test-synthetic-valor.json")["metrics"] == evaluation.metrics
    assert "Segment" in run.read_text("eval-test-synthetic-valor.txt")
    assert not evaluation.reused and evaluation.run_id == result.run_id
    assert json.loads(json.dumps(evaluation.model_dump()))["metrics"] == evaluation.metrics
    assert evaluation.videos_in_split == evaluation.videos_scored == SMALL.n_test
    assert evaluation.videos_without_features == 0 and evaluation.missing_examples == []
    assert evaluation.warning == ""
    again = evaluate_run(result.run_url, ON_CPU)
    assert again.reused and again.metrics == evaluation.metrics
    assert again.videos_scored == SMALL.n_test and again.warning == ""
    assert not evaluate_run(result.run_url, ON_CPU, force=True).reused


def test_another_checkpoint_in_the_run_folder_makes_a_new_evaluation(store: str) -> None:
    result = train(store, tiny_config("valor-clapclip", epochs=1))
    other = train(store, tiny_config("valor-clapclip", epochs=1, seed=12))
    assert other.run_id != result.run_id
    run = RunStore(store).run(result.run_id)
    evaluate_run(result.run_url, ON_CPU)
    key = plan_evaluation(result.run_url, ON_CPU).cache_key
    assert evaluate_run(result.run_url, ON_CPU).reused
    original = run.read_bytes("checkpoint.pt")
    replaced = RunStore(store).run(other.run_id).read_bytes("checkpoint.pt")
    assert replaced != original
    run.write_bytes("checkpoint.pt", replaced)
    try:
        assert plan_evaluation(result.run_url, ON_CPU).cache_key != key
        rescored = evaluate_run(result.run_url, ON_CPU)
        assert not rescored.reused
        assert rescored.metrics == evaluate_run(other.run_url, ON_CPU).metrics
    finally:
        run.write_bytes("checkpoint.pt", original)
    assert plan_evaluation(result.run_url, ON_CPU).cache_key == key


def test_the_evaluation_key_holds_the_evaluation_code_version(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = train(store, tiny_config("valor-clapclip", epochs=1))
    key = plan_evaluation(result.run_url, ON_CPU).cache_key
    assert plan_evaluation(result.run_url, ON_CPU).code_version == code_version(
        "avvp.pipeline.evaluate"
    )
    monkeypatch.setattr("avvp.pipeline.evaluate.code_version", lambda *modules: "0" * 12)
    assert plan_evaluation(result.run_url, ON_CPU).cache_key != key


def test_the_run_id_changes_with_the_training_code(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tiny_config("valor-clapclip", epochs=1, seed=13)
    first = train(store, config)
    assert first.run_id == planned_run_id(store, config)
    assert RunStore(store).run(first.run_id).read_json("inputs.json")["code"] == code_version(
        "avvp.pipeline.train"
    )
    monkeypatch.setattr("avvp.pipeline.train.code_version", lambda *modules: "0" * 12)
    planned = planned_run_id(store, config)
    assert planned != first.run_id
    second = train(store, config)
    assert not second.reused and second.run_id == planned
    assert RunStore(store).run(planned).read_json("inputs.json")["code"] == "0" * 12


def test_evaluate_run_refuses_a_folder_that_is_not_a_run(store: str) -> None:
    with pytest.raises(ValueError, match="not a run folder"):
        evaluate_run(f"{store}/features")


def test_missing_pseudo_labels_give_an_error_naming_the_table(store: str) -> None:
    config = tiny_config("mmcse-clapclip", data={**DATA.model_dump(), "pseudo_labels": "valor"})
    # A ValueError or KeyError is what the CLI turns into one plain line (exit 2).
    with pytest.raises((ValueError, KeyError), match="segment-valor"):
        train(store, config)


def test_warmup_then_cosine_schedule_rises_then_decays_to_the_floor() -> None:
    optim = OptimConfig(lr=3e-4, warmup_epochs=10, min_lr=3e-6)
    factor = learning_rate_factor(optim, epochs=60)
    values = np.array([factor(epoch) for epoch in range(60)])
    assert np.all(np.diff(values[:10]) > 0)
    assert values[10] == pytest.approx(1.0)
    assert np.all(np.diff(values[10:]) < 0)
    assert values[-1] * optim.lr == pytest.approx(3e-6)


def test_official_recipe_uses_step_decay_and_the_official_betas() -> None:
    config = load_train_config("official")
    assert config.optim.schedule == "step" and config.optim.lr == 1e-4
    factor = learning_rate_factor(config.optim, config.epochs)
    assert [factor(e) for e in (0, 9, 10, 20)] == pytest.approx([1, 1, 0.1, 0.01])
    assert config.optim.betas == (0.5, 0.999)


def test_config_file_and_overrides_are_applied_over_the_recipe(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('model = "valor-clapclip"\nepochs = 5\n[optim]\nlr = 0.001\n')
    config = load_train_config("paper", path, {"epochs": 7})
    assert (config.model, config.epochs, config.optim.lr) == ("valor-clapclip", 7, 0.001)
    assert config.optim.weight_decay == 1e-3


def test_unknown_settings_are_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"mmcse": {"no_such_switch": False}}))
    with pytest.raises(ValueError, match="no_such_switch"):
        load_train_config("paper", path)
    with pytest.raises(ValueError, match="unknown model config"):
        load_train_config("paper", None, {"model": "mmcse-nonexistent"})


# ---- run ids from the rows a run reads ---------------------------------------------


@pytest.fixture()
def growing_store(tmp_path: Path) -> tuple[str, SyntheticLLP]:
    """A small store, and the generated arrays to take new rows from."""
    root = str(tmp_path / "store")
    data = write_synthetic_llp(root, SyntheticLLPConfig(n_train=24, n_val=8, n_test=8, seed=4))
    return root, data


def add_video(root: str, data: SyntheticLLP, row: int, video_id: str, split: str) -> None:
    """Row `row` of the generated arrays stored again under a new id and split."""
    labels, features = LabelStore(root), FeatureStore(root)
    provenance = {name: features.table(name).provenance for name in FEATURE_TABLES}
    labels.weak().write([video_id], data.weak[row : row + 1], [split], labels.weak().provenance)
    for name, array in zip(
        FEATURE_TABLES, (data.audio_map, data.visual, data.visual_st), strict=True
    ):
        features.table(name).write(
            [video_id], [0], array[row : row + 1], [10], [True], provenance[name]
        )
    table = "segment-synthetic" if split == "train" else "dense-synthetic"
    source = data.pseudo if split == "train" else data.dense
    labels.segments(table).write(
        [video_id],
        [0],
        source[row : row + 1, 0],
        source[row : row + 1, 1],
        labels.segments(table).provenance,
    )


def test_a_new_train_video_makes_a_new_run_and_a_new_test_video_does_not(
    growing_store: tuple[str, SyntheticLLP],
) -> None:
    root, data = growing_store
    config = tiny_config("valor-clapclip", epochs=1)
    first = train(root, config)

    add_video(root, data, 0, "newtrain001", "train")
    second = train(root, config)
    assert not second.reused and second.run_id != first.run_id

    add_video(root, data, 1, "newtest0001", "test")
    third = train(root, config)
    assert third.reused and third.run_id == second.run_id


def test_an_evaluation_counts_the_videos_of_its_split_without_features(
    growing_store: tuple[str, SyntheticLLP],
) -> None:
    root, data = growing_store
    result = train(root, tiny_config("valor-clapclip", epochs=1))
    first = evaluate_run(result.run_url, ON_CPU)
    assert (first.videos_in_split, first.videos_scored, first.warning) == (8, 8, "")

    # A test video whose extraction failed: weak labels, no features. The rows scored
    # are the same, so the cached scores are reused, with counts read afresh.
    weak = LabelStore(root).weak()
    weak.write(["nofeat0001"], data.weak[1:2], ["test"], weak.provenance)
    cached = evaluate_run(result.run_url, ON_CPU)
    assert cached.reused and cached.metrics == first.metrics
    assert (cached.videos_in_split, cached.videos_scored) == (9, 8)
    assert cached.videos_without_features == 1 and cached.missing_examples == ["nofeat0001"]
    assert cached.warning == (
        "scored 8 of 9 videos of the test split: 1 have no features (nofeat0001); "
        "extract them and evaluate again"
    )
    assert evaluate_run(result.run_url, ON_CPU, force=True).videos_scored == 8
    stored = RunStore(root).run(result.run_id).read_json("eval-test-synthetic-valor.json")
    assert (stored["videos_in_split"], stored["videos_scored"]) == (9, 8)

    add_video(root, data, 1, "nofeat0001", "test")  # its features extracted after all
    complete = evaluate_run(result.run_url, ON_CPU)
    assert not complete.reused
    assert (complete.videos_in_split, complete.videos_scored, complete.warning) == (9, 9, "")


def test_regenerated_pseudo_labels_of_one_video_make_a_new_run(
    growing_store: tuple[str, SyntheticLLP],
) -> None:
    root, data = growing_store
    config = tiny_config("valor-clapclip", epochs=1)
    first = train(root, config)

    table = LabelStore(root).segments("segment-synthetic")
    provenance, keys = table.provenance, table.keys()
    labels = table.read(keys)
    audio = labels.audio.copy()
    audio[0, 3] ^= 1  # one segment of one train video
    shutil.rmtree(Path(root, "labels", "segment-synthetic"))
    table = LabelStore(root).segments("segment-synthetic")
    table.write(keys.video_ids, keys.windows, audio, labels.visual, provenance)

    second = train(root, config)
    assert not second.reused and second.run_id != first.run_id


def test_model_aliases_resolve_in_the_config_so_runs_name_the_network_exactly() -> None:
    assert TrainConfig(model="mmcse").model == "mmcse-clapclip"
    assert TrainConfig(model="valor").model == TrainConfig(model="valor-clapclip").model


def test_an_evaluation_config_loads_from_a_file_with_options_over_it(tmp_path: Path) -> None:
    path = tmp_path / "eval.yaml"
    path.write_text("split: val\nfilter_rule: valor\n")
    config = load_config(EvaluateConfig, path, {"split": "test"})
    assert (config.split, config.filter_rule, config.device) == ("test", "valor", "auto")
    with pytest.raises(ValueError, match="splt"):
        load_config(EvaluateConfig, None, {"splt": "val"})


def test_predict_windows_gives_the_outputs_evaluation_scores(store: str) -> None:
    result = train(store, tiny_config("mmcse-clapclip", epochs=1))
    loaded = load_run(result.run_url, "cpu")
    keys = FeatureStore(store).table(DATA.audio_table).keys()[:5]
    outputs = predict_windows(loaded, keys)
    assert outputs["frame_prob"].shape == (5, 10, 2, 25)
    assert outputs["global_prob"].shape == (5, 25) and outputs["frame_prob"].dtype == np.float32


def test_a_run_loaded_again_from_the_same_bytes_is_not_built_again(store: str) -> None:
    result = train(store, tiny_config("mmcse-clapclip", epochs=1))
    other = train(store, tiny_config("mmcse-clapclip", epochs=1, seed=12))
    first = load_run(result.run_url, "cpu")
    assert load_run(result.run_url, "cpu") is first
    run = RunStore(store).run(result.run_id)
    original = run.read_bytes("checkpoint.pt")
    run.write_bytes("checkpoint.pt", RunStore(store).run(other.run_id).read_bytes("checkpoint.pt"))
    try:
        replaced = load_run(result.run_url, "cpu")
        assert replaced is not first
        weights = zip(first.model.parameters(), replaced.model.parameters(), strict=True)
        assert not all(torch.equal(mine, theirs) for mine, theirs in weights)
    finally:
        run.write_bytes("checkpoint.pt", original)
    again = load_run(result.run_url, "cpu")
    assert again is not first and again is not replaced  # one run held at a time
    for mine, theirs in zip(first.model.parameters(), again.model.parameters(), strict=True):
        assert torch.equal(mine, theirs)


def test_a_named_size_becomes_architecture_entries_before_the_run_id() -> None:
    tiny = TrainConfig(size="tiny", architecture={"num_layers": 3}).sizes_resolved()
    assert tiny.size is None
    assert tiny.architecture["hidden_dim"] == 64 and tiny.architecture["num_layers"] == 3
    on_cpu = TrainConfig(size="auto", device="cpu")
    assert on_cpu.model_config_resolved().hidden_dim == 64
    assert TrainConfig(size="paper").model_config_resolved().hidden_dim == 256


def test_read_fingerprints_cover_exactly_the_videos_asked_for(
    growing_store: tuple[str, SyntheticLLP],
) -> None:
    root, data = growing_store
    train_ids = [
        str(v) for v, split in zip(data.video_ids, data.splits, strict=True) if split == "train"
    ]
    before = read_fingerprints(root, DATA, train_ids[:4], with_pseudo=True)
    add_video(root, data, 0, "newtrain001", "train")
    assert read_fingerprints(root, DATA, train_ids[:4], with_pseudo=True) == before
    with_new = read_fingerprints(root, DATA, [*train_ids[:4], "newtrain001"], with_pseudo=True)
    assert all(with_new[table] != before[table] for table in before)
