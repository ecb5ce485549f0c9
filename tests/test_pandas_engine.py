"""The pandas engine against a brute-force oracle (tests/oracle.py), on random change logs.

Every test builds a small change log the way the CDC pipeline writes one (snapshot rows
sharing an lsn, several changes committed at one instant, primary-key changes as a delete
and a create with one lsn, truncates, TOASTed columns), runs ``compute_history`` and
checks the history, looked up as of many instants, against values computed directly
from the semantics. Further properties: partition independence, incremental runs on a
prefix of the log, late-landing changes, and money values up to what the source types allow.

``FP_ENGINE_EXAMPLES=10`` runs ten times as many examples; ``FP_ENGINE_SHRINK=1`` shrinks a
failure to a minimal change log (minutes per failing test, so it is off by default).
"""

from __future__ import annotations

import bisect
import os
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from assets.entities import customer, product
from assets.feature_views import customer_orders, customer_profile, order_value, product_sales
from assets.sources import customers, orders
from feature_platform.cdc.change_log import change_log_schema
from feature_platform.engines.pandas_engine import HistoryRange, compute_history
from feature_platform.entity import Entity
from feature_platform.expressions import INT, STRING, col, length, when
from feature_platform.feature_view import Aggregation, Derived, Feature, FeatureView, RowTransform

try:
    import oracle  # pytest puts tests/ on sys.path (no __init__.py there)
