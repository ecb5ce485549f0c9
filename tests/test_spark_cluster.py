"""A Spark-engine feature view on a real standalone Spark cluster equals the local-mode result.

A master and one worker (1 core, 1 GiB) are started from the installed pyspark's jars on
loopback, each in its own process group, which teardown always kills (executors included).
The deployment's own path is used end to end: ``feature-platform materialize`` in its own
process, with ``FP_SPARK_MASTER=spark://...`` and ``FP_SPARK_CONF`` reaching the PySpark
resource, runs the change log and a Spark feature view as a real Dagster run. The same
definitions run in this process on a local-mode session give the reference; the offline
history of the two must be the same bytes, and the master must have seen the application.

This module is also the code location those commands load (``FP_DEFINITIONS_MODULE``):
``defs`` holds the orders change log and ``customer_orders`` on the Spark engine.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import pytest

from assets.feature_views import customer_orders
from assets.sources import orders

REPO = Path(__file__).resolve().parents[1]
START = datetime(2026, 3, 2, tzinfo=timezone.utc)
END = datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)
SPARK_VIEW = dataclasses.replace(customer_orders, engine="spark")


def build_defs(settings):
    """The orders change log and ``customer_orders`` on the Spark engine, with the deployment's resources."""
    import dagster as dg

    from feature_platform.orchestration.change_log_assets import build_change_log_asset
    from feature_platform.orchestration.feature_view_assets import build_feature_view_asset
    from feature_platform.orchestration.partitions import hourly_partitions
    from resources import build_resources

    partitions = hourly_partitions(settings.partitions_start)
    resources = build_resources(settings)
    return dg.Definitions(assets=[build_change_log_asset(orders, partitions),
                                  build_feature_view_asset(SPARK_VIEW, partitions)],
                          resources={key: resources[key] for key in ("landing", "offline", "pyspark")})


