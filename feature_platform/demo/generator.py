"""A seeded generator of a realistic Debezium landing zone for the demo's ``inventory`` database.

The files imitate, down to field order, what Debezium 3.6.3's PostgreSQL connector
(pgoutput, ``topic.prefix=dbserver1``) emits and what the Kafka Connect S3 sink lands with
its DefaultPartitioner (../shared/cdc/ and its captured samples)::

    <root>/topics/dbserver1.inventory.orders/partition=1/dbserver1.inventory.orders+1+0000000500.json
    <root>/topics/dbserver1.inventory.orders/partition=1/dbserver1.inventory.orders+1+0000000500.keys.json

Each line holds one message with the JsonConverter's ``{schema, payload}`` wrapper. A
tombstone is a ``null`` value line, and its key line repeats the deleted key. Each topic has
two Kafka partitions, chosen by a hash of the primary key. A file rotates when the commit
hour changes or after ``FLUSH_SIZE`` records, and about one file in four is gzipped
(``.json.gz`` with ``.keys.json.gz``).

The history simulates a small shop. It opens with a snapshot (``op: r``) of all four
tables. Weeks of activity follow: checkouts of one to three orders per transaction, quantity
changes, orders that move to another product, cancellations (``d`` + tombstone), a few
orders whose primary key changes (``d`` + tombstone + ``c`` sharing one lsn and txId),
sign-ups, email changes whose TOASTed ``biography`` comes as Debezium's placeholder, and an
hourly stock sync updating ``products_on_hand``. Duplicates are at-least-once deliveries.
Single records are re-delivered later, and once a connector restart replays a whole hour,
so the files of that hour come again inside later files. A re-delivery keeps its source
block and gets a new envelope ``ts_ms``.

The seed and ``end`` decide everything, so the same arguments give byte-identical files.
``append_live_batch`` continues the same database later, either with new commits landing
now or with a late batch whose commits are hours old. It keeps its state in
``_generator_state.json`` and ``_generator_commits.bin`` at the root, and readers skip
names that start with ``_``.
"""

from __future__ import annotations

import array
import base64
import bisect
import functools
import gzip
import heapq
import itertools
import json
import math
import os
import random
import time
import unicodedata
import zlib
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import NamedTuple

from feature_platform.cdc.values import TOAST_PLACEHOLDER

DEBEZIUM_VERSION = "3.6.3.Final"
SERVER_NAME = "dbserver1"  # the connector's topic.prefix
DATABASE = "postgres"
SCHEMA_NAME = "inventory"
KAFKA_PARTITIONS = 2
FLUSH_SIZE = 500  # the S3 sink's flush.size: records per file at most
STATE_FILE = "_generator_state.json"
COMMIT_INDEX_FILE = "_generator_commits.bin"

US_PER_SECOND = 1_000_000
US_PER_MINUTE = 60 * US_PER_SECOND
US_PER_HOUR = 60 * US_PER_MINUTE
US_PER_DAY = 24 * US_PER_HOUR

REDELIVERY_RATE = 0.004  # share of records delivered a second time (at-least-once)
REKEY_EVERY = 400  # one order in this many later gets a new primary key


def _between(rng: random.Random, low: int, high: int) -> int:
    """A whole number in [low, high): randrange's job, several times faster in the hot loop."""
    return low + int(rng.random() * (high - low))


# --- Kafka Connect schemas, field for field as in the captured 3.6.3 samples -----------------

def _field(type_: str, field_name: str, optional: bool = False, **extra) -> dict:
    return {"type": type_, "optional": optional, **extra, "field": field_name}


_SERIAL_ID = _field("int32", "id", default=0)  # Debezium reports a SERIAL column's default as 0
_ROW_FIELDS = {
    "customers": [
        _SERIAL_ID, _field("string", "first_name"), _field("string", "last_name"),
        _field("string", "email"), _field("string", "biography", optional=True),
    ],
    "orders": [
        _SERIAL_ID,
        _field("int32", "order_date", name="io.debezium.time.Date", version=1),
        _field("int32", "purchaser"), _field("int32", "quantity"), _field("int32", "product_id"),
        _field("bytes", "unit_price", name="org.apache.kafka.connect.data.Decimal", version=1,
               parameters={"scale": "2", "connect.decimal.precision": "10"}),
    ],
    "products": [
        _SERIAL_ID, _field("string", "name"), _field("string", "description", optional=True),
        _field("double", "weight", optional=True),
    ],
    "products_on_hand": [_field("int32", "product_id"), _field("int32", "quantity")],
}
_SOURCE_SCHEMA = {
    "type": "struct",
    "fields": [
        _field("string", "version"), _field("string", "connector"), _field("string", "name"),
        _field("int64", "ts_ms"),
        _field("string", "snapshot", optional=True, name="io.debezium.data.Enum", version=1,
               parameters={"allowed": "true,first,first_in_data_collection,last_in_data_collection,last,false,incremental"},
               default="false"),
        _field("string", "db"), _field("string", "sequence", optional=True),
        _field("int64", "ts_us", optional=True), _field("int64", "ts_ns", optional=True),
        _field("string", "schema"), _field("string", "table"),
        _field("int64", "txId", optional=True), _field("int64", "lsn", optional=True),
        _field("int64", "xmin", optional=True), _field("string", "origin", optional=True),
        _field("int64", "origin_lsn", optional=True),
    ],
    "optional": False,
    "name": "io.debezium.connector.postgresql.Source",
    "version": 1,
    "field": "source",
}
_TRANSACTION_SCHEMA = {
    "type": "struct",
    "fields": [_field("string", "id"), _field("int64", "total_order"), _field("int64", "data_collection_order")],
    "optional": True,
    "name": "event.block",
    "version": 1,
    "field": "transaction",
}


def envelope_schema(table: str) -> dict:
    """The Connect schema of a change event of ``table`` (Envelope version 2, as in 3.6.3)."""
    def row(side: str) -> dict:
        return {"type": "struct", "fields": _ROW_FIELDS[table], "optional": True,
                "name": f"{SERVER_NAME}.{SCHEMA_NAME}.{table}.Value", "field": side}

    return {
        "type": "struct",
        "fields": [
            row("before"), row("after"), _SOURCE_SCHEMA, _TRANSACTION_SCHEMA,
            _field("string", "op"), _field("int64", "ts_ms", optional=True),
            _field("int64", "ts_us", optional=True), _field("int64", "ts_ns", optional=True),
        ],
        "optional": False,
        "name": f"{SERVER_NAME}.{SCHEMA_NAME}.{table}.Envelope",
        "version": 2,
    }


def key_schema(table: str) -> dict:
    return {"type": "struct", "fields": [_ROW_FIELDS[table][0]], "optional": False,
            "name": f"{SERVER_NAME}.{SCHEMA_NAME}.{table}.Key"}


