"""The Spark engine: the pandas engine's algorithm, written relationally in Spark SQL.

``compute_history_spark(spark, change_log, view, emit)`` returns exactly the Arrow table that
``pandas_engine.compute_history(change_log, view, emit)`` returns: same schema, rows, order
and bits. It is the same algorithm, not a second one, which is what makes the parity tests
(tests/test_spark_engine.py) meaningful.

Why relational: each step of the pandas engine is a sort followed by a sweep, and each
sweep is a window function or a grouped sum (../shared/DESIGN-NOTES.md). Spark partitions
that work by primary key, then by entity, so the same definition runs on a cluster when a
change log outgrows one machine. Step by step, with the pandas function each one mirrors:

1. **Loading** (``change_log_frame``): a decimal(p,s) becomes its unscaled ``decimal(p,0)``
   (``unit_price * 100``), a timestamp its microseconds (``unix_micros``), an int a ``long``.
   Nothing is a float before a mean, a stddev or a division; sums of ints and decimals are
   ``DECIMAL(38,0)`` with ``try_`` arithmetic, so they are exact or a named error. (They
   are first computed in longs, kept as longs to the Arrow table, and computed again in
   ``DECIMAL(38,0)`` only if a long overflowed: ``_narrowed``.)
2. **Row versions** (``row_versions``): a window over ``_pk`` ordered by ``(_lsn, op rank)``.
   ``lead(_commit)`` is ``known_to`` (the key's next change, a delete included, closes a
   version). A TOASTed column takes the value of the latest earlier *version* of the key
   that carried one: ``last(struct(value), ignorenulls)``, so a carried null stays null. A
   truncate closes every version before it: a broadcast join to the first truncate of
   greater lsn, ``known_to = least(known_to, its commit)``. A view's ``RowTransform`` runs
   here (``transform.spark``).
3. **Memberships** (``_memberships``): ``[max(known_from, event), min(known_to, event + W))``
   for every window group at once (W None: open), dropping empty ones and ones that ended
   before ``emit.start``; then hash-partitioned by entity (and checkpointed if several
   pieces below read them). Everything after
   is keyed by entity, so it runs without another shuffle until the final union.
4. **Sweeps** per window group (``_running_sums``, ``_distinct_counts``, ``_ordered_extreme``):
   +1 at a membership's start, -1 at its end (``explode``), summed per (entity, instant),
   then cumulatively per entity. count_distinct does the same over (entity, value)
   multiplicities. min, max and last join each instant to the memberships live at it
   (``start <= t < end``); ``last`` takes the live member with the greatest
   ``(event time, lsn, _pk)``, its null included.
5. **Alignment** (``_align_window_groups``): all pieces meet in one union, sorted per entity
   by instant; ``last(struct, ignorenulls)`` carries each group's row forward (its own nulls
   kept), and each count_distinct / min / max / last forward too, from the instants where it
   had a row itself (before its first: null, count_distinct 0), as pandas aligns them.
6. **Latest-state views** (``latest_state_history``): a row per version becoming current, a
   ``_deleted`` row (at the lsn of the change that closed it) when a delete or truncate
   closes any version, an empty one included; of one entity's rows at one instant the last
   in (lsn, deleted, key, op rank) order stands.
7. **Emit range, derived features** (``Expr.to_spark``), **drop_unchanged_within_hour**
   (``lag`` per entity; an hour's first row always stays), then Arrow with
   ``view.history_schema()``, sorted by (valid_from, join key) like ``to_arrow``.

Floats are bit-identical because both engines make them from the same integers in the same
way: ``mean = double(Σx) / double(n·10^scale)``, and the stddev is the correctly rounded
``sqrt((n·Σx² − (Σx)²) / (n(n−1)·10^2scale))`` from the exact numerator (``DECIMAL(38,0)``
here, Python ints in pandas). For a view with such a stddev the query returns the exact
(n, numerator) and the driver finishes with the pandas engine's own code (``rounded_sqrt``,
derived features, ``drop_unchanged_within_hour``): a Python UDF cost seconds per query. A
value beyond ``DECIMAL(38)`` raises a ``raise_error`` naming view, feature and entity, which
``compute_history_spark`` re-raises as ``ValueOverflowError``, as pandas does. (Sums over a *float* input column depend on
summation order, so they may differ in the last bits; the demo views aggregate only ints
and decimals.)

Ties that pandas breaks by row order (two changes of one key with the same lsn and op) are
broken by the change log's row order here too: the Arrow table's row index, or (file path,
row in file) for Parquet paths. Built change-log partitions hold no such duplicates.

Speed: run it with ``spark_session.get_spark()``'s settings (adaptive execution off: with it
on, the plans need three times the jobs and its checkpoints forget their partitioning). On
workload B (1M events, bench/ours.py cdc spark, local[2]) a fresh JVM's first computation
spends ~8 s of JVM CPU before any data matters (loading ~12,000 classes, the JIT compiling
~9,000 methods, Janino compiling the generated code: as much at 20k events; hence the C1-only
JIT of local sessions). The rest, ~13 s of CPU again in a warm session, is spread over the
plan: reading and shuffling by key ~2.3 s (one task per Parquet row group), the window by key
~3.5 s, memberships and the shuffle by entity ~1.5 s, the sweep (explode, sum per instant,
sort, running window) ~4.8 s, alignment, drop-unchanged and Arrow ~1 s (session 4). Since:
change logs are written in row groups of 64Ki rows (read by as many tasks as the session has
cores), the TOAST fill is skipped when no change carries an ``_unavailable`` element
(``_may_carry_unavailable``), and the long pass sweeps with one running window over the
events, its inputs shared between aggregations: a warm run ~13.5 -> ~10.5 s at load ~2.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from feature_platform.cdc.change_log import OP_ORDER, change_log_schema
from feature_platform.engines.frames import DECIMAL38_MAX, INT64_MAX, NO_END, rounded_sqrt
from feature_platform.engines.pandas_engine import HOUR_MICROS, VERSION_OPS, HistoryRange, ValueOverflowError, bound
from feature_platform.expressions import Column, DType, Expr
from feature_platform.feature_view import Aggregation, FeatureView, source_dtypes

__all__ = ["compute_history_spark"]

WIDE = "decimal(38,0)"  # exact integers: unscaled decimals, sums, sums of squares
_OVERFLOW = "feature-platform overflow: "  # marks our raise_error messages inside Spark's errors
_WIDEN = "feature-platform widen: "  # a long overflowed in the narrow pass: compute again in DECIMAL(38,0)
LONG_MIN = -2**63

_SPARK_TYPES = {"int": "long", "decimal": WIDE, "timestamp": "long", "float": "double",
                "bool": "boolean", "string": "string"}


def _spark_type(dtype: DType) -> str:
    """How a value of ``dtype`` is carried inside the engine (decimals unscaled, times in µs)."""
    return _SPARK_TYPES[dtype.kind]


def _narrow_type(dtype: DType) -> str:
    """How an aggregation's output of ``dtype`` is carried in the narrow pass (``_narrowed``):
    a decimal's unscaled value as a long."""
    return "long" if dtype.kind == "decimal" else _spark_type(dtype)


