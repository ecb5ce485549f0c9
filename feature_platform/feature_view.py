"""Feature views: a declarative definition of features over one source table.

Two kinds, one class:

* **Aggregation views** summarize a source table's rows per entity over a trailing window
  at every instant: ``Aggregation("total_spend_30d", "sum", col("quantity") * col("unit_price"), window="30d")``.
* **Latest-state views** expose the current value of a row's columns per entity:
  ``Feature("email")``, ``Feature("biography_length", length(col("biography")))``.

Either kind may add ``Derived`` features (expressions over the view's own features, stored
with them) and ``OnDemandFeature``s (a Python function of the stored values and the request
time, computed when features are read — by training and serving alike).

The exact meaning of every value is written down in docs/semantics.md.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Callable

import pandas as pd
import pyarrow as pa

from feature_platform.checks.config import CheckConfig
from feature_platform.entity import Entity
from feature_platform.expressions import BOOL, FLOAT, INT, STRING, TIMESTAMP, DType, Expr, col, decimal
from feature_platform.naming import DefinitionError, check_snake_case
from feature_platform.sources import SourceTable

AGGREGATION_FUNCTIONS = ("count", "sum", "mean", "min", "max", "stddev", "count_distinct", "last")
ENGINES = ("pandas", "spark")
_WINDOW = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_window(window: str | timedelta | None) -> timedelta | None:
    if window is None or isinstance(window, timedelta):
        return window
    match = _WINDOW.match(window)
    if not match:
        raise DefinitionError(f"window {window!r} must look like '30d', '7d', '12h', '90m' or '45s'")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def source_dtypes(source: SourceTable) -> dict[str, DType]:
    """The expression types of a source table's columns (decimals carried unscaled)."""
    types: dict[str, DType] = {}
    for column in source.columns:
        precision_scale = column.decimal_precision_scale
        if precision_scale:
            types[column.name] = decimal(precision_scale[1])
        elif column.type in ("int32", "int64"):
            types[column.name] = INT
        elif column.type == "float64":
            types[column.name] = FLOAT
        elif column.type == "bool":
            types[column.name] = BOOL
        elif column.type == "string":
            types[column.name] = STRING
        else:
            types[column.name] = TIMESTAMP
    return types


def arrow_type(dtype: DType) -> pa.DataType:
    if dtype.kind == "decimal":
        return pa.decimal128(38, dtype.scale)
    return {"int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(), "string": pa.string(),
            "timestamp": pa.timestamp("us", tz="UTC")}[dtype.kind]


@dataclass(frozen=True)
class Aggregation:
    """An aggregate of the view's source rows inside a trailing, half-open window (T - W, T]."""

    name: str
    function: str
    input: Expr | str | None = None  # a column name or expression; None only for "count"
    window: str | timedelta | None = None  # None: all history (a row counts from its event time on)
    description: str = ""

    def __post_init__(self) -> None:
        check_snake_case("feature", self.name)
        if self.function not in AGGREGATION_FUNCTIONS:
            raise DefinitionError(f"feature {self.name!r}: unknown function {self.function!r}; "
                                  f"use one of {', '.join(AGGREGATION_FUNCTIONS)}")
        if self.input is None and self.function != "count":
            raise DefinitionError(f"feature {self.name!r}: {self.function} needs an input column or expression")
        if isinstance(self.input, str):
            object.__setattr__(self, "input", col(self.input))
        object.__setattr__(self, "window", parse_window(self.window))

    def output_dtype(self, input_types: dict[str, DType]) -> DType:
        if self.function in ("count", "count_distinct"):
            return INT
        if self.function in ("mean", "stddev"):
            return FLOAT
        return self.input.dtype(input_types)  # sum, min, max, last keep the input's type


@dataclass(frozen=True)
class Feature:
    """A latest-state feature: a column (or expression) of the entity's current row."""

    name: str
    expression: Expr | None = None  # default: the source column of the same name
    description: str = ""

    def __post_init__(self) -> None:
        check_snake_case("feature", self.name)
        if self.expression is None:
            object.__setattr__(self, "expression", col(self.name))


@dataclass(frozen=True)
class Derived:
    """A feature computed from other features of the same view, stored with them."""

    name: str
    expression: Expr
    description: str = ""

    def __post_init__(self) -> None:
        check_snake_case("feature", self.name)


@dataclass(frozen=True)
class OnDemandFeature:
    """A feature computed when it is read, from the view's stored values and the request time.

    ``function(values: DataFrame, request_time: Series[datetime64[us, UTC]]) -> Series`` gets
    the ``inputs`` features as columns. Training calls it with each entity row's
    ``event_timestamp``; serving with the request time: one function, both paths.
    """

    name: str
    function: Callable[[pd.DataFrame, pd.Series], pd.Series]
    dtype: DType
    inputs: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        check_snake_case("feature", self.name)


