"""The online store against real Redis servers: never-regressing writes, concurrency, typed
serving reads, staleness, one round trip, Redis outages in Dagster, AUTH and Redis Cluster.

No mock of Redis anywhere. Most tests use the shared test Redis (``FP_TEST_REDIS_URL``,
default ``redis://127.0.0.1:6379/15``, or a throwaway server when that one does not answer),
each under its own random project prefix whose keys are deleted afterwards. The tests that
need a server of their own (a password, a proxy in front, a server that goes down and comes
back, a cluster) start one from tests/redis_servers.py and always stop it.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import random
import threading
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.cluster import RedisCluster

from assets.feature_views import FEATURE_SERVICES, FEATURE_VIEWS, customer_orders, customer_profile
from feature_platform.config import Settings
from feature_platform.feature_store import FeatureStore
from feature_platform.expressions import col
from feature_platform.feature_view import Feature
from feature_platform.online_store import RedisOnlineStore, ValueLayout, to_micros
from feature_platform.redis_client import OnlineStoreUnavailable, connect, redact, scrub
from feature_platform.registry import Registry, UnknownFeatureError
from redis_servers import CommandCountingProxy, closed_port, start_cluster, start_server

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
MICRO = timedelta(microseconds=1)
REGISTRY = Registry.of(FEATURE_VIEWS, FEATURE_SERVICES)
DEFAULT_TEST_REDIS = "redis://127.0.0.1:6379/15"


# -- fixtures and helpers --------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_url():
    """The shared test Redis; a throwaway server when the default one does not answer."""
    url = os.environ.get("FP_TEST_REDIS_URL", DEFAULT_TEST_REDIS)
    try:
        connect(url, socket_timeout=2).close()
    except OnlineStoreUnavailable:
        if "FP_TEST_REDIS_URL" in os.environ:
            raise
        with start_server() as server:
            yield server.url_for(15)
        return
    yield url


def new_project() -> str:
    return f"t{uuid.uuid4().hex[:12]}"


def drop_project(client, project: str) -> None:
    for key in list(client.scan_iter(match=f"fp:{project}:*", count=1000)):
        client.delete(key)


@pytest.fixture
def online(redis_url):
    client = connect(redis_url)
    store = RedisOnlineStore(client, new_project())
    yield store
    drop_project(client, store.project)
    client.close()


def feature_store(url: str, project: str, offline_uri: str = "/nonexistent-offline",
                  partitions_start: datetime = T0) -> FeatureStore:
    settings = Settings(landing_uri="/nonexistent-landing", offline_uri=offline_uri, redis_url=url,
                        project=project, partitions_start=partitions_start)
    return FeatureStore(settings, REGISTRY)


def history(view, rows: list[dict]) -> pa.Table:
    """History rows of ``view`` (unlisted features null, ``_deleted`` false)."""
    schema = view.history_schema()
    full = []
    for row in rows:
        record = dict.fromkeys(schema.names)
        if "_deleted" in schema.names:
            record["_deleted"] = False
        record.update(row)
        full.append(record)
    return pa.Table.from_pylist(full, schema=schema)


def write(store: RedisOnlineStore, view, rows: list[dict], **options):
    return store.write_latest(view, history(view, rows).to_batches(), **options)


def micros(moment: datetime) -> bytes:
    return str(to_micros(moment)).encode()


def stored(store: RedisOnlineStore, view, entity) -> dict[bytes, bytes]:
    """An entity's stored row as {field: text} bytes (no field for a null; {} if never written)."""
    return {name.encode(): value.encode() for name, value in store.stored_fields(view, entity).items()}


def plain(values) -> list:
    """A column as Python values, with every kind of null as None."""
    return [None if v is None or v is pd.NA or (not isinstance(v, (str, bytes, Decimal)) and pd.isna(v)) else v
            for v in list(values)]


PROFILE_1 = {"first_name": "Ann", "last_name": "Lee", "email": "ann@example.com", "biography_length": 10}


# -- never regress ---------------------------------------------------------------------------