# -- loading ------------------------------------------------------------------------------

def _load(spark, change_log: pa.Table | Iterable[str], view: FeatureView, toasted: bool):
    """The change log as a DataFrame of integers, with a tie-breaking row order (_file, _seq);
    ``_unavailable`` only if ``toasted`` (some change may carry an element of it)."""
    from pyspark.sql import functions as F

    schema = change_log_schema(view.source)
    wanted = [*view.source.column_names, "_op", "_lsn", "_commit_time", "_pk", *(["_unavailable"] if toasted else [])]
    if isinstance(change_log, pa.Table):
        table = pa.Table.from_arrays(
            [change_log.column(name).cast(schema.field(name).type) for name in wanted],
            schema=pa.schema([schema.field(name).with_nullable(True) for name in wanted]))
        table = table.append_column("_seq", pa.array(np.arange(table.num_rows, dtype=np.int64)))
        raw = spark.createDataFrame(table).withColumn("_file", F.lit(""))
    else:
        paths = [str(path) for path in change_log]
        if not paths:
            return _load(spark, schema.empty_table(), view, toasted)
        raw = spark.read.parquet(*paths).select(
            *wanted, F.col("_metadata.file_path").alias("_file"), F.col("_metadata.row_index").alias("_seq"))
    types = source_dtypes(view.source)
    columns = []
    for name in view.source.column_names:
        dtype = types[name]
        column = F.col(name)
        if dtype.kind == "decimal":
            # The unscaled value, exactly, as a decimal(p, 0) of the declared precision p: Spark
            # then types every product and sum with enough digits (up to 38).
            column = _unscaled(column, *view.source.column(name).decimal_precision_scale)
        elif dtype.kind == "timestamp":
            column = F.unix_micros(column)
        else:
            column = column.cast(_spark_type(dtype))
        columns.append(column.alias(name))
    rank = F.lit(None).cast("int")
    for op, value in OP_ORDER.items():
        rank = F.when(F.col("_op") == op, F.lit(value)).otherwise(rank)
    return raw.select(*columns, "_op", F.col("_lsn").cast("long").alias("_lsn"),
                      F.unix_micros("_commit_time").alias("_commit"), "_pk", *(["_unavailable"] if toasted else []),
                      rank.alias("_rank"), "_file", F.col("_seq").cast("long").alias("_seq"))


def _may_carry_unavailable(spark, change_log: pa.Table | Iterable[str]) -> bool:
    """False only if no change of the log carries an element in ``_unavailable`` (no TOASTed
    column to fill from an earlier version): then ``_row_versions`` skips its fill, a
    ``last(struct, ignorenulls)`` window per column read (1.4-1.9 s of CPU at 1M changes).

    An Arrow table: its own column. Parquet files: each row group's statistics of the list's
    element column, from the footers, read on the driver: a chunk has no element when its
    null count (null elements, empty and null lists all count) equals its number of levels.
    Only where the driver sees the files Spark reads (a local master, local paths); a file
    whose footer cannot be read (a directory, a glob) or that has no such statistics counts
    as carrying elements.
    """
    import pyarrow.parquet as pq

    if isinstance(change_log, pa.Table):
        try:
            elements = pc.list_flatten(change_log.column("_unavailable").cast(pa.list_(pa.string())))
        except Exception:  # no such column, or not a list of strings: _load says what is wrong
            return True
        return elements.null_count != len(elements)
    paths = [str(path) for path in change_log]
    if not paths:
        return False
    context = spark.sparkContext
    if not context.master.startswith("local") or \
            context._jsc.hadoopConfiguration().get("fs.defaultFS", "file:///") not in ("file:///", "file:/"):
        return True
    for path in paths:
        if path.startswith("file:") and "%" not in path:
            path = "/" + path[len("file:"):].lstrip("/")
        elif ":" in path or "*" in path or "?" in path or "[" in path or "{" in path:
            return True  # another scheme, or a glob
        try:
            metadata = pq.read_metadata(path)
        except Exception:
            return True
        leaves = [i for i in range(metadata.num_columns)
                  if metadata.schema.column(i).path.split(".")[0] == "_unavailable"]
        if len(leaves) != 1:
            return True
        for group in range(metadata.num_row_groups):
            chunk = metadata.row_group(group).column(leaves[0])
            statistics = chunk.statistics if chunk.is_stats_set else None
            if statistics is None or not statistics.has_null_count or statistics.null_count != chunk.num_values:
                return True
    return False


def _unscaled(column, precision: int, scale: int):
    """A decimal(p,s) column → its unscaled value as decimal(p,0), exactly (11.75 → 1175)."""
    from decimal import Decimal

    from pyspark.sql import functions as F

    power = F.lit(Decimal(10 ** scale))
    if precision + scale + 2 <= 38:  # the product's type holds every digit
        return (column * power).cast(f"decimal({precision},0)")
    # Wider: whole and fractional parts apart, so no intermediate type must drop digits.
    whole = F.when(column >= 0, F.floor(column)).otherwise(F.ceil(column)).cast(f"decimal({precision},0)")
    fraction = ((column - whole) * power).cast(f"decimal({min(scale + 1, 38)},0)")
    return (whole * power + fraction).cast(f"decimal({precision},0)")


# -- step 1: row versions -----------------------------------------------------------------