@dataclass(frozen=True)
class RowTransform:
    """The escape hatch: your own code, per engine, for what expressions cannot say.

    It runs on the source table's row versions before any feature is computed, and may add
    the ``columns`` it declares (with their types) or drop rows. It must work row by row —
    each output row depending only on its input row — so every value stays exact at every
    instant. Decimal columns arrive as unscaled integers, timestamps as µs since the epoch.

    ``pandas(frame) -> frame`` serves ``engine="pandas"``; ``spark(dataframe) -> dataframe``
    serves ``engine="spark"``; a view needs the one for its engine (both, to switch freely).
    """

    columns: dict[str, DType]
    pandas: Callable[[pd.DataFrame], pd.DataFrame] | None = None
    spark: Callable | None = None


@dataclass(frozen=True)
class FeatureView:
    name: str
    entity: Entity
    source: SourceTable
    entity_column: str  # the source column holding the entity's key (e.g. orders.purchaser)
    timestamp_field: str | None = None  # the row's event time; required by aggregations
    aggregations: tuple[Aggregation, ...] = ()
    features: tuple[Feature, ...] = ()
    derived: tuple[Derived, ...] = ()
    on_demand: tuple[OnDemandFeature, ...] = ()
    ttl: timedelta = timedelta(days=1)
    engine: str = "pandas"
    owners: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""
    transform: RowTransform | None = None
    checks: CheckConfig = field(default_factory=CheckConfig)  # thresholds of the asset checks

    def __post_init__(self) -> None:
        check_snake_case("feature view", self.name)
        for name in ("aggregations", "features", "derived", "on_demand", "owners"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        problems = self._problems()
        if problems:
            raise DefinitionError(f"feature view {self.name!r}: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        columns = set(self.input_dtypes())
        if self.transform is not None:
            if getattr(self.transform, self.engine, None) is None:
                problems.append(f"transform has no {self.engine} function for engine={self.engine!r}")
            clashes = sorted(set(self.transform.columns) & set(self.source.column_names))
            if clashes:
                problems.append(f"transform columns {clashes} already exist in {self.source.name}")
        if bool(self.aggregations) == bool(self.features):
            problems.append("declare either aggregations (an aggregation view) or features (a latest-state view)")
        if self.entity_column not in columns:
            problems.append(f"entity_column {self.entity_column!r} is not a column of {self.source.name}")
        if self.aggregations and self.timestamp_field not in columns:
            problems.append(f"timestamp_field {self.timestamp_field!r} is not a column of {self.source.name}")
        if self.features and self.source.primary_key != (self.entity_column,):
            problems.append(f"a latest-state view's entity_column must be the primary key {self.source.primary_key}")
        if self.engine not in ENGINES:
            problems.append(f"engine {self.engine!r} must be one of {ENGINES}")
        bad_owners = [o for o in self.owners if not (o.startswith("team:") or re.match(r"^[^@\s]+@[^@\s]+$", o))]
        if bad_owners:
            problems.append(f"owners {bad_owners} must be email addresses or 'team:<name>' (as Dagster shows them)")
        if self.ttl <= timedelta(0):
            problems.append("ttl must be positive")
        names = [f.name for f in (*self.aggregations, *self.features, *self.derived, *self.on_demand)]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(f"feature names used twice: {duplicates}")
        if self.entity.join_key in names:
            problems.append(f"a feature may not be named like the join key {self.entity.join_key!r}")
        types = self.input_dtypes()
        for expression_owner in (*self.aggregations, *self.features):
            expression = getattr(expression_owner, "input", None) or getattr(expression_owner, "expression", None)
            if expression is None:
                continue
            unknown = expression.columns() - columns
            if unknown:
                problems.append(f"feature {expression_owner.name!r} reads unknown columns {sorted(unknown)}")
                continue
            try:
                expression.dtype(types)
            except TypeError as error:
                problems.append(f"feature {expression_owner.name!r}: {error}")
        if not problems:
            stored = self.stored_dtypes_without_derived()
            for derived in self.derived:
                unknown = derived.expression.columns() - set(stored)
                if unknown:
                    problems.append(f"derived feature {derived.name!r} reads {sorted(unknown)}, not features of this view")
                    continue
                try:
                    stored[derived.name] = derived.expression.dtype(stored)
                except TypeError as error:
                    problems.append(f"derived feature {derived.name!r}: {error}")
            for feature in self.on_demand:
                unknown = set(feature.inputs) - set(stored)
                if unknown:
                    problems.append(f"on-demand feature {feature.name!r} reads {sorted(unknown)}, not features of this view")
        return problems

    # -- what the view produces ------------------------------------------------------

    @property
    def is_aggregation_view(self) -> bool:
        return bool(self.aggregations)

    def input_dtypes(self) -> dict[str, DType]:
        """Types of the columns features read: the source's, plus a transform's additions."""
        types = source_dtypes(self.source)
        if self.transform is not None:
            types.update(self.transform.columns)
        return types

    def stored_dtypes_without_derived(self) -> dict[str, DType]:
        types = self.input_dtypes()
        if self.is_aggregation_view:
            return {a.name: a.output_dtype(types) for a in self.aggregations}
        return {f.name: f.expression.dtype(types) for f in self.features}

    def stored_dtypes(self) -> dict[str, DType]:
        """Every feature stored in the offline history, in declared order, with its type."""
        stored = self.stored_dtypes_without_derived()
        for derived in self.derived:
            stored[derived.name] = derived.expression.dtype(stored)
        return stored

    def feature_dtypes(self) -> dict[str, DType]:
        """Every feature a reader can ask for: stored ones, then on-demand ones."""
        return {**self.stored_dtypes(), **{f.name: f.dtype for f in self.on_demand}}

    @property
    def feature_names(self) -> list[str]:
        return list(self.feature_dtypes())

    def history_schema(self) -> pa.Schema:
        """The offline history's Parquet schema: one row per value change of one entity."""
        fields = [pa.field(self.entity.join_key, pa.int64() if self._key_is_int() else pa.string(), nullable=False),
                  pa.field("valid_from", pa.timestamp("us", tz="UTC"), nullable=False)]
        fields += [pa.field(name, arrow_type(dtype)) for name, dtype in self.stored_dtypes().items()]
        if not self.is_aggregation_view:
            fields.append(pa.field("_deleted", pa.bool_(), nullable=False))
        return pa.schema(fields)

    def _key_is_int(self) -> bool:
        return self.input_dtypes()[self.entity_column] == INT  # a transform may add the key column

    def empty_values(self) -> dict[str, object]:
        """What an entity with nothing in its window has: count 0, sum 0, null for the rest.

        Derived features follow from those (``is_high_value`` is False, not null). Decimal
        values are unscaled integers, as in the engines. Latest-state views have no
        empty value: an entity without a row has null features.
        """
        if not self.is_aggregation_view:
            return {}
        values: dict[str, object] = {}
        for aggregation in self.aggregations:
            values[aggregation.name] = 0 if aggregation.function in ("count", "count_distinct", "sum") else None
        types = self.stored_dtypes_without_derived()
        frame = pd.DataFrame({name: pd.Series([value], dtype="Int64" if types[name].kind in ("int", "decimal")
                                              else object) for name, value in values.items()})
        for derived in self.derived:
            value = derived.expression.to_pandas(frame, types).iloc[0]
            values[derived.name] = None if pd.isna(value) else (value.item() if hasattr(value, "item") else value)
            types[derived.name] = derived.expression.dtype(types)
            frame[derived.name] = pd.Series([values[derived.name]], dtype=object)
        return values

    def code_version(self) -> str:
        """Changes exactly when the definition's logic changes (not its docs or owners)."""
        parts = [self.source.name, self.entity.join_key, self.entity_column, str(self.timestamp_field)]
        if self.transform is not None:
            parts += [f"transform:{name}:{dtype}" for name, dtype in self.transform.columns.items()]
            parts += [inspect.getsource(f) if _has_source(f) else getattr(f, "__name__", "")
                      for f in (self.transform.pandas, self.transform.spark) if f is not None]
        parts += [f"{a.name}:{a.function}:{a.input!r}:{a.window}" for a in self.aggregations]
        parts += [f"{f.name}:{f.expression!r}" for f in self.features]
        parts += [f"{d.name}:{d.expression!r}" for d in self.derived]
        parts += [f"{o.name}:{inspect.getsource(o.function) if _has_source(o.function) else o.function.__name__}"
                  for o in self.on_demand]
        return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:12]

    def source_columns_of(self, feature_name: str) -> list[str]:
        """The source columns a feature is computed from (for column lineage)."""
        by_name: dict[str, set[str]] = {}
        for aggregation in self.aggregations:
            used = set(aggregation.input.columns()) if aggregation.input is not None else set()
            by_name[aggregation.name] = used | {self.entity_column, self.timestamp_field}
        for feature in self.features:
            by_name[feature.name] = feature.expression.columns() | {self.entity_column}
        for derived in self.derived:
            by_name[derived.name] = set().union(*(by_name.get(c, set()) for c in derived.expression.columns()))
        for feature in self.on_demand:
            by_name[feature.name] = set().union(*(by_name.get(c, set()) for c in feature.inputs))
        return sorted(by_name.get(feature_name, set()))


def _has_source(function: Callable) -> bool:
    try:
        inspect.getsource(function)
        return True
    except (OSError, TypeError):
        return False
