"""One change-log asset per captured table: ``cdc/customers``, ``cdc/orders``, ..."""

from assets.partitions import HOURLY
from assets.sources import SOURCE_TABLES
from feature_platform.orchestration.change_log_assets import build_change_log_asset

change_log_assets = [build_change_log_asset(table, HOURLY) for table in SOURCE_TABLES]