def _row_versions(changes, view: FeatureView, needed: set[str], toasted: bool):
    """One row per version with known_from / known_to / closed_by (``row_versions``);
    TOASTed columns filled only if ``toasted`` (``_may_carry_unavailable``)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    rows = changes.filter(F.col("_op") != "t")
    by_key = Window.partitionBy("_pk").orderBy("_lsn", "_rank", "_file", "_seq")
    earlier = by_key.rowsBetween(Window.unboundedPreceding, -1)
    is_version = F.col("_op").isin(*VERSION_OPS)
    # A TOASTed column that did not change keeps the value of the latest earlier version of
    # the same key that carried one, a null included (hence the struct: last(ignorenulls)
    # skips only rows that are not sources, never a source whose value is null).
    filled = []
    for name in view.source.column_names:
        if name not in needed:
            continue
        if not toasted:
            filled.append(F.col(name))
            continue
        masked = F.coalesce(F.array_contains("_unavailable", name), F.lit(False))
        source = F.last(F.when(~masked & is_version, F.struct(F.col(name).alias("v"))), ignorenulls=True)
        filled.append(F.when(masked, source.over(earlier)["v"]).otherwise(F.col(name)).alias(name))
    next_op = F.lead("_op").over(by_key)
    next_commit = F.lead("_commit").over(by_key)
    next_lsn = F.lead("_lsn").over(by_key)  # orders a deletion among changes at one instant
    kept = ("_op", "_lsn", "_commit", "_pk", "_rank", "_file", "_seq")
    rows = rows.select(
        *filled, *kept,
        F.coalesce(next_commit, F.lit(NO_END)).alias("known_to"),
        F.coalesce(next_lsn, F.lit(NO_END)).alias("closed_by_lsn"),
        F.when(next_op.isNull(), F.lit(None).cast("string"))
         .when(next_op.isin(*VERSION_OPS), F.lit("version")).otherwise(F.lit("delete")).alias("closed_by"))
    versions = rows.filter(is_version).withColumn("known_from", F.col("_commit"))

    # The first truncate after a version (in lsn order) empties the table: truncate i closes
    # the versions with lsn in [lsn of truncate i-1, lsn of truncate i).
    truncates = changes.filter(F.col("_op") == "t").groupBy("_lsn").agg(F.min("_commit").alias("_cut"))
    truncates = truncates.select(F.col("_lsn").alias("_cut_lsn"), "_cut",
                                 F.lag("_lsn").over(Window.orderBy("_lsn")).alias("_cut_after"))
    in_interval = (F.col("_lsn") < F.col("_cut_lsn")) & (
        F.col("_cut_after").isNull() | (F.col("_lsn") >= F.col("_cut_after")))
    versions = versions.join(F.broadcast(truncates), in_interval, "left")
    cut = F.coalesce(F.col("_cut"), F.lit(NO_END))
    return versions.select(
        *[c for c in versions.columns
          if c not in ("known_to", "closed_by", "closed_by_lsn", "_cut", "_cut_lsn", "_cut_after")],
        F.when(cut < F.col("known_to"), F.lit("truncate")).otherwise(F.col("closed_by")).alias("closed_by"),
        F.when(cut < F.col("known_to"), F.col("_cut_lsn")).otherwise(F.col("closed_by_lsn")).alias("closed_by_lsn"),
        F.least(F.col("known_to"), cut).alias("known_to"))


# -- steps 2 to 5: aggregation views --------------------------------------------------------
#
# Every step after the memberships is keyed by entity: the memberships are hash-partitioned
# by entity once, and each grouping, window and join after that (by (entity, t), by
# (entity, value), by entity) finds its input already clustered, so Spark shuffles no more
# until the pieces meet in one union. Events are made with explode (which keeps the
# partitioning) rather than a union of a "+" and a "-" frame (which would lose it).

def _window_groups(view: FeatureView) -> list[tuple[int | None, list[Aggregation]]]:
    """The aggregations by window (in microseconds; None: all history), in declared order."""
    by_window: dict[int | None, list[Aggregation]] = {}
    for aggregation in view.aggregations:
        window = None if aggregation.window is None else int(aggregation.window.total_seconds() * 1_000_000)
        by_window.setdefault(window, []).append(aggregation)
    return list(by_window.items())


def _input_name(aggregation: Aggregation) -> str:
    """The memberships' column of an aggregation's input value: one per distinct expression
    (as pandas evaluates each once), so aggregations over one input share it."""
    import hashlib

    return f"__input__{hashlib.sha1(repr(aggregation.input).encode()).hexdigest()[:16]}"


def _with_approximations(frame, expressions: list[Expr], types: dict[str, DType], view: FeatureView):
    """Double copies of the exact columns that ``_guarded`` expressions read."""
    from pyspark.sql import functions as F

    names = sorted({name for expression in expressions if _needs_guard(expression, types, view)
                    for name in expression.columns() if types[name].kind in ("int", "decimal")})
    return frame.select("*", *[F.col(name).cast("double").alias(_APPROX + name) for name in names]) if names else frame


def _memberships(versions, view: FeatureView, groups, live_after: int | None, narrow: bool):
    """Every version's membership in each window group (``_memberships``), by entity.

    ``[max(known_from, event), min(known_to, event + W))``; empty ones vanish, and so do
    ones that ended before ``live_after`` (added and removed before the range: no net
    effect on any value in it). ``narrow``: exact inputs as longs (``_narrowed``).
    """
    from pyspark.sql import functions as F

    input_types = view.input_dtypes()
    event = F.col(view.timestamp_field)
    usable = versions.filter(event.isNotNull() & F.col(view.entity_column).isNotNull())
    usable = _with_approximations(usable, [a.input for a in view.aggregations if a.input is not None], input_types, view)
    start = F.greatest(F.col("known_from"), event)
    members = usable.select(
        F.col(view.entity_column).alias("_entity"), event.alias("_event"), "known_from", "known_to",
        "_lsn", "_pk", "_rank", "_seq",
        *[_input_column(a, input_types, view, start, narrow).alias(name) for name, a in {
            _input_name(a): a for a in reversed(view.aggregations) if a.input is not None}.items()],
        (F.lit(0) if len(groups) == 1 else F.explode(F.array(*[F.lit(index) for index in range(len(groups))])))
        .alias("_group"))
    window = F.lit(None).cast("long")
    for index, (micros, _) in enumerate(groups):
        if micros is not None:
            window = F.when(F.col("_group") == index, F.lit(micros)).otherwise(window)
    start = F.greatest(F.col("known_from"), F.col("_event"))
    end = F.when(window.isNull(), F.col("known_to")).otherwise(F.least(F.col("known_to"), F.col("_event") + window))
    members = members.select("*", start.alias("_start"), end.alias("_end")).drop("known_from", "known_to")
    keep = F.col("_start") < F.col("_end")
    if live_after is not None:
        keep = keep & (F.col("_end") >= F.lit(live_after))  # an exit at the range start is in the range
    partitions = int(versions.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    return members.filter(keep).repartition(partitions, "_entity")


def _input_column(aggregation: Aggregation, input_types: dict[str, DType], view: FeatureView, start, narrow: bool):
    """An aggregation's input value; an exact one as a long in the narrow pass."""
    from pyspark.sql import functions as F

    value = _guarded(aggregation.input, input_types, view, aggregation.name, F.col(view.entity_column), start)
    if narrow and aggregation.input.dtype(input_types).kind in ("int", "decimal"):
        return _narrowed(value)
    return value


