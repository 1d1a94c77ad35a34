"""A tensor table's rows as Arrow columns and back, and their row hashes.

Every row carries `row_hash`, a BLAKE2b digest of its key and of every other column's
value (see `avvp.storage.table`, fingerprints).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np
import pyarrow as pa

from .keys import Keys

ROW_HASH_COLUMN = "row_hash"
ROW_HASH_BYTES = 16


def arrow_columns(
    keys: Keys,
    arrays: Mapping[str, np.ndarray],
    scalars: Mapping[str, pa.Array],
    rows: np.ndarray | None,
) -> dict[str, pa.Array]:
    """The Arrow columns of a write, of the rows where `rows` is True (None: all)."""
    if rows is None:
        return {
            "video_id": pa.array(keys.video_ids, pa.string()),
            "window": pa.array(keys.windows, pa.int32()),
            **{n: pa.FixedShapeTensorArray.from_numpy_ndarray(a) for n, a in arrays.items()},
            **scalars,
        }
    mask = pa.array(rows)
    return {
        "video_id": pa.array(keys.video_ids[rows], pa.string()),
        "window": pa.array(keys.windows[rows], pa.int32()),
        **{n: pa.FixedShapeTensorArray.from_numpy_ndarray(a[rows]) for n, a in arrays.items()},
        **{n: column.filter(mask) for n, column in scalars.items()},
    }


def row_hash_array(table: pa.Table) -> pa.FixedSizeBinaryArray:
    """Each row's BLAKE2b digest over its key and every other column's value.

    Columns are taken in name order, each value as the bytes Arrow stores (a tensor's
    flat values in the stored dtype, a string's UTF-8), so equal rows hash equal
    whatever part or table they sit in. A plain loop: hashlib has no batched form, and
    the cost is one C call per row and column.
    """
    names = sorted(set(table.column_names) - {ROW_HASH_COLUMN})
    values = [_values_per_row(table[name]) for name in names]
    hashes = []
    for row in range(table.num_rows):
        digest = hashlib.blake2b(digest_size=ROW_HASH_BYTES)
        for name, column in zip(names, values, strict=True):
            digest.update(name.encode())
            digest.update(column[row])
        hashes.append(digest.digest())
    return pa.array(hashes, pa.binary(ROW_HASH_BYTES))


def _values_per_row(column: pa.ChunkedArray) -> list[bytes]:
    if isinstance(column.type, pa.FixedShapeTensorType):
        flat = column.combine_chunks().to_numpy_ndarray()
        return [row.tobytes() for row in flat.reshape(len(flat), -1)]
    if pa.types.is_string(column.type):
        return [value.encode() for value in column.to_pylist()]
    return [value.tobytes() for value in column.to_numpy(zero_copy_only=False)]


def hash_bytes(column: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """(rows, ROW_HASH_BYTES) uint8 view of a fixed-size binary column."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, ROW_HASH_BYTES), np.uint8)
    data = np.frombuffer(column.buffers()[1], np.uint8)
    start = column.offset * ROW_HASH_BYTES
    return data[start : start + len(column) * ROW_HASH_BYTES].reshape(-1, ROW_HASH_BYTES)


def empty_column(arrow_type: pa.DataType, count: int) -> np.ndarray:
    if isinstance(arrow_type, pa.FixedShapeTensorType):
        return np.empty((count, *arrow_type.shape), arrow_type.value_type.to_pandas_dtype())
    return np.empty(count, arrow_type.to_pandas_dtype())


def column_to_numpy(column: pa.ChunkedArray) -> np.ndarray:
    if isinstance(column.type, pa.FixedShapeTensorType):
        return column.combine_chunks().to_numpy_ndarray()
    return column.to_numpy()
