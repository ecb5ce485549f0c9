"""The online store: each entity's latest feature values in Redis, written so they never regress.

Key layout (docs/online-store.md)::

    fp:<project>:<view>:<entity key>   string: the entity's latest stored row, packed (below)
    fp:<project>:<view>:_synced        string: <value format>␟<synced_through µs>␟<code version>
    fp:<project>:<view>:_meta          hash: layout:<id> (the feature list of each packed layout)

A packed row is its fields joined by the ASCII unit separator (``\\x1f``)::

    <valid_from µs>␟<layout id>␟<null mask>␟<value 1>␟…␟<value n>      a live row
    <valid_from µs>␟-                                                  a tombstone (deleted entity)

``layout id`` names the ordered list of stored features (and types) the values follow, so a
value written before a definition changed is still read by feature name. The null mask
has one character per feature, ``1`` for null. String values escape ``\\x1e`` and ``\\x1f``
(as ``\\x1e0`` and ``\\x1e1``); numbers, decimals, booleans (``0``/``1``) and timestamps (µs)
never contain them.

One string per entity rather than a hash of fields: a write is a single ``SET`` and a read of
many entities a single ``MGET`` — the hash layout's per-field work was most of both (bench/RESULTS.md).
The synced-through mark is a plain string too, so that one ``MGET`` fetches it with the rows
(a read is one command, not a pipeline of two).

A write applies only when its ``valid_from`` is at or after the stored one — a recomputed
partition (a late correction, same valid-from) overwrites, an older partition re-run by a
backfill does not. The compare-and-write runs inside Redis as one Lua script per batch of
keys, so concurrent writers cannot interleave between the compare and the write.
"""

from __future__ import annotations

import decimal
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from concurrent.futures import ThreadPoolExecutor
from itertools import chain
from typing import Callable, Iterable, Iterator, NamedTuple, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.cluster import RedisCluster

from feature_platform.expressions import TIMESTAMP, DType
from feature_platform.feature_view import FeatureView

META = "_meta"
SYNCED = "_synced"
T = TypeVar("T")
SEPARATOR = b"\x1f"
ESCAPE = "\x1e"
TOMBSTONE = b"-"
# Bumped when the packed row changes shape. A view whose meta hash names another format (or
# none: the hash-per-entity layout of earlier releases) counts as never synced: readers treat
# it as stale and the next sync rewrites every entity from the first partition.
VALUE_FORMAT = "packed-1"

# KEYS: entity keys (at most MAX_KEYS_PER_CALL); ARGV[1]: expiry in ms of every row of this
# call (0: none); ARGV[1 + i]: the packed row of KEYS[i]. Returns how many rows were written.
# One MGET reads what is stored and one MSET writes the rows that do not regress: a GET and a
# SET per key cost Redis 35% more (bench/RESULTS.md). MGET answers nil for a key left in an
# older layout (a hash), and MSET/SET replace it. Rows with an expiry (tombstones, and live
# rows when the caller asks) need SET ... PX each.
_WRITE_LATEST = """
local expire_ms = tonumber(ARGV[1])
local stored = redis.call('MGET', unpack(KEYS))
local chosen, n = {}, 0
for i, key in ipairs(KEYS) do
  local row, old = ARGV[1 + i], stored[i]
  if not old or tonumber(string.sub(old, 1, string.find(old, '\\31', 1, true) - 1))
                 <= tonumber(string.sub(row, 1, string.find(row, '\\31', 1, true) - 1)) then
    chosen[n + 1], chosen[n + 2], n = key, row, n + 2
  end
end
if n > 0 then
  if expire_ms == 0 then
    redis.call('MSET', unpack(chosen, 1, n))
  else
    for j = 1, n, 2 do redis.call('SET', chosen[j], chosen[j + 1], 'PX', expire_ms) end
  end
end
return n / 2
"""
# Lua's unpack() takes at most ~8,000 values: MSET gets two per key.
MAX_KEYS_PER_CALL = 3_000