def _narrowed(value):
    """An exact (integral) value as a long, or the ``_WIDEN`` error where it is not one.

    Spark sums longs several times faster than DECIMAL(38,0) (a Java BigDecimal per value),
    and the values of real change logs fit a long, so the engine computes in longs first and
    again in DECIMAL(38,0) only if a value, square or sum left the long range
    (``compute_history_spark``). The long minimum counts as outside: its negation (an event
    leaving) would not fit.
    """
    from pyspark.sql import functions as F

    as_long = value.try_cast("long")
    fits = as_long.isNotNull() & (as_long != F.lit(LONG_MIN))
    return F.when(value.isNull() | fits, as_long).otherwise(_widen_error())


def _widen_error():
    from pyspark.sql import functions as F

    return F.raise_error(F.lit(f"{_WIDEN}a value, square or sum is beyond a long"))


def _refuse_long_null(column):
    """``column``, or the ``_WIDEN`` error where a ``try_`` operation on longs overflowed."""
    from pyspark.sql import functions as F

    return F.when(column.isNull(), _widen_error()).otherwise(column)


def _events(members, columns: list[str]):
    """+1 at each membership's start, -1 at its end (open-ended memberships never leave)."""
    from pyspark.sql import functions as F

    sides = F.explode(F.array(
        F.struct(F.col("_start").alias("t"), F.lit(1).cast("long").alias("sign")),
        F.struct(F.col("_end").alias("t"), F.lit(-1).cast("long").alias("sign")))).alias("_side")
    events = members.select("_entity", *columns, sides)
    events = events.select("_entity", *columns, F.col("_side.t").alias("_t"), F.col("_side.sign").alias("_sign"))
    return events.filter(F.col("_t") != F.lit(NO_END))  # only an open end can be NO_END


def _by_entity(*, running: bool):
    from pyspark.sql import Window

    window = Window.partitionBy("_entity").orderBy("_t")
    return window.rowsBetween(Window.unboundedPreceding, Window.currentRow) if running else window


def _running_sums(members, aggregations: list[Aggregation], input_types: dict[str, DType], view: FeatureView,
                  narrow: bool):
    """count, sum, mean, stddev at every instant of the group (``_running_sums``).

    Returns (_entity, _t, values...): one row per instant at which a member of the group
    joins or leaves, which is the group's index. Exact inputs are summed as DECIMAL(38,0)
    with ``try_*`` arithmetic: a value beyond 38 digits becomes a named error
    (``_refuse_null``), never a wrapped or silently dropped one. In the ``narrow`` pass
    they are summed as longs, and an overflow is the ``_WIDEN`` error instead; the sums stay
    longs to the output, the same integers a DECIMAL(38,0) would hold.
    """
    from pyspark.sql import functions as F

    def refuse(column, feature: str, what: str, moment):
        return _refuse_long_null(column) if narrow else _refuse_null(column, view, feature, what, moment)

    # Aggregations over one input share its n, Σx (and Σx²), as in pandas: named after the
    # first of them (``_shared_sums``).
    owners = _shared_sums(aggregations)
    contributions: dict[str, object] = {}
    for aggregation in aggregations:
        if aggregation.function not in ("sum", "mean", "stddev"):
            continue
        owner = owners[aggregation.name]
        value = F.col(_input_name(owner))
        exact = aggregation.input.dtype(input_types).kind in ("int", "decimal")
        kind = ("long" if narrow else WIDE) if exact else "double"
        filled = F.coalesce(value.cast(kind), F.lit(0).cast(kind))
        if f"{owner.name}__n" not in contributions:
            contributions[f"{owner.name}__n"] = F.when(value.isNotNull(), F.lit(1)).otherwise(F.lit(0)).cast("long")
            contributions[f"{owner.name}__s"] = filled
        if aggregation.function == "stddev" and f"{owner.name}__q" not in contributions:
            square = F.try_multiply(filled, filled) if exact else filled * filled
            if exact:
                square = refuse(square, owner.name, f"the square of {aggregation.input!r}", F.col("_start"))
            contributions[f"{owner.name}__q"] = square
    members = members.select("_entity", "_start", "_end", *[c.alias(n) for n, c in contributions.items()])
    events = _events(members, list(contributions))
    signed = {name: F.when(F.col("_sign") > 0, F.col(name)).otherwise(-F.col(name)) for name in contributions}
    exact_sums = {name for name in contributions if not name.endswith("__n")
                  and _aggregation_of(aggregations, name).input.dtype(input_types).kind in ("int", "decimal")}
    if narrow and all(name.endswith("__n") or name in exact_sums for name in contributions):
        # Only longs: one running sum over the events themselves, of which each instant's last
        # row (the same total as summing per instant first) is kept. A long can overflow
        # part-way through an instant where the per-instant sum would not: that is the
        # ``_WIDEN`` error, and the DECIMAL(38,0) pass below computes it per instant.
        so_far = _by_entity(running=True)
        running = events.select("_entity", "_t", F.sum("_sign").over(so_far).alias("__count"), *[
            (F.try_sum if name in exact_sums else F.sum)(column).over(so_far).alias(name)
            for name, column in signed.items()], F.lead("_t").over(_by_entity(running=False)).alias("_next_t"))
        running = running.filter(F.col("_next_t").isNull() | (F.col("_next_t") != F.col("_t"))).drop("_next_t")
    else:
        per_instant = events.groupBy("_entity", "_t").agg(
            F.sum("_sign").alias("__count"),
            *[(F.try_sum if name in exact_sums else F.sum)(column).alias(name) for name, column in signed.items()])
        running = per_instant.select("_entity", "_t", *[
            refuse(F.col(name), _aggregation_of(aggregations, name).name, "a sum", F.col("_t"))
            .alias(name) if name in exact_sums else F.col(name) for name in ["__count", *contributions]])
        running = running.select("_entity", "_t", *[
            (F.try_sum if name in exact_sums else F.sum)(name).over(_by_entity(running=True)).alias(name)
            for name in ["__count", *contributions]])
    # Narrow sums stay longs to the end (``_aggregation_history``): a DECIMAL(38,0) is a Java
    # BigDecimal in every row that reads, compares or converts it.
    running = running.select("_entity", "_t", *[
        refuse(F.col(name), _aggregation_of(aggregations, name).name, "a sum", F.col("_t"))
        .cast("long" if narrow else WIDE).alias(name)
        if name in exact_sums else F.col(name) for name in ["__count", *contributions]])
    outputs = []
    for aggregation in aggregations:
        name, function = aggregation.name, aggregation.function
        if function == "count":
            outputs.append(F.col("__count").alias(name))
        elif function in ("sum", "mean", "stddev"):
            outputs.append(_sum_based(aggregation, input_types, view, narrow, owners[name].name).alias(name))
    return running.select("_entity", "_t", *outputs)


