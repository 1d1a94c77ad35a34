"""The tensor-table engine under the feature and label stores.

On-disk layout (the root is a local path or any fsspec URL)::

    <root>/features/<name>/part-<time_ns>-<uuid>.parquet   one file per write
    <root>/labels/<name>/part-<time_ns>-<uuid>.parquet
    <root>/<kind>/<name>/.tmp-<uuid>-part-....parquet      a write in flight or a crashed one

Every part is a plain Parquet file whose rows are keyed by `video_id` (string) and
`window` (int32). Tensor columns are Arrow `fixed_shape_tensor` extension columns:
Parquet readers that do not know the extension (pandas, polars, DuckDB) see a
fixed-size list of the flattened tensor. Other columns are plain scalars. Float
tensor columns are written so that keyed reads copy their rows straight from the file
instead of decoding them (`avvp.storage.plain`; parts without that layout, such as
those of older avvp versions, are decoded, and `compact` rewrites them in it).

Provenance: the one source of truth is the `avvp.provenance` JSON entry of each part's
Parquet schema metadata; the table's provenance is that of its first part, and a part
that disagrees makes the table refuse to open. There is no side file to drift out of
step with the parts.

Crash safety: a part is published by `avvp.storage.atomic.atomic_write` (a `.tmp-` name
in its table folder, fsync, rename to `part-...`); readers list only `part-*.parquet`,
so they never see a half part. Temporary leftovers are removed by `cleanup` (and by
`compact`, which `avvp store compact` runs). One writer per part: each part's name holds
a fresh token, so writers never share one; any number of them may add parts to a table
at once.

Duplicates: a write refuses a call that repeats a key, and by default skips keys already
stored. With `replace=True` (labels are content) a stored key whose new row differs
(its row hash) is written again in the new part; identical rows are skipped. A key may
thus sit in several parts (also after a compaction interrupted between writing the
merged part and deleting its inputs, or two writers racing): readers see the row of
the newest part, the last in name order (names sort by time), so no key is ever seen
twice and a replaced row is what every reader gets. A merged part takes the place of
the newest part it merges (it carries that part's time): while its inputs remain, each
key still resolves to the same row, and a write begun after the compaction listed the
parts stays newer than the merge.

Fingerprints: every row carries `row_hash`, a 16-byte BLAKE2b digest of its key and of
every other column's value, computed when it is written. A table's fingerprint digests
its provenance and the (key, row_hash) pairs of its visible rows in key order, so it
reads only small columns, does not depend on how rows are split into parts (compaction
keeps it), and changes with any added row or changed value. A part without `row_hash`
(written by an avvp before it existed) is refused like any unreadable part.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from os import PathLike
from typing import NamedTuple

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from numpy.typing import ArrayLike

from . import plain
from .atomic import TEMP_PREFIX, atomic_write
from .errors import BrokenPartError, MissingKeysError, ProvenanceMismatchError, StoreError
from .key_index import KeyIndex, Part
from .keys import Keys, as_keys, positions_in
from .location import check_table_name, open_root
from .provenance import Provenance
from .rows import (
    ROW_HASH_COLUMN,
    arrow_columns,
    column_to_numpy,
    empty_column,
    hash_bytes,
    row_hash_array,
)

PROVENANCE_KEY = b"avvp.provenance"
KEY_COLUMNS = ("video_id", "window")
PART_PREFIX, PART_SUFFIX = "part-", ".parquet"
# `avvp store check --repair` moves unreadable parts here, keeping their relative paths.
BROKEN_FOLDER = "broken"
# Row groups are the unit a keyed read decodes, except plain tensor columns (copied row
# by row, see `avvp.storage.plain`): small groups keep a small random batch's decoding
# small, and each group's tensor chunk one page.
ROW_GROUP_BYTES = 2**20


class WriteResult(NamedTuple):
    written: int  # rows of keys not stored before
    skipped: int  # rows not written: identical to the stored row (or, without replace, stored)
    part: str | None  # the new part's file name, None when no row was written
    replaced: int = 0  # rows of stored keys written again because their content changed


class TensorTable:
    """One table folder of Parquet parts; see the module docstring for the layout."""

    def __init__(self, fs: fsspec.AbstractFileSystem, path: str, url: str, root: str) -> None:
        self.fs, self.path, self.url, self.root = fs, path, url, root
        self._parts: dict[str, Part] = {}
        self._index_cache: KeyIndex | None = None

    @classmethod
    def open(cls, root: str | PathLike[str], kind: str, name: str) -> TensorTable:
        fs, root_path = open_root(root)
        relative = f"{kind}/{check_table_name(name)}"
        root_url = str(root).rstrip("/")
        return cls(fs, f"{root_path}/{relative}", f"{root_url}/{relative}", root_url)

    # ---- reading -------------------------------------------------------------------

    @property
    def provenance(self) -> Provenance | None:
        parts = self._index().parts
        return parts[0].provenance if parts else None

    def part_names(self) -> list[str]:
        return self._list(PART_PREFIX)

    def keys(self) -> Keys:
        """Every stored key once, in storage order (reads only the key columns)."""
        return self._index().visible_keys()

    def video_ids(self) -> list[str]:
        """Distinct stored video ids in storage order."""
        return pc.unique(self._index().video_ids).to_pylist()

    def fingerprint(self, video_ids: Iterable[str] | None = None) -> str:
        """A digest of the provenance and of the rows (of the given videos, or all).

        Reads only the index (keys and row hashes); see the module docstring.
        """
        index = self._index()
        rows = index.visible.copy()
        if video_ids is not None:
            wanted = pa.array(list(video_ids), pa.string())
            rows &= pc.is_in(index.video_ids, value_set=wanted).to_numpy(zero_copy_only=False)
        positions = np.flatnonzero(rows)
        keys = index.joined.take(pa.array(positions))
        order = pc.sort_indices(keys).to_numpy()
        digest = hashlib.sha256()
        provenance = self.provenance
        if provenance is not None:
            settings = {k: v for k, v in provenance.to_dict().items() if k != "created_by"}
            digest.update(json.dumps(settings, sort_keys=True).encode())
        digest.update(b"\0".join(k.encode() for k in keys.take(pa.array(order)).to_pylist()))
        digest.update(index.row_hashes[positions[order]].tobytes())
        return digest.hexdigest()

    def keys_of_videos(self, video_ids: Iterable[str]) -> Keys:
        """Keys of all windows of the given videos: videos in request order, windows ascending."""
        wanted = pa.array(list(video_ids), pa.string())
        index = self._index()
        stored = index.visible_keys()
        request_rank = positions_in(index.video_ids.filter(pa.array(index.visible)), wanted)
        missing = np.ones(len(wanted), bool)
        missing[request_rank[request_rank >= 0]] = False
        if missing.any():
            examples = wanted.filter(pa.array(missing))[:5].to_pylist()
            raise MissingKeysError(
                f"{self.url}: {int(missing.sum())} of {len(wanted)} requested videos are not "
                f"stored, e.g. {examples}; write them first or check the ids"
            )
        found = np.flatnonzero(request_rank >= 0)
        order = np.lexsort((stored.windows[found], request_rank[found]))
        return stored[found[order]]

    def read(self, keys: Keys | Iterable[tuple[str, int]], columns: Sequence[str]) -> dict:
        """The given columns of the given rows, in request order, as NumPy arrays.

        Tensor columns come back as one contiguous (N, *shape) array each.
        """
        keys = as_keys(keys)
        index = self._index()
        if not index.parts:
            raise MissingKeysError(f"{self.url} holds no rows yet; write to it first")
        rows = index.rows_of(keys)
        if (rows < 0).any():
            missing = keys[rows < 0]
            raise MissingKeysError(
                f"{self.url}: {len(missing)} of {len(keys)} requested keys are not stored, "
                f"e.g. {missing.describe()}; write them first or check the ids and windows"
            )
        return self._read_rows(index, rows, columns)

    def _read_rows(self, index: KeyIndex, rows: np.ndarray, columns: Sequence[str]) -> dict:
        schema = index.parts[0].schema
        unknown = [name for name in columns if schema.get_field_index(name) < 0]
        if unknown:
            raise StoreError(f"{self.url} has no column(s) {unknown}; it has {schema.names}")
        out = {name: empty_column(schema.field(name).type, len(rows)) for name in columns}
        tensors = [n for n in columns if isinstance(schema.field(n).type, pa.FixedShapeTensorType)]
        group_of_row = np.searchsorted(index.group_starts, rows, side="right") - 1
        part_of_row = index.group_part[group_of_row]
        jobs = []
        for number in np.unique(part_of_row).tolist():
            positions = np.flatnonzero(part_of_row == number)
            part = index.parts[number]
            if all(name in part.value_starts for name in tensors):
                jobs.append(
                    lambda n=number, at=positions: self._read_plain(index, n, rows, at, out)
                )
                continue
            # Arrow decodes the rest one row group at a time (memory stays one group).
            by_group = positions[np.argsort(group_of_row[positions], kind="stable")]
            groups, firsts = np.unique(group_of_row[by_group], return_index=True)
            for group, at in zip(groups, np.split(by_group, firsts[1:]), strict=True):
                jobs.append(lambda g=group, at=at: self._read_group(index, g, rows, at, out))

        # Arrow decodes and file reads run without the GIL, so jobs run in parallel;
        # each fills only its own rows of the output.
        with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
            list(pool.map(lambda job: job(), jobs))
        return out

    def _read_group(
        self, index: KeyIndex, group: int, rows: np.ndarray, positions: np.ndarray, out: dict
    ) -> None:
        part = index.parts[index.group_part[group]]
        read = self._parquet(part).read_row_group(
            int(index.group_in_part[group]), columns=list(out)
        )
        offsets = rows[positions] - index.group_starts[group]
        for name in out:
            out[name][positions] = column_to_numpy(read[name])[offsets]

    def _read_plain(
        self, index: KeyIndex, number: int, rows: np.ndarray, positions: np.ndarray, out: dict
    ) -> None:
        """Rows of one part whose tensor columns are plain (see `avvp.storage.plain`):
        tensors copied from the file, other columns decoded from the groups they sit in."""
        part = index.parts[number]
        in_part = rows[positions] - index.part_starts[number]
        group_starts = part.row_group_starts
        group = np.searchsorted(group_starts, in_part, side="right") - 1
        path = f"{self.path}/{part.name}"
        scalars = [n for n in out if n not in part.value_starts]
        for name in out:
            if name in part.value_starts:
                size = plain.row_bytes(part.schema.field(name))
                offsets = part.value_starts[name][group] + (in_part - group_starts[group]) * size
                plain.read_rows(self.fs, path, offsets, out[name], positions)
        if scalars:
            # One Arrow call for all the groups wanted: scalar columns are small.
            groups, inverse = np.unique(group, return_inverse=True)
            sizes = np.diff(group_starts)[groups]
            first_in_read = np.cumsum(sizes) - sizes
            read = self._parquet(part).read_row_groups(groups.tolist(), columns=scalars)
            taken = first_in_read[inverse] + in_part - group_starts[group]
            for name in scalars:
                out[name][positions] = column_to_numpy(read[name])[taken]

    # ---- writing -------------------------------------------------------------------

    def write(
        self,
        keys: Keys,
        tensors: Mapping[str, ArrayLike],
        scalars: Mapping[str, pa.Array],
        provenance: Provenance,
        *,
        replace: bool = False,
    ) -> WriteResult:
        """Append the rows whose keys are not stored yet as one new part.

        replace: also write again the rows of stored keys whose content differs from the
        stored (visible) row, so that readers see the new content; rows identical to the
        stored ones are skipped either way. Without it every stored key is skipped.

        Tensor arrays are (N, *shape); `provenance.dtype`/`shape` fill in from the first
        tensor when None. Arrays are cast to that dtype: floats may narrow, integer values
        must fit.
        """
        count = len(keys)
        provenance = self._complete(provenance, tensors)
        arrays = {
            name: self._tensor_array(name, data, provenance, count)
            for name, data in tensors.items()
        }
        for name, column in scalars.items():
            if len(column) != count:
                raise ValueError(f"{self.url}: column {name!r} has {len(column)} rows, not {count}")

        joined = keys.joined()
        repeated = positions_in(joined, joined) != np.arange(count)
        if repeated.any():
            raise ValueError(
                f"{self.url}: a write repeats keys {keys[repeated].describe()}; "
                "pass each (video_id, window) once"
            )
        index = self._index()
        if index.parts:
            self._check_provenance(index.parts[0].provenance, provenance)
        stored_rows = index.rows_of_joined(joined)
        new = stored_rows < 0
        changed = np.zeros(count, bool)
        hashes = None
        if replace and not new.all():
            # Every incoming row's hash, compared with the stored row's.
            hashes = row_hash_array(pa.table(arrow_columns(keys, arrays, scalars, None)))
            stored = ~new
            changed[stored] = (
                index.row_hashes[stored_rows[stored]] != hash_bytes(hashes)[stored]
            ).any(axis=1)
        take = new | changed
        written, replaced = int(new.sum()), int(changed.sum())
        if not take.any():
            return WriteResult(0, count, None, 0)

        columns = arrow_columns(keys, arrays, scalars, None if take.all() else take)
        if hashes is None:
            hashes = row_hash_array(pa.table(columns))
        elif not take.all():
            hashes = hashes.filter(pa.array(take))
        table = pa.table({**columns, ROW_HASH_COLUMN: hashes})
        table = table.replace_schema_metadata({PROVENANCE_KEY: provenance.to_json()})
        if index.parts and not table.schema.equals(index.parts[0].schema):
            raise StoreError(
                f"{self.url}: new rows have columns {table.schema} but the table holds "
                f"{index.parts[0].schema}; write to another table name or delete the table"
            )
        written_columns = {name: column_to_numpy(table[name]) for name in arrays}

        def write_to(temporary: str) -> None:
            plain.write_checked(
                self.fs,
                temporary,
                table.schema,
                lambda schema: pq.write_table(
                    table.replace_schema_metadata(schema.metadata),
                    temporary,
                    filesystem=self.fs,
                    row_group_size=_rows_per_group(schema),
                    **_write_options(schema),
                ),
                plain.expected_from(written_columns),
            )

        part = self.write_part(write_to)
        return WriteResult(written, count - written - replaced, part, replaced)

    def _complete(self, provenance: Provenance, tensors: Mapping[str, ArrayLike]) -> Provenance:
        first = np.asarray(next(iter(tensors.values())))
        return replace(
            provenance,
            dtype=provenance.dtype or first.dtype.name,
            shape=provenance.shape if provenance.shape is not None else first.shape[1:],
        )

    def _tensor_array(
        self, name: str, data: ArrayLike, provenance: Provenance, count: int
    ) -> np.ndarray:
        array = np.asarray(data)
        expected = (count, *provenance.shape)
        if array.shape != expected:
            raise ValueError(
                f"{self.url}: column {name!r} has shape {array.shape}, expected {expected} "
                f"({count} rows of the provenance shape {provenance.shape})"
            )
        dtype = np.dtype(provenance.dtype)
        # Floats narrow freely (the provenance chose the precision); integers must fit.
        if dtype.kind in "iu" and (
            array.dtype.kind not in "iub"
            or array.size
            and (array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max)
        ):
            raise ValueError(
                f"{self.url}: column {name!r} ({array.dtype}) does not fit the provenance "
                f"dtype {dtype}; pass integer values in its range"
            )
        return np.ascontiguousarray(array, dtype=dtype)

    def _check_provenance(self, stored: Provenance, given: Provenance) -> None:
        differences = stored.differences(given)
        if differences:
            raise ProvenanceMismatchError(
                f"{self.url} holds rows of another provenance (stored != given): "
                f"{'; '.join(differences)}. Write to another table name, or delete "
                f"{self.url} to rebuild it with the new settings."
            )

    def write_part(self, write_to: Callable[[str], None], *, time_ns: int | None = None) -> str:
        """Run `write_to(temporary path)`, then publish the file as a new part.

        The part's name starts with `time_ns` (default: now), which orders it among the
        table's parts.
        """
        stamp = time.time_ns() if time_ns is None else time_ns
        name = f"{PART_PREFIX}{stamp:020d}-{uuid.uuid4().hex[:12]}{PART_SUFFIX}"
        atomic_write(f"{self.path}/{name}", write_to, self.fs)
        return name

    # ---- maintenance ---------------------------------------------------------------

    def compact(self) -> int:
        """Merge all parts into one; returns how many parts were merged (0: nothing to do).

        The merged part holds the visible (newest) row of each key and takes the place
        of the newest input: it carries that part's time, so it sorts after every other
        input and before any part written meanwhile. It is published before its inputs
        are deleted; if deleting stops half-way, readers keep seeing each key once, with
        the same row as before (see the module docstring).
        """
        self.cleanup()
        index = self._index()
        if len(index.parts) < 2:
            return 0
        schema = index.parts[0].schema

        def merge(temporary: str, schema: pa.Schema) -> None:
            with pq.ParquetWriter(
                temporary, schema, filesystem=self.fs, **_write_options(schema)
            ) as writer:
                for number, part in enumerate(index.parts):
                    keep = index.visible[index.part_starts[number] : index.part_starts[number + 1]]
                    if keep.any():
                        rows = self._parquet(part).read()
                        writer.write_table(
                            rows.select(schema.names).filter(pa.array(keep)),
                            row_group_size=_rows_per_group(schema),
                        )

        self.write_part(
            lambda temporary: plain.write_checked(
                self.fs,
                temporary,
                schema,
                lambda marked: merge(temporary, marked),
                plain.decoded_rows(self.fs, temporary),
            ),
            time_ns=_part_time(index.parts[-1].name),
        )
        for part in index.parts:
            self.fs.rm(f"{self.path}/{part.name}")
        return len(index.parts)

    def cleanup(self, min_age_s: float = 3600.0) -> int:
        """Delete temporary files older than `min_age_s` (younger ones may be live writes)."""
        removed = 0
        for name in self._list(TEMP_PREFIX):
            path = f"{self.path}/{name}"
            if time.time() - self.fs.modified(path).timestamp() >= min_age_s:
                self.fs.rm(path)
                removed += 1
        return removed

    # ---- parts and the key index ---------------------------------------------------

    def _list(self, prefix: str) -> list[str]:
        self.fs.invalidate_cache(self.path)
        try:
            paths = self.fs.ls(self.path, detail=False)
        except FileNotFoundError:
            return []
        names = (path.rstrip("/").rsplit("/", 1)[-1] for path in paths)
        return sorted(n for n in names if n.startswith(prefix) and n.endswith(PART_SUFFIX))

    def _index(self) -> KeyIndex:
        """The key index, rebuilt only when the set of parts changed since last time."""
        names = self.part_names()
        if self._index_cache is not None and [p.name for p in self._index_cache.parts] == names:
            return self._index_cache
        self._parts = {name: self._parts.get(name) or self._load_part(name) for name in names}
        parts = [self._parts[name] for name in names]
        for part in parts[1:]:
            differences = parts[0].provenance.differences(part.provenance)
            if differences:
                raise ProvenanceMismatchError(
                    f"{self.url}/{part.name} was written with another provenance than "
                    f"{parts[0].name} ({'; '.join(differences)}); delete the part that "
                    "does not belong"
                )
        self._index_cache = KeyIndex.build(parts)
        return self._index_cache

    def read_part(self, name: str, columns: Sequence[str] | None = None) -> pa.Table:
        """One part read whole (or some columns), a broken file named with its repair."""
        try:
            return pq.read_table(f"{self.path}/{name}", columns=columns, filesystem=self.fs)
        except _PART_READ_ERRORS as error:
            raise self.broken_part(name, error) from None

    def broken_part(self, name: str, error: BaseException) -> BrokenPartError:
        lines = str(error).splitlines() or [type(error).__name__]
        # Arrow repeats the file's absolute path, which the message already names.
        detail = re.sub(r"^Could not open Parquet input source '[^']*': ", "", lines[0])
        return BrokenPartError(
            f"{self.url}/{name} is not a readable avvp part ({detail}); run "
            f"`avvp store check {self.root} --repair` to move it to "
            f"{self.root}/{BROKEN_FOLDER}/ (then re-run the step that wrote it), or delete it",
            detail,
        )

    def _parquet(self, part: Part) -> pq.ParquetFile:
        return pq.ParquetFile(
            f"{self.path}/{part.name}", metadata=part.metadata, filesystem=self.fs
        )

    def _load_part(self, name: str) -> Part:
        path = f"{self.path}/{name}"
        try:
            parquet = pq.ParquetFile(path, filesystem=self.fs)
            schema = parquet.schema_arrow
            keys = parquet.read(columns=[*KEY_COLUMNS, ROW_HASH_COLUMN])
            row_hashes = hash_bytes(keys[ROW_HASH_COLUMN])
            provenance = Provenance.from_json((schema.metadata or {})[PROVENANCE_KEY])
        except _PART_READ_ERRORS as error:
            raise self.broken_part(name, error) from None
        metadata = parquet.metadata
        group_sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        return Part(
            name=name,
            metadata=metadata,
            schema=schema,
            provenance=provenance,
            row_group_starts=np.cumsum([0, *group_sizes]),
            video_ids=keys["video_id"].combine_chunks(),
            windows=keys["window"].to_numpy(),
            row_hashes=row_hashes,
            value_starts=plain.value_starts(metadata, schema),
        )


_PART_READ_ERRORS = (pa.ArrowException, OSError, KeyError, ValueError, TypeError)


class TableView:
    """What every typed view of one `TensorTable` (features, weak labels, segment labels)
    answers the same way; the subclasses add their columns' reads and writes."""

    def __init__(self, table: TensorTable) -> None:
        self.table = table

    @property
    def url(self) -> str:
        return self.table.url

    @property
    def provenance(self) -> Provenance | None:
        return self.table.provenance

    def keys(self) -> Keys:
        return self.table.keys()

    def video_ids(self) -> list[str]:
        return self.table.video_ids()

    def fingerprint(self, video_ids: Iterable[str] | None = None) -> str:
        """Digest of the provenance and the rows of `video_ids` (default: all rows)."""
        return self.table.fingerprint(video_ids)


