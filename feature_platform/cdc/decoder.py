"""Decode one Debezium message into a row change, a tombstone, a skip, or a reason to quarantine.

Every variant in ../shared/cdc/ENVELOPE-NOTES.md is handled here: the ``{schema, payload}``
wrapper or a bare payload, ops ``r c u d t`` (and ``m`` messages, skipped), tombstones,
Decimals in all three modes, Debezium's time types, ``source.snapshot`` as text or
boolean, TOAST placeholders, and records flattened by ExtractNewRecordState.

Nothing here raises anything but ``DecodeError``, whose ``reason`` names the field; the
landing reader turns it into a quarantine row with the file and line.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from feature_platform.cdc.values import (
    TOAST_PLACEHOLDER,
    ValueDecodeError,
    decode_decimal,
    decode_scalar,
    decode_temporal,
)
from feature_platform.sources import SourceTable

ROW_OPS = ("r", "c", "u", "d")
TEMPORAL_TYPES = ("date", "timestamp_ms", "timestamp_us", "timestamp_tz")


class DecodeError(ValueError):
    """A message that cannot become a row change; ``reason`` says why, naming the field."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RowChange:
    """One row version (or a truncate) as it was committed in the source database."""

    op: str  # r, c, u, d, or t (truncate: the table is empty from commit_ms on)
    key: tuple | None  # primary-key values in declared order; None for a truncate
    values: dict[str, Any]  # decoded columns; for a delete, the before image as far as known
    unavailable: tuple[str, ...]  # TOASTed columns whose value did not change (keep the previous one)
    lsn: int  # position in the source's commit order: PG lsn, or MySQL binlog file/pos/row
    commit_ms: int  # source.ts_ms: when the change was committed in the source database
    tx_id: int | None
    snapshot: bool


@dataclass(frozen=True)
class Tombstone:
    """Kafka's null-value record after a delete: it carries no state of its own."""

    key: Any = None


@dataclass(frozen=True)
class Skipped:
    """A valid message that is not a row change (transaction boundary, logical message)."""

    reason: str


Decoded = RowChange | Tombstone | Skipped


@dataclass
class _Schema:
    """Per-column logical type, base type and Decimal scale from an embedded Connect schema."""

    fields: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def of_row(cls, envelope_schema: dict | None, side: str) -> "_Schema":
        if not isinstance(envelope_schema, dict):
            return cls()
        fields = envelope_schema.get("fields")
        if not isinstance(fields, list):
            return cls()
        # A flattened (unwrapped) record's schema lists the row's columns directly.
        for candidate in fields:
            if isinstance(candidate, dict) and candidate.get("field") == side and isinstance(candidate.get("fields"), list):
                fields = candidate["fields"]
                break
        return cls({f["field"]: f for f in fields if isinstance(f, dict) and isinstance(f.get("field"), str)})


def _unwrap(message: Any) -> tuple[Any, dict | None]:
    """Return (payload, schema) for a message with or without the JsonConverter's wrapper."""
    if isinstance(message, dict) and "payload" in message and set(message) <= {"schema", "payload"}:
        schema = message.get("schema")
        return message["payload"], schema if isinstance(schema, dict) else None
    return message, None


def _as_int(value: Any, path: str) -> int:
    if isinstance(value, bool):
        raise DecodeError(f"field '{path}': boolean where an integer was expected")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        try:
            return int(value)  # Debezium's own docs show stringified numbers (ENVELOPE-NOTES #18)
        except ValueError:  # more than 4300 digits: Python refuses to convert, which crashed staging
            raise DecodeError(f"field '{path}': a {len(value)}-digit number is not an integer that fits") from None
    raise DecodeError(f"field '{path}': {value!r} is not an integer")


# The change log stores lsn and txId as int64 and files every change under the UTC hour of
# its commit time, as a four-digit-year label that the sensor parses back. A value outside
# those ranges (e.g. microseconds written into ts_ms, or an lsn past 2**63) used to decode
# fine and then crash staging with OverflowError / "year is out of range", failing the whole
# file on every sensor tick and every run, forever. Such a line is a bad line: quarantine it.
MAX_COMMIT_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
_INT64_LIMIT = 2**63


def commit_ms_in_range(value: int) -> bool:
    return 0 <= value <= MAX_COMMIT_MS


def _checked_commit_ms(value: int, path: str) -> int:
    if not commit_ms_in_range(value):
        raise DecodeError(
            f"field '{path}': {value} is not a commit time in epoch milliseconds between 1970 and 9999 "
            "(microseconds or nanoseconds written as milliseconds?)"
        )
    return value