except ImportError:  # pragma: no cover
    from tests import oracle

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE = datetime(2024, 3, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
HOUR = timedelta(hours=1)
D7, D30 = timedelta(days=7), timedelta(days=30)
FOREVER = HistoryRange(None, 2**62)

# -- views under test -----------------------------------------------------------------------

order_extremes = FeatureView(
    name="order_extremes",
    entity=customer,
    source=orders,
    entity_column="purchaser",
    timestamp_field="order_date",
    aggregations=[
        Aggregation("min_price_30d", "min", "unit_price", window="30d"),
        Aggregation("max_quantity_7d", "max", "quantity", window="7d"),
        Aggregation("distinct_products_30d", "count_distinct", "product_id", window="30d"),
        Aggregation("distinct_prices", "count_distinct", "unit_price"),
        Aggregation("last_price", "last", "unit_price"),
        Aggregation("last_quantity_1h", "last", "quantity", window="1h"),
        Aggregation("order_count_1h", "count", window="1h"),
        Aggregation("quantity_1h", "sum", "quantity", window="1h"),
        Aggregation("mean_price_7d", "mean", "unit_price", window="7d"),
        Aggregation("quantity_stddev", "stddev", "quantity"),
        Aggregation("latest_order_date_7d", "max", "order_date", window="7d"),
        Aggregation("min_order_value", "min", order_value),
    ],
    derived=[Derived("spread_1h", when(col("order_count_1h") > 0, col("quantity_1h") / col("order_count_1h")))],
)

product_extremes = FeatureView(
    name="product_extremes",
    entity=product,
    source=orders,
    entity_column="product_id",
    timestamp_field="order_date",
    aggregations=[
        Aggregation("buyers_30d", "count_distinct", "purchaser", window="30d"),
        Aggregation("cheapest_7d", "min", "unit_price", window="7d"),
        Aggregation("dearest_7d", "max", "unit_price", window="7d"),
        Aggregation("last_buyer", "last", "purchaser"),
        Aggregation("mean_value_30d", "mean", order_value, window="30d"),
        Aggregation("value_stddev_7d", "stddev", order_value, window="7d"),
    ],
)

order = Entity("order", join_key="order_id")

order_state = FeatureView(
    name="order_state",
    entity=order,
    source=orders,
    entity_column="id",
    features=[Feature("purchaser"), Feature("quantity"), Feature("unit_price"), Feature("order_date")],
    derived=[Derived("value", col("quantity") * col("unit_price"))],
)

customer_raw = FeatureView(
    name="customer_raw",
    entity=customer,
    source=customers,
    entity_column="id",
    features=[Feature("biography"), Feature("email"), Feature("bio_chars", length(col("biography")))],
)

ORDER_AGGREGATION_VIEWS = [customer_orders, product_sales, order_extremes, product_extremes]
# The custom-transform escape hatch, with a string entity key it adds: each engine's own code,
# and the same thing as a plain function of one row for the oracle.
def buyer_code_row(row: dict) -> dict | None:
    if row["product_id"] == 3:
        return None  # the transform drops these rows
    return {**row, "buyer": None if row["purchaser"] is None else f"buyer-{row['purchaser']}",
            "bulk": None if row["quantity"] is None else int(row["quantity"] >= 3)}


def buyer_code_pandas(frame):
    frame = frame[(frame["product_id"].fillna(0) != 3).to_numpy()]
    buyer = frame["purchaser"].map(lambda p: None if pd.isna(p) else f"buyer-{int(p)}").astype(object)
    return frame.assign(buyer=buyer, bulk=(frame["quantity"] >= 3).astype("Int64"))


def buyer_code_spark(frame):
    from pyspark.sql import functions as F

    frame = frame.filter(F.coalesce(F.col("product_id"), F.lit(0)) != 3)
    return frame.withColumn("buyer", F.concat(F.lit("buyer-"), F.col("purchaser").cast("string"))) \
        .withColumn("bulk", (F.col("quantity") >= 3).cast("long"))


BUYER_CODES = RowTransform({"buyer": STRING, "bulk": INT}, pandas=buyer_code_pandas, spark=buyer_code_spark)
buyer = Entity("buyer", join_key="buyer_code")

buyer_activity = FeatureView(
    name="buyer_activity",
    entity=buyer,
    source=orders,
    entity_column="buyer",
    timestamp_field="order_date",
    transform=BUYER_CODES,
    aggregations=[
        Aggregation("orders_7d", "count", window="7d"),
        Aggregation("bulk_orders_30d", "sum", "bulk", window="30d"),
        Aggregation("products_30d", "count_distinct", "product_id", window="30d"),
        Aggregation("last_bulk", "last", "bulk"),
        Aggregation("mean_value_7d", "mean", order_value, window="7d"),
        Aggregation("value_stddev_30d", "stddev", order_value, window="30d"),
        Aggregation("cheapest_1h", "min", "unit_price", window="1h"),
    ],
    derived=[Derived("mostly_bulk", col("bulk_orders_30d") * 2 > col("orders_7d"))],
)

order_flags = FeatureView(
    name="order_flags",
    entity=order,
    source=orders,
    entity_column="id",
    transform=BUYER_CODES,
    features=[Feature("buyer"), Feature("bulk"), Feature("unit_price")],
)

ROW_FUNCTIONS = {buyer_activity.name: buyer_code_row, order_flags.name: buyer_code_row}

ORDER_VIEWS = [*ORDER_AGGREGATION_VIEWS, order_state, buyer_activity, order_flags]
CUSTOMER_VIEWS = [customer_profile, customer_raw]
RUN_VIEWS = [customer_orders, order_extremes, order_state]  # for the (slower) properties of runs

# -- random change logs -------------------------------------------------------------------------

STEPS = [timedelta(0), US, timedelta(seconds=1), "next_hour", timedelta(minutes=37), HOUR, timedelta(days=1), D7,
         D30, D7 - US, D30 + US]
EDGE_OFFSETS = [timedelta(0), -D30, -D7, -HOUR, -US, US, -D30 + US, -D30 - US, -D7 + US, -D7 - US, -HOUR + US,
                -HOUR - US, timedelta(hours=2)]

# A change log is drawn as a list of independent step *intents* (so hypothesis can delete
# and simplify steps one by one) and then interpreted against the table's state, so that
# every update and delete touches a row that exists.
event_times = st.tuples(st.sampled_from(["edge", "edge", "edge", "midnight", "random", "null"]),
                        st.integers(0, 40), st.sampled_from(EDGE_OFFSETS), st.integers(-1, 31),
                        st.integers(-40 * 86_400 * 10**6, 2 * 86_400 * 10**6))
def money(cents: st.SearchStrategy[int | None]) -> st.SearchStrategy[Decimal | None]:
    return cents.map(lambda c: None if c is None else Decimal(c).scaleb(-2))


prices = money(st.one_of(st.integers(0, 10**6), st.sampled_from([1175, 1000, 0, 1, None])))
order_value_drafts = st.fixed_dictionaries({
    "order_date": event_times,
    "purchaser": st.sampled_from([1, 2, 3, None]),
    "quantity": st.sampled_from([1, 2, 3, 5, None]),
    "product_id": st.sampled_from([1, 2, 3, None]),
    "unit_price": prices,
})
customer_value_drafts = st.fixed_dictionaries({
    "first_name": st.sampled_from(["Ann", "Bob", None]),
    "last_name": st.sampled_from(["Lee", "Kim", None]),
    "email": st.sampled_from(["a@x", "b@x", None]),
    "biography": st.sampled_from(["", "hello", None, "bio \u00fc", "a" * 20]),
})
# Large but legal values: unit_price up to decimal(10,2)'s maximum, quantities of a wholesaler.
def large_order_value_drafts(max_quantity: int) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries({
        "order_date": event_times,
        "purchaser": st.sampled_from([1, 2]),
        "quantity": st.integers(1, max_quantity),
        "product_id": st.sampled_from([1, 2]),
        "unit_price": money(st.integers(0, 99_999_999_99)),
    })


def steps_for(drafts) -> st.SearchStrategy:
    return st.tuples(
        st.sampled_from(["insert", "update"] * 4 + ["delete"] * 2 + ["pk_change", "truncate", "resnapshot"]),
        st.integers(0, 5), st.integers(0, 5),  # which key(s), among those that fit
        st.one_of(st.sampled_from([timedelta(0)] * 8 + STEPS[1:]),  # often 0: one commit instant, several changes
                  st.integers(0, 40 * 86_400 * 10**6).map(lambda us: timedelta(microseconds=us))),
        # ^ time from the previous commit ("next_hour": to the next hour)
        drafts,  # values for the new version
        st.lists(st.booleans(), min_size=6, max_size=6),  # which columns an update changes; TOAST
    )


steps_of = {orders.name: steps_for(order_value_drafts), customers.name: steps_for(customer_value_drafts)}


def resolve_event_time(draft, commits: list[datetime]) -> datetime | None:
    kind, base, offset, days, random_offset = draft
    base = commits[base % len(commits)]
    if kind == "edge":  # at, or a microsecond off, the edge of a window around a commit
        return base + offset
    if kind == "midnight":  # a real ``date``: 00:00 UTC of a day near a commit
        return base.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=days)
    if kind == "random":
        return base + timedelta(microseconds=random_offset)
    return None


