"""The protocol every feature extractor follows, and what they share.

An extractor turns one decoded 10-s window (frames at 8 FPS, or mono audio at its own
sample rate) into one fixed-shape feature array. The work is split in two so the
pipeline can overlap decoding and inference: ``transform`` (also ``preprocess``) is a
small picklable callable that runs on the CPU in DataLoader workers, and ``embed`` runs
a stacked batch of its outputs through the network on the extractor's device.

Weights come from, in order: an explicit file, the file the backbone's own library
would have cached (never downloaded here), or a ``WeightsNotFoundError`` that says what
to download and where to put it. ``RandomInit`` builds the same network with seeded
random weights; tiny presets always use it, paper presets only when asked (tests).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import logging
import pickle
import types
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

logger = logging.getLogger(__name__)

Preset = Literal["paper", "tiny"]
PRESETS: tuple[Preset, ...] = ("paper", "tiny")
InputKind = Literal["frames", "audio"]


_HASH_CHUNK_BYTES = 16 * 1024 * 1024


class WeightsNotFoundError(FileNotFoundError):
    """A weight file is neither where it was said to be nor in its library's cache."""


@dataclass(frozen=True)
class RandomInit:
    """Build the network with random weights drawn from ``seed``.

    Tiny presets always use it. A paper preset uses it only when passed explicitly
    (tests); its features are meaningless, which the weights identity
    ``random-init-seed-N`` records in every feature table written with them.
    """

    seed: int = 0

    @property
    def identity(self) -> str:
        return f"random-init-seed-{self.seed}"


@dataclass(frozen=True)
class WeightsSource:
    """Where a released weight file comes from and where its library caches it."""

    title: str
    file_name: str
    download: str
    cached_paths: Callable[[], Sequence[Path]]

    def resolve(self, explicit: Path | None = None, extractor: str = "NAME") -> Path:
        """The weight file to load: ``explicit`` if given, else the first cached copy.

        ``extractor`` names the extractor in the message that says how to pass a file.
        """
        if explicit is not None:
            if explicit.is_file():
                return explicit
            raise WeightsNotFoundError(
                f"{self.title}: weight file {explicit} does not exist. "
                f"{self._how_to_get(extractor)}"
            )
        searched = list(self.cached_paths())
        for candidate in searched:
            if candidate.is_file():
                return candidate
        looked = ", ".join(str(path) for path in searched) or "nowhere"
        raise WeightsNotFoundError(
            f"{self.title}: no weight file given and none cached (looked in: {looked}). "
            f"{self._how_to_get(extractor)}"
        )

    def _how_to_get(self, extractor: str) -> str:
        return (
            f"Download {self.download} (file {self.file_name}) and pass its path "
            f"(`avvp extract --weights {extractor}=PATH`, or weights=PATH in Python), or "
            "put it in one of the cache locations above; nothing is downloaded automatically."
        )


WeightsArg = str | Path | enum.Enum | RandomInit | None


def resolve_weights(
    weights: WeightsArg, default: enum.Enum, preset: Preset, extractor: str = "NAME"
) -> Path | RandomInit:
    """Turn the ``weights`` argument of a builder into a file to load or a seed.

    ``None`` means the preset's default: the released weights (``default``, a member
    of the extractor's weights enum whose value is a ``WeightsSource``) for ``paper``,
    ``RandomInit()`` for ``tiny``. ``extractor`` (its name) appears in the message of a
    missing file.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if preset == "tiny":
        if weights is None:
            return RandomInit()
        if isinstance(weights, RandomInit):
            return weights
        raise ValueError(
            "tiny presets are randomly initialised; pass weights=None or RandomInit(seed)"
        )
    if isinstance(weights, RandomInit):
        logger.warning("building the paper preset with random weights (%s)", weights.identity)
        return weights
    if weights is None or isinstance(weights, enum.Enum):
        member = default if weights is None else weights
        if not isinstance(member.value, WeightsSource):
            raise TypeError(f"{member!r} is not a weights source")
        return member.value.resolve(extractor=extractor)
    return default.value.resolve(Path(weights).expanduser(), extractor)


def hf_cached_file(repo_id: str, filename: str) -> Path:
    """A file of a Hugging Face repo in the local hub cache, looked up without the network.

    When it is not there, the pattern of where it would be is returned instead, so that
    error messages can show the place that was searched.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    hit = try_to_load_from_cache(repo_id, filename)
    if isinstance(hit, str):
        return Path(hit)
    folder = "models--" + repo_id.replace("/", "--")
    return Path(constants.HF_HUB_CACHE) / folder / "snapshots" / "*" / filename