def _checked_int64(value: int, path: str) -> int:
    if not -_INT64_LIMIT <= value < _INT64_LIMIT:
        raise DecodeError(f"field '{path}': {value} does not fit a 64-bit integer")
    return value


def _snapshot_flag(value: Any) -> bool:
    # Real output is an Enum string ("true", "first", "last", "incremental", ...), older
    # releases and the docs a boolean; it is absent when false in some versions.
    if value is None or value is False:
        return False
    if value is True:
        return True
    return str(value).lower() != "false"


def _mysql_position(source: dict) -> int:
    """Order MySQL changes by binlog file number, position and row, packed into one integer."""
    file_match = re.search(r"(\d+)$", str(source.get("file", "")))
    if not file_match:
        raise DecodeError("field 'source.file': no binlog file number")
    file_number = _as_int(file_match.group(1), "source.file")  # not int(): see _as_int
    pos = _as_int(source.get("pos"), "source.pos")
    row = _as_int(source.get("row", 0) or 0, "source.row")
    if not (0 <= pos < 2**32 and 0 <= row < 2**8):
        raise DecodeError("field 'source.pos': binlog position out of range")
    return (file_number << 40) | (pos << 8) | row


def decode_row_values(row: dict, table: SourceTable, schema: _Schema, side: str) -> tuple[dict, tuple[str, ...]]:
    """Decode the declared columns of one row image; unknown columns are ignored."""
    values: dict[str, Any] = {}
    unavailable: list[str] = []
    for column in table.columns:
        if column.name not in row:
            continue  # absent (e.g. a PK-only before image): unknown, not null
        raw = row[column.name]
        if raw is None:
            values[column.name] = None
            continue
        if raw == TOAST_PLACEHOLDER or (isinstance(raw, dict) and TOAST_PLACEHOLDER in raw.values()):
            unavailable.append(column.name)
            continue
        field_schema = schema.fields.get(column.name, {})
        logical, parameters = field_schema.get("name"), field_schema.get("parameters") or {}
        # A schema entry of the wrong shape (a list where the logical type's name goes, say)
        # reached set lookups and .get() calls as a TypeError that crashed staging (found by
        # bench/fuzz_decoder.py): it is a bad message, quarantined like a bad value.
        if not isinstance(logical, (str, type(None))) or not isinstance(field_schema.get("type"), (str, type(None))) \
                or not isinstance(parameters, dict):
            raise DecodeError(f"field '{side}.{column.name}': its schema entry is malformed "
                              "(name and type must be strings, parameters an object)")
        try:
            if column.decimal_precision_scale:
                scale = parameters.get("scale")
                values[column.name] = decode_decimal(
                    raw, column, logical, field_schema.get("type"),
                    int(scale) if scale is not None else None, table.decimal_handling_mode,
                )
            elif column.type in TEMPORAL_TYPES:
                values[column.name] = decode_temporal(raw, column, logical)
            else:
                values[column.name] = decode_scalar(raw, column)
        # ArithmeticError too (OverflowError, decimal.InvalidOperation): they are not
        # ValueErrors, and one escaping here crashed staging of the whole file, forever.
        except (ValueDecodeError, ValueError, ArithmeticError) as error:
            raise DecodeError(f"field '{side}.{column.name}': {error}") from None
        except TypeError as error:  # a value of a shape no branch expected: still only this message's fault
            raise DecodeError(f"field '{side}.{column.name}': unexpected value ({error})") from None
    return values, tuple(unavailable)


def _key_of(values: dict, key_payload: Any, table: SourceTable, op: str) -> tuple:
    key = []
    for name in table.primary_key:
        if values.get(name) is not None:
            key.append(values[name])
        elif isinstance(key_payload, dict) and key_payload.get(name) is not None:
            column = table.column(name)
            try:
                key.append(decode_scalar(key_payload[name], column) if column.type in ("int32", "int64", "string") else key_payload[name])
            except ValueDecodeError as error:
                raise DecodeError(f"field 'key.{name}': {error}") from None
        else:
            image = "before" if op == "d" else "after"
            raise DecodeError(f"field '{image}.{name}': primary-key column missing for op '{op}'")
    return tuple(key)


def decode_message(message: Any, table: SourceTable, key_message: Any = None) -> Decoded:
    """Decode one parsed JSON message (value) of ``table``'s topic, with its key if landed."""
    payload, schema = _unwrap(message)
    key_payload, _ = _unwrap(key_message)
    if payload is None:
        return Tombstone(key_payload)
    if not isinstance(payload, dict):
        raise DecodeError(f"message is a JSON {type(payload).__name__}, not an object")
    if "status" in payload and payload.get("status") in ("BEGIN", "END") and "op" not in payload:
        return Skipped(f"transaction {payload['status']} marker")
    if "op" in payload or "source" in payload:
        return _decode_envelope(payload, schema, table, key_payload)
    return _decode_flattened(payload, schema, table, key_payload)


