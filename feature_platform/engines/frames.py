"""Moving columns between Arrow and the engines' working representation, exactly.

Engines work on integers: a timestamp is int64 microseconds since the epoch (UTC) and a
``decimal(p,s)`` is the int64 of its unscaled value (11.75 at scale 2 is 1175). Arrow's
decimal128 stores exactly that integer in 16 bytes, so the conversions below reinterpret
buffers instead of going through Python ``Decimal`` objects one value at a time.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

NO_END = np.iinfo(np.int64).max  # "+infinity" for an interval that has not closed


def decimal_to_unscaled(array: pa.Array | pa.ChunkedArray) -> pd.Series:
    """decimal128 → nullable Int64 of unscaled values (values beyond int64 raise)."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], array.type)
    if len(array) == 0:
        return pd.Series([], dtype="Int64")
    words = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset * 2:(array.offset + len(array)) * 2]
    low, high = words[0::2], words[1::2]
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    if np.any(valid & (high != (low >> 63))):
        raise OverflowError("a decimal value does not fit in 64 bits")
    return pd.Series(pd.arrays.IntegerArray(low.copy(), ~valid))


def unscaled_to_decimal(values: pd.Series, scale: int, precision: int = 38) -> pa.Array:
    """Nullable Int64 of unscaled values → decimal128(precision, scale), exactly."""
    mask = values.isna().to_numpy()
    low = values.fillna(0).to_numpy(dtype=np.int64)
    words = np.empty(len(low) * 2, dtype=np.int64)
    words[0::2], words[1::2] = low, low >> 63  # sign-extend into the high word
    validity = pa.array(~mask).buffers()[1] if mask.any() else None
    return pa.Array.from_buffers(pa.decimal128(precision, scale), len(low), [validity, pa.py_buffer(words)],
                                 null_count=int(mask.sum()))


def timestamp_to_micros(array: pa.Array | pa.ChunkedArray) -> pd.Series:
    """timestamp[*, UTC] → nullable Int64 of microseconds since the epoch."""
    as_micros = pc.cast(array, pa.timestamp("us", tz="UTC")).cast(pa.int64())
    return pd.Series(as_micros.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)).astype("Int64")


def micros_to_timestamp(values: pd.Series) -> pa.Array:
    return pa.array(values.astype("Int64"), type=pa.int64()).cast(pa.timestamp("us", tz="UTC"))
