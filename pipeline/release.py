"""Released data into the store: folders of `<id>.npy` files, and VALOR's archives read
in place.

Three stage functions, each with its own config:

- `import_features(folder, root, config)`: a folder of `<id>.npy` feature files (HAN's
  release: `vggish`, `res152`, `r2plus1d_18`; VALOR's `features/` folders) into one
  feature table.
- `import_pseudo_labels(folder, root, config)`: a folder of `<id>.npy` segment labels
  (10 x 25, 0/1) of one modality, or `audio/` and `visual/` subfolders, as one
  pseudo-label source.
- `fetch_valor(root, config)`: VALOR's `CLIP.zip` and `CLAP.zip` (downloaded, or given
  as files) into `clip-vit-l-14`, `clap-htsat-fusion` and the `valor` pseudo-labels.

Rules every import shares:

- A file is read through its `.npy` header first; a file whose header is unreadable,
  whose shape is not the table's, whose values are not finite (features) or not 0/1
  (labels), or whose id the annotation files in use do not know, is reported (one
  `SkippedFile` each) and skipped; the rest is imported.
- Every imported row is window 0 of its video (a released LLP clip is one 10-s window)
  with all 10 segments valid.
- Features are keyed: ids already stored are not read again, so importing twice does
  no work. Labels are content: every label file is read again (they are small), and a
  video whose labels changed has its stored row replaced; identical rows are left
  alone. Rows are written in parts of bounded size, so memory does not grow with the
  release.
- A file's header must not declare more data than the file holds: a 200-byte file
  claiming gigabytes is skipped, never allocated for.
- An archive is checked as a whole before anything is read: an entry whose name is
  absolute, climbs out with `..`, or is a symbolic link makes the whole archive refused
  (`UnsafeArchiveError`) and nothing is written. Members are read from the zip in
  place; nothing is extracted to disk.
- A release imports whole or not at all: before the first write, every member the
  import will read is read to its end, so zipfile checks its compressed data and CRC;
  a damaged one refuses the import (`CorruptArchiveError`) with the store as it was.
  The sha256 of every archive imported is recorded in the store (`releases/valor`,
  one row per archive) and in the provenance of the feature tables it fills.

Labels of one modality wait in a `staged-<source>-<modality>` label table until the
other modality of the same video arrives; then the video's row is written to the
source's `segment-<source>` table, which is the one training reads. Every import joins
all videos staged in both modalities again, so a changed file of either modality
replaces the video's row there.
"""

from __future__ import annotations

import math
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Literal, NamedTuple

import numpy as np
import pyarrow as pa
from huggingface_hub import hf_hub_url
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..contract import NUM_CLASSES, SEGMENTS_PER_WINDOW
from ..storage import FeatureStore, Keys, LabelStore, Provenance, WriteResult
from ..storage.records import RecordTable
from ..storage.table import TensorTable
from . import tables
from .llp_labels import LLPLabelsResult, import_llp_labels
from .sources.download import Downloaded, checked_sha256, discard, download
from .sources.llp import llp_video_ids
from .sources.videos import file_digest

RELEASE_VERSION = "1"
VALOR_SOURCE = "valor"
VALOR_DATASET = "NTUBarista/valor_features"
# On huggingface.co, or on the Hub HF_ENDPOINT names (a mirror of it).
VALOR_URLS = tuple(
    hf_hub_url(VALOR_DATASET, name, repo_type="dataset") for name in ("CLIP.zip", "CLAP.zip")
)
LABEL_SHAPE = (SEGMENTS_PER_WINDOW, NUM_CLASSES)
STAGED_PREFIX = "staged-"
# A part of a few tens of MB: large enough for fast Parquet reads, small enough that an
# import of thousands of videos holds one part in memory at a time.
PART_BYTES = 64 << 20
_VERIFY_READ_BYTES = 1 << 20
# What zipfile raises for a member it cannot read back: a bad CRC or header
# (BadZipFile), damaged deflate data (zlib.error), a stream that ends early (EOFError),
# an unsupported method or an encrypted member, a failing disk.
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError)
# The archives each fetch imported, by digest: `<root>/releases/valor/`.
RELEASES_KIND = "releases"
RELEASE_SCHEMA = pa.schema(
    [
        ("sha256", pa.string()),
        ("archive", pa.string()),  # the file's name, e.g. CLIP.zip
        ("origin", pa.string()),  # the URL it was downloaded from, or the local path
        ("size", pa.int64()),
        ("recorded_at", pa.timestamp("us", tz="UTC")),
    ]
)