def test_writes_never_regress_late_corrections_apply_and_tombstones_hold(online, redis_url):
    view, key = customer_profile, online.key(customer_profile, 1)
    client = online.client
    t1, t2, t3, t4, t5 = (T0 + n * HOUR for n in range(1, 6))

    summary = write(online, view, [{"customer_id": 1, "valid_from": t2, **PROFILE_1}])
    assert (summary.rows, summary.applied, summary.skipped_older) == (1, 1, 0)
    expected_t2 = {b"_valid_from": micros(t2), b"first_name": b"Ann", b"last_name": b"Lee",
                   b"email": b"ann@example.com", b"biography_length": b"10"}
    assert stored(online, view, 1) == expected_t2

    # An older row (a backfill of an earlier partition) never overwrites a newer one.
    summary = write(online, view, [{"customer_id": 1, "valid_from": t1, "first_name": "Old", "last_name": "Old",
                                    "email": "old@example.com", "biography_length": 99}])
    assert (summary.applied, summary.skipped_older) == (0, 1)
    assert stored(online, view, 1) == expected_t2

    # Same valid_from, new values: a late correction replaces the row, wholly (a now-null
    # feature loses its field; it is never stored as '' or 0).
    summary = write(online, view, [{"customer_id": 1, "valid_from": t2, "first_name": "Anne", "last_name": None,
                                    "email": "anne@example.com", "biography_length": 0}])
    assert summary.applied == 1
    assert stored(online, view, 1) == {b"_valid_from": micros(t2), b"first_name": b"Anne",
                                   b"email": b"anne@example.com", b"biography_length": b"0"}

    # Newer: applied. In one call, a mix of newer and older rows for different keys.
    summary = write(online, view, [{"customer_id": 1, "valid_from": t3, **PROFILE_1, "first_name": "Annie"},
                                   {"customer_id": 2, "valid_from": t1, **PROFILE_1}])
    assert (summary.rows, summary.applied) == (2, 2)
    summary = write(online, view, [{"customer_id": 1, "valid_from": t2, **PROFILE_1},
                                   {"customer_id": 2, "valid_from": t2, **PROFILE_1, "first_name": "Bo"}])
    assert (summary.rows, summary.applied, summary.skipped_older) == (2, 1, 1)
    assert stored(online, view, 1)[b"first_name"] == b"Annie"
    assert stored(online, view, 2)[b"first_name"] == b"Bo"

    # A delete turns the key into a tombstone that expires on its own (4 × ttl, at least 7 days).
    summary = write(online, view, [{"customer_id": 1, "valid_from": t4, "_deleted": True}])
    assert summary.applied == 1
    assert stored(online, view, 1) == {b"_valid_from": micros(t4), b"_deleted": b"1"}
    assert 0 < client.pttl(key) <= (4 * view.ttl).total_seconds() * 1000

    # Readers treat the tombstone as absent: null for a latest-state view.
    online.advance_synced_through(view, t5)
    store = feature_store(redis_url, online.project)
    response = store.get_online_features([{"customer_id": 1}, {"customer_id": 2}],
                                         features=["customer_profile:first_name", "customer_profile:biography_length"],
                                         request_time=t5)
    assert plain(response["first_name"]) == [None, "Bo"]
    assert plain(response["biography_length"]) == [None, 10]

    # An older write (or an equally old one from before the delete) does not resurrect it.
    for moment in (t1, t3):
        summary = write(online, view, [{"customer_id": 1, "valid_from": moment, **PROFILE_1}])
        assert summary.applied == 0
    assert stored(online, view, 1) == {b"_valid_from": micros(t4), b"_deleted": b"1"}

    # A newer insert brings the entity back, without the tombstone marker or its expiry.
    summary = write(online, view, [{"customer_id": 1, "valid_from": t5, **PROFILE_1}])
    assert summary.applied == 1
    assert stored(online, view, 1) == {**expected_t2, b"_valid_from": micros(t5)}
    assert client.pttl(key) == -1


def test_a_fresh_sync_never_regresses_keys_that_are_already_there(online):
    """A view without a synced mark is written call by call with MSETNX (fresh=True); a call
    that meets a key already written (a sync killed before its mark moved, a concurrent
    writer) falls back to the compare-and-write, so the newer row there stays."""
    view = customer_profile
    newer = {"first_name": "Newer", "last_name": "Row", "email": None, "biography_length": 1}
    assert write(online, view, [{"customer_id": e, "valid_from": T0 + 2 * HOUR, **newer} for e in (3, 1500)]).applied == 2
    rows = [{"customer_id": e, "valid_from": T0 + HOUR, **PROFILE_1} for e in range(3000)]
    rows[2500]["_deleted"] = True  # a tombstone: always the script (MSETNX cannot set its expiry)
    client = online.client
    before = {c: s["calls"] for c, s in client.info("commandstats").items()}
    summary = write(online, view, rows, fresh=True, keys_per_call=1000)
    after = {c: s["calls"] for c, s in client.info("commandstats").items()}

    assert (summary.rows, summary.applied, summary.skipped_older) == (3000, 2998, 2)
    for entity in (3, 1500):
        assert stored(online, view, entity)[b"first_name"] == b"Newer"
    for entity in (0, 999, 1000, 1499, 1501, 2999):
        assert stored(online, view, entity)[b"first_name"] == b"Ann"
    assert stored(online, view, 2500) == {b"_valid_from": micros(T0 + HOUR), b"_deleted": b"1"}
    assert client.pttl(online.key(view, 2500)) > 0 and client.pttl(online.key(view, 2999)) == -1
    # Three calls tried with MSETNX (the tombstone's call is not); the two holding 3 and 1500 refused.
    assert after["cmdstat_msetnx"] - before.get("cmdstat_msetnx", 0) == 3


def test_aggregation_rows_never_regress_either(online):
    view = customer_orders
    write(online, view, [{"customer_id": 7, "valid_from": T0 + 2 * HOUR, "order_count_30d": 5,
                          "total_spend_30d": Decimal("50.00")}])
    assert write(online, view, [{"customer_id": 7, "valid_from": T0 + HOUR, "order_count_30d": 3}]).applied == 0
    fields = stored(online, view, 7)
    assert (fields[b"order_count_30d"], fields[b"total_spend_30d"]) == (b"5", b"50.00")
    # Several batches in one call, several script calls per batch: the last valid row wins.
    rows = [{"customer_id": 7 + (i % 3), "valid_from": T0 + timedelta(minutes=i), "order_count_30d": i}
            for i in random.Random(1).sample(range(300), 300)]
    table = history(view, rows)
    online.write_latest(view, table.to_batches(max_chunksize=17), keys_per_call=2)
    for entity in (7, 8, 9):
        best = max(i for i in range(300) if 7 + (i % 3) == entity)
        assert stored(online, view, entity)[b"order_count_30d"] == str(best).encode()


# -- concurrent writers ----------------------------------------------------------------------

def _write_fields(writer: int, round_: int, entity: int, slot: int) -> dict:
    """The features of one write; every field carries the write's identity, and which fields
    are null depends on the write, so a mix of two writes cannot go unnoticed."""
    tag = f"w{writer}r{round_}e{entity}v{slot}"
    pattern = (writer + round_ + entity) % 4
    return {"first_name": tag,
            "last_name": None if pattern == 1 else tag,
            "email": None if pattern == 2 else f"{tag}@example.com",
            "biography_length": None if pattern == 3 else writer * 1_000_000 + round_ * 1_000 + slot}


def _stored_form(fields: dict, valid_from: datetime) -> dict:
    stored = {b"_valid_from": micros(valid_from)}
    stored.update({name.encode(): str(value).encode() for name, value in fields.items() if value is not None})
    return stored


