"""Explicit cases the property tests and the Spark parity work found in the engines.

Each runs on both engines (pandas, and Spark in local mode) and states the exact expected
history, so a regression names itself.
"""

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction

import pyarrow as pa
import pytest

from assets.entities import product
from assets.feature_views import customer_profile
from assets.sources import customers, orders
from feature_platform.cdc.change_log import change_log_schema
from feature_platform.engines.pandas_engine import HistoryRange, ValueOverflowError, compute_history
from feature_platform.entity import Entity
from feature_platform.expressions import col
from feature_platform.feature_view import Aggregation, FeatureView
from feature_platform.sources import Column, SourceTable

try:
    import oracle  # pytest puts tests/ on sys.path (no __init__.py there)
except ImportError:  # pragma: no cover
    from tests import oracle

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


# -- money beyond 64 bits ---------------------------------------------------------------------------

ledger = SourceTable(name="ledger", topic="db.public.ledger", primary_key=("id",), columns=(
    Column("id", "int64"), Column("account", "int64"), Column("booked", "timestamp_us"),
    Column("amount", "decimal(38,2)"), Column("units", "int64")))
account = Entity("account", join_key="account_id")


def ledger_view(*aggregations):
    return FeatureView(name="ledger_totals", entity=account, source=ledger, entity_column="account",
                       timestamp_field="booked", aggregations=list(aggregations))


def ledger_change(pk, lsn, account_id, amount, units=1):
    commit = T0 + timedelta(hours=lsn)
    return {"id": pk, "account": account_id, "booked": commit, "amount": Decimal(amount), "units": units,
            "_op": "c", "_lsn": lsn, "_commit_time": commit, "_snapshot": False, "_pk": f"[{pk}]",
            "_source_file": "f", "_source_line": lsn}


def test_sums_and_stddevs_past_int64_are_exact(compute):
    """Order values of 10^20 (unscaled 10^22) and squares of 10^32 need more than 64 bits."""
    view = ledger_view(Aggregation("total", "sum", col("amount") * col("units")),
                       Aggregation("spread", "stddev", "amount"),
                       Aggregation("mean_value", "mean", col("amount") * col("units")),
                       Aggregation("largest", "max", col("amount") * col("units")))
    amounts = ["12345678901234.89", "-98765432109876.21", "5.00"]
    rows = [ledger_change(k, k, 7, amount, units=10**6) for k, amount in enumerate(amounts, start=1)]
    result = history(compute, rows, ledger, view)
    values = [Decimal(a) * 10**6 for a in amounts]
    assert [r["total"] for r in result] == [values[0], values[0] + values[1], sum(values)]
    last = result[-1]
    assert last["largest"] == max(values)
    assert last["mean_value"] == float(sum(values) * 100) / float(3 * 100)  # double(Σx) / double(n·10^scale)
    exact = [Fraction(Decimal(a)) for a in amounts]
    mean = sum(exact) / 3
    assert last["spread"] == oracle.correctly_rounded_sqrt(sum((a - mean) ** 2 for a in exact) / 2)


def test_a_positive_sum_just_past_int64_is_exact(compute):
    """Unscaled sums in (2^63, 2^64): non-negative Python ints there once came back from pandas'
    fillna re-inferred as uint64, which the engine could not store (a TypeError, not a value)."""
    view = ledger_view(Aggregation("total", "sum", "amount"))
    half = Decimal(2**62) / 100  # 46116860184273879.04
    rows = [ledger_change(1, 1, 7, str(half)), ledger_change(2, 2, 7, str(half)), ledger_change(3, 3, 7, "0.20")]
    assert [r["total"] for r in history(compute, rows, ledger, view)] == [half, 2 * half, 2 * half + Decimal("0.20")]


def test_a_value_beyond_decimal_38_is_refused_with_its_view_feature_and_entity(compute):
    view = ledger_view(Aggregation("scaled_total", "sum", col("amount") * col("units")))
    rows = [ledger_change(1, 1, 7, "1.00"), ledger_change(2, 2, 42, "99999999999999999999999999999999999.00",
                                                          units=10**6)]
    with pytest.raises(ValueOverflowError, match=r"'ledger_totals'.*'scaled_total'.*entity 42"):
        history(compute, rows, ledger, view)


def test_a_sum_of_squares_beyond_decimal_38_is_refused_not_wrapped(compute):
    view = ledger_view(Aggregation("spread", "stddev", "amount"))
    big = "9" * 20 + ".00"  # unscaled 10^22: its square (10^44) has no decimal(38)
    rows = [ledger_change(1, 1, 7, "1.00"), ledger_change(2, 2, 7, "2.00"), ledger_change(3, 3, 8, big),
            ledger_change(4, 4, 8, "0.00")]
    with pytest.raises(ValueOverflowError, match=r"'ledger_totals'.*'spread'.*entity 8"):
        history(compute, rows, ledger, view)
