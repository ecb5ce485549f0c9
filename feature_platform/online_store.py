"""The online store: each entity's latest feature values in Redis, written so they never regress.

Key layout (docs/online-store.md)::

    fp:<project>:<view>:<entity key>   hash: one field per stored feature, plus _valid_from
                                        (µs since the epoch); a null feature has no field
    fp:<project>:<view>:_meta          hash: synced_through (µs), code_version

A write applies only when its ``_valid_from`` is at or after the stored one — a recomputed
partition (a late correction, same valid-from) overwrites, an older partition re-run by a
backfill does not. The compare-and-write runs inside Redis as one Lua script per batch of
keys, so concurrent writers cannot interleave between the compare and the write.
"""

from __future__ import annotations

import decimal
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import redis
from redis.cluster import RedisCluster

from feature_platform.expressions import DType
from feature_platform.feature_view import FeatureView

VALID_FROM = "_valid_from"
DELETED = "_deleted"
META = "_meta"

# ARGV: n, field names..., then per key: valid_from, deleted, expire_ms, null mask, values...
_WRITE_LATEST = """
local n = tonumber(ARGV[1])
local stride = n + 4
local applied = 0
for i, key in ipairs(KEYS) do
  local at = 1 + n + (i - 1) * stride
  local valid_from, deleted, expire_ms, nulls = ARGV[at + 1], ARGV[at + 2], tonumber(ARGV[at + 3]), ARGV[at + 4]
  local stored = redis.call('HGET', key, '_valid_from')
  if (not stored) or tonumber(stored) <= tonumber(valid_from) then
    if deleted == '1' then
      redis.call('DEL', key)
      redis.call('HSET', key, '_valid_from', valid_from, '_deleted', '1')
    else
      local sets, drops = {'_valid_from', valid_from}, {'_deleted'}
      for j = 1, n do
        if string.sub(nulls, j, j) == '1' then
          drops[#drops + 1] = ARGV[1 + j]
        else
          sets[#sets + 1] = ARGV[1 + j]
          sets[#sets + 1] = ARGV[at + 4 + j]
        end
      end
      redis.call('HSET', key, unpack(sets))
      -- A key written for the first time has no old fields to drop and no expiry to clear.
      if stored then redis.call('HDEL', key, unpack(drops)) end
    end
    if expire_ms > 0 then redis.call('PEXPIRE', key, expire_ms) elseif stored then redis.call('PERSIST', key) end
    applied = applied + 1
  end
end
return applied
"""

# KEYS[1] meta key; ARGV: synced_through (µs), code_version. Only ever moves forward.
_ADVANCE_SYNCED_THROUGH = """
local stored = redis.call('HGET', KEYS[1], 'synced_through')
if (not stored) or tonumber(stored) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'synced_through', ARGV[1], 'code_version', ARGV[2])
  return 1
end
return 0
"""