def _plan(writer: int, rounds: int, entities: int, seed: int) -> list[list[tuple[int, int]]]:
    rng = random.Random(seed * 1000 + writer)
    plan = []
    for _ in range(rounds):
        keys = list(range(entities))
        rng.shuffle(keys)
        plan.append([(entity, rng.randrange(12)) for entity in keys])  # 12 slots: ties happen
    return plan


def _run_writer(url: str, project: str, writer: int, plan, go, errors) -> None:
    """One writer (a thread here, or a spawned process): write every round, in small script calls."""
    try:
        store = RedisOnlineStore(connect(url), project)
        go.wait(60)
        for round_, writes in enumerate(plan):
            rows = [{"customer_id": entity, "valid_from": T0 + slot * HOUR, **_write_fields(writer, round_, entity, slot)}
                    for entity, slot in writes]
            store.write_latest(customer_profile, history(customer_profile, rows).to_batches(max_chunksize=9),
                               keys_per_call=3)
        store.client.close()
    except BaseException as error:  # reported to the parent
        errors.put(f"writer {writer}: {type(error).__name__}: {error}")
        raise


def test_concurrent_writers_keep_the_newest_write_whole(redis_url):
    project, entities, rounds = new_project(), 40, 12
    threads_n, processes_n = 3, 2
    plans = {writer: _plan(writer, rounds, entities, seed=7) for writer in range(threads_n + processes_n)}
    # The plan has ties: for most entities, two writers both write the newest valid_from.
    newest_writers = [{w for w, plan in plans.items() for writes in plan for e, slot in writes
                       if e == entity and slot == 11} for entity in range(entities)]
    assert sum(len(writers) > 1 for writers in newest_writers) > entities // 2
    context = multiprocessing.get_context("spawn")
    go, errors = context.Event(), context.Queue()
    processes = [context.Process(target=_run_writer, args=(redis_url, project, w, plans[w], go, errors), daemon=True)
                 for w in range(threads_n, threads_n + processes_n)]
    threads = [threading.Thread(target=_run_writer, args=(redis_url, project, w, plans[w], go, errors), daemon=True)
               for w in range(threads_n)]
    client = connect(redis_url)
    try:
        for worker in (*processes, *threads):
            worker.start()
        time.sleep(1.5)  # let the spawned interpreters import and connect, then start everyone at once
        go.set()
        for process in processes:
            process.join(60)
        for thread in threads:
            thread.join(60)
        problems = []
        while not errors.empty():
            problems.append(errors.get())
        assert not problems, problems
        assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
        assert not any(t.is_alive() for t in threads)

        for entity in range(entities):
            candidates = [(slot, writer, round_) for writer, plan in plans.items()
                          for round_, writes in enumerate(plan) for e, slot in writes if e == entity]
            newest = max(slot for slot, _, _ in candidates)
            allowed = [_stored_form(_write_fields(writer, round_, entity, slot), T0 + slot * HOUR)
                       for slot, writer, round_ in candidates if slot == newest]
            found = stored(RedisOnlineStore(client, project), customer_profile, entity)
            assert found in allowed, (entity, found, allowed)
    finally:
        go.set()
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(10)
        drop_project(client, project)
        client.close()


# -- typed serving reads ---------------------------------------------------------------------

LAST_ORDER = datetime(2026, 2, 27, 13, 45, 12, 345678, tzinfo=UTC)
REQUEST = T0 + 10 * HOUR
BIG_MONEY = Decimal("98765432109876.53")  # not exact as a float


def _serve_fixture(online, redis_url) -> FeatureStore:
    synced = T0 + 9 * HOUR
    write(online, customer_orders, [
        {"customer_id": 1, "valid_from": T0, "order_count_30d": 7, "total_spend_30d": BIG_MONEY,
         "avg_order_value_30d": 0.1 + 0.2, "order_value_stddev_30d": -2.5e-7, "last_order_date": LAST_ORDER,
         "is_high_value": True, "is_frequent_buyer": False, "avg_days_between_orders": 30 / 7},
        # written with nulls: they come back null, never '' or 0 or False
        {"customer_id": 2, "valid_from": T0, "order_count_30d": 0, "is_frequent_buyer": False},
        {"customer_id": 4, "valid_from": T0, "order_count_30d": 1, "last_order_date": REQUEST - timedelta(days=2)},
        {"customer_id": 5, "valid_from": T0, "order_count_30d": 1,
         "last_order_date": REQUEST - timedelta(days=2) + MICRO},
    ])
    write(online, customer_profile, [
        {"customer_id": 1, "valid_from": T0, "first_name": "Zoë 🚀", "last_name": "", "email": None,
         "biography_length": 2**62 + 1},
        {"customer_id": 2, "valid_from": T0, **PROFILE_1},
        {"customer_id": 2, "valid_from": T0 + HOUR, "_deleted": True},
    ])
    # customer 2's delete comes in a later batch of its own (one row per entity per batch)
    for view in (customer_orders, customer_profile):
        assert online.advance_synced_through(view, synced)
    return feature_store(redis_url, online.project)  # its own connection, from Settings


ROWS = [{"customer_id": 1}, {"customer_id": 2}, {"customer_id": 3}, {"customer_id": 4}, {"customer_id": 5}]


