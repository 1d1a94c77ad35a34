"""Parquet/Arrow feature store, label store and run artifacts.

Knows arrays, ids and files (local paths or fsspec URLs); imports nothing else of avvp.

- `table`: the tensor-table engine (on-disk layout, crash safety, keyed reads, writes).
  Under it: `keys` (`Keys`, a table's row keys), `key_index` (which part and row holds
  each key), `rows` (rows as Arrow columns, and their row hashes), `location` (store
  roots and table folders) and `errors` (what a store refuses).
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

from .errors import (
    BrokenPartError,
    MissingKeysError,
    ProvenanceMismatchError,
    StoreError,
    StoreLocationError,
)
from .features import FeatureBatch, FeatureStore, FeatureTable
from .info import BrokenPart, Compaction, check_store, compact_store, set_aside, store_info
from .keys import Keys
from .labels import LabelStore, SegmentLabels, WeakLabels
from .location import check_store_root
from .provenance import Provenance
from .runs import RunDir, RunStore, open_run
from .table import WriteResult

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
