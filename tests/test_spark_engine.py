"""Parity of the Spark engine with the pandas engine (the reference), bit for bit.

For every demo feature view, ``compute_history_spark`` must return exactly the Arrow table
``compute_history`` returns (``pa.Table.equals``: schema, rows, order, float bits) on

* the real Debezium 3.6.3 captures in ../shared/cdc/samples, staged and built with ``ChangeLog``;
* change logs that hypothesis generates: random keys and ops (c/u/d/r), truncates, TOASTed
  biographies, orders moving between purchasers and products, primary-key changes (d + c
  at one lsn), several changes in one transaction, order dates near window edges;
* a small landing zone from the demo generator, when it is there.

One SparkSession serves the whole module (it takes seconds to start).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from assets.entities import product
from assets.feature_views import customer_orders, customer_profile, product_inventory, product_sales
from assets.sources import SOURCE_TABLES, customers, orders, products_on_hand
from feature_platform.cdc.change_log import ChangeLog, change_log_schema
from feature_platform.engines.pandas_engine import HistoryRange, compute_history
from feature_platform.engines.spark_engine import compute_history_spark
from feature_platform.engines.spark_session import get_spark
from feature_platform.expressions import INT, col, when
from feature_platform.feature_view import Aggregation, Derived, FeatureView, RowTransform
from feature_platform.storage import Store

try:
    from conftest import CAPTURED as SAMPLES  # the captured Debezium 3.6.3 samples (FP_CDC_SAMPLES)
except ImportError:  # pragma: no cover
    from tests.conftest import CAPTURED as SAMPLES
VIEWS_OF = {"orders": (customer_orders, product_sales), "customers": (customer_profile,),
            "products_on_hand": (product_inventory,)}
ALL_VIEWS = (customer_orders, product_sales, customer_profile, product_inventory)
EVERYTHING = HistoryRange(None, 2**62)
HOUR = 3_600_000_000
DAY = 24 * HOUR
T0 = 1_767_225_600_000_000  # 2026-01-01T00:00Z in microseconds


@pytest.fixture(scope="module")
def spark():
    return get_spark()


def assert_parity(spark, change_log, view, emit=EVERYTHING, paths=None) -> pa.Table:
    expected = compute_history(change_log, view, emit)
    actual = compute_history_spark(spark, paths if paths is not None else change_log, view, emit)
    if not actual.equals(expected):
        raise AssertionError(_difference(view, expected, actual))
    return expected


def _difference(view, expected: pa.Table, actual: pa.Table) -> str:
    lines = [f"{view.name}: Spark differs from pandas"]
    if expected.schema != actual.schema:
        lines += ["schema expected:", str(expected.schema), "schema actual:", str(actual.schema)]
    left, right = expected.to_pylist(), actual.to_pylist()
    lines.append(f"rows expected {len(left)}, actual {len(right)}")
    for index in range(max(len(left), len(right))):
        a = left[index] if index < len(left) else None
        b = right[index] if index < len(right) else None
        if a != b or (a is not None and any(repr(a[k]) != repr(b[k]) for k in a)):
            lines.append(f"first difference at row {index}:\n  pandas {a}\n  spark  {b}")
            break
    return "\n".join(lines)


# -- the real Debezium samples ---------------------------------------------------------------

def _land_samples(landing: Path) -> None:
    """Put every captured sample where the S3 sink would have landed it: one file per message file."""
    assert SAMPLES.is_dir(), f"Debezium samples not found at {SAMPLES} (set FP_CDC_SAMPLES)"
    offset = 0
    for path in sorted(SAMPLES.glob("*.json*")):
        if ".keys." in path.name or "transaction-metadata" in path.name:
            continue
        text = path.read_text()
        for table in SOURCE_TABLES:
            if f'"{table.name}"' not in text and table.topic not in text:
                continue
            folder = landing / "topics" / table.topic / "partition=0"
            folder.mkdir(parents=True, exist_ok=True)
            stem = f"{table.topic}+0+{offset:010d}"
            shutil.copy(path, folder / f"{stem}.json")
            keys = path.with_name(path.name.replace(".values.", ".keys.") if ".values." in path.name
                                  else path.name.replace(".jsonl", ".keys.jsonl"))
            if keys != path and keys.exists():
                shutil.copy(keys, folder / f"{stem}.keys.json")
            offset += 1
    # The raw captures hold (topic, key, value) per message: land them as value and key files.
    for path in sorted((SAMPLES / "raw").glob("*.capture.jsonl")):
        by_topic: dict[str, list[dict]] = {}
        for line in path.read_text().splitlines():
            if line.strip():
                message = json.loads(line)
                by_topic.setdefault(message["topic"], []).append(message)
        for table in SOURCE_TABLES:
            messages = by_topic.get(table.topic, [])
            if not messages:
                continue
            folder = landing / "topics" / table.topic / "partition=0"
            folder.mkdir(parents=True, exist_ok=True)
            stem = f"{table.topic}+0+{offset:010d}"
            (folder / f"{stem}.json").write_text("".join(json.dumps(m["value"]) + "\n" for m in messages))
            (folder / f"{stem}.keys.json").write_text("".join(json.dumps(m["key"]) + "\n" for m in messages))
            offset += 1


def _build_everything(offline: Store, landing: Store, table) -> tuple[pa.Table, str]:
    """Stage every landed file of ``table`` and build one partition holding all of it."""
    change_log = ChangeLog(offline, table)
    change_log.stage_pending(landing)
    start = datetime(2099, 1, 1, tzinfo=timezone.utc)
    built = change_log.build(start, start + timedelta(hours=1), is_first_partition=True)
    path = change_log.write(start, built)
    return built.table, offline.local_path(path)


@pytest.fixture(scope="module")
def sample_change_logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples")
    _land_samples(root / "landing")
    landing, offline = Store(str(root / "landing")), Store(str(root / "offline"))
    return {table.name: _build_everything(offline, landing, table) for table in SOURCE_TABLES}


def test_samples_decode_into_change_logs(sample_change_logs):
    assert sample_change_logs["orders"][0].num_rows >= 10
    assert sample_change_logs["customers"][0].num_rows >= 2
    ops = set(sample_change_logs["orders"][0].column("_op").to_pylist())
    assert {"r", "c", "u", "d"} <= ops


@pytest.mark.parametrize("view", ALL_VIEWS, ids=lambda v: v.name)
def test_parity_on_debezium_samples(spark, sample_change_logs, view):
    table, path = sample_change_logs[view.source.name]
    # The whole history, Spark reading the built Parquet partition itself.
    expected = assert_parity(spark, table, view, paths=[path])
    if table.num_rows:
        assert expected.num_rows > 0
    # A range that starts inside the history exercises the pruning of finished memberships.
    commits = table.column("_commit_time").cast(pa.int64()).to_pylist()
    if commits:
        middle = sorted(commits)[len(commits) // 2]
        assert_parity(spark, table, view, HistoryRange(middle, middle + 40 * DAY))


# -- generated change logs -------------------------------------------------------------------

GAPS = [0, 0, 1, 1_000_000, 59 * 60_000_000, HOUR, 3 * HOUR, DAY - 1, DAY, 2 * DAY, 6 * DAY, 7 * DAY, 23 * DAY]


@st.composite
def change_logs(draw, table, max_steps: int = 30):
    """A random change log of ``table``: transactions of c/u/d/r changes, truncates, PK changes.

    Commit times sit on a coarse grid (hours, days) so that commits, order dates and window
    ends coincide often: ties are where engines disagree if they are going to.
    """
    schema = change_log_schema(table)
    rows: list[dict] = []
    alive: dict[int, dict] = {}  # pk -> current values (what the database holds)
    lsn, commit = 1000, T0 + draw(st.sampled_from([0, HOUR, 12 * HOUR]))
    key_name = table.primary_key[0]
    keys = list(range(1, 7)) if table is not orders else list(range(10001, 10009))

    def values_for(key: int, previous: dict | None) -> dict:
        if table is orders:
            day = (commit // DAY) * DAY
            values = {
                "id": key,
                "order_date": day + DAY * draw(st.sampled_from([0, 0, -1, -6, -7, -8, -29, -30, -31, 1, 2])),
                "purchaser": draw(st.sampled_from([1001, 1002, 1003, None] if draw(st.booleans()) else [1001, 1002])),
                "quantity": draw(st.one_of(st.integers(1, 5), st.just(None))) if draw(st.integers(0, 9)) == 0
                else draw(st.integers(1, 5)),
                "product_id": draw(st.sampled_from([101, 102, 103])),
                "unit_price": Decimal(draw(st.sampled_from([1, 99, 1999, 6450, 123456, 9999999]))) / 100,
            }
            if previous is not None and draw(st.booleans()):
                # An update that changes one thing: the order moves, or its quantity changes.
                field = draw(st.sampled_from(["purchaser", "product_id", "quantity", "order_date", "unit_price"]))
                values = {**previous, field: values[field]}
            return values
        if table is customers:
            biography = draw(st.sampled_from([None, "", "Likes tea.", "ü" * 40, "long " * 300]))
            return {"id": key, "first_name": draw(st.sampled_from(["Sally", "George", "Edward"])),
                    "last_name": draw(st.sampled_from(["Thomas", "Bailey", None])),
                    "email": draw(st.sampled_from(["s@example.com", "g@example.com", "x@example.org"])),
                    "biography": biography}
        return {"product_id": key, "quantity": draw(st.one_of(st.integers(0, 500), st.just(None)))}

    def emit_change(op: str, key: int | None, values: dict | None, unavailable=None, same_lsn=False):
        nonlocal lsn
        if not same_lsn:
            lsn += draw(st.sampled_from([1, 8, 64]))
        row = {name: None for name in schema.names}
        if values is not None:
            row.update(values)
        row.update(_op=op, _lsn=lsn, _commit_time=commit, _tx_id=None, _snapshot=(op == "r"),
                   _unavailable=unavailable, _pk=None if key is None else json.dumps([key]),
                   _source_file="generated", _source_line=len(rows) + 1)
        rows.append(row)

    # The snapshot: some rows read at the start.
    for key in draw(st.lists(st.sampled_from(keys), unique=True, max_size=4)):
        alive[key] = values_for(key, None)
        emit_change("r", key, alive[key])
    for _ in range(draw(st.integers(0, max_steps))):
        commit += draw(st.sampled_from(GAPS))
        for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):  # changes in this transaction
            action = draw(st.sampled_from(["c", "u", "u", "u", "d", "pk", "t", "odd"]))
            key = draw(st.sampled_from(keys))
            if action == "c" and key not in alive:
                alive[key] = values_for(key, None)
                emit_change("c", key, alive[key])
            elif action == "u" and alive:
                key = draw(st.sampled_from(sorted(alive)))
                values = values_for(key, alive[key])
                unavailable = None
                if table is customers and draw(st.booleans()):
                    # An update that left the TOASTed biography alone: Debezium's placeholder.
                    values, unavailable = {**values, "biography": None}, ["biography"]
                    alive[key] = {**values, "biography": alive[key]["biography"]}
                else:
                    alive[key] = values
                emit_change("u", key, values, unavailable)
            elif action == "d" and alive:
                key = draw(st.sampled_from(sorted(alive)))
                emit_change("d", key, {**alive.pop(key)})
            elif action == "pk" and alive:
                # UPDATE ... SET id = new: a delete of the old key and a create of the new, one lsn.
                old = draw(st.sampled_from(sorted(alive)))
                new = draw(st.sampled_from([k for k in keys if k not in alive] or [old]))
                if new != old:
                    values = {**alive.pop(old), key_name: new}
                    emit_change("d", old, {**values, key_name: old})
                    alive[new] = values
                    emit_change("c", new, values, same_lsn=True)
            elif action == "t" and draw(st.integers(0, 3)) == 0:
                alive.clear()
                emit_change("t", None, None)
            elif action == "odd":
                # What a consumer must survive: an update of a key never seen, a re-read.
                op = draw(st.sampled_from(["u", "r", "c"]))
                values = values_for(key, alive.get(key))
                # A TOAST placeholder: customers' biography, or any column of another table
                # (unrealistic there, but the engines must fill it the same way).
                toasted = "biography" if table is customers else draw(st.sampled_from(
                    [name for name in table.column_names if name not in table.primary_key]))
                unavailable = [toasted] if draw(st.booleans()) else None
                if unavailable:
                    values = {**values, toasted: None}
                alive[key] = values
                emit_change(op, key, values, unavailable)
    if draw(st.booleans()):
        # Change logs are ordered by lsn when built; the engines must not rely on it.
        rows = draw(st.permutations(rows))
    return pa.Table.from_pylist(rows, schema=schema)


EMITS = st.sampled_from([EVERYTHING, HistoryRange(T0 + DAY, T0 + 20 * DAY), HistoryRange(T0 + 7 * DAY, 2**62),
                         HistoryRange(None, T0 + 3 * DAY + HOUR), HistoryRange(T0 + 30 * DAY + HOUR, 2**62)])
GENERATED = settings(max_examples=15, deadline=None, derandomize=True,
                     suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                            HealthCheck.function_scoped_fixture])


@GENERATED
@given(change_log=change_logs(orders), emit=EMITS)
def test_parity_on_generated_orders(spark, change_log, emit):
    for view in VIEWS_OF["orders"]:
        assert_parity(spark, change_log, view, emit)


@GENERATED
@given(change_log=change_logs(customers), emit=EMITS)
def test_parity_on_generated_customers(spark, change_log, emit):
    assert_parity(spark, change_log, customer_profile, emit)


@GENERATED
@given(change_log=change_logs(products_on_hand), emit=EMITS)
def test_parity_on_generated_stock(spark, change_log, emit):
    assert_parity(spark, change_log, product_inventory, emit)


def _without_product_103_flag_bulk_pandas(frame):
    frame = frame[(frame["product_id"].fillna(0) != 103).to_numpy()]
    return frame.assign(is_bulk=(frame["quantity"] >= 3).astype("Int64"))


def _without_product_103_flag_bulk_spark(frame):
    from pyspark.sql import functions as F

    frame = frame.filter(F.coalesce(F.col("product_id"), F.lit(0)) != 103)
    return frame.withColumn("is_bulk", (F.col("quantity") >= 3).cast("long"))


# Every aggregation function, three window groups, a row transform (drops rows, adds a
# column), and a derived feature whose decimal comparison rescales a literal past 32 bits
# (30_000_000 at scale 2).
every_function = FeatureView(
    name="every_function",
    entity=product,
    source=orders,
    entity_column="product_id",
    timestamp_field="order_date",
    aggregations=[
        Aggregation("orders_12h", "count", window="12h"),
        Aggregation("min_quantity_7d", "min", "quantity", window="7d"),
        Aggregation("max_price_7d", "max", "unit_price", window="7d"),
        Aggregation("purchasers_7d", "count_distinct", "purchaser", window="7d"),
        Aggregation("mean_quantity_12h", "mean", "quantity", window="12h"),
        Aggregation("price_stddev_12h", "stddev", "unit_price", window="12h"),
        Aggregation("value_12h", "sum", col("quantity") * col("unit_price"), window="12h"),
        Aggregation("last_quantity", "last", "quantity"),
        Aggregation("first_seen_orders", "count"),
        Aggregation("bulk_orders_7d", "sum", "is_bulk", window="7d"),
    ],
    transform=RowTransform({"is_bulk": INT}, pandas=_without_product_103_flag_bulk_pandas,
                           spark=_without_product_103_flag_bulk_spark),
    derived=[
        Derived("pricey", col("max_price_7d") > 30_000_000),
        Derived("per_order", when(col("orders_12h") > 0, col("value_12h") / col("orders_12h"), 0.0)),
        Derived("quiet", col("last_quantity").is_null() | (col("orders_12h").eq(0) & (col("min_quantity_7d") < 2))),
    ],
)


@settings(GENERATED, max_examples=10)
@given(change_log=change_logs(orders), emit=EMITS)
def test_parity_for_every_aggregation_function(spark, change_log, emit):
    assert_parity(spark, change_log, every_function, emit)


@pytest.mark.parametrize("view", ALL_VIEWS, ids=lambda v: v.name)
def test_parity_on_an_empty_change_log(spark, view):
    empty = change_log_schema(view.source).empty_table()
    result = assert_parity(spark, empty, view)
    assert result.num_rows == 0 and result.schema == view.history_schema()
    assert compute_history_spark(spark, [], view, EVERYTHING).equals(result)


# -- a generated demo landing zone -------------------------------------------------------------

def test_parity_on_a_generated_demo_landing_zone(spark, tmp_path):
    generator = pytest.importorskip("feature_platform.demo.generator")
    generator.generate_landing_zone(tmp_path / "landing", customers=25, products=6, weeks=1.5, orders_per_day=30,
                                    seed=3, end=datetime(2026, 3, 1, tzinfo=timezone.utc))
    landing, offline = Store(str(tmp_path / "landing")), Store(str(tmp_path / "offline"))
    for table in (orders, customers, products_on_hand):
        change_log, path = _build_everything(offline, landing, table)
        assert change_log.num_rows > 0
        for view in VIEWS_OF[table.name]:
            assert_parity(spark, change_log, view, paths=[path])
            assert_parity(spark, change_log, view, HistoryRange(_micros(2026, 2, 25), _micros(2026, 2, 27)))


def _micros(*date) -> int:
    return int(datetime(*date, tzinfo=timezone.utc).timestamp()) * 1_000_000


# -- the Spark engine against the brute-force oracle ------------------------------------------------

try:
    import test_pandas_engine as engine_properties  # the oracle suite's change logs and comparison
except ImportError:  # pragma: no cover
    from tests import test_pandas_engine as engine_properties

ORACLE_VIEWS = (customer_orders, engine_properties.buyer_activity, engine_properties.order_flags)


@settings(max_examples=2, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(rows=engine_properties.change_logs(disorder=True, max_steps=10),
       customer_rows=engine_properties.change_logs(source=customers, disorder=True, max_steps=8))
def test_spark_history_matches_the_oracle(spark, rows, customer_rows):
    """A few generated change logs (commits out of lsn order, re-snapshots, TOAST on a create,
    PK changes, truncates) through Spark, checked against the oracle at every change point:
    aggregation views of every function, a RowTransform view with a string key, latest state."""
    for view, log in [*[(view, rows) for view in ORACLE_VIEWS], (customer_profile, customer_rows)]:
        table = engine_properties.to_table(log, view.source)
        history = engine_properties.History(compute_history_spark(spark, table, view, EVERYTHING), view)
        found = engine_properties.discrepancies(log, view, history, engine_properties.change_points(log, view, history))
        assert not found, f"{view.name} (Spark): " + engine_properties.report(found, log)


# -- change-log files as Spark reads them ----------------------------------------------------------

def _large_orders_log(rows: int, seed: int = 5) -> pa.Table:
    """``rows`` creates of distinct orders with random (hard to compress) values."""
    import numpy as np

    rng = np.random.default_rng(seed)
    keys = np.arange(1, rows + 1)
    lsn = np.sort(rng.integers(1, 2**60, size=rows))
    return pa.Table.from_pydict({
        "id": pa.array(keys, pa.int32()),
        "order_date": pa.array(T0 + rng.integers(0, 90, size=rows) * DAY).cast(pa.timestamp("us", tz="UTC")),
        "purchaser": pa.array(rng.integers(1, 10_000, size=rows), pa.int32()),
        "quantity": pa.array(rng.integers(1, 6, size=rows), pa.int32()),
        "product_id": pa.array(rng.integers(1, 300, size=rows), pa.int32()),
        "unit_price": pa.array([Decimal(int(v)) / 100 for v in rng.integers(100, 10**9, size=rows)],
                               pa.decimal128(10, 2)),
        "_op": ["c"] * rows, "_lsn": lsn,
        "_commit_time": pa.array(T0 + np.sort(rng.integers(0, 90 * DAY, size=rows))).cast(pa.timestamp("us", tz="UTC")),
        "_tx_id": rng.integers(1, 2**62, size=rows), "_snapshot": [False] * rows,
        "_unavailable": pa.nulls(rows, pa.list_(pa.string())),
        "_pk": [f"[{k}]" for k in keys], "_source_file": [f"file-{k % 977}" for k in keys],
        "_source_line": rng.integers(1, 2**40, size=rows)}, schema=change_log_schema(orders))


def test_a_large_change_log_partition_is_read_by_several_spark_tasks(spark, tmp_path):
    """ChangeLog.write splits a partition into row groups of ROW_GROUP_ROWS rows: Spark splits
    a file by bytes, but a task reads only the row groups whose middle falls in its split, so a
    file of one row group would be read by one task however large. Pandas reads it the same."""
    import pyarrow.parquet as pq

    from feature_platform.cdc.change_log import ROW_GROUP_ROWS, BuiltPartition

    table = _large_orders_log(3 * ROW_GROUP_ROWS + 10)
    offline = Store(str(tmp_path / "offline"))
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    path = offline.local_path(ChangeLog(offline, orders).write(
        moment, BuiltPartition(table=table, records_in=table.num_rows, duplicates=0,
                               quarantine=pa.table({}), source_files=[])))
    metadata = pq.read_metadata(path)
    assert metadata.num_row_groups == 4
    assert [metadata.row_group(i).num_rows for i in range(4)] == [ROW_GROUP_ROWS] * 3 + [10]
    encodings = {metadata.row_group(0).column(i).path_in_schema: metadata.row_group(0).column(i).encodings
                 for i in range(metadata.num_columns)}
    assert "RLE_DICTIONARY" not in encodings["_lsn"] and "RLE_DICTIONARY" in encodings["_source_file"]
    assert Path(path).stat().st_size > 8 * 2**20  # past the 4 MB that Spark opens a split for, twice
    assert pq.read_table(path).equals(table)
    frame = spark.read.parquet(path)
    assert frame.rdd.getNumPartitions() >= 2
    sizes = frame.rdd.mapPartitions(lambda rows: [sum(1 for _ in rows)]).collect()
    assert sum(sizes) == table.num_rows and sum(1 for size in sizes if size > 0) >= 2, sizes


# -- skipping the TOAST fill: exactly when no change carries an _unavailable element ---------------

def _write_files(folder: Path, table: pa.Table, cuts: list[int], row_group_size: int | None = None) -> list[str]:
    """``table`` in consecutive files, cut at row indices ``cuts`` (file names sort in table order)."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    bounds = [0, *sorted(cuts), table.num_rows]
    paths = []
    for number, (start, end) in enumerate(zip(bounds, bounds[1:])):
        path = str(folder / f"{number:02d}.parquet")
        pq.write_table(table.slice(start, end - start), path, row_group_size=row_group_size)
        paths.append(path)
    return paths


