"""The protocol every feature extractor follows, and what they share.

An extractor turns one decoded 10-s window (frames at 8 FPS, or mono audio at its own
sample rate) into one fixed-shape feature array. The work is split in two so the
pipeline can overlap decoding and inference: ``transform`` (also ``preprocess``) is a
small picklable callable that runs on the CPU in DataLoader workers, and ``embed`` runs
a stacked batch of its outputs through the network on the extractor's device.

Weights come from, in order: an explicit file, the file the backbone's own library
would have cached (never downloaded here), or a ``WeightsNotFoundError`` that says what
to download and where to put it. ``RandomInit`` builds the same network with seeded
random weights; tiny sizes always use it, paper sizes only when asked (tests).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import hashlib
import io
import logging
import pickle
import pickletools
import re
import struct
import tarfile
import threading
import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, Literal

import numpy as np
import torch
from torch import _weights_only_unpickler

from .precision import Precision, network_dtype, to_bf16_but_scalars

logger = logging.getLogger(__name__)

Size = Literal["paper", "tiny"]
SIZES: tuple[Size, ...] = ("paper", "tiny")
InputKind = Literal["frames", "audio"]


_HASH_CHUNK_BYTES = 16 * 1024 * 1024
RANDOM_IDENTITY_PREFIX = "random-init-seed-"


class WeightsNotFoundError(FileNotFoundError):
    """A weight file is neither where it was said to be nor in its library's cache."""


@dataclass(frozen=True)
class RandomInit:
    """Build the network with random weights drawn from ``seed``.

    Tiny sizes always use it. A paper size uses it only when passed explicitly
    (tests); its features are meaningless, which the weights identity
    ``random-init-seed-N`` records in every feature table written with them.
    """

    seed: int = 0

    @property
    def identity(self) -> str:
        return f"{RANDOM_IDENTITY_PREFIX}{self.seed}"

    @staticmethod
    def names(identity: str) -> bool:
        """Whether a stored weights identity is that of random weights (any seed)."""
        return identity.startswith(RANDOM_IDENTITY_PREFIX)


@dataclass(frozen=True)
class WeightsSource:
    """Where a released weight file comes from and where its library caches it."""

    title: str
    file_name: str
    download: str
    cached_paths: Callable[[], Sequence[Path]]
    preprocessing: str  # the recipe the weights were trained with, which `transform` applies
    # The file's sha256, or the leading hex digits its publisher names it by (torchvision);
    # None where the publisher gives none. Names a stored table's weights; never a gate.
    sha256: str | None = None

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
    weights: WeightsArg, default: enum.Enum, size: Size, extractor: str = "NAME"
) -> Path | RandomInit:
    """Turn the ``weights`` argument of a builder into a file to load or a seed.

    ``None`` means the size's default: the released weights (``default``, a member
    of the extractor's weights enum whose value is a ``WeightsSource``) for ``paper``,
    ``RandomInit()`` for ``tiny``. ``extractor`` (its name) appears in the message of a
    missing file.
    """
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; expected one of {', '.join(SIZES)}")
    if size == "tiny":
        if weights is None:
            return RandomInit()
        if isinstance(weights, RandomInit):
            return weights
        raise ValueError(
            "tiny sizes are randomly initialised; pass weights=None or RandomInit(seed)"
        )
    if isinstance(weights, RandomInit):
        logger.warning("building the paper size with random weights (%s)", weights.identity)
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


class WeightsFileError(ValueError):
    """A weight or checkpoint file refused unread: not tensors and plain data saved by torch."""


# Why pickle instructions are rewritten by hand: torch's weights-only unpickler (the only
# unpickler any weight or checkpoint file meets here) reads just the instructions of
# pickle protocol 2, torch.save's default, while some releases (LAION-CLAP's) were
# pickled with protocol 4. `_protocol_2` parses a pickle with `pickletools.genops`, which
# executes nothing, and rewrites the few protocol 3-5 instructions such files use into
# their protocol-2 equivalents; every other instruction torch does not read is refused.
# What the rewritten stream may build is decided by torch's unpickler alone.
_PASSED_THROUGH = frozenset(
    {
        "APPEND", "APPENDS", "BINFLOAT", "BININT", "BININT1", "BININT2", "BINPERSID",
        "BUILD", "EMPTY_DICT", "EMPTY_LIST", "EMPTY_SET", "EMPTY_TUPLE", "GLOBAL", "LONG1",
        "MARK", "NEWFALSE", "NEWOBJ", "NEWTRUE", "NONE", "REDUCE", "SETITEM", "SETITEMS",
        "SHORT_BINSTRING", "STOP", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3",
    }
)  # fmt: skip
_STRINGS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8"})
_BYTES = frozenset({"SHORT_BINBYTES", "BINBYTES", "BINBYTES8"})
_DAMAGED = "it is cut short, damaged or not written by torch.save"