# KEYS[1] the synced key; ARGV: value format, synced_through (µs), code_version. Only ever
# moves forward, except that a sync in a new value format replaces the mark of an older one.
# (One key only: on Redis Cluster a script's keys must share a slot.)
_ADVANCE_SYNCED_THROUGH = """
local stored = redis.call('GET', KEYS[1])
local moves = true
if stored then
  local cut = string.find(stored, '\\31', 1, true)
  if cut and string.sub(stored, 1, cut - 1) == ARGV[1] then
    moves = tonumber(string.match(stored, '^[^\\31]*\\31([0-9]+)')) < tonumber(ARGV[2])
  end
end
if moves then
  redis.call('SET', KEYS[1], ARGV[1] .. '\\31' .. ARGV[2] .. '\\31' .. ARGV[3])
  return 1
end
return 0
"""


def to_micros(moment: datetime) -> int:
    delta = moment.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=value)


@dataclass(frozen=True)
class ValueLayout:
    """The ordered stored features (with types) a packed row holds; ``id`` names it in Redis."""

    names: tuple[str, ...]
    dtypes: tuple[DType, ...]

    @classmethod
    def of(cls, view: FeatureView) -> "ValueLayout":
        stored = view.stored_dtypes()
        return cls(tuple(stored), tuple(stored.values()))

    @property
    def id(self) -> str:
        return hashlib.sha1(self.describe().encode()).hexdigest()[:10]

    def describe(self) -> str:
        return json.dumps([[name, str(dtype)] for name, dtype in zip(self.names, self.dtypes)])

    @staticmethod
    def positions_in(described: str, wanted: dict[str, DType]) -> dict[str, int]:
        """Where each wanted feature sits in another layout (by its description), if there
        with the same type; a feature missing there or retyped since reads as null."""
        found = {name: (position, dtype) for position, (name, dtype) in enumerate(json.loads(described))}
        return {name: found[name][0] for name, dtype in wanted.items()
                if name in found and found[name][1] == str(dtype)}


def encode_arrow(array: pa.ChunkedArray | pa.Array, dtype: DType) -> pa.ChunkedArray | pa.Array:
    """One column of feature values as the text Redis stores, as an Arrow string array (null for null).

    Floats are written in their shortest exact round-trip form (Arrow's formatter: ``0.1``,
    ``1``, ``1e+300``); ``float()`` reads every one of them back bit for bit.
    """
    if dtype.kind == "timestamp":
        return pc.cast(pc.cast(pc.cast(array, pa.timestamp("us", tz="UTC")), pa.int64()), pa.string())
    if dtype.kind == "bool":
        return pc.if_else(array, "1", "0")
    text = pc.cast(array, pa.string())
    if dtype.kind == "string":  # the only kind whose text can hold the separators
        text = pc.replace_substring(pc.replace_substring(text, ESCAPE, ESCAPE + "0"), "\x1f", ESCAPE + "1")
    return text


def value_decoder(dtype: DType, decimals: str = "float") -> Callable[[bytes], object]:
    """How one stored value (not null) of this type comes back to Python: chosen once per
    column, so reading 100 entities × 10 features does no per-value type dispatch."""
    kind = dtype.kind
    if kind == "float" or (kind == "decimal" and decimals == "float"):
        return float
    if kind == "int":
        return int
    if kind == "decimal":
        return lambda raw: decimal.Decimal(raw.decode())
    if kind == "bool":
        return lambda raw: raw == b"1"
    if kind == "timestamp":
        return lambda raw: from_micros(int(raw))
    return _decode_text


def _decode_text(raw: bytes) -> str:
    text = raw.decode()
    if ESCAPE in text:  # one pass each, in this order, undoes encode_arrow's escaping exactly
        text = text.replace(ESCAPE + "1", "\x1f").replace(ESCAPE + "0", ESCAPE)
    return text