Modality = Literal["audio", "visual"]


@dataclass(frozen=True)
class ImportPreset:
    """A released feature layout: the table it fills and the shape of one file."""

    table: str
    shape: tuple[int, ...]
    release: str  # provenance source of the imported rows
    title: str


FEATURE_PRESETS: dict[str, ImportPreset] = {
    "han-vggish": ImportPreset("vggish", (10, 128), "han-release", "HAN's VGGish, 10 x 128"),
    "han-res152": ImportPreset(
        "resnet152", (80, 2048), "han-release", "HAN's ResNet-152 at 8 FPS, 80 x 2048"
    ),
    "han-r2plus1d": ImportPreset(
        tables.VISUAL_ST_TABLE, (10, 512), "han-release", "HAN's R(2+1)D-18, 10 x 512"
    ),
    "valor-clip": ImportPreset(
        tables.VISUAL_TABLE, (10, 768), "valor-release", "VALOR's CLIP ViT-L/14, 10 x 768"
    ),
    "valor-clap": ImportPreset(
        tables.AUDIO_MAP_TABLE, (64, 768), "valor-release", "VALOR's CLAP map, 64 x 768"
    ),
}
# What each VALOR archive holds, told apart by the shape of its features.
VALOR_ARCHIVES: dict[tuple[int, ...], tuple[str, Modality]] = {
    FEATURE_PRESETS["valor-clip"].shape: ("valor-clip", "visual"),
    FEATURE_PRESETS["valor-clap"].shape: ("valor-clap", "audio"),
}


class UnsafeArchiveError(ValueError):
    """An archive with entries that could write outside a folder if extracted."""


class CorruptArchiveError(ValueError):
    """An archive with a member that does not read back (bad CRC, damaged data)."""


class SkippedFile(BaseModel):
    """A released file that was not imported, and why."""

    name: str
    reason: str


class ImportResult(BaseModel):
    """One import into one table (JSON-serialisable).

    Features: `imported` new videos, `already_stored` videos not read again. Labels:
    `imported` new videos, `replaced` stored videos whose labels changed,
    `already_stored` stored videos with the same labels.
    """

    table: str
    imported: int = 0
    replaced: int = 0
    already_stored: int = 0
    skipped: list[SkippedFile] = Field(default_factory=list)


class LabelImportResult(BaseModel):
    """Labels of one source: rows of `segment-<source>` written (new videos), replaced
    (labels changed) and unchanged, and videos whose other modality has not been
    imported yet."""

    source: str
    staged: list[ImportResult]
    videos_written: int
    videos_replaced: int = 0
    videos_unchanged: int = 0
    waiting: dict[str, int]  # modality still missing -> videos waiting for it

    @property
    def skipped(self) -> list[SkippedFile]:
        return [s for result in self.staged for s in result.skipped]


class FetchResult(BaseModel):
    """What `fetch_valor` did (JSON-serialisable)."""

    archives: dict[str, str]  # archive file -> sha256 digest
    downloads: list[dict[str, object]]
    features: list[ImportResult]
    labels: LabelImportResult
    llp_labels: LLPLabelsResult  # LLP weak labels and dense annotations, per table
    missing_tables: list[str]  # tables `avvp train` needs that the release does not give

    @property
    def skipped(self) -> list[SkippedFile]:
        return [
            *(s for result in self.features for s in result.skipped),
            *self.labels.skipped,
        ]


class _Unusable(Exception):
    """Why one released file cannot be imported."""