def test_typed_round_trip_through_get_online_features(online, redis_url):
    store = _serve_fixture(online, redis_url)
    features = ["customer_orders:order_count_30d", "customer_orders:total_spend_30d",
                "customer_orders:avg_order_value_30d", "customer_orders:order_value_stddev_30d",
                "customer_orders:last_order_date", "customer_orders:is_high_value",
                "customer_orders:is_frequent_buyer", "customer_orders:avg_days_between_orders",
                "customer_orders:days_since_last_order",
                "customer_profile:first_name", "customer_profile:last_name", "customer_profile:email",
                "customer_profile:biography_length"]
    response = store.get_online_features(ROWS, features=features, request_time=REQUEST)
    assert response.stale == []
    assert list(response.columns) == ["customer_id", *[f.split(":")[1] for f in features]]
    assert plain(response["customer_id"]) == [1, 2, 3, 4, 5]

    # customer 1: every type; 2: written with nulls (and a deleted profile); 3: never written
    # (the aggregation view's empty values, null profile); 4 and 5: the on-demand boundary.
    assert plain(response["order_count_30d"]) == [7, 0, 0, 1, 1]
    assert plain(response["total_spend_30d"]) == [float(BIG_MONEY), None, 0.0, None, None]
    assert plain(response["avg_order_value_30d"]) == [0.30000000000000004, None, None, None, None]
    assert plain(response["order_value_stddev_30d"]) == [-2.5e-7, None, None, None, None]
    assert plain(response["last_order_date"]) == [pd.Timestamp(LAST_ORDER), None, None,
                                                  pd.Timestamp(REQUEST - timedelta(days=2)),
                                                  pd.Timestamp(REQUEST - timedelta(days=2) + MICRO)]
    assert plain(response["is_high_value"]) == [True, None, False, None, None]
    assert plain(response["is_frequent_buyer"]) == [False, False, False, None, None]
    assert plain(response["avg_days_between_orders"]) == [30 / 7, None, None, None, None]
    # floor((request − last order) / 1 day): 1d 20h14m… → 1; exactly 2 days → 2; 1µs less → 1
    assert plain(response["days_since_last_order"]) == [1, None, None, 2, 1]
    assert plain(response["first_name"]) == ["Zoë 🚀", None, None, None, None]
    assert plain(response["last_name"]) == ["", None, None, None, None]  # '' stays '', null stays null
    assert plain(response["email"]) == [None, None, None, None, None]
    assert plain(response["biography_length"]) == [2**62 + 1, None, None, None, None]

    dtypes = {name: str(dtype) for name, dtype in response.dtypes.items()}
    assert dtypes["order_count_30d"] == "Int64" and dtypes["biography_length"] == "Int64"
    assert dtypes["total_spend_30d"] == "Float64" and dtypes["avg_order_value_30d"] == "Float64"
    assert dtypes["is_high_value"] == "boolean"
    assert dtypes["last_order_date"] == "datetime64[us, UTC]"
    assert dtypes["days_since_last_order"] == "Int64"

    # Exact decimals on request.
    exact = store.get_online_features(ROWS[:3], features=["customer_orders:total_spend_30d"],
                                      request_time=REQUEST, decimals="decimal")
    spend = plain(exact["total_spend_30d"])
    assert spend[0] == BIG_MONEY and isinstance(spend[0], Decimal) and str(spend[0]) == str(BIG_MONEY)
    assert spend[1] is None
    assert spend[2] == Decimal(0) and isinstance(spend[2], Decimal)


def test_feature_service_order_and_full_feature_names(online, redis_url):
    store = _serve_fixture(online, redis_url)
    by_service = store.get_online_features(ROWS[:2], service="churn_model", request_time=REQUEST)
    assert list(by_service.columns) == ["customer_id", "order_count_30d", "total_spend_30d", "avg_order_value_30d",
                                        "days_since_last_order", "is_high_value", "biography_length"]
    full = store.get_online_features(ROWS[:2], service="churn_model", request_time=REQUEST, full_feature_names=True)
    assert list(full.columns) == ["customer_id", *[reference.replace(":", "__") for reference in
                                                   REGISTRY.service("churn_model").features]]
    for short, long in zip(by_service.columns[1:], full.columns[1:]):
        assert plain(by_service[short]) == plain(full[long])
    # Features from two views, interleaved: columns come in the requested order.
    mixed = store.get_online_features(ROWS[:1], features=[
        "customer_profile:email", "customer_orders:last_order_date", "customer_profile:first_name",
        "customer_orders:days_since_last_order"], request_time=REQUEST)
    assert list(mixed.columns) == ["customer_id", "email", "last_order_date", "first_name", "days_since_last_order"]
    assert plain(mixed.iloc[0]) == [1, None, pd.Timestamp(LAST_ORDER), "Zoë 🚀", 1]


def test_the_response_is_the_same_dataframe_whatever_the_join_key_values_are(online, redis_url):
    """Plain ints, numpy ints and strings name the same entities (the Redis key is their
    text) and give the same feature columns; the join-key column is typed as pandas infers
    it from the values given (int64, or object for text). The response is an ordinary
    DataFrame: copies, concatenation and row access work on it."""
    store = _serve_fixture(online, redis_url)
    features = ["customer_orders:order_count_30d", "customer_orders:total_spend_30d",
                "customer_orders:is_high_value", "customer_profile:first_name"]
    as_ints = store.get_online_features(ROWS[:3], features=features, request_time=REQUEST)
    as_numpy = store.get_online_features([{"customer_id": np.int64(r["customer_id"])} for r in ROWS[:3]],
                                         features=features, request_time=REQUEST)
    as_text = store.get_online_features([{"customer_id": str(r["customer_id"])} for r in ROWS[:3]],
                                        features=features, request_time=REQUEST)
    assert [str(r["customer_id"].dtype) for r in (as_ints, as_numpy, as_text)] == ["int64", "int64", "object"]
    for other in (as_numpy, as_text):
        pd.testing.assert_frame_equal(other.drop(columns="customer_id"), as_ints.drop(columns="customer_id"))
    both = pd.concat([as_ints, as_ints.copy()], ignore_index=True)
    assert plain(both["order_count_30d"]) == [7, 0, 0, 7, 0, 0] and both.dtypes["order_count_30d"] == "Int64"
    assert plain(as_ints.iloc[0]) == [1, 7, float(BIG_MONEY), True, "Zoë 🚀"]
    assert as_ints.stale == []

    with pytest.raises(UnknownFeatureError, match="order_count_30d"):
        store.get_online_features(ROWS[:1], features=features + ["customer_orders:order_count_30d"],
                                  request_time=REQUEST)


