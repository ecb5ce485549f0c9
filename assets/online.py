"""One online table per feature view: ``online/customer_orders``, ... (Redis)."""

from assets.feature_views import FEATURE_VIEWS
from assets.partitions import HOURLY
from feature_platform.orchestration.online_assets import build_online_asset

online_assets = [build_online_asset(view, HOURLY) for view in FEATURE_VIEWS]
