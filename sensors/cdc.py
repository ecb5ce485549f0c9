"""The CDC sensor over the landing zone, for every captured table and the views built on them."""

from assets.feature_views import FEATURE_VIEWS
from assets.partitions import HOURLY
from assets.sources import SOURCE_TABLES
from feature_platform.orchestration.cdc_sensor import build_cdc_sensor

cdc_landing_sensor = build_cdc_sensor(list(SOURCE_TABLES), HOURLY, views=list(FEATURE_VIEWS))
