"""A brute-force reference for feature values: the semantics, written as plainly as possible.

Nothing here is clever or fast. For one instant ``T`` it rebuilds the source table's state
from the change rows, then computes each entity's features from that state directly. The
engine tests compare the engine's history, looked up as of ``T``, against these values.

Change rows are plain dicts, as ``pa.Table.to_pylist()`` gives them for a change log:
declared columns (``Decimal`` for decimals, ``datetime`` for timestamps) plus ``_op``,
``_lsn``, ``_commit_time``, ``_pk``, ``_unavailable``.

The rules (for an as-of time T):

1. The table at T: per primary key, the latest version (by lsn) among the changes committed
   at or before T. A key whose latest change is a delete does not exist; a truncate empties
   the table at its commit time. A column listed in ``_unavailable`` (TOAST) keeps the
   previous version's value, even a null.
2. A row's event time is the view's ``timestamp_field``.
3. Windows are trailing and half-open: event time in (T - W, T]; no window: event time <= T.
4. count (rows), sum (of non-null values; 0 when none), mean (null when none), stddev
   (sample, correctly rounded; null below 2 values), min/max (ignoring nulls), count_distinct (non-null
   distinct values), last (the value of the row with the greatest (event time, lsn, _pk),
   null included).
5. Latest-state views: the entity's row in the table at T, or nothing.
"""

from __future__ import annotations

import decimal
from datetime import datetime, timedelta
from fractions import Fraction

from feature_platform.expressions import Column, Literal, _Binary, _IsNull, _Length, _When

OP_ORDER = {"d": 0, "t": 1, "r": 2, "c": 3, "u": 4}
ABSENT = None  # a latest-state entity with no row at T


# -- rule 1: the table at T ---------------------------------------------------------------

def in_log_order(changes: list[dict]) -> list[dict]:
    return sorted(changes, key=lambda change: (change["_lsn"], OP_ORDER[change["_op"]]))


def resolve_toast(changes: list[dict]) -> list[dict]:
    """Every version with its TOASTed columns replaced by the previous version's values."""
    resolved = []
    previous_version: dict[str, dict] = {}  # pk -> the latest version seen so far
    for change in in_log_order(changes):
        change = dict(change)
        if change["_op"] in ("r", "c", "u"):
            for name in change["_unavailable"] or []:
                before = previous_version.get(change["_pk"])
                change[name] = before[name] if before is not None else None
            previous_version[change["_pk"]] = change
        resolved.append(change)
    return resolved


def table_at(changes: list[dict], moment: datetime) -> list[dict]:
    """The rows of the source table at ``moment`` (changes must have TOAST resolved)."""
    rows: dict[str, dict] = {}
    for change in in_log_order([c for c in changes if c["_commit_time"] <= moment]):
        if change["_op"] == "t":
            rows = {}
        elif change["_op"] == "d":
            rows.pop(change["_pk"], None)
        else:
            rows[change["_pk"]] = change
    return list(rows.values())


# -- expressions, evaluated on one row (or one entity's feature values) --------------------

def evaluate(expression, row: dict):
    """The expression's value on a row of Python values; a null operand gives null."""
    if isinstance(expression, Column):
        return row[expression.name]
    if isinstance(expression, Literal):
        return expression.value
    if isinstance(expression, _IsNull):
        return evaluate(expression.inner, row) is None
    if isinstance(expression, _Length):
        value = evaluate(expression.inner, row)
        return None if value is None else len(value)
    if isinstance(expression, _When):
        condition = evaluate(expression.condition, row)
        if condition:
            return evaluate(expression.then, row)
        return None if expression.otherwise is None else evaluate(expression.otherwise, row)
    if isinstance(expression, _Binary):
        left, right = evaluate(expression.left, row), evaluate(expression.right, row)
        if left is None or right is None:
            return None
        op = expression.op
        if op == "/":
            return None if right == 0 else float(left) / float(right)
        return {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
                ">": lambda: left > right, ">=": lambda: left >= right, "<": lambda: left < right,
                "<=": lambda: left <= right, "==": lambda: left == right,
                "and": lambda: left and right, "or": lambda: left or right}[op]()
    raise TypeError(f"the oracle does not know {expression!r}")


# -- rules 2-4: aggregation views ---------------------------------------------------------

def in_window(event_time: datetime | None, moment: datetime, window: timedelta | None) -> bool:
    if event_time is None or event_time > moment:
        return False
    return window is None or event_time > moment - window