def __getattr__(name: str):
    """``defs``, built from the environment when a command loads this module as its code location."""
    if name != "defs":
        raise AttributeError(name)
    from feature_platform.config import Settings

    return build_defs(Settings.from_env())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def java() -> str:
    home = os.environ.get("JAVA_HOME")
    return str(Path(home) / "bin" / "java") if home else "java"


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group we started (a worker's executors are in it too), then SIGKILL."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left (executors)
    except ProcessLookupError:
        pass
    process.wait()


def master_state(ui_port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    """``spark://127.0.0.1:<port>`` of a standalone master with one 1-core worker, and its UI port."""
    root = tmp_path_factory.mktemp("spark-cluster")
    port, ui_port, worker_ui_port = free_port(), free_port(), free_port()
    # SPARK_SCALA_VERSION: the worker's launcher looks for a source build's folders to learn the
    # Scala version unless told; pip's pyspark is no source build (its jars are _2.13).
    environment = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
                   "SPARK_SCALA_VERSION": "2.13", "SPARK_LOG_DIR": str(root), "SPARK_WORKER_DIR": str(root / "work")}
    classpath = f"{spark_home()}/jars/*"
    started: list[subprocess.Popen] = []
    logs = []

    def start(name: str, *arguments: str) -> subprocess.Popen:
        log = open(root / f"{name}.log", "wb")
        logs.append(log)
        process = subprocess.Popen([java(), "-Xmx256m", "-cp", classpath, *arguments], env=environment,
                                   stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        started.append(process)
        return process

    def fail(message: str) -> None:
        tails = {log.name: Path(log.name).read_text(errors="replace")[-1500:] for log in logs}
        raise AssertionError(f"{message}: {tails}")

    try:
        master = start("master", "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                       "--port", str(port), "--webui-port", str(ui_port))
        worker = start("worker", "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}",
                       "--host", "127.0.0.1", "--cores", "1", "--memory", "1g", "--webui-port", str(worker_ui_port),
                       "--work-dir", str(root / "work"))
        deadline = time.monotonic() + 90
        while True:
            if master.poll() is not None or worker.poll() is not None:
                fail("the Spark master or worker exited")
            try:
                if [w for w in master_state(ui_port).get("workers", []) if w.get("state") == "ALIVE"]:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                fail("no worker registered with the master within 90 s")
            time.sleep(0.5)
        yield f"spark://127.0.0.1:{port}", ui_port
    finally:
        for process in reversed(started):
            stop_group(process)
        for log in logs:
            log.close()


def materialize(data: Path, spark_master: str, spark_conf: dict[str, str], cwd: Path) -> subprocess.Popen:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_HOME"))}
    environment.update(FP_DATA_DIR=str(data), FP_PROJECT="cluster", FP_PARTITIONS_START=START.isoformat(),
                       FP_DEFINITIONS_MODULE="test_spark_cluster", PYTHONPATH=f"{REPO}{os.pathsep}{REPO / 'tests'}",
                       FP_SPARK_MASTER=spark_master, FP_SPARK_CONF=json.dumps(spark_conf), SPARK_LOCAL_IP="127.0.0.1")
    log = open(cwd / f"materialize-{data.name}.log", "w+")
    process = subprocess.Popen([sys.executable, "-m", "feature_platform.cli", "materialize", "--start",
                                START.isoformat(), "--end", END.isoformat()], cwd=cwd, env=environment,
                               stdout=log, stderr=subprocess.STDOUT, text=True)
    process.log = log
    return process


def finished(process: subprocess.Popen) -> None:
    try:
        process.wait(timeout=400)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    process.log.seek(0)
    output = process.log.read()
    process.log.close()
    assert process.returncode == 0, output[-6000:]


@pytest.mark.timeout(600)
def test_a_spark_view_on_a_standalone_cluster_equals_local_mode(spark_cluster, tmp_path):
    import dagster as dg

    from feature_platform.config import Settings
    from feature_platform.demo.generator import generate_landing_zone
    from feature_platform.offline_store import OfflineFeatureStore
    from feature_platform.orchestration.runner import plan_ranges, run_range
    from feature_platform.storage import Store

    master_url, ui_port = spark_cluster
    for data in (tmp_path / "cluster", tmp_path / "local"):
        generate_landing_zone(data / "landing", customers=15, products=5, weeks=1 / 7, orders_per_day=60,
                              end=END, seed=21)
    # Executors get one core and little memory (two cores on this machine, shared), and must
    # reach the driver on loopback and run this interpreter: the settings a cluster needs.
    on_cluster = {"spark.driver.host": "127.0.0.1", "spark.driver.bindAddress": "127.0.0.1",
                  "spark.executor.cores": "1", "spark.cores.max": "1", "spark.executor.memory": "512m",
                  "spark.pyspark.python": sys.executable, "spark.app.name": "feature-platform-cluster-test"}
    cluster_run = materialize(tmp_path / "cluster", master_url, on_cluster, tmp_path)
    try:
        # The reference meanwhile, in this process: the same definitions as a Dagster run of
        # the same range and as-of, on a local-mode session (this process's shared one, if up).
        local_settings = Settings(landing_uri=str(tmp_path / "local" / "landing"),
                                  offline_uri=str(tmp_path / "local" / "offline"), redis_url=None,
                                  project="cluster", partitions_start=START, spark_master="local[1]")
        defs = build_defs(local_settings)
        for planned in plan_ranges(START, END):
            result = run_range(defs, dg.DagsterInstance.ephemeral(), planned, as_of=END)
            assert result.success, [event.message for event in result.all_events if event.is_failure][-3:]
    finally:
        finished(cluster_run)

    applications = master_state(ui_port)
    names = [app["name"] for app in applications.get("completedapps", []) + applications.get("activeapps", [])]
    assert "feature-platform-cluster-test" in names, f"the master never saw the run's application: {names}"

    cluster = OfflineFeatureStore(Store(str(tmp_path / "cluster" / "offline" / "cluster")))
    local = OfflineFeatureStore(Store(str(tmp_path / "local" / "offline" / "cluster")))
    hours = cluster.partition_hours(SPARK_VIEW)
    assert hours and hours == local.partition_hours(SPARK_VIEW)
    history = cluster.read_history(SPARK_VIEW, START)
    assert history.num_rows > 20 and history.equals(local.read_history(SPARK_VIEW, START))
    for hour in hours:
        path = cluster.partition_path(SPARK_VIEW, hour)
        assert cluster.store.read_bytes(path) == local.store.read_bytes(path), f"partition {hour:%Y-%m-%dT%H} differs"


def test_spark_settings_come_from_configuration():
    from feature_platform.config import Settings
    from resources import spark_config

    cluster = Settings.from_env({"FP_SPARK_MASTER": "spark://spark-master:7077",
                                 "FP_SPARK_CONF": '{"spark.executor.memory": "2g", "spark.sql.shuffle.partitions": 16}'})
    conf = spark_config(cluster)
    assert conf["spark.master"] == "spark://spark-master:7077"
    assert conf["spark.executor.memory"] == "2g" and conf["spark.sql.shuffle.partitions"] == "16"  # the operator wins
    assert conf["spark.sql.session.timeZone"] == "UTC"  # the engine's own settings are kept
    assert "spark.driver.bindAddress" not in conf, "a cluster's executors cannot reach a driver bound to loopback"

    local = spark_config(Settings.from_env({}))
    assert local["spark.master"] == "local[2]" and local["spark.driver.bindAddress"] == "127.0.0.1"
    assert local["spark.pyspark.python"] == sys.executable

    pairs = Settings.from_env({"FP_SPARK_CONF": "spark.cores.max=4,\nspark.executor.extraJavaOptions = -Da=b"})
    assert pairs.spark_conf == {"spark.cores.max": "4", "spark.executor.extraJavaOptions": "-Da=b"}
    with pytest.raises(ValueError, match="FP_SPARK_CONF item 'spark.cores.max'"):
        Settings.from_env({"FP_SPARK_CONF": "spark.cores.max"})
    with pytest.raises(ValueError, match="FP_SPARK_CONF is not valid JSON"):
        Settings.from_env({"FP_SPARK_CONF": "{spark.cores.max: 4}"})
