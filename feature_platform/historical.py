"""Point-in-time correct training data: an ASOF join of entity rows to each view's history.

For an entity row (key, event_timestamp = T) and a view, the value is the view's latest
history row with ``valid_from <= T`` (DuckDB's ASOF JOIN over the Parquet history), then:

* T past the view's horizon by more than its TTL → null (knowledge too stale to trust);
* no history row for the entity → the empty-window values (count 0, sum 0, null else)
  for an aggregation view, null for a latest-state view;
* a ``_deleted`` row (latest-state) → null.

On-demand features are computed last, from the looked-up values and T.
"""

from __future__ import annotations

from datetime import datetime, timezone

import decimal

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa

from feature_platform.feature_view import FeatureView
from feature_platform.naming import DefinitionError
from feature_platform.storage import parquet_source

EVENT_TIMESTAMP = "event_timestamp"


class EntityFrameError(ValueError):
    """An entity_df that cannot be joined; the message names the column and the problem."""


def normalize_entity_df(entity_df: pd.DataFrame, join_keys: list[str]) -> pd.DataFrame:
    missing = [c for c in [*join_keys, EVENT_TIMESTAMP] if c not in entity_df.columns]
    if missing:
        raise EntityFrameError(f"entity_df lacks column(s) {missing}; it has {list(entity_df.columns)}")
    frame = entity_df.reset_index(drop=True).copy()
    timestamps = frame[EVENT_TIMESTAMP]
    try:
        if pd.api.types.is_datetime64_any_dtype(timestamps):
            timestamps = pd.to_datetime(timestamps)
            timestamps = timestamps.dt.tz_localize("UTC") if timestamps.dt.tz is None else timestamps.dt.tz_convert("UTC")
        else:
            timestamps = pd.to_datetime(timestamps, utc=True, format="ISO8601")
    except (ValueError, TypeError) as error:
        raise EntityFrameError(f"entity_df column {EVENT_TIMESTAMP!r} holds values that are not timestamps: {error}") from None
    if timestamps.isna().any():
        row = int(np.flatnonzero(timestamps.isna().to_numpy())[0])
        raise EntityFrameError(f"entity_df row {row}: {EVENT_TIMESTAMP} is missing")
    frame[EVENT_TIMESTAMP] = timestamps.astype("datetime64[us, UTC]")
    return frame


def _key_column(entity_df: pd.DataFrame, view: FeatureView) -> pd.Series:
    key = view.entity.join_key
    values = entity_df[key]
    expected_int = view.history_schema().field(0).type == pa.int64()
    if expected_int:
        try:
            return pd.Series(pd.to_numeric(values, errors="raise"), dtype="Int64")
        except (ValueError, TypeError):
            raise EntityFrameError(f"entity_df column {key!r} must hold integer keys for view {view.name!r}") from None
    return values.astype(str)