def pack_rows(batch: pa.RecordBatch, layout: ValueLayout) -> pa.Array:
    """Each history row of ``batch`` as its packed Redis value (binary), built column-wise by Arrow."""
    valid_from = encode_arrow(batch.column("valid_from"), TIMESTAMP)
    encoded = [encode_arrow(batch.column(name), dtype) for name, dtype in zip(layout.names, layout.dtypes)]
    if any(c.null_count for c in encoded):
        null_mask = pc.binary_join_element_wise(*[pc.if_else(pc.is_null(c), "1", "0") for c in encoded], "")
        encoded = [pc.fill_null(c, "") if c.null_count else c for c in encoded]
    else:  # the usual batch: no null anywhere, the same mask on every row
        null_mask = "0" * len(encoded)
    separator = SEPARATOR.decode()
    live = pc.binary_join_element_wise(valid_from, layout.id, null_mask, *encoded, separator)
    if "_deleted" in batch.schema.names:
        tombstone = pc.binary_join_element_wise(valid_from, TOMBSTONE.decode(), separator)
        live = pc.if_else(pc.fill_null(batch.column("_deleted"), False), tombstone, live)
    return pc.cast(live, pa.binary())


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """Yield ``items`` while a worker thread already makes the next one.

    Reading a batch (DuckDB) and packing it (Arrow) run outside the GIL, so they proceed
    while this thread waits for Redis to answer the previous batch's writes.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="online-write-ahead") as worker:
        pending = worker.submit(next, items, _DONE)
        while (item := pending.result()) is not _DONE:
            pending = worker.submit(next, items, _DONE)
            yield item


_DONE = object()


class StoredRow(NamedTuple):
    """What a read found for one entity: its valid-from (µs) and raw values, or a tombstone."""

    valid_from: int
    values: list[bytes | None] | None  # per requested feature; None for a tombstone (deleted)


class ReadAnswer(NamedTuple):
    """One view's part of a read: a StoredRow (or None: never written) per requested key."""

    rows: list[StoredRow | None]
    synced_through: datetime | None


@dataclass
class WriteSummary:
    rows: int = 0
    applied: int = 0

    @property
    def skipped_older(self) -> int:
        return self.rows - self.applied


