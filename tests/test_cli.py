"""The `avvp` command line: commands, JSON outputs, exit codes and readable errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from avvp.pipeline import catalog
from avvp.pipeline.cli.app import app
from avvp.pipeline.cli.output import IGNORED_ANNOTATIONS_NOTE
from avvp.pipeline.synthetic.clips import write_synthetic_clips
from avvp.pipeline.synthetic.features import SyntheticLLPConfig, write_synthetic_llp
from avvp.storage import FailureLog, FeatureStore, LabelStore, Provenance

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


def test_help_lists_every_command_and_group_with_its_summary() -> None:
    import typer.main

    code, output = invoke("--help")
    assert code == 0
    # Rows of the commands panel: "│ name   summary ... │".
    listed = set(re.findall(r"^│ ([a-z][a-z-]*) {2,}\S", output, flags=re.MULTILINE))
    registered = set(typer.main.get_command(app).commands)
    assert listed == registered
    assert {"demo", "run", "parse", "store", "pseudo-labels"} <= registered


def test_store_info_json_describes_feature_and_label_tables(store: str) -> None:
    info = invoke_json("store", "info", store, "--json")
    assert info["root"] == store
    clip = info["tables"]["clip-vit-l-14"]
    assert clip["kind"] == "features" and clip["rows"] == 80 and clip["videos"] == 80
    assert clip["shape"] == [10, 768] and clip["dtype"] == "float16"
    assert info["tables"]["clap-htsat-fusion"]["shape"] == [64, 768]
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


@pytest.fixture()
def official_mmcse(fixtures_dir: Path, tmp_path: Path) -> tuple[dict, Path]:
    """The official-output fixture and its weights imported as an avvp checkpoint."""
    reference = torch.load(fixtures_dir / "mmcse_official_clapclip.pt", weights_only=True)
    official = tmp_path / "official.pth"
    torch.save(reference["state_dict"], official)
    ours = tmp_path / "mmcse.pt"
    assert invoke("import-checkpoint", official, "--kind", "mmcse", "--out", ours)[0] == 0
    return reference, ours


def test_infer_features_refuses_arrays_of_the_wrong_shape(
    official_mmcse: tuple[dict, Path], tmp_path: Path
) -> None:
    _, ours = official_mmcse
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


# ---- a newcomer's path: every message names a fix that exists -------------------------

SOURCE_ROOMS = ("pipeline", "storage", "extractors", "model", "flows")


def registered_commands() -> dict[str, click.Command]:
    """Every command line the CLI accepts (`train`, `store info`, `synth clips`, ...),
    with the command it runs."""
    import typer.main

    def walk(command: click.Command, prefix: str) -> dict[str, click.Command]:
        found = {prefix: command} if prefix else {}
        for name, sub in getattr(command, "commands", {}).items():
            found |= walk(sub, f"{prefix} {name}".strip())
        return found

    return walk(typer.main.get_command(app), "")


def test_every_avvp_command_a_message_names_exists() -> None:
    from support import REPO

    commands = registered_commands()
    named: dict[str, str] = {}
    for room in SOURCE_ROOMS:
        for path in (REPO / room).rglob("*.py"):
            for match in re.finditer(r"`avvp ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", path.read_text()):
                group, sub = match.groups()
                line = f"{group} {sub}" if sub and f"{group} {sub}" in commands else group
                named[line] = str(path.relative_to(REPO))
    assert "extract" in named and "import-labels" in named  # the scan finds the messages
    missing = {line: where for line, where in named.items() if line not in commands}
    assert not missing, f"messages name commands that do not exist: {missing}"


def test_help_pages_show_readable_metavariables() -> None:
    for line in sorted(registered_commands()):
        code, output = invoke(*line.split(), "--help")
        assert code == 0, (line, output)
        assert not re.search(r"<(str|int|bool|float|path|list\[[^\]]*\])>", output), (line, output)
        usage = next(text for text in output.splitlines() if "Usage:" in text)
        assert "{" not in usage, usage


def test_help_pages_keep_the_bracketed_defaults_written_in_option_help() -> None:
    # Rich reads "[default: x]" as a style tag and drops it unless it is escaped.
    checked = 0
    for line, command in registered_commands().items():
        code, output = invoke(*line.split(), "--help")
        shown = " ".join(re.sub(r"[│╭╮╰╯─]", " ", output).split())
        for param in command.params:
            for written in re.findall(r"\\?\[default: [^\]]*\]", param.help or ""):
                assert written.lstrip("\\") in shown, (line, param.name, written)
                checked += 1
    assert checked >= 10


def test_extract_takes_a_weight_file_per_extractor_and_names_a_missing_one(
    tmp_path: Path,
) -> None:
    write_synthetic_clips(tmp_path / "clips", n=1)
    code, output = invoke(
        "extract",
        tmp_path / "clips" / "videos",
        "--store",
        tmp_path / "store",
        "--extractors",
        "clip",
        "--weights",
        f"clip={tmp_path / 'ViT-L-14.pt'}",
    )
    assert code == 2
    assert "ViT-L-14.pt does not exist" in output
    assert "avvp extract --weights clip=PATH" in output


def test_extract_refuses_weights_for_an_extractor_it_does_not_run(tmp_path: Path) -> None:
    code, output = invoke("extract", tmp_path, "--extractors", "clip", "--weights", "clap=x.pt")
    assert code == 2 and "weights name clap, which are not among the extractors" in output
    code, output = invoke("extract", tmp_path, "--weights", "vit=x.pt")
    assert code == 2 and "NAME=PATH" in output


def test_extract_precision_reaches_the_networks_and_a_wrong_one_is_refused(
    tmp_path: Path,
) -> None:
    (clip,) = write_synthetic_clips(tmp_path / "clips", n=1)
    features = {}
    for precision in ("float32", "bfloat16"):
        store = tmp_path / precision
        args = ("extract", clip, "--store", store, "--size", "tiny", "--extractors", "clip")
        code, output = invoke(*args, "--workers", "0", "--device", "cpu", "--precision", precision)
        assert code == 0, output
        video_id = clip.stem
        table = FeatureStore(store).table(catalog.VISUAL_TABLE)
        features[precision] = table.read_videos([video_id]).features.astype(np.float32)
    exact, rounded = features["float32"], features["bfloat16"]
    assert not np.array_equal(exact, rounded)
    np.testing.assert_allclose(rounded, exact, atol=0.02)
    code, output = invoke("extract", tmp_path, "--precision", "half", "--size", "tiny")
    assert code == 2 and "precision" in output and "bfloat16" in output


@pytest.fixture(scope="module")
def clips_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four tiny clips (train, train, val, test) and one file that is not a video."""
    folder = tmp_path_factory.mktemp("clips")
    write_synthetic_clips(folder, n=4)
    (folder / "videos" / "broken.mp4").write_text("not a video\n")
    return folder


