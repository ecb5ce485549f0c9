"""Resources of this deployment, configured from the environment (see README: Configuration)."""

import sys

import dagster as dg
from dagster_pyspark import PySparkResource

from feature_platform.config import Settings
from feature_platform.engines.spark_session import DEFAULT_CONF, LOCAL_CONF
from feature_platform.orchestration.online_assets import RedisResource
from feature_platform.orchestration.resources import LandingZoneResource, OfflineStoreResource


def spark_config(settings: Settings) -> dict[str, str]:
    """The Spark settings of Dagster runs: the engine's tuning, then FP_SPARK_MASTER, then FP_SPARK_CONF.

    In local mode the driver binds to loopback (a host name that does not resolve would hang
    it) and the Python workers are this interpreter. On a cluster neither can be guessed —
    executors must reach the driver and have a Python of their own — so they come from
    ``FP_SPARK_CONF`` (``spark.driver.host``, ``spark.pyspark.python``...) or Spark's defaults.
    """
    conf = {**DEFAULT_CONF, "spark.master": settings.spark_master}
    if settings.spark_master.startswith("local"):
        conf.update({"spark.driver.bindAddress": "127.0.0.1", "spark.driver.host": "127.0.0.1",
                     "spark.pyspark.python": sys.executable})
        conf.update(LOCAL_CONF)  # the JVM settings of a local session (spark_session.LOCAL_CONF)
    conf.update(settings.spark_conf)  # the operator's word is last
    return conf


def build_resources(settings: Settings | None = None) -> dict:
    settings = settings or Settings.from_env()
    return {
        "landing": LandingZoneResource(uri=settings.landing_uri),
        "offline": OfflineStoreResource(uri=settings.offline_uri, project=settings.project),
        # EnvVar: the UI and run config show the variable's name, never the URL's password.
        "redis": RedisResource(url=dg.EnvVar("FP_REDIS_URL"), project=settings.project),
        "pyspark": PySparkResource(spark_config=spark_config(settings)),
    }
