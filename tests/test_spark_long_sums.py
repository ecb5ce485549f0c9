"""The Spark engine sums exact values as longs first, and in DECIMAL(38,0) when a long overflows.

``compute_history_spark`` runs a narrow pass (exact inputs, squares and sums as longs) and,
when a value, square or sum leaves the long range, the same computation again in
DECIMAL(38,0). These cases sit on that boundary: each must give the pandas engine's exact
history (or its ``ValueOverflowError``), whichever pass produced it.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_platform.cdc.change_log import change_log_schema
from feature_platform.engines.pandas_engine import HistoryRange, ValueOverflowError, compute_history
from feature_platform.engines.spark_engine import compute_history_spark
from feature_platform.engines.spark_session import get_spark
from feature_platform.entity import Entity
from feature_platform.expressions import col
from feature_platform.feature_view import Aggregation, FeatureView
from feature_platform.sources import Column, SourceTable

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
EVERYTHING = HistoryRange(None, 10**17)
LONG_MAX = 2**63 - 1

ledger = SourceTable(name="ledger", topic="db.public.ledger", primary_key=("id",), columns=(
    Column("id", "int64"), Column("account", "int64"), Column("booked", "timestamp_us"),
    Column("amount", "decimal(38,2)"), Column("units", "int64")))
account = Entity("account", join_key="account_id")

# Sums, a mean, a stddev and extremes of exact inputs, in a short window (members leave:
# their values are subtracted) and over all history.
ledger_totals = FeatureView(
    name="ledger_totals", entity=account, source=ledger, entity_column="account", timestamp_field="booked",
    aggregations=[
        Aggregation("amount_3h", "sum", "amount", window="3h"),
        Aggregation("units_3h", "sum", "units", window="3h"),
        Aggregation("value_3h", "sum", col("amount") * col("units"), window="3h"),
        Aggregation("mean_amount", "mean", "amount"),
        Aggregation("amount_spread", "stddev", "amount"),
        Aggregation("largest_value", "max", col("amount") * col("units")),
        Aggregation("units_seen", "count_distinct", "units"),
    ])
# The same without a stddev: its history is finished inside Spark, not on the driver.
ledger_sums = FeatureView(
    name="ledger_sums", entity=account, source=ledger, entity_column="account", timestamp_field="booked",
    aggregations=[a for a in ledger_totals.aggregations if a.function != "stddev"])


def change(pk, lsn, account_id, unscaled, units, op="c"):
    commit = T0 + timedelta(hours=lsn)
    return {"id": pk, "account": account_id, "booked": commit, "amount": Decimal(unscaled).scaleb(-2),
            "units": units, "_op": op, "_lsn": lsn, "_commit_time": commit, "_snapshot": False, "_pk": f"[{pk}]",
            "_source_file": "f", "_source_line": lsn}


def table(rows) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=change_log_schema(ledger))


@pytest.fixture(scope="module")
def spark():
    return get_spark()


def assert_same_outcome(spark, rows, view):
    """Spark's history equals pandas's, or both refuse the change log with a ValueOverflowError."""
    log = table(rows)
    try:
        expected = compute_history(log, view, EVERYTHING)
    except ValueOverflowError:
        with pytest.raises(ValueOverflowError):
            compute_history_spark(spark, log, view, EVERYTHING)
        return None
    actual = compute_history_spark(spark, log, view, EVERYTHING)
    assert actual.equals(expected), (expected.to_pylist(), actual.to_pylist())
    return expected


def assert_narrow_pass_widens(spark, rows, view):
    """The case is on the boundary: the long pass alone gives up (so the DECIMAL pass ran)."""
    from feature_platform.engines.spark_engine import _WIDEN, _compute_history

    with pytest.raises(Exception, match=_WIDEN):
        _compute_history(spark, table(rows), view, EVERYTHING, narrow=True)


@pytest.mark.parametrize("view", [ledger_totals, ledger_sums], ids=lambda v: v.name)
def test_a_sum_past_int64_of_values_that_each_fit_one_is_exact(spark, view):
    """Each amount (unscaled 4.7·10^18) fits a long; two of them in the 3h window do not."""
    big = 47 * 10**17
    rows = [change(1, 1, 7, big, 1), change(2, 2, 7, big, 1), change(3, 3, 8, -5, 2)]
    result = assert_same_outcome(spark, rows, view)
    assert_narrow_pass_widens(spark, rows, view)
    amounts = [r["amount_3h"] for r in result.to_pylist() if r["account_id"] == 7]
    assert amounts == [Decimal(big).scaleb(-2), Decimal(2 * big).scaleb(-2), Decimal(big).scaleb(-2),
                       Decimal(0).scaleb(-2)]


def test_squares_past_int64_give_the_exact_stddev(spark):
    """Unscaled 4·10^9 fits a long; its square (1.6·10^19) does not."""
    rows = [change(1, 1, 7, 4 * 10**9, 1), change(2, 2, 7, -4 * 10**9 + 3, 1), change(3, 3, 8, 12, 1)]
    result = assert_same_outcome(spark, rows, ledger_totals)
    assert_narrow_pass_widens(spark, rows, ledger_totals)
    assert result.num_rows > 0


def test_the_long_minimum_leaving_a_window_is_exact(spark):
    """An order value of unscaled -2^63 fits a long, but subtracting it when it leaves the
    window would not. (An int input of -2^63 is refused by both engines: its magnitude is
    not an int64's.)"""
    rows = [change(1, 1, 7, 2, -2**62), change(2, 8, 7, 1, 1)]
    result = assert_same_outcome(spark, rows, ledger_sums)
    assert_narrow_pass_widens(spark, rows, ledger_sums)
    assert [r["value_3h"] for r in result.to_pylist()] == [
        Decimal(-2**63).scaleb(-2), Decimal(0).scaleb(-2), Decimal(1).scaleb(-2), Decimal(0).scaleb(-2)]


def test_an_int64_sum_past_int64_is_still_refused(spark):
    """An int feature is stored as int64: a sum beyond it is an error in both passes, both engines."""
    rows = [change(1, 1, 7, 1, 2**62), change(2, 2, 7, 1, 2**62)]
    with pytest.raises(ValueOverflowError, match=r"'ledger_sums'.*'units_3h'.*entity 7"):
        compute_history_spark(spark, table(rows), ledger_sums, EVERYTHING)
    with pytest.raises(ValueOverflowError, match=r"'ledger_sums'.*'units_3h'.*entity 7"):
        compute_history(table(rows), ledger_sums, EVERYTHING)


# Unscaled amounts and units from small to past a long (and their squares and products past
# DECIMAL(38) for the largest), so that a generated log crosses the long boundary at a value,
# a square, a sum, or not at all.
MAGNITUDES = st.sampled_from([10**3, 3 * 10**9, 2**62, 2**63, 10**19, 2**64])


@st.composite
def ledger_logs(draw):
    rows, live = [], set()
    for lsn in range(1, draw(st.integers(1, 8)) + 1):
        pk = draw(st.integers(1, 4))
        op = "d" if pk in live and draw(st.integers(0, 4)) == 0 else ("u" if pk in live else "c")
        unscaled = draw(st.integers(-draw(MAGNITUDES), draw(MAGNITUDES)))
        units = draw(st.one_of(st.integers(-3, 3), st.integers(-2**63, LONG_MAX), st.just(-2**63)))
        rows.append(change(pk, lsn, draw(st.sampled_from([7, 8])), unscaled, units, op))
        (live.discard if op == "d" else live.add)(pk)
    return rows


@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(rows=ledger_logs(), view=st.sampled_from([ledger_totals, ledger_sums]))
def test_parity_on_either_side_of_the_long_range(spark, rows, view):
    assert_same_outcome(spark, rows, view)