def resolve_values(draft: dict, commits: list[datetime]) -> dict:
    return {k: resolve_event_time(v, commits) if k == "order_date" else v for k, v in draft.items()}


def change(source, op: str, lsn: int, commit: datetime, pk: int | None, values: dict | None,
           unavailable: list[str] | None = None, snapshot: bool = False) -> dict:
    row = {c.name: None for c in source.columns}
    if values is not None:
        row.update(values)
    if pk is not None:
        row[source.primary_key[0]] = pk
    row.update({"_op": op, "_lsn": lsn, "_commit_time": commit, "_tx_id": None, "_snapshot": snapshot,
                "_unavailable": unavailable, "_pk": None if pk is None else f"[{pk}]",
                "_source_file": "test", "_source_line": 0})
    return row


@st.composite
def change_logs(draw, source=orders, max_steps: int = 14, drafts=None, disorder: bool = False) -> list[dict]:
    """A valid change log of ``source``: snapshot rows, inserts, updates (TOASTed biography for
    customers, on a create too), deletes, primary-key changes, truncates and re-snapshots
    (``r`` rows read again after live changes), several sharing commit instants.

    ``disorder``: transactions commit out of lsn order across keys (a transaction that wrote
    early commits after later ones), as concurrent transactions do; per key, and around a
    truncate (which locks the table), commit order still follows lsn order."""
    keys = list(range(1, 7)) if source is orders else list(range(1, 5))
    steps_strategy = steps_of[source.name] if drafts is None else steps_for(drafts)
    if drafts is None:
        drafts = order_value_drafts if source is orders else customer_value_drafts
    snapshot = draw(st.lists(st.tuples(st.sampled_from(keys), drafts), max_size=4, unique_by=lambda s: s[0]))
    steps = draw(st.lists(steps_strategy, min_size=0 if snapshot else 1, max_size=max_steps))
    moment = BASE + draw(st.sampled_from([timedelta(0), HOUR - US]))
    commits = [moment]
    for step in steps:
        if step[3] == "next_hour":
            moment = moment.replace(minute=0, second=0, microsecond=0) + HOUR
        else:
            moment += step[3]
        commits.append(moment)
    alive: dict[int, dict] = {}
    rows: list[dict] = []
    lsn = 100
    for pk, draft in sorted(snapshot, key=lambda s: s[0]):  # one lsn and one commit time for every row
        alive[pk] = resolve_values(draft, commits)
        rows.append(change(source, "r", lsn, commits[0], pk, alive[pk], snapshot=True))
    lsn += 10
    for (intent, first, second, _, draft, flags), commit in zip(steps, commits[1:]):
        free = [pk for pk in keys if pk not in alive]
        present = sorted(alive)
        if not present and intent in ("update", "delete", "pk_change", "resnapshot"):
            intent = "insert"
        if not free and intent in ("insert", "pk_change"):
            intent = "update"
        values = resolve_values(draft, commits)
        if intent == "insert":
            pk = free[first % len(free)]
            if source is customers and flags[-1] and flags[0]:
                # A TOAST placeholder on a row's first version: nothing to keep, so null.
                alive[pk] = {**values, "biography": None}
                rows.append(change(source, "c", lsn, commit, pk, alive[pk], ["biography"]))
            else:
                alive[pk] = values
                rows.append(change(source, "c", lsn, commit, pk, values))
        elif intent == "resnapshot":
            # A snapshot taken again after live changes: r rows (one lsn) for some live keys,
            # carrying their current values.
            for pk, again in zip(present, flags):
                if again or pk == present[first % len(present)]:
                    rows.append(change(source, "r", lsn, commit, pk, alive[pk], snapshot=True))
        elif intent == "update":
            pk = present[first % len(present)]
            values = {name: values[name] if changes else old
                      for (name, old), changes in zip(alive[pk].items(), flags)}
            toasted = source is customers and flags[-1]
            if toasted:  # biography unchanged: it arrives as the TOAST placeholder
                values["biography"] = alive[pk]["biography"]
            alive[pk] = values
            if toasted:
                rows.append(change(source, "u", lsn, commit, pk, {**values, "biography": None}, ["biography"]))
            else:
                rows.append(change(source, "u", lsn, commit, pk, values))
        elif intent == "delete":
            pk = present[first % len(present)]
            del alive[pk]
            rows.append(change(source, "d", lsn, commit, pk, None))
        elif intent == "pk_change":  # UPDATE ... SET id = new: a delete and a create sharing one lsn
            old, new = present[first % len(present)], free[second % len(free)]
            kept = alive.pop(old)
            alive[new] = {name: values[name] if changes else kept[name] for name, changes in zip(kept, flags)}
            rows.append(change(source, "d", lsn, commit, old, None))
            rows.append(change(source, "c", lsn, commit, new, alive[new]))
        else:
            alive.clear()
            rows.append(change(source, "t", lsn, commit, None, None))
        lsn += 10
    if disorder:
        rows = commit_out_of_lsn_order(rows, draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=len(rows),
                                                            max_size=len(rows))))
    for line, row in enumerate(rows):
        row["_source_line"] = line
    return rows