class NpyEntry(NamedTuple):
    """One released `<id>.npy`: its id, the name shown in messages, how to open it, and
    its size in bytes."""

    video_id: str
    name: str
    open: Callable[[], IO[bytes]]
    size: int


# ---- configs -----------------------------------------------------------------------


class ImportFeaturesConfig(BaseModel):
    """`import_features`: which table, of which shape; a preset fills both."""

    model_config = ConfigDict(extra="forbid")

    table: str | None = Field(None, description="feature table; default: the preset's")
    preset: str | None = Field(None, description=f"one of {', '.join(FEATURE_PRESETS)}")
    shape: tuple[int, ...] | None = Field(None, description="shape of one file, e.g. [10, 512]")
    labels: str | None = Field(
        None, description="LLP-format folder whose ids are known (default: the vendored LLP)"
    )

    @model_validator(mode="after")
    def _table_and_shape(self) -> ImportFeaturesConfig:
        if self.preset is not None and self.preset not in FEATURE_PRESETS:
            raise ValueError(
                f"unknown preset {self.preset!r}: use one of {', '.join(FEATURE_PRESETS)}"
            )
        preset = FEATURE_PRESETS.get(self.preset) if self.preset else None
        if preset is not None:
            if self.shape is not None and tuple(self.shape) != preset.shape:
                raise ValueError(
                    f"preset {self.preset} has shape {_shape_text(preset.shape)}, not "
                    f"{_shape_text(self.shape)}; leave out one of them"
                )
            self.shape = self.shape or preset.shape
            self.table = self.table or preset.table
        if self.table is None or self.shape is None:
            raise ValueError(
                "give a preset, or both a table name and the shape of one file (--table "
                "NAME --shape 10x512)"
            )
        return self

    def provenance(self, dtype: str) -> Provenance:
        preset = FEATURE_PRESETS.get(self.preset) if self.preset else None
        return Provenance(
            source=preset.release if preset else "import",
            version=RELEASE_VERSION,
            dtype=dtype,
            shape=self.shape,
            extras={"preset": self.preset or ""},
        )


class ImportLabelsConfig(BaseModel):
    """`import_pseudo_labels`: the source name, and the modality of a one-modality folder."""

    model_config = ConfigDict(extra="forbid")

    source: str
    modality: Modality | None = Field(
        None, description="the folder's labels are of this modality; None: audio/ and visual/"
    )
    labels: str | None = None

    @model_validator(mode="after")
    def _plain_source(self) -> ImportLabelsConfig:
        if not re.fullmatch(r"[A-Za-z0-9._+-]+", self.source):
            raise ValueError(
                f"source {self.source!r}: use letters, digits and . _ + - (it names a table)"
            )
        return self


class FetchConfig(BaseModel):
    """`fetch_valor`: where the archives come from and how they are checked."""

    model_config = ConfigDict(extra="forbid")

    urls: list[str] = Field(default_factory=lambda: list(VALOR_URLS))
    from_zips: list[str] = Field(
        default_factory=list, description="local archives, used instead of downloading"
    )
    cache: str = Field(
        default_factory=lambda: str(_default_cache()), description="where downloads are kept"
    )
    sha256: list[str] = Field(
        default_factory=list, description="expected digests, one per archive, in order"
    )
    labels: str | None = Field(
        None, description="LLP-format folder of the videos' labels (default: the vendored LLP)"
    )
    features: bool = Field(
        True, description="import the features too (False: only the pseudo-labels)"
    )

    @field_validator("sha256")
    @classmethod
    def _hex_digests(cls, digests: list[str]) -> list[str]:
        # Once, before any archive is hashed or downloaded, for both kinds of archive.
        return [checked_sha256(digest) for digest in digests]

    @model_validator(mode="after")
    def _one_digest_per_archive(self) -> FetchConfig:
        archives = self.from_zips or self.urls
        if self.sha256 and len(self.sha256) != len(archives):
            raise ValueError(
                f"{len(self.sha256)} --sha256 digests for {len(archives)} archives: give one "
                "per archive, in the order of the archives"
            )
        return self


