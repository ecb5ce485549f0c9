"""Debezium's value encodings, decoded exactly into Python values.

Decimals become ``decimal.Decimal`` (never a float on the way); every date and time
becomes an integer of microseconds since the epoch in UTC, which is what the change log's
``timestamp[us, UTC]`` columns store. Each function raises ``ValueDecodeError`` with a
reason a person can act on; the caller adds the file, line and field.
"""

from __future__ import annotations

import base64
import binascii
import decimal
from datetime import date, datetime, timezone

from feature_platform.sources import Column

TOAST_PLACEHOLDER = "__debezium_unavailable_value"

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Debezium writes +/-infinity dates and timestamps as sentinel longs; no feature can use them.
_MAX_MICROS = 253402300799999999  # 9999-12-31T23:59:59.999999Z
_MIN_MICROS = -62135596800000000  # 0001-01-01T00:00:00Z

# Logical types from Debezium and Kafka Connect that carry dates and times.
DATE_TYPES = {"io.debezium.time.Date", "org.apache.kafka.connect.data.Date"}
MILLIS_TYPES = {"io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp"}
MICROS_TYPES = {"io.debezium.time.MicroTimestamp"}
NANOS_TYPES = {"io.debezium.time.NanoTimestamp"}
ZONED_TYPES = {"io.debezium.time.ZonedTimestamp", "io.debezium.time.IsoTimestamp"}
DECIMAL_TYPES = {"org.apache.kafka.connect.data.Decimal"}
VARIABLE_DECIMAL_TYPES = {"io.debezium.data.VariableScaleDecimal"}