def commit_out_of_lsn_order(rows: list[dict], delays: list[float]) -> list[dict]:
    """Delay the commit of whole transactions (the rows of one lsn) by a fraction of how far
    they can go: up to the next change of one of their keys, and never past a later truncate."""
    rows = [dict(r) for r in rows]
    lsns = sorted({r["_lsn"] for r in rows})
    for lsn, delay in zip(lsns, delays):
        transaction = [r for r in rows if r["_lsn"] == lsn]
        if delay == 0 or any(r["_op"] == "t" for r in transaction):
            continue
        keys = {r["_pk"] for r in transaction}
        later = [r["_commit_time"] for r in rows if r["_lsn"] > lsn and (r["_op"] == "t" or r["_pk"] in keys)]
        commit = transaction[0]["_commit_time"]
        limit = min(later) if later else commit + timedelta(days=2)
        moved = commit + (limit - commit) * delay
        for r in transaction:
            r["_commit_time"] = max(commit, moved)
    return rows


def to_table(rows: list[dict], source) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=change_log_schema(source))


# -- reading the engine's history -------------------------------------------------------------------

def micros(moment: datetime) -> int:
    return (moment - EPOCH) // US


def history_rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


class History:
    """The engine's history, looked up as of an instant: the latest row with valid_from <= T."""

    def __init__(self, table: pa.Table, view: FeatureView):
        self.view = view
        self.key = view.entity.join_key
        self.by_entity: dict[object, list[dict]] = {}
        for row in sorted(history_rows(table), key=lambda r: r["valid_from"]):
            self.by_entity.setdefault(row[self.key], []).append(row)
        self.times = {e: [r["valid_from"] for r in rows] for e, rows in self.by_entity.items()}

    def at(self, entity, moment: datetime) -> dict | None:
        rows = self.by_entity.get(entity, [])
        position = bisect.bisect_right(self.times.get(entity, []), moment)
        return rows[position - 1] if position else None