def _default_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "avvp" / "downloads"


# ---- entries -----------------------------------------------------------------------


def folder_entries(folder: str | Path) -> list[NpyEntry]:
    """The `<id>.npy` files directly in `folder`, by id."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of <id>.npy files")
    files = sorted(folder.glob("*.npy"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no .npy files (expected <video id>.npy)")
    return [NpyEntry(path.stem, str(path), _opener(path), path.stat().st_size) for path in files]


def _opener(path: Path) -> Callable[[], IO[bytes]]:
    return lambda: open(path, "rb")


def check_archive(archive: zipfile.ZipFile, path: str | Path) -> None:
    """Refuse the whole archive if any entry is absolute, climbs out, or is a link."""
    unsafe = [
        f"{info.filename!r} ({problem})"
        for info in archive.infolist()
        if (problem := _unsafe_entry(info))
    ]
    if unsafe:
        shown = "; ".join(unsafe[:3]) + (f"; and {len(unsafe) - 3} more" if len(unsafe) > 3 else "")
        raise UnsafeArchiveError(
            f"{path} is refused as a whole: {shown}. A release never needs such entries; "
            "nothing was imported. Get the archive again from the release (or check the "
            "mirror) and run this again"
        )


def _unsafe_entry(info: zipfile.ZipInfo) -> str:
    name = info.filename.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    if ".." in name.split("/"):
        return "climbs out with '..'"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a symbolic link"
    return ""


def archive_entries(archive: zipfile.ZipFile, path: str | Path, folder: str) -> list[NpyEntry]:
    """The `<top>/<folder>/<id>.npy` members of a checked archive, read in place."""
    pattern = re.compile(rf"(?:[^/]+/)?{re.escape(folder)}/([^/]+)\.npy")
    entries = []
    for info in archive.infolist():
        match = pattern.fullmatch(info.filename)
        if match and not info.is_dir():
            name = f"{path}!{info.filename}"
            entries.append(NpyEntry(match[1], name, _member_opener(archive, info), info.file_size))
    return sorted(entries, key=lambda entry: entry.video_id)


def _member_opener(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], IO[bytes]]:
    return lambda: archive.open(info)


# ---- reading one file --------------------------------------------------------------


def _read_header(stream: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        major, _ = np.lib.format.read_magic(stream)
        if major == 1:
            return np.lib.format.read_array_header_1_0(stream)
        return np.lib.format.read_array_header_2_0(stream)
    except (ValueError, OSError, EOFError, SyntaxError) as error:
        raise _Unusable(f"its .npy header is unreadable ({error})") from None


def read_checked(entry: NpyEntry, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """The array of one file, or `_Unusable` with the reason.

    kind: "features" (floating point, finite) or "labels" (0/1 values).
    """
    with entry.open() as stream:
        found, fortran, dtype = _read_header(stream)
        if tuple(found) != tuple(shape):
            raise _Unusable(f"shape {_shape_text(found)}, expected {_shape_text(shape)}")
        if kind == "features" and dtype.kind != "f":
            raise _Unusable(f"holds {dtype}, not floating-point features")
        if dtype.kind not in "biuf":
            raise _Unusable(f"holds {dtype}, not integer or floating-point labels")
        # In Python's integers: a crafted shape must not overflow into a small size.
        wanted = math.prod(found) * dtype.itemsize
        held = entry.size - stream.tell()
        if wanted > held:
            # Checked before reading: the read would allocate what the header claims.
            raise _Unusable(
                f"is cut short: its header declares {wanted} data bytes, it holds {held}"
            )
        data = stream.read(wanted)
    array = np.frombuffer(data, dtype).reshape(found, order="F" if fortran else "C")
    if kind == "features":
        if not np.isfinite(array).all():
            raise _Unusable("holds NaN or Inf values")
    elif not np.isin(array, (0, 1)).all():
        raise _Unusable("holds values other than 0 and 1")
    return array


def _shape_text(shape: Sequence[int]) -> str:
    return " x ".join(str(size) for size in shape)


# ---- importing entries -------------------------------------------------------------


def _known(
    entries: Sequence[NpyEntry], known_ids: frozenset[str]
) -> Iterator[NpyEntry | SkippedFile]:
    for entry in entries:
        if entry.video_id in known_ids:
            yield entry
        else:
            yield SkippedFile(
                name=entry.name,
                reason=f"id {entry.video_id!r} is not in the annotation files in use "
                "(give their folder with --labels if these are other videos)",
            )


def import_feature_entries(
    root: str | os.PathLike[str],
    entries: Sequence[NpyEntry],
    config: ImportFeaturesConfig,
    known_ids: frozenset[str],
    *,
    extras: dict[str, object] | None = None,
) -> ImportResult:
    """Import released feature files into the table `config.table` (see the module
    docstring)."""
    # Narrows the types only: the config's validator has set both.
    assert config.table is not None and config.shape is not None
    table_name, shape = config.table, config.shape
    table = FeatureStore(root).table(table_name)
    stored_provenance = table.provenance
    result = ImportResult(table=table_name)
    stored = set(table.video_ids())
    pending: list[tuple[str, np.ndarray]] = []
    provenance: Provenance | None = None

    def flush() -> None:
        if pending:
            ids = [video_id for video_id, _ in pending]
            count = len(ids)
            table.write(
                ids,
                np.zeros(count, np.int32),
                np.stack([array for _, array in pending]),
                np.full(count, SEGMENTS_PER_WINDOW),
                np.ones(count, bool),
                provenance,
            )
            result.imported += count
            pending.clear()

    for item in _known(entries, known_ids):
        if isinstance(item, SkippedFile):
            result.skipped.append(item)
            continue
        if item.video_id in stored:
            result.already_stored += 1
            continue
        try:
            array = read_checked(item, shape, "features")
        except _Unusable as problem:
            result.skipped.append(SkippedFile(name=item.name, reason=str(problem)))
            continue
        if provenance is None:
            # The table keeps the release's precision (a stored provenance always has its
            # dtype); a new table takes the first file's.
            dtype = stored_provenance.dtype if stored_provenance else array.dtype.name
            provenance = config.provenance(dtype)
            if extras:
                provenance.extras.update(extras)
        pending.append((item.video_id, array))
        stored.add(item.video_id)
        if len(pending) * array.nbytes >= PART_BYTES:
            flush()
    flush()
    return result


def import_features(
    folder: str | Path, root: str | os.PathLike[str], config: ImportFeaturesConfig
) -> ImportResult:
    """A folder of `<id>.npy` feature files into the table `config.table`."""
    entries = folder_entries(folder)
    return import_feature_entries(root, entries, config, llp_video_ids(config.labels))


# ---- labels ------------------------------------------------------------------------


def staged_table(root: str | os.PathLike[str], source: str, modality: Modality) -> TensorTable:
    """Labels of one modality of `source`, waiting for the other modality."""
    return TensorTable.open(root, "labels", f"{STAGED_PREFIX}{source}-{modality}")


def stage_label_entries(
    root: str | os.PathLike[str],
    source: str,
    modality: Modality,
    entries: Sequence[NpyEntry],
    known_ids: frozenset[str],
    provenance: Provenance,
) -> ImportResult:
    """Check and stage one modality's label files (see the module docstring).

    Every file is read: labels are content, so a stored video whose file changed has its
    staged row replaced, and an unchanged one is counted as already stored.
    """
    table = staged_table(root, source, modality)
    result = ImportResult(table=f"{STAGED_PREFIX}{source}-{modality}")
    seen: set[str] = set()
    ids: list[str] = []
    arrays: list[np.ndarray] = []
    for item in _known(entries, known_ids):
        if isinstance(item, SkippedFile):
            result.skipped.append(item)
            continue
        if item.video_id in seen:
            result.skipped.append(
                SkippedFile(
                    name=item.name,
                    reason=f"another file of id {item.video_id!r} was imported instead",
                )
            )
            continue
        try:
            arrays.append(read_checked(item, LABEL_SHAPE, "labels").astype(np.uint8))
        except _Unusable as problem:
            result.skipped.append(SkippedFile(name=item.name, reason=str(problem)))
            continue
        ids.append(item.video_id)
        seen.add(item.video_id)
    if ids:
        # Labels are small (250 bytes a video): one part for the whole folder.
        written = table.write(
            Keys.of(ids),
            tensors={"labels": np.stack(arrays)},
            scalars={},
            # The table fills in dtype and shape (uint8, 10 x 25) from the stacked labels.
            provenance=provenance,
            replace=True,
        )
        result.imported, result.replaced = written.written, written.replaced
        result.already_stored = written.skipped
    return result


def join_staged_labels(
    root: str | os.PathLike[str], source: str, provenance: Provenance
) -> tuple[WriteResult, dict[str, int]]:
    """Write the `segment-<source>` rows of every video staged in both modalities.

    Rows whose staged labels changed replace the stored ones; identical rows are
    skipped. Returns (the write's counts, in videos: written new, replaced, skipped as
    unchanged; {missing modality: videos waiting for it}).
    """
    audio, visual = (staged_table(root, source, m) for m in ("audio", "visual"))
    staged = {"audio": set(audio.video_ids()), "visual": set(visual.video_ids())}
    target = LabelStore(root).segments(tables.pseudo_label_table(source))
    joined = set(target.video_ids())
    ready = sorted(staged["audio"] & staged["visual"])
    result = WriteResult(0, 0, None)
    if ready:
        keys = Keys.of(ready)
        result = target.write(
            ready,
            np.zeros(len(ready), np.int32),
            audio.read(keys, ["labels"])["labels"],
            visual.read(keys, ["labels"])["labels"],
            provenance,
        )
    waiting = {
        "visual": len(staged["audio"] - staged["visual"] - joined),
        "audio": len(staged["visual"] - staged["audio"] - joined),
    }
    return result, {modality: count for modality, count in waiting.items() if count}


def _label_import_result(
    source: str, staged: list[ImportResult], joined: WriteResult, waiting: dict[str, int]
) -> LabelImportResult:
    return LabelImportResult(
        source=source,
        staged=staged,
        videos_written=joined.written,
        videos_replaced=joined.replaced,
        videos_unchanged=joined.skipped,
        waiting=waiting,
    )


def import_pseudo_labels(
    folder: str | Path, root: str | os.PathLike[str], config: ImportLabelsConfig
) -> LabelImportResult:
    """A folder of segment label files as pseudo-label source `config.source`.

    With `config.modality`, the folder's files are that modality; without it, the
    folder holds `audio/` and `visual/` subfolders.
    """
    folder = Path(folder)
    if config.modality is None:
        missing = [name for name in ("audio", "visual") if not (folder / name).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"{folder} has no {' and no '.join(f'{m}/' for m in missing)} subfolder: give "
                "--modality audio|visual for a folder of one modality's <id>.npy files"
            )
        parts: list[tuple[Modality, Path]] = [
            ("audio", folder / "audio"),
            ("visual", folder / "visual"),
        ]
    else:
        parts = [(config.modality, folder)]
    known = llp_video_ids(config.labels)
    provenance = Provenance(source=f"import-{config.source}", version=RELEASE_VERSION)
    staged = [
        stage_label_entries(root, config.source, modality, folder_entries(path), known, provenance)
        for modality, path in parts
    ]
    joined, waiting = join_staged_labels(root, config.source, provenance)
    return _label_import_result(config.source, staged, joined, waiting)


# ---- VALOR's release ---------------------------------------------------------------


@dataclass
class _Archive:
    path: Path
    digest: str
    preset: str
    modality: Modality
    features: list[NpyEntry]
    labels: list[NpyEntry]
    download: Downloaded | None  # None: a local archive (--from-zip)


def fetch_valor(
    root: str | os.PathLike[str],
    config: FetchConfig | None = None,
    *,
    on_download: Callable[[str, int, int | None], None] | None = None,
) -> FetchResult:
    """Download (or take) VALOR's archives, check them, and import them in place.

    on_download(url, bytes done, total): progress of each download.
    """
    config = config or FetchConfig()
    downloads: list[Downloaded] = []
    if config.from_zips:
        paths = [Path(path) for path in config.from_zips]
        for path in paths:
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist (a VALOR archive, e.g. CLIP.zip)")
        digests = [file_digest(path) for path in paths]
        for path, digest, expected in zip(
            paths, digests, config.sha256 or [None] * len(paths), strict=True
        ):
            if expected is not None and digest.removeprefix("sha256:") != expected:
                raise ValueError(
                    f"{path} has sha256 {digest.removeprefix('sha256:')}, not the expected "
                    f"{expected}; nothing was imported"
                )
    else:
        for url, expected in zip(
            config.urls, config.sha256 or [None] * len(config.urls), strict=True
        ):
            report = None if on_download is None else partial(on_download, url)
            downloads.append(
                download(url, Path(config.cache).expanduser(), sha256=expected, on_progress=report)
            )
        paths = [done.path for done in downloads]
        digests = [f"sha256:{done.sha256}" for done in downloads]

    with ExitStack() as stack:
        archives = [
            _open_archive(stack, path, digest, done)
            for path, digest, done in zip(
                paths, digests, downloads or [None] * len(paths), strict=True
            )
        ]
        kinds = sorted(archive.preset for archive in archives)
        if kinds != sorted(VALOR_ARCHIVES[shape][0] for shape in VALOR_ARCHIVES):
            raise ValueError(
                f"VALOR's release is one CLIP archive and one CLAP archive; got "
                f"{', '.join(f'{a.path.name} ({a.preset})' for a in archives)}"
            )
        for archive in archives:
            _verify_members(archive, _members_to_read(root, archive, config.features))
        llp_labels = import_llp_labels(str(root), config.labels)
        known = llp_video_ids(config.labels)
        features = []
        staged = []
        # Labels are content: the archives' digests are not part of the labels'
        # provenance (a table holds one provenance), so a release whose label files
        # changed replaces the changed rows; the digests are in `releases/valor`.
        label_provenance = Provenance(source="valor-release", version=RELEASE_VERSION)
        for archive in sorted(archives, key=lambda a: a.preset != "valor-clip"):
            if config.features:
                features.append(
                    import_feature_entries(
                        root,
                        archive.features,
                        ImportFeaturesConfig(preset=archive.preset),
                        known,
                        extras={"archive": archive.path.name, "sha256": archive.digest},
                    )
                )
            staged.append(
                stage_label_entries(
                    root, VALOR_SOURCE, archive.modality, archive.labels, known, label_provenance
                )
            )
        joined, waiting = join_staged_labels(root, VALOR_SOURCE, label_provenance)
    _record_archives(root, archives)
    store_tables = set(FeatureStore(root).table_names())
    # Imported here: the dataset module loads torch, which nothing else here needs.
    from .dataset import DataConfig

    data = DataConfig()
    needed = (data.audio_table, data.visual_table, data.visual_st_table)
    return FetchResult(
        archives={str(path): digest for path, digest in zip(paths, digests, strict=True)},
        downloads=[
            {"url": d.url, "path": str(d.path), "resumed_from": d.resumed_from, "reused": d.reused}
            for d in downloads
        ],
        features=features,
        labels=_label_import_result(VALOR_SOURCE, staged, joined, waiting),
        llp_labels=llp_labels,
        missing_tables=[name for name in needed if name not in store_tables],
    )


def _open_archive(stack: ExitStack, path: Path, digest: str, done: Downloaded | None) -> _Archive:
    try:
        archive = stack.enter_context(zipfile.ZipFile(path))
    except zipfile.BadZipFile:
        raise ValueError(f"{path} is not a zip archive (VALOR's CLIP.zip / CLAP.zip)") from None
    check_archive(archive, path)
    features = archive_entries(archive, path, "features")
    labels = archive_entries(archive, path, "segment_pseudo_labels")
    if not features:
        raise ValueError(
            f"{path} holds no <top folder>/features/<id>.npy files: it is not one of VALOR's "
            "feature archives"
        )
    kind = _archive_kind(path, features)
    return _Archive(path, digest, kind[0], kind[1], features, labels, done)


def _members_to_read(
    root: str | os.PathLike[str], archive: _Archive, features: bool
) -> list[NpyEntry]:
    """The members the import will read: every label file, and the features of videos
    the archive's table does not hold yet (stored ones are not read again)."""
    if not features:
        return archive.labels
    stored = set(FeatureStore(root).table(FEATURE_PRESETS[archive.preset].table).video_ids())
    return [entry for entry in archive.features if entry.video_id not in stored] + archive.labels


