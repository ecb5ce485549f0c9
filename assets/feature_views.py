"""The demo feature views over the inventory schema, and the feature services of two models.

Order value is exact money: ``quantity × unit_price`` with ``unit_price`` a NUMERIC(10,2).
The meaning of every value (windows, deletes, late data, TTL) is in docs/semantics.md.
"""

from datetime import timedelta

import numpy as np
import pandas as pd

from assets.entities import customer, product
from assets.sources import customers, orders, products_on_hand
from feature_platform.checks import CheckConfig
from feature_platform.expressions import INT, col, length, when
from feature_platform.feature_service import FeatureService
from feature_platform.feature_view import Aggregation, Derived, Feature, FeatureView, OnDemandFeature

order_value = col("quantity") * col("unit_price")


def days_since_last_order(values: pd.DataFrame, request_time: pd.Series) -> pd.Series:
    """Whole days from the last order date to the request time; null with no order."""
    elapsed = request_time - values["last_order_date"]
    days = np.floor(elapsed / pd.Timedelta(days=1))
    return pd.Series(days, index=values.index).astype("Int64")


customer_orders = FeatureView(
    name="customer_orders",
    entity=customer,
    source=orders,
    entity_column="purchaser",
    timestamp_field="order_date",
    aggregations=[
        Aggregation("order_count_30d", "count", window="30d", description="Orders in the last 30 days."),
        Aggregation("total_spend_30d", "sum", order_value, window="30d",
                    description="Sum of quantity × unit_price over the last 30 days (exact)."),
        Aggregation("avg_order_value_30d", "mean", order_value, window="30d",
                    description="Mean order value over the last 30 days; null with no order."),
        Aggregation("order_value_stddev_30d", "stddev", order_value, window="30d",
                    description="Sample standard deviation of order value over 30 days; null under 2 orders."),
        Aggregation("last_order_date", "last", "order_date",
                    description="The latest order date at or before the moment, among live orders, over all history."),
    ],
    derived=[
        Derived("is_high_value", col("total_spend_30d") > 1000, "Spent more than 1000 in 30 days."),
        Derived("is_frequent_buyer", col("order_count_30d") > 10, "More than 10 orders in 30 days."),
        Derived("avg_days_between_orders", when(col("order_count_30d") > 0, 30 / col("order_count_30d")),
                "30 / order_count_30d; null without orders."),
    ],
    on_demand=[
        OnDemandFeature("days_since_last_order", days_since_last_order, INT, inputs=("last_order_date",),
                        description="floor((request time − last_order_date) / 1 day); null with no order."),
    ],
    ttl=timedelta(days=2),
    owners=("team:growth",),
    tags={"domain": "customers"},
    description="How much and how often a customer orders.",
    # Null by definition for an empty window (mean, stddev, 30/count) or under two orders (stddev).
    checks=CheckConfig(null_fraction_overrides={"avg_order_value_30d": 1.0, "order_value_stddev_30d": 1.0,
                                                "avg_days_between_orders": 1.0, "last_order_date": 1.0}),
)

product_sales = FeatureView(
    name="product_sales",
    entity=product,
    source=orders,
    entity_column="product_id",
    timestamp_field="order_date",
    aggregations=[
        Aggregation("units_sold_7d", "sum", "quantity", window="7d", description="Units ordered in 7 days."),
        Aggregation("revenue_7d", "sum", order_value, window="7d", description="Order value in 7 days (exact)."),
        Aggregation("unique_customers_7d", "count_distinct", "purchaser", window="7d",
                    description="Distinct purchasers in 7 days."),
    ],
    derived=[Derived("sales_per_day", col("units_sold_7d") / 7, "units_sold_7d / 7.")],
    ttl=timedelta(days=2),
    owners=("team:catalog",),
    tags={"domain": "products"},
    description="Demand for a product over the last week.",
)

customer_profile = FeatureView(
    name="customer_profile",
    entity=customer,
    source=customers,
    entity_column="id",
    features=[
        Feature("first_name"),
        Feature("last_name"),
        Feature("email"),
        Feature("biography_length", length(col("biography")),
                "Characters in the biography; a TOAST placeholder never changes it."),
    ],
    ttl=timedelta(days=7),
    owners=("team:growth",),
    tags={"domain": "customers"},
    description="The customer's current profile.",
    checks=CheckConfig(null_fraction_overrides={"biography_length": 0.5}),  # a biography is optional
)

product_inventory = FeatureView(
    name="product_inventory",
    entity=product,
    source=products_on_hand,
    entity_column="product_id",
    features=[Feature("quantity_on_hand", col("quantity"), "Units in stock now.")],
    ttl=timedelta(days=7),
    owners=("team:catalog",),
    tags={"domain": "products"},
    description="Current stock level of a product.",
)

FEATURE_VIEWS = (customer_orders, product_sales, customer_profile, product_inventory)

churn_model = FeatureService(
    "churn_model",
    features=[
        "customer_orders:order_count_30d", "customer_orders:total_spend_30d",
        "customer_orders:avg_order_value_30d", "customer_orders:days_since_last_order",
        "customer_orders:is_high_value", "customer_profile:biography_length",
    ],
    description="Churn model: recent activity and profile of a customer.",
    owners=("team:growth",),
)

demand_forecast = FeatureService(
    "demand_forecast",
    features=[
        "product_sales:units_sold_7d", "product_sales:revenue_7d", "product_sales:unique_customers_7d",
        "product_sales:sales_per_day", "product_inventory:quantity_on_hand",
    ],
    description="Demand forecast: recent sales and stock of a product.",
    owners=("team:catalog",),
)

FEATURE_SERVICES = (churn_model, demand_forecast)
