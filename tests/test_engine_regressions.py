"""Explicit cases the property tests and the Spark parity work found in the engines.

Each runs on both engines (pandas, and Spark in local mode) and states the exact expected
history, so a regression names itself.
"""

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from assets.entities import product
from assets.feature_views import customer_profile, product_sales
from assets.sources import customers, orders
from feature_platform.cdc.change_log import change_log_schema
from feature_platform.engines.pandas_engine import HistoryRange, compute_history
from feature_platform.feature_view import Aggregation, FeatureView

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
EVERYTHING = HistoryRange(None, 10**17)


def customer_change(op, pk, lsn, commit, email="a@x"):
    return {"id": pk, "first_name": "A", "last_name": "B", "email": email, "biography": "bio",
            "_op": op, "_lsn": lsn, "_commit_time": commit, "_snapshot": False, "_pk": f"[{pk}]",
            "_source_file": "f", "_source_line": lsn}


def order_change(pk, lsn, commit, day, purchaser, product_id=101, quantity=1):
    return {"id": pk, "order_date": day, "purchaser": purchaser, "quantity": quantity, "product_id": product_id,
            "unit_price": None, "_op": "c", "_lsn": lsn, "_commit_time": commit, "_snapshot": False,
            "_pk": f"[{pk}]", "_source_file": "f", "_source_line": lsn}


@pytest.fixture(params=["pandas", "spark"])
def compute(request):
    if request.param == "pandas":
        return compute_history
    from feature_platform.engines.spark_engine import compute_history_spark
    from feature_platform.engines.spark_session import get_spark

    spark = get_spark()
    return lambda table, view, emit: compute_history_spark(spark, table, view, emit)


def history(compute, rows, source, view):
    return compute(pa.Table.from_pylist(rows, schema=change_log_schema(source)), view, EVERYTHING).to_pylist()


def test_update_then_delete_in_one_commit_leaves_the_entity_deleted(compute):
    rows = [customer_change("c", 1, 10, T0), customer_change("u", 1, 20, T0 + timedelta(hours=1), "b@x"),
            customer_change("d", 1, 21, T0 + timedelta(hours=1))]
    result = history(compute, rows, customers, customer_profile)
    assert [(r["valid_from"], r["email"], r["_deleted"]) for r in result] == [
        (T0, "a@x", False), (T0 + timedelta(hours=1), None, True)]


def test_delete_then_reinsert_in_one_commit_leaves_the_new_row(compute):
    rows = [customer_change("c", 1, 10, T0), customer_change("d", 1, 20, T0 + timedelta(hours=1)),
            customer_change("c", 1, 21, T0 + timedelta(hours=1), "again@x")]
    result = history(compute, rows, customers, customer_profile)
    assert [(r["email"], r["_deleted"]) for r in result] == [("a@x", False), ("again@x", False)]


def test_a_null_valued_row_does_not_reset_distinct_counts_or_extremes(compute):
    view = FeatureView(name="purchasers", entity=product, source=orders, entity_column="product_id",
                       timestamp_field="order_date", aggregations=[
                           Aggregation("unique_customers_7d", "count_distinct", "purchaser", window="7d"),
                           Aggregation("min_purchaser_7d", "min", "purchaser", window="7d"),
                           Aggregation("orders_7d", "count", window="7d")])
    rows = [order_change(1, 10, T0, T0, 1001), order_change(2, 20, T0 + timedelta(days=1), T0 + timedelta(days=1), None)]
    result = history(compute, rows, orders, view)
    at_day_one = [r for r in result if r["valid_from"] == T0 + timedelta(days=1)]
    assert [(r["unique_customers_7d"], r["min_purchaser_7d"], r["orders_7d"]) for r in at_day_one] == [(1, 1001, 2)]


def test_string_inputs_to_min_max_last_and_distinct(compute):
    from feature_platform.expressions import STRING
    from feature_platform.feature_view import RowTransform

    def label(frame):
        return frame.assign(label=frame["quantity"].map(lambda q: None if q is None else f"q{q}").astype(object))

    def label_spark(frame):
        from pyspark.sql import functions as F
        return frame.withColumn("label", F.concat(F.lit("q"), F.col("quantity").cast("string")))

    view = FeatureView(name="labels", entity=product, source=orders, entity_column="product_id",
                       timestamp_field="order_date", transform=RowTransform({"label": STRING}, pandas=label,
                                                                            spark=label_spark),
                       aggregations=[Aggregation("first_label", "min", "label"), Aggregation("top_label", "max", "label"),
                                     Aggregation("last_label", "last", "label"),
                                     Aggregation("labels", "count_distinct", "label")])
    rows = [order_change(1, 10, T0, T0, 1001, quantity=3),
            order_change(2, 20, T0 + timedelta(hours=1), T0 + timedelta(hours=1), 1002, quantity=1)]
    result = history(compute, rows, orders, view)
    assert [(r["first_label"], r["top_label"], r["last_label"], r["labels"]) for r in result] == [
        ("q3", "q3", "q3", 1), ("q1", "q3", "q1", 2)]
