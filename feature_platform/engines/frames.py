"""Moving columns between Arrow and the engines' working representation, exactly.

Engines work on integers: a timestamp is int64 microseconds since the epoch (UTC) and a
``decimal(p,s)`` is the integer of its unscaled value (11.75 at scale 2 is 1175). Arrow's
decimal128 stores exactly that integer in 16 bytes, so the conversions below reinterpret
buffers instead of going through Python ``Decimal`` objects one value at a time.

An unscaled integer is an int64 when every value of the column fits one (the fast, common
case) and otherwise a Python ``int`` in an object column ("wide"): exact at any size. What
the offline store can hold is a ``decimal(38, s)``, so a value beyond 38 digits is refused
(``DECIMAL38_MAX``), never wrapped.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

NO_END = np.iinfo(np.int64).max  # "+infinity" for an interval that has not closed
INT64_MAX = 2**63 - 1
DECIMAL38_MAX = 10**38 - 1  # the largest unscaled value a decimal(38, s) holds


def is_wide(values: pd.Series) -> bool:
    """Whether a column of exact integers is carried as Python ints (object dtype)."""
    return values.dtype == object


def widen(values: pd.Series) -> pd.Series:
    """Exact integers (Int64, int64 or object) → an object column of Python ints, pd.NA for null."""
    if is_wide(values):
        return values
    return pd.Series(values.astype("Int64").tolist(), index=values.index, dtype=object)


def max_abs(values: pd.Series) -> int:
    """The largest absolute value of a column of exact integers (0 when it has none), exactly."""
    present = values.dropna()
    if present.empty:
        return 0
    if is_wide(present):
        return max(abs(int(v)) for v in present)
    return max(abs(int(present.max())), abs(int(present.min())))


def narrow_if_possible(values: pd.Series) -> pd.Series:
    """A wide column whose values all fit int64 becomes Int64 again (the fast representation)."""
    if is_wide(values) and max_abs(values) <= INT64_MAX:
        return values.astype("Int64")
    return values


def decimal_to_unscaled(array: pa.Array | pa.ChunkedArray) -> pd.Series:
    """decimal128 → nullable Int64 of unscaled values; wide (Python ints) when one passes int64."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks else pa.array([], array.type)
    if len(array) == 0:
        return pd.Series([], dtype="Int64")
    words = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset * 2:(array.offset + len(array)) * 2]
    low, high = words[0::2], words[1::2]
    valid = array.is_valid().to_numpy(zero_copy_only=False)
    if np.any(valid & (high != (low >> 63))):
        # Some value needs the high word: carry the whole column as Python ints.
        unsigned = low.astype(np.uint64)
        return pd.Series([(int(h) << 64) | int(u) if ok else pd.NA
                          for h, u, ok in zip(high, unsigned, valid)], dtype=object)
    return pd.Series(pd.arrays.IntegerArray(low.copy(), ~valid))


def unscaled_to_decimal(values: pd.Series, scale: int, precision: int = 38) -> pa.Array:
    """Unscaled values (Int64, or wide Python ints) → decimal128(precision, scale), exactly."""
    if is_wide(values):
        if max_abs(values) > DECIMAL38_MAX:
            raise OverflowError(f"an unscaled value of {max_abs(values)} does not fit decimal({precision},{scale})")
        words = []
        for value in values:
            value = 0 if value is None or value is pd.NA else int(value)
            words += [value & 0xFFFF_FFFF_FFFF_FFFF, (value >> 64) & 0xFFFF_FFFF_FFFF_FFFF]
        mask = values.isna().to_numpy()
        validity = pa.array(~mask).buffers()[1] if mask.any() else None
        buffer = pa.py_buffer(np.array(words, dtype=np.uint64).tobytes())
        return pa.Array.from_buffers(pa.decimal128(precision, scale), len(values), [validity, buffer],
                                     null_count=int(mask.sum()))
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


def rounded_sqrt(numerator: int, denominator: int) -> float:
    """sqrt(numerator / denominator), both positive integers, rounded once to the nearest double.

    The engines' sample standard deviation is sqrt((n·Σx² − (Σx)²) / (n(n−1)·10^2scale)) of
    unscaled integers x: this, on exact integers. Both engines call it (Spark on the driver,
    from the exact (n, numerator) its query returns), so they agree bit for bit.

    m = floor(sqrt(numerator · 4^k / denominator)) with at least 55 bits; when the root is not
    exact, any value strictly between m and m + 1 (scaled by 2^-k) rounds to the same double,
    because with 55 bits the double rounding boundaries fall on whole m. ``float(int)`` rounds
    correctly (to nearest, ties to even) and scaling by a power of two is exact.
    """
    k = max(0, (112 - numerator.bit_length() + denominator.bit_length()) // 2 + 1)
    scaled, remainder = divmod(numerator << (2 * k), denominator)
    root = math.isqrt(scaled)
    if remainder == 0 and root * root == scaled:
        return math.ldexp(float(root), -k)
    return math.ldexp(float(2 * root + 1), -(k + 1))
