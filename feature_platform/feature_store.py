"""The SDK: one object for training reads (offline history) and serving reads (Redis).

    store = FeatureStore.from_env()
    training = store.get_historical_features(entity_df, service="churn_model")

Feature names are the same everywhere: ``"view:feature"`` references, or a feature
service's name; columns come back named by feature (``view__feature`` with
``full_feature_names=True``) in the requested order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import NamedTuple

import numpy as np
import pandas as pd

from feature_platform.config import Settings
from feature_platform.feature_view import FeatureView
from feature_platform.historical import check_requested, lookup_view, normalize_entity_df
from feature_platform.offline_store import OfflineFeatureStore
from feature_platform.online_store import RedisOnlineStore, value_decoder
from feature_platform.redis_client import connect
from feature_platform.registry import Registry, UnknownFeatureError
from feature_platform.storage import Store


class OnlineResponse(pd.DataFrame):
    """A DataFrame of online values; ``.stale`` lists the views served as null for staleness."""

    _metadata = ["stale"]

    @property
    def _constructor(self):
        return OnlineResponse


@dataclass
class FeatureStore:
    settings: Settings
    registry: Registry
    _online: RedisOnlineStore | None = field(default=None, repr=False)
    _plans: dict = field(default_factory=dict, repr=False)  # (features, service) -> what to read

    @classmethod
    def from_env(cls, registry: Registry | None = None) -> "FeatureStore":
        return cls(Settings.from_env(), registry or Registry.from_module())

    @property
    def offline(self) -> OfflineFeatureStore:
        return OfflineFeatureStore(Store(self.settings.project_offline_root))

    def _requested(self, features, service) -> list[tuple[FeatureView, str]]:
        if (features is None) == (service is None):
            raise UnknownFeatureError("pass exactly one of features=[...] or service=...")
        references = self.registry.service(service).features if service is not None else list(features)
        return self.registry.resolve(references)

    def get_historical_features(self, entity_df: pd.DataFrame, features: list[str] | None = None,
                                service: str | None = None, full_feature_names: bool = False,
                                decimals: str = "float") -> pd.DataFrame:
        """Point-in-time correct feature values for every row of ``entity_df``.

        ``entity_df`` holds the join keys and ``event_timestamp``; every row is kept, in
        order, duplicates included, and gets each feature's value as of its timestamp.
        Decimal features come back as floats, or as exact ``Decimal`` with ``decimals="decimal"``.
        """
        requested = self._requested(features, service)
        check_requested(entity_df, requested)
        rows = normalize_entity_df(entity_df, sorted({v.entity.join_key for v, _ in requested}))
        result = rows.copy()
        by_view: dict[str, list[str]] = {}
        for view, feature in requested:
            by_view.setdefault(view.name, []).append(feature)
        offline = self.offline
        first = self.settings.partitions_start
        looked_up: dict[str, pd.DataFrame] = {}
        for view_name, names in by_view.items():
            view = self.registry.view(view_name)
            looked_up[view_name] = lookup_view(
                rows, view, offline.history_files(view, first), offline.horizon(view, first), names, decimals)
        for view, feature in requested:
            column = f"{view.name}__{feature}" if full_feature_names else feature
            if column in result.columns:
                raise UnknownFeatureError(
                    f"two requested features are both named {column!r}; pass full_feature_names=True")
            result[column] = looked_up[view.name][feature].array
        return result

    # -- serving -------------------------------------------------------------------------------

    @property
    def online(self) -> RedisOnlineStore:
        if self._online is None:
            if not self.settings.redis_url:
                raise RuntimeError("FP_REDIS_URL is not set: the online store needs a Redis "
                                   "(scripts/dev starts one and sets it)")
            self._online = RedisOnlineStore(connect(self.settings.redis_url), self.settings.project)
        return self._online

    def _online_plan(self, features, service, decimals: str):
        """What a request for these features reads and how it decodes it, per view: the same for
        every call, so kept (working it out costs more than Redis's reply to a one-entity read)."""
        cache_key = (None if features is None else tuple(features), service, decimals)
        plan = self._plans.get(cache_key)
        if plan is None:
            requested = self._requested(features, service)
            join_keys = list(dict.fromkeys(view.entity.join_key for view, _ in requested))
            by_view: dict[str, list[str]] = {}
            for view, feature in requested:
                by_view.setdefault(view.name, []).append(feature)
            view_plans = []
            for view_name, names in by_view.items():
                view = self.registry.view(view_name)
                types, empty = view.stored_dtypes(), view.empty_values()
                stored = [n for n in names if n in types]
                on_demand = [o for o in view.on_demand if o.name in names]
                needed = list(dict.fromkeys(stored + [i for o in on_demand for i in o.inputs]))
                # Per stored feature: its name, type, how a stored value decodes, and what an
                # entity never written (or deleted) reads as: an aggregation's empty value, else null.
                decoding = [(name, types[name], value_decoder(types[name], decimals),
                             _empty_value(empty.get(name), types[name], decimals)) for name in needed]
                view_plans.append((view, needed, on_demand, decoding))
            plan = self._plans[cache_key] = (requested, join_keys, view_plans, {})
        return plan

    def get_online_features(self, entity_rows: list[dict], features: list[str] | None = None,
                            service: str | None = None, full_feature_names: bool = False,
                            request_time: datetime | None = None, decimals: str = "float") -> OnlineResponse:
        """The latest values for each entity row, in one Redis round trip, as a DataFrame.

        Columns come in the requested (or the service's declared) order after the join keys.
        A view whose synced-through time is older than its TTL at ``request_time`` (default
        now) is served as null and named in ``.stale``; on-demand features are computed
        against ``request_time``, so replaying a past moment reads what serving answered then.
        ``get_online_features_dict`` reads the same values without building a DataFrame.
        """
        read = self._read_online(entity_rows, features, service, request_time, decimals)
        # Columns are built as typed arrays and put into one DataFrame at the end: inserting
        # columns one by one into a DataFrame costs more than the Redis round trip itself.
        columns = {}
        for view_read in read.views:
            typed = {name: _typed_array(values, dtype, decimals)
                     for name, (dtype, values) in view_read.columns.items()}
            if view_read.on_demand:
                typed.update(_on_demand_arrays(view_read, typed, read.request_time, read.length))
            columns[view_read.view.name] = typed
        names, _ = self._response_names(read, full_feature_names)
        arrays = [columns[view.name][feature] for view, feature in read.requested]
        result = _response(names, [read.key_values[key] for key in read.join_keys], arrays, read.length)
        result.stale = read.stale_views
        return result

    def get_online_features_dict(self, entity_rows: list[dict], features: list[str] | None = None,
                                 service: str | None = None, full_feature_names: bool = False,
                                 request_time: datetime | None = None, decimals: str = "float") -> OnlineValues:
        """The same values as ``get_online_features``, as ``{column: [value per entity row]}``.

        The shape of Feast's ``get_online_features(...).to_dict()``, for a model server that
        wants plain Python values: no DataFrame is built, which for a one-entity read costs
        as much as the Redis round trip. Values are ``int``, ``float``, ``bool``, ``str``,
        ``Decimal`` (with ``decimals="decimal"``), timezone-aware ``datetime``, or ``None``
        for null; ``.stale`` names the views served as null for staleness.
        """
        read = self._read_online(entity_rows, features, service, request_time, decimals)
        columns = {}
        for view_read in read.views:
            values = {name: column_values for name, (_dtype, column_values) in view_read.columns.items()}
            if view_read.on_demand:
                typed = {name: _typed_array(column_values, dtype, decimals)
                         for name, (dtype, column_values) in view_read.columns.items()}
                values.update({name: _python_values(array) for name, array
                               in _on_demand_arrays(view_read, typed, read.request_time, read.length).items()})
            columns[view_read.view.name] = values
        _, names = self._response_names(read, full_feature_names)
        result = OnlineValues(zip(names, [read.key_values[key] for key in read.join_keys]
                                  + [columns[view.name][feature] for view, feature in read.requested]))
        result.stale = read.stale_views
        return result

    def _read_online(self, entity_rows, features, service, request_time, decimals) -> "_OnlineRead":
        """What both online reads share: check the rows, read Redis once, decode each stored
        value to Python, and null out the views that are stale at ``request_time``."""
        plan = self._online_plan(features, service, decimals)
        requested, join_keys, view_plans, _names = plan
        request_time = (request_time or datetime.now(timezone.utc)).astimezone(timezone.utc)
        for index, row in enumerate(entity_rows):
            missing = [k for k in join_keys if k not in row or row[k] is None]
            if missing:
                raise KeyError(f"entity row {index} lacks join key(s) {missing}")
        key_values = {key: [row[key] for row in entity_rows] for key in join_keys}
        answers = self.online.read_rows([(view, key_values[view.entity.join_key], needed)
                                         for view, needed, _, _ in view_plans])
        length = len(entity_rows)
        views, stale_views = [], []
        for (view, _needed, on_demand, decoding), (rows, synced) in zip(view_plans, answers):
            stale = synced is None or request_time - synced > view.ttl
            if stale:
                stale_views.append(view.name)
            columns = {}
            for position, (name, dtype, decode, absent) in enumerate(decoding):
                columns[name] = (dtype, [None] * length if stale else [
                    absent if row is None or row.values is None
                    else None if (raw := row.values[position]) is None else decode(raw) for row in rows])
            views.append(_ViewRead(view, columns, on_demand, stale))
        return _OnlineRead(plan, requested, join_keys, key_values, length, views, stale_views, request_time)

    @staticmethod
    def _response_names(read: "_OnlineRead", full_feature_names: bool) -> tuple[pd.Index, tuple[str, ...]]:
        """The response's column names (as the DataFrame's index, and as a tuple for the dict
        read: iterating an Index costs more than the rest of building the dict), worked out
        once per plan and naming style."""
        cached = read.plan[3]
        names = cached.get(full_feature_names)
        if names is None:
            columns = _response_columns(read.join_keys, read.requested, full_feature_names)
            names = cached[full_feature_names] = (columns, tuple(columns))
        return names


class OnlineValues(dict):
    """``{column: [value per entity row]}``; ``.stale`` lists the views served as null for staleness."""

    stale: list[str]


class _ViewRead(NamedTuple):
    view: FeatureView
    columns: dict[str, tuple[object, list]]  # stored feature -> (its type, its decoded values)
    on_demand: list
    stale: bool


class _OnlineRead(NamedTuple):
    plan: tuple
    requested: list
    join_keys: list[str]
    key_values: dict[str, list]
    length: int
    views: list[_ViewRead]
    stale_views: list[str]
    request_time: datetime


def _on_demand_arrays(view_read: _ViewRead, typed: dict, request_time: datetime, length: int) -> dict:
    """A view's on-demand features computed from its stored features' typed arrays (all null
    when the view is stale, like its stored features)."""
    index = pd.RangeIndex(length)
    frame = pd.DataFrame(typed, index=index)
    request_times = pd.Series([pd.Timestamp(request_time)] * length, index=index).astype("datetime64[us, UTC]")
    computed_arrays = {}
    for feature in view_read.on_demand:
        computed = pd.Series(feature.function(frame[list(feature.inputs)], request_times), index=index)
        computed_arrays[feature.name] = (computed.mask(pd.Series(True, index=index)) if view_read.stale
                                         else computed).array
    return computed_arrays


def _python_values(array) -> list:
    """A pandas array's values as plain Python: NA/NaT as None, Timestamps as datetimes."""
    values = []
    for value in array.tolist():
        if value is None or value is pd.NA or value is pd.NaT:
            values.append(None)
        elif isinstance(value, pd.Timestamp):
            values.append(value.to_pydatetime())
        elif isinstance(value, np.generic):
            values.append(value.item())
        else:
            values.append(value)
    return values


def _response_columns(join_keys: list[str], requested, full_feature_names: bool) -> pd.Index:
    names = list(join_keys)
    for view, feature in requested:
        column = f"{view.name}__{feature}" if full_feature_names else feature
        if column in names:
            raise UnknownFeatureError(f"two requested features (or a feature and a join key) are both named "
                                      f"{column!r}; pass full_feature_names=True")
        names.append(column)
    return pd.Index(names)


def _join_key_array(values: list):
    """A join-key column as pandas 2 infers it from a non-empty list (int64 for ints, object
    for text), made directly for those two; None for anything else (the DataFrame infers it)."""
    if not values:
        return None
    if all(type(v) is int for v in values):
        try:
            return np.array(values, dtype=np.int64)
        except OverflowError:
            return None
    if all(type(v) is str for v in values):
        return np.array(values, dtype=object)
    return None


def _response(names: pd.Index, key_columns: list[list], feature_arrays: list, length: int) -> OnlineResponse:
    """The response DataFrame: join-key columns as given, then features as typed arrays.

    ``DataFrame._from_arrays`` without integrity checks skips re-inspecting every column
    (pandas' ``sanitize_array``), which costs more than a one-entity read's Redis round trip.
    It needs every column typed already: join keys that are all ints or all strings are made
    here as pandas would infer them; any other kind of key (or a pandas without
    ``_from_arrays``) goes through the public constructor, which infers as always.
    """
    index = pd.RangeIndex(length)
    key_arrays = [_join_key_array(values) for values in key_columns]
    if all(a is not None for a in key_arrays) and hasattr(OnlineResponse, "_from_arrays"):
        return OnlineResponse._from_arrays(key_arrays + feature_arrays, columns=names, index=index,
                                           verify_integrity=False)
    return OnlineResponse(dict(zip(names, key_columns + feature_arrays)), index=index, copy=False)


def _empty_value(empty, dtype, decimals):
    if empty is None:
        return None
    if dtype.kind == "decimal":
        return float(empty) / 10 ** dtype.scale if decimals == "float" else Decimal(empty).scaleb(-dtype.scale)
    return empty


# Per kind: the numpy type of a masked array's values, what fills a null's slot, the array.
_MASKED = {"int": (np.int64, 0, pd.arrays.IntegerArray), "float": (np.float64, 0.0, pd.arrays.FloatingArray),
           "bool": (bool, False, pd.arrays.BooleanArray)}


def _typed_array(values: list, dtype, decimals: str):
    """A nullable pandas array of the feature's type, built from the mask directly (fast for one row)."""
    kind = dtype.kind
    if kind in ("int", "float", "bool") or (kind == "decimal" and decimals == "float"):
        numpy_type, fill, array_type = _MASKED[kind if kind != "decimal" else "float"]
        if None not in values:  # the common case: no null to fill in
            return array_type(np.array(values, dtype=numpy_type), np.zeros(len(values), dtype=bool))
        mask = np.array([v is None for v in values], dtype=bool)
        return array_type(np.array([fill if v is None else v for v in values], dtype=numpy_type), mask)
    if kind == "timestamp":
        return pd.Series(pd.to_datetime(values, utc=True)).astype("datetime64[us, UTC]").array
    return pd.array(values, dtype=object)
