"""Float tensor columns read as the bytes they are stored as, past Arrow's list decoding.

Arrow's Parquet reader rebuilds a list column from a repetition and a definition level
per value: about 10 ns a value, half a millisecond for one 64 x 768 CLAP row, several
times what reading the same row from its own `.npy` file costs. Yet a float tensor
column is written PLAIN, uncompressed and without nulls, so when a row group's chunk of
it is one data page, that page ends with the group's rows, one after another, byte for
byte as NumPy holds them (Parquet is little-endian).

A part written so names those columns under `avvp.plain_tensors` in its schema
metadata, and only after its file was read back and every row group's tail matched the
rows it was written from; a file that does not match is written again without the
name. Keyed reads copy such columns' rows straight from the file into the output.
Parts without the name (older ones, other columns) are decoded by Arrow as before;
Parquet readers see the same plain list columns either way.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PLAIN_KEY = b"avvp.plain_tensors"
# Arrow's default page limit; a part's limit is raised above its largest row group.
_DEFAULT_PAGE_BYTES = 2**20

# (column, first row, end row) -> those rows of the column as written, (rows, *shape).
Expected = Callable[[str, int, int], np.ndarray]


def row_bytes(field: pa.Field) -> int:
    """Bytes of one row of a tensor column (0 for any other column)."""
    if not isinstance(field.type, pa.FixedShapeTensorType):
        return 0
    return int(np.prod(field.type.shape)) * field.type.value_type.bit_width // 8


def candidates(schema: pa.Schema) -> list[str]:
    """The float tensor columns: written uncompressed, so their values lie plain."""
    return [
        field.name
        for field in schema
        if isinstance(field.type, pa.FixedShapeTensorType)
        and pa.types.is_floating(field.type.value_type)
    ]


def page_bytes(schema: pa.Schema, rows_per_group: int) -> int:
    """A data page limit above a row group's bytes in any tensor column, so that each
    chunk of them is one page (the layout `PLAIN_KEY` promises)."""
    widest = max((row_bytes(field) for field in schema), default=0)
    return max(_DEFAULT_PAGE_BYTES, rows_per_group * widest + _DEFAULT_PAGE_BYTES)


def with_names(schema: pa.Schema, names: list[str]) -> pa.Schema:
    """The schema naming `names` as plain tensor columns (none: the key removed)."""
    metadata = {k: v for k, v in (schema.metadata or {}).items() if k != PLAIN_KEY}
    if names:
        metadata[PLAIN_KEY] = json.dumps(names).encode()
    return schema.with_metadata(metadata)


def value_starts(metadata: pq.FileMetaData, schema: pa.Schema) -> dict[str, np.ndarray]:
    """For each plain tensor column of a part, the file offset of each row group's first
    value; a column whose chunks cannot be plain (compressed, dictionary-encoded, too
    short) is left out, so Arrow decodes it."""
    names = json.loads((schema.metadata or {}).get(PLAIN_KEY, b"[]"))
    # Parquet stores values little-endian; a big-endian NumPy needs Arrow's decoding.
    if not names or sys.byteorder != "little" or metadata.num_row_groups == 0:
        return {}
    first = metadata.row_group(0)
    leaves = {first.column(i).path_in_schema: i for i in range(first.num_columns)}
    starts = {}
    for name in names:
        leaf = leaves.get(f"{name}.list.element")
        if leaf is None or schema.get_field_index(name) < 0:
            continue
        size = row_bytes(schema.field(name))
        column = []
        for group in range(metadata.num_row_groups):
            chunk = metadata.row_group(group).column(leaf)
            values = metadata.row_group(group).num_rows * size
            if (
                chunk.compression != "UNCOMPRESSED"
                or chunk.has_dictionary_page
                or chunk.total_compressed_size < values
            ):
                break
            column.append(chunk.data_page_offset + chunk.total_compressed_size - values)
        else:
            starts[name] = np.asarray(column, np.int64)
    return starts


def write_checked(
    fs: fsspec.AbstractFileSystem,
    path: str,
    schema: pa.Schema,
    write: Callable[[pa.Schema], None],
    expected: Expected,
) -> None:
    """Have `write(schema)` write a part naming its float tensor columns as plain; if
    the file read back does not hold exactly the expected rows there, write it again
    without the name (Arrow then decodes those columns)."""
    names = candidates(schema)
    if names:
        write(with_names(schema, names))
        if _holds(fs, path, names, expected):
            return
    write(with_names(schema, []))


def _holds(fs: fsspec.AbstractFileSystem, path: str, names: list[str], expected: Expected) -> bool:
    with pq.ParquetFile(path, filesystem=fs) as parquet:
        metadata, schema = parquet.metadata, parquet.schema_arrow
    starts = value_starts(metadata, schema)
    if sorted(starts) != sorted(names):
        return False
    group_starts = np.cumsum(
        [0] + [metadata.row_group(g).num_rows for g in range(len(starts[names[0]]))]
    )
    with fs.open(path, "rb") as file:
        for name in names:
            for group, offset in enumerate(starts[name].tolist()):
                first, end = int(group_starts[group]), int(group_starts[group + 1])
                want = np.ascontiguousarray(expected(name, first, end)).view(np.uint8)
                file.seek(offset)
                if not np.array_equal(
                    np.frombuffer(file.read(want.nbytes), np.uint8), want.ravel()
                ):
                    return False
    return True


def read_rows(
    fs: fsspec.AbstractFileSystem,
    path: str,
    offsets: np.ndarray,
    out: np.ndarray,
    positions: np.ndarray,
) -> None:
    """Copy the rows whose bytes begin at file `offsets` into `out[positions]`."""
    rows = out.reshape(len(out), -1).view(np.uint8)
    # File order turns a shuffled request into one forward pass over the file.
    by_offset = np.argsort(offsets, kind="stable")
    with fs.open(path, "rb") as file:
        for offset, position in zip(
            offsets[by_offset].tolist(), positions[by_offset].tolist(), strict=True
        ):
            file.seek(offset)
            # Straight into the output row: one copy from the page cache, no decoding.
            if file.readinto(rows[position]) != rows.shape[1]:
                raise OSError(f"{path} ends inside a tensor row at byte {offset}")


def decoded_rows(fs: fsspec.AbstractFileSystem, path: str) -> Expected:
    """`Expected` rows as Arrow decodes them from the file at `path` (opened at the first
    call): checks a file against itself, one row group in memory at a time."""
    opened: list[tuple[pq.ParquetFile, np.ndarray]] = []

    def rows(name: str, first: int, end: int) -> np.ndarray:
        if not opened:
            file = pq.ParquetFile(path, filesystem=fs)
            sizes = [file.metadata.row_group(g).num_rows for g in range(file.num_row_groups)]
            opened.append((file, np.cumsum([0, *sizes])))
        file, starts = opened[0]
        group = int(np.searchsorted(starts, first, side="right") - 1)
        column = file.read_row_group(group, columns=[name])[name].combine_chunks()
        return column.to_numpy_ndarray()[: end - first]

    return rows


def expected_from(columns: Mapping[str, np.ndarray]) -> Expected:
    """`Expected` rows out of whole columns held in memory."""
    return lambda name, first, end: columns[name][first:end]