class _Refused(pickle.UnpicklingError):
    """Why a pickle was refused, worded for the one-line message that names the file."""


class _RecordingReader:
    """``read``/``readline`` of a file that keep the bytes read since the last ``take``."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self._taken = bytearray()

    def read(self, size: int = -1) -> bytes:
        data = self._file.read(size)
        self._taken += data
        return data

    def readline(self) -> bytes:
        line = self._file.readline()
        self._taken += line
        return line

    def take(self) -> bytes:
        taken = bytes(self._taken)
        self._taken.clear()
        return taken


def _unicode(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def _protocol_2(file: BinaryIO) -> bytes:
    """The next pickle of ``file`` (read up to its STOP, no further) in protocol 2."""
    reader = _RecordingReader(file)
    out = bytearray()
    # Strings are held back until the next instruction: STACK_GLOBAL, protocol 4's way of
    # naming a global, takes the two strings under it, and torch's reader cannot pop
    # strings it was already given. Memo entries of strings stay here for the same reason,
    # and a later GET of one pushes the string itself.
    pending: list[str] = []
    memo_strings: dict[int, str] = {}
    memo: set[int] = set()  # the indices in use: MEMOIZE takes the next one

    def flush() -> None:
        for text in pending:
            out.extend(_unicode(text))
        pending.clear()

    def put(index: int) -> None:
        memo.add(index)
        if pending:
            memo_strings[index] = pending[-1]
        else:
            memo_strings.pop(index, None)
            out.extend(pickle.LONG_BINPUT + struct.pack("<I", index))

    try:
        for opcode, arg, _ in pickletools.genops(reader):
            raw = reader.take()
            name = opcode.name
            if name in _STRINGS:
                pending.append(arg)
            elif name == "MEMOIZE":
                put(len(memo))
            elif name in ("BINPUT", "LONG_BINPUT"):
                put(arg)
            elif name in ("BINGET", "LONG_BINGET") and arg in memo_strings:
                pending.append(memo_strings[arg])
            elif name == "STACK_GLOBAL":
                if len(pending) < 2 or any("\n" in part for part in pending[-2:]):
                    raise _Refused("it names a Python object in a way torch.save never writes")
                module, qualname = pending[-2:]
                del pending[-2:]
                flush()
                out.extend(pickle.GLOBAL + f"{module}\n{qualname}\n".encode())
            elif name in _BYTES:
                # Protocol 2 writes bytes (a numpy scalar's value) as _codecs.encode(text,
                # "latin1"), which torch's reader allows.
                flush()
                out.extend(pickle.GLOBAL + b"_codecs\nencode\n")
                out.extend(_unicode(arg.decode("latin-1")) + _unicode("latin1"))
                out.extend(pickle.TUPLE2 + pickle.REDUCE)
            elif name == "PROTO":
                out.extend(pickle.PROTO + b"\x02")
            elif name in _PASSED_THROUGH or name in ("BINGET", "LONG_BINGET"):
                flush()
                out.extend(raw)
            elif name != "FRAME":  # frames only group instructions for faster reads
                raise _Refused(
                    f"it uses the pickle instruction {name}, which a file of tensors never holds"
                )
    except ValueError:  # genops' word for an unknown instruction or a stream cut short
        raise _Refused(_DAMAGED) from None
    return bytes(out)


class _WeightsOnlyUnpickler(_weights_only_unpickler.Unpickler):
    """torch's weights-only unpickler, given the next pickle of its file in protocol 2."""

    def __init__(self, file: BinaryIO, *, encoding: str = "bytes") -> None:
        super().__init__(file, encoding=encoding)
        self._source = file

    def load(self) -> Any:
        rewritten = io.BytesIO(_protocol_2(self._source))
        self.read, self.readline = rewritten.read, rewritten.readline
        try:
            return super().load()
        except pickle.UnpicklingError as error:
            # torch's words name the global it refused, then suggest allowlisting it.
            named = re.search(r"GLOBAL (\S+)", str(error))
            if named is None:
                raise _Refused(
                    "it holds a pickled object that a file of tensors never holds"
                ) from None
            raise _Refused(
                f"it names a Python object, {named[1]}, that a file of tensors never holds"
            ) from None


