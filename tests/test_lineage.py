"""The lineage graph and the metadata a person browses in the Dagster UI, from the definitions."""

import dataclasses
from datetime import datetime, timezone

import dagster as dg

from assets.feature_views import FEATURE_SERVICES, FEATURE_VIEWS, customer_orders
from assets.sources import SOURCE_TABLES, orders
from feature_platform.catalog import search
from feature_platform.expressions import col
from feature_platform.feature_view import Aggregation
from feature_platform.orchestration.change_log_assets import build_change_log_asset, build_topic_source
from feature_platform.orchestration.feature_view_assets import build_feature_view_asset
from feature_platform.orchestration.online_assets import RedisResource, build_online_asset
from feature_platform.orchestration.resources import LandingZoneResource, OfflineStoreResource
from feature_platform.orchestration.partitions import hourly_partitions
from feature_platform.orchestration.service_assets import build_service_spec
from feature_platform.registry import Registry

PARTITIONS = hourly_partitions(datetime(2026, 1, 1, tzinfo=timezone.utc))
REGISTRY = Registry.of(FEATURE_VIEWS, FEATURE_SERVICES)


def graph() -> dg.Definitions:
    return dg.Definitions(assets=[
        *[build_topic_source(t) for t in SOURCE_TABLES],
        *[build_change_log_asset(t, PARTITIONS) for t in SOURCE_TABLES],
        *[build_feature_view_asset(v, PARTITIONS) for v in FEATURE_VIEWS],
        *[build_online_asset(v, PARTITIONS) for v in FEATURE_VIEWS],
        *[build_service_spec(s, REGISTRY) for s in FEATURE_SERVICES],
    ], resources={"landing": LandingZoneResource(uri="/nowhere"), "offline": OfflineStoreResource(uri="/nowhere", project="p"),
                  "redis": RedisResource(url="redis://127.0.0.1:1/0", project="p"), "pyspark": dg.ResourceDefinition.none_resource()})


def key(text: str) -> dg.AssetKey:
    return dg.AssetKey(text.split("/"))


def test_one_graph_from_topics_to_services():
    asset_graph = graph().get_repository_def().asset_graph
    parents = lambda k: {p.to_user_string() for p in asset_graph.get(key(k)).parent_keys}  # noqa: E731
    assert parents("cdc/orders") == {"topics/orders"}
    assert parents("features/customer_orders") == {"cdc/orders"}
    assert parents("features/customer_profile") == {"cdc/customers"}
    assert parents("online/customer_orders") == {"features/customer_orders"}
    assert parents("services/churn_model") == {"online/customer_orders", "online/customer_profile"}
    assert parents("services/demand_forecast") == {"online/product_sales", "online/product_inventory"}
    groups = {k.to_user_string(): asset_graph.get(k).group_name for k in asset_graph.get_all_asset_keys()}
    assert {groups["topics/orders"], groups["cdc/orders"], groups["features/product_sales"],
            groups["online/product_sales"], groups["services/churn_model"]} == \
        {"cdc", "change_logs", "features", "online", "services"}
    # "Which models use total_spend_30d?" is a walk down the graph.
    children = {c.to_user_string() for c in asset_graph.get(key("online/customer_orders")).child_keys}
    assert children == {"services/churn_model"}


def test_feature_view_metadata_for_discovery():
    specs = {spec.key: spec for spec in build_feature_view_asset(customer_orders, PARTITIONS).specs}
    spec = specs[key("features/customer_orders")]
    schema = spec.metadata["dagster/column_schema"]
    columns = {c.name: c for c in schema.columns}
    assert columns["total_spend_30d"].type == "decimal(38,2)"
    assert "quantity × unit_price" in columns["total_spend_30d"].description
    lineage = spec.metadata["dagster/column_lineage"]
    assert {(d.asset_key.to_user_string(), d.column_name) for d in lineage.deps_by_column["total_spend_30d"]} == \
        {("cdc/orders", c) for c in ("quantity", "unit_price", "order_date", "purchaser")}
    assert {d.column_name for d in lineage.deps_by_column["is_high_value"]} >= {"quantity", "unit_price"}
    assert spec.owners == ["team:growth"]
    assert spec.kinds >= {"pandas", "parquet"}
    assert spec.tags["entity"] == "customer" and spec.tags["window"] == "30d" and spec.tags["ttl"] == "2d"
    assert "total_spend_30d" in spec.description and "half-open" in spec.description
    assert spec.freshness_policy is not None
    assert spec.code_version == customer_orders.code_version()


def test_code_version_moves_only_when_logic_changes():
    def version(view):
        return build_feature_view_asset(view, PARTITIONS).code_versions_by_key[key(f"features/{view.name}")]

    base = version(customer_orders)
    assert version(dataclasses.replace(customer_orders, description="new words", owners=("team:someone",))) == base
    changed = dataclasses.replace(customer_orders, aggregations=(
        *customer_orders.aggregations[:1],
        Aggregation("total_spend_30d", "sum", col("quantity") * col("unit_price") * 2, window="30d"),
        *customer_orders.aggregations[2:]))
    assert version(changed) != base


def test_topic_sources_and_change_logs_carry_schemas():
    topic = build_topic_source(orders)
    assert topic.metadata["topic"] == "dbserver1.inventory.orders"
    assert [c.name for c in topic.metadata["dagster/column_schema"].columns] == orders.column_names
    change_log_spec = next(iter(build_change_log_asset(orders, PARTITIONS).specs))
    names = [c.name for c in change_log_spec.metadata["dagster/column_schema"].columns]
    assert names[:6] == orders.column_names and "_lsn" in names and "_commit_time" in names


def test_catalog_search():
    by_name = [e.reference for e in search(REGISTRY, "total_spend")]
    # The feature itself, and the derived feature computed from it.
    assert by_name == ["customer_orders:total_spend_30d", "customer_orders:is_high_value"]
    product_features = {e.reference for e in search(REGISTRY, entity="product")}
    assert "product_inventory:quantity_on_hand" in product_features and \
        not any(r.startswith("customer") for r in product_features)
    assert {e.view.name for e in search(REGISTRY, owner="team:catalog")} == {"product_sales", "product_inventory"}
    assert {e.view.name for e in search(REGISTRY, tag="domain=customers")} == {"customer_orders", "customer_profile"}
