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


# -- against the brute-force oracle ------------------------------------------------------------------
#
# Random small change logs of orders and customers (tests/test_pandas_engine.py's generator:
# snapshots, PK changes, deletes, truncates, TOAST, commits out of lsn order) become hourly
# history partitions up to a random horizon per view, through the pandas engine; random entity
# rows at window edges, change points and TTL edges are then looked up and compared with
# tests/oracle.py, which knows nothing about histories, partitions or DuckDB.

import math  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from assets.sources import customers, orders  # noqa: E402
from feature_platform.engines.pandas_engine import HistoryRange, compute_history  # noqa: E402

try:
    import oracle  # pytest puts tests/ on sys.path (no __init__.py there)
    import test_pandas_engine as generated
except ImportError:  # pragma: no cover
    from tests import oracle
    from tests import test_pandas_engine as generated

BASE = generated.BASE  # the generated change logs start here
US = timedelta(microseconds=1)
ORDER_FEATURES = ["order_count_30d", "total_spend_30d", "avg_order_value_30d", "order_value_stddev_30d",
                  "last_order_date", "is_high_value", "avg_days_between_orders", "days_since_last_order"]
PROFILE_FEATURES = ["email", "biography_length"]
REQUESTED = [f"customer_orders:{f}" for f in ORDER_FEATURES] + [f"customer_profile:{f}" for f in PROFILE_FEATURES]


def oracle_store(tmp_path_factory) -> FeatureStore:
    root = tmp_path_factory.mktemp("historical")
    settings_ = Settings(landing_uri=str(root / "landing"), offline_uri=str(root / "offline"), redis_url=None,
                         project="oracle", partitions_start=BASE)
    return FeatureStore(settings_, Registry.of([customer_orders, customer_profile, product_sales]))


def materialize(store: FeatureStore, view, history: pa.Table, hours: range):
    """Write the history's rows as hourly partitions (the first holds everything before it)."""
    offline = OfflineFeatureStore(Store(store.settings.project_offline_root))
    valid_from = history.column("valid_from").to_pylist()
    for hour in hours:
        start, end = BASE + hour * HOUR, BASE + (hour + 1) * HOUR
        keep = [(hour == 0 or start <= t) and t < end for t in valid_from]
        offline.write_partition(view, start, history.filter(pa.array(keep, type=pa.bool_())), end)


def expected_row(rows: list[dict], view, key, moment: datetime, horizon: datetime, features: list[str]) -> dict:
    """The oracle's answer for one entity row of one view (semantics rules 4 and 6)."""
    if moment - horizon > view.ttl:
        return {name: None for name in features}  # knowledge too stale: null
    # Partitions hold valid_from < horizon: at or past the horizon, the value just before it.
    as_of = moment if moment < horizon else horizon - US
    values = oracle.values_at(rows, view, as_of).get(key)
    if view.is_aggregation_view and values is None:
        values = oracle.empty_values(view)
    if values is oracle.ABSENT or values is None:
        values = {}
    result = {name: values.get(name) for name in features if name != "days_since_last_order"}
    if "days_since_last_order" in features:
        last = values.get("last_order_date")
        result["days_since_last_order"] = None if last is None else math.floor((moment - last) / timedelta(days=1))
    return result


def plain(value):
    """A retrieved value as a comparable Python value (nulls as None)."""
    if value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if hasattr(value, "item") else value


@st.composite
def entity_rows(draw, order_rows, customer_rows, horizons) -> pd.DataFrame:
    """Keys with and without history, at change points, window edges and TTL edges, duplicated."""
    points = set()
    for rows, view in ((order_rows, customer_orders), (customer_rows, customer_profile)):
        points |= {p for p in generated.change_points(rows, view) if p < BASE + 60 * HOUR}
    for horizon in horizons:
        for ttl in (customer_orders.ttl, customer_profile.ttl):
            points |= {horizon - US, horizon, horizon + US, horizon + ttl, horizon + ttl + US}
    chosen = draw(st.lists(st.tuples(st.sampled_from([1, 2, 3, 4, 5]), st.sampled_from(sorted(points))),
                           min_size=1, max_size=25))
    chosen += draw(st.lists(st.sampled_from(chosen), max_size=3))  # duplicate entity rows
    return pd.DataFrame({"customer_id": [k for k, _ in chosen], "event_timestamp": [t for _, t in chosen]})


def late_transaction(rows: list[dict], index: int) -> tuple[list[dict], datetime]:
    """The log without one transaction (every row of one lsn), and that transaction's commit."""
    lsns = sorted({r["_lsn"] for r in rows})
    lsn = lsns[index % len(lsns)]
    return [r for r in rows if r["_lsn"] != lsn], min(r["_commit_time"] for r in rows if r["_lsn"] == lsn)