def _shared_sums(aggregations: list[Aggregation]) -> dict[str, Aggregation]:
    """For each sum, mean or stddev, the first of them with the same input: whose running
    n, Σx and Σx² columns it reads."""
    owners: dict[str, Aggregation] = {}
    first: dict[str, Aggregation] = {}
    for aggregation in aggregations:
        if aggregation.function in ("sum", "mean", "stddev"):
            owners[aggregation.name] = first.setdefault(repr(aggregation.input), aggregation)
    return owners


def _aggregation_of(aggregations: list[Aggregation], column: str) -> Aggregation:
    return next(a for a in aggregations if column.startswith(f"{a.name}__"))


def _refuse_null(column, view: FeatureView, feature: str, what: str, moment):
    """``column``, or a Spark error naming view, feature, entity and instant where a ``try_``
    operation found it beyond DECIMAL(38,0) (its only source of nulls here)."""
    from pyspark.sql import functions as F

    return F.when(column.isNull(), _overflow_error(view, feature, F.col("_entity"), moment,
                                                   f"{what} is beyond decimal(38)")).otherwise(column)


def _overflow_error(view: FeatureView, feature: str, entity, moment, what: str):
    """A Spark ``raise_error`` whose message says where: ``compute_history_spark`` re-raises
    it as ``ValueOverflowError``, as pandas raises it."""
    from pyspark.sql import functions as F

    return F.raise_error(F.concat(
        F.lit(f"{_OVERFLOW}feature view {view.name!r}, feature {feature!r}, entity "), entity.cast("string"),
        F.lit(" at "), F.date_format(F.timestamp_micros(moment), "yyyy-MM-dd'T'HH:mm:ssXXX"), F.lit(f": {what}")))


def _declared_bound(view: FeatureView, name: str) -> int:
    """The largest |value| a source column's declared type allows (a transform's int: int64)."""
    column = view.source.column(name)
    if column is None or column.type == "int64":
        return 2**63
    if column.decimal_precision_scale:
        return 10 ** column.decimal_precision_scale[0] - 1
    return 2**31


_APPROX = "__approx__"


def _renamed(expression: Expr, prefix: str) -> Expr:
    """The same expression over the columns ``prefix + name``."""
    import dataclasses

    if isinstance(expression, Column):
        return Column(prefix + expression.name)
    changes = {f.name: _renamed(getattr(expression, f.name), prefix) for f in dataclasses.fields(expression)
               if isinstance(getattr(expression, f.name), Expr)}
    return dataclasses.replace(expression, **changes) if changes else expression


def _needs_guard(expression: Expr, types: dict[str, DType], view: FeatureView) -> bool:
    kind = expression.dtype(types).kind
    if kind not in ("int", "decimal"):
        return False
    limit = INT64_MAX if kind == "int" else DECIMAL38_MAX
    return bound(expression, types, lambda name: _declared_bound(view, name))[1] > limit


def _guarded(expression: Expr, types: dict[str, DType], view: FeatureView, feature: str, entity, moment):
    """An exact expression whose declared types allow values it could not hold (beyond
    int64 for an int, decimal(38) for a decimal): checked first in doubles, so that a row that
    would overflow raises a named error instead of Spark's anonymous one (pandas checks the
    exact value; the two differ only within 10^-15 of the limit). Needs the ``_APPROX`` columns."""
    from pyspark.sql import functions as F

    exact = expression.to_spark(types)
    if not _needs_guard(expression, types, view):
        return exact
    kind = expression.dtype(types).kind
    limit = INT64_MAX if kind == "int" else DECIMAL38_MAX
    approx = _renamed(expression, _APPROX).to_spark({_APPROX + name: dtype for name, dtype in types.items()})
    beyond = F.abs(approx.cast("double")) >= F.lit(float(limit))
    return F.when(beyond, _overflow_error(view, feature, entity, moment,
                                          f"{expression!r} is beyond {'int64' if kind == 'int' else 'decimal(38)'}")
                  ).otherwise(exact)


def _sum_based(aggregation: Aggregation, input_types: dict[str, DType], view: FeatureView, narrow: bool,
               sums: str):
    """sum, mean or stddev from the running n, Σx and Σx² (the columns ``sums``__n, __s,
    __q), computed as pandas computes them (``narrow``: exact Σx and Σx² are longs)."""
    from decimal import Decimal

    from pyspark.sql import functions as F

    name, function = aggregation.name, aggregation.function
    input_type = aggregation.input.dtype(input_types)
    exact = input_type.kind in ("int", "decimal")
    n, s = F.col(f"{sums}__n"), F.col(f"{sums}__s")
    if function == "sum":
        if input_type.kind == "int" and not narrow:  # stored as a long: refuse what does not fit one
            fits = s.between(F.lit(-INT64_MAX - 1).cast(WIDE), F.lit(INT64_MAX).cast(WIDE))
            return _refuse_null(F.when(fits, s.cast("long")), view, name, "a sum (an int64 feature)", F.col("_t"))
        return s
    if function == "mean":
        # One division of two exact integers, each rounded once to a double, as pandas.
        if input_type.scale <= 9:
            count = n * F.lit(10 ** input_type.scale)
        else:
            count = n.cast(WIDE) * F.lit(Decimal(10 ** input_type.scale))
        return F.when(n > 0, s.cast("double") / count.cast("double"))
    q = F.col(f"{sums}__q")
    if exact:
        s, q = s.cast(WIDE), q.cast(WIDE)  # the products below need up to 38 digits
        # The numerator n·Σx² − (Σx)² exactly in DECIMAL(38,0) ((Σx)² <= n·Σx², so if n·Σx²
        # fits, everything does), then the same correctly rounded root as pandas.
        total = _refuse_null(F.try_multiply(n.cast(WIDE), q), view, name,
                             f"n·Σx² of {aggregation.input!r} (the exact stddev numerator)", F.col("_t"))
        numerator = total - s * s
        # Rounded once by the driver, with the pandas engine's code (``_finish_exact_stddevs``):
        # a Python UDF here costs seconds per query.
        return F.when(n >= 2, F.struct(n.alias("n"), numerator.alias("numerator")))
    divisor = F.lit(float(10 ** input_type.scale))
    numerator = n.cast("double") * q - s * s
    variance = numerator / (n * (n - F.lit(1))).cast("double")
    return F.when(n >= 2, F.sqrt(F.greatest(variance, F.lit(0.0))) / divisor)