FUNCTION_OF = {}
for _view in [*ORDER_VIEWS, *CUSTOMER_VIEWS]:
    for _a in _view.aggregations:
        FUNCTION_OF[(_view.name, _a.name)] = _a.function


def same_value(view: FeatureView, feature: str, expected, actual) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    return expected == actual


def discrepancies(rows: list[dict], view: FeatureView, history: History, moments) -> list[str]:
    """Every (instant, entity, feature) where the engine's as-of value differs from the oracle."""
    found = []
    for moment in sorted(set(moments)):
        expected_all = oracle.values_at(rows, view, moment, ROW_FUNCTIONS.get(view.name))
        for entity in sorted(set(expected_all) | set(history.by_entity), key=str):
            expected = expected_all.get(entity, oracle.ABSENT if not view.is_aggregation_view else
                                        oracle.empty_values(view))
            actual_row = history.at(entity, moment)
            if view.is_aggregation_view:
                if actual_row is None:  # absent from the history: the empty values (stored features only)
                    expected = {a.name: expected[a.name] for a in view.aggregations}
                    actual = oracle.empty_values(view)
                else:
                    actual = {name: actual_row[name] for name in view.stored_dtypes()}
                for name, value in expected.items():
                    if not same_value(view, name, value, actual[name]):
                        found.append(f"T={moment.isoformat()} entity={entity} {name}: oracle={value!r} "
                                     f"engine={actual[name]!r} (engine row valid_from="
                                     f"{None if actual_row is None else actual_row['valid_from'].isoformat()})")
            else:
                exists = actual_row is not None and not actual_row["_deleted"]
                if actual_row is not None and actual_row["_deleted"]:
                    nulls = {name: actual_row[name] for name in view.stored_dtypes() if actual_row[name] is not None}
                    if nulls:
                        found.append(f"T={moment.isoformat()} entity={entity}: deleted row with values {nulls}")
                if expected is oracle.ABSENT or not exists:
                    if (expected is oracle.ABSENT) != (not exists):
                        found.append(f"T={moment.isoformat()} entity={entity}: oracle "
                                     f"{'absent' if expected is oracle.ABSENT else expected} engine "
                                     f"{'absent' if not exists else {k: actual_row[k] for k in view.stored_dtypes()}}"
                                     f" (engine row {actual_row})")
                    continue
                for name, value in expected.items():
                    if not same_value(view, name, value, actual_row[name]):
                        found.append(f"T={moment.isoformat()} entity={entity} {name}: oracle={value!r} "
                                     f"engine={actual_row[name]!r}")
    return found