def as_python(values) -> list:
    """A DataFrame column as the dict read gives it: Timestamps as datetimes, numpy scalars as Python."""
    return [v.to_pydatetime() if isinstance(v, pd.Timestamp) else v.item() if isinstance(v, np.generic) else v
            for v in plain(values)]


def test_the_dict_read_gives_the_dataframe_reads_values_as_plain_python(online, redis_url):
    """``get_online_features_dict`` is ``get_online_features`` without the DataFrame: the
    same columns in the same order, the same value in every cell (nulls, the aggregation
    view's empty values, a deleted entity, on-demand features, exact decimals, a service,
    full names, a stale view), each value a plain Python object a model server can use."""
    store = _serve_fixture(online, redis_url)
    every = [f"customer_orders:{name}" for name in (
        "order_count_30d", "total_spend_30d", "avg_order_value_30d", "order_value_stddev_30d", "last_order_date",
        "is_high_value", "is_frequent_buyer", "avg_days_between_orders", "days_since_last_order")] + [
        f"customer_profile:{name}" for name in PROFILE_1]
    stale_orders = T0 + 9 * HOUR + customer_orders.ttl + MICRO
    asks = [dict(features=every, request_time=REQUEST),
            dict(features=every, request_time=REQUEST, decimals="decimal"),
            dict(features=list(reversed(every)), request_time=REQUEST, full_feature_names=True),
            dict(service="churn_model", request_time=REQUEST),
            dict(features=every, request_time=stale_orders)]
    for ask in asks:
        frame = store.get_online_features(ROWS, **ask)
        values = store.get_online_features_dict(ROWS, **ask)
        assert list(values) == list(frame.columns), ask
        for column in frame.columns:
            assert values[column] == as_python(frame[column]), (ask, column)
        assert values.stale == frame.stale
    assert values.stale == ["customer_orders"] and values["days_since_last_order"] == [None] * len(ROWS)

    values = store.get_online_features_dict(ROWS[:1], features=every, request_time=REQUEST, decimals="decimal")
    kinds = {column: type(column_values[0]) for column, column_values in values.items()}
    assert kinds["customer_id"] is int and kinds["order_count_30d"] is int and kinds["days_since_last_order"] is int
    assert kinds["total_spend_30d"] is Decimal and values["total_spend_30d"] == [BIG_MONEY]
    assert kinds["avg_order_value_30d"] is float and kinds["is_high_value"] is bool
    assert values["last_order_date"] == [LAST_ORDER] and values["last_order_date"][0].tzinfo is not None
    assert values["first_name"] == ["Zoë 🚀"] and values["email"] == [None]
    with pytest.raises(KeyError, match="entity row 1 lacks join key"):
        store.get_online_features_dict([{"customer_id": 1}, {}], features=every[:1], request_time=REQUEST)


# -- staleness -------------------------------------------------------------------------------

def test_staleness_at_the_ttl_edge_and_synced_through_never_moves_back(online, redis_url):
    store = _serve_fixture(online, redis_url)
    synced = T0 + 9 * HOUR + 123 * MICRO
    for view in (customer_orders, customer_profile):
        assert online.advance_synced_through(view, synced)
        # never backwards: an older horizon (a re-run of an old partition) is refused
        assert not online.advance_synced_through(view, synced - HOUR)
        assert not online.advance_synced_through(view, synced)
        assert online.synced_through(view) == synced
    features = ["customer_orders:order_count_30d", "customer_orders:days_since_last_order",
                "customer_profile:first_name"]

    # customer_orders has ttl 2 days, customer_profile 7 days.
    at_edge = store.get_online_features(ROWS[:1], features=features, request_time=synced + customer_orders.ttl)
    assert at_edge.stale == []
    assert plain(at_edge.iloc[0]) == [1, 7, 3, "Zoë 🚀"]  # (9h + 2d) − last order → 3 whole days

    past = store.get_online_features(ROWS[:1], features=features, request_time=synced + customer_orders.ttl + MICRO)
    assert past.stale == ["customer_orders"]
    assert plain(past.iloc[0]) == [1, None, None, "Zoë 🚀"]  # stale: null, on-demand too — not 0

    profile_edge = synced + customer_profile.ttl
    assert store.get_online_features(ROWS[:1], features=features[2:], request_time=profile_edge).stale == []
    beyond = store.get_online_features(ROWS[:1], features=features[2:], request_time=profile_edge + MICRO)
    assert beyond.stale == ["customer_profile"] and plain(beyond["first_name"]) == [None]

    # A view never synced is stale at any time.
    assert online.synced_code_version(customer_orders) == customer_orders.code_version()
    online.client.delete(online.synced_key(customer_orders))
    never = store.get_online_features(ROWS[:1], features=features[:1], request_time=REQUEST)
    assert never.stale == ["customer_orders"] and plain(never["order_count_30d"]) == [None]


# -- the packed row -----------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(profiles=st.lists(st.fixed_dictionaries({
    # Any text, the separators and their escape character included, and nulls.
    "first_name": st.none() | st.text(alphabet=st.sampled_from("a\x1e\x1f01\\|é🚀 ") | st.characters(exclude_categories=("Cs",)), max_size=12),
    "last_name": st.none() | st.text(max_size=6),
    "email": st.none() | st.sampled_from(["", "\x1e", "\x1f", "\x1e1", "\x1e0", "x\x1f\x1ey"]),
    "biography_length": st.none() | st.integers(-2**63, 2**63 - 1)}), min_size=1, max_size=8))