def _distinct_counts(members, aggregation: Aggregation):
    """count_distinct at every instant a non-null value joins or leaves (``_distinct_counts``).

    A value counts while its multiplicity among live members is above zero.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    value = F.col(_input_name(aggregation))
    present = members.filter(value.isNotNull()).select("_entity", "_start", "_end", value.alias("_value"))
    per_value = _events(present, ["_value"]).groupBy("_entity", "_value", "_t").agg(F.sum("_sign").alias("_delta"))
    by_value = Window.partitionBy("_entity", "_value").orderBy("_t")
    multiplicity = F.sum("_delta").over(by_value.rowsBetween(Window.unboundedPreceding, Window.currentRow))
    per_value = per_value.select("_entity", "_value", "_t", multiplicity.alias("_m"))
    change = (F.col("_m") > 0).cast("long") - (F.lag("_m", 1, 0).over(by_value) > 0).cast("long")
    per_instant = per_value.select("_entity", "_t", change.alias("_change")).groupBy("_entity", "_t").agg(
        F.sum("_change").alias("_change"))
    return per_instant.select("_entity", "_t", F.sum("_change").over(_by_entity(running=True)).alias("_value"))


def _ordered_extreme(members, aggregation: Aggregation):
    """min, max or last among the members live at each instant one joins or leaves.

    An interval join of those instants to the memberships holding them (start <= t < end).
    ``last`` is the value of the live member with the greatest (event time, lsn, _pk), a
    null value included; ties (one key, one lsn) go to the earlier change, as the pandas
    heap does.
    """
    from pyspark.sql import functions as F

    function = aggregation.function
    live = members.select("_entity", "_start", "_end", "_event", "_lsn", "_pk", "_rank", "_seq",
                          F.col(_input_name(aggregation)).alias("_value"))
    if function in ("min", "max"):
        live = live.filter(F.col("_value").isNotNull())
    instants = _events(live, []).select("_entity", "_t").distinct()
    candidates = live.withColumnRenamed("_entity", "_member_entity")
    holding = (F.col("_member_entity") == F.col("_entity")) & (F.col("_start") <= F.col("_t")) & (
        F.col("_t") < F.col("_end"))
    joined = instants.join(candidates, holding, "left")
    if function == "min":
        result = F.min("_value")
    elif function == "max":
        result = F.max("_value")
    else:
        newest = F.struct(F.col("_event"), F.col("_lsn"), F.col("_pk"), (-F.col("_rank")).alias("r"),
                          (-F.col("_seq")).alias("q"), F.col("_value").alias("v"))
        result = F.max(F.when(F.col("_member_entity").isNotNull(), newest))["v"]
    return joined.groupBy("_entity", "_t").agg(result.alias("_value"))


def _aggregation_history(versions, view: FeatureView, live_after: int | None, narrow: bool):
    """Every value change of an aggregation view: (_entity, _t, feature values...); ``narrow``:
    exact inputs and sums as longs (``_narrowed``)."""
    from pyspark.sql import functions as F

    input_types = view.input_dtypes()
    groups = _window_groups(view)
    members = _memberships(versions, view, groups, live_after, narrow)
    # The pieces below each read the memberships: a group's sums, and each count_distinct,
    # min, max or last. Read more than once, they are materialized once; read once (one
    # window group of counts, sums and means), the whole computation stays one Spark job.
    readers = len(groups) + sum(a.function in ("count_distinct", "min", "max", "last") for a in view.aggregations)
    if readers > 1:
        members = _computed_once(members)
    pieces = []
    for index, (_, aggregations) in enumerate(groups):
        group = members.filter(F.col("_group") == F.lit(index))
        sums = _running_sums(group, aggregations, input_types, view, narrow)
        names = [a.name for a in aggregations if a.function in ("count", "sum", "mean", "stddev")]
        pieces.append(sums.select("_entity", "_t", F.struct(F.col("_t").alias("t"), *names).alias(f"__group_{index}")))
        for aggregation in aggregations:
            if aggregation.function == "count_distinct":
                piece = _distinct_counts(group, aggregation)
            elif aggregation.function in ("min", "max", "last"):
                piece = _ordered_extreme(group, aggregation)
            else:
                continue
            pieces.append(piece.select("_entity", "_t", F.struct(
                F.col("_t").alias("t"), F.col("_value").alias("v")).alias(f"__agg_{aggregation.name}")))
    history = _align_window_groups(view, groups, pieces)
    output_types = view.stored_dtypes_without_derived()
    columns = []
    for aggregation in view.aggregations:
        column = F.col(aggregation.name)
        if aggregation.function in ("count", "count_distinct", "sum"):
            column = F.coalesce(column, F.lit(0))  # nothing in the window yet: count 0, sum 0
        if aggregation.name not in _exact_stddevs(view):  # those stay (n, numerator) structs
            column = column.cast(_narrow_type(output_types[aggregation.name]) if narrow
                                 else _spark_type(output_types[aggregation.name]))
        columns.append(column.alias(aggregation.name))
    return history.select("_entity", "_t", *columns)


def _align_window_groups(view: FeatureView, groups, pieces: list):
    """Every group's values on the union of all groups' instants (``_align_window_groups``).

    The pieces meet in one union, sorted per entity by instant. Carried forward with
    ``last(ignorenulls)``, a group's struct is its whole row at its latest instant at or
    before, its own nulls kept. A count_distinct, min, max or last is likewise its value at
    its own latest instant at or before (a null value there kept): at the group's other
    instants (a null-valued member joining or leaving) it keeps its last value, and before
    its first instant it is null. Of the rows of one instant only the last, which has seen
    them all, is kept.
    """
    from functools import reduce

    from pyspark.sql import Window
    from pyspark.sql import functions as F

    tagged = [piece.withColumn("_piece", F.lit(number)) for number, piece in enumerate(pieces)]
    union = reduce(lambda left, right: left.unionByName(right, allowMissingColumns=True), tagged)
    in_order = Window.partitionBy("_entity").orderBy("_t", "_piece")
    so_far = in_order.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    structs = [name for name in union.columns if name.startswith("__")]
    if len(pieces) == 1:
        # A single group of sums: already one row per (entity, instant), nothing to carry.
        carried = pieces[0]
    else:
        carried = union.select("_entity", "_t", *[F.last(name, ignorenulls=True).over(so_far).alias(name)
                                                  for name in structs], F.lead("_t").over(in_order).alias("_next_t"))
        carried = carried.filter(F.col("_next_t").isNull() | (F.col("_next_t") != F.col("_t")))
    values = []
    for index, (_, aggregations) in enumerate(groups):
        row = F.col(f"__group_{index}")
        for aggregation in aggregations:
            if aggregation.function in ("count", "sum", "mean", "stddev"):
                values.append(row[aggregation.name].alias(aggregation.name))
            else:
                # Its latest own value at or before the instant (its instants are a subset of
                # its group's): carried over the group's other instants, like pandas's forward fill.
                values.append(F.col(f"__agg_{aggregation.name}")["v"].alias(aggregation.name))
    return carried.select("_entity", "_t", *values)


# -- step 6: latest-state views -----------------------------------------------------------------

def _latest_state_history(versions, view: FeatureView):
    """A row when a version becomes current, a ``_deleted`` row when a delete or truncate ends it.

    Every version closed by a delete or truncate gives a ``_deleted`` row, even one that is
    never current (known_from == known_to: an update then a delete in one commit), at the
    lsn of the change that closed it (``closed_by_lsn``). Of several rows of one entity at
    one instant (one transaction) the last stands, in (lsn, deleted, key, op rank, row order)
    order, as pandas's stable sort of its versions leaves them.
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    input_types = view.input_dtypes()
    output_types = view.stored_dtypes_without_derived()
    current = F.col("known_from") < F.col("known_to")
    gone = F.col("closed_by").isin("delete", "truncate")
    sides = F.explode(F.array(
        F.when(current, F.struct(F.col("known_from").alias("t"), F.col("_lsn").alias("lsn"),
                                 F.lit(False).alias("deleted"))),
        F.when(gone, F.struct(F.col("known_to").alias("t"), F.col("closed_by_lsn").alias("lsn"),
                              F.lit(True).alias("deleted")))))
    versions = _with_approximations(versions, [f.expression for f in view.features], input_types, view)
    features = {f.name: _guarded(f.expression, input_types, view, f.name, F.col(view.entity_column), F.col("known_from"))
                .cast(_spark_type(output_types[f.name])) for f in view.features}
    rows = versions.select(F.col(view.entity_column).alias("_entity"), "_pk", "_rank", "_file", "_seq",
                          *[column.alias(name) for name, column in features.items()], sides.alias("_side"))
    rows = rows.filter(F.col("_side").isNotNull()).select(
        "_entity", F.col("_side.t").alias("_t"), F.col("_side.lsn").alias("_lsn"),
        F.col("_side.deleted").alias("_deleted"), "_pk", "_rank", "_file", "_seq",
        *[F.when(~F.col("_side.deleted"), F.col(name)).alias(name) for name in features])
    in_order = Window.partitionBy("_entity").orderBy("_t", "_lsn", "_deleted", "_pk", "_rank", "_file", "_seq")
    next_t = F.lead("_t").over(in_order)
    rows = rows.withColumn("_next_t", next_t).filter(F.col("_next_t").isNull() | (F.col("_next_t") != F.col("_t")))
    return rows.select("_entity", "_t", *features, "_deleted")


