"""One hourly-partitioned asset per feature view: ``features/customer_orders``, ..."""

from assets.feature_views import FEATURE_VIEWS
from assets.partitions import HOURLY
from feature_platform.orchestration.feature_view_assets import build_feature_view_asset

feature_view_assets = [build_feature_view_asset(view, HOURLY) for view in FEATURE_VIEWS]