def aggregate(function: str, rows: list[dict], values: list, timestamp_field: str):
    present = [v for v in values if v is not None]
    if function == "count":
        return len(rows)
    if function == "sum":
        return sum(present) if present else 0
    if function == "mean":
        if not present:
            return None
        return float(sum(Fraction(v) for v in present) / len(present))
    if function == "stddev":
        if len(present) < 2:
            return None
        mean = sum(Fraction(v) for v in present) / len(present)
        variance = sum((Fraction(v) - mean) ** 2 for v in present) / (len(present) - 1)
        return correctly_rounded_sqrt(variance)
    if function == "min":
        return min(present) if present else None
    if function == "max":
        return max(present) if present else None
    if function == "count_distinct":
        return len(set(present))
    if function == "last":
        if not rows:
            return None
        latest = max(range(len(rows)), key=lambda i: (rows[i][timestamp_field], rows[i]["_lsn"], rows[i]["_pk"]))
        return values[latest]
    raise ValueError(function)


def correctly_rounded_sqrt(value: Fraction) -> float:
    """sqrt(value) rounded once to the nearest double: 80 significant digits, then a double.

    Rounding twice differs from rounding once only when the root lies within 10^-80 (relative)
    of a midpoint between two doubles without being one: an independent check of the engines'
    integer method (``frames.rounded_sqrt``), not a proof.
    """
    with decimal.localcontext() as context:
        context.prec = 80
        return float((decimal.Decimal(value.numerator) / decimal.Decimal(value.denominator)).sqrt())


def transformed(rows: list[dict], row_function) -> list[dict]:
    """A view's RowTransform, as a plain function of one row (None: the row is dropped)."""
    if row_function is None:
        return rows
    return [out for out in (row_function(dict(r)) for r in rows) if out is not None]


def entities_of(changes: list[dict], view, row_function) -> set:
    versions = transformed([c for c in changes if c["_op"] in ("r", "c", "u")], row_function)
    return {v[view.entity_column] for v in versions if v[view.entity_column] is not None}


def aggregation_values(changes: list[dict], view, moment: datetime, row_function=None) -> dict:
    """{entity: {feature: value}} at ``moment`` for every entity named anywhere in the log.

    ``row_function`` stands for the view's RowTransform: applied to the rows of the table at
    ``moment`` (a row it drops does not exist then)."""
    changes = resolve_toast(changes)
    table = transformed(table_at(changes, moment), row_function)
    entities = entities_of(changes, view, row_function)
    result = {}
    for entity in entities:
        values = {}
        for aggregation in view.aggregations:
            rows = [r for r in table if r[view.entity_column] == entity
                    and in_window(r[view.timestamp_field], moment, aggregation.window)]
            inputs = [None if aggregation.input is None else evaluate(aggregation.input, r) for r in rows]
            values[aggregation.name] = aggregate(aggregation.function, rows, inputs, view.timestamp_field)
        for derived in view.derived:
            values[derived.name] = evaluate(derived.expression, values)
        result[entity] = values
    return result


# -- rule 5: latest-state views -------------------------------------------------------------

def latest_state_values(changes: list[dict], view, moment: datetime, row_function=None) -> dict:
    """{entity: {feature: value}, or ABSENT when the entity has no row at ``moment``}."""
    changes = resolve_toast(changes)
    table = transformed(table_at(changes, moment), row_function)
    entities = entities_of(changes, view, row_function)
    result = {}
    for entity in entities:
        rows = [r for r in table if r[view.entity_column] == entity]
        assert len(rows) <= 1, "a latest-state view's entity column is the primary key"
        if not rows:
            result[entity] = ABSENT
            continue
        values = {f.name: evaluate(f.expression, rows[0]) for f in view.features}
        for derived in view.derived:
            values[derived.name] = evaluate(derived.expression, values)
        result[entity] = values
    return result


def values_at(changes: list[dict], view, moment: datetime, row_function=None) -> dict:
    if view.is_aggregation_view:
        return aggregation_values(changes, view, moment, row_function)
    return latest_state_values(changes, view, moment, row_function)


def empty_values(view) -> dict:
    """An aggregation view's values for an entity with nothing in any window."""
    values = {a.name: 0 if a.function in ("count", "count_distinct", "sum") else None for a in view.aggregations}
    for derived in view.derived:
        values[derived.name] = evaluate(derived.expression, values)
    return values
