"""The hourly schedule, completing the last hour of every partitioned asset."""

import dagster as dg

from assets.partitions import HOURLY
from feature_platform.orchestration.schedules import build_hourly_schedule

hourly_job = dg.define_asset_job(
    "hourly_job",
    selection=dg.AssetSelection.all(),
    partitions_def=HOURLY,
    description="Every partitioned asset, for one hour.",
)

hourly_schedule = build_hourly_schedule(hourly_job)
