"""Released data into the store: LLP's labels, and folders of `<id>.npy` files.

Three stage functions, each with its own config:

- `import_llp_labels(root, source)`: LLP-format annotation files as weak labels with
  their splits, and the dense truth of both audio annotation files.
- `import_features(folder, root, config)`: a folder of `<id>.npy` feature files (HAN's
  release: `vggish`, `res152`, `r2plus1d_18`; VALOR's `features/` folders) into one
  feature table.
- `import_pseudo_labels(folder, root, config)`: a folder of `<id>.npy` segment labels
  (10 x 25, 0/1) of one modality, or `audio/` and `visual/` subfolders, as one
  pseudo-label source.

VALOR's archives are read in place by `avvp.pipeline.valor`, through the same imports.

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

Labels of one modality wait in a `staged-<source>-<modality>` label table until the
other modality of the same video arrives; then the video's row is written to the
source's `segment-<source>` table, which is the one training reads. Every import joins
all videos staged in both modalities again, so a changed file of either modality
replaces the video's row there.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..contract import NUM_CLASSES, SEGMENTS_PER_WINDOW
from ..storage import FeatureStore, Keys, LabelStore, Provenance, WriteResult
from ..storage.table import TensorTable
from . import catalog
from .sources.config_files import renamed_key
from .sources.llp import (
    AUDIO_FILES,
    DENSELY_ANNOTATED_SPLITS,
    AudioAnnotations,
    LLPAnnotations,
    llp_video_ids,
    youtube_id,
)
from .sources.npy_files import (
    NpyEntry,
    UnusableFile,
    folder_entries,
    read_checked,
    shape_text,
)

RELEASE_VERSION = "1"
VALOR_SOURCE = "valor"
IMPORT_SOURCE = "import"  # the source of features imported without a layout
LABEL_SHAPE = (SEGMENTS_PER_WINDOW, NUM_CLASSES)
STAGED_PREFIX = "staged-"
# A part of a few tens of MB: large enough for fast Parquet reads, small enough that an
# import of thousands of videos holds one part in memory at a time.
PART_BYTES = 64 << 20

Modality = Literal["audio", "visual"]


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


# ---- configs -----------------------------------------------------------------------


class ImportFeaturesConfig(BaseModel):
    """`import_features`: which table, of which shape; a released layout (the feature
    catalog's) fills both."""

    model_config = ConfigDict(extra="forbid")

    table: str | None = Field(None, description="feature table; default: the layout's")
    layout: str | None = Field(None, description=f"one of {', '.join(catalog.release_layouts())}")
    shape: tuple[int, ...] | None = Field(None, description="shape of one file, e.g. [10, 512]")
    labels: str | None = Field(
        None, description="LLP-format folder whose ids are known (default: the vendored LLP)"
    )

    _old_names = renamed_key("preset", "layout")

    @model_validator(mode="after")
    def _table_and_shape(self) -> ImportFeaturesConfig:
        if self.layout is not None:
            feature, _ = catalog.release_layout(self.layout)
            if self.shape is not None and tuple(self.shape) != feature.shape:
                raise ValueError(
                    f"layout {self.layout} has shape {shape_text(feature.shape)}, not "
                    f"{shape_text(self.shape)}; leave out one of them"
                )
            self.shape = self.shape or feature.shape
            self.table = self.table or feature.table
        if self.table is None or self.shape is None:
            raise ValueError(
                "give a layout, or both a table name and the shape of one file (--table "
                "NAME --shape 10x512)"
            )
        return self

    def provenance(self, dtype: str) -> Provenance:
        layout = catalog.release_layout(self.layout)[1] if self.layout else None
        return Provenance(
            source=layout.source if layout else IMPORT_SOURCE,
            version=RELEASE_VERSION,
            dtype=dtype,
            shape=self.shape,
            # Stored provenance keeps the key "preset" (the data contract of existing
            # stores): a table accepts rows only from an equal provenance.
            extras={"preset": self.layout or ""},
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


# ---- entries -----------------------------------------------------------------------


# ---- reading one file --------------------------------------------------------------


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
        except UnusableFile as problem:
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
        except UnusableFile as problem:
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
    target = LabelStore(root).segments(catalog.pseudo_label_table(source))
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


def label_import_result(
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
    return label_import_result(config.source, staged, joined, waiting)


# ---- VALOR's release ---------------------------------------------------------------


def describe_skipped(skipped: Iterable[SkippedFile]) -> list[str]:
    """One line per skipped file."""
    return [f"{item.name}: {item.reason}" for item in skipped]


# ---- LLP's labels ------------------------------------------------------------------
# Feature tables are keyed by the YouTube id with window 0 (an LLP clip is one 10-s
# window), so the label tables use the same keys. Dense truth is written for both audio
# annotation files (`dense-corrected`, `dense-published`), so an evaluation picks either
# without reading the CSV files again. Labels are content: an edited folder imported
# again replaces exactly the rows whose labels (or split) changed.

LABELS_VERSION = "1"
# The rows' provenance is the file format, not the folder they were read from: labels are
# content, so the same videos' labels read from another folder replace the changed rows.
LABELS_SOURCE = "llp-format-files"


class TableRows(BaseModel):
    """What one write did to one label table, in rows."""

    written: int = 0  # new keys
    replaced: int = 0  # stored keys whose labels changed
    unchanged: int = 0  # stored keys with the same labels

    @classmethod
    def of(cls, result: WriteResult) -> TableRows:
        return cls(written=result.written, replaced=result.replaced, unchanged=result.skipped)


class LLPLabelsResult(BaseModel):
    """What `import_llp_labels` wrote, per label table (JSON-serialisable)."""

    tables: dict[str, TableRows] = Field(default_factory=dict)

    def lines(self) -> list[str]:
        """One line per table, e.g. 'weak: 0 rows written, 1 replaced, 199 unchanged'."""
        return [
            f"{table}: {rows.written} rows written, {rows.replaced} replaced, "
            f"{rows.unchanged} unchanged"
            for table, rows in self.tables.items()
        ]


def import_llp_labels(root: str, source: str | Path | None = None) -> LLPLabelsResult:
    """Write weak labels (all splits) and dense truth (val, test) of an LLP-format folder.

    `source` is a folder with the six LLP files (default: the vendored LLP release).
    Returns the rows written, replaced and unchanged per table: rerunning on the same
    files writes nothing, and after an edit only the changed rows are replaced.
    """
    store = LabelStore(root)
    result = LLPLabelsResult()
    annotations = LLPAnnotations.load(source)
    filenames, splits = [], []
    for split in ("train", "val", "test"):
        names = annotations.split(split)
        filenames += names
        splits += [split] * len(names)
    ids = [youtube_id(name) for name in filenames]
    provenance = Provenance(source=LABELS_SOURCE, version=LABELS_VERSION)
    written = store.weak().write(ids, annotations.weak_labels(filenames), splits, provenance)
    result.tables[catalog.WEAK_LABELS_TABLE] = TableRows.of(written)

    for audio in get_args(AudioAnnotations):
        if source is not None and not (Path(source) / AUDIO_FILES[audio]).is_file():
            continue  # a folder of LLP-format files may carry only the corrected audio file
        annotations = LLPAnnotations.load(source, audio=audio)
        provenance = Provenance(
            source=LABELS_SOURCE, version=LABELS_VERSION, extras={"audio": audio}
        )
        evaluated = [
            name for split in DENSELY_ANNOTATED_SPLITS for name in annotations.split(split)
        ]
        dense = annotations.dense(evaluated)
        ids = [youtube_id(name) for name in evaluated]
        windows = np.zeros(len(ids), dtype=np.int32)
        written = store.segments(catalog.dense_table(audio)).write(
            ids, windows, dense[:, 0], dense[:, 1], provenance
        )
        result.tables[catalog.dense_table(audio)] = TableRows.of(written)
    return result