def _verify_members(archive: _Archive, members: Iterable[NpyEntry]) -> None:
    """Read each member to its end, where zipfile checks its CRC, or CorruptArchiveError.

    By hand: `ZipFile.testzip` reads every member, also those the import skips, and
    lets zlib's errors escape without the member's name.
    """
    for entry in members:
        try:
            with entry.open() as stream:
                while stream.read(_VERIFY_READ_BYTES):
                    pass
        except _DAMAGED as error:
            member = entry.name.rsplit("!", 1)[-1]
            fix = "get a fresh copy of the archive (check it with --sha256) and run this again"
            if archive.download is not None:
                # A damaged download is no use to any later run: the next one fetches it anew.
                discard(archive.download.path)
                fix = "the download was removed from the cache: run this again to fetch it anew"
            raise CorruptArchiveError(
                f"{archive.path} is damaged: its member {member} does not read back ({error}). "
                f"Nothing was imported; {fix}"
            ) from None


def _record_archives(root: str | os.PathLike[str], archives: Sequence[_Archive]) -> None:
    """Add the archives not yet recorded under `releases/valor` (module docstring)."""
    table = releases_table(root)
    recorded = set(table.latest()["sha256"].to_pylist())
    now = datetime.now(UTC)
    table.append(
        [
            {
                "sha256": archive.digest.removeprefix("sha256:"),
                "archive": archive.path.name,
                "origin": archive.download.url if archive.download else str(archive.path),
                "size": archive.path.stat().st_size,
                "recorded_at": now,
            }
            for archive in archives
            if archive.digest.removeprefix("sha256:") not in recorded
        ]
    )