def lookup_view(entity_df: pd.DataFrame, view: FeatureView, history_files: list[str],
                horizon: datetime | None, features: list[str], decimals: str = "float") -> pd.DataFrame:
    """The values of ``features`` of one view for every entity row, in entity_df's order."""
    stored = [f for f in features if f in view.stored_dtypes()]
    on_demand = [o for o in view.on_demand if o.name in features]
    needed = list(dict.fromkeys(stored + [i for o in on_demand for i in o.inputs]))
    key = view.entity.join_key
    rows = pd.DataFrame({"_row": np.arange(len(entity_df)), "_key": _key_column(entity_df, view),
                         "_t": entity_df[EVENT_TIMESTAMP]})
    if history_files:
        connection = duckdb.connect()
        connection.register("entity_rows", rows)
        selected = ", ".join(f'h."{name}"' for name in needed)
        deleted = 'h."_deleted"' if not view.is_aggregation_view else "FALSE"
        history = parquet_source(connection, history_files, "history")
        joined = connection.sql(f"""
            SELECT e._row, h.valid_from IS NOT NULL AS _found, coalesce({deleted}, FALSE) AS _gone
                   {', ' + selected if selected else ''}
            FROM entity_rows e
            ASOF LEFT JOIN {history} h
              ON e._key = h."{key}" AND e._t >= h.valid_from
            ORDER BY e._row
        """).to_arrow_table().to_pandas(types_mapper=_NULLABLE.get)  # decimals stay exact Decimal objects
        connection.close()
    else:
        joined = pd.DataFrame({"_row": rows["_row"], "_found": False, "_gone": False,
                               **{name: pd.Series([None] * len(rows), dtype=object) for name in needed}})
    if len(joined) != len(rows) or not (joined["_row"].to_numpy(dtype=np.int64) == rows["_row"].to_numpy()).all():
        # An ASOF LEFT JOIN ordered by _row gives exactly one row per entity row, in order;
        # anything else would be a bug worth a loud error, not a silent reindex.
        raise AssertionError(f"view {view.name!r}: the point-in-time join returned {len(joined)} rows "
                             f"for {len(rows)} entity rows")
    joined = joined.reset_index(drop=True)
    result = pd.DataFrame(index=rows.index)
    empty = view.empty_values()
    found = joined["_found"].fillna(False).to_numpy(dtype=bool)
    gone = joined["_gone"].fillna(False).to_numpy(dtype=bool)
    if horizon is None:
        stale = np.ones(len(rows), dtype=bool)
    else:
        age = rows["_t"] - pd.Timestamp(horizon).tz_convert("UTC")
        stale = (age > pd.Timedelta(view.ttl)).to_numpy()
    for name in needed:
        values = joined[name].reset_index(drop=True)
        values = _restore_type(values, view, name, decimals)
        if name in empty and empty[name] is not None:
            fill = empty[name]
            if view.stored_dtypes()[name].kind == "decimal" and decimals == "decimal":
                fill = decimal.Decimal(0).scaleb(-view.stored_dtypes()[name].scale)
            values = values.where(found, _fill_value(values, fill))
        values = values.mask(gone | stale)
        if values.dtype == object:
            values = values.astype(object).where(values.notna(), None)  # null is None, not NaN
        result[name] = values
    for feature in on_demand:
        computed = feature.function(result[list(feature.inputs)], rows["_t"])
        result[feature.name] = pd.Series(computed, index=result.index).mask(stale)
    return result[features]


# Arrow types read straight into pandas' nullable dtypes (no object detour, no second cast).
_NULLABLE = {pa.int64(): pd.Int64Dtype(), pa.float64(): pd.Float64Dtype(), pa.bool_(): pd.BooleanDtype()}


def _fill_value(values: pd.Series, empty):
    return pd.Series([empty] * len(values), index=values.index, dtype=values.dtype)


def _restore_type(values: pd.Series, view: FeatureView, name: str, decimals: str) -> pd.Series:
    """DuckDB's column back to the feature's type; decimals as float, or exact ``Decimal``s."""
    dtype = view.stored_dtypes()[name]
    if dtype.kind == "int":
        return values.astype("Int64")
    if dtype.kind == "float":
        return pd.to_numeric(values).astype("Float64")
    if dtype.kind == "decimal":
        if decimals == "float":
            return pd.Series([None if v is None or v is pd.NA else float(v) for v in values],
                             index=values.index, dtype="Float64")
        return values.astype(object).where(values.notna(), None)
    if dtype.kind == "bool":
        return values.astype("boolean")
    if dtype.kind == "timestamp":
        return pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")
    return values.astype(object).where(values.notna(), None)


def check_requested(entity_df: pd.DataFrame, views_and_features: list[tuple[FeatureView, str]]) -> None:
    keys = {view.entity.join_key for view, _ in views_and_features}
    missing = sorted(k for k in keys if k not in entity_df.columns)
    if missing:
        raise EntityFrameError(f"entity_df lacks join key column(s) {missing} needed by the requested features")
    if not views_and_features:
        raise DefinitionError("no features requested")


def now_utc() -> datetime:
    return datetime.now(timezone.utc)