def _part_time(name: str) -> int | None:
    """The time a part's name starts with (None for a name not made by `write_part`)."""
    stamp = name[len(PART_PREFIX) :].split("-", 1)[0]
    return int(stamp) if stamp.isdigit() else None


def _rows_per_group(schema: pa.Schema) -> int:
    return max(1, ROW_GROUP_BYTES // max(1, sum(plain.row_bytes(field) for field in schema)))


def _write_options(schema: pa.Schema) -> dict:
    """Parquet writer options; per-column settings are keyed by leaf path."""

    def leaf(field: pa.Field) -> str:
        tensor = isinstance(field.type, pa.FixedShapeTensorType)
        return f"{field.name}.list.element" if tensor else field.name

    def is_float_tensor(field: pa.Field) -> bool:
        tensor = isinstance(field.type, pa.FixedShapeTensorType)
        return tensor and pa.types.is_floating(field.type.value_type)

    def is_random(field: pa.Field) -> bool:
        return is_float_tensor(field) or field.name == ROW_HASH_COLUMN

    # Embeddings and row hashes barely compress and would pay the codec on every read;
    # keys and 0/1 labels compress well. Statistics only help on the key columns.
    return {
        "data_page_size": plain.page_bytes(schema, _rows_per_group(schema)),
        "compression": {leaf(f): "none" if is_random(f) else "zstd" for f in schema},
        "use_dictionary": [leaf(f) for f in schema if not is_random(f)],
        "write_statistics": list(KEY_COLUMNS),
    }
