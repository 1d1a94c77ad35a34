"""VALOR's release into the store: `CLIP.zip` and `CLAP.zip` (downloaded, or given as
files), read in place, into `clip-vit-l-14`, `clap-htsat-fusion` and the `valor`
pseudo-labels, with LLP's labels.

A release imports whole or not at all: before the first write, every member the import
will read is read to its end, so zipfile checks its compressed data and CRC; a damaged
one refuses the import (`CorruptArchiveError`) with the store as it was. The sha256 of
every archive imported is recorded in the store (`releases/valor`, one row per archive)
and in the provenance of the feature tables it fills.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pyarrow as pa
from huggingface_hub import hf_hub_url
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..storage import FeatureStore, Provenance
from ..storage.records import RecordTable
from . import catalog
from .release import (
    RELEASE_VERSION,
    VALOR_SOURCE,
    ImportFeaturesConfig,
    ImportResult,
    LabelImportResult,
    LLPLabelsResult,
    Modality,
    SkippedFile,
    import_feature_entries,
    import_llp_labels,
    join_staged_labels,
    label_import_result,
    stage_label_entries,
)
from .sources.download import Downloaded, checked_sha256, discard, download
from .sources.llp import llp_video_ids
from .sources.npy_files import (
    NpyEntry,
    UnusableFile,
    archive_entries,
    check_archive,
    read_header,
    shape_text,
)
from .sources.videos import file_digest

VALOR_DATASET = "NTUBarista/valor_features"


# On huggingface.co, or on the Hub HF_ENDPOINT names (a mirror of it).
VALOR_URLS = tuple(
    hf_hub_url(VALOR_DATASET, name, repo_type="dataset") for name in ("CLIP.zip", "CLAP.zip")
)


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


# What each VALOR archive holds, told apart by the shape of its features.
VALOR_ARCHIVES: dict[tuple[int, ...], tuple[str, Modality]] = {
    catalog.release_layout("valor-clip")[0].shape: ("valor-clip", "visual"),
    catalog.release_layout("valor-clap")[0].shape: ("valor-clap", "audio"),
}


class CorruptArchiveError(ValueError):
    """An archive with a member that does not read back (bad CRC, damaged data)."""


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


@dataclass
class _Archive:
    path: Path
    digest: str
    layout: str
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
        kinds = sorted(archive.layout for archive in archives)
        if kinds != sorted(VALOR_ARCHIVES[shape][0] for shape in VALOR_ARCHIVES):
            raise ValueError(
                f"VALOR's release is one CLIP archive and one CLAP archive; got "
                f"{', '.join(f'{a.path.name} ({a.layout})' for a in archives)}"
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
        for archive in sorted(archives, key=lambda a: a.layout != "valor-clip"):
            if config.features:
                features.append(
                    import_feature_entries(
                        root,
                        archive.features,
                        ImportFeaturesConfig(layout=archive.layout),
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
        labels=label_import_result(VALOR_SOURCE, staged, joined, waiting),
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
    stored = set(
        FeatureStore(root).table(catalog.release_layout(archive.layout)[0].table).video_ids()
    )
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
                shape, _, _ = read_header(stream)
        except (UnusableFile, *_DAMAGED):
            # A damaged member stops the import when it is verified, if it is to be read.
            continue
        if tuple(shape) in VALOR_ARCHIVES:
            return VALOR_ARCHIVES[tuple(shape)]
        break
    expected = " or ".join(shape_text(shape) for shape in VALOR_ARCHIVES)
    raise ValueError(f"{path}: its features are not VALOR's ({expected} per video)")
