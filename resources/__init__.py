"""Resources of this deployment, configured from the environment (see README: Configuration)."""

import os

import dagster as dg
from dagster_pyspark import PySparkResource

from feature_platform.config import Settings
from feature_platform.orchestration.online_assets import RedisResource
from feature_platform.orchestration.resources import LandingZoneResource, OfflineStoreResource


def spark_config() -> dict[str, str]:
    """Local mode by default; FP_SPARK_MASTER points at a cluster (spark://host:7077)."""
    return {
        "spark.master": os.environ.get("FP_SPARK_MASTER", "local[2]"),
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": os.environ.get("FP_SPARK_SHUFFLE_PARTITIONS", "4"),
        "spark.ui.enabled": "false",
        "spark.driver.bindAddress": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1"),
    }


def build_resources(settings: Settings | None = None) -> dict:
    settings = settings or Settings.from_env()
    return {
        "landing": LandingZoneResource(uri=settings.landing_uri),
        "offline": OfflineStoreResource(uri=settings.offline_uri, project=settings.project),
        # EnvVar: the UI and run config show the variable's name, never the URL's password.
        "redis": RedisResource(url=dg.EnvVar("FP_REDIS_URL"), project=settings.project),
        "pyspark": PySparkResource(spark_config=spark_config()),
    }