def change_points(rows: list[dict], view: FeatureView, history: History | None = None) -> set[datetime]:
    """Every instant a value can change at, and the microseconds either side of it."""
    points = {r["_commit_time"] for r in rows}
    if view.is_aggregation_view:
        windows = {a.window for a in view.aggregations if a.window is not None}
        for r in rows:
            if r[view.timestamp_field] is not None:
                points.add(r[view.timestamp_field])
                points.update(r[view.timestamp_field] + w for w in windows)
    if history is not None:
        points.update(r["valid_from"] for rs in history.by_entity.values() for r in rs)
    return {p + d for p in points for d in (-US, timedelta(0), US)}


def report(found: list[str], rows: list[dict]) -> str:
    lines = [f"{len(found)} discrepancies, first ones:", *found[:8], "change log:"]
    lines += [f"  {r['_op']} lsn={r['_lsn']} commit={r['_commit_time'].isoformat()} pk={r['_pk']} "
              + ", ".join(f"{k}={v}" for k, v in r.items() if not k.startswith("_") and v is not None)
              + (f" unavailable={r['_unavailable']}" if r["_unavailable"] else "") for r in rows]
    return "\n".join(lines)


def check_against_oracle(rows: list[dict], view: FeatureView, extra_moments=()) -> History:
    history = History(compute_history(to_table(rows, view.source), view, FOREVER), view)
    found = discrepancies(rows, view, history, change_points(rows, view, history) | set(extra_moments))
    assert not found, f"{view.name}: " + report(found, rows)
    return history


# FP_ENGINE_EXAMPLES=10 runs ten times as many examples (a deeper search; minutes, not seconds).
SCALE = float(os.environ.get("FP_ENGINE_EXAMPLES", "1"))


# Shrinking a failure to a minimal change log takes minutes per failing test (every attempt
# runs the engine), so it is off unless FP_ENGINE_SHRINK=1: a failure then reports the
# example as generated, which is small anyway.
PHASES = tuple(Phase) if os.environ.get("FP_ENGINE_SHRINK") == "1" else tuple(p for p in Phase if p != Phase.shrink)


def examples(count: int):
    return settings(deadline=None, max_examples=max(1, int(count * SCALE)), phases=PHASES,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])



random_moments = st.lists(st.integers(0, 80 * 86_400 * 10**6).map(lambda us: BASE + timedelta(microseconds=us)),
                          max_size=5)

# -- the engine equals the oracle at every instant ----------------------------------------------------


@pytest.mark.parametrize("view", ORDER_VIEWS, ids=lambda v: v.name)
@examples(120)
@given(rows=change_logs(disorder=True), moments=random_moments)
def test_orders_history_matches_oracle(view, rows, moments):
    check_against_oracle(rows, view, moments)


@pytest.mark.parametrize("view", CUSTOMER_VIEWS, ids=lambda v: v.name)
@examples(100)
@given(rows=change_logs(source=customers, disorder=True), moments=random_moments)
def test_customers_history_matches_oracle(view, rows, moments):
    check_against_oracle(rows, view, moments)


@pytest.mark.parametrize("view", [customer_orders, product_extremes], ids=lambda v: v.name)
@examples(30)
@given(rows=change_logs(drafts=large_order_value_drafts(10_000), max_steps=6))
def test_large_money_values_stay_exact(view, rows):
    """Sums, means and standard deviations of order values up to decimal(10,2)'s largest price
    times a wholesale quantity: an order value of up to 10^12 (10^14 unscaled, inside int64;
    its square and a window's sum of squares are not)."""
    check_against_oracle(rows, view)