def test_any_values_come_back_exactly_from_the_packed_row(online, redis_url, profiles):
    """Serving returns each value as written, for any text (the separators and the escape
    character inside strings too), any int64 and any mix of nulls."""
    rows = [{"customer_id": i, "valid_from": T0, **profile} for i, profile in enumerate(profiles)]
    write(online, customer_profile, rows)
    online.advance_synced_through(customer_profile, T0)
    response = feature_store(redis_url, online.project).get_online_features(
        [{"customer_id": i} for i in range(len(profiles))],
        features=[f"customer_profile:{name}" for name in PROFILE_1], request_time=T0)
    as_dict = feature_store(redis_url, online.project).get_online_features_dict(
        [{"customer_id": i} for i in range(len(profiles))],
        features=[f"customer_profile:{name}" for name in PROFILE_1], request_time=T0)
    for name in PROFILE_1:
        assert plain(response[name]) == [profile[name] for profile in profiles], name
        assert as_dict[name] == [profile[name] for profile in profiles], name
    assert [online.stored_fields(customer_profile, i) for i in range(len(profiles))] == [
        {"_valid_from": str(to_micros(T0)), **{k: str(v) for k, v in profile.items() if v is not None}}
        for profile in profiles]


def test_rows_written_by_an_earlier_definition_are_read_by_feature_name(online, redis_url):
    """After a definition change, a value still in the old layout serves the features both
    layouts share; an added feature, or one whose type changed, is null until rewritten."""
    old = customer_profile
    write(online, old, [{"customer_id": 1, "valid_from": T0, **PROFILE_1}])
    online.advance_synced_through(old, T0)
    new = dataclasses.replace(old, features=[
        Feature("nickname", col("first_name")),          # added, first
        Feature("email"),                                 # kept
        Feature("biography_length", col("first_name")),  # same name, now a string
        Feature("first_name")])                          # kept, moved; last_name removed
    assert ValueLayout.of(new).id != ValueLayout.of(old).id
    store = FeatureStore(Settings(landing_uri="/nonexistent-landing", offline_uri="/nonexistent-offline",
                                  redis_url=redis_url, project=online.project, partitions_start=T0),
                         Registry.of([new]))
    response = store.get_online_features([{"customer_id": 1}], request_time=T0, features=[
        "customer_profile:first_name", "customer_profile:email", "customer_profile:nickname",
        "customer_profile:biography_length"])
    assert plain(response.iloc[0]) == [1, "Ann", "ann@example.com", None, None]
    # Rewritten by the new definition, the row is in the new layout.
    write(online, new, [{"customer_id": 1, "valid_from": T0 + HOUR, "nickname": "A", "email": "a@example.com",
                         "biography_length": "ten", "first_name": "Ann"}])
    response = store.get_online_features([{"customer_id": 1}], request_time=T0 + HOUR, features=[
        "customer_profile:nickname", "customer_profile:biography_length"])
    assert plain(response.iloc[0]) == [1, "A", "ten"]


def test_a_redis_holding_the_older_hash_layout_is_stale_until_the_next_sync_rewrites_it(online, redis_url):
    """Hashes and a synced_through from a release before the packed row: readers do not trust
    them (the view is stale), and the next write replaces them (no WRONGTYPE)."""
    key = online.key(customer_profile, 1)
    online.client.hset(key, mapping={"_valid_from": to_micros(T0 + HOUR), "first_name": "Old"})
    online.client.hset(online.meta_key(customer_profile), mapping={"synced_through": to_micros(T0 + HOUR),
                                                                   "code_version": "old"})
    # ... and a synced mark of another value format.
    online.client.set(online.synced_key(customer_profile), f"hash-0\x1f{to_micros(T0 + HOUR)}\x1fold")
    assert online.synced_through(customer_profile) is None
    assert online.synced_code_version(customer_profile) is None  # not "old": that mark is not ours to read
    store = feature_store(redis_url, online.project)
    stale = store.get_online_features([{"customer_id": 1}], features=["customer_profile:first_name"],
                                      request_time=T0 + HOUR)
    assert stale.stale == ["customer_profile"] and plain(stale["first_name"]) == [None]

    assert write(online, customer_profile, [{"customer_id": 1, "valid_from": T0, **PROFILE_1}]).applied == 1
    assert online.client.type(key) == b"string"
    # synced_through moves to this format's mark even though the old one was later.
    assert online.advance_synced_through(customer_profile, T0)
    assert online.synced_through(customer_profile) == T0
    assert online.synced_code_version(customer_profile) == customer_profile.code_version()
    fresh = store.get_online_features([{"customer_id": 1}], features=["customer_profile:first_name"],
                                      request_time=T0)
    assert fresh.stale == [] and plain(fresh["first_name"]) == ["Ann"]


# -- one round trip ----------------------------------------------------------------

def test_get_online_features_is_one_mget():
    """A read of 100 entities × 2 views must cost exactly one command: an MGET of both views' synced
    marks and 2 × 100 entity keys (one round trip, no pipeline).

    How this is measured without mocking anything: the FeatureStore talks to a throwaway
    redis-server through a TCP proxy (tests/redis_servers.py) that parses every command the
    client sends. While armed, the proxy holds back *all* replies until the client has sent
    the expected command. A client that needed any reply before sending its last
    command (a second round trip) would wait for a reply that never comes and time out; so
    completing at all, with the gate opened by the count, proves one round trip. The
    server's own ``INFO commandstats`` deltas cross-check the command counts, and the proxy
    sees a single client connection (the pooled connection).
    """
    project = new_project()
    with start_server() as server, CommandCountingProxy(server.port) as proxy:
        store = feature_store(proxy.url, project)
        entities = list(range(100))
        write(store.online, customer_orders, [{"customer_id": e, "valid_from": T0, "order_count_30d": e}
                                              for e in entities])
        write(store.online, customer_profile, [{"customer_id": e, "valid_from": T0, "first_name": f"n{e}"}
                                               for e in entities])
        for view in (customer_orders, customer_profile):
            store.online.advance_synced_through(view, T0)
        # Both reads, the DataFrame and the dict: each is exactly one MGET.
        for read in (store.get_online_features, store.get_online_features_dict):
            admin = server.client()
            before = admin.info("commandstats")
            start = proxy.arm(1)
            started = time.monotonic()
            try:
                response = read([{"customer_id": e} for e in entities],
                                features=["customer_orders:order_count_30d", "customer_profile:first_name"],
                                request_time=T0 + HOUR)
            finally:
                proxy.disarm()
            elapsed = time.monotonic() - started
            after = admin.info("commandstats")
            admin.close()
            sent = proxy.commands[start:]
            assert proxy.released_by_count, f"the replies were not released by the count; sent {Counter(sent)}"
            assert Counter(sent) == {"MGET": 1}
            assert after["cmdstat_mget"]["calls"] - before.get("cmdstat_mget", {}).get("calls", 0) == 1
            for command in ("get", "hmget", "hget"):
                stat = f"cmdstat_{command}"
                assert after.get(stat, {}).get("calls", 0) == before.get(stat, {}).get("calls", 0), command
            assert proxy.connections == 1
            assert plain(response["order_count_30d"]) == entities
            assert plain(response["first_name"]) == [f"n{e}" for e in entities]
            assert elapsed < 5  # no timeout waited out along the way