def _weights_only_load(file: BinaryIO, **kwargs: Any) -> Any:
    return _WeightsOnlyUnpickler(file, **kwargs).load()


# The `pickle_module` torch.load is given: torch still reads the zip or legacy container
# and its storages, and every pickle in it (the legacy format has several, read with
# `load`) goes through torch's weights-only unpickler.
_WEIGHTS_ONLY_PICKLE = types.ModuleType("avvp_weights_only_pickle")
_WEIGHTS_ONLY_PICKLE.Unpickler = _WeightsOnlyUnpickler  # type: ignore[attr-defined]
_WEIGHTS_ONLY_PICKLE.load = _weights_only_load  # type: ignore[attr-defined]

# numpy scalars (an epoch, a best score) sit beside the weights in some releases: their
# rebuild function and numeric dtypes are allowed too. numpy 2 moved `scalar` to _core.
_NUMPY_SCALAR = np.core.multiarray.scalar
_NUMPY_GLOBALS: list[Any] = [
    _NUMPY_SCALAR,
    (_NUMPY_SCALAR, "numpy._core.multiarray.scalar"),
    np.dtype,
    *{type(np.dtype(code)) for code in "?" + np.typecodes["AllInteger"] + np.typecodes["AllFloat"]},
]
# torch.serialization.safe_globals edits one process-wide list: loads in two threads
# would take each other's entries away, so they take turns.
_LOAD_LOCK = threading.Lock()


def is_torchscript(file: Path | BinaryIO) -> bool:
    """Whether torch.load would hand ``file`` to torch.jit.load: torch's own two tests."""
    with contextlib.ExitStack() as stack:
        handle = stack.enter_context(open(file, "rb")) if isinstance(file, Path) else file
        start = handle.tell()
        try:
            if not torch.serialization._is_zipfile(handle):
                return False
            with torch.serialization._open_zipfile_reader(handle) as reader:
                return torch.serialization._is_torchscript_zip(reader)
        except RuntimeError:  # a damaged zip is no TorchScript archive either
            return False
        finally:
            handle.seek(start)


def load_tensor_file(
    source: Path | bytes,
    *,
    expected: str,
    fix: str,
    name: str | Path | None = None,
    map_location: str | torch.device = "cpu",
) -> Any:
    """Tensors and plain data that torch.save wrote (any pickle protocol), read by torch's
    weights-only unpickler: a file naming anything else runs none of it.

    A refused file raises ``WeightsFileError``, one line: "<name> is not <expected>
    (<why>): <fix>"; ``name`` defaults to the path (give it for bytes).
    """
    shown = name if name is not None or not isinstance(source, Path) else source
    with contextlib.ExitStack() as stack:
        if isinstance(source, Path):
            file: BinaryIO = stack.enter_context(open(source, "rb"))
        else:
            file = io.BytesIO(source)
        if not file.read(1):
            raise WeightsFileError(f"{shown} is not {expected} (it is empty): {fix}")
        file.seek(0)
        # The same open file is tested and loaded, so what was tested is what is loaded.
        if is_torchscript(file):
            raise WeightsFileError(
                f"{shown} is not {expected} (it is a TorchScript program, which holds code): {fix}"
            )
        # torch reads its pre-1.0 .tar format by unpacking the archive, and refuses it
        # when weights_only=True: so does this reader.
        if tarfile.is_tarfile(file):
            raise WeightsFileError(
                f"{shown} is not {expected} (it is in torch's old .tar format): {fix}"
            )
        try:
            with _LOAD_LOCK, torch.serialization.safe_globals(_NUMPY_GLOBALS):
                return torch.load(  # weights only: every pickle goes through torch's reader
                    file, map_location, pickle_module=_WEIGHTS_ONLY_PICKLE, weights_only=False
                )
        except _Refused as refused:
            raise WeightsFileError(f"{shown} is not {expected} ({refused}): {fix}") from None
        except MemoryError:
            raise
        except Exception:  # torch's container readers raise many types for a damaged file
            raise WeightsFileError(f"{shown} is not {expected} ({_DAMAGED}): {fix}") from None