def to_micros(moment: datetime) -> int:
    delta = moment.astimezone(timezone.utc) - datetime(1970, 1, 1, tzinfo=timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(microseconds=value)


def encode_arrow(array: pa.ChunkedArray | pa.Array, dtype: DType) -> pa.ChunkedArray | pa.Array:
    """One column of feature values as the text Redis stores, as an Arrow string array (null for null).

    Floats are written in their shortest exact round-trip form (Arrow's formatter: ``0.1``,
    ``1``, ``1e+300``); ``float()`` reads every one of them back bit for bit.
    """
    if dtype.kind == "timestamp":
        array = pc.cast(pc.cast(array, pa.timestamp("us", tz="UTC")), pa.int64())
    elif dtype.kind == "bool":
        return pc.if_else(array, "1", "0")
    return pc.cast(array, pa.string())


def encode_column(array: pa.ChunkedArray | pa.Array, dtype: DType) -> list[str | None]:
    """One column of feature values as the text Redis stores (None for null)."""
    return encode_arrow(array, dtype).to_pylist()


def decode_value(raw: bytes | None, dtype: DType, decimals: str = "float"):
    if raw is None:
        return None
    text = raw.decode()
    kind = dtype.kind
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "decimal":
        return float(text) if decimals == "float" else decimal.Decimal(text)
    if kind == "bool":
        return text == "1"
    if kind == "timestamp":
        return from_micros(int(text))
    return text


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

    def key(self, view: FeatureView | str, entity_key) -> str:
        name = view if isinstance(view, str) else view.name
        return f"fp:{self.project}:{name}:{entity_key}"

    def meta_key(self, view: FeatureView | str) -> str:
        return self.key(view, META)

    # -- writing -------------------------------------------------------------------------

    def write_latest(self, view: FeatureView, batches: Iterable[pa.RecordBatch], expire: timedelta | None = None,
                     keys_per_call: int = 500) -> WriteSummary:
        """Write each entity's latest row (batches of history rows, one row per entity)."""
        stored = view.stored_dtypes()
        names = list(stored)
        join_key = view.entity.join_key
        expire_ms = int(expire.total_seconds() * 1000) if expire else 0
        tombstone_ms = int(max(view.ttl * 4, timedelta(days=7)).total_seconds() * 1000)
        summary = WriteSummary()
        stride = len(names) + 4
        prefix = self.key(view, "")
        for batch in batches:
            rows = batch.num_rows
            if rows == 0:
                continue
            # Every per-key argument is made by Arrow, column at a time, then interleaved into
            # one flat argument list by slice assignment: no Python work per value.
            keys = pc.binary_join_element_wise(prefix, pc.cast(batch.column(join_key), pa.string()), "").to_pylist()
            deleted = (pc.fill_null(batch.column("_deleted"), False) if "_deleted" in batch.schema.names
                       else pa.array([False] * rows))
            encoded = [encode_arrow(batch.column(name), stored[name]) for name in names]
            flat: list = [None] * (rows * stride)
            flat[0::stride] = pc.cast(pc.cast(pc.cast(batch.column("valid_from"), pa.timestamp("us", tz="UTC")),
                                              pa.int64()), pa.string()).to_pylist()
            flat[1::stride] = pc.if_else(deleted, "1", "0").to_pylist()
            flat[2::stride] = pc.if_else(deleted, str(tombstone_ms), str(expire_ms)).to_pylist()
            flat[3::stride] = (pc.binary_join_element_wise(*[pc.if_else(pc.is_null(c), "1", "0") for c in encoded], "")
                               if encoded else pa.array([""] * rows)).to_pylist()
            for position, column in enumerate(encoded):
                flat[4 + position::stride] = pc.fill_null(column, "").to_pylist()
            summary.rows += rows
            summary.applied += self._call_in_groups(keys, flat, stride, names, keys_per_call)
        return summary

    def _call_in_groups(self, keys: list[str], flat: list[str], stride: int, names: list[str],
                        keys_per_call: int) -> int:
        """Run the write script over groups of keys; on a cluster, each group shares a slot.

        ``flat`` holds ``stride`` arguments per key, in the order of ``keys``."""
        header = [str(len(names)), *names]
        groups: list[tuple[list[str], list[str]]] = []
        if self.is_cluster:
            by_slot: dict[int, list[int]] = {}
            for position, key in enumerate(keys):
                by_slot.setdefault(self.client.keyslot(key), []).append(position)
            for positions in by_slot.values():
                for i in range(0, len(positions), keys_per_call):
                    chosen = positions[i:i + keys_per_call]
                    argv = list(header)
                    for position in chosen:
                        argv.extend(flat[position * stride:(position + 1) * stride])
                    groups.append(([keys[p] for p in chosen], argv))
        else:
            for i in range(0, len(keys), keys_per_call):
                groups.append((keys[i:i + keys_per_call], header + flat[i * stride:(i + keys_per_call) * stride]))
        pipeline = self.client.pipeline(transaction=False)
        for group_keys, argv in groups:
            if self.is_cluster:
                # redis-py's ClusterPipeline refuses EVALSHA (a Script object cannot be
                # pipelined on a cluster: RedisClusterException) and stubs out .eval(); a raw
                # EVAL is queued like any command and routed by the keys' shared slot.
                pipeline.execute_command("EVAL", _WRITE_LATEST, len(group_keys), *group_keys, *argv)
            else:
                self._write(keys=group_keys, args=argv, client=pipeline)
        return sum(int(result) for result in pipeline.execute())

    def advance_synced_through(self, view: FeatureView, moment: datetime) -> bool:
        return bool(self._advance(keys=[self.meta_key(view)], args=[str(to_micros(moment)), view.code_version()]))

    # -- reading -------------------------------------------------------------------------

    def synced_through(self, view: FeatureView | str) -> datetime | None:
        raw = self.client.hget(self.meta_key(view), "synced_through")
        return None if raw is None else from_micros(int(raw))

    def read_rows(self, requests: list[tuple[FeatureView, list, list[str]]]) -> list[tuple[dict, datetime | None]]:
        """One pipelined round trip: for each (view, entity keys, features), the raw fields and
        the view's synced-through time. Returns per request: ({entity key: [raw values...,
        valid_from, deleted]}, synced_through)."""
        pipeline = self.client.pipeline(transaction=False)
        for view, entity_keys, features in requests:
            pipeline.hget(self.meta_key(view), "synced_through")
            for entity_key in entity_keys:
                pipeline.hmget(self.key(view, entity_key), [*features, VALID_FROM, DELETED])
        results = iter(pipeline.execute())
        answers = []
        for view, entity_keys, features in requests:
            synced = next(results)
            rows = {entity_key: next(results) for entity_key in entity_keys}
            answers.append((rows, None if synced is None else from_micros(int(synced))))
        return answers

    def entity_keys(self, view: FeatureView | str) -> Iterator[str]:
        """Every stored entity key of a view (SCAN, for checks and tests)."""
        prefix = self.key(view, "")
        for raw in self.client.scan_iter(match=f"{prefix}*", count=1000):
            key = raw.decode() if isinstance(raw, bytes) else raw
            if not key.endswith(f":{META}"):
                yield key[len(prefix):]