# -- Redis down, in Dagster ------------------------------------------------------------------

def _file_snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_online_asset_fails_cleanly_while_redis_is_down_and_recovers(tmp_path):
    import dagster as dg

    from feature_platform.offline_store import OfflineFeatureStore
    from feature_platform.orchestration.online_assets import RedisResource, build_online_asset
    from feature_platform.orchestration.partitions import hourly_partitions, partition_key_of
    from feature_platform.orchestration.resources import OfflineStoreResource
    from feature_platform.storage import Store

    project, password = new_project(), "s3cr3t-hunter2"
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 3 * HOUR
    h1 = h0 + HOUR
    partitions = hourly_partitions(h0)
    offline_dir = tmp_path / "offline"
    offline = OfflineFeatureStore(Store(f"{offline_dir}/{project}"))
    offline.write_partition(customer_profile, h0, history(customer_profile, [
        {"customer_id": 1, "valid_from": h0, **PROFILE_1},
        {"customer_id": 2, "valid_from": h0 + MICRO, **PROFILE_1, "first_name": "Bo"},
        {"customer_id": 3, "valid_from": h0, **PROFILE_1, "first_name": "Cy"}]), as_of=h1)
    offline.write_partition(customer_profile, h1, history(customer_profile, [
        {"customer_id": 2, "valid_from": h1 + 5 * MICRO, **PROFILE_1, "first_name": "Bob", "email": None},
        {"customer_id": 3, "valid_from": h1, "_deleted": True}]), as_of=h1 + HOUR)
    offline.write_partition(customer_orders, h0, history(customer_orders, [
        {"customer_id": 1, "valid_from": h0, "order_count_30d": 2, "total_spend_30d": BIG_MONEY,
         "last_order_date": h0 - timedelta(days=1), "is_high_value": True, "avg_order_value_30d": 0.5}]), as_of=h1)
    offline.write_partition(customer_orders, h1, history(customer_orders, []), as_of=h1 + HOUR)
    files_before = _file_snapshot(offline_dir)

    profile_asset = build_online_asset(customer_profile, partitions)
    orders_asset = build_online_asset(customer_orders, partitions)
    for asset in (profile_asset, orders_asset):
        assert asset.op.retry_policy == dg.RetryPolicy(max_retries=3, delay=5, backoff=dg.Backoff.EXPONENTIAL)

    port = closed_port()
    url = f"redis://:{quote(password, safe='')}@127.0.0.1:{port}/0"
    resources = {"offline": OfflineStoreResource(uri=str(offline_dir), project=project),
                 "redis": RedisResource(url=url, project=project)}

    # 1. One attempt, with nothing listening: dg.Failure naming the redacted URL, not the password.
    with dg.build_asset_context(partition_key=partition_key_of(h1), resources=resources) as context, \
            pytest.raises(dg.Failure) as failure:
        list(profile_asset(context))  # the asset yields its materialization, then its skew check
    assert redact(url) in failure.value.description and "unreachable" in failure.value.description
    assert password not in failure.value.description and password not in str(failure.value)

    # 2. A run whose first attempt fails; Redis comes back during the retry delay and the
    #    retry succeeds. (dg.materialize always enables retries, so a run that stays down
    #    would wait out 3 exponential backoffs; the first attempt's failure is checked here.)
    #    This is the first sync of the view, for its *second* partition: it must still
    #    carry entity 1, whose latest row is in the first partition.
    # A file-backed instance: the watcher thread reads its event log while the run writes it
    # (an ephemeral, in-memory one shares one SQLite connection across threads).
    (tmp_path / "dagster_home").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home"))
    servers = []

    def bring_redis_back_after_first_failure():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = instance.get_runs()
            if runs and instance.all_logs(runs[0].run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY):
                servers.append(start_server(password=password, port=port))
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=bring_redis_back_after_first_failure, daemon=True)
    watcher.start()
    try:
        result = dg.materialize([profile_asset], resources=resources, partition_key=partition_key_of(h1),
                                instance=instance, raise_on_error=False)
        watcher.join(70)
        assert servers, "the watcher never saw the first attempt fail"
        assert result.success
        events = result.all_events
        retries = [e for e in events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        assert len(retries) == 1
        cause = retries[0].event_specific_data.error.cause
        assert "Failure" in cause.message and redact(url) in cause.message
        assert not any(password in repr(e) for e in events), "the password leaked into the event log"
        [materialization] = result.asset_materializations_for_node(profile_asset.op.name)
        assert materialization.metadata["redis"].text == redact(url)
        assert materialization.metadata["synced_through"].text == (h1 + HOUR).isoformat()

        # 3. A later run, both views, succeeds; re-syncing is harmless (ties rewrite the same rows).
        later = dg.materialize([profile_asset, orders_asset], resources=resources,
                               partition_key=partition_key_of(h1), instance=instance)
        assert later.success

        assert _file_snapshot(offline_dir) == files_before  # the offline history is untouched

        store = feature_store(url, project, offline_uri=str(offline_dir), partitions_start=h0)
        rows = [{"customer_id": k} for k in (1, 2, 3, 4)]
        now = datetime.now(UTC)
        features = ["customer_profile:first_name", "customer_profile:email", "customer_orders:order_count_30d",
                    "customer_orders:total_spend_30d", "customer_orders:last_order_date",
                    "customer_orders:is_high_value", "customer_orders:avg_order_value_30d"]
        served = store.get_online_features(rows, features=features, request_time=now, decimals="decimal")
        assert served.stale == []
        assert plain(served["first_name"]) == ["Ann", "Bob", None, None]
        assert plain(served["email"]) == ["ann@example.com", None, None, None]
        assert plain(served["order_count_30d"]) == [2, 0, 0, 0]
        assert plain(served["total_spend_30d"]) == [BIG_MONEY, Decimal(0), Decimal(0), Decimal(0)]
        assert plain(served["last_order_date"]) == [pd.Timestamp(h0 - timedelta(days=1)), None, None, None]
        assert plain(served["is_high_value"]) == [True, False, False, False]
        # Serving now equals training at now (past the horizon, within the TTL).
        entity_df = pd.DataFrame({"customer_id": [1, 2, 3, 4], "event_timestamp": [now] * 4})
        trained = store.get_historical_features(entity_df, features=features, decimals="decimal")
        for feature in features:
            name = feature.split(":")[1]
            assert plain(trained[name]) == plain(served[name]), name
    finally:
        watcher.join(1)
        for server in servers:
            server.stop()
        instance.dispose()


# -- AUTH ------------------------------------------------------------------------------------

def test_auth_password_works_and_never_leaks():
    password = "p@ss:w/rd#%4 secret"
    with start_server(password=password) as server:
        url = server.url_for(0)
        encoded = quote(password, safe="")
        store = RedisOnlineStore(connect(url), new_project())
        assert write(store, customer_profile, [{"customer_id": 1, "valid_from": T0, **PROFILE_1}]).applied == 1
        [(rows, _)] = store.read_rows([(customer_profile, [1], ["first_name"])])
        assert rows[0].values == [b"Ann"]

        wrong_password = "not-the-secret-42"
        for bad_url in (server.url_for(0, password=wrong_password), f"redis://127.0.0.1:{server.port}/0"):
            with pytest.raises(OnlineStoreUnavailable) as refused:
                connect(bad_url)
            message = str(refused.value)
            assert "refused the credentials" in message, message
            assert redact(bad_url) in message
            for secret in (password, encoded, wrong_password):
                assert secret not in message
            with pytest.raises(OnlineStoreUnavailable):
                feature_store(bad_url, "p").get_online_features([{"customer_id": 1}],
                                                                 features=["customer_profile:first_name"])

    assert redact(url) == f"redis://:***@127.0.0.1:{server.port}/0"
    assert password not in redact(url) and encoded not in redact(url)
    assert redact("rediss://default:pw@cache:6380/2?ssl_ca_certs=/ca.pem") == \
        "rediss://default:***@cache:6380/2?ssl_ca_certs=/ca.pem"
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert scrub(f"failed for {encoded}", url) == "failed for ***"


# -- Redis Cluster ---------------------------------------------------------------------------

def test_redis_cluster_same_code_path_never_regresses():
    project = new_project()
    t1, t2, t3 = T0 + HOUR, T0 + 2 * HOUR, T0 + 3 * HOUR
    entities = list(range(1, 301))
    with start_cluster(masters=3) as cluster:
        client = connect(cluster.url)  # detected as a cluster, no ?cluster=true needed
        assert isinstance(client, RedisCluster)
        store = RedisOnlineStore(client, project)
        assert store.is_cluster

        assert write(store, customer_profile, [{"customer_id": e, "valid_from": t2, **PROFILE_1,
                                                "first_name": f"v2-{e}"} for e in entities]).applied == 300
        assert write(store, customer_profile, [{"customer_id": e, "valid_from": t1, **PROFILE_1,
                                                "first_name": "older"} for e in entities]).applied == 0
        evens = [e for e in entities if e % 2 == 0]
        assert write(store, customer_profile, [{"customer_id": e, "valid_from": t2, "first_name": f"fix-{e}"}
                                               for e in evens]).applied == len(evens)
        fives = [e for e in entities if e % 5 == 0]
        assert write(store, customer_profile, [{"customer_id": e, "valid_from": t3, "_deleted": True}
                                               for e in fives]).applied == len(fives)
        assert write(store, customer_profile, [{"customer_id": e, "valid_from": t2, **PROFILE_1}
                                               for e in fives]).applied == 0  # no resurrection
        assert store.advance_synced_through(customer_profile, t3)
        assert not store.advance_synced_through(customer_profile, t1)

        # The keys really are spread over the three masters.
        for node in cluster.nodes:
            node_client = node.client()
            assert node_client.dbsize() > 0
            node_client.close()
        assert sorted(int(k) for k in store.entity_keys(customer_profile)) == entities

        served = feature_store(cluster.url, project).get_online_features(
            [{"customer_id": e} for e in entities],
            features=["customer_profile:first_name", "customer_profile:last_name"], request_time=t3 + HOUR)
        assert served.stale == []
        expected_first = [None if e % 5 == 0 else f"fix-{e}" if e % 2 == 0 else f"v2-{e}" for e in entities]
        expected_last = [None if e % 5 == 0 or e % 2 == 0 else "Lee" for e in entities]
        assert plain(served["first_name"]) == expected_first
        assert plain(served["last_name"]) == expected_last
        client.close()
