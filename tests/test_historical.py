"""Historical retrieval: the ASOF lookup, TTL and horizon edges, empty values, row order.

Histories are written directly with OfflineFeatureStore, so these tests pin down the
retrieval rules (docs/semantics.md, rules 4 and 6) independently of the engines.
"""

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest

from assets.feature_views import customer_orders, customer_profile, product_sales
from feature_platform.config import Settings
from feature_platform.feature_store import FeatureStore
from feature_platform.historical import EntityFrameError
from feature_platform.offline_store import OfflineFeatureStore
from feature_platform.registry import Registry, UnknownFeatureError
from feature_platform.storage import Store

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def at(hours: float) -> datetime:
    return START + timedelta(hours=hours)


def orders_rows(rows: list[dict]) -> pa.Table:
    """History rows of customer_orders; unspecified features are null."""
    schema = customer_orders.history_schema()
    columns = {name: [row.get(name) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


def profile_rows(rows: list[dict]) -> pa.Table:
    schema = customer_profile.history_schema()
    columns = {name: [row.get(name, False if name == "_deleted" else None) for row in rows] for name in schema.names}
    return pa.Table.from_pydict(columns, schema=schema)


@pytest.fixture
def store(tmp_path) -> FeatureStore:
    settings = Settings(landing_uri=str(tmp_path / "landing"), offline_uri=str(tmp_path / "offline"),
                        redis_url=None, project="t", partitions_start=START)
    registry = Registry.of([customer_orders, customer_profile, product_sales])
    return FeatureStore(settings, registry)


def write_hours(store: FeatureStore, view, rows_by_hour: dict[int, pa.Table], as_of: datetime | None = None):
    offline = OfflineFeatureStore(Store(store.settings.project_offline_root))
    last = max(rows_by_hour)
    for hour in range(last + 1):
        rows = rows_by_hour.get(hour, view.history_schema().empty_table())
        end = at(hour + 1)
        offline.write_partition(view, at(hour), rows, min(end, as_of) if as_of and hour == last else end)


def spend(value: str) -> Decimal:
    return Decimal(value)


def test_asof_lookup_keeps_every_row_in_order_with_duplicates(store):
    write_hours(store, customer_orders, {
        0: orders_rows([{"customer_id": 1, "valid_from": at(0.5), "order_count_30d": 1, "total_spend_30d": spend("10.00")}]),
        2: orders_rows([{"customer_id": 1, "valid_from": at(2.25), "order_count_30d": 2, "total_spend_30d": spend("25.50")},
                        {"customer_id": 2, "valid_from": at(2.5), "order_count_30d": 1, "total_spend_30d": spend("7.00")}]),
    })
    entity_df = pd.DataFrame({
        "customer_id": [2, 1, 1, 1, 1],
        "event_timestamp": [at(2.5), at(0.5) - timedelta(microseconds=1), at(0.5), at(2.25), at(2.25)],
        "label": ["a", "b", "c", "d", "e"],
    })
    result = store.get_historical_features(entity_df, features=["customer_orders:order_count_30d",
                                                                 "customer_orders:total_spend_30d"])
    assert list(result["label"]) == ["a", "b", "c", "d", "e"]  # order and extra columns kept
    # Just before the first change the customer had nothing in the window: count 0, sum 0.
    assert list(result["order_count_30d"]) == [1, 0, 1, 2, 2]
    assert list(result["total_spend_30d"]) == [7.0, 0.0, 10.0, 25.5, 25.5]


def test_exact_decimals_on_request(store):
    write_hours(store, customer_orders, {0: orders_rows([
        {"customer_id": 1, "valid_from": at(0.1), "order_count_30d": 1, "total_spend_30d": spend("0.10")}])})
    result = store.get_historical_features(
        pd.DataFrame({"customer_id": [1, 2], "event_timestamp": [at(0.5), at(0.5)]}),
        features=["customer_orders:total_spend_30d"], decimals="decimal")
    assert list(result["total_spend_30d"]) == [Decimal("0.10"), Decimal("0.00")]


def test_ttl_edge_past_the_horizon_is_inclusive(store):
    write_hours(store, customer_orders, {0: orders_rows([
        {"customer_id": 1, "valid_from": at(0.5), "order_count_30d": 3}])})
    horizon = at(1)
    ttl = customer_orders.ttl
    entity_df = pd.DataFrame({"customer_id": [1, 1, 1],
                              "event_timestamp": [horizon, horizon + ttl, horizon + ttl + timedelta(microseconds=1)]})
    result = store.get_historical_features(entity_df, features=["customer_orders:order_count_30d",
                                                                 "customer_orders:days_since_last_order"])
    assert result["order_count_30d"].tolist()[:2] == [3, 3]
    assert pd.isna(result["order_count_30d"].iloc[2])  # knowledge older than the TTL: null
    assert pd.isna(result["days_since_last_order"].iloc[2])


def test_horizon_stops_at_the_first_gap(store):
    offline = OfflineFeatureStore(Store(store.settings.project_offline_root))
    empty = customer_orders.history_schema().empty_table()
    offline.write_partition(customer_orders, at(0), orders_rows([
        {"customer_id": 1, "valid_from": at(0.5), "order_count_30d": 1}]), at(1))
    # hour 1 is missing; hour 2 exists but must not count.
    offline.write_partition(customer_orders, at(2), empty, at(3))
    assert offline.horizon(customer_orders, START) == at(1)


def test_current_hour_horizon_is_its_as_of(store):
    write_hours(store, customer_orders, {1: orders_rows([
        {"customer_id": 1, "valid_from": at(1.2), "order_count_30d": 1}])}, as_of=at(1.5))
    offline = OfflineFeatureStore(Store(store.settings.project_offline_root))
    assert offline.horizon(customer_orders, START) == at(1.5)


def test_no_materialized_history_means_null_not_zero(store):
    result = store.get_historical_features(pd.DataFrame({"customer_id": [1], "event_timestamp": [at(1)]}),
                                           features=["customer_orders:order_count_30d"])
    assert pd.isna(result["order_count_30d"].iloc[0])


def test_latest_state_null_value_does_not_fall_back_and_deleted_is_null(store):
    write_hours(store, customer_profile, {0: profile_rows([
        {"customer_id": 7, "valid_from": at(0.1), "email": "a@x", "biography_length": 5},
        {"customer_id": 7, "valid_from": at(0.2), "email": None, "biography_length": 5},
        {"customer_id": 7, "valid_from": at(0.3), "_deleted": True},
    ])})
    result = store.get_historical_features(
        pd.DataFrame({"customer_id": [7, 7, 7, 8], "event_timestamp": [at(0.15), at(0.25), at(0.35), at(0.35)]}),
        features=["customer_profile:email", "customer_profile:biography_length"])
    assert result["email"].iloc[0] == "a@x"
    assert result["email"].iloc[1] is None  # the newest value is null: no older fallback
    assert result["biography_length"].iloc[1] == 5
    assert result["email"].iloc[2] is None and pd.isna(result["biography_length"].iloc[2])  # deleted
    assert pd.isna(result["biography_length"].iloc[3])  # never existed


def test_several_views_where_one_misses(store):
    write_hours(store, customer_orders, {0: orders_rows([
        {"customer_id": 1, "valid_from": at(0.5), "order_count_30d": 4, "is_high_value": True}])})
    write_hours(store, customer_profile, {0: profile_rows([
        {"customer_id": 2, "valid_from": at(0.5), "email": "b@x"}])})
    result = store.get_historical_features(
        pd.DataFrame({"customer_id": [1, 2], "event_timestamp": [at(0.9), at(0.9)]}),
        features=["customer_profile:email", "customer_orders:order_count_30d", "customer_orders:is_high_value"],
        full_feature_names=True)
    assert list(result.columns) == ["customer_id", "event_timestamp", "customer_profile__email",
                                    "customer_orders__order_count_30d", "customer_orders__is_high_value"]
    assert result["customer_profile__email"].tolist() == [None, "b@x"]
    assert result["customer_orders__order_count_30d"].tolist() == [4, 0]
    # With no orders, derived features follow from the empty values: not high value.
    assert result["customer_orders__is_high_value"].tolist() == [True, False]


def test_iso_strings_and_naive_timestamps_are_utc(store):
    write_hours(store, customer_orders, {0: orders_rows([
        {"customer_id": 1, "valid_from": at(0.5), "order_count_30d": 1}])})
    as_text = store.get_historical_features(
        pd.DataFrame({"customer_id": [1], "event_timestamp": ["2026-03-01T00:30:00Z"]}),
        features=["customer_orders:order_count_30d"])
    naive = store.get_historical_features(
        pd.DataFrame({"customer_id": [1], "event_timestamp": [pd.Timestamp("2026-03-01 00:29:59")]}),
        features=["customer_orders:order_count_30d"])
    assert as_text["order_count_30d"].tolist() == [1]
    assert naive["order_count_30d"].tolist() == [0]


def test_clear_errors(store):
    frame = pd.DataFrame({"customer_id": [1], "event_timestamp": [at(0)]})
    with pytest.raises(UnknownFeatureError, match="unknown feature 'customer_orders:nope'"):
        store.get_historical_features(frame, features=["customer_orders:nope"])
    with pytest.raises(UnknownFeatureError, match="unknown feature view 'nope'"):
        store.get_historical_features(frame, features=["nope:x"])
    with pytest.raises(UnknownFeatureError, match="unknown feature service"):
        store.get_historical_features(frame, service="nope")
    with pytest.raises(EntityFrameError, match="product_id"):
        store.get_historical_features(frame, features=["product_sales:units_sold_7d"])
    with pytest.raises(EntityFrameError, match="event_timestamp"):
        store.get_historical_features(pd.DataFrame({"customer_id": [1], "event_timestamp": ["yesterday"]}),
                                      features=["customer_orders:order_count_30d"])
    with pytest.raises(EntityFrameError, match="integer keys"):
        store.get_historical_features(pd.DataFrame({"customer_id": ["abc"], "event_timestamp": [at(0)]}),
                                      features=["customer_orders:order_count_30d"])
