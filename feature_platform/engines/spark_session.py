"""One shared, local SparkSession for the Spark engine, its tests and in-process Dagster runs.

Starting a SparkSession takes 4–16 s here (../shared/DEPENDENCIES.md, trap 5), so every
caller in a process gets the same one: the first call builds it, later calls return it as
long as it is alive. It is tuned for the engine's small, many-stage queries: a few shuffle
partitions, no UI, quiet logs, and UTC as the session time zone so that timestamps cross the
Arrow boundary as the microseconds they are.

``spark.master`` comes from, in order: the ``master`` argument, a ``spark.master`` entry in
``conf``, the ``FP_SPARK_MASTER`` environment variable, then ``local[2]``.
"""

from __future__ import annotations

import os
import sys
import threading

DEFAULT_MASTER = "local[2]"

# Why each setting: the engine runs small plans of many steps, so few partitions and no
# console progress bar keep it fast and readable; the session time zone must be UTC or Spark
# would shift timestamps into the JVM's local zone when it converts to and from Arrow.
DEFAULT_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.shuffle.partitions": "4",
    "spark.default.parallelism": "2",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Adaptive execution re-plans after every shuffle (three times the jobs for the engine's
    # plans) and its local checkpoints forget how they are partitioned, so the steps the
    # engine keys by entity would shuffle again. Measured here: 2-3x slower with it on.
    "spark.sql.adaptive.enabled": "false",
    # PySpark records the Python call site of every DataFrame call for error messages: a
    # stack inspection per call, which costs more than building the engine's plans itself.
    "spark.python.sql.dataFrameDebugging.enabled": "false",
    # Arithmetic that overflows must fail, not turn into null (Spark 4's default, made
    # explicit): the engine's exact sums and products rely on it where no named check runs.
    "spark.sql.ansi.enabled": "true",
}

_lock = threading.Lock()
_session = None


def _alive(session) -> bool:
    try:
        return session is not None and not session.sparkContext._jsc.sc().isStopped()
    except Exception:  # a session whose JVM is gone
        return False


def get_spark(master: str | None = None, **conf: str):
    """The process's shared local SparkSession, started on first use.

    Keyword arguments are Spark settings (``get_spark(**{"spark.sql.shuffle.partitions": "8"})``);
    they apply when the session is first built. Later calls return the running session.
    """
    global _session
    with _lock:
        if _alive(_session):
            return _session
        # The Python workers must be this interpreter (the venv's), and the driver must bind to
        # loopback: a machine whose hostname does not resolve would otherwise hang at start.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        from pyspark.sql import SparkSession

        settings = {**DEFAULT_CONF, **{key: str(value) for key, value in conf.items()}}
        chosen_master = master or settings.pop("spark.master", None) or os.environ.get("FP_SPARK_MASTER") \
            or DEFAULT_MASTER
        settings.pop("spark.master", None)
        builder = SparkSession.builder.master(chosen_master).appName("feature-platform")
        for key, value in settings.items():
            builder = builder.config(key, value)
        session = builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        _session = session
        return session


def stop_spark() -> None:
    """Stop the shared session (tests and scripts that want the JVM gone)."""
    global _session
    with _lock:
        if _session is not None:
            _session.stop()
            _session = None