def releases_table(root: str | os.PathLike[str]) -> RecordTable:
    """The archives imported into the store at `root`: one row per sha256."""
    return RecordTable(root, RELEASES_KIND, VALOR_SOURCE, RELEASE_SCHEMA, "sha256")


def _archive_kind(path: Path, features: Sequence[NpyEntry]) -> tuple[str, Modality]:
    """Which release an archive is, from the shape of its first readable features."""
    for entry in features:
        try:
            with entry.open() as stream:
                shape, _, _ = _read_header(stream)
        except (_Unusable, *_DAMAGED):
            # A damaged member stops the import when it is verified, if it is to be read.
            continue
        if tuple(shape) in VALOR_ARCHIVES:
            return VALOR_ARCHIVES[tuple(shape)]
        break
    expected = " or ".join(_shape_text(shape) for shape in VALOR_ARCHIVES)
    raise ValueError(f"{path}: its features are not VALOR's ({expected} per video)")


def parse_shape(text: str) -> tuple[int, ...]:
    """'10x512' (or '10,512') as (10, 512)."""
    parts = [part for part in re.split(r"[x,\s]+", text.strip()) if part]
    if not parts or not all(part.isdigit() and int(part) > 0 for part in parts):
        raise ValueError(f"shape {text!r}: give positive sizes such as 10x512")
    return tuple(int(part) for part in parts)


def describe_skipped(skipped: Iterable[SkippedFile]) -> list[str]:
    """One line per skipped file."""
    return [f"{item.name}: {item.reason}" for item in skipped]
