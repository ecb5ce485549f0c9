"""Per captured table: its Debezium topic (a source asset) and its change log (``cdc/<table>``)."""

from assets.partitions import HOURLY
from assets.sources import SOURCE_TABLES
from feature_platform.orchestration.change_log_assets import build_change_log_asset, build_topic_source

topic_sources = [build_topic_source(table) for table in SOURCE_TABLES]
change_log_assets = [build_change_log_asset(table, HOURLY) for table in SOURCE_TABLES]