def _compact(value) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class _Topic:
    """One table's topic, with the constant text that starts each of its value and key lines."""

    table: str
    name: str
    value_prefix: str  # '{"schema":{...},"payload":{'
    key_prefix: str  # '{"schema":{...},"payload":{"id":'

    @classmethod
    def of(cls, table: str) -> "_Topic":
        key_column = _ROW_FIELDS[table][0]["field"]
        return cls(
            table=table,
            name=f"{SERVER_NAME}.{SCHEMA_NAME}.{table}",
            value_prefix='{"schema":' + _compact(envelope_schema(table)) + ',"payload":{',
            key_prefix='{"schema":' + _compact(key_schema(table)) + ',"payload":{"' + key_column + '":',
        )


CUSTOMERS, ORDERS, PRODUCTS, PRODUCTS_ON_HAND = (
    _Topic.of(name) for name in ("customers", "orders", "products", "products_on_hand")
)
TOPICS = (CUSTOMERS, ORDERS, PRODUCTS, PRODUCTS_ON_HAND)  # alphabetical: Debezium's snapshot order


# --- Row values as Debezium writes them ------------------------------------------------------

@functools.cache
def decimal_base64(unscaled: int) -> str:
    """A Connect Decimal: base64 of the big-endian two's-complement unscaled integer, minimal
    length like Java's BigInteger.toByteArray (1299 -> "BRM=", 128 -> "AIA=")."""
    magnitude = unscaled if unscaled >= 0 else ~unscaled
    raw = unscaled.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True)
    return base64.b64encode(raw).decode("ascii")


# An order row: [id, order_date (days since epoch), purchaser, quantity, product_id,
# unit_price in cents, still alive]. Follow-up actions hold the list itself, so a primary-key
# change or a delete is seen by every action planned for the order.
ID, DAY, PURCHASER, QUANTITY, PRODUCT, CENTS, ALIVE = range(7)


def _order_json(row: list) -> str:
    return (f'{{"id":{row[ID]},"order_date":{row[DAY]},"purchaser":{row[PURCHASER]},'
            f'"quantity":{row[QUANTITY]},"product_id":{row[PRODUCT]},"unit_price":"{decimal_base64(row[CENTS])}"}}')


def _customer_json(customer_id: int, first: str, last: str, email: str, biography_json: str) -> str:
    return (f'{{"id":{customer_id},"first_name":{_compact(first)},"last_name":{_compact(last)},'
            f'"email":{_compact(email)},"biography":{biography_json}}}')


def _product_json(product: list) -> str:
    product_id, name, description, weight = product[:4]
    return f'{{"id":{product_id},"name":{_compact(name)},"description":{_compact(description)},"weight":{weight!r}}}'


def _stock_json(product_id: int, quantity: int) -> str:
    return f'{{"product_id":{product_id},"quantity":{quantity}}}'


def _source_json(table: str, commit_us: int, snapshot: str, last_commit_lsn: int | None, lsn: int, tx_id: int) -> str:
    # sequence is pgoutput's ["lastCommittedLsn","currentLsn"], a JSON array inside a string.
    last = "null" if last_commit_lsn is None else f'\\"{last_commit_lsn}\\"'
    return (f'{{"version":"{DEBEZIUM_VERSION}","connector":"postgresql","name":"{SERVER_NAME}",'
            f'"ts_ms":{commit_us // 1000},"snapshot":"{snapshot}","db":"{DATABASE}",'
            f'"sequence":"[{last},\\"{lsn}\\"]","ts_us":{commit_us},"ts_ns":{commit_us * 1000},'
            f'"schema":"{SCHEMA_NAME}","table":"{table}","txId":{tx_id},"lsn":{lsn},'
            f'"xmin":null,"origin":null,"origin_lsn":null}}')


# --- Writing files like the S3 sink -----------------------------------------------------------

class _OpenFile:
    __slots__ = ("topic", "partition", "start_offset", "bucket", "values", "keys")

    def __init__(self, topic: str, partition: int, start_offset: int, bucket: int):
        self.topic, self.partition, self.start_offset, self.bucket = topic, partition, start_offset, bucket
        self.values: list[str] = []
        self.keys: list[str] = []


def _write_atomically(path: Path, lines: list[str], compress: bool) -> None:
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if compress:
        # Level 1: a tenth of the size already, at a third of the default level's time. mtime=0
        # keeps the bytes the same for the same seed.
        data = gzip.compress(data, compresslevel=1, mtime=0)
    temporary = path.with_name(f".{path.name}.tmp")  # readers skip names starting with "."
    temporary.write_bytes(data)
    # The file appears whole, with the time of writing as its mtime (never backdated): the
    # CDC sensor finds new files by listing, oldest first.
    os.replace(temporary, path)


class _LandingWriter:
    """Buffers each topic partition's records and writes a file per commit hour or flush.size."""

    def __init__(self, root: Path, offsets: dict[str, list[int]], flush_size: int, rotate_us: int):
        self.root = root
        self.next_offset = {name: list(values) for name, values in offsets.items()}
        self.flush_size = flush_size
        self.rotate_us = rotate_us
        self.open_files: dict[tuple[str, int], _OpenFile] = {}
        self.written: list[Path] = []
        self.gzipped = 0
        self._made_dirs: set[Path] = set()

    def add(self, topic: _Topic, partition: int, key: int, value_line: str, at_us: int) -> None:
        bucket = at_us // self.rotate_us
        open_file = self.open_files.get((topic.name, partition))
        if open_file is None or open_file.bucket != bucket or len(open_file.values) >= self.flush_size:
            if open_file is not None:
                self._write(open_file)
            open_file = _OpenFile(topic.name, partition, self.next_offset[topic.name][partition], bucket)
            self.open_files[(topic.name, partition)] = open_file
        open_file.values.append(value_line)
        open_file.keys.append(f"{topic.key_prefix}{key}}}}}")
        self.next_offset[topic.name][partition] += 1

    def close(self) -> list[Path]:
        for open_file in self.open_files.values():
            self._write(open_file)
        self.open_files.clear()
        return self.written

    def _write(self, open_file: _OpenFile) -> None:
        directory = self.root / "topics" / open_file.topic / f"partition={open_file.partition}"
        if directory not in self._made_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(directory)
        base = f"{open_file.topic}+{open_file.partition}+{open_file.start_offset:010d}"
        compress = zlib.crc32(base.encode()) % 4 == 0  # s3.compression.type varies across the zone
        suffix = ".json.gz" if compress else ".json"
        # Keys first: a reader that sees the value file finds its keys already there.
        _write_atomically(directory / f"{base}.keys{suffix}", open_file.keys, compress)
        _write_atomically(directory / f"{base}{suffix}", open_file.values, compress)
        self.written.append(directory / f"{base}{suffix}")
        self.gzipped += compress


# --- The WAL and the connector ----------------------------------------------------------------