# -- step 7: the whole computation ----------------------------------------------------------------

def _drop_unchanged_within_hour(history, value_columns: list[str]):
    """A row equal to the entity's previous row in the same hour goes; the hour's first stays."""
    from pyspark.sql import functions as F

    by_entity = _by_entity(running=False)

    def hour(column):
        return column - F.pmod(column, F.lit(HOUR_MICROS))  # the start of its hour (floor, exactly)

    previous_t = F.lag("_t").over(by_entity)
    unchanged = previous_t.isNotNull() & (hour(previous_t) == hour(F.col("_t")))
    for name in value_columns:
        unchanged = unchanged & F.lag(F.col(name)).over(by_entity).eqNullSafe(F.col(name))
    return history.withColumn("__drop", unchanged).filter(~F.col("__drop")).drop("__drop")


def _computed_once(frame):
    """Materialize a frame that several branches of the plan read (a local checkpoint).

    Without it each branch recomputes the frame from the change log, and the optimizer plans
    that whole subtree once per branch: on small inputs the planning costs more than the work.
    The checkpoint keeps the frame's partitioning, so what follows still needs no shuffle.
    """
    return frame.localCheckpoint(eager=True)


def compute_history_spark(spark, change_log: pa.Table | Iterable[str], view: FeatureView,
                          emit: HistoryRange) -> pa.Table:
    """The view's value changes with valid_from in ``emit``, as an Arrow table (history_schema).

    ``change_log`` is the source table's change log: an Arrow table (change_log_schema) or
    the paths of change-log Parquet partitions. The result equals
    ``pandas_engine.compute_history`` on the same change log, bit for bit. A value beyond what
    the offline store holds raises ``ValueOverflowError`` naming view, feature and entity.
    """
    try:
        try:
            return _compute_history(spark, change_log, view, emit, narrow=True)
        except Exception as error:  # Spark wraps our raise_error in its own exception types
            if _WIDEN not in str(error):
                raise
        return _compute_history(spark, change_log, view, emit, narrow=False)
    except Exception as error:
        text = str(error)
        if _OVERFLOW not in text:
            raise
        message = text[text.index(_OVERFLOW) + len(_OVERFLOW):].splitlines()[0]
        message = message.split(" SQLSTATE")[0].strip()
        raise ValueOverflowError(message) from None


