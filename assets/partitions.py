"""The deployment's hourly partitions, starting at FP_PARTITIONS_START."""

from feature_platform.config import Settings
from feature_platform.orchestration.partitions import hourly_partitions

HOURLY = hourly_partitions(Settings.from_env().partitions_start)
