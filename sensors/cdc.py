"""The CDC sensor over the landing zone, for every captured table."""

from assets.partitions import HOURLY
from assets.sources import SOURCE_TABLES
from feature_platform.orchestration.cdc_sensor import build_cdc_sensor

cdc_landing_sensor = build_cdc_sensor(list(SOURCE_TABLES), HOURLY)