def _compute_history(spark, change_log: pa.Table | Iterable[str], view: FeatureView, emit: HistoryRange,
                     narrow: bool) -> pa.Table:
    from pyspark.sql import functions as F

    if view.transform is not None:
        needed = set(view.source.column_names)  # the transform may read any of them
    elif view.is_aggregation_view:
        needed = {view.entity_column, view.timestamp_field}
        for aggregation in view.aggregations:
            needed |= aggregation.input.columns() if aggregation.input is not None else set()
    else:
        needed = {view.entity_column, *[c for f in view.features for c in f.expression.columns()]}
    toasted = _may_carry_unavailable(spark, change_log)
    versions = _row_versions(_load(spark, change_log, view, toasted), view, needed, toasted)
    if view.transform is not None:
        versions = _apply_row_transform(versions, view)
    if view.is_aggregation_view:
        history = _aggregation_history(versions, view, emit.start, narrow)
    else:
        history = _latest_state_history(versions, view)
    in_range = F.col("_t") < F.lit(emit.end)
    if emit.start is not None:
        in_range = in_range & (F.col("_t") >= F.lit(emit.start))
    history = history.filter(in_range)
    if _exact_stddevs(view):
        return _finish_exact_stddevs(history, view)
    stored_types = view.stored_dtypes_without_derived()
    if narrow and view.derived and view.is_aggregation_view:  # derived expressions read DECIMAL(38,0)
        history = history.select("_entity", "_t", *[
            F.col(name).cast(_spark_type(dtype)).alias(name) for name, dtype in stored_types.items()])
    for derived in view.derived:
        dtype = derived.expression.dtype(stored_types)
        history = history.withColumn(derived.name, derived.expression.to_spark(stored_types).cast(_spark_type(dtype)))
        stored_types[derived.name] = dtype
    value_columns = list(view.stored_dtypes()) + ([] if view.is_aggregation_view else ["_deleted"])
    history = _drop_unchanged_within_hour(history, value_columns)
    return _to_arrow(history.select("_entity", "_t", *value_columns), view)


def _exact_stddevs(view: FeatureView) -> set[str]:
    """The view's stddev features over exact (int, decimal) inputs."""
    types = view.input_dtypes()
    return {a.name for a in view.aggregations
            if a.function == "stddev" and a.input.dtype(types).kind in ("int", "decimal")}


def _finish_exact_stddevs(history, view: FeatureView) -> pa.Table:
    """The tail of the computation on the driver, with the pandas engine's own functions, for a
    view with an exact stddev: each stddev rounded once from its exact (n, numerator)
    (``rounded_sqrt``), then derived features, ``drop_unchanged_within_hour`` and the Arrow
    table. The rows come to the driver anyway; the same code makes the same bits."""
    from feature_platform.engines import pandas_engine

    stddevs = _exact_stddevs(view)
    result = history.select("_entity", "_t", *[a.name for a in view.aggregations]).toArrow()
    types = view.stored_dtypes_without_derived()
    frame = pd.DataFrame({"_entity": result.column("_entity").to_pylist(),
                          "_t": result.column("_t").cast(pa.int64()).to_numpy(zero_copy_only=False)})
    for aggregation in view.aggregations:
        column = result.column(aggregation.name)
        scale = aggregation.input.dtype(view.input_dtypes()).scale if aggregation.name in stddevs else 0
        if aggregation.name in stddevs:
            frame[aggregation.name] = pd.Series(
                [None if cell is None else
                 (rounded_sqrt(int(cell["numerator"]), cell["n"] * (cell["n"] - 1) * 10 ** (2 * scale))
                  if cell["numerator"] > 0 else 0.0) for cell in column.to_pylist()], dtype="Float64")
        elif types[aggregation.name].kind == "decimal":
            frame[aggregation.name] = pandas_engine.decimal_to_unscaled(column.cast(pa.decimal128(38, 0)))
        else:
            frame[aggregation.name] = pandas_engine._typed(pd.Series(column.to_pylist(), dtype=object),
                                                           types[aggregation.name])
    return pandas_engine.finish_history(frame, view)


def _apply_row_transform(versions, view: FeatureView):
    """Run the view's own Spark code on the row versions (``apply_row_transform``)."""
    from pyspark.sql import functions as F

    if view.transform.spark is None:
        raise ValueError(f"feature view {view.name!r}: its transform has no spark function")
    transformed = view.transform.spark(versions)
    missing = [c for c in [*versions.columns, *view.transform.columns] if c not in transformed.columns]
    if missing:
        raise ValueError(f"feature view {view.name!r}: transform.spark dropped or did not add columns {missing}")
    transformed = transformed.select(*[F.col(c) for c in versions.columns], *[
        F.col(name).cast(_spark_type(dtype)).alias(name) for name, dtype in view.transform.columns.items()])
    # A dropped version does not exist: the kept one before it ends there as if deleted
    # (``_close_before_dropped_versions``).
    from pyspark.sql import Window

    next_kept = F.lead("_lsn").over(Window.partitionBy("_pk").orderBy("_lsn", "_rank", "_file", "_seq"))
    dropped_next = (F.col("closed_by") == "version") & (next_kept.isNull() | (next_kept != F.col("closed_by_lsn")))
    return transformed.withColumn("closed_by", F.when(dropped_next, F.lit("delete")).otherwise(F.col("closed_by")))


def _to_arrow(history, view: FeatureView) -> pa.Table:
    schema = view.history_schema()
    result = history.toArrow()
    timestamp = pa.timestamp("us", tz="UTC")
    arrays = [result.column("_entity").cast(schema.field(0).type), result.column("_t").cast(pa.int64()).cast(timestamp)]
    for name, dtype in view.stored_dtypes().items():
        column = result.column(name)
        if dtype.kind == "decimal":
            # The unscaled integer (a DECIMAL(38,0) in Spark), reinterpreted at the feature's
            # scale (no rescaling).
            unscaled = pc.cast(column, pa.decimal128(38, 0))
            arrays.append(pa.chunked_array([chunk.view(pa.decimal128(38, dtype.scale)) for chunk in unscaled.chunks],
                                           type=pa.decimal128(38, dtype.scale)))
        elif dtype.kind == "timestamp":
            arrays.append(column.cast(pa.int64()).cast(timestamp))
        else:
            arrays.append(column.cast(schema.field(name).type))
    if "_deleted" in schema.names:
        arrays.append(result.column("_deleted").cast(pa.bool_()))
    table = pa.Table.from_arrays(arrays, schema=schema)
    return table.sort_by([("valid_from", "ascending"), (schema.names[0], "ascending")])