EXAMPLES = settings(max_examples=max(1, int(25 * generated.SCALE)), deadline=None, phases=generated.PHASES,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


@EXAMPLES
@given(order_rows=generated.change_logs(max_steps=8, disorder=True),
       customer_rows=generated.change_logs(source=customers, max_steps=6, disorder=True),
       order_hours=st.integers(1, 48), profile_hours=st.integers(1, 48), late=st.integers(0, 100),
       data=st.data())
def test_historical_features_match_the_oracle(tmp_path_factory, order_rows, customer_rows, order_hours,
                                              profile_hours, late, data):
    """Every entity row gets, per view, the oracle's value at its timestamp (or, past the horizon,
    at the horizon while within the TTL, null beyond): exact window and TTL edges, entities with
    no history, a null latest value, duplicate rows, two views of which one may miss (different
    sources and horizons), deletes and PK changes in the logs. The orders history is first built
    without one transaction, which then lands late: only the partitions from its commit hour on
    are rewritten, as the CDC sensor requests them."""
    store = oracle_store(tmp_path_factory)
    order_horizon, profile_horizon = BASE + order_hours * HOUR, BASE + profile_hours * HOUR
    # The late correction: the history without the late transaction, then its hours rewritten.
    early_rows, landed = late_transaction(order_rows, late)
    everything = HistoryRange(None, 2**62)
    materialize(store, customer_orders, compute_history(generated.to_table(early_rows, orders), customer_orders,
                                                        everything), range(order_hours))
    first_affected = max(0, int((landed - BASE) // HOUR))
    materialize(store, customer_orders, compute_history(generated.to_table(order_rows, orders), customer_orders,
                                                        everything), range(min(first_affected, order_hours), order_hours))
    materialize(store, customer_profile, compute_history(generated.to_table(customer_rows, customers),
                                                         customer_profile, everything), range(profile_hours))
    entity_df = data.draw(entity_rows(order_rows, customer_rows, [order_horizon, profile_horizon]))
    result = store.get_historical_features(entity_df, features=REQUESTED, decimals="decimal")
    assert len(result) == len(entity_df)
    assert result["customer_id"].tolist() == entity_df["customer_id"].tolist()  # order and duplicates kept
    problems = []
    for index, (key, moment) in enumerate(zip(entity_df["customer_id"], entity_df["event_timestamp"])):
        moment = moment.to_pydatetime() if isinstance(moment, pd.Timestamp) else moment
        for view, rows, horizon, features in ((customer_orders, order_rows, order_horizon, ORDER_FEATURES),
                                              (customer_profile, customer_rows, profile_horizon, PROFILE_FEATURES)):
            expected = expected_row(rows, view, key, moment, horizon, features)
            for name in features:
                actual = plain(result[name].iloc[index])
                if actual != expected[name] or type(actual) is bool and type(expected[name]) is not bool:
                    problems.append(f"row {index} customer {key} at {moment.isoformat()} {view.name}:{name}: "
                                    f"oracle {expected[name]!r}, retrieved {actual!r}")
    assert not problems, "\n".join(problems[:10]) + f"\n(horizons: orders {order_horizon}, profile {profile_horizon};" \
        f" late transaction committed {landed})\n" + generated.report([], order_rows)


@settings(EXAMPLES, max_examples=1, derandomize=True)
@given(order_rows=generated.change_logs(max_steps=8, disorder=True),
       customer_rows=generated.change_logs(source=customers, max_steps=6, disorder=True),
       hours=st.integers(1, 30), data=st.data())
def test_historical_features_from_spark_histories_equal_pandas(tmp_path_factory, order_rows, customer_rows, hours,
                                                               data):
    """The same training frame, to the bit, whether the histories came from pandas or Spark."""
    from feature_platform.engines.spark_engine import compute_history_spark
    from feature_platform.engines.spark_session import get_spark

    spark = get_spark()
    everything = HistoryRange(None, 2**62)
    frames = []
    for engine in ("pandas", "spark"):
        store = oracle_store(tmp_path_factory)
        for view, rows, source in ((customer_orders, order_rows, orders), (customer_profile, customer_rows, customers)):
            table = generated.to_table(rows, source)
            history = compute_history(table, view, everything) if engine == "pandas" else \
                compute_history_spark(spark, table, view, everything)
            materialize(store, view, history, range(hours))
        frames.append(store)
    entity_df = data.draw(entity_rows(order_rows, customer_rows, [BASE + hours * HOUR]))
    pandas_frame, spark_frame = (store.get_historical_features(entity_df, features=REQUESTED, decimals="decimal")
                                 for store in frames)
    pd.testing.assert_frame_equal(pandas_frame, spark_frame, check_exact=True)
