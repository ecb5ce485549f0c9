"""The definition language: errors at definition time, types, code versions, the escape hatch."""

import dataclasses
from datetime import timedelta

import pyarrow as pa
import pytest

from assets.entities import customer
from assets.feature_views import FEATURE_SERVICES, FEATURE_VIEWS, customer_orders, product_sales
from assets.sources import orders
from feature_platform.cdc.change_log import change_log_schema
from feature_platform.engines.pandas_engine import HistoryRange, compute_history
from feature_platform.entity import Entity
from feature_platform.expressions import BOOL, FLOAT, INT, col, decimal, when
from feature_platform.feature_service import FeatureService
from feature_platform.feature_view import Aggregation, Derived, FeatureView, RowTransform
from feature_platform.naming import DefinitionError
from feature_platform.registry import Registry, UnknownFeatureError


def orders_view(**overrides) -> FeatureView:
    arguments = dict(name="v", entity=customer, source=orders, entity_column="purchaser",
                     timestamp_field="order_date", aggregations=[Aggregation("n", "count", window="1d")])
    arguments.update(overrides)
    return FeatureView(**arguments)


@pytest.mark.parametrize("make", [
    lambda: Entity("Customer", join_key="customer_id"),
    lambda: Entity("customer", join_key="customerId"),
    lambda: orders_view(name="my-view"),
    lambda: Aggregation("TotalSpend", "sum", "quantity"),
    lambda: FeatureService("Churn", features=["a:b"]),
    lambda: Derived("is__big", col("n") > 1),
])
def test_names_must_be_snake_case(make):
    with pytest.raises(DefinitionError, match="snake_case"):
        make()


@pytest.mark.parametrize("overrides, message", [
    ({"entity_column": "buyer"}, "entity_column 'buyer' is not a column of orders"),
    ({"timestamp_field": "created"}, "timestamp_field 'created'"),
    ({"aggregations": [Aggregation("x", "sum", col("price"))]}, "reads unknown columns \\['price'\\]"),
    ({"aggregations": [Aggregation("n", "count"), Aggregation("n", "sum", "quantity")]}, "used twice"),
    ({"derived": [Derived("d", col("missing") > 1)]}, "not features of this view"),
    ({"engine": "polars"}, "engine 'polars'"),
    ({"ttl": timedelta(0)}, "ttl must be positive"),
    ({"aggregations": [Aggregation("customer_id", "count")]}, "named like the join key"),
])
def test_definition_errors_name_the_problem(overrides, message):
    with pytest.raises(DefinitionError, match=message):
        orders_view(**overrides)


def test_bad_windows_and_functions():
    with pytest.raises(DefinitionError, match="window '30 days'"):
        Aggregation("x", "count", window="30 days")
    with pytest.raises(DefinitionError, match="unknown function 'median'"):
        Aggregation("x", "median", "quantity")
    with pytest.raises(DefinitionError, match="needs an input"):
        Aggregation("x", "sum")


def test_types_keep_money_exact():
    types = customer_orders.stored_dtypes()
    assert types["total_spend_30d"] == decimal(2)  # int × decimal(10,2): still exact cents
    assert types["order_count_30d"] == INT
    assert types["avg_order_value_30d"] == FLOAT
    assert types["is_high_value"] == BOOL
    assert customer_orders.history_schema().field("total_spend_30d").type == pa.decimal128(38, 2)
    assert product_sales.stored_dtypes()["sales_per_day"] == FLOAT


def test_code_version_changes_with_logic_only():
    base = orders_view()
    assert orders_view().code_version() == base.code_version()
    assert orders_view(description="docs", owners=("team:x",), ttl=timedelta(days=9)).code_version() == base.code_version()
    assert orders_view(aggregations=[Aggregation("n", "count", window="2d")]).code_version() != base.code_version()
    assert orders_view(entity_column="product_id").code_version() != base.code_version()
    assert orders_view(derived=[Derived("many", col("n") > 3)]).code_version() != base.code_version()
    assert orders_view(derived=[Derived("many", col("n") > 4)]).code_version() != \
        orders_view(derived=[Derived("many", col("n") > 3)]).code_version()


def test_services_resolve_against_the_registry():
    registry = Registry.of(FEATURE_VIEWS, FEATURE_SERVICES)
    resolved = registry.resolve(registry.service("churn_model").features)
    assert [f"{view.name}:{feature}" for view, feature in resolved] == list(registry.service("churn_model").features)
    with pytest.raises(UnknownFeatureError, match="unknown feature 'customer_orders:nope'"):
        Registry.of(FEATURE_VIEWS, [FeatureService("broken", features=["customer_orders:nope"])])
    with pytest.raises(DefinitionError, match="lists a feature twice"):
        FeatureService("twice", features=["a:b", "a:b"])


def test_expressions_evaluate_with_nulls_and_division_by_zero():
    import pandas as pd

    frame = pd.DataFrame({"n": pd.Series([0, 3, None], dtype="Int64")})
    result = when(col("n") > 0, 30 / col("n")).to_pandas(frame, {"n": INT})
    assert pd.isna(result.iloc[0]) and result.iloc[1] == 10.0 and pd.isna(result.iloc[2])


def test_row_transform_adds_columns_for_aggregations():
    def flag_bulk(frame):
        return frame.assign(is_bulk=(frame["quantity"] >= 3).astype("Int64"))

    view = orders_view(aggregations=[Aggregation("bulk_orders", "sum", "is_bulk")],
                       transform=RowTransform({"is_bulk": INT}, pandas=flag_bulk))
    changes = pa.Table.from_pylist([
        {"id": 1, "order_date": 0, "purchaser": 7, "quantity": 5, "product_id": 1, "unit_price": None,
         "_op": "c", "_lsn": 1, "_commit_time": 0, "_snapshot": False, "_pk": "[1]",
         "_source_file": "f", "_source_line": 1},
        {"id": 2, "order_date": 0, "purchaser": 7, "quantity": 1, "product_id": 1, "unit_price": None,
         "_op": "c", "_lsn": 2, "_commit_time": 0, "_snapshot": False, "_pk": "[2]",
         "_source_file": "f", "_source_line": 2},
    ], schema=change_log_schema(orders))
    history = compute_history(changes, view, HistoryRange(None, 10**15)).to_pylist()
    assert [row["bulk_orders"] for row in history] == [1]
    with pytest.raises(DefinitionError, match="no spark function"):
        dataclasses.replace(view, engine="spark")
