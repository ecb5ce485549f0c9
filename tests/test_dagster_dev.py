"""The README's first command, for real: ``scripts/dev`` starts ``dagster dev``, the CDC sensor
fires on a new batch, the change-log partition (and what is built on it) materializes, and the
platform stops cleanly — Dagster and the embedded Redis it started.
"""

import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
import redis

from assets.feature_views import customer_orders
from assets.sources import orders
from feature_platform.embedded_redis import find_free_port
from feature_platform.online_store import RedisOnlineStore
from feature_platform.orchestration.partitions import partition_key_of
from tests.conftest import (current_hour, dagster_ui_answers, dumps, landing_name, ms, order_message, order_row,
                            write_landing_file)

REPO = Path(__file__).resolve().parents[1]


def wait_until(predicate, timeout: float, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"scripts/dev exited ({process.returncode}) while waiting for {what}:\n"
                                 + log.read_text()[-4000:])
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}:\n" + log.read_text()[-4000:])


@pytest.mark.timeout(420)
def test_dev_command_runs_the_sensor_and_materializes(tmp_path):
    port = find_free_port()
    data, home, log = tmp_path / "data", tmp_path / "dagster_home", tmp_path / "dev.log"
    hour = current_hour()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_"))}
    environment.update(
        FP_DATA_DIR=str(data), FP_DAGSTER_HOME=str(home), FP_DAGSTER_PORT=str(port),
        FP_SKIP_DEMO_DATA="1", FP_NO_INSTALL="1", FP_PROJECT="devtest",
        FP_PARTITIONS_START=(hour - timedelta(hours=2)).isoformat(),
    )
    with log.open("wb") as output:
        process = subprocess.Popen([str(REPO / "scripts" / "dev")], cwd=REPO, env=environment,
                                   stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        wait_until(lambda: dagster_ui_answers(port), 180, "the Dagster UI", process, log)
        redis_url = wait_until(
            lambda: next((line.split("at ", 1)[1].split(",")[0] for line in log.read_text().splitlines()
                          if "embedded redis-server" in line), None), 30, "the embedded Redis", process, log)

        # A new batch lands: three orders committed a few minutes ago.
        commit = ms(hour + timedelta(minutes=1))
        lines = [dumps(order_message("c", lsn=500 + i, commit_ms=commit + i, tx_id=9,
                                     after=order_row(20_000 + i, day=hour, purchaser=1001)))
                 for i in range(3)]
        write_landing_file(data / "landing", landing_name(0, 0), lines)

        instance = dg.DagsterInstance.from_config(str(home))
        try:
            def materialized(key):
                event = instance.get_latest_materialization_event(key)
                return event if event and event.asset_materialization.partition == partition_key_of(hour) else None

            event = wait_until(lambda: materialized(dg.AssetKey(["cdc", orders.name])), 240,
                               "the sensor's run to materialize cdc/orders", process, log)
            assert event.asset_materialization.metadata["dagster/row_count"].value == 3
            runs = instance.get_runs()
            assert any(run.tags.get("dagster/sensor_name") == "cdc_landing_sensor" for run in runs)
            # Downstream of the change log the same run built the feature view and synced Redis.
            wait_until(lambda: materialized(dg.AssetKey(["online", "customer_orders"])), 120,
                       "online/customer_orders", process, log)
            stored = RedisOnlineStore(redis.Redis.from_url(redis_url), "devtest").stored_fields(customer_orders, 1001)
            assert stored["order_count_30d"] == "3"
        finally:
            instance.dispose()
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise AssertionError("scripts/dev did not stop within 120 s of SIGTERM:\n" + log.read_text()[-4000:])
    text = log.read_text()
    assert process.returncode in (0, -signal.SIGTERM, 128 + signal.SIGTERM), text[-3000:]
    assert not dagster_ui_answers(port)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(redis_url, socket_connect_timeout=1).ping()


def test_dev_instance_queues_cdc_sensor_runs_one_at_a_time(tmp_path):
    """The instance ``scripts/dev`` writes lets one CDC sensor run go at a time: each rebuilds its
    hours from what was staged when it started, so an older run must not finish after a newer one."""
    home = tmp_path / "dagster_home"
    subprocess.run(["bash", "-c", f'source scripts/_bootstrap.sh && fp_write_dagster_yaml "{home}"'],
                   cwd=REPO, check=True, capture_output=True, timeout=60)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "dagster/sensor_name", "value": "cdc_landing_sensor", "limit": 1} in limits
    finally:
        instance.dispose()
