"""Checks that gate: bad partitions never reach Redis; skew is caught; WARN lets values through.

Real Dagster runs (``dagster.materialize`` over the library's asset factories), real Redis,
change logs written by the real CDC path from Debezium envelopes.
"""

import dataclasses
import json
import os
import uuid
from datetime import datetime, timedelta, timezone

import dagster as dg
import pytest
import redis
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.feature_views import product_inventory
from assets.sources import products_on_hand
from feature_platform.checks import CheckConfig
from feature_platform.offline_store import OfflineFeatureStore
from feature_platform.online_store import RedisOnlineStore, ValueLayout
from feature_platform.orchestration.change_log_assets import build_change_log_asset
from feature_platform.orchestration.feature_checks import DRIFT_CHECK, MISSING_VALUES_CHECK
from feature_platform.orchestration.feature_view_assets import build_feature_view_asset
from feature_platform.orchestration.online_assets import SKEW_CHECK, RedisResource, build_online_asset, evaluate_skew
from feature_platform.orchestration.partitions import hourly_partitions, partition_key_of
from feature_platform.redis_client import connect
from tests.conftest import make_stores, ms, write_landing_file

REDIS_URL = os.environ.get("FP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
START = datetime(2026, 3, 1, tzinfo=timezone.utc)
PARTITIONS = hourly_partitions(START)
PRODUCTS = range(101, 141)  # 40 products: enough rows for the drift statistics


def stock_line(product: int, quantity: int | None, lsn: int, commit: datetime) -> str:
    """A schemaless Debezium update of products_on_hand (bare payload, as the S3 sink writes it)."""
    return json.dumps({"before": None, "after": {"product_id": product, "quantity": quantity},
                       "source": {"connector": "postgresql", "ts_ms": ms(commit), "snapshot": "false",
                                  "table": "products_on_hand", "txId": lsn, "lsn": lsn},
                       "op": "u", "ts_ms": ms(commit) + 500})


class Pipeline:
    """products_on_hand → cdc → features/<view> → online/<view>, for one view, with real stores."""

    def __init__(self, tmp_path, view):
        self.view = view
        self.stores = make_stores(tmp_path)
        self.project = f"checks_{uuid.uuid4().hex[:8]}"
        self.resources = {
            "landing": self.stores.landing_resource,
            "offline": self.stores.offline_resource,
            "redis": RedisResource(url=REDIS_URL, project=self.project),
        }
        self.assets = [build_change_log_asset(products_on_hand, PARTITIONS),
                       build_feature_view_asset(view, PARTITIONS), build_online_asset(view, PARTITIONS)]
        self.instance = dg.DagsterInstance.ephemeral()
        self.lsn = 1000
        self.files = 0

    def land(self, quantities: dict[int, int | None], commit: datetime) -> None:
        lines = []
        for product, quantity in quantities.items():
            self.lsn += 1
            lines.append(stock_line(product, quantity, self.lsn, commit))
        topic = products_on_hand.topic
        write_landing_file(self.stores.landing_dir, f"topics/{topic}/partition=0/{topic}+0+{self.files:010d}.json",
                           lines)
        self.files += 1

    def run(self, first_hour: datetime, last_hour: datetime) -> dg.ExecuteInProcessResult:
        tags = {ASSET_PARTITION_RANGE_START_TAG: partition_key_of(first_hour),
                ASSET_PARTITION_RANGE_END_TAG: partition_key_of(last_hour)}
        return dg.materialize(self.assets, resources=self.resources, instance=self.instance, tags=tags,
                              raise_on_error=False)

    @property
    def online(self) -> RedisOnlineStore:
        return RedisOnlineStore(connect(REDIS_URL), self.project)

    def checks(self, result, name):
        return [e for e in result.get_asset_check_evaluations() if e.check_name == name]

    def materialized(self, result, prefix):
        return [e for e in result.get_asset_materialization_events() if e.asset_key.path[0] == prefix]

    def cleanup(self):
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"fp:{self.project}:*", count=1000):
            client.delete(key)


@pytest.fixture
def pipeline(tmp_path):
    made = []

    def make(view):
        made.append(Pipeline(tmp_path / view.name, view))
        return made[-1]

    yield make
    for p in made:
        p.cleanup()


def steady_history(p: Pipeline, days: int = 2) -> datetime:
    """Stock levels drawn around 50 every hour for ``days``; returns the end of that history."""
    import random

    rng = random.Random(3)
    p.land({product: rng.randint(40, 60) for product in PRODUCTS}, START + timedelta(minutes=5))
    for hour in range(1, days * 24):
        p.land({product: rng.randint(40, 60) for product in rng.sample(list(PRODUCTS), 35)},
               START + timedelta(hours=hour, minutes=7))
    end = START + timedelta(days=days)
    result = p.run(START, end - timedelta(hours=1))
    assert result.success
    return end