def test_whether_a_change_log_may_carry_unavailable_elements(spark, tmp_path):
    from feature_platform.engines.spark_engine import _may_carry_unavailable

    schema = change_log_schema(customers)
    base = {name: None for name in schema.names}

    def log(*unavailable):
        return pa.Table.from_pylist([{**base, "id": i, "_op": "u", "_lsn": i, "_commit_time": T0, "_snapshot": False,
                                      "_unavailable": u, "_pk": f"[{i}]", "_source_file": "f", "_source_line": i}
                                     for i, u in enumerate(unavailable)], schema=schema)

    without = log(None, [], [None], None)  # null, empty, a null element: nothing for array_contains to find
    with_one = log(None, None, None, ["biography"])
    assert not _may_carry_unavailable(spark, without)
    assert _may_carry_unavailable(spark, with_one)
    assert not _may_carry_unavailable(spark, without.slice(1, 2))
    assert _may_carry_unavailable(spark, with_one.slice(3, 1))
    assert not _may_carry_unavailable(spark, with_one.slice(0, 3))
    assert not _may_carry_unavailable(spark, [])
    # Files: any row group of any file with an element counts, however the log is cut.
    assert not _may_carry_unavailable(spark, _write_files(tmp_path / "a", without, [1, 2], row_group_size=1))
    for number, cuts in enumerate([[], [1], [3], [1, 2]]):
        paths = _write_files(tmp_path / f"b{number}", pa.concat_tables([without, with_one]), cuts, row_group_size=2)
        assert _may_carry_unavailable(spark, paths)
        assert _may_carry_unavailable(spark, [f"file://{path}" for path in paths])
        assert not _may_carry_unavailable(spark, paths[:1]) or cuts == []
    # What the driver cannot read counts as carrying elements: a folder, a glob, another scheme.
    assert _may_carry_unavailable(spark, [str(tmp_path / "a")])
    assert _may_carry_unavailable(spark, [str(tmp_path / "a" / "*.parquet")])
    assert _may_carry_unavailable(spark, [f"s3a://bucket{tmp_path}/a/00.parquet"])


