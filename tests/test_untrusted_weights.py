"""Weight and checkpoint files are untrusted input: a hostile one runs nothing.

A bad-input matrix: hostile files (pickle payloads in every container torch reads,
disguised TorchScript, a payload beside real tensors, cut-short and empty files) against
every loader of `--weights` files and every command that opens a checkpoint. Each is
refused with one plain line naming the file (exit 2 from the CLI), and the file the
payload would create never appears. Valid files in every pickle protocol still load.
"""

from __future__ import annotations

import gc
import io
import os
import pickle
import shutil
import tarfile
import warnings
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support import tiny_config
from typer.testing import CliRunner

from avvp.extractors import RandomInit, create_extractor
from avvp.extractors.base import WeightsFileError, is_torchscript, load_tensor_file
from avvp.extractors.clip import _openai_state_dict
from avvp.model.config import get_model_config
from avvp.pipeline import catalog
from avvp.pipeline.cli.app import app
from avvp.pipeline.sources.checkpoints import (
    import_checkpoint,
    load_checkpoint,
    read_checkpoint,
    read_feature_file,
)
from avvp.pipeline.synthetic.features import SyntheticLLPConfig, write_synthetic_llp
from avvp.pipeline.train import train
from avvp.storage import FeatureStore, Provenance

# TorchScript is what some of these files are, deprecated or not.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"
)
runner = CliRunner()
# Hostile cases tried, per test; printed (run with -s) when the module is done.
TRIED: Counter[str] = Counter()
MATRIX_FLOOR = 200
# Writes a hostile file (file, marker): the marker appears only if the payload ran.
Writer = Callable[[Path, Path], None]


class Touch:
    """A pickle payload: unpickling it creates `path`, the proof that code ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.path,))


class System:
    """The classic payload: a shell command (that also creates `path`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch '{self.path}'",))


def _disguised_torchscript(file: Path, marker: Path, member: str) -> None:
    """A torch.save zip whose data.pkl is a payload, plus a `constants.pkl` member that a
    name test ("any member ending in /constants.pkl") would take for TorchScript."""
    payload = file.with_suffix(".payload")
    torch.save({"x": Touch(marker)}, payload)
    with zipfile.ZipFile(payload) as source, zipfile.ZipFile(file, "w") as target:
        for info in source.infolist():
            target.writestr(info, source.read(info))
        folder = source.namelist()[0].split("/")[0]
        target.writestr(f"{folder}/{member}", pickle.dumps(Touch(marker), protocol=2))
    payload.unlink()


def _newline_in_global(file: Path, marker: Path) -> None:
    # Protocol 4 names globals by two strings; one holding a newline could smuggle a
    # second name into the protocol-2 GLOBAL line it is rewritten to.
    module, name = b"collections", b"OrderedDict\nposix\nsystem"
    file.write_bytes(
        pickle.PROTO + b"\x04" + b"\x8c" + bytes([len(module)]) + module
        + b"\x8c" + bytes([len(name)]) + name + pickle.STACK_GLOBAL + pickle.EMPTY_TUPLE
        + pickle.REDUCE + pickle.STOP
    )  # fmt: skip


def _old_tar_format(file: Path, marker: Path) -> None:
    """torch's pre-1.0 .tar layout (storages, tensors, pickle members), with a payload."""
    members = {
        "storages": pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2),
        "tensors": pickle.dumps(0, protocol=2),
        "pickle": pickle.dumps(Touch(marker), protocol=2),
    }
    with tarfile.open(file, "w") as archive:
        for member, data in members.items():
            info = tarfile.TarInfo(member)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