def test_a_failing_file_is_printed_once_and_stays_one_row_after_two_runs(
    clips_folder: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    args = ("extract", clips_folder / "videos", "--store", store, "--size", "tiny")
    for _ in range(2):
        code, output = invoke(*args, "--workers", "0", "--device", "cpu")
        assert code == 1, output
        assert output.count("broken.mp4") == 1, output
        assert "not a media file" in output
        assert "Errno" not in output and "video_reader.cc" not in output
    rows = FailureLog(store).read("extract").to_pylist()
    assert [(row["video_id"], row["reason"]) for row in rows] == [
        ("broken", "not a media file (or one cut before its index)")
    ]
    info = invoke_json("store", "info", store, "--json")
    assert info["failures"] == {"extract": 1}


def test_store_info_never_cuts_table_names_and_lists_failures(store: str) -> None:
    long_name = "segment-generated-clip-vit-l-14"
    write_segment_labels(store, long_name, "aaaaaaaaaaa")
    FailureLog(store).record("extract", [("x", "/videos/x.mp4", "empty file (0 bytes)")])
    code, output = invoke("store", "info", store)  # 80 columns: pytest's stdout is no terminal
    assert code == 0
    for name in ("clap-htsat-fusion", "segment-synthetic", "dense-synthetic", long_name):
        assert name in output, output
    assert re.search(r"failures/extract\s.*failures\s.*\b1\b", output), output


def test_store_info_on_a_missing_root_exits_2(tmp_path: Path) -> None:
    code, output = invoke("store", "info", tmp_path / "nowhere")
    assert code == 2 and "no such store" in output


@pytest.fixture()
def single_source_store(tmp_path: Path) -> str:
    """Like the demo's store: pseudo-labels and dense annotations of one source each."""
    root = str(tmp_path / "store")
    write_synthetic_llp(root, SyntheticLLPConfig(n_train=24, n_val=8, n_test=8, seed=3))
    return root


def write_segment_labels(root: str | Path, table: str, video_id: str) -> None:
    """One window of all-zero segment labels in `labels/<table>`."""
    zeros = np.zeros((1, 10, 25), np.uint8)
    LabelStore(root).segments(table).write(
        [video_id], [0], zeros, zeros, Provenance(source="test", version="1")
    )


TINY_TRAINING = ("--size", "tiny", "--batch-size", "8", "--device", "cpu")


def test_train_uses_the_only_stored_label_sources_and_says_so(single_source_store: str) -> None:
    result = runner.invoke(
        app, ["train", "--store", single_source_store, "--epochs", "1", *TINY_TRAINING, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert "using the pseudo-label source 'synthetic', the only one" in result.stderr
    assert "using the dense annotation set 'synthetic', the only one" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["reused"] is False and summary["run_id"].startswith("mmcse-clapclip-")
    assert list(summary["metrics"]) == METRIC_KEYS
    config = json.loads(Path(summary["run"], "config.json").read_text())["train"]
    assert config["data"]["pseudo_labels"] == "synthetic"
    assert config["architecture"]["hidden_dim"] == 64  # --size tiny

    again = json.loads(
        runner.invoke(
            app,
            ["train", "--store", single_source_store, "--epochs", "1", *TINY_TRAINING, "--json"],
        ).stdout
    )
    assert again["reused"] is True and again["run_id"] == summary["run_id"]


def test_train_with_several_or_absent_sources_lists_what_the_store_holds(
    single_source_store: str,
) -> None:
    code, output = invoke("train", "--store", single_source_store, "--pseudo-labels", "valor")
    assert code == 2
    assert "no pseudo-label source 'valor'" in output and "it holds 'synthetic'" in output
    assert "--pseudo-labels" in output
    write_segment_labels(single_source_store, "segment-other", "aaaaaaaaaaa")
    code, output = invoke("train", "--store", single_source_store)
    assert code == 2 and "'other', 'synthetic'" in " ".join(output.split())


def test_train_on_a_store_without_features_names_the_command_that_makes_them(
    clips_folder: Path, tmp_path: Path
) -> None:
    store = tmp_path / "labels-only"
    assert invoke("import-labels", "--store", store, "--labels", clips_folder)[0] == 0
    write_segment_labels(store, "segment-valor", "synclip0001")
    code, output = invoke("train", "--store", store, *TINY_TRAINING)
    assert code == 2 and "`avvp extract`" in " ".join(output.split()), output


def test_training_off_a_terminal_prints_its_estimate_and_one_line_per_epoch(
    single_source_store: str,
) -> None:
    result = runner.invoke(
        app, ["train", "--store", single_source_store, "--epochs", "3", *TINY_TRAINING]
    )
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    estimate = [line for line in lines if line.startswith("training mmcse-clapclip for 3 epochs")]
    assert len(estimate) == 1 and "on cpu: about" in estimate[0], result.stderr
    assert "timed on the first" in estimate[0]
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert [line.split()[1] for line in epochs] == ["1/3", "2/3", "3/3"], result.stderr
    for line in epochs[:-1]:
        assert re.search(r"loss \d+\.\d{4}\s+val Avg \d+\.\d .* about \d+ s left", line), line
    assert epochs[-1].endswith("done")
    assert lines.index(estimate[0]) < lines.index(epochs[0])


def trained_run(store: str) -> dict:
    """`avvp train --json` of one tiny epoch on `store`."""
    result = runner.invoke(
        app, ["train", "--store", store, "--epochs", "1", *TINY_TRAINING, "--json"]
    )
    return json.loads(result.stdout)


def test_evaluate_with_annotations_the_store_lacks_lists_the_ones_it_holds(
    single_source_store: str,
) -> None:
    summary = trained_run(single_source_store)
    code, output = invoke("evaluate", summary["run"], "--annotations", "published")
    assert code == 2
    assert "no dense annotation set 'published'" in output and "it holds 'synthetic'" in output
    scored = invoke_json("evaluate", summary["run"], "--device", "cpu", "--json")
    assert scored["run_id"] == summary["run_id"] and list(scored["metrics"]) == METRIC_KEYS
    assert scored["reused"] is False
    again = invoke_json("evaluate", summary["run"], "--device", "cpu", "--json")
    assert again["reused"] is True and again["metrics"] == scored["metrics"]
    assert (scored["videos_in_split"], scored["videos_scored"], scored["warning"]) == (8, 8, "")


def test_evaluate_warns_when_videos_of_the_split_have_no_features(
    single_source_store: str,
) -> None:
    summary = trained_run(single_source_store)
    weak = LabelStore(single_source_store).weak()
    weak.write(["nofeat0001"], np.zeros((1, 25), np.uint8), ["test"], weak.provenance)
    result = runner.invoke(app, ["evaluate", summary["run"], "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout)
    assert (scored["videos_in_split"], scored["videos_scored"]) == (9, 8)
    assert scored["videos_without_features"] == 1
    assert scored["missing_examples"] == ["nofeat0001"]
    warning = "warning: scored 8 of 9 videos of the test split: 1 have no features (nofeat0001)"
    assert warning in " ".join(result.stderr.split()), result.stderr
    code, output = invoke("evaluate", summary["run"], "--device", "cpu")
    assert code == 0 and "scored 8 of 9 videos of the test split" in output, output


def test_infer_features_output_is_scored_by_evaluate_predictions(
    official_mmcse: tuple[dict, Path], fixtures_dir: Path, tmp_path: Path
) -> None:
    reference, ours = official_mmcse
    test_ids = np.load(fixtures_dir / "metrics_public.npz")["video_ids"][:3]
    features = tmp_path / "features.npz"
    np.savez(features, video_ids=test_ids, **{k: v.numpy() for k, v in reference["inputs"].items()})
    out = tmp_path / "out.npz"
    code, output = invoke("infer-features", ours, features, "--out", out, "--device", "cpu")
    assert code == 0, output
    with np.load(out) as result:
        assert result["video_ids"].tolist() == test_ids.tolist()
    metrics = invoke_json("evaluate-predictions", out, "--json")
    assert list(metrics) == METRIC_KEYS


def test_import_labels_turns_the_ignored_rows_warning_into_one_plain_sentence(
    tmp_path: Path,
) -> None:
    result = runner.invoke(app, ["import-labels", "--store", str(tmp_path / "llp")])
    assert result.exit_code == 0, result.output
    assert result.stderr.count(IGNORED_ANNOTATIONS_NOTE) == 1
    assert "IgnoredAnnotationWarning" not in result.output and ".py:" not in result.output


@pytest.mark.parametrize(
    ("command", "new"),
    [
        (["extract", "nothere.mp4", "--size", "tiny"], "--size"),
        (["run", "--extractor-size", "tiny"], "--extractor-size"),
        (["train", "--recipe", "paper"], "--recipe"),
        (["import-features", "nothere", "--layout", "han-vggish"], "--layout"),
        (["pseudo-labels", "generate", "--size", "tiny"], "--size"),
    ],
)
def test_the_old_preset_option_is_hidden_and_cannot_be_given_beside_its_new_name(
    command: list[str], new: str
) -> None:
    """`--preset` meant four things; each command now has its own word, and the old
    option stays for one release, hidden from --help."""
    where = command[: 2 if command[0] == "pseudo-labels" else 1]
    assert "--preset" not in runner.invoke(app, [*where, "--help"]).output
    both = runner.invoke(app, [*command, "--preset", "tiny"])
    assert both.exit_code == 2
    assert "--preset is its deprecated name" in both.output and new in both.output


def test_the_old_preset_option_still_works_with_a_warning(store: str, tmp_path: Path) -> None:
    """`avvp train --preset official` trains with the official recipe and says that the
    option is now --recipe."""
    copy = shutil.copytree(store, tmp_path / "store")
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "architecture: {hidden_dim: 16, class_dim: 8, num_layers: 1, num_heads: 2, ffn_dim: 16}\n"
    )
    code, output = invoke(
        "train", "--store", copy, "--preset", "official", "--config", config, "--epochs", "1",
        "--pseudo-labels", "synthetic", "--annotations", "synthetic", "--device", "cpu",
    )  # fmt: skip
    assert code == 0, output
    assert "--preset is now --recipe" in output
    before = {path.name for path in Path(store, "runs").glob("*")}
    (run,) = [path for path in Path(copy, "runs").iterdir() if path.name not in before]
    assert json.loads((run / "config.json").read_text())["train"]["optim"]["schedule"] == "step"