class RedisOnlineStore:
    def __init__(self, client: redis.Redis | RedisCluster, project: str):
        self.client = client
        self.project = project
        self._write = client.register_script(_WRITE_LATEST)
        self._advance = client.register_script(_ADVANCE_SYNCED_THROUGH)
        self.is_cluster = isinstance(client, RedisCluster)
        self._layouts: dict[tuple[str, bytes], str] = {}  # (view, layout id) -> its description
        # Per (view object, requested features): the view's own layout id and where each
        # feature sits in it. Reads are hot; working these out costs more than Redis's reply.
        self._read_plans: dict[tuple[int, tuple[str, ...]], tuple] = {}

    def key(self, view: FeatureView | str, entity_key) -> str:
        name = view if isinstance(view, str) else view.name
        return f"fp:{self.project}:{name}:{entity_key}"

    def meta_key(self, view: FeatureView | str) -> str:
        return self.key(view, META)

    def synced_key(self, view: FeatureView | str) -> str:
        return self.key(view, SYNCED)

    # -- writing -------------------------------------------------------------------------

    def write_latest(self, view: FeatureView, batches: Iterable[pa.RecordBatch], expire: timedelta | None = None,
                     keys_per_call: int = 1000, fresh: bool = False) -> WriteSummary:
        """Write each entity's latest row (batches of history rows, one row per entity).

        ``fresh``: the view has no synced-through mark yet (never synced, or synced in an older
        format), so most of its keys are probably absent: each call is first tried as one
        ``MSETNX``, and only a call that finds a key already there runs the compare-and-write
        script (on one Redis; a cluster always runs the script). Correct either way.
        """
        if not 0 < keys_per_call <= MAX_KEYS_PER_CALL:
            raise ValueError(f"keys_per_call must be 1..{MAX_KEYS_PER_CALL}, not {keys_per_call}")
        layout = ValueLayout.of(view)
        # Before any row in this layout exists, say what it holds: a reader meeting a layout
        # id other than its own definition's looks the feature list up here.
        self.client.hset(self.meta_key(view), f"layout:{layout.id}", layout.describe())
        live_ms = int(expire.total_seconds() * 1000) if expire else 0
        # A tombstone outlives any backfill worth worrying about, then goes (docs/online-store.md).
        tombstone_ms = int(max(view.ttl * 4, timedelta(days=7)).total_seconds() * 1000)
        prefix = self.key(view, "")

        def prepared(batch: pa.RecordBatch) -> list[tuple[int, list[bytes], list[bytes]]]:
            """(expiry ms, keys, packed rows) of the batch's live rows, then of its tombstones."""
            keys = pc.binary_join_element_wise(prefix, pc.cast(batch.column(view.entity.join_key), pa.string()), "")
            keys, rows = pc.cast(keys, pa.binary()), pack_rows(batch, layout)
            if "_deleted" not in batch.schema.names:
                return [(live_ms, keys.to_pylist(), rows.to_pylist())]
            deleted = pc.fill_null(batch.column("_deleted"), False)
            alive = pc.invert(deleted)
            return [(live_ms, keys.filter(alive).to_pylist(), rows.filter(alive).to_pylist()),
                    (tombstone_ms, keys.filter(deleted).to_pylist(), rows.filter(deleted).to_pylist())]

        summary = WriteSummary()
        for groups in read_ahead(prepared(batch) for batch in batches if batch.num_rows):
            summary.rows += sum(len(keys) for _, keys, _ in groups)
            summary.applied += self._call_in_groups(groups, keys_per_call, fresh)
        return summary

    def _call_in_groups(self, groups: list[tuple[int, list[bytes], list[bytes]]], keys_per_call: int,
                        fresh: bool = False) -> int:
        """Run the write script over (expiry, keys, rows) in calls of at most ``keys_per_call``
        keys, pipelined; on a cluster, the keys of one call share a slot. ``fresh``: see
        ``write_latest``."""
        pipeline = self.client.pipeline(transaction=False)
        if self.is_cluster:
            for expire_ms, keys, rows in groups:
                by_slot: dict[int, list[int]] = {}
                for position, key in enumerate(keys):
                    by_slot.setdefault(self.client.keyslot(key), []).append(position)
                for positions in by_slot.values():
                    for i in range(0, len(positions), keys_per_call):
                        chosen = positions[i:i + keys_per_call]
                        # redis-py's ClusterPipeline refuses EVALSHA (a Script object cannot be
                        # pipelined on a cluster: RedisClusterException) and stubs out .eval(); a raw
                        # EVAL is queued like any command and routed by the keys' shared slot.
                        pipeline.execute_command("EVAL", _WRITE_LATEST, len(chosen), *[keys[p] for p in chosen],
                                                 expire_ms, *[rows[p] for p in chosen])
            return sum(int(result) for result in pipeline.execute())
        calls = [(expire_ms, keys[i:i + keys_per_call], rows[i:i + keys_per_call])
                 for expire_ms, keys, rows in groups for i in range(0, len(keys), keys_per_call)]
        written = 0
        if fresh:
            # MSETNX writes a whole call when none of its keys exists, and nothing otherwise:
            # it can never overwrite, so never regress, and costs Redis less than half the
            # script. A call it refuses (some key is there) goes to the script, which decides
            # key by key. Only rows without an expiry: MSETNX cannot set one.
            tried = [call for call in calls if call[0] == 0]
            for _, keys, rows in tried:
                pipeline.execute_command("MSETNX", *chain.from_iterable(zip(keys, rows)))
            outcomes = pipeline.execute()
            written = sum(len(keys) for (_, keys, _), done in zip(tried, outcomes) if done)
            calls = [call for call, done in zip(tried, outcomes) if not done] + [c for c in calls if c[0] != 0]
        for expire_ms, keys, rows in calls:
            self._write(keys=keys, args=[expire_ms, *rows], client=pipeline)
        return written + sum(int(result) for result in pipeline.execute())

    def advance_synced_through(self, view: FeatureView, moment: datetime) -> bool:
        return bool(self._advance(keys=[self.synced_key(view)],
                                  args=[VALUE_FORMAT, str(to_micros(moment)), view.code_version()]))

    # -- reading -------------------------------------------------------------------------

    def synced_through(self, view: FeatureView | str) -> datetime | None:
        """How far the view's values in Redis are known; None if never synced in this format."""
        mark = _synced_mark(self.client.get(self.synced_key(view)))
        return None if mark is None else mark.through

    def synced_code_version(self, view: FeatureView | str) -> str | None:
        """The code version of the definition whose sync last moved synced_through."""
        mark = _synced_mark(self.client.get(self.synced_key(view)))
        return None if mark is None else mark.code_version

    def read_rows(self, requests: list[tuple[FeatureView, list, list[str]]]) -> list[ReadAnswer]:
        """One round trip: for each (view, entity keys, stored features), what Redis holds for
        each key, and the view's synced-through time.

        On one Redis that is a single ``MGET`` of every view's synced key and entity keys; on a
        cluster, whose ``MGET`` keys must share a slot, a pipeline of ``GET``s that redis-py
        groups by node.
        """
        keys: list[str] = []
        for view, entity_keys, _features in requests:
            keys.append(self.synced_key(view))
            keys.extend(self.key(view, entity_key) for entity_key in entity_keys)
        if self.is_cluster:
            pipeline = self.client.pipeline(transaction=False)
            for key in keys:
                pipeline.get(key)
            raws = pipeline.execute()
        else:
            raws = self.client.mget(keys)
        answers = []
        position = 0
        for view, entity_keys, features in requests:
            mark = _synced_mark(raws[position])
            rows = raws[position + 1:position + 1 + len(entity_keys)]
            position += 1 + len(entity_keys)
            answers.append(ReadAnswer(self._unpack(view, rows, features), None if mark is None else mark.through))
        return answers

    def _read_plan(self, view: FeatureView, features: list[str]) -> tuple[bytes, list[int], dict[str, DType]]:
        key = (id(view), tuple(features))
        plan = self._read_plans.get(key)
        if plan is None or plan[0] is not view:  # (an id can be reused once a view is gone)
            layout = ValueLayout.of(view)
            wanted = {name: dtype for name, dtype in zip(layout.names, layout.dtypes) if name in features}
            plan = self._read_plans[key] = (view, layout.id.encode(), [layout.names.index(n) for n in features], wanted)
        return plan[1:]

    def _unpack(self, view: FeatureView, raws: list[bytes | None], features: list[str]) -> list[StoredRow | None]:
        own_id, own_positions, wanted = self._read_plan(view, features)
        rows: list[StoredRow | None] = []
        for raw in raws:
            if raw is None:
                rows.append(None)
                continue
            fields = raw.split(SEPARATOR)
            if fields[1] == TOMBSTONE:
                rows.append(StoredRow(int(fields[0]), None))
                continue
            if fields[1] == own_id:
                positions = own_positions
            else:  # written by an earlier definition of the view: read its features by name
                found = self._positions(view, fields[1], wanted)
                positions = [found.get(name) for name in features]
            mask = fields[2]
            rows.append(StoredRow(int(fields[0]), [
                None if position is None or mask[position] == 49 else fields[3 + position]  # 49: b"1"
                for position in positions]))
        return rows

    def _positions(self, view: FeatureView, layout_id: bytes, wanted: dict[str, DType]) -> dict[str, int]:
        described = self._layouts.get((view.name, layout_id))
        if described is None:
            raw = self.client.hget(self.meta_key(view), f"layout:{layout_id.decode()}")
            if raw is None:
                raise RuntimeError(f"Redis holds {view.name} values in layout {layout_id.decode()}, which "
                                   f"{self.meta_key(view)} does not describe: resync the view (docs/operations.md)")
            described = self._layouts[(view.name, layout_id)] = raw.decode()
        return ValueLayout.positions_in(described, wanted)

    def stored_fields(self, view: FeatureView, entity_key) -> dict[str, str]:
        """One entity's stored row as text by field (``_valid_from``, ``_deleted``, features;
        a null feature has no field), {} if never written: for people and tests."""
        raw = self.client.get(self.key(view, entity_key))
        if raw is None:
            return {}
        layout = ValueLayout.of(view)
        [row] = self._unpack(view, [raw], list(layout.names))
        if row.values is None:
            return {"_valid_from": str(row.valid_from), "_deleted": "1"}
        fields = {"_valid_from": str(row.valid_from)}
        for name, dtype, value in zip(layout.names, layout.dtypes, row.values):
            if value is not None:
                fields[name] = _decode_text(value) if dtype.kind == "string" else value.decode()
        return fields

    def entity_keys(self, view: FeatureView | str) -> Iterator[str]:
        """Every stored entity key of a view (SCAN, for checks and tests)."""
        prefix = self.key(view, "")
        for raw in self.client.scan_iter(match=f"{prefix}*", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            entity_key = key[len(prefix):]
            if entity_key not in (META, SYNCED):
                yield entity_key


_FORMAT_PREFIX = VALUE_FORMAT.encode() + SEPARATOR


class SyncedMark(NamedTuple):
    """A view's synced key, parsed: how far its sync has reached, and by which definition."""

    through: datetime
    code_version: str


def _synced_mark(raw: bytes | None) -> SyncedMark | None:
    """The synced key's value parsed; None if absent or in another format (never synced, to readers)."""
    if raw is None or not raw.startswith(_FORMAT_PREFIX):
        return None
    _format, micros, code_version = raw.split(SEPARATOR, 2)
    return SyncedMark(from_micros(int(micros)), code_version.decode())