def _decode_envelope(payload: dict, schema: dict | None, table: SourceTable, key_payload: Any) -> Decoded:
    op = payload.get("op")
    if op is None:
        raise DecodeError("field 'op': missing")
    if op == "m":
        return Skipped("logical decoding message (op 'm')")
    if op not in ROW_OPS and op != "t":
        raise DecodeError(f"field 'op': unknown op {op!r} (expected one of r, c, u, d, t)")
    source = payload.get("source")
    if not isinstance(source, dict):
        raise DecodeError("field 'source': missing or not an object")
    if source.get("ts_ms") is not None:
        commit_ms = _checked_commit_ms(_as_int(source["ts_ms"], "source.ts_ms"), "source.ts_ms")
    elif source.get("ts_sec") is not None:  # Debezium 0.x MySQL
        commit_ms = _checked_commit_ms(_as_int(source["ts_sec"], "source.ts_sec") * 1000, "source.ts_sec")
    else:
        raise DecodeError("field 'source.ts_ms': missing (the commit time orders nothing without it)")
    if source.get("lsn") is not None:
        lsn = _checked_int64(_as_int(source["lsn"], "source.lsn"), "source.lsn")
    elif source.get("file") is not None and source.get("pos") is not None:
        lsn = _checked_int64(_mysql_position(source), "source.file")
    else:
        raise DecodeError(
            "field 'source.lsn': missing (and no MySQL file/pos); changes cannot be ordered "
            "(incremental-snapshot rows carry no lsn)"
        )
    tx_id = source.get("txId")
    tx_id = _checked_int64(_as_int(tx_id, "source.txId"), "source.txId") if tx_id is not None else None
    snapshot = _snapshot_flag(source.get("snapshot"))
    if op == "t":
        return RowChange("t", None, {}, (), lsn, commit_ms, tx_id, snapshot)
    side = "before" if op == "d" else "after"
    row = payload.get(side)
    if op == "d" and row is None:
        row = {}  # REPLICA IDENTITY NOTHING: the key may still come from the key file
    if not isinstance(row, dict):
        raise DecodeError(f"field '{side}': missing for op '{op}'")
    values, unavailable = decode_row_values(row, table, _Schema.of_row(schema, side), side)
    key = _key_of(values, key_payload, table, op)
    for name, value in zip(table.primary_key, key):
        values[name] = value
    return RowChange(op, key, values, unavailable, lsn, commit_ms, tx_id, snapshot)


def _decode_flattened(payload: dict, schema: dict | None, table: SourceTable, key_payload: Any) -> Decoded:
    """A record after ExtractNewRecordState: the row itself plus ``__op``, ``__lsn``, ``__source_ts_ms``."""
    deleted = str(payload.get("__deleted", "false")).lower() == "true"
    op = payload.get("__op") or ("d" if deleted else "u")
    if deleted:
        op = "d"
    if op not in ROW_OPS:
        raise DecodeError(f"field '__op': unknown op {op!r} (expected one of r, c, u, d)")
    ts = payload.get("__source_ts_ms")
    lsn = payload.get("__lsn", payload.get("__source_lsn"))
    if ts is None or lsn is None:
        missing = [name for name, value in (("__source_ts_ms", ts), ("__lsn", lsn)) if value is None]
        raise DecodeError(
            f"field '{missing[0]}': flattened record lacks {', '.join(missing)}, so it cannot be placed "
            "in commit order; configure ExtractNewRecordState with add.fields=op,lsn,source.ts_ms"
        )
    row = {name: value for name, value in payload.items() if not name.startswith("__")}
    values, unavailable = decode_row_values(row, table, _Schema.of_row(schema, "after"), "after")
    key = _key_of(values, key_payload, table, op)
    snapshot = op == "r" or _snapshot_flag(payload.get("__source_snapshot"))
    return RowChange(op, key, values, unavailable, _checked_int64(_as_int(lsn, "__lsn"), "__lsn"),
                     _checked_commit_ms(_as_int(ts, "__source_ts_ms"), "__source_ts_ms"),
                     None, snapshot)


def parse_json(text: str) -> Any:
    """Parse one line; raise DecodeError naming the JSON problem."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DecodeError(f"not valid JSON: {error.msg} at column {error.colno}") from None
    except ValueError as error:
        # json.loads raises a plain ValueError for an integer of more than 4300 digits; it
        # escaped the landing reader and crashed staging of the whole file on every attempt.
        raise DecodeError(f"not valid JSON: {error}") from None