class _CommitIndex:
    """Every transaction's commit time and LSN range, in commit order.

    A late batch needs commit times in the past *and* LSNs between those of its neighbours
    (PostgreSQL's LSN order is its commit order); this index says where that room is.
    """

    def __init__(self) -> None:
        self.commit_us, self.first_lsn, self.last_lsn = array.array("q"), array.array("q"), array.array("q")

    def append(self, commit_us: int, first_lsn: int, last_lsn: int) -> None:
        self.commit_us.append(commit_us)
        self.first_lsn.append(first_lsn)
        self.last_lsn.append(last_lsn)

    def place(self, commit_us: int, positions: int) -> tuple[int, list[int], int]:
        """Room for a past transaction: (its commit time, ``positions`` LSNs, the LSN before it)."""
        index = bisect.bisect_right(self.commit_us, commit_us)
        while index > 0 and self.commit_us[index - 1] == commit_us:
            commit_us += 1  # commit times are unique; move a microsecond on
            index = bisect.bisect_right(self.commit_us, commit_us)
        if index == 0:
            raise ValueError("a late batch cannot commit before the snapshot")
        if index == len(self.commit_us):
            raise ValueError("a late batch must commit before the newest transaction")
        if commit_us >= self.commit_us[index]:
            raise ValueError("no free commit time there")
        low, high = self.last_lsn[index - 1], self.first_lsn[index]
        step = min(128, (high - low - 1) // (positions + 1))
        if step < 1:
            raise ValueError("no LSN room left between the neighbouring transactions")
        lsns = [low + step * (number + 1) for number in range(positions)]
        for column, value in ((self.commit_us, commit_us), (self.first_lsn, lsns[0]), (self.last_lsn, lsns[-1])):
            column.insert(index, value)
        return commit_us, lsns, low

    def save(self, path: Path) -> None:
        temporary = path.with_name(f".{path.name}.tmp")
        with open(temporary, "wb") as handle:
            handle.write(len(self.commit_us).to_bytes(8, "little"))
            for column in (self.commit_us, self.first_lsn, self.last_lsn):
                column.tofile(handle)
        os.replace(temporary, path)

    @classmethod
    def load(cls, path: Path) -> "_CommitIndex":
        index = cls()
        with open(path, "rb") as handle:
            count = int.from_bytes(handle.read(8), "little")
            for column in (index.commit_us, index.first_lsn, index.last_lsn):
                column.fromfile(handle, count)
        return index


class _Change(NamedTuple):
    """One row change of a transaction, its images already JSON text ("null" when absent)."""

    topic: _Topic
    op: str
    key: int
    before: str
    after: str


class _Connector:
    """Gives each transaction its txId, LSNs and source blocks, and delivers its events.

    Delivery is at least once: a few records are delivered again later, and one connector
    restart replays a whole hour. Files rotate on the commit hour of first deliveries and on
    the delivery hour of repeats, so every topic partition's stream stays in hour order.
    """

    def __init__(self, rng: random.Random, writer: _LandingWriter, index: _CommitIndex, state: dict | None = None):
        self.rng, self.writer, self.index = rng, writer, index
        state = state or {}
        self.tx_id = state.get("tx_id", 750 + _between(rng, 0, 100))
        self.lsn = state.get("lsn", 22_000_000 + 8 * _between(rng, 0, 200_000))
        self.last_commit_lsn = state.get("last_commit_lsn")  # None: the connector has just started
        self.last_commit_us = state.get("last_commit_us", 0)
        self.clock_ns = state.get("clock_ns", 0)  # emission time of the newest delivery
        self.redelivery_rate = REDELIVERY_RATE
        self.counts: dict[str, dict[str, int]] = {topic.table: {} for topic in TOPICS}
        self.tombstones = 0
        self.redelivered = 0
        self._redeliveries: list = []
        self._sequence = itertools.count()
        self.delivered_this_hour: list[tuple] = []
        self.delivered_last_hour: list[tuple] = []

    def state(self) -> dict:
        return {"tx_id": self.tx_id, "lsn": self.lsn, "last_commit_lsn": self.last_commit_lsn,
                "last_commit_us": self.last_commit_us, "clock_ns": self.clock_ns}

    def snapshot(self, at_us: int, rows: list[tuple[_Topic, int, str]]) -> None:
        """All rows in one transaction at one LSN, flagged first/…/last as 3.6.3 does."""
        self.tx_id += 1
        self.lsn += 8 * _between(self.rng, 100, 2000)
        self.clock_ns = at_us * 1000 + _between(self.rng, 1_000_000_000, 2_000_000_000)
        for number, (topic, key, after) in enumerate(rows):
            if number == 0:
                flag = "first"
            elif number == len(rows) - 1:
                flag = "last"
            elif rows[number - 1][0] is not topic:
                flag = "first_in_data_collection"
            elif rows[number + 1][0] is not topic:
                flag = "last_in_data_collection"
            else:
                flag = "true"
            source = _source_json(topic.table, at_us, flag, None, self.lsn, self.tx_id)
            head = f'"before":null,"after":{after},"source":{source},"transaction":null,"op":"r"'
            self.clock_ns += _between(self.rng, 50_000, 900_000)
            self._deliver((topic, key, "r", head), self.clock_ns, at_us)
            self._count(topic, "r")
        self.index.append(at_us, self.lsn, self.lsn)
        self.last_commit_us = at_us

    def commit(self, at_us: int, changes: list[_Change], *, shared_lsn: bool = False) -> int:
        """Commit a transaction now (after every earlier one); returns its commit time."""
        at_us = max(at_us, self.last_commit_us + 1)  # PostgreSQL commits one after another
        if self._redeliveries and self._redeliveries[0][0] <= at_us:
            self.deliver_redeliveries(at_us)
        random = self.rng.random  # this loop runs a million times at scale: keep it lean
        self.tx_id += 1 if random() >= 0.2 else 2 + int(random() * 3)  # some xids went to other work
        lsn = self.lsn + 8 * (125 + int(random() * 1875))  # WAL written by other work in between
        lsns = [lsn]
        for _ in range(len(changes) - 1):
            if not shared_lsn:
                lsn += 8 * (7 + int(random() * 43))
            lsns.append(lsn)
        commit_lsn = lsn + 8 * (6 + int(random() * 10))
        events = self._events(at_us, changes, lsns, self.last_commit_lsn, self.tx_id)
        self.index.append(at_us, lsns[0], commit_lsn)
        self.lsn = self.last_commit_lsn = commit_lsn
        self.last_commit_us = at_us
        # The connector reads the commit from the slot a little later, then emits in order.
        clock_ns = max(self.clock_ns, at_us * 1000 + 40_000_000 + int(random() * 1_460_000_000))
        for event in events:
            clock_ns += 20_000 + int(random() * 380_000)
            self._deliver(event, clock_ns, at_us)
            if random() < self.redelivery_rate:
                due_us = clock_ns // 1000 + _between(self.rng, 20 * US_PER_MINUTE, 90 * US_PER_MINUTE)
                heapq.heappush(self._redeliveries, (due_us, next(self._sequence), event))
        self.clock_ns = clock_ns
        return at_us

    def commit_late(self, at_us: int, changes: list[_Change]) -> int:
        """Commit a transaction in the past, with LSNs between its neighbours'."""
        at_us, lsns, previous_lsn = self.index.place(at_us, len(changes) + 1)
        self.tx_id += 1  # a fresh xid: PostgreSQL hands them out at first write, not in commit order
        emitted_ns = at_us * 1000 + _between(self.rng, 40_000_000, 1_500_000_000)
        for event in self._events(at_us, changes, lsns[:-1], previous_lsn, self.tx_id):
            emitted_ns += _between(self.rng, 20_000, 400_000)
            self._deliver(event, emitted_ns, at_us)
        return at_us

    def _events(self, at_us, changes, lsns, last_commit_lsn, tx_id) -> list[tuple]:
        events = []
        for change, lsn in zip(changes, lsns):
            source = _source_json(change.topic.table, at_us, "false", last_commit_lsn, lsn, tx_id)
            head = (f'"before":{change.before},"after":{change.after},"source":{source},'
                    f'"transaction":null,"op":"{change.op}"')
            events.append((change.topic, change.key, change.op, head))
            self._count(change.topic, change.op)
        return events

    def _count(self, topic: _Topic, op: str) -> None:
        counts = self.counts[topic.table]
        counts[op] = counts.get(op, 0) + 1

    def _deliver(self, event: tuple, emitted_ns: int, file_time_us: int) -> None:
        """Land one event (and its tombstone after a delete) in its partition's open file."""
        topic, key, op, head = event
        partition = zlib.crc32(b"%d" % key) % KAFKA_PARTITIONS  # stands in for Kafka's murmur2(key)
        value = (f'{topic.value_prefix}{head},"ts_ms":{emitted_ns // 1_000_000},'
                 f'"ts_us":{emitted_ns // 1000},"ts_ns":{emitted_ns}}}}}')
        self.writer.add(topic, partition, key, value, file_time_us)
        if op == "d":
            self.writer.add(topic, partition, key, "null", file_time_us)
            self.tombstones += 1
        self.delivered_this_hour.append(event)

    def deliver_redeliveries(self, until_us: int) -> None:
        while self._redeliveries and self._redeliveries[0][0] <= until_us:
            due_us, _, event = heapq.heappop(self._redeliveries)
            self.clock_ns = max(self.clock_ns + _between(self.rng, 20_000, 400_000), due_us * 1000)
            self._deliver(event, self.clock_ns, due_us)
            self.redelivered += 1 + (event[2] == "d")

    def start_hour(self, hour_us: int, restart: bool) -> None:
        """Begin an hour; on ``restart``, replay everything delivered in the previous hour."""
        self.delivered_last_hour, self.delivered_this_hour = self.delivered_this_hour, []
        if not restart:
            return
        self.clock_ns = max(self.clock_ns, (hour_us + _between(self.rng, 5, 90) * US_PER_SECOND) * 1000)
        for event in self.delivered_last_hour:
            self.clock_ns += _between(self.rng, 20_000, 400_000)
            self._deliver(event, self.clock_ns, hour_us)
            self.redelivered += 1 + (event[2] == "d")


# --- The shop: who buys what, and when --------------------------------------------------------

_FIRST_NAMES = (
    "Sally", "George", "Edward", "Anne Marie", "Olivia", "Liam", "Emma", "Noah", "Ava", "Lucas",
    "Mia", "Mateo", "Sofia", "Hiro", "Yuki", "Aarav", "Priya", "Chen", "Mei", "Fatima", "Omar",
    "José", "Zoë", "Björn", "Chloé", "Łukasz", "Ingrid", "Kwame", "Amara", "Diego", "Lena",
    "Jonas", "Elif", "Emre", "Nadia", "Ivan", "Olga", "Seán", "Aoife", "Tariq", "Leila", "Ravi",
    "Ana", "João", "Marta", "Pablo", "Hannah", "Felix", "Clara", "Noor", "Samir", "Grace",
)
_LAST_NAMES = (
    "Thomas", "Bailey", "Walker", "Kretchmar", "Smith", "García", "Müller", "Rossi", "Nakamura",
    "Kim", "Singh", "Patel", "Nguyen", "Okafor", "Silva", "Kowalski", "Johansson", "O'Brien",
    "Dubois", "Novák", "Haddad", "Larsen", "Costa", "Yılmaz", "Ivanova", "Chen", "Wang", "Ahmed",
    "Hughes", "Murphy", "Fischer", "Jensen", "Moreau", "Ferreira", "Tanaka", "Sato", "Mendes",
    "Park", "Schmidt", "Byrne", "Andersen", "Lopez", "Martin", "Brown", "Wilson", "Taylor",
)
_EMAIL_DOMAINS = ("example.com", "example.org", "mail.example.net", "acme.com", "noanswer.org")
_ASCII_FOLD = str.maketrans({"Ł": "L", "ł": "l", "ı": "i", "ø": "o", "ß": "ss", "'": "", " ": ""})
_PRODUCT_KINDS = (
    ("scooter", "2-wheel scooter"), ("car battery", "12V car battery"), ("drill bits", "12-pack of drill bits"),
    ("hammer", "carpenter's hammer"), ("rocks", "box of assorted rocks"), ("jacket", "wind breaker"),
    ("spare tire", "24 inch spare tire"), ("headphones", "over-ear headphones"), ("backpack", "30 l backpack"),
    ("kettle", "electric kettle, 1.7 l"), ("desk lamp", "LED desk lamp"), ("yoga mat", "non-slip yoga mat"),
    ("coffee grinder", "burr coffee grinder"), ("tent", "2-person tent"), ("blender", "countertop blender"),
    ("garden hose", "25 m garden hose"), ("keyboard", "mechanical keyboard"), ("water bottle", "insulated bottle"),
    ("chess set", "wooden chess set"), ("frying pan", "28 cm frying pan"), ("sleeping bag", "3-season sleeping bag"),
    ("monitor arm", "gas-spring monitor arm"), ("toolbox", "steel toolbox"), ("rain boots", "rubber rain boots"),
)
_ADJECTIVES = ("small", "large", "compact", "deluxe", "classic", "pro", "lightweight", "heavy-duty",
               "eco", "travel", "vintage", "smart")
_INTERESTS = ("hiking gear", "kitchen tools", "power tools", "camping equipment", "home office furniture",
              "gardening supplies", "cycling accessories", "board games", "audio equipment")
_CITIES = ("Lisbon", "Osaka", "Toronto", "Nairobi", "Kraków", "Austin", "Melbourne", "Izmir", "Dublin")
_BIO_SENTENCES = (
    "{first} has been a customer since {year} and mostly shops for {interest}.",
    "Lives near {city} and prefers deliveries on weekday mornings.",
    "Left detailed reviews on several orders, most of them about {interest}.",
    "Asked support twice about bulk discounts for {interest}.",
    "Subscribed to the newsletter in {year}; opens most of the seasonal campaigns.",
    "Returned an item once because it arrived damaged; the replacement was shipped from {city}.",
    "Often buys gifts in December and has a saved list of {interest}.",
    "Prefers to pay by card and keeps two delivery addresses on file, one in {city}.",
)
_QUANTITY_CUMULATIVE = (45, 70, 85, 94)  # percent of orders with quantity <= 1, 2, 3, 4 (5 is the rest)
_MEAN_ORDERS_PER_CHECKOUT = 0.85 * 1 + 0.11 * 2 + 0.04 * 3
# Share of a day's orders per UTC hour: quiet nights, a lunch bump and an evening peak.
_HOUR_SHAPE = (0.3, 0.2, 0.15, 0.1, 0.1, 0.15, 0.3, 0.6, 0.9, 1.0, 1.1, 1.3,
               1.5, 1.3, 1.1, 1.1, 1.2, 1.5, 1.9, 2.2, 2.2, 1.8, 1.2, 0.6)
_HOUR_WEIGHTS = tuple(weight / sum(_HOUR_SHAPE) for weight in _HOUR_SHAPE)
_WEEKDAY_WEIGHTS = (0.95, 0.95, 0.95, 1.0, 1.1, 1.1, 0.95)  # Monday .. Sunday
_TOAST_JSON = _compact(TOAST_PLACEHOLDER)


def _biography_pool(size: int = 64) -> tuple[str, ...]:
    rng, pool = random.Random("biographies"), []
    for _ in range(size):
        sentences, target = [], rng.randrange(2100, 2800)
        while sum(len(sentence) + 1 for sentence in sentences) < target:
            sentences.append(rng.choice(_BIO_SENTENCES).format(
                first="{first}", year=rng.randrange(2009, 2026), interest=rng.choice(_INTERESTS),
                city=rng.choice(_CITIES)))
        pool.append(" ".join(sentences))
    return tuple(pool)


_BIOGRAPHIES = _biography_pool()


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


def _weight_of_hour(hour_us: int) -> float:
    """This hour's share of a day's orders."""
    when = datetime.fromtimestamp(hour_us // US_PER_SECOND, timezone.utc)
    return _HOUR_WEIGHTS[when.hour] * _WEEKDAY_WEIGHTS[when.weekday()]


class _Shop:
    """The simulated inventory database: its rows, and the transactions its business commits.

    Customers differ a lot in how often they buy (a log-normal propensity), so a few place
    dozens of orders a month and spend well over 1000 while most buy now and then.
    """

    def __init__(self, rng: random.Random, connector: _Connector, orders_per_day: float, customers_hint: int):
        self.rng, self.connector = rng, connector
        self.orders_per_day = orders_per_day
        self.signups_per_day = max(0.5, 0.01 * customers_hint)
        self.email_changes_per_day = max(0.5, 0.004 * customers_hint)
        self.customers: dict[int, list] = {}  # id -> [first name, last name, email, propensity]
        self.customer_ids: list[int] = []
        self.customer_cumulative: list[float] = []
        self.snapshot_customers = 0  # the first this-many customers existed at the snapshot
        self.emails: set[str] = set()
        self.products: list[list] = []  # [id, name, description, weight, price in cents, popularity]
        self.product_cumulative: list[float] = []
        self.stock: dict[int, int] = {}
        self.sold: dict[int, int] = {}  # units sold since the last stock sync, per product
        self.next_order_id, self.next_customer_id, self.orders_created = 10001, 1001, 0
        self.recent_orders: deque = deque(maxlen=500)
        self.plan_follow_ups = True
        self._actions: list = []
        self._sequence = itertools.count()

    # People and products

    def _unique_email(self, first: str, last: str, customer_id: int) -> str:
        def ascii_name(text: str) -> str:
            folded = unicodedata.normalize("NFKD", text.translate(_ASCII_FOLD))
            return "".join(c for c in folded if c.isascii() and c.isalnum()).lower()

        domain = self.rng.choice(_EMAIL_DOMAINS)
        email = f"{ascii_name(first)}.{ascii_name(last)}@{domain}"
        if email in self.emails:
            email = f"{ascii_name(first)}.{ascii_name(last)}{customer_id}@{domain}"
        self.emails.add(email)
        return email

    def _biography(self, first: str, last: str) -> str:
        # Longer than PostgreSQL's ~2 kB TOAST threshold, like the captured sample's. Drawn
        # from a fixed pool of texts, because composing 20k of them sentence by sentence is slow.
        text = _BIOGRAPHIES[_between(self.rng, 0, len(_BIOGRAPHIES))]
        return f"{first} {last}. " + text.replace("{first}", first)

    def _add_customer(self, customer_id: int, first: str, last: str, email: str, propensity: float) -> None:
        self.customers[customer_id] = [first, last, email, propensity]
        self.customer_ids.append(customer_id)
        self.customer_cumulative.append((self.customer_cumulative[-1] if self.customer_cumulative else 0) + propensity)

    def _new_customer(self) -> tuple[int, str]:
        rng, customer_id = self.rng, self.next_customer_id
        self.next_customer_id += 1
        first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
        email = self._unique_email(first, last, customer_id)
        self._add_customer(customer_id, first, last, email, round(rng.lognormvariate(0, 1.1), 6))
        return customer_id, _customer_json(customer_id, first, last, email, _compact(self._biography(first, last)))

    def _new_product(self, product_id: int, used_names: set[str]) -> list:
        rng = self.rng
        kind, description = rng.choice(_PRODUCT_KINDS)
        adjective = rng.choice(_ADJECTIVES)
        name = f"{adjective} {kind}"
        if name in used_names:
            name = f"{name} mk{product_id % 100}"
        used_names.add(name)
        cents = int(math.exp(rng.uniform(math.log(100), math.log(30_000))))  # 1.00 to 300.00, log-uniform
        product = [product_id, name, f"{adjective.capitalize()} {description}", round(rng.uniform(0.05, 25.0), 3),
                   cents, round(rng.lognormvariate(0, 0.8), 6)]
        self.products.append(product)
        self.product_cumulative.append((self.product_cumulative[-1] if self.product_cumulative else 0) + product[5])
        return product

    def _pick(self, cumulative: list[float], limit: int | None = None) -> int:
        limit = len(cumulative) if limit is None else limit
        return min(bisect.bisect(cumulative, self.rng.random() * cumulative[limit - 1], 0, limit), limit - 1)

    def _pick_customer(self, existing_at_snapshot: bool = False) -> int:
        return self.customer_ids[self._pick(self.customer_cumulative, self.snapshot_customers if existing_at_snapshot else None)]

    def _pick_product(self) -> list:
        return self.products[self._pick(self.product_cumulative)]

    def _quantity(self) -> int:
        return bisect.bisect_right(_QUANTITY_CUMULATIVE, self.rng.random() * 100) + 1

    def _new_order(self, at_us: int, purchaser: int) -> list:
        product = self._pick_product()
        row = [self.next_order_id, at_us // US_PER_DAY, purchaser, self._quantity(), product[0], product[4], True]
        self.next_order_id += 1
        return row

    # The snapshot

    def open_with_snapshot(self, at_us: int, customers: int, products: int) -> None:
        """Fill the tables as they stood when the connector started, and snapshot them."""
        customer_rows = [(CUSTOMERS, *self._new_customer()) for _ in range(customers)]
        self.snapshot_customers = customers
        used_names: set[str] = set()
        for product_id in range(101, 101 + products):
            self._new_product(product_id, used_names)
            self.stock[product_id] = _between(self.rng, 50, 600)
        # Orders placed in the fortnight before the connector started (only a snapshot sees them).
        history = sorted(at_us - _between(self.rng, US_PER_DAY, 14 * US_PER_DAY)
                         for _ in range(max(4, round(self.orders_per_day * 2))))
        order_rows = []
        for placed_us in history:
            row = self._new_order(placed_us, self._pick_customer())
            self.recent_orders.append(row)
            order_rows.append((ORDERS, row[ID], _order_json(row)))
        product_rows = [(PRODUCTS, product[0], _product_json(product)) for product in self.products]
        stock_rows = [(PRODUCTS_ON_HAND, product_id, _stock_json(product_id, quantity))
                      for product_id, quantity in self.stock.items()]
        self.connector.snapshot(at_us, customer_rows + order_rows + product_rows + stock_rows)

    # Scheduling

    def _schedule(self, at_us: int, action, argument=None) -> None:
        heapq.heappush(self._actions, (at_us, next(self._sequence), action, argument))

    def _arrivals(self, action, mean: float, hour_us: int, from_us: int, until_us: int) -> None:
        for _ in range(_poisson(self.rng, mean)):
            at_us = hour_us + _between(self.rng, 0, US_PER_HOUR)
            if from_us <= at_us < until_us:
                self._schedule(at_us, action)

    def plan_hour(self, hour_us: int, from_us: int, until_us: int) -> None:
        """Schedule the hour's spontaneous activity; follow-ups were scheduled by earlier orders."""
        checkouts = self.orders_per_day * _weight_of_hour(hour_us) / _MEAN_ORDERS_PER_CHECKOUT
        self._arrivals(self._checkout, checkouts, hour_us, from_us, until_us)
        self._arrivals(self._sign_up, self.signups_per_day / 24, hour_us, from_us, until_us)
        self._arrivals(self._change_email, self.email_changes_per_day / 24, hour_us, from_us, until_us)
        self._arrivals(self._correct_product, 0.3 / 24, hour_us, from_us, until_us)
        sync_us = hour_us + 58 * US_PER_MINUTE + _between(self.rng, 0, 90 * US_PER_SECOND)
        if from_us <= sync_us < until_us:
            self._schedule(sync_us, self._sync_stock)

    def run_until(self, until_us: int) -> None:
        while self._actions and self._actions[0][0] < until_us:
            at_us, _, action, argument = heapq.heappop(self._actions)
            action(at_us, argument)

    def _plan_follow_ups(self, row: list, at_us: int) -> None:
        rng = self.rng
        self.orders_created += 1
        if self.orders_created % REKEY_EVERY == REKEY_EVERY // 2:
            self._schedule(at_us + _between(rng, US_PER_HOUR, 12 * US_PER_HOUR), self._rekey, row)
        roll = rng.random()
        if roll < 0.05:
            self._schedule(at_us + _between(rng, 5 * US_PER_MINUTE, 6 * US_PER_HOUR), self._change_quantity, row)
        elif roll < 0.065:
            self._schedule(at_us + _between(rng, 10 * US_PER_MINUTE, US_PER_DAY), self._change_product, row)
        if rng.random() < 0.02:
            self._schedule(at_us + _between(rng, 15 * US_PER_MINUTE, 2 * US_PER_DAY), self._cancel, row)

    def _sell(self, product_id: int, quantity: int) -> None:
        self.sold[product_id] = self.sold.get(product_id, 0) + quantity

    # Transactions

    def _checkout(self, at_us: int, basket_size: int | None = None) -> None:
        """One to three orders of one customer in one transaction."""
        if basket_size is None:
            roll = self.rng.random()
            basket_size = 1 if roll < 0.85 else 2 if roll < 0.96 else 3
        purchaser = self._pick_customer()
        rows = [self._new_order(at_us, purchaser) for _ in range(basket_size)]
        at_us = self.connector.commit(at_us, [_Change(ORDERS, "c", row[ID], "null", _order_json(row)) for row in rows])
        for row in rows:
            self._sell(row[PRODUCT], row[QUANTITY])
            self.recent_orders.append(row)
            if self.plan_follow_ups:
                self._plan_follow_ups(row, at_us)

    def _change_quantity(self, at_us: int, row: list) -> None:
        if not row[ALIVE]:
            return
        before = _order_json(row)
        quantity = self.rng.choice([q for q in range(1, 6) if q != row[QUANTITY]])
        self._sell(row[PRODUCT], quantity - row[QUANTITY])
        row[QUANTITY] = quantity
        self.connector.commit(at_us, [_Change(ORDERS, "u", row[ID], before, _order_json(row))])

    def _change_product(self, at_us: int, row: list) -> None:
        """The customer swaps the ordered product: the order moves to another product and price."""
        product = self._pick_product()
        if not row[ALIVE] or product[0] == row[PRODUCT]:
            return
        before = _order_json(row)
        self._sell(row[PRODUCT], -row[QUANTITY])
        self._sell(product[0], row[QUANTITY])
        row[PRODUCT], row[CENTS] = product[0], product[4]
        self.connector.commit(at_us, [_Change(ORDERS, "u", row[ID], before, _order_json(row))])

    def _cancel(self, at_us: int, row: list) -> None:
        if not row[ALIVE]:
            return
        row[ALIVE] = False
        self._sell(row[PRODUCT], -row[QUANTITY])
        self.connector.commit(at_us, [_Change(ORDERS, "d", row[ID], _order_json(row), "null")])

    def _rekey(self, at_us: int, row: list) -> None:
        """UPDATE orders SET id = ...: Debezium emits d(old key) + tombstone + c(new key)."""
        if not row[ALIVE]:
            return
        before, old_id = _order_json(row), row[ID]
        row[ID] = self.next_order_id
        self.next_order_id += 1
        self.connector.commit(at_us, [_Change(ORDERS, "d", old_id, before, "null"),
                                      _Change(ORDERS, "c", row[ID], "null", _order_json(row))], shared_lsn=True)

    def _sign_up(self, at_us: int, _=None) -> None:
        customer_id, row = self._new_customer()
        self.connector.commit(at_us, [_Change(CUSTOMERS, "c", customer_id, "null", row)])

    def _change_email(self, at_us: int, _=None) -> None:
        """Only the email changes, so the TOASTed biography comes as Debezium's placeholder
        (REPLICA IDENTITY DEFAULT: no before image either)."""
        customer_id = self.rng.choice(self.customer_ids)
        customer = self.customers[customer_id]
        self.emails.discard(customer[2])
        customer[2] = self._unique_email(customer[0], customer[1], customer_id)
        after = _customer_json(customer_id, customer[0], customer[1], customer[2], _TOAST_JSON)
        self.connector.commit(at_us, [_Change(CUSTOMERS, "u", customer_id, "null", after)])

    def _correct_product(self, at_us: int, _=None) -> None:
        product = self.rng.choice(self.products)
        product[3] = round(product[3] * self.rng.uniform(0.9, 1.1), 3)
        self.connector.commit(at_us, [_Change(PRODUCTS, "u", product[0], "null", _product_json(product))])

    def _sync_stock(self, at_us: int, _=None) -> None:
        """The warehouse job: one transaction updating the stock of every product that moved."""
        changes = []
        for product_id, sold in self.sold.items():
            if sold == 0:
                continue
            stock = max(0, self.stock[product_id] - sold)
            if stock < 25:
                stock += _between(self.rng, 200, 800)  # restocked
            self.stock[product_id] = stock
            changes.append(_Change(PRODUCTS_ON_HAND, "u", product_id, "null", _stock_json(product_id, stock)))
        self.sold.clear()
        if changes:
            self.connector.commit(at_us, changes)

    # Batches after the generated history

    def live_batch(self, from_us: int, until_us: int, orders: int | None) -> None:
        """A minute or so of business committed just now."""
        rng = self.rng
        self.plan_follow_ups = False  # their time would fall after this batch
        if orders is None:
            minutes = (until_us - from_us) / US_PER_MINUTE
            mean = self.orders_per_day * _weight_of_hour(until_us - until_us % US_PER_HOUR) / 60 * minutes
            checkouts, basket_size = max(1, _poisson(rng, mean / _MEAN_ORDERS_PER_CHECKOUT)), None
        else:
            checkouts, basket_size = orders, 1  # exactly the orders asked for
        for _ in range(checkouts):
            self._schedule(from_us + _between(rng, 0, until_us - from_us), self._checkout, basket_size)
        alive = [row for row in self.recent_orders if row[ALIVE]]
        for action, probability in ((self._change_quantity, 0.6), (self._change_product, 0.1), (self._cancel, 0.15)):
            if alive and rng.random() < probability:
                self._schedule(from_us + _between(rng, 0, until_us - from_us), action, rng.choice(alive))
        if rng.random() < 0.2:
            self._schedule(from_us + _between(rng, 0, until_us - from_us), self._change_email)
        self._schedule(until_us, self._sync_stock)
        self.run_until(until_us + 1)

    def late_batch(self, from_us: int, until_us: int, orders: int) -> None:
        """New orders committed in the past, by customers who already existed then."""
        for at_us in sorted(from_us + _between(self.rng, 0, max(1, until_us - from_us)) for _ in range(orders)):
            row = self._new_order(at_us, self._pick_customer(existing_at_snapshot=True))
            self.connector.commit_late(at_us, [_Change(ORDERS, "c", row[ID], "null", _order_json(row))])

    # State between runs

    def state(self) -> dict:
        return {
            "orders_per_day": self.orders_per_day,
            "signups_per_day": self.signups_per_day,
            "email_changes_per_day": self.email_changes_per_day,
            "next_order_id": self.next_order_id,
            "next_customer_id": self.next_customer_id,
            "orders_created": self.orders_created,
            "snapshot_customers": self.snapshot_customers,
            "customers": [[customer_id, *self.customers[customer_id]] for customer_id in self.customer_ids],
            "products": self.products,
            "stock": [[product_id, quantity] for product_id, quantity in self.stock.items()],
            "recent_orders": [row[:ALIVE] for row in self.recent_orders if row[ALIVE]],
        }

    @classmethod
    def from_state(cls, rng: random.Random, connector: _Connector, state: dict) -> "_Shop":
        shop = cls(rng, connector, state["orders_per_day"], 0)
        shop.signups_per_day = state["signups_per_day"]
        shop.email_changes_per_day = state["email_changes_per_day"]
        shop.next_order_id, shop.next_customer_id = state["next_order_id"], state["next_customer_id"]
        shop.orders_created, shop.snapshot_customers = state["orders_created"], state["snapshot_customers"]
        for customer_id, first, last, email, propensity in state["customers"]:
            shop._add_customer(customer_id, first, last, email, propensity)
            shop.emails.add(email)
        for product in state["products"]:
            shop.products.append(product)
            shop.product_cumulative.append((shop.product_cumulative[-1] if shop.product_cumulative else 0) + product[5])
        shop.stock = {product_id: quantity for product_id, quantity in state["stock"]}
        shop.recent_orders.extend([*row, True] for row in state["recent_orders"])
        return shop


# --- Public API -------------------------------------------------------------------------------

@dataclass(frozen=True)
class GenerationSummary:
    """What ``generate_landing_zone`` wrote."""

    root: Path
    start: datetime  # the snapshot's commit time
    end: datetime  # the last commit
    events: dict[str, dict[str, int]]  # change events per table and op, each counted once
    tombstones: int
    redelivered: int  # extra deliveries of records already landed (duplicates), tombstones included
    files: int  # value files; each has a .keys sibling
    gzipped_files: int
    seconds: float = field(default=0.0, compare=False)

    @property
    def total_events(self) -> int:
        return sum(sum(ops.values()) for ops in self.events.values())

    def describe(self) -> str:
        lines = [
            f"{self.total_events:,} change events from {self.start:%Y-%m-%d %H:%M} to {self.end:%Y-%m-%d %H:%M} UTC "
            f"in {self.files:,} files ({self.gzipped_files:,} gzipped) under {self.root} ({self.seconds:.1f} s)",
        ]
        for table, ops in self.events.items():
            lines.append(f"  {table:<17} " + "  ".join(f"{op}={count:,}" for op, count in sorted(ops.items())))
        lines.append(f"  tombstones={self.tombstones:,}  duplicate deliveries={self.redelivered:,}")
        return "\n".join(lines)


def _to_us(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return (moment - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def _from_us(micros: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=micros)


def has_landing_zone(root: Path | str) -> bool:
    """True when ``root`` already holds landed files or this generator's state."""
    root = Path(root)
    if (root / STATE_FILE).exists():
        return True
    topics = root / "topics"
    return topics.is_dir() and any(path.is_file() for path in topics.rglob("*"))


def _save_state(root: Path, state: dict, index: _CommitIndex) -> None:
    index.save(root / COMMIT_INDEX_FILE)
    temporary = root / f".{STATE_FILE}.tmp"
    temporary.write_text(json.dumps(state, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    os.replace(temporary, root / STATE_FILE)


def generate_landing_zone(
    root: Path | str,
    *,
    customers: int = 200,
    products: int = 50,
    weeks: float = 4,
    orders_per_day: float = 60,
    seed: int = 7,
    end: datetime | None = None,
    flush_size: int = FLUSH_SIZE,
    rotate_minutes: int = 60,
) -> GenerationSummary:
    """Write ``weeks`` of the shop's change events, ending at ``end`` (default: now, UTC).

    ``orders_per_day`` sets the scale: 36000 with 4 weeks gives about a million order events.
    ``rotate_minutes`` is how much commit time one file covers at most, ``flush_size`` how
    many records. ``root`` must not hold a landing zone yet.
    """
    started = time.perf_counter()
    root = Path(root)
    if has_landing_zone(root):
        raise FileExistsError(f"{root} already holds a landing zone; use append_live_batch to add to it")
    if customers < 1 or products < 2 or weeks <= 0 or orders_per_day < 0:
        raise ValueError("need at least 1 customer, 2 products, a positive number of weeks and orders_per_day >= 0")
    root.mkdir(parents=True, exist_ok=True)
    end_us = _to_us(end or datetime.now(timezone.utc))
    start_us = end_us - int(weeks * 7 * US_PER_DAY)

    rng = random.Random(seed)
    index = _CommitIndex()
    writer = _LandingWriter(root, {topic.name: [0] * KAFKA_PARTITIONS for topic in TOPICS},
                            flush_size, rotate_minutes * US_PER_MINUTE)
    connector = _Connector(rng, writer, index)
    shop = _Shop(rng, connector, orders_per_day, customers)
    shop.open_with_snapshot(start_us, customers, products)

    # One connector restart, a little past the middle, replays a whole (busy enough) hour.
    restart_from_us, restarted = start_us + (end_us - start_us) * 11 // 20, False
    hour_us = start_us - start_us % US_PER_HOUR
    while hour_us < end_us:
        next_hour_us = hour_us + US_PER_HOUR
        connector.deliver_redeliveries(hour_us)
        restart = not restarted and hour_us >= restart_from_us and len(connector.delivered_this_hour) >= 3
        restarted = restarted or restart
        connector.start_hour(hour_us, restart)
        shop.plan_hour(hour_us, start_us + 30 * US_PER_SECOND, min(next_hour_us, end_us))
        shop.run_until(min(next_hour_us, end_us))
        hour_us = next_hour_us
    connector.deliver_redeliveries(end_us)
    writer.close()

    _save_state(root, {
        "format": 1, "seed": seed, "batches": 0, "flush_size": flush_size, "rotate_minutes": rotate_minutes,
        # The first commit: scripts/dev starts the hourly partitions at its day.
        "first_commit": _from_us(start_us).isoformat(),
        "connector": connector.state(), "offsets": writer.next_offset, "shop": shop.state(),
    }, index)
    return GenerationSummary(
        root=root, start=_from_us(start_us), end=_from_us(connector.last_commit_us),
        events={table: dict(ops) for table, ops in connector.counts.items()},
        tombstones=connector.tombstones, redelivered=connector.redelivered,
        files=len(writer.written), gzipped_files=writer.gzipped, seconds=time.perf_counter() - started,
    )


def append_live_batch(
    root: Path | str,
    *,
    seed: int | None = None,
    now: datetime | None = None,
    commit_time: datetime | None = None,
    window_seconds: float = 60,
    orders: int | None = None,
) -> list[Path]:
    """Land one more batch of the same database's changes now; returns the value files written.

    By default the batch holds what was committed in the last ``window_seconds`` before
    ``now``: new orders, a few order updates or cancellations, now and then an email change,
    and a stock sync. It continues the txIds, LSNs and Kafka offsets of everything already
    landed.

    With ``commit_time`` earlier than the newest commit, this is a *late* batch: new orders
    committed in the window before ``commit_time``, hours or days ago, whose LSNs fit between
    those of their neighbours. They land now, in new files (new offsets) of the usual
    ``partition=<n>`` folders. The DefaultPartitioner has no time folders, so only the commit
    times say which hours they belong to.
    """
    root = Path(root)
    try:
        state = json.loads((root / STATE_FILE).read_text(encoding="utf-8"))
        index = _CommitIndex.load(root / COMMIT_INDEX_FILE)
    except FileNotFoundError:
        raise FileNotFoundError(f"{root} has no generated landing zone ({STATE_FILE}); run generate_landing_zone first") from None
    now_us = _to_us(now or datetime.now(timezone.utc))
    target_us = _to_us(commit_time) if commit_time is not None else now_us
    window_us = max(US_PER_SECOND, int(window_seconds * US_PER_SECOND))
    state["batches"] += 1
    rng = random.Random(f"{state['seed'] if seed is None else seed}/batch/{state['batches']}")
    writer = _LandingWriter(root, state["offsets"], state["flush_size"], state["rotate_minutes"] * US_PER_MINUTE)
    connector = _Connector(rng, writer, index, state["connector"])
    connector.redelivery_rate = 0  # a repeat would be due after this batch
    shop = _Shop.from_state(rng, connector, state["shop"])

    last_commit_us = connector.last_commit_us
    if target_us < last_commit_us:
        late_orders = orders if orders is not None else max(1, _poisson(rng, 3))
        shop.late_batch(max(target_us - window_us, index.commit_us[0] + 1), target_us, late_orders)
    else:
        # Commits end a moment before now: the connector needs that long to read them.
        until_us = max(target_us - 2 * US_PER_SECOND, last_commit_us + US_PER_SECOND)
        shop.live_batch(max(until_us - window_us, last_commit_us + 1), until_us, orders)
    written = writer.close()

    state.update(connector=connector.state(), offsets=writer.next_offset, shop=shop.state())
    _save_state(root, state, index)
    return written


def append_late_batch(
    root: Path | str, *, age: timedelta, now: datetime | None = None, seed: int | None = None, orders: int | None = None,
) -> list[Path]:
    """Land now a batch of orders committed ``age`` ago (see ``append_live_batch``)."""
    now = now or datetime.now(timezone.utc)
    return append_live_batch(root, seed=seed, now=now, commit_time=now - age, orders=orders)