def load_state_dict_file(path: Path, expected: str, fix: str) -> dict[str, torch.Tensor]:
    """A state dict saved with ``torch.save`` (or under a "state_dict" key), read as
    ``load_tensor_file`` reads, with the same one-line refusals."""
    loaded = load_tensor_file(path, expected=expected, fix=fix)
    state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else None
    if not isinstance(state, dict):
        raise WeightsFileError(
            f"{path} is not {expected} (it holds a {type(loaded).__name__}, not a state dict): "
            f"{fix}"
        )
    return state


def copy_weights(
    module: torch.nn.Module, state: dict[str, Any], path: Path, expected: str, fix: str
) -> None:
    """Load ``state`` into ``module`` (strictly); weights of another network are refused
    in one line that says how they differ, instead of torch's list of every key."""
    wanted = module.state_dict()
    missing = sorted(wanted.keys() - state.keys())
    unexpected = sorted(state.keys() - wanted.keys())
    misfit = sorted(
        key
        for key in wanted.keys() & state.keys()
        if not isinstance(state[key], torch.Tensor) or state[key].shape != wanted[key].shape
    )
    differences = [
        f"{label} {len(keys)}, e.g. {keys[0]}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("of another shape or type", misfit),
        )
        if keys
    ]
    if differences:
        raise WeightsFileError(
            f"{path} is not {expected} (tensors {'; '.join(differences)}): {fix}"
        )
    module.load_state_dict(state)


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
    weights_enum: ClassVar[type[enum.Enum]]  # members' values are WeightsSource
    default_weights: ClassVar[enum.Enum]  # the member a paper size loads when given none

    def __init__(
        self,
        *,
        size: Size,
        weights: Path | RandomInit,
        network: torch.nn.Module,
        device: str | torch.device | None,
        precision: Precision = "auto",
    ) -> None:
        self.size = size
        self.weights = weights
        self.transform = self.make_transform(size)
        self.device = torch.device(device) if device is not None else default_device()
        self.dtype = network_dtype(precision, self.device, size)
        network = network.eval().requires_grad_(False).to(self.device)
        # On a CPU the weights themselves are cast, not autocast: under CPU autocast
        # nn.MultiheadAttention (CLIP's) multiplies a non-contiguous input by a copy
        # of its weight per batch row (6x slower than float32), while with bf16 weights
        # torch takes its fused attention path.
        self._cast_input = self.device.type == "cpu" and self.dtype == torch.bfloat16
        self.network = to_bf16_but_scalars(network) if self._cast_input else network

    @classmethod
    def resolve(cls, size: Size, weights: WeightsArg = None) -> Path | RandomInit:
        """The file a build at `size` would load for `weights`, or its seed (see
        `resolve_weights`), found without building the network."""
        return resolve_weights(weights, cls.default_weights, size, cls.name)

    @classmethod
    def read_weights(cls, path: Path) -> dict[str, Any]:
        """The state dict of a weight file, read without running anything it holds; a
        file that is no weights is refused in one line naming it (`WeightsFileError`).
        Extractors whose releases come in other containers override it."""
        source = cls.default_weights.value
        return load_state_dict_file(
            path, source.title, f"use {source.file_name} from {source.download}"
        )

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

        Runs on the extractor's device in its ``dtype`` (see ``network_dtype``): bf16
        under autocast on CUDA, bf16 weights on a CPU; the result stays on that device.
        """
        expected = self._batch_item_shape()
        if batch.ndim != len(expected) + 1 or tuple(batch.shape[1:]) != expected:
            raise ValueError(
                f"{self.name}: expected a batch of shape (B, {', '.join(map(str, expected))}) "
                f"from preprocess, got {tuple(batch.shape)}"
            )
        # no_grad rather than inference_mode: callers may still modify the result in place.
        dtype = torch.bfloat16 if self._cast_input else batch.dtype
        batch = batch.to(self.device, dtype, non_blocking=True)  # one copy, if any
        with torch.no_grad(), self._autocast():
            features = self._forward(batch)
        return features.float()

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.type == "cuda" and self.dtype == torch.bfloat16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @classmethod
    @abstractmethod
    def make_transform(cls, size: Size) -> Callable[[Any], torch.Tensor]:
        """The size's window -> network-input function (what ``transform`` holds).

        Available without building the network, e.g. to check a recipe on a sample clip.
        """

    @abstractmethod
    def _batch_item_shape(self) -> tuple[int, ...]:
        """Shape of one ``preprocess`` output."""

    @abstractmethod
    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Network pass for a batch already on the device."""