class ValueDecodeError(ValueError):
    """A value that cannot be decoded; the message says why."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_micros(micros: int) -> int:
    if not _MIN_MICROS <= micros <= _MAX_MICROS:
        raise ValueDecodeError(f"timestamp {micros} µs is outside years 1-9999 (an infinity sentinel?)")
    return micros


def _parse_iso(text: str) -> int:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as error:
        raise ValueDecodeError(f"{text!r} is not an ISO-8601 timestamp") from error
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    delta = value - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _unscaled_from_base64(text: str) -> int:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ValueDecodeError(f"{text!r} is not base64 (expected Debezium's precise Decimal encoding)") from error
    if not raw:
        raise ValueDecodeError("empty base64 Decimal")
    return int.from_bytes(raw, "big", signed=True)


def decode_decimal(raw: object, column: Column, logical: str | None, schema_type: str | None,
                   schema_scale: int | None, mode: str) -> decimal.Decimal:
    """Decode a Decimal in any of Debezium's modes and fit it to the column's declared scale."""
    precision, scale = column.decimal_precision_scale or (38, 9)
    if isinstance(raw, dict):  # io.debezium.data.VariableScaleDecimal: {"scale": s, "value": base64}
        if not _is_int(raw.get("scale")) or not isinstance(raw.get("value"), str):
            raise ValueDecodeError("VariableScaleDecimal needs an integer 'scale' and a base64 'value'")
        value = decimal.Decimal(_unscaled_from_base64(raw["value"])).scaleb(-raw["scale"])
    elif isinstance(raw, bool):
        raise ValueDecodeError(f"boolean {raw!r} where a decimal was expected")
    elif isinstance(raw, (int, float)):  # decimal.handling.mode=double
        if isinstance(raw, float) and (raw != raw or raw in (float("inf"), float("-inf"))):
            raise ValueDecodeError(f"{raw!r} cannot be stored as decimal({precision},{scale})")
        # repr() of a float is the shortest text that reads back as the same double, so a
        # price sent as 12.99 decodes to Decimal("12.99"), not 12.9900000000000002131...
        value = decimal.Decimal(repr(raw)) if isinstance(raw, float) else decimal.Decimal(raw)
    elif isinstance(raw, str):
        base64_encoded = (
            logical in DECIMAL_TYPES or schema_type == "bytes"
            if (logical or schema_type)
            else mode == "precise"
        )
        if base64_encoded:
            if schema_scale is None and logical in DECIMAL_TYPES:
                raise ValueDecodeError("Decimal schema has no 'scale' parameter")
            value = decimal.Decimal(_unscaled_from_base64(raw)).scaleb(-(schema_scale if schema_scale is not None else scale))
        else:  # decimal.handling.mode=string
            try:
                value = decimal.Decimal(raw)
            except decimal.InvalidOperation as error:
                raise ValueDecodeError(f"{raw!r} is not a decimal number") from error
            if not value.is_finite():
                raise ValueDecodeError(f"{raw!r} cannot be stored as decimal({precision},{scale})")
    else:
        raise ValueDecodeError(f"{type(raw).__name__} where a decimal was expected")
    quantum = decimal.Decimal(1).scaleb(-scale)
    with decimal.localcontext() as context:
        context.prec = 80
        try:
            fitted = value.quantize(quantum)
        except decimal.InvalidOperation:
            # Far more digits than any column holds (1e100 in double mode, a huge negative
            # VariableScaleDecimal scale). InvalidOperation is not a ValueError, so it used to
            # escape the decoder and crash staging of the whole file on every attempt.
            raise ValueDecodeError(f"{value} has more than {precision} digits for decimal({precision},{scale})") from None
        if fitted != value:
            raise ValueDecodeError(f"{value} has more than {scale} decimal places for decimal({precision},{scale})")
    if len(fitted.as_tuple().digits) > precision and fitted != 0:
        raise ValueDecodeError(f"{value} has more than {precision} digits for decimal({precision},{scale})")
    return fitted


def decode_temporal(raw: object, column: Column, logical: str | None) -> int:
    """Decode any Debezium date or time encoding to microseconds since the epoch, UTC."""
    kind = column.type
    if logical in DATE_TYPES:
        kind = "date"
    elif logical in MILLIS_TYPES:
        kind = "timestamp_ms"
    elif logical in MICROS_TYPES:
        kind = "timestamp_us"
    elif logical in NANOS_TYPES:
        kind = "timestamp_ns"
    elif logical in ZONED_TYPES:
        kind = "timestamp_tz"
    if isinstance(raw, str):
        # ZonedTimestamp, or time.precision.mode=isostring; a bare date is midnight UTC.
        if kind == "date" and len(raw) == 10:
            try:
                day = date.fromisoformat(raw)
            except ValueError as error:
                raise ValueDecodeError(f"{raw!r} is not an ISO date") from error
            return _checked_micros((day - date(1970, 1, 1)).days * 86_400_000_000)
        return _checked_micros(_parse_iso(raw))
    if not _is_int(raw):
        raise ValueDecodeError(f"{type(raw).__name__} {raw!r} where a {kind} was expected")
    if kind == "date":
        return _checked_micros(raw * 86_400_000_000)
    if kind == "timestamp_ms":
        return _checked_micros(raw * 1000)
    if kind == "timestamp_us":
        return _checked_micros(raw)
    if kind == "timestamp_ns":
        return _checked_micros(raw // 1000)
    raise ValueDecodeError(f"integer {raw} where an ISO-8601 timestamp string was expected")


def decode_scalar(raw: object, column: Column) -> object:
    """Decode ints, floats, strings and booleans, refusing silent type changes."""
    kind = column.type
    if kind in ("int32", "int64"):
        if not _is_int(raw):
            raise ValueDecodeError(f"{type(raw).__name__} {raw!r} where an integer was expected")
        limit = 2**31 if kind == "int32" else 2**63
        if not -limit <= raw < limit:
            raise ValueDecodeError(f"{raw} does not fit {kind}")
        return raw
    if kind == "float64":
        if isinstance(raw, bool) or not isinstance(raw, (int, float, str)):
            raise ValueDecodeError(f"{type(raw).__name__} {raw!r} where a number was expected")
        if isinstance(raw, str):  # Debezium writes NaN and infinities as strings
            if raw not in ("NaN", "Infinity", "-Infinity"):
                raise ValueDecodeError(f"{raw!r} is not a number")
            return float(raw.replace("Infinity", "inf"))
        try:
            return float(raw)
        except OverflowError:  # an integer beyond any double: a bad value, not a crash
            raise ValueDecodeError(f"a {raw.bit_length()}-bit integer does not fit float64") from None
    if kind == "bool":
        if not isinstance(raw, bool):
            raise ValueDecodeError(f"{type(raw).__name__} {raw!r} where a boolean was expected")
        return raw
    if kind == "string":
        if not isinstance(raw, str):
            raise ValueDecodeError(f"{type(raw).__name__} where a string was expected")
        # JSON may escape a lone UTF-16 surrogate ("\ud800"); Parquet cannot store it, and
        # letting it through crashed staging of the whole file on every attempt.
        try:
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueDecodeError(f"{raw!r} is not valid Unicode (lone surrogate)") from None
        return raw
    raise ValueDecodeError(f"no decoder for column type {kind}")
