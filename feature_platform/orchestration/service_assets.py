"""Feature services as nodes of the asset graph, downstream of the online tables they read.

A service is not materialized — the model that uses it lives elsewhere — so it is an
``AssetSpec``: a node in the lineage graph, so that "which models use this feature?" is
one click from any feature view.
"""

import dagster as dg

from feature_platform.catalog import describe_service
from feature_platform.feature_service import FeatureService
from feature_platform.orchestration.online_assets import online_key
from feature_platform.registry import Registry

SERVICES_GROUP = "services"


def service_key(service: FeatureService) -> dg.AssetKey:
    return dg.AssetKey(["services", service.name])


def build_service_spec(service: FeatureService, registry: Registry) -> dg.AssetSpec:
    views = list(dict.fromkeys(view.name for view, _ in registry.resolve(service.features)))
    return dg.AssetSpec(
        key=service_key(service),
        deps=[online_key(registry.view(name)) for name in views],
        group_name=SERVICES_GROUP,
        kinds={"model"},
        owners=list(service.owners),
        description=describe_service(service, registry),
        metadata={"features": dg.MetadataValue.md("\n".join(f"1. `{f}`" for f in service.features)),
                  "feature_count": len(service.features)},
        tags={"feature_service": service.name},
    )