@examples(15)
@given(rows=change_logs(drafts=large_order_value_drafts(2**31 - 1), max_steps=3))
def test_any_legal_quantity_times_price_stays_exact(rows):
    """quantity is an int32 and unit_price a decimal(10,2): their product can pass int64
    (unscaled), and a sum of them must still be exact (the history stores decimal(38,2))."""
    check_against_oracle(rows, product_sales)  # revenue_7d: a sum of quantity × unit_price


# -- partitions -------------------------------------------------------------------------------------


def hour_floor(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def candidate_hours(rows: list[dict], view: FeatureView) -> list[datetime]:
    """Hours holding a change point: first those starting exactly where an event leaves a
    window (a real ``date`` plus 7 or 30 days always does), then those starting at another
    change point, then the rest."""
    points = change_points(rows, view)
    leaving = set()
    if view.is_aggregation_view:
        windows = {a.window for a in view.aggregations if a.window is not None}
        leaving = {r[view.timestamp_field] + w for r in rows if r[view.timestamp_field] is not None for w in windows}
    first = sorted({p for p in leaving if p == hour_floor(p)})
    then = sorted({p for p in points if p == hour_floor(p)} - set(first))
    return first + then + sorted({hour_floor(p) for p in points} - set(first) - set(then))


def emitted(rows: list[dict], view: FeatureView, start: datetime | None, end: datetime) -> list[dict]:
    emit = HistoryRange(None if start is None else micros(start), micros(end))
    return history_rows(compute_history(to_table(rows, view.source), view, emit))


def in_range(history: list[dict], start: datetime, end: datetime) -> list[dict]:
    return [r for r in history if start <= r["valid_from"] < end]


@pytest.mark.parametrize("view", RUN_VIEWS, ids=lambda v: v.name)
@examples(30)
@given(rows=change_logs(), data=st.data())
def test_partitions_equal_the_full_run(view, rows, data):
    """Each hour computed alone holds exactly the full run's rows of that hour.

    ``drop_unchanged_within_hour`` drops a row only when it equals the entity's previous
    row *in the same hour*, and always keeps an entity's first row of an hour, so what an
    hour holds depends on nothing outside it: per-hour runs, a range run and the full run
    agree row for row on every hour (no exception is needed at hour boundaries).
    """
    full = emitted(rows, view, None, datetime(2100, 1, 1, tzinfo=UTC))
    hours = candidate_hours(rows, view)
    if not hours:
        return
    chosen = hours[:2] + data.draw(st.lists(st.sampled_from(hours), max_size=1))
    for hour in dict.fromkeys(chosen):
        alone = emitted(rows, view, hour, hour + HOUR)
        assert alone == in_range(full, hour, hour + HOUR), (
            f"{view.name}: hour {hour.isoformat()} computed alone differs from the full run\n"
            f"alone: {alone}\nfull:  {in_range(full, hour, hour + HOUR)}\n" + report([], rows))
    # A two-hour range run around an hour boundary equals its two hours run one by one.
    first = data.draw(st.sampled_from(hours)) - HOUR
    together = emitted(rows, view, first, first + 2 * HOUR)
    one_by_one = [r for k in range(2) for r in emitted(rows, view, first + k * HOUR, first + (k + 1) * HOUR)]
    key = lambda r: (r["valid_from"], r[view.entity.join_key])  # noqa: E731
    assert sorted(one_by_one, key=key) == together, (
        f"{view.name}: the range run [{first.isoformat()}, +2h) differs from its hours run one by one\n"
        f"range: {together}\nhours: {sorted(one_by_one, key=key)}\n" + report([], rows))


# -- incremental runs and late data --------------------------------------------------------------------


@pytest.mark.parametrize("view", RUN_VIEWS, ids=lambda v: v.name)
@examples(30)
@given(rows=change_logs(), data=st.data())
def test_a_prefix_of_the_log_gives_the_same_history_before_the_cut(view, rows, data):
    """Changes committed at or after C cannot change any value before C: the history built from
    the changes committed before C equals the full one for valid_from < C, row for row (and
    says nothing about instants from C on, which those changes may well change)."""
    commits = sorted({r["_commit_time"] for r in rows})
    cut = data.draw(st.sampled_from(commits)) + data.draw(st.sampled_from([timedelta(0), US, -US, HOUR]))
    if data.draw(st.booleans()):
        cut = hour_floor(cut)
    prefix = [r for r in rows if r["_commit_time"] < cut]
    full = emitted(rows, view, None, cut)
    assert emitted(prefix, view, None, cut) == full, f"{view.name}: cut {cut.isoformat()}\n" + report([], rows)
    # The same with the run starting at an hour, as an hourly incremental run does.
    starts = [hour for hour in candidate_hours(rows, view) if hour < cut][:3] + [hour_floor(cut - US)]
    start = data.draw(st.sampled_from(starts))
    assert emitted(prefix, view, start, cut) == in_range(full, start, cut), (
        f"{view.name}: cut {cut.isoformat()} start {start.isoformat()}\n" + report([], rows))


@st.composite
def late_changes(draw, rows: list[dict]) -> tuple[dict, int]:
    """A change landing late: its lsn and commit time fall inside the log already processed."""
    ordered = oracle.in_log_order(rows)
    boundaries = [i for i in range(len(ordered) + 1)
                  if i in (0, len(ordered)) or ordered[i - 1]["_lsn"] != ordered[i]["_lsn"]]
    position = draw(st.sampled_from(boundaries))
    before = ordered[position - 1] if position else None
    after = ordered[position] if position < len(ordered) else None
    low = before["_commit_time"] if before else BASE - timedelta(days=1)
    high = after["_commit_time"] if after else low + timedelta(days=2)
    commit = draw(st.sampled_from([low, high, low + (high - low) / 2]))
    lsn = (before["_lsn"] if before else 0) + 5
    commits = [r["_commit_time"] for r in rows] + [commit]
    alive = {}
    for r in ordered[:position]:
        if r["_op"] == "t":
            alive.clear()
        elif r["_op"] == "d":
            alive.pop(int(r["_pk"][1:-1]), None)
        else:
            alive[int(r["_pk"][1:-1])] = r
    later_keys = {r["_pk"] for r in ordered[position:]}
    kinds = ["insert"] + (["update"] if alive else [])
    kinds += ["delete"] if any(f"[{pk}]" not in later_keys for pk in alive) else []
    kind = draw(st.sampled_from(kinds))
    values = resolve_values(draw(order_value_drafts), commits)
    if kind == "insert":
        return change(orders, "c", lsn, commit, 7, values), position
    if kind == "update":
        pk = draw(st.sampled_from(sorted(alive)))
        return change(orders, "u", lsn, commit, pk, values), position
    pk = draw(st.sampled_from(sorted(pk for pk in alive if f"[{pk}]" not in later_keys)))
    return change(orders, "d", lsn, commit, pk, None), position


@pytest.mark.parametrize("view", RUN_VIEWS, ids=lambda v: v.name)
@examples(25)
@given(rows=change_logs(max_steps=10), data=st.data())
def test_a_late_change_moves_only_later_values(view, rows, data):
    late, position = data.draw(late_changes(rows))
    corrected = [*oracle.in_log_order(rows)[:position], late, *oracle.in_log_order(rows)[position:]]
    before = emitted(rows, view, None, datetime(2100, 1, 1, tzinfo=UTC))
    after = emitted(corrected, view, None, datetime(2100, 1, 1, tzinfo=UTC))
    landed = late["_commit_time"]
    assert in_range(after, BASE - timedelta(days=400), landed) == in_range(before, BASE - timedelta(days=400), landed), (
        f"{view.name}: the late change committed {landed.isoformat()} moved earlier rows\n" + report([], corrected))
    check_against_oracle(corrected, view)
