"""avvp checkpoints: a parser's config and weights in one file of tensors and plain data,
read only by torch's weights-only unpickler (checkpoints are untrusted input)."""

from __future__ import annotations

import contextlib
import io
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ... import __version__
from ...extractors.base import WeightsFileError, load_tensor_file
from ...model.config import ModelConfig
from ...model.factory import create_model, from_official_state_dict
from .npy_files import open_npz

CHECKPOINT_FORMAT = "avvp-checkpoint/1"
_CHECKPOINT_FIX = "train the run again, or import or download the file again"
_NETWORK_NAMES = {"mmcse": "MM-CSE", "valor": "VALOR"}


def checkpoint_bytes(
    model: torch.nn.Module, model_config: ModelConfig, extra: dict[str, Any]
) -> bytes:
    """A checkpoint loadable with torch.load(..., weights_only=True): tensors and plain data."""
    buffer = io.BytesIO()
    state = {
        "format": CHECKPOINT_FORMAT,
        "avvp_version": __version__,
        "model_config": model_config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **extra,
    }
    torch.save(state, buffer)
    return buffer.getvalue()


def load_checkpoint(
    data: bytes | Path,
    map_location: str | torch.device = "cpu",
    name: str | Path = "the checkpoint",
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a parser from a checkpoint written by `checkpoint_bytes` (its bytes or its
    file); a file that is not one raises a ValueError of one line naming `name`."""
    state = load_tensor_file(
        data,
        expected="an avvp checkpoint",
        fix=_CHECKPOINT_FIX,
        name=name,
        map_location=map_location,
    )
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise WeightsFileError(
            f"{name} is not an avvp checkpoint; import official weights with "
            "`avvp import-checkpoint`"
        )
    try:
        config = ModelConfig.from_dict(state["model_config"])
        model = create_model(config)
        model.load_state_dict(state["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError):
        # Only a damaged or hand-made file gets here: checkpoint_bytes writes both.
        raise WeightsFileError(
            f"{name} is not an avvp checkpoint (its model config or weights do not fit "
            f"each other): {_CHECKPOINT_FIX}"
        ) from None
    return model, state


def read_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Load an avvp checkpoint file (`checkpoint.pt` of a run, or an imported one)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    return load_checkpoint(path, map_location, path)


def import_checkpoint(source: str | Path, kind: str, out: str | Path) -> ModelConfig:
    """Convert an official MM-CSE or VALOR checkpoint into an avvp checkpoint at `out`.

    The file may hold a raw state dict or one under `state_dict` / `model`; input kinds
    are inferred from the weight shapes. Only tensors and plain data are unpickled.
    """
    source = Path(source)
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such checkpoint file")
    official = load_tensor_file(
        source,
        expected=f"an official {_NETWORK_NAMES.get(kind, kind)} checkpoint",
        fix="pass the state dict file the official code saved (torch.save)",
    )
    if not isinstance(official, dict):
        raise ValueError(f"{source}: expected a state dict, found {type(official).__name__}")
    try:
        config, state_dict = from_official_state_dict(official, kind)
    except ValueError as error:
        raise ValueError(f"{source}: {error}") from None
    model = create_model(config)
    model.load_state_dict(state_dict)
    extra = {"imported_from": source.name, "imported_kind": kind}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_bytes(checkpoint_bytes(model, config, extra))
    return config


FEATURE_KEYS = ("audio", "visual", "visual_st")
_FEATURES = (
    "a FEATURES.npz (a NumPy .npz archive, as numpy.savez writes, of audio, visual and "
    "visual_st arrays and video_ids)"
)


def _read_array(npz: Any, path: Path, key: str) -> np.ndarray:
    try:
        return np.asarray(npz[key], dtype=np.float32)
    except (OSError, EOFError, ValueError, TypeError, zipfile.BadZipFile, zlib.error):
        raise ValueError(
            f"{path} is not {_FEATURES}: its `{key}` is cut short, damaged or not numbers"
        ) from None


def read_feature_file(
    path: str | Path, config: ModelConfig
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """audio, visual, visual_st arrays of a FEATURES.npz, checked against the model
    inputs, and its `video_ids` (N,) str when it has them."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such feature file")
    with contextlib.ExitStack() as stack:
        try:
            npz = stack.enter_context(open_npz(path))
        except ValueError as error:
            raise ValueError(f"{path} is not {_FEATURES}: {error}") from None
        missing = [key for key in FEATURE_KEYS if key not in npz.files]
        if missing:
            raise ValueError(
                f"{path} lacks {', '.join(missing)} (has {', '.join(npz.files)}); a FEATURES.npz "
                "holds audio, visual and visual_st arrays (and video_ids)"
            )
        arrays = {key: _read_array(npz, path, key) for key in FEATURE_KEYS}
        try:
            video_ids = npz["video_ids"] if "video_ids" in npz.files else None
        except ValueError:  # an object array, which allow_pickle=False refuses
            video_ids = np.zeros(0, dtype=object)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error):
            raise ValueError(
                f"{path} is not {_FEATURES}: its `video_ids` is cut short or damaged"
            ) from None
    n = len(arrays["audio"])
    if video_ids is not None and (video_ids.dtype.kind != "U" or video_ids.shape != (n,)):
        raise ValueError(
            f"{path}: `video_ids` must be a ({n},) str array, got {video_ids.dtype} of shape "
            f"{video_ids.shape}; write it with numpy.savez(..., video_ids=np.array(ids, str))"
        )
    for key, shape in config.inputs.feature_shapes().items():
        if arrays[key].shape != (n, *shape):
            raise ValueError(
                f"{path}: `{key}` has shape {arrays[key].shape}, the checkpoint expects "
                f"({n}, {shape[0]}, {shape[1]})"
            )
        if not np.isfinite(arrays[key]).all():
            raise ValueError(f"{path}: `{key}` holds NaN or infinite values")
    return arrays, video_ids