@functools.lru_cache(maxsize=32)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    # size and mtime are part of the key so a file replaced in place is hashed again.
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process for an unchanged file."""
    stat = path.stat()
    return _sha256_of(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


def weights_identity(weights: Path | RandomInit) -> str:
    return weights.identity if isinstance(weights, RandomInit) else file_sha256(weights)


def rounded_linspace(start: float, stop: float, count: int) -> np.ndarray:
    """``count`` evenly spaced integer positions from ``start`` to ``stop`` inclusive.

    Rounded with ``np.round`` (half to even), as VALOR's feature scripts pick frames
    and audio samples, so indices match theirs exactly.
    """
    return np.round(np.linspace(start, stop, count)).astype(np.int64)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch for the block without changing anyone else's random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# Globals a checkpoint of tensors and plain numbers may name. torch's weights-only reader
# would enforce the same kind of list, but it cannot parse pickle protocol 4, in which
# some releases (LAION-CLAP's) are written; Python's own unpickler can, restricted here.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch", "Size"),
    ("torch", "device"),
    ("torch.storage", "UntypedStorage"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy", "dtype"),
} | {("torch", name) for name in dir(torch) if name.endswith("Storage")}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a checkpoint")
        return super().find_class(module, name)


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# A `pickle_module` for torch.load whose unpickler only builds allowed globals. torch
# reads a zip checkpoint with `Unpickler` and a legacy (non-zip) file first with `load`:
# both must be the restricted ones, or a legacy-format file runs what it names.
RESTRICTED_PICKLE = types.ModuleType("avvp_restricted_pickle")
RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler  # type: ignore[attr-defined]
RESTRICTED_PICKLE.load = _restricted_load  # type: ignore[attr-defined]


def load_tensor_checkpoint(path: Path) -> Any:
    """torch.load for files of tensors and plain numbers only, in any pickle protocol."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            # Protocol 4 files: same allowlist idea, enforced by our restricted unpickler.
            return torch.load(  # noqa: S614 - restricted unpickler, see _ALLOWED_GLOBALS
                path, map_location="cpu", weights_only=False, pickle_module=RESTRICTED_PICKLE
            )


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A plain state dict saved with ``torch.save``, loaded without running pickled code."""
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a bad or foreign file
        raise ValueError(
            f"{path} is not a readable PyTorch weight file ({error.__class__.__name__}); "
            "re-download it"
        ) from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} holds a {type(loaded).__name__}, not a state dict")
    return loaded.get("state_dict", loaded)


@dataclass(frozen=True)
class WindowInput:
    """What one window must look like when handed to ``preprocess``.

    kind "frames": uint8 array (N, H, W, 3) of the window's frames at ``fps``.
    kind "audio": 1-D float array of the window's mono audio at ``sample_rate``.
    """

    kind: InputKind
    fps: float | None = None
    sample_rate: int | None = None


class FeatureExtractor(ABC):
    """One backbone with one recipe: window array in, fixed-shape feature out."""

    name: ClassVar[str]
    version: ClassVar[str]
    input: ClassVar[WindowInput]
    output_shape: ClassVar[tuple[int, int]]

    def __init__(
        self,
        *,
        preset: Preset,
        weights: Path | RandomInit,
        network: torch.nn.Module,
        device: str | torch.device | None,
    ) -> None:
        self.preset = preset
        self.weights = weights
        self.transform = self.make_transform(preset)
        self.device = torch.device(device) if device is not None else default_device()
        self.network = network.eval().requires_grad_(False).to(self.device)

    @property
    def weights_identity(self) -> str:
        """sha256 of the weight file (computed on first use), or ``random-init-seed-N``."""
        return weights_identity(self.weights)

    def preprocess(self, window: Any) -> torch.Tensor:
        """One window (see ``input``) to the network's input tensor; pure, CPU only.

        Workers should call ``transform`` directly: it is the same function without a
        reference to the network, so it pickles cheaply.
        """
        return self.transform(window)

    def embed(self, batch: torch.Tensor) -> torch.Tensor:
        """A stack of ``preprocess`` outputs to (B, *output_shape) float32 features.

        Runs on the extractor's device under bf16 autocast on CUDA and in fp32 on the
        CPU; the result stays on that device.
        """
        expected = self._batch_item_shape()
        if batch.ndim != len(expected) + 1 or tuple(batch.shape[1:]) != expected:
            raise ValueError(
                f"{self.name}: expected a batch of shape (B, {', '.join(map(str, expected))}) "
                f"from preprocess, got {tuple(batch.shape)}"
            )
        # no_grad rather than inference_mode: callers may still modify the result in place.
        with torch.no_grad(), self._autocast():
            features = self._forward(batch.to(self.device, non_blocking=True))
        return features.float()

    def metadata(self) -> dict[str, str]:
        """What a feature table records about how its features were made."""
        return {
            "extractor": self.name,
            "extractor_version": self.version,
            "preset": self.preset,
            "weights": self.weights_identity,
            "input": self.input.kind,
            "fps": "" if self.input.fps is None else str(self.input.fps),
            "sample_rate": "" if self.input.sample_rate is None else str(self.input.sample_rate),
            "shape": "x".join(map(str, self.output_shape)),
        }

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @classmethod
    @abstractmethod
    def make_transform(cls, preset: Preset) -> Callable[[Any], torch.Tensor]:
        """The preset's window -> network-input function (what ``transform`` holds).

        Available without building the network, e.g. to check a recipe on a sample clip.
        """

    @abstractmethod
    def _batch_item_shape(self) -> tuple[int, ...]:
        """Shape of one ``preprocess`` output."""

    @abstractmethod
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Network pass for a batch already on the device."""