def _cut(valid: dict[str, Any], zipped: bool) -> Writer:
    def write(file: Path, marker: Path) -> None:
        torch.save(valid, file, _use_new_zipfile_serialization=zipped)
        data = file.read_bytes()
        file.write_bytes(data[: len(data) // 2])

    return write


def hostile_files(valid: dict[str, Any]) -> dict[str, Writer]:
    """Case name -> writer of a hostile file (file, marker); `valid` is a real avvp
    checkpoint's contents, for a payload beside real tensors and for cut-short files."""

    def plain(protocol: int, payload: type = Touch) -> Writer:
        return lambda file, marker: file.write_bytes(
            pickle.dumps({"state_dict": payload(marker)}, protocol=protocol)
        )

    def saved(protocol: int, zipped: bool) -> Writer:
        return lambda file, marker: torch.save(
            {"weights": torch.zeros(2), "x": Touch(marker)},
            file,
            pickle_protocol=protocol,
            _use_new_zipfile_serialization=zipped,
        )

    def beside_tensors(file: Path, marker: Path) -> None:
        torch.save({**valid, "epoch": np.int64(3), "hook": Touch(marker)}, file, pickle_protocol=4)

    return {
        "plain pickle, protocol 2": plain(2),
        "plain pickle, protocol 4": plain(4),
        "plain pickle, protocol 5, os.system": plain(5, System),
        "torch legacy format, protocol 2": saved(2, zipped=False),
        "torch legacy format, protocol 4": saved(4, zipped=False),
        "torch zip, protocol 2": saved(2, zipped=True),
        "torch zip, protocol 4": saved(4, zipped=True),
        "disguised TorchScript, x/constants.pkl": lambda file, marker: _disguised_torchscript(
            file, marker, "x/constants.pkl"
        ),
        "disguised TorchScript, constants.pkl": lambda file, marker: _disguised_torchscript(
            file, marker, "constants.pkl"
        ),
        "payload beside a checkpoint's tensors": beside_tensors,
        "newline in a protocol-4 global": _newline_in_global,
        "torch's old .tar format": _old_tar_format,
        "cut-short zip": _cut(valid, zipped=True),
        "cut-short legacy format": _cut(valid, zipped=False),
        "empty file": lambda file, marker: file.write_bytes(b""),
    }


def assert_refused(message: str, file: Path, marker: Path, case: str) -> None:
    """One plain line naming the file, no torch advice, and the payload never ran."""
    assert not marker.exists(), f"{case}: the payload ran"
    lines = message.strip().splitlines()
    assert len(lines) == 1, f"{case}: {message}"
    assert str(file) in lines[0], f"{case}: {message}"
    for advice in ("Traceback", "weights_only", "safe_globals", "UNSAFE"):
        assert advice not in message, f"{case}: {message}"


@pytest.fixture(scope="module", autouse=True)
def report_matrix() -> Iterator[None]:
    yield
    total = sum(TRIED.values())
    print(f"\nbad-input matrix: {total} hostile weight/checkpoint cases, no payload ran")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(store, run folder): a tiny run trained for one epoch on a synthetic store that
    also holds the CLAP segment table `pseudo-labels generate` reads."""
    store = tmp_path_factory.mktemp("store")
    write_synthetic_llp(str(store), SyntheticLLPConfig(n_train=32, n_val=8, n_test=8, seed=2))
    FeatureStore(str(store)).table(catalog.AUDIO_SEGMENT_TABLE).write(
        ["syn00000000"],
        np.array([0]),
        np.zeros((1, 10, 512), np.float16),
        np.array([10]),
        np.array([True]),
        Provenance(source="clap-segments", version="1"),
    )
    result = train(str(store), tiny_config("mmcse-clapclip", epochs=1))
    return store, store / "runs" / result.run_id


@pytest.fixture(scope="module")
def hostile(trained: tuple[Path, Path]) -> dict[str, Writer]:
    _, run = trained
    valid = load_tensor_file(run / "checkpoint.pt", expected="an avvp checkpoint", fix="")
    return hostile_files(valid)


def each_hostile_file(
    hostile: dict[str, Writer], folder: Path, name: str = "weights.pt"
) -> Iterator[tuple[str, Path, Path]]:
    """(case, file, marker) per hostile case, each in a folder of its own."""
    for number, (case, write) in enumerate(hostile.items()):
        where = folder / f"case-{number}"
        where.mkdir()
        file, marker = where / name, where / "payload-ran"
        write(file, marker)
        yield case, file, marker


# The loaders themselves.

LOADERS: dict[str, Callable[[Path, Path], object]] = {
    "clip": lambda file, out: create_extractor("clip", weights=file, device="cpu"),
    "r2plus1d": lambda file, out: create_extractor("r2plus1d", weights=file, device="cpu"),
    "clap": lambda file, out: create_extractor("clap", weights=file, device="cpu"),
    "clap-segments": lambda file, out: create_extractor(
        "clap-segments", weights=file, device="cpu"
    ),
    "avvp checkpoint": lambda file, out: read_checkpoint(file),
    "avvp checkpoint bytes": lambda file, out: load_checkpoint(file.read_bytes(), name=file),
    "official import": lambda file, out: import_checkpoint(file, "mmcse", out / "x.pt"),
}


def test_every_loader_refuses_every_hostile_file_in_one_line(
    hostile: dict[str, Writer], tmp_path: Path
) -> None:
    for case, file, marker in each_hostile_file(hostile, tmp_path):
        for loader, load in LOADERS.items():
            with pytest.raises(WeightsFileError) as refused:
                load(file, file.parent)
            assert_refused(str(refused.value), file, marker, f"{loader}, {case}")
            TRIED["loaders"] += 1
    assert TRIED["loaders"] == len(hostile) * len(LOADERS)


# The commands.


def invoke(*args: object) -> tuple[int, str]:
    result = runner.invoke(app, [str(arg) for arg in args])
    return result.exit_code, result.output


def assert_cli_refused(code: int, output: str, file: Path, marker: Path, case: str) -> None:
    assert code == 2, f"{case}: exit {code}: {output}"
    assert output.startswith("error: "), f"{case}: {output}"
    assert_refused(output, file, marker, case)


def hostile_run(store: Path, run: Path, number: int, file: Path) -> Path:
    """A copy of `run` in `store` whose checkpoint.pt is `file`."""
    copy = store / "runs" / f"hostile-{number}"
    shutil.copytree(run, copy)
    shutil.copyfile(file, copy / "checkpoint.pt")
    return copy


def test_commands_that_open_a_checkpoint_refuse_hostile_ones(
    hostile: dict[str, Writer], trained: tuple[Path, Path], tmp_path: Path
) -> None:
    store, run = trained
    videos = tmp_path / "videos"
    videos.mkdir()
    features = tmp_path / "features.npz"
    np.savez(
        features,
        audio=np.zeros((1, 64, 768), np.float32),
        visual=np.zeros((1, 10, 768), np.float32),
        visual_st=np.zeros((1, 10, 512), np.float32),
    )
    for number, (case, file, marker) in enumerate(each_hostile_file(hostile, tmp_path)):
        bad_run = hostile_run(store, run, number, file)
        checkpoint = bad_run / "checkpoint.pt"
        out = tmp_path / f"out-{number}"
        commands = {
            "evaluate": ("evaluate", bad_run, "--device", "cpu"),
            "parse --run": ("parse", videos, "--run", bad_run, "--out", out, "--device", "cpu"),
            "report": ("report", bad_run, "--device", "cpu"),
        }
        for command, args in commands.items():
            code, output = invoke(*args)
            assert_cli_refused(code, output, checkpoint, marker, f"{command}, {case}")
            TRIED["commands"] += 1
        files = {
            "infer-features": ("infer-features", file, features, "--out", out / "o.npz"),
            "import-checkpoint": ("import-checkpoint", file, "--kind", "valor", "--out", out),
        }
        for command, args in files.items():
            code, output = invoke(*args)
            assert_cli_refused(code, output, file, marker, f"{command}, {case}")
            TRIED["commands"] += 1
        shutil.rmtree(bad_run)
    assert TRIED["commands"] == 5 * len(hostile)


@pytest.fixture(scope="module")
def paper_run(trained: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained run in a store whose tables claim the paper extractors made them, so
    that `avvp parse` loads the extractors' weight files."""
    _, run = trained
    store = tmp_path_factory.mktemp("paper-store")
    features = FeatureStore(str(store))
    for table, source, shape in (
        (catalog.AUDIO_MAP_TABLE, "clap", (64, 768)),
        (catalog.VISUAL_TABLE, "clip", (10, 768)),
        (catalog.VISUAL_ST_TABLE, "r2plus1d", (10, 512)),
    ):
        provenance = Provenance(source=source, version="1", extras={"preset": "paper"})
        features.table(table).write(
            ["video"],
            np.array([0]),
            np.zeros((1, *shape), np.float16),
            np.array([10]),
            np.array([True]),
            provenance,
        )
    copy = store / "runs" / run.name
    shutil.copytree(run, copy)
    return copy


def test_commands_taking_weight_files_refuse_hostile_ones(
    hostile: dict[str, Writer], trained: tuple[Path, Path], paper_run: Path, tmp_path: Path
) -> None:
    store, _ = trained
    videos = tmp_path / "videos"
    videos.mkdir()
    for number, (case, file, marker) in enumerate(each_hostile_file(hostile, tmp_path)):
        out = tmp_path / f"out-{number}"
        commands = {
            f"extract --weights {name}": (
                *("extract", videos, "--store", out / "store", "--extractors", name),
                *("--weights", f"{name}={file}"),
            )
            for name in ("clip", "r2plus1d", "clap", "clap-segments")
        }
        commands["pseudo-labels generate --weights clip"] = (
            *("pseudo-labels", "generate", "--store", store, "--weights", f"clip={file}"),
        )
        commands["parse --weights clap"] = (
            *("parse", videos, "--run", paper_run, "--out", out / "parsed", "--device", "cpu"),
            *("--weights", f"clap={file}"),
        )
        for command, args in commands.items():
            code, output = invoke(*args)
            assert_cli_refused(code, output, file, marker, f"{command}, {case}")
            TRIED["weights commands"] += 1
    assert TRIED["weights commands"] == 6 * len(hostile)


def test_infer_features_refuses_feature_files_of_other_formats(
    trained: tuple[Path, Path], tmp_path: Path
) -> None:
    _, run = trained
    marker = tmp_path / "payload-ran"
    valid = {
        "audio": np.zeros((1, 64, 768), np.float32),
        "visual": np.zeros((1, 10, 768), np.float32),
        "visual_st": np.zeros((1, 10, 512), np.float32),
    }
    np.savez(tmp_path / "valid.npz", **valid)
    whole = (tmp_path / "valid.npz").read_bytes()
    np.save(tmp_path / "array.npy", valid["audio"])
    writers: dict[str, Callable[[Path], object]] = {
        "text": lambda file: file.write_text("audio,visual\n1,2\n"),
        "a .npy renamed .npz": lambda file: file.write_bytes((tmp_path / "array.npy").read_bytes()),
        "a pickle": lambda file: file.write_bytes(pickle.dumps(Touch(marker), protocol=4)),
        "cut short": lambda file: file.write_bytes(whole[: len(whole) // 2]),
        "empty": lambda file: file.write_bytes(b""),
        "an object array": lambda file: np.savez(
            file, **{**valid, "audio": np.array([Touch(marker)], dtype=object)}
        ),
        "strings for numbers": lambda file: np.savez(file, **{**valid, "visual": np.array(["a"])}),
    }
    for case, write in writers.items():
        file = tmp_path / f"{case}.npz"
        write(file)
        args = ("infer-features", run / "checkpoint.pt", file, "--out", tmp_path / "o.npz")
        code, output = invoke(*args)
        assert_cli_refused(code, output, file, marker, case)
        assert "FEATURES.npz" in output, f"{case}: {output}"
        TRIED["feature files"] += 1


def test_the_matrix_tried_every_case() -> None:
    """Runs last (file order): the matrix tests above filled TRIED."""
    if set(TRIED) != {"loaders", "commands", "weights commands", "feature files"}:
        pytest.skip("only part of the matrix ran")
    assert sum(TRIED.values()) > MATRIX_FLOOR


# Valid files still load, and TorchScript is recognised exactly as torch does.


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_files_of_tensors_and_numpy_scalars_load_in_every_pickle_protocol(
    tmp_path: Path, protocol: int, zipped: bool
) -> None:
    base = torch.arange(6.0)
    shared = {"k": [1, 2.5, None, True]}
    saved = {
        "state_dict": {"module.w": base, "module.view": base[2:], "half": torch.ones(2).half()},
        "epoch": np.int64(45),
        "best": np.float32(0.25),
        "flag": np.bool_(True),
        "name": "x" * 300,  # BINUNICODE rather than SHORT_BINUNICODE
        "raw": b"\x00\xff" * 200,
        "big": 2**70,
        "pair": (shared, shared),
    }
    file = tmp_path / "checkpoint.pt"
    torch.save(saved, file, pickle_protocol=protocol, _use_new_zipfile_serialization=zipped)
    loaded = load_tensor_file(file, expected="weights", fix="")
    state = loaded["state_dict"]
    for key, value in saved["state_dict"].items():
        assert torch.equal(state[key], value) and state[key].dtype == value.dtype, key
    # A view still shares its base's storage, as torch.load gives it.
    assert state["module.view"].untyped_storage().data_ptr() == (
        state["module.w"].untyped_storage().data_ptr()
    )
    for key in ("epoch", "best", "flag", "name", "raw", "big", "pair"):
        assert loaded[key] == saved[key] and type(loaded[key]) is type(saved[key]), key
    assert loaded["pair"][0] is loaded["pair"][1]


def test_a_clap_release_in_protocol_4_and_the_legacy_format_loads_into_the_extractor(
    tmp_path: Path,
) -> None:
    """The zip format's twin is tests/test_extractors.py's LAION layout test."""
    source = create_extractor("clap-segments", weights=RandomInit(seed=4), device="cpu")
    state = source.network.state_dict()
    file = tmp_path / "630k-fusion-best.pt"
    checkpoint = {"epoch": np.int64(45), "state_dict": {f"module.{k}": v for k, v in state.items()}}
    torch.save(checkpoint, file, pickle_protocol=4, _use_new_zipfile_serialization=False)
    loaded = create_extractor("clap-segments", weights=file, device="cpu")
    for key, value in loaded.network.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_pickle_instructions_torch_never_writes_are_refused(tmp_path: Path) -> None:
    file = tmp_path / "weights.pt"
    file.write_bytes(pickle.dumps({"classes": frozenset({1, 2})}, protocol=4))
    with pytest.raises(WeightsFileError, match="pickle instruction FROZENSET"):
        load_tensor_file(file, expected="weights", fix="")


class Scaled(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(3, 2)
        self.register_buffer("scale", torch.tensor(2.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * self.scale


def torch_takes_it_for_torchscript(file: Path) -> bool:
    """What torch.load itself decides (weights_only=True never runs anything)."""
    try:
        torch.load(file, weights_only=True)
    except RuntimeError as error:
        return "TorchScript" in str(error)
    except pickle.UnpicklingError:
        return False
    return False


@pytest.mark.filterwarnings("ignore:'torch.load' received a zip file that looks like")
def test_torchscript_is_recognised_as_torch_does_and_read_only_by_torch_jit(
    tmp_path: Path,
) -> None:
    module = Scaled()
    scripted, traced = tmp_path / "scripted.pt", tmp_path / "traced.pt"
    torch.jit.save(torch.jit.script(module), scripted)
    torch.jit.save(torch.jit.trace(module, torch.zeros(1, 3)), traced)
    for file in (scripted, traced):
        assert is_torchscript(file) and torch_takes_it_for_torchscript(file)
        state = _openai_state_dict(file)
        assert state.keys() == module.state_dict().keys()
        for key, value in module.state_dict().items():
            assert torch.equal(state[key], value), key
        with pytest.raises(WeightsFileError, match="TorchScript program"):
            load_tensor_file(file, expected="weights", fix="")

    marker = tmp_path / "payload-ran"
    for member, looks_like_torchscript in (("x/constants.pkl", False), ("constants.pkl", True)):
        file = tmp_path / f"disguised-{looks_like_torchscript}.pt"
        _disguised_torchscript(file, marker, member)
        assert (
            is_torchscript(file) == looks_like_torchscript == torch_takes_it_for_torchscript(file)
        )
        with pytest.raises(WeightsFileError) as refused:
            _openai_state_dict(file)
        assert_refused(str(refused.value), file, marker, member)
    for file in (tmp_path / "plain.pt", tmp_path / "nothing.pt"):
        file.write_bytes(b"" if file.stem == "nothing" else pickle.dumps({}, protocol=2))
        assert not is_torchscript(file)


def test_a_refused_feature_file_is_closed_at_once(tmp_path: Path) -> None:
    """np.load leaves a cut-short archive's file open when it raises; the garbage
    collector's "unclosed file" warning then printed in the middle of a later command."""
    np.savez(tmp_path / "valid.npz", audio=np.zeros((4, 64, 768), np.float32))
    whole = (tmp_path / "valid.npz").read_bytes()
    cut = tmp_path / "cut short.npz"
    cut.write_bytes(whole[: len(whole) // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="not a readable .npz archive"):
            read_feature_file(cut, get_model_config("mmcse-clapclip"))
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []
