"""One shared, local SparkSession for the Spark engine, its tests and in-process Dagster runs.

Starting a SparkSession takes 4–16 s here (../shared/DEPENDENCIES.md, trap 5), so every
caller in a process gets the same one: the first call builds it, later calls return it as
long as it is alive. It is tuned for the engine's small, many-stage queries: a few shuffle
partitions, no UI, quiet logs, and UTC as the session time zone so that timestamps cross the
Arrow boundary as the microseconds they are; in local mode the JVM also stops at the JIT's
first tier (``LOCAL_CONF``).

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

# Only for a local master, where this JVM is also the only executor, and only unless the
# caller names the option itself. A query's work here is seconds, and the first query of a
# process (a Dagster run's, a benchmark's) spends most of its CPU in the JIT compiling Spark
# itself: measured on workload B (bench/ours.py cdc spark), C2 compiled code for 40-50 s of
# CPU. Stopping at the C1 tier cuts a fresh session's first computation by a third at 1M
# events (by half at 250k) for steady-state code ~1.4x slower, which such short sessions
# never reach. "default" options come before spark.driver.extraJavaOptions, so an operator's
# own JVM options still apply (and a later -XX:TieredStopAtLevel there wins).
LOCAL_CONF: dict[str, str] = {
    "spark.driver.defaultJavaOptions": "-XX:TieredStopAtLevel=1",
}

_lock = threading.Lock()
_session = None


def _alive(session) -> bool:
    try:
        return session is not None and not session.sparkContext._jsc.sc().isStopped()
    except Exception:  # a session whose JVM is gone
        return False


def session_settings(master: str | None = None, conf: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The master and settings ``get_spark`` builds a session with (see the module docstring)."""
    settings = {**DEFAULT_CONF, **{key: str(value) for key, value in (conf or {}).items()}}
    chosen_master = master or settings.pop("spark.master", None) or os.environ.get("FP_SPARK_MASTER") \
        or DEFAULT_MASTER
    settings.pop("spark.master", None)
    if chosen_master.startswith("local"):
        settings = {**LOCAL_CONF, **settings}
    return chosen_master, settings


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

        chosen_master, settings = session_settings(master, conf)
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
