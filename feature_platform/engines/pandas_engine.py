"""The pandas engine: exact feature history from a change log, in one sort and a few sweeps.

The algorithm (docs/semantics.md says what the values mean; ../shared/DESIGN-NOTES.md
sketches why it is linear):

1. **Row versions.** Each row change (r, c, u) of a primary key is a version, known from
   its commit time until the commit of the key's next change (a delete closes it and opens
   nothing; a truncate closes every version before it). TOASTed columns that did not
   change take the previous version's value.
2. **Membership.** A version belongs to its entity's window during
   ``[max(known_from, event_time), min(known_to, event_time + W))``: known, and inside
   the half-open window (T - W, T].
3. **Sweep.** Every membership adds a row at its start and removes it at its end. Running
   sums of those events per entity give count, sum, mean and stddev at every instant a
   value can change; multiplicities give count_distinct; a heap gives min, max and last.

Everything runs on integers (microseconds, unscaled decimals), so values are exact and the
Spark engine, doing the same integer arithmetic, produces the same bits. Integers are int64
while they provably fit (a bound from the data: the common, fast case) and Python ints
otherwise (``exact_values``, ``_running_sums``); a value the offline store cannot hold
(beyond decimal(38) or int64) raises ``ValueOverflowError`` naming view, feature and entity.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feature_platform.cdc.change_log import OP_ORDER
from feature_platform.engines.frames import (
    DECIMAL38_MAX,
    INT64_MAX,
    NO_END,
    decimal_to_unscaled,
    rounded_sqrt,
    is_wide,
    max_abs,
    micros_to_timestamp,
    narrow_if_possible,
    timestamp_to_micros,
    unscaled_to_decimal,
    widen,
)
from feature_platform.expressions import (
    Column,
    DType,
    Expr,
    Literal,
    _Binary,
    _IsNull,
    _Length,
    _When,
)
from feature_platform.feature_view import Aggregation, FeatureView, source_dtypes

HOUR_MICROS = 3_600_000_000
_INT64 = {pa.int64(): pd.Int64Dtype()}
_MASKED = (pd.arrays.IntegerArray, pd.arrays.FloatingArray, pd.arrays.BooleanArray)  # values + a null mask
VERSION_OPS = ("r", "c", "u")


@dataclass(frozen=True)
class HistoryRange:
    """Which value changes to emit: valid_from in [start, end). ``start=None``: from the beginning."""

    start: int | None
    end: int


class ValueOverflowError(OverflowError):
    """An exact value the offline store cannot hold: beyond decimal(38) (or int64 for an int)."""


def overflow(view: FeatureView, feature: str, entity, moment: int | None, what: str) -> ValueOverflowError:
    entity = entity.item() if isinstance(entity, np.generic) else entity
    when = "" if moment is None else f" at {micros_to_timestamp(pd.Series([moment])).to_pylist()[0].isoformat()}"
    return ValueOverflowError(f"feature view {view.name!r}, feature {feature!r}, entity {entity!r}{when}: {what}")


# -- exact expressions ----------------------------------------------------------------------

def bound(expression: Expr, types: dict[str, DType], column_bound) -> tuple[int, int]:
    """(a bound on |value|, a bound on every exact intermediate) of an expression.

    ``column_bound(name)`` bounds an exact column: its largest absolute value in the data
    (pandas), or what its declared type allows (Spark). Both results are exact Python ints,
    so an expression whose intermediate bound fits int64 cannot wrap around in int64
    arithmetic. Non-exact results (floats, booleans, strings) have value bound 0.
    """
    exact = expression.dtype(types).kind in ("int", "decimal")
    if isinstance(expression, Column):
        value = column_bound(expression.name) if exact else 0
        return value, value
    if isinstance(expression, Literal):
        value = abs(expression.value) if exact else 0
        return value, value
    if isinstance(expression, _Binary):
        (left, left_inner), (right, right_inner) = (bound(expression.left, types, column_bound),
                                                    bound(expression.right, types, column_bound))
        inner = max(left_inner, right_inner)
        if not exact:
            # A comparison rescales its exact operands to a common scale first.
            return 0, max(inner, (left + right) * 10 ** _max_scale(expression, types))
        if expression.op == "*":
            value = left * right
        else:
            target = expression.dtype(types).scale
            value = left * 10 ** (target - _scale(expression.left, types)) + \
                right * 10 ** (target - _scale(expression.right, types))
        return value, max(inner, value)
    if isinstance(expression, _When):
        parts = [bound(e, types, column_bound) for e in (expression.condition, expression.then, expression.otherwise)
                 if e is not None]
        return (max(p[0] for p in parts[1:]) if exact else 0), max(p[1] for p in parts)
    if isinstance(expression, _IsNull):
        return 0, bound(expression.inner, types, column_bound)[1]
    if isinstance(expression, _Length):
        return 2**31, 2**31
    return 2**64, 2**64  # an expression this module does not know: take the exact path


def _scale(expression: Expr, types: dict[str, DType]) -> int:
    dtype = expression.dtype(types)
    return dtype.scale if dtype.kind == "decimal" else 0


def _max_scale(expression: _Binary, types: dict[str, DType]) -> int:
    return max(_scale(expression.left, types), _scale(expression.right, types))


def exact_values(expression: Expr, frame: pd.DataFrame, types: dict[str, DType]) -> pd.Series:
    """The expression on ``frame``: int64 arithmetic when no intermediate can pass int64, else
    Python ints (an object column), so an exact result is never wrapped around."""
    if bound(expression, types, lambda name: max_abs(frame[name]))[1] <= INT64_MAX:
        return expression.to_pandas(frame, types)
    wide = frame.copy()
    for name in expression.columns():
        if types[name].kind in ("int", "decimal"):
            wide[name] = widen(frame[name])
    return narrow_if_possible(_wide_values(expression, wide, types))


def _wide_values(expression: Expr, frame: pd.DataFrame, types: dict[str, DType]) -> pd.Series:
    """``expression.to_pandas`` with exact integers as Python ints (same operators, same nulls)."""
    def evaluate(inner: Expr) -> pd.Series:
        return _wide_values(inner, frame, types)

    kind = expression.dtype(types).kind
    if isinstance(expression, Literal) and kind == "int":
        return pd.Series([expression.value] * len(frame), index=frame.index, dtype=object)
    if isinstance(expression, _Binary):
        left, right = expression._operands(types, "pandas", evaluate)
        op = expression.op
        if op == "/":
            right = right.where(right != 0)  # x / 0 is null, as in Spark SQL
            return (left / right).astype("Float64")
        if op in ("and", "or"):
            left, right = left.astype("boolean"), right.astype("boolean")
            return left & right if op == "and" else left | right
        result = {"+": lambda: left + right, "-": lambda: left - right, "*": lambda: left * right,
                  ">": lambda: left > right, ">=": lambda: left >= right, "<": lambda: left < right,
                  "<=": lambda: left <= right, "==": lambda: left == right}[op]()
        if op in (">", ">=", "<", "<=", "=="):
            # An object comparison turns a null operand into False; the Int64 path gives null.
            nulls = left.isna().to_numpy() | right.isna().to_numpy()
            return result.astype("boolean").mask(nulls)
        return result.astype(object) if kind in ("int", "decimal") else result
    if isinstance(expression, _When):
        condition = evaluate(expression.condition).fillna(False).astype(bool)
        then = expression._branch(expression.then, types, "pandas", evaluate(expression.then))
        if expression.otherwise is None:
            return then.where(condition)
        other = expression._branch(expression.otherwise, types, "pandas", evaluate(expression.otherwise))
        return then.where(condition, other)
    if isinstance(expression, _IsNull):
        return evaluate(expression.inner).isna().astype("boolean")
    return expression.to_pandas(frame, types)


# -- loading ------------------------------------------------------------------------------

def change_log_frame(table: pa.Table, view: FeatureView, columns: list[str] | None = None) -> pd.DataFrame:
    """The change log as integers: unscaled decimals, microsecond timestamps.

    ``columns``: the source columns to load (default: all). Metadata always comes as numpy
    integers: ``_lsn``, ``_commit`` (microseconds), ``_rank`` (``OP_ORDER`` of the op) and
    ``_key``, the primary key's dense rank in ``_pk`` string order (equal keys, equal codes;
    ordering by ``_key`` is ordering by ``_pk``), so the engine sorts and compares integers
    instead of Python strings. The string columns ``_op``, ``_pk`` and ``_unavailable`` come
    too when all columns are asked for (a view's own transform sees the whole change row), or
    ``_unavailable`` alone when some TOASTed column needs filling.
    """
    types = source_dtypes(view.source)
    data: dict[str, pd.Series] = {}
    for column in view.source.columns:
        if columns is not None and column.name not in columns:
            continue
        array = table.column(column.name)
        kind = types[column.name].kind
        if kind == "decimal":
            data[column.name] = decimal_to_unscaled(array)
        elif kind == "timestamp":
            data[column.name] = timestamp_to_micros(array)
        elif kind == "int":
            # Through Arrow's own int64 → Int64 (to_pandas alone makes floats of a column
            # with nulls, which would round values beyond 2^53).
            data[column.name] = pd.Series(pc.cast(array, pa.int64()).to_pandas(types_mapper=_INT64.get))
        elif kind == "float":
            data[column.name] = pd.Series(array.to_pandas(), dtype="Float64")
        elif kind == "bool":
            data[column.name] = pd.Series(array.to_pandas(), dtype="boolean")
        else:
            data[column.name] = pd.Series(array.to_pandas(), dtype=object)
    ops = table.column("_op")
    ranks = np.full(len(table), -1, dtype=np.int8)
    for op, rank in OP_ORDER.items():
        ranks[pc.equal(ops, op).to_numpy(zero_copy_only=False)] = rank
    data["_rank"] = pd.Series(ranks)
    data["_lsn"] = pd.Series(table.column("_lsn").to_numpy(), dtype=np.int64)
    data["_commit"] = pd.Series(pc.cast(pc.cast(table.column("_commit_time"), pa.timestamp("us", tz="UTC")),
                                        pa.int64()).to_numpy(), dtype=np.int64)
    keys = table.column("_pk")
    data["_key"] = pd.Series(_dense_rank(keys))
    unavailable = table.column("_unavailable")
    if columns is None:
        data["_op"] = pd.Series(ops.to_pandas(), dtype=object)
        data["_pk"] = pd.Series(keys.to_pandas(), dtype=object)
    if columns is None or (unavailable.null_count < len(table) and pc.sum(pc.list_value_length(unavailable)).as_py()):
        data["_unavailable"] = pd.Series(unavailable.to_pandas(), dtype=object)
    return pd.DataFrame(data)


def _dense_rank(values: pa.ChunkedArray) -> np.ndarray:
    """Each value's rank among the distinct values (1, 2, ...) in Arrow's order: bytewise for
    strings, which is code-point order, as Python compares them; nulls last, equal to each
    other. ``pc.rank(tiebreaker="dense")`` gives the same, but takes twice as long."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = pc.sort_indices(values)
    ordered = values.take(order)
    same = pc.fill_null(pc.equal(ordered.slice(1), ordered.slice(0, n - 1)), False).to_numpy(zero_copy_only=False)
    null = ordered.is_null().to_numpy(zero_copy_only=False)
    new = np.ones(n, dtype=bool)
    new[1:] = ~(same | (null[1:] & null[:-1]))
    rank = np.empty(n, dtype=np.int64)
    rank[order.to_numpy()] = np.cumsum(new)
    return rank


def _needed_columns(view: FeatureView) -> list[str] | None:
    """The source columns the view reads (None: all, for a view with its own transform)."""
    if view.transform is not None:
        return None
    expressions = [a.input for a in view.aggregations if a.input is not None] + [f.expression for f in view.features]
    needed = {view.entity_column, *([view.timestamp_field] if view.timestamp_field else [])}
    for expression in expressions:
        needed |= set(expression.columns())
    return sorted(needed)


def _stable_order(*keys: np.ndarray) -> np.ndarray:
    """The stable argsort by several integer keys, the most significant first.

    When the keys' ranges multiply to less than 2^63 they are packed into one int64 and
    sorted once (several times faster than ``np.lexsort``, which sorts once per key).
    """
    widths = [(int(k.min()), int(k.max()) - int(k.min()) + 1) if len(k) else (0, 1) for k in keys]
    if math.prod(width for _, width in widths) >= 2**63:
        return np.lexsort(keys[::-1])
    packed = np.zeros(len(keys[0]), dtype=np.int64)
    for k, (low, width) in zip(keys, widths):
        packed *= width
        packed += k.astype(np.int64, copy=False) - low
    return np.argsort(packed, kind="stable")


# -- step 1: row versions -------------------------------------------------------------------

def row_versions(changes: pd.DataFrame) -> pd.DataFrame:
    """One row per version with ``known_from``/``known_to`` and how it was closed.

    Sorting and neighbour comparisons run on integer arrays (``_key``, ``_lsn``, ``_rank``);
    the frame's columns are gathered once, for the version rows only.
    """
    key = changes["_key"].to_numpy(dtype=np.int64)
    lsn = changes["_lsn"].to_numpy(dtype=np.int64)
    rank = changes["_rank"].to_numpy()
    commit = changes["_commit"].to_numpy(dtype=np.int64)
    truncate = rank == OP_ORDER["t"]
    rows = np.flatnonzero(~truncate)
    # By key, then lsn, then op rank; stable, so ties keep the change log's order.
    rows = rows[_stable_order(key[rows], lsn[rows], rank[rows])]
    keys, commits, lsns, ranks = key[rows], commit[rows], lsn[rows], rank[rows]
    # The next change of the same key (rows are sorted by key, then lsn) closes a version.
    has_next = np.zeros(len(rows), dtype=bool)
    has_next[:-1] = keys[1:] == keys[:-1]
    next_commit = np.full(len(rows), NO_END, dtype=np.int64)
    next_commit[:-1] = np.where(has_next[:-1], commits[1:], NO_END)
    next_lsn = np.full(len(rows), NO_END, dtype=np.int64)
    next_lsn[:-1] = np.where(has_next[:-1], lsns[1:], NO_END)
    version_ranks = [OP_ORDER[op] for op in VERSION_OPS]
    is_version = np.isin(ranks, version_ranks)
    next_is_version = np.zeros(len(rows), dtype=bool)
    next_is_version[:-1] = is_version[1:]
    if "_unavailable" in changes and changes["_unavailable"].notna().any():
        sorted_rows = changes.take(rows)
        sorted_rows.index = pd.RangeIndex(len(sorted_rows))
        versions = _fill_unchanged_toast_values(sorted_rows).take(np.flatnonzero(is_version))
    else:
        versions = changes.take(rows[is_version])
    versions.index = pd.RangeIndex(len(versions))  # a new index, not a copy of the data
    versions["known_from"] = commits[is_version]
    versions["known_to"] = next_commit[is_version]
    versions["closed_by_lsn"] = next_lsn[is_version]  # orders a deletion among changes at one instant
    closed_by = np.full(len(versions), None, dtype=object)
    closed_by[(has_next & next_is_version)[is_version]] = "version"
    closed_by[(has_next & ~next_is_version)[is_version]] = "delete"
    versions["closed_by"] = closed_by
    if truncate.any() and len(versions):
        # The first truncate after a version (in lsn, hence commit, order) empties the table.
        truncates = np.flatnonzero(truncate)
        truncates = truncates[np.argsort(lsn[truncates], kind="stable")]
        truncate_lsn, truncate_commit = lsn[truncates], commit[truncates]
        position = np.searchsorted(truncate_lsn, versions["_lsn"].to_numpy(), side="right")
        has_truncate = position < len(truncate_lsn)
        cut = np.where(has_truncate, truncate_commit[np.minimum(position, len(truncate_lsn) - 1)], NO_END)
        cut_lsn = np.where(has_truncate, truncate_lsn[np.minimum(position, len(truncate_lsn) - 1)], NO_END)
        truncated = cut < versions["known_to"].to_numpy()
        versions.loc[truncated, "closed_by"] = "truncate"
        versions.loc[truncated, "closed_by_lsn"] = cut_lsn[truncated]
        versions["known_to"] = np.minimum(versions["known_to"].to_numpy(), cut)
    return versions


def _fill_unchanged_toast_values(rows: pd.DataFrame) -> pd.DataFrame:
    """A TOASTed column that did not change keeps the previous version's value (even a null)."""
    unavailable = rows["_unavailable"]
    listed = {name for names in unavailable.dropna() for name in names} & set(rows.columns)
    if not listed:
        return rows
    rows = rows.copy()
    position = pd.Series(np.arange(len(rows), dtype=float))
    is_version = np.isin(rows["_rank"].to_numpy(), [OP_ORDER[op] for op in VERSION_OPS])
    for name in sorted(listed):
        masked = unavailable.map(lambda names: names is not None and name in names).to_numpy(dtype=bool)
        # For each masked cell, the latest earlier version of the same key that carried a value.
        source = position.where(~masked & is_version)
        source = source.groupby(rows["_key"].to_numpy(), sort=False).ffill()
        previous = source.where(masked)
        values = rows[name].copy()
        take = previous.notna().to_numpy()
        values[masked] = pd.NA if values.dtype != object else None
        values.iloc[np.flatnonzero(take)] = rows[name].iloc[previous[take].astype(int).to_numpy()].to_numpy()
        rows[name] = values
    return rows


# -- step 2 and 3: aggregation views ----------------------------------------------------------

def _memberships(versions: pd.DataFrame, view: FeatureView, window_micros: int | None,
                 live_after: int | None, columns: set[str]) -> pd.DataFrame:
    """Each version's window membership ``[_start, _end)`` with ``_entity``, ``_event``,
    ``_lsn``, ``_key`` and the versions' ``columns`` (what the aggregations read): only those
    columns are gathered, once, for the versions that are members."""
    event = versions[view.timestamp_field]
    entity = versions[view.entity_column]
    usable = (event.notna() & entity.notna()).to_numpy()
    event_time = event.to_numpy(dtype=np.int64, na_value=0)
    known_from = versions["known_from"].to_numpy()
    known_to = versions["known_to"].to_numpy()
    start = np.maximum(known_from, event_time)
    if window_micros is None:
        end = known_to
    else:
        end = np.minimum(known_to, event_time + window_micros)
    keep = usable & (start < end)
    if live_after is not None:
        # A membership that ended before the range adds and removes itself: no net effect on
        # any value in the range, so it need not be swept.
        keep &= end >= live_after  # an exit exactly at the range start is a change in the range
    rows = np.flatnonzero(keep)
    names = sorted((set(columns) | {"_lsn", "_key"}) - {view.entity_column})
    members = versions.iloc[rows, [versions.columns.get_loc(name) for name in names]]
    members.index = pd.RangeIndex(len(members))
    entity = entity.iloc[rows]
    members["_entity"] = (entity.to_numpy(dtype=np.int64) if entity.dtype == "Int64"
                          else entity.to_numpy(dtype=object))
    if view.entity_column in columns:
        members[view.entity_column] = entity.array
    members["_start"], members["_end"], members["_event"] = start[rows], end[rows], event_time[rows]
    return members


def _events(members: pd.DataFrame, columns: dict[str, pd.Series]) -> pd.DataFrame:
    """+1 at each membership's start, -1 at its end (open-ended memberships never leave)."""
    plus = pd.DataFrame({"_entity": members["_entity"], "_t": members["_start"], "_sign": 1})
    closing = members["_end"].to_numpy() != NO_END
    minus = pd.DataFrame({"_entity": members["_entity"][closing], "_t": members["_end"][closing], "_sign": -1})
    for name, values in columns.items():
        plus[name] = values.to_numpy()
        minus[name] = values[closing].to_numpy()
    return pd.concat([plus, minus], ignore_index=True)


@dataclass
class _Sweep:
    """The memberships' joins and leaves in (entity, time) order, and the instants they form.

    ``rows[i]`` is the member of event i, ``sign[i]`` +1 (join) or -1 (leave); the events of
    one (entity, instant) are ``starts[j]`` up to ``starts[j + 1]``. ``entity_of[j]`` numbers
    instant j's entity, whose first instant is ``first[entity_of[j]]``; instant j is
    (``entities[j]``, ``times[j]``). Within an instant the events keep their
    order in (joins, then leaves, each in member order): the order float sums are taken in.
    """

    rows: np.ndarray
    sign: np.ndarray
    starts: np.ndarray
    entity_of: np.ndarray
    first: np.ndarray
    entities: np.ndarray
    times: np.ndarray

    @property
    def index(self) -> pd.MultiIndex:
        """The instants as an (``_entity``, ``_t``) MultiIndex (built only when asked for)."""
        return pd.MultiIndex.from_arrays([self.entities, self.times], names=["_entity", "_t"])

    @staticmethod
    def of(members: pd.DataFrame) -> "_Sweep":
        start, end = members["_start"].to_numpy(), members["_end"].to_numpy()
        closing = np.flatnonzero(end != NO_END)
        rows = np.concatenate([np.arange(len(members)), closing])
        times = np.concatenate([start, end[closing]])
        sign = np.concatenate([np.ones(len(members), dtype=np.int64), np.full(len(closing), -1, dtype=np.int64)])
        entity = members["_entity"].to_numpy()
        if entity.dtype == np.int64:
            codes, uniques = entity, None  # integer keys order as themselves
        else:
            codes, uniques = pd.factorize(entity, sort=True)
        codes = codes[rows]
        order = _stable_order(codes, times)
        rows, sign, times, codes = rows[order], sign[order], times[order], codes[order]
        new = np.ones(len(rows), dtype=bool)
        new[1:] = (times[1:] != times[:-1]) | (codes[1:] != codes[:-1])
        starts = np.flatnonzero(new)
        instant_codes, instant_times = codes[starts], times[starts]
        new_entity = np.ones(len(starts), dtype=bool)
        new_entity[1:] = instant_codes[1:] != instant_codes[:-1]
        entities = instant_codes if uniques is None else uniques[instant_codes]
        return _Sweep(rows, sign, starts, np.cumsum(new_entity) - 1, np.flatnonzero(new_entity), entities,
                      instant_times)

    def running(self, values: np.ndarray) -> np.ndarray:
        """Per instant, the running sum per entity of the members' signed ``values``.

        int64 sums wrap modulo 2^64 and so are exact whenever the true running value fits
        int64; object arrays (Python ints) are exact at any size; floats are summed with
        pandas (compensated), instant by instant in event order, then cumulated per entity.
        """
        if not len(self.rows):
            return values[:0]
        contributions = values[self.rows]
        if values.dtype == np.float64:
            instant = np.repeat(np.arange(len(self.starts)), np.diff(np.append(self.starts, len(self.rows))))
            per_instant = pd.Series(contributions * self.sign).groupby(instant).sum()
            return per_instant.groupby(self.entity_of).cumsum().to_numpy()
        signed = contributions * (self.sign if values.dtype != object else self.sign.astype(object))
        per_instant = np.add.reduceat(signed, self.starts)
        totals = np.cumsum(per_instant) if values.dtype != object else np.add.accumulate(per_instant, dtype=object)
        before = totals[self.first] - per_instant[self.first]  # the running sum before each entity
        return totals - before[self.entity_of]


def _running_sums(members: pd.DataFrame, aggregations: list[Aggregation], inputs: dict[str, pd.Series],
                  input_types: dict[str, DType], view: FeatureView) -> pd.DataFrame:
    """count, sum, mean, stddev: cumulative sums of signed contributions per entity.

    Σx and Σx² are summed in int64 first. Two's-complement sums wrap modulo 2^64, so a
    running sum is exact whenever its true value fits int64, whatever its intermediates did;
    and a window's |Σx| is at most (members live at once) × max|x|. When that bound (with the
    peak of the running count, per window) does not fit, the column is summed in Python ints.
    """
    sweep = _Sweep.of(members)
    running = {"__count": sweep.running(np.ones(len(members), dtype=np.int64))}
    peak = int(running["__count"].max()) if len(running["__count"]) else 0
    # Aggregations of one input (a sum and a mean of the same expression) share its sums.
    by_input: dict[str, list[Aggregation]] = {}
    for aggregation in aggregations:
        if aggregation.function in ("sum", "mean", "stddev"):  # count needs no input; min, max,
            by_input.setdefault(repr(aggregation.input), []).append(aggregation)  # ... are swept apart
    for group in by_input.values():
        values, squared = inputs[group[0].name], any(a.function == "stddev" for a in group)
        exact = group[0].input.dtype(input_types).kind in ("int", "decimal")
        missing = values.isna().to_numpy()
        sums = {"n": sweep.running((~missing).astype(np.int64)) if missing.any() else running["__count"]}
        if not exact:
            filled = values.to_numpy(dtype=np.float64, na_value=0.0)
            sums["s"] = sweep.running(filled)
            if squared:
                sums["q"] = sweep.running(filled * filled)
        else:
            biggest = max_abs(values)
            wide = is_wide(values)
            filled = (values.where(~missing, 0).to_numpy(dtype=object) if wide
                      else values.to_numpy(dtype=np.int64, na_value=0))
            reach = peak * biggest
            sums["s"] = sweep.running(filled if reach <= INT64_MAX else filled.astype(object))
            if squared:
                if wide or peak * biggest * biggest > INT64_MAX:
                    squares = filled.astype(object) ** 2
                else:
                    squares = filled * filled  # fits: biggest² ≤ peak · biggest² ≤ int64
                sums["q"] = sweep.running(squares)
        for aggregation in group:
            for part, total in sums.items():
                running[f"{aggregation.name}__{part}"] = total
    running = {name: pd.Series(values) for name, values in running.items()}
    result = pd.DataFrame({"_entity": sweep.entities, "_t": sweep.times})
    for aggregation in aggregations:
        name, function = aggregation.name, aggregation.function
        scale = aggregation.input.dtype(input_types).scale if aggregation.input is not None else 0
        if function == "count":
            result[name] = _int64_column(running["__count"])
            continue
        if function not in ("sum", "mean", "stddev"):
            continue
        n, s = running[f"{name}__n"], running[f"{name}__s"]
        if s.dtype == object:
            limit = INT64_MAX if function == "sum" and aggregation.input.dtype(input_types).kind == "int" \
                else DECIMAL38_MAX
            _refuse_beyond(s.set_axis(sweep.index), limit, view, name, f"Σ{aggregation.input!r}")
        if function == "sum":
            if s.dtype == object:
                result[name] = narrow_if_possible(s)
            else:
                result[name] = _int64_column(s) if s.dtype == np.int64 else s.astype("Float64")
        elif function == "mean":
            # One division of two exact integers, each rounded once to a double.
            if scale <= 9:
                denominator = (n.astype(np.int64) * 10 ** scale).astype(np.float64)
            else:
                denominator = n.map(lambda count: float(int(count) * 10 ** scale)).astype(np.float64)
            mean = (s.astype(np.float64) / denominator).to_numpy()
            # Null for an empty window (0/0), as for a NaN a float input brought in.
            result[name] = pd.arrays.FloatingArray(mean, (n.to_numpy() == 0) | np.isnan(mean))
        elif s.dtype == np.float64:
            result[name] = _float_sample_stddev(n, s, running[f"{name}__q"], scale)
        else:
            q = running[f"{name}__q"]
            if q.dtype == object:
                _refuse_beyond((q * n.astype(object)).set_axis(sweep.index), DECIMAL38_MAX, view, name,
                               f"n·Σx² of {aggregation.input!r} (the exact stddev numerator)")
            result[name] = _exact_sample_stddevs(n, s, q, scale)
    return result  # in (entity, time) order


def _int64_column(values: pd.Series) -> pd.arrays.IntegerArray:
    """int64 values without nulls as Int64, with no per-value checks."""
    return pd.arrays.IntegerArray(values.to_numpy(dtype=np.int64), np.zeros(len(values), dtype=bool))


def _exact_sample_stddevs(n: pd.Series, s: pd.Series, q: pd.Series, scale: int) -> pd.Series:
    """The sample stddev at every instant, null below two values, correctly rounded from the
    exact numerator n·Σx² − (Σx)² (``rounded_sqrt``); in int64 arithmetic when it provably fits."""
    counts = n.to_numpy(dtype=np.int64)
    largest_count = int(counts.max()) if len(counts) else 0
    fits = (s.dtype != object and q.dtype != object and largest_count * max_abs(q) <= INT64_MAX
            and max_abs(s) ** 2 <= INT64_MAX and largest_count ** 2 * 10 ** (2 * scale) <= INT64_MAX)
    if fits:
        numerators = (counts * q.to_numpy(dtype=np.int64) - s.to_numpy(dtype=np.int64) ** 2).tolist()
        denominators = (counts * (counts - 1) * 10 ** (2 * scale)).tolist()
    else:
        numerators = [int(c) * int(sq) - int(t) * int(t) for c, t, sq in zip(counts, s.to_numpy(), q.to_numpy())]
        denominators = [int(c) * (int(c) - 1) * 10 ** (2 * scale) for c in counts]
    values = [None if c < 2 else (rounded_sqrt(top, bottom) if top > 0 else 0.0)
              for c, top, bottom in zip(counts.tolist(), numerators, denominators)]
    return pd.Series(values, index=n.index, dtype="Float64")


def _refuse_beyond(values: pd.Series, limit: int, view: FeatureView, feature: str, what: str) -> None:
    """Raise, naming the entity and instant, if an exact value passes what can be stored."""
    too_big = np.array([not pd.isna(value) and abs(int(value)) > limit for value in values], dtype=bool)
    if too_big.any():
        at = values.index[np.flatnonzero(too_big)[0]]
        entity, moment = at if isinstance(at, tuple) else (at, None)
        raise overflow(view, feature, entity, moment, f"{what} = {values.iloc[np.flatnonzero(too_big)[0]]} "
                       f"is beyond {'int64' if limit == INT64_MAX else 'decimal(38)'}")


def _float_sample_stddev(n: pd.Series, s: pd.Series, q: pd.Series, scale: int) -> pd.Series:
    """The sample stddev of a float column (not exact: floats are summed in event order)."""
    values = []
    for count, total, squares in zip(n.to_numpy(), s.to_numpy(), q.to_numpy()):
        if count < 2:
            values.append(None)
            continue
        numerator = float(count) * float(squares) - float(total) * float(total)
        variance = float(numerator) / float(int(count) * (int(count) - 1))
        values.append(math.sqrt(max(variance, 0.0)) / float(10 ** scale))
    return pd.Series(values, index=n.index, dtype="Float64")


def _distinct_counts(members: pd.DataFrame, values: pd.Series) -> pd.Series:
    """count_distinct: a value counts while its multiplicity among live members is above zero."""
    present = values.notna().to_numpy()
    events = _events(members[present].reset_index(drop=True), {"_value": values[present].reset_index(drop=True)})
    if events.empty:
        return pd.Series(dtype="Int64", index=pd.MultiIndex.from_arrays([[], []], names=["_entity", "_t"]))
    events["_value"] = events["_value"].astype(object)
    per_instant = events.groupby(["_entity", "_value", "_t"], sort=True)["_sign"].sum()
    multiplicity = per_instant.groupby(level=["_entity", "_value"], sort=False).cumsum()
    before = multiplicity.groupby(level=["_entity", "_value"], sort=False).shift(1, fill_value=0)
    change = (multiplicity > 0).astype(np.int64) - (before > 0).astype(np.int64)
    change = change.groupby(level=["_entity", "_t"]).sum()
    return change.groupby(level="_entity", sort=False).cumsum().astype("Int64")


class _Reversed:
    """Orders its value backwards, so a min-heap serves max and last."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __lt__(self, other):
        return other.value < self.value

    def __eq__(self, other):
        return self.value == other.value


def _ordered_extreme(members: pd.DataFrame, values: pd.Series, function: str) -> pd.Series:
    """min, max or last among live members at every instant one joins or leaves.

    ``last`` is the value of the member with the greatest (event time, lsn, key); a null
    value there is the answer (no falling back to an older value).
    """
    if function in ("min", "max"):
        present = values.notna().to_numpy()
        members, values = members[present].reset_index(drop=True), values[present].reset_index(drop=True)
    entity = members["_entity"].to_numpy()
    start, end = members["_start"].to_numpy(), members["_end"].to_numpy()
    raw = values.to_numpy(dtype=object)
    # ``_key`` orders as ``_pk`` does: the tie-break of ``last`` (docs/semantics.md).
    event, lsn, key = members["_event"].to_numpy(), members["_lsn"].to_numpy(), members["_key"].to_numpy()
    times = np.concatenate([start, end[end != NO_END]])
    owners = np.concatenate([np.arange(len(members)), np.flatnonzero(end != NO_END)])
    entities = np.concatenate([entity, entity[end != NO_END]])
    order = np.lexsort((times, pd.factorize(entities)[0])) if len(times) else np.array([], dtype=int)
    result_entities, result_times, result_values = [], [], []
    heap: list = []
    alive: set[int] = set()
    current_entity = object()
    index = 0
    while index < len(order):
        i = order[index]
        if entities[i] != current_entity:
            current_entity, heap, alive = entities[i], [], set()
        moment = times[i]
        # Apply every join and leave of this entity at this instant, then read the top.
        while index < len(order) and entities[order[index]] == current_entity and times[order[index]] == moment:
            j = order[index]
            member = owners[j]
            if j < len(members):
                alive.add(member)
                if function == "min":
                    heapq.heappush(heap, (raw[member], member))
                elif function == "max":
                    heapq.heappush(heap, (_Reversed(raw[member]), member))
                else:
                    heapq.heappush(heap, (_Reversed((event[member], lsn[member], key[member])), member))
            else:
                alive.discard(member)
            index += 1
        while heap and heap[0][1] not in alive:
            heapq.heappop(heap)
        result_entities.append(current_entity)
        result_times.append(moment)
        result_values.append(raw[heap[0][1]] if heap else None)
    index_ = pd.MultiIndex.from_arrays([result_entities, np.array(result_times, dtype=np.int64)],
                                       names=["_entity", "_t"])
    return pd.Series(result_values, index=index_, dtype=object)


def aggregation_history(versions: pd.DataFrame, view: FeatureView, live_after: int | None) -> pd.DataFrame:
    """Every value change of an aggregation view: (entity, time, feature values...), exact."""
    input_types = view.input_dtypes()
    by_window: dict[int | None, list[Aggregation]] = {}
    for aggregation in view.aggregations:
        window = None if aggregation.window is None else int(aggregation.window.total_seconds() * 1_000_000)
        by_window.setdefault(window, []).append(aggregation)
    parts = []
    for window, aggregations in by_window.items():
        read = set().union(*[a.input.columns() for a in aggregations if a.input is not None])
        members = _memberships(versions, view, window, live_after, read)
        computed: dict[str, pd.Series] = {}  # one evaluation per distinct input expression
        for aggregation in aggregations:
            if aggregation.input is not None and repr(aggregation.input) not in computed:
                computed[repr(aggregation.input)] = exact_values(aggregation.input, members, input_types)
        inputs = {a.name: computed[repr(a.input)] for a in aggregations if a.input is not None}
        for aggregation in aggregations:
            kind = aggregation.input.dtype(input_types).kind if aggregation.input is not None else None
            if kind in ("int", "decimal") and is_wide(inputs[aggregation.name]):
                _refuse_beyond(inputs[aggregation.name].set_axis(pd.MultiIndex.from_arrays(
                    [members["_entity"], members["_start"]])), INT64_MAX if kind == "int" else DECIMAL38_MAX,
                    view, aggregation.name, repr(aggregation.input))
        part = _running_sums(members, aggregations, inputs, input_types, view)
        swept = []
        for aggregation in aggregations:
            if aggregation.function == "count_distinct":
                swept.append(_distinct_counts(members, inputs[aggregation.name]).rename(aggregation.name).to_frame())
            elif aggregation.function in ("min", "max", "last"):
                extreme = _ordered_extreme(members, inputs[aggregation.name], aggregation.function)
                swept.append(extreme.rename(aggregation.name).to_frame())
        if not swept and len(by_window) == 1:
            parts.append(part)  # the common case: (entity, time) columns, already in order
            break
        # Distinct counts and extremes change only when a member with a value joins or leaves;
        # at the group's other instants (a null-valued member) they keep their last value.
        part = part.set_index(["_entity", "_t"])
        parts.append(_align_window_groups([part, *swept]) if swept else part)
    history = parts[0] if isinstance(parts[0].index, pd.RangeIndex) else _align_window_groups(parts).reset_index()
    output_types = view.stored_dtypes_without_derived()
    for aggregation in view.aggregations:
        column = history[aggregation.name]
        if aggregation.function in ("count", "count_distinct", "sum"):
            column = _zero_where_null(column)  # nothing in the window yet: count 0, sum 0
        history[aggregation.name] = _typed(column, output_types[aggregation.name])
    return history[["_entity", "_t", *[a.name for a in view.aggregations]]]


def _align_window_groups(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Put every window group's values on the union of all groups' change instants.

    At an instant where a group had no event, its values are those of its latest earlier
    event (a group's own nulls, like a mean over an empty window, are kept as they are).
    """
    if len(parts) == 1:
        return parts[0].sort_index()  # one group: its own instants, nothing to carry forward
    index = parts[0].index
    for part in parts[1:]:
        index = index.union(part.index)
    index = index.sort_values()
    entities = index.get_level_values("_entity")
    aligned = pd.DataFrame(index=index)
    for part in parts:
        part = part.sort_index()
        row = pd.Series(np.arange(len(part), dtype=float), index=part.index).reindex(index)
        row = row.groupby(entities, sort=False).ffill()
        taken = part.iloc[row.fillna(0).astype(int).to_numpy()] if len(part) else part.reindex(index)
        for name in part.columns:
            values = taken[name].array if len(part) else taken[name]  # .array: Int64 stays exact
            column = pd.Series(values, index=index, dtype=part[name].dtype)
            aligned[name] = column.where(row.notna().to_numpy())
    return aligned


def _zero_where_null(column: pd.Series) -> pd.Series:
    """``column`` with 0 for its nulls. A wide column (Python ints) stays object: ``fillna``
    would also re-infer its dtype, as uint64 when every value is non-negative and one passes
    int64, which ``_typed`` cannot take back to Int64 (and pandas deprecates that inference)."""
    if is_wide(column):
        return pd.Series([0 if pd.isna(value) else value for value in column], index=column.index, dtype=object)
    return column.fillna(0)


def _typed(column: pd.Series, dtype: DType) -> pd.Series:
    if dtype.kind in ("int", "decimal") and column.dtype == object:
        exact = pd.Series([pd.NA if pd.isna(v) else int(v) for v in column], index=column.index, dtype=object)
        return narrow_if_possible(exact)  # Python ints only while some value needs them
    if dtype.kind in ("int", "decimal", "timestamp"):
        return column.astype("Int64")
    if dtype.kind == "float":
        return pd.to_numeric(column, errors="coerce").astype("Float64")
    if dtype.kind == "bool":
        return column.astype("boolean")
    return column.astype(object)


# -- latest-state views -------------------------------------------------------------------------

def latest_state_history(versions: pd.DataFrame, view: FeatureView) -> pd.DataFrame:
    """A row when a version becomes current, and a ``_deleted`` row when the entity disappears."""
    input_types = view.input_dtypes()
    def entity_of(frame: pd.DataFrame) -> pd.Series:
        column = frame[view.entity_column]
        return column.astype(np.int64) if input_types[view.entity_column].kind == "int" else column

    # A version that ends at the instant it begins (two changes of a key in one commit) is
    # never current, but how it ends still counts: an update then a delete in one commit
    # leaves the entity deleted.
    current = versions[versions["known_from"] < versions["known_to"]].reset_index(drop=True)
    rows = pd.DataFrame({"_entity": entity_of(current), "_t": current["known_from"], "_lsn": current["_lsn"],
                         "_deleted": False})
    for feature in view.features:
        # ``.array`` keeps Int64 exact; ``.to_numpy()`` of one with nulls is float64 (rounds past 2^53).
        rows[feature.name] = exact_values(feature.expression, current, input_types).array
    gone = versions[versions["closed_by"].isin(["delete", "truncate"]).to_numpy()].reset_index(drop=True)
    deleted = pd.DataFrame({"_entity": entity_of(gone), "_t": gone["known_to"],
                            "_lsn": gone["closed_by_lsn"].astype(np.int64), "_deleted": True})
    for feature in view.features:
        deleted[feature.name] = _nulls_like(rows[feature.name], len(deleted))
    history = pd.concat([frame for frame in (rows, deleted) if len(frame)] or [rows], ignore_index=True)
    history = history.sort_values(["_entity", "_t", "_lsn"], kind="stable")
    # Several changes of one entity at one instant (one transaction): the last one stands.
    history = history.drop_duplicates(["_entity", "_t"], keep="last")
    output_types = view.stored_dtypes_without_derived()
    for feature in view.features:
        history[feature.name] = _typed(history[feature.name], output_types[feature.name])
    return history[["_entity", "_t", *[f.name for f in view.features], "_deleted"]].reset_index(drop=True)


def _nulls_like(column: pd.Series, length: int) -> pd.api.extensions.ExtensionArray:
    """``length`` nulls of ``column``'s dtype, so a concatenation with it keeps that dtype (Int64
    stays exact, a Float64 NaN value stays a value); ``None`` in an object column where that
    dtype holds no null (int64, bool), as concatenating with all-``None`` columns gave."""
    dtype = column.dtype
    if dtype == object or (isinstance(dtype, np.dtype) and dtype.kind in "iub"):
        return pd.array([None] * length, dtype=object)
    return pd.array([None] * length, dtype=dtype)


def apply_row_transform(versions: pd.DataFrame, view: FeatureView) -> pd.DataFrame:
    """Run the view's own pandas code on the row versions; check it kept what the engine needs."""
    # The view's code sees the versions as they always were: ``_key`` is the engine's own
    # integer code of ``_pk``, recomputed from the ``_pk`` of the rows the code kept.
    transformed = view.transform.pandas(versions.drop(columns="_key"))
    if not isinstance(transformed, pd.DataFrame):
        raise TypeError(f"feature view {view.name!r}: transform.pandas returned {type(transformed).__name__}, not a DataFrame")
    missing = [c for c in [*versions.columns, *view.transform.columns]
               if c not in transformed.columns and c != "_key"]
    if missing:
        raise ValueError(f"feature view {view.name!r}: transform.pandas dropped or did not add columns {missing}")
    transformed = transformed.reset_index(drop=True)
    transformed["_key"] = pd.factorize(transformed["_pk"], sort=True)[0]
    return _close_before_dropped_versions(transformed)


def _close_before_dropped_versions(kept: pd.DataFrame) -> pd.DataFrame:
    """A version the transform dropped does not exist: the kept version before it ends there as
    if deleted (a latest-state entity has no row until a later kept version), not lasting on."""
    if kept.empty:
        return kept
    kept = kept.sort_values(["_key", "_lsn", "_rank"], kind="stable").reset_index(drop=True)
    keys, lsns = kept["_key"].to_numpy(), kept["_lsn"].to_numpy(dtype=np.int64)
    next_kept = np.full(len(kept), NO_END, dtype=np.int64)
    same_key = keys[1:] == keys[:-1]
    next_kept[:-1] = np.where(same_key, lsns[1:], NO_END)
    dropped_next = (kept["closed_by"] == "version").to_numpy() & (next_kept != kept["closed_by_lsn"].to_numpy())
    kept.loc[dropped_next, "closed_by"] = "delete"
    return kept


# -- the whole computation --------------------------------------------------------------------------

def compute_history(change_log: pa.Table, view: FeatureView, emit: HistoryRange) -> pa.Table:
    """The view's value changes with valid_from in ``emit``, as an Arrow table (history_schema)."""
    versions = row_versions(change_log_frame(change_log, view, _needed_columns(view)))
    if view.transform is not None:
        versions = apply_row_transform(versions, view)
    if view.is_aggregation_view:
        history = aggregation_history(versions, view, emit.start)
    else:
        history = latest_state_history(versions, view)
    instants = history["_t"].to_numpy()
    in_range = (instants < emit.end) if emit.start is None else (instants >= emit.start) & (instants < emit.end)
    if not in_range.all():
        history = history[in_range]
        history.index = pd.RangeIndex(len(history))
    return finish_history(history, view)


def finish_history(history: pd.DataFrame, view: FeatureView) -> pa.Table:
    """Derived features, ``drop_unchanged_within_hour`` and the Arrow table, from the value
    changes in the emit range (the Spark engine ends views with an exact stddev here too)."""
    stored_types = view.stored_dtypes_without_derived()
    for derived in view.derived:
        history[derived.name] = _typed(exact_values(derived.expression, history, stored_types),
                                       derived.expression.dtype(stored_types))
        stored_types[derived.name] = derived.expression.dtype(stored_types)
    history = drop_unchanged_within_hour(history, list(view.stored_dtypes()) + (["_deleted"] if "_deleted" in history else []))
    return to_arrow(history, view)


def drop_unchanged_within_hour(history: pd.DataFrame, value_columns: list[str]) -> pd.DataFrame:
    """Drop a row equal to the entity's previous row in the same hour.

    The first row of an entity in each hour is always kept, so what a partition holds never
    depends on how partitions were grouped into runs. Returns the kept rows in (entity,
    time) order (the aggregation sweep's output already is: then nothing is sorted).
    """
    if history.empty:
        return history
    entity = history["_entity"]
    codes = entity.to_numpy() if entity.dtype == np.int64 else pd.factorize(entity, sort=True)[0]
    times = history["_t"].to_numpy(dtype=np.int64)
    order = None
    if not np.all((codes[1:] > codes[:-1]) | ((codes[1:] == codes[:-1]) & (times[1:] >= times[:-1]))):
        order = _stable_order(codes, times)
        codes, times = codes[order], times[order]
    hour = times // HOUR_MICROS
    unchanged = (codes[1:] == codes[:-1]) & (hour[1:] == hour[:-1])
    for name in value_columns:
        unchanged &= _same_as_previous(history[name] if order is None else history[name].take(order))
    kept = np.flatnonzero(np.concatenate([[True], ~unchanged]))
    kept = kept if order is None else order[kept]
    if len(kept) == len(history) and order is None:
        kept_rows = history.copy(deep=False)
    else:
        kept_rows = history.take(kept)
    kept_rows.index = pd.RangeIndex(len(kept_rows))
    return kept_rows


def _same_as_previous(column: pd.Series) -> np.ndarray:
    """Whether each value but the first equals the one before it (two nulls are equal; NaN,
    where it is a value rather than a null, equals nothing)."""
    missing = column.isna().to_numpy()
    both_missing = missing[1:] & missing[:-1]
    if isinstance(column.array, _MASKED):
        numpy_dtype = column.dtype.numpy_dtype  # Int64, Float64, boolean: values and a null mask
        values = column.to_numpy(dtype=numpy_dtype, na_value=numpy_dtype.type(0))
    elif column.dtype.kind in "iufb":
        values = column.to_numpy()
    else:  # Python objects (wide integers, strings): pandas' own comparison
        current, previous = column.iloc[1:].reset_index(drop=True), column.iloc[:-1].reset_index(drop=True)
        return (current == previous).fillna(False).to_numpy(dtype=bool) | both_missing
    return ((values[1:] == values[:-1]) & ~missing[1:] & ~missing[:-1]) | both_missing


def to_arrow(history: pd.DataFrame, view: FeatureView) -> pa.Table:
    """The history as the view's Arrow table, in (valid_from, entity) order.

    The rows are put in order here, on integer arrays, before they become Arrow arrays.
    (valid_from, entity) is unique, so the order is the one ``Table.sort_by`` would give."""
    schema = view.history_schema()
    stored = view.stored_dtypes()
    entity = history["_entity"]
    codes = entity.to_numpy() if entity.dtype == np.int64 else pd.factorize(entity, sort=True)[0]
    order = _stable_order(history["_t"].to_numpy(dtype=np.int64), codes)
    if np.any(order != np.arange(len(order))):
        history = history.take(order)
    arrays = [_arrow_array(history["_entity"], schema.field(0).type), micros_to_timestamp(history["_t"])]
    for name, dtype in stored.items():
        column = history[name]
        if dtype.kind == "decimal":
            arrays.append(unscaled_to_decimal(column if is_wide(column) else column.astype("Int64"), dtype.scale))
        elif dtype.kind == "timestamp":
            arrays.append(micros_to_timestamp(column))
        else:
            arrays.append(_arrow_array(column, schema.field(name).type))
    if "_deleted" in schema.names:
        arrays.append(pa.array(history["_deleted"].astype(bool).to_numpy()))
    return pa.Table.from_arrays(arrays, schema=schema)


def _arrow_array(column: pd.Series, arrow_type: pa.DataType) -> pa.Array:
    """A column as Arrow: numpy and nullable (Int64, Float64, boolean) arrays directly, their
    nulls from the mask (a float NaN that is a value stays NaN); Python objects one by one."""
    if isinstance(column.array, _MASKED):
        return pa.array(column.array, type=arrow_type)
    if column.dtype.kind in "iufb":
        return pa.array(column.to_numpy(), type=arrow_type, from_pandas=True)  # a bare float NaN is a null
    return pa.array(column.astype(object).where(column.notna(), None).tolist(), type=arrow_type)
