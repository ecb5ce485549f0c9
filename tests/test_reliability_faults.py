"""Service faults, each on real processes over loopback and bounded in time:

* Redis stops in the middle of a sync of a real ``feature-platform materialize`` run (a
  private, password-protected, TLS-only redis-server that the test stops while the run stands
  at the ``online-sync`` pause point, see feature_platform/faults.py): the step fails with an
  error naming the Redis (password redacted), the retry after Redis is back succeeds, Redis then
  equals the offline history — and the password is nowhere in the run's output, Dagster's
  event log and storage, or the offline store.
* Redis down through every retry of an online sync (in-process Dagster, the real asset and its
  retry policy): the run fails naming the Redis, redacted, and writes nothing; Redis back but
  empty is refilled from the first partition by the next run.
* PostgreSQL storage unreachable (a dagster.yaml pointing at a closed port): the command
  ends with one clear sentence within a bounded time instead of hanging.
* The landing zone unreadable for a while: the sensor skips with the reason, then catches up
  without missing a file that landed meanwhile. Tests run as root here, where ``chmod 000``
  does not stop reads, so the landing folder is moved away and a *file* put at its path — the
  listing then fails with an OSError exactly as for a permission error, as root or not.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pyarrow as pa
import pytest

from assets.feature_views import FEATURE_VIEWS, customer_profile
from assets.sources import orders
from conftest import dumps, landing_name, make_stores, ms, order_message, order_row, write_landing_file
from feature_platform.cdc.change_log import file_id
from feature_platform.config import Settings
from feature_platform.feature_store import FeatureStore
from feature_platform.offline_store import OfflineFeatureStore
from feature_platform.orchestration.cdc_sensor import AnnouncementLog, build_cdc_sensor
from feature_platform.orchestration.change_log_assets import build_change_log_asset
from feature_platform.orchestration.online_assets import RedisResource, build_online_asset
from feature_platform.orchestration.partitions import hourly_partitions, partition_key_of
from feature_platform.orchestration.resources import OfflineStoreResource
from feature_platform.redis_client import redact
from feature_platform.registry import Registry
from feature_platform.storage import Store
from reliability import (
    START,
    cli_environment,
    release,
    run_cli,
    small_demo_landing,
    start_cli,
    wait_for_pause,
)
from redis_servers import closed_port, make_tls_files, start_server

PASSWORD = "Sup3r:s3cret/pw#%&"
SHORT_END = START + timedelta(hours=4)  # four partitions: every view has rows, the run stays short
SHORT_RANGE = ("materialize", "--start", START.isoformat(), "--end", SHORT_END.isoformat())


def secret_forms(password: str) -> list[str]:
    return [password, quote(password, safe=""), quote(password)]


def files_containing(root: Path, secrets: list[str]) -> list[str]:
    """Files under ``root`` whose bytes hold any of the secrets (SQLite databases included)."""
    found = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if any(secret.encode() in data for secret in secrets):
                found.append(str(path))
    return found


def wait_for_retry_event(home: Path, process: subprocess.Popen, log: Path, timeout: float = 90):
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in instance.get_runs():
                events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
                if events:
                    return events[0]
            if process.poll() is not None:
                raise AssertionError(f"the run ended ({process.returncode}) without a retry:\n"
                                     + log.read_text(errors="replace")[-4000:])
            time.sleep(0.1)
        raise AssertionError("no STEP_UP_FOR_RETRY within the time limit:\n" + log.read_text(errors="replace")[-4000:])
    finally:
        instance.dispose()


@pytest.mark.timeout(240)
def test_redis_stopped_mid_sync_fails_clearly_then_the_retry_succeeds_and_no_secret_leaks(tmp_path):
    data, home, pauses, log = tmp_path / "data", tmp_path / "dagster_home", tmp_path / "pauses", tmp_path / "run.log"
    for folder in (home, pauses):
        folder.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    small_demo_landing(data / "landing")
    tls = make_tls_files(tmp_path / "tls")
    project = f"fault_{uuid.uuid4().hex[:8]}"
    servers = [start_server(password=PASSWORD, tls=tls)]
    url = servers[0].url
    assert url.startswith("rediss://") and "ssl_ca_certs=" in url
    try:
        environment = cli_environment(data, project, url, DAGSTER_HOME=str(home),
                                      FP_FAULT_PAUSE_AT="online-sync:before-write", FP_FAULT_DIR=str(pauses))
        process = start_cli(environment, *SHORT_RANGE, log=log)
        try:
            paused = wait_for_pause(pauses, "online-sync", process, log)
            view = paused["detail"].split(":")[0]
            servers[0].stop()  # Redis goes away between connecting and writing
            release(pauses, "online-sync")
            retry = wait_for_retry_event(home, process, log)
            # Back on the same port, same password and certificate, before the 5 s retry delay ends.
            servers.append(start_server(password=PASSWORD, port=servers[0].port, tls=tls))
            process.wait(180)
        finally:
            if process.poll() is None:
                process.kill()
        output = log.read_text(errors="replace")
        assert process.returncode == 0, output[-4000:]

        # The failed attempt's error: which view, which Redis (redacted), what happened.
        message = retry.dagster_event.event_specific_data.error.cause.message
        assert retry.step_key == f"online__{view}"
        assert redact(url) in message and "writing to Redis" in message and "Connection" in message, message

        # The retry and every other view synced: Redis serves exactly what training reads (the skew checks).
        settings = Settings(landing_uri=str(data / "landing"), offline_uri=str(data / "offline"), redis_url=url,
                            project=project, partitions_start=START)
        store = FeatureStore(settings, Registry.of(FEATURE_VIEWS))
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            [run] = instance.get_runs()
            checks = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
            skew = [e.dagster_event.event_specific_data for e in checks
                    if e.dagster_event.event_specific_data.check_name == "train_serve_skew"]
            assert len(skew) == len(FEATURE_VIEWS) and all(c.passed for c in skew), skew
            event_log_text = "\n".join(repr(e) for e in instance.all_logs(run.run_id))
        finally:
            instance.dispose()
        for feature_view in FEATURE_VIEWS:
            assert store.online.synced_through(feature_view) == SHORT_END

        # The password is in no output, event, metadata or stored file.
        secrets = secret_forms(PASSWORD)
        assert redact(url) in event_log_text  # the redacted URL is what the metadata shows
        for secret in secrets:
            assert secret not in output and secret not in event_log_text and secret not in message
        assert files_containing(home, secrets) == []
        assert files_containing(data / "offline", secrets) == []
    finally:
        for server in servers:
            server.stop()


def profile_history(rows: list[dict]) -> pa.Table:
    schema = customer_profile.history_schema()
    return pa.Table.from_pylist([{**dict.fromkeys(schema.names), "_deleted": False, **row} for row in rows],
                                schema=schema)


@pytest.mark.timeout(240)
def test_redis_down_through_every_retry_fails_the_sync_then_a_lost_redis_is_refilled_from_the_first_partition(
        tmp_path):
    """Redis stays down through every attempt of an online sync (the step's retry policy: 3
    retries, 5 s exponential backoff): the run fails after four attempts, each failure naming
    the Redis with its password redacted, having written nothing. Redis then comes back on its
    port empty, its data lost: the next run, of the latest partition only, fills the view from
    the first partition (docs/operations.md, *Backing up*)."""
    h0, h1 = START, START + timedelta(hours=1)
    project = f"down_{uuid.uuid4().hex[:8]}"
    offline_dir = tmp_path / "offline"
    offline = OfflineFeatureStore(Store(f"{offline_dir}/{project}"))
    offline.write_partition(customer_profile, h0, profile_history([
        {"customer_id": 1, "valid_from": h0, "first_name": "Ann"},
        {"customer_id": 2, "valid_from": h0, "first_name": "Bo"}]), as_of=h1)
    offline.write_partition(customer_profile, h1, profile_history([
        {"customer_id": 2, "valid_from": h1, "first_name": "Bob"},
        {"customer_id": 3, "valid_from": h1, "first_name": "Cy"}]), as_of=h1 + timedelta(hours=1))
    asset = build_online_asset(customer_profile, hourly_partitions(h0))
    policy = asset.op.retry_policy
    backoff = sum(policy.calculate_delay(attempt) for attempt in range(1, policy.max_retries + 1))
    servers = [start_server(password=PASSWORD)]
    url = servers[0].url_for(0)
    resources = {"offline": OfflineStoreResource(uri=str(offline_dir), project=project),
                 "redis": RedisResource(url=url, project=project)}
    instance = dg.DagsterInstance.ephemeral()
    try:
        assert dg.materialize([asset], resources=resources, partition_key=partition_key_of(h0),
                              instance=instance).success
        servers[0].stop()
        files_before = {path: path.read_bytes() for path in offline_dir.rglob("*") if path.is_file()}

        began = time.monotonic()
        down = dg.materialize([asset], resources=resources, partition_key=partition_key_of(h1),
                              instance=instance, raise_on_error=False)
        waited = time.monotonic() - began
        assert not down.success
        retries = [e for e in down.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
        [failure] = [e for e in down.all_events if e.event_type_value == "STEP_FAILURE"]
        assert len(retries) == policy.max_retries == 3
        assert waited >= backoff  # each retry waited its delay: 5 + 15 + 35 s
        errors = [e.event_specific_data.error for e in (*retries, failure)]
        messages = [(error.cause or error).message for error in errors]
        for message in messages:
            assert redact(url) in message and "unreachable" in message, message
        events_text = "\n".join(repr(e) for e in down.all_events)
        for secret in secret_forms(PASSWORD):
            assert secret not in events_text
        assert down.asset_materializations_for_node(asset.op.name) == []
        assert {path: path.read_bytes() for path in offline_dir.rglob("*") if path.is_file()} == files_before

        servers.append(start_server(password=PASSWORD, port=servers[0].port))  # back, empty
        back = dg.materialize([asset], resources=resources, partition_key=partition_key_of(h1), instance=instance)
        [materialization] = back.asset_materializations_for_node(asset.op.name)
        assert materialization.metadata["synced_through"].text == (h1 + timedelta(hours=1)).isoformat()
        assert materialization.metadata["partitions_read"].value == 2  # from the first partition
        settings = Settings(landing_uri=str(tmp_path / "landing"), offline_uri=str(offline_dir), redis_url=url,
                            project=project, partitions_start=h0)
        served = FeatureStore(settings, Registry.of([customer_profile])).get_online_features(
            [{"customer_id": k} for k in (1, 2, 3)], features=["customer_profile:first_name"],
            request_time=h1 + timedelta(hours=1))
        assert served.stale == [] and served["first_name"].tolist() == ["Ann", "Bob", "Cy"]
    finally:
        for server in servers:
            server.stop()
        instance.dispose()


@pytest.mark.timeout(120)
def test_unreachable_postgres_storage_is_a_clear_error_in_bounded_time(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    port = closed_port()
    pg_password = "pg-Secret-42"
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_db:\n      username: feature_platform\n"
        f"      password: {pg_password}\n      hostname: 127.0.0.1\n      db_name: dagster\n      port: {port}\n"
        "telemetry:\n  enabled: false\n")
    environment = cli_environment(tmp_path / "data", "pgdown", "redis://127.0.0.1:6379/15", DAGSTER_HOME=str(home))
    began = time.monotonic()
    done = run_cli(environment, "materialize", "--start", START.isoformat(), "--end",
                   (START + timedelta(hours=1)).isoformat(), timeout=90)
    elapsed = time.monotonic() - began
    assert done.returncode == 1, done.stdout + done.stderr[-3000:]
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith("Error: the Dagster instance") and f"DAGSTER_HOME={home}" in last_line, last_line
    assert f'"127.0.0.1", port {port} failed: Connection refused' in last_line, last_line
    assert pg_password not in done.stdout + done.stderr
    assert elapsed < 60, f"took {elapsed:.0f} s"  # dagster-postgres retries for a few seconds, then gives up


def test_unreadable_landing_zone_is_skipped_with_a_reason_then_caught_up_without_missing_a_file(tmp_path):
    stores = make_stores(tmp_path)
    start = START
    partitions = hourly_partitions(start)
    sensor = build_cdc_sensor([orders], partitions)
    defs = dg.Definitions(assets=[build_change_log_asset(orders, partitions)], sensors=[sensor],
                          resources=stores.resources)
    instance = dg.DagsterInstance.ephemeral()

    def tick(cursor):
        context = dg.build_sensor_context(instance=instance, definitions=defs, resources=stores.resources,
                                          cursor=cursor, sensor_name=sensor.name)
        return sensor.evaluate_tick(context)

    def land(offset: int, root: Path | None = None) -> str:
        relative = landing_name(0, offset)
        line = dumps(order_message("c", lsn=offset + 1, commit_ms=ms(start + timedelta(minutes=offset)),
                                   tx_id=offset + 1, after=order_row(offset + 1)))
        write_landing_file(root or stores.landing_dir, relative, [line])
        return relative

    landed = [land(0)]
    first = tick(None)
    assert first.run_requests

    # The landing zone becomes unreadable; files keep landing (into the folder, now elsewhere).
    aside = tmp_path / "landing-aside"
    stores.landing_dir.rename(aside)
    stores.landing_dir.write_text("not a folder")
    unreadable = tick(first.cursor)
    assert unreadable.run_requests == []
    assert "unreadable" in unreadable.skip_message and "will retry" in unreadable.skip_message
    assert str(stores.landing_dir) in unreadable.skip_message
    assert unreadable.cursor == first.cursor  # nothing taken, nothing forgotten
    landed += [land(offset, root=aside) for offset in (1, 2)]

    # Readable again: the next tick takes exactly the files it has not announced yet.
    stores.landing_dir.unlink()
    aside.rename(stores.landing_dir)
    caught_up = tick(unreadable.cursor)
    assert caught_up.run_requests
    final = tick(caught_up.cursor)
    assert final.run_requests == [] and "no new landing files" in final.skip_message
    announced = AnnouncementLog(stores.offline).announced()
    assert announced == {file_id(path) for path in landed}