def test_a_toasted_column_is_filled_from_a_file_without_any_unavailable(spark, tmp_path):
    """The key's versions before the TOASTed update are in a file with no _unavailable
    element at all, the update in another: the fill must still reach back across files."""
    schema = change_log_schema(customers)
    base = {name: None for name in schema.names}

    def row(op, lsn, key, biography, unavailable=None):
        return {**base, "id": key, "first_name": f"n{lsn}", "last_name": "x", "email": "e", "biography": biography,
                "_op": op, "_lsn": lsn, "_commit_time": T0 + lsn * HOUR, "_snapshot": False,
                "_unavailable": unavailable, "_pk": f"[{key}]", "_source_file": "f", "_source_line": lsn}

    table = pa.Table.from_pylist([row("c", 1, 1, "kept"), row("c", 2, 2, None), row("u", 3, 2, "b2"),
                                  row("u", 4, 1, None, ["biography"]), row("u", 5, 2, None, ["biography"]),
                                  row("u", 6, 1, "new")], schema=schema)
    paths = _write_files(tmp_path / "log", table, [3])
    expected = assert_parity(spark, table, customer_profile, paths=paths)
    assert_parity(spark, table, customer_profile)
    lengths = {(r["customer_id"], r["valid_from"]): r["biography_length"] for r in expected.to_pylist()}
    at = lambda lsn: datetime.fromtimestamp((T0 + lsn * HOUR) / 1e6, tz=timezone.utc)  # noqa: E731
    assert lengths[(1, at(4))] == len("kept") and lengths[(2, at(5))] == len("b2"), lengths


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(rows=engine_properties.change_logs(source=customers, disorder=True, max_steps=10),
       cuts=st.lists(st.floats(0, 1), max_size=3))
def test_files_with_and_without_unavailable_match_pandas_and_the_oracle(spark, tmp_path_factory, rows, cuts):
    """A generated customers log (TOASTed biographies on updates and creates) in lsn order,
    cut into files, some of which carry _unavailable elements and some not: Spark on the files
    equals pandas on the whole log, and the oracle at every change point."""
    rows = sorted(rows, key=lambda r: (r["_lsn"], r["_source_line"]))
    table = engine_properties.to_table(rows, customers)
    paths = _write_files(tmp_path_factory.mktemp("files"), table, [int(c * table.num_rows) for c in cuts])
    actual = assert_parity(spark, table, customer_profile, paths=paths)
    history = engine_properties.History(actual, customer_profile)
    found = engine_properties.discrepancies(rows, customer_profile, history,
                                            engine_properties.change_points(rows, customer_profile, history))
    assert not found, engine_properties.report(found, rows)
