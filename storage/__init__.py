"""Parquet/Arrow feature store, label store and run artifacts.

Knows arrays, ids and files (local paths or fsspec URLs); imports nothing else of avvp.

- `table`: the tensor-table engine (on-disk layout, crash safety, keyed reads) and `Keys`.
- `provenance`: `Provenance`, the producer and settings a table's rows come from.
- `features`: `FeatureStore` / `FeatureTable`, one table per extractor.
- `labels`: `LabelStore` with weak video labels and segment labels per source.
- `info`: `store_info`, a cheap summary of every table under a root; `check_store` and
  `set_aside` find and move away parts that cannot be read; `compact_store`
  merges each table's parts into one.
- `runs`: `RunStore` / `RunDir`, run folders written file by file, atomically.
- `records`: small append-only tables whose keys keep their newest row, under
  `failures` (per stage) and `videos` (the manifest of input videos).
"""

from .features import FeatureBatch, FeatureStore, FeatureTable
from .info import BrokenPart, Compaction, check_store, compact_store, set_aside, store_info
from .labels import LabelStore, SegmentLabels, WeakLabels
from .provenance import Provenance
from .runs import RunDir, RunStore, open_run
from .table import (
    BrokenPartError,
    Keys,
    MissingKeysError,
    ProvenanceMismatchError,
    StoreError,
    StoreLocationError,
    WriteResult,
    check_store_root,
)

__all__ = [
    "BrokenPart",
    "BrokenPartError",
    "Compaction",
    "FeatureBatch",
    "FeatureStore",
    "FeatureTable",
    "Keys",
    "LabelStore",
    "MissingKeysError",
    "Provenance",
    "ProvenanceMismatchError",
    "RunDir",
    "RunStore",
    "SegmentLabels",
    "StoreError",
    "StoreLocationError",
    "WeakLabels",
    "WriteResult",
    "check_store",
    "check_store_root",
    "compact_store",
    "open_run",
    "set_aside",
    "store_info",
]

from .failures import Failure, FailureLog  # noqa: E402
from .videos import VideoManifest, VideoRecord  # noqa: E402

__all__ += ["Failure", "FailureLog", "VideoManifest", "VideoRecord"]
