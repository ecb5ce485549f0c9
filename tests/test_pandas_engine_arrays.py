"""The pandas engine's array helpers, where a fast path must agree with the plain one.

``_stable_order`` packs several integer keys into one int64 when their ranges allow and falls
back to ``np.lexsort`` otherwise; ``drop_unchanged_within_hour`` and ``to_arrow`` compare and
convert nullable columns through their values and null masks. The end-to-end properties
(tests/test_pandas_engine.py) rarely reach the edges of these, so they are pinned here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from feature_platform.engines.pandas_engine import HOUR_MICROS, _arrow_array, _stable_order, drop_unchanged_within_hour

INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_stable_order_is_lexsort(data):
    """Packed or not, the order is np.lexsort's: by each key in turn, ties in input order."""
    n = data.draw(st.integers(0, 40))
    span = data.draw(st.sampled_from([3, 1_000, 2**31, 2**62]))  # packs, packs, packs (2 keys), falls back
    keys = [np.array(data.draw(st.lists(st.integers(-span, span), min_size=n, max_size=n)), dtype=np.int64)
            for _ in range(data.draw(st.integers(1, 3)))]
    assert _stable_order(*keys).tolist() == np.lexsort(keys[::-1]).tolist()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(INT64, INT64), max_size=20))
def test_stable_order_at_the_int64_limits(pairs):
    major = np.array([p[0] for p in pairs], dtype=np.int64)
    minor = np.array([p[1] for p in pairs], dtype=np.int64)
    assert _stable_order(major, minor).tolist() == np.lexsort((minor, major)).tolist()


def test_stable_order_of_narrow_keys():
    rank = np.array([4, 3, 4, 0], dtype=np.int8)  # the op ranks are int8
    lsn = np.array([7, 7, 7, 7], dtype=np.int64)
    assert _stable_order(lsn, rank).tolist() == [3, 1, 0, 2]


def test_drop_unchanged_within_hour_nulls_and_nan():
    """Two nulls are equal; a NaN that is a value (0/0 in a Float64 column) equals nothing;
    a bare float64 NaN is a null. Rows come back in (entity, time) order, whatever came in."""
    masked = (pd.array([None, None, 1.5, 1.5, 0.0, 0.0, 2.0, 2.0], dtype="Float64")
              / pd.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0], dtype="Float64"))
    assert masked.isna().tolist() == [True, True] + [False] * 6  # 0/0: a NaN value, not a null
    history = pd.DataFrame({
        "_entity": np.array([1] * 7 + [2], dtype=np.int64),
        "_t": np.arange(8, dtype=np.int64) * 60_000_000,
        "masked": masked,
        "plain": np.array([np.nan, np.nan, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]),
        "wide": pd.Series([None, None, 2**70, 2**70, 2**70, 2**70, 2**70, 2**70], dtype=object),
    })
    shuffled = history.iloc[[7, 3, 0, 5, 1, 6, 2, 4]]
    for frame in (history, shuffled):
        kept = drop_unchanged_within_hour(frame, ["masked", "plain", "wide"])
        # dropped: 1 (nulls equal), 3 (1.5 again); kept: 5 (NaN ≠ NaN), 6 (changed), 7 (other entity)
        assert kept["_t"].tolist() == [t * 60_000_000 for t in (0, 2, 4, 5, 6, 7)]
        assert kept.index.tolist() == list(range(6))


def test_drop_unchanged_within_hour_keeps_each_hours_first_row():
    history = pd.DataFrame({"_entity": ["b", "a", "a", "a"], "_t": [0, HOUR_MICROS - 1, HOUR_MICROS, 0],
                            "x": pd.array([1, 1, 1, 1], dtype="Int64")})
    kept = drop_unchanged_within_hour(history, ["x"])
    assert list(zip(kept["_entity"], kept["_t"])) == [("a", 0), ("a", HOUR_MICROS), ("b", 0)]


def test_arrow_array_nulls():
    nan_value = pd.Series([0.0, 1.0], dtype="Float64") / pd.Series([0.0, 1.0], dtype="Float64")
    assert _arrow_array(pd.concat([nan_value, pd.Series([None], dtype="Float64")], ignore_index=True),
                        pa.float64()).to_pylist()[1:] == [1.0, None]
    assert np.isnan(_arrow_array(nan_value, pa.float64()).to_pylist()[0])  # a value, not a null
    assert _arrow_array(pd.Series([np.nan, 2.0]), pa.float64()).to_pylist() == [None, 2.0]
    assert _arrow_array(pd.Series([1, None], dtype="Int64"), pa.int64()).to_pylist() == [1, None]
    assert _arrow_array(pd.Series(["x", None], dtype=object), pa.string()).to_pylist() == ["x", None]
    assert _arrow_array(pd.Series([True, None], dtype="boolean"), pa.bool_()).to_pylist() == [True, None]


def test_an_int64_column_with_nulls_keeps_values_beyond_2_to_the_53():
    """A nullable int64 source column is read exactly (not through float64, which rounds)."""
    from datetime import datetime, timezone

    from feature_platform.cdc.change_log import change_log_schema
    from feature_platform.engines.pandas_engine import HistoryRange, compute_history
    from feature_platform.entity import Entity
    from feature_platform.feature_view import Feature, FeatureView
    from feature_platform.sources import Column, SourceTable

    source = SourceTable(name="accounts", topic="t.accounts", primary_key=("id",),
                         columns=(Column("id", "int64"), Column("balance", "int64")))
    view = FeatureView(name="account_balance", entity=Entity("account", join_key="account_id"), source=source,
                       entity_column="id", features=[Feature("balance")])
    at = datetime(2026, 3, 1, tzinfo=timezone.utc)
    big = 2**60 + 1
    rows = [{"id": pk, "balance": balance, "_op": "c", "_lsn": 10 + pk, "_commit_time": at, "_snapshot": False,
             "_pk": f"[{pk}]", "_source_file": "f", "_source_line": pk} for pk, balance in ((1, big), (2, None))]
    table = pa.Table.from_pylist(rows, schema=change_log_schema(source))
    result = compute_history(table, view, HistoryRange(None, 2**62)).to_pylist()
    assert [(r["account_id"], r["balance"]) for r in result] == [(1, big), (2, None)]
