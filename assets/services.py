"""The feature services (models) as nodes of the lineage graph."""

from assets.feature_views import FEATURE_SERVICES, FEATURE_VIEWS
from feature_platform.orchestration.service_assets import build_service_spec
from feature_platform.registry import Registry

service_specs = [build_service_spec(service, Registry.of(FEATURE_VIEWS, FEATURE_SERVICES))
                 for service in FEATURE_SERVICES]