def test_a_null_burst_fails_the_check_and_never_reaches_redis(pipeline):
    p = pipeline(product_inventory)
    end = steady_history(p)
    before = {k: p.online.stored_fields(p.view, k) for k in PRODUCTS}
    synced_before = p.online.synced_through(p.view)
    assert synced_before == end

    p.land({product: None for product in PRODUCTS}, end + timedelta(minutes=10))  # an outage nulls the stock
    result = p.run(end, end)
    [missing] = p.checks(result, MISSING_VALUES_CHECK)
    assert not missing.passed and missing.severity == dg.AssetCheckSeverity.ERROR
    assert missing.metadata["null_fraction/quantity_on_hand"].value == 1.0
    assert "quantity_on_hand" in missing.description
    assert not p.materialized(result, "online"), "the online table must not be materialized"
    assert {k: p.online.stored_fields(p.view, k) for k in PRODUCTS} == before
    assert p.online.synced_through(p.view) == synced_before

    # A later run (the next hour) still holds the bad hour back from Redis.
    p.land({101: 55}, end + timedelta(hours=1, minutes=5))
    later = p.run(end + timedelta(hours=1), end + timedelta(hours=1))
    assert p.online.synced_through(p.view) == synced_before
    assert p.online.stored_fields(p.view, 101) == before[101]
    assert later is not None


def test_a_shifted_distribution_fails_drift_but_a_steady_one_never_does(pipeline):
    p = pipeline(product_inventory)
    end = steady_history(p, days=3)
    # Hour after hour of the same distribution: drift never fires (no flapping at the defaults).
    import random

    rng = random.Random(11)
    for hour in range(6):
        moment = end + timedelta(hours=hour)
        p.land({product: rng.randint(40, 60) for product in PRODUCTS}, moment + timedelta(minutes=3))
        result = p.run(moment, moment)
        [drift] = p.checks(result, DRIFT_CHECK)
        assert drift.passed, drift.description
        assert drift.metadata["current_rows"].value == len(PRODUCTS)
    shifted_hour = end + timedelta(hours=6)
    p.land({product: rng.randint(400, 600) for product in PRODUCTS}, shifted_hour + timedelta(minutes=3))
    result = p.run(shifted_hour, shifted_hour)
    [drift] = p.checks(result, DRIFT_CHECK)
    assert not drift.passed
    assert "quantity_on_hand" in drift.description
    assert drift.metadata["psi/quantity_on_hand"].value > 0.25
    plot = drift.metadata["plot/quantity_on_hand"].value
    with open(plot, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not p.materialized(result, "online")


def test_warn_severity_lets_the_sync_through_and_shows_the_failure(pipeline):
    view = dataclasses.replace(product_inventory, name="product_inventory_warn",
                               checks=CheckConfig(severity="WARN"))
    p = pipeline(view)
    end = steady_history(p)
    p.land({product: None for product in PRODUCTS}, end + timedelta(minutes=10))
    result = p.run(end, end)
    [missing] = p.checks(result, MISSING_VALUES_CHECK)
    assert not missing.passed and missing.severity == dg.AssetCheckSeverity.WARN
    assert p.materialized(result, "online")
    assert p.online.synced_through(view) == end + timedelta(hours=1)
    assert "quantity_on_hand" not in p.online.stored_fields(view, 101)  # the null got through


def test_a_corrupted_redis_value_fails_the_skew_check_naming_it(pipeline):
    p = pipeline(product_inventory)
    steady_history(p)
    offline = OfflineFeatureStore(p.stores.offline)
    clean = evaluate_skew(p.view, offline, START, p.online)
    assert clean.passed, clean.description
    # Corrupt the stored value in place, as a stray writer would (the packed row's field for it).
    key = p.online.key(p.view, 117)
    fields = p.online.client.get(key).split(b"\x1f")
    fields[3 + ValueLayout.of(p.view).names.index("quantity_on_hand")] = b"999999"
    p.online.client.set(key, b"\x1f".join(fields))
    corrupted = evaluate_skew(p.view, offline, START, p.online)
    assert corrupted.check_name == SKEW_CHECK and not corrupted.passed
    assert corrupted.metadata["mismatches"].value == 1
    sample = corrupted.metadata["mismatch_sample"].value
    assert "117" in sample and "quantity_on_hand" in sample and "999999" in sample
