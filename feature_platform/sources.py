"""Source tables: what a captured database table looks like, declared once.

A ``SourceTable`` names the Debezium topic a table's changes arrive on, its primary key
and its columns with their types. The declared types make the change log's Parquet schema
stable across partitions, and they are how values are decoded when a record carries no
embedded Connect schema (``converter.schemas.enable=false``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pyarrow as pa

_DECIMAL = re.compile(r"^decimal\((\d+),\s*(\d+)\)$")
_SNAKE_CASE = re.compile(r"^[a-z][a-z0-9_]*$")

# Column types a source column may declare, and what each means on the wire when the
# record has no embedded schema to say so.
SIMPLE_TYPES: dict[str, pa.DataType] = {
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "string": pa.string(),
    "bool": pa.bool_(),
    "date": pa.timestamp("us", tz="UTC"),  # io.debezium.time.Date: days since the epoch
    "timestamp_ms": pa.timestamp("us", tz="UTC"),  # io.debezium.time.Timestamp
    "timestamp_us": pa.timestamp("us", tz="UTC"),  # io.debezium.time.MicroTimestamp
    "timestamp_tz": pa.timestamp("us", tz="UTC"),  # io.debezium.time.ZonedTimestamp (ISO text)
}


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in SIMPLE_TYPES and not _DECIMAL.match(self.type):
            raise ValueError(
                f"column {self.name!r}: unknown type {self.type!r}; "
                f"use one of {sorted(SIMPLE_TYPES)} or decimal(precision,scale)"
            )

    @property
    def decimal_precision_scale(self) -> tuple[int, int] | None:
        match = _DECIMAL.match(self.type)
        return (int(match.group(1)), int(match.group(2))) if match else None

    @property
    def arrow_type(self) -> pa.DataType:
        precision_scale = self.decimal_precision_scale
        if precision_scale:
            return pa.decimal128(*precision_scale)
        return SIMPLE_TYPES[self.type]


@dataclass(frozen=True)
class SourceTable:
    """A captured table: ``SourceTable("orders", topic="dbserver1.inventory.orders", ...)``."""

    name: str
    topic: str
    primary_key: tuple[str, ...]
    columns: tuple[Column, ...]
    description: str = ""
    # How Decimal values are encoded when a record has no embedded schema: "precise"
    # (base64 unscaled integer, Debezium's default), "string" or "double".
    decimal_handling_mode: str = "precise"
    owners: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not _SNAKE_CASE.match(self.name):
            raise ValueError(f"source table name {self.name!r} must be snake_case")
        names = [column.name for column in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"source table {self.name!r} declares a column twice")
        missing = [key for key in self.primary_key if key not in names]
        if missing:
            raise ValueError(f"source table {self.name!r}: primary key {missing} not among its columns")
        if self.decimal_handling_mode not in ("precise", "string", "double"):
            raise ValueError(f"source table {self.name!r}: unknown decimal_handling_mode")

    def column(self, name: str) -> Column | None:
        for column in self.columns:
            if column.name == name:
                return column
        return None

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]
