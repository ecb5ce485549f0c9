"""The deployment's code location loads and validates, and its CDC sensor works on its real graph.

Everything runs in a subprocess: the deployment reads its ``FP_*`` settings at import time,
so each test gets its own tmp DAGSTER_HOME (telemetry off) and tmp data folders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import redis

from conftest import REPO, current_hour, landing_name, ms, order_message, order_row, dumps, write_landing_file

DAGSTER = Path(sys.executable).with_name("dagster")


def environment(tmp_path: Path, **overrides: str) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_"))}
    env.update({
        "DAGSTER_HOME": str(home),
        "FP_DATA_DIR": str(tmp_path / "data"),
        "FP_LANDING_URI": str(tmp_path / "landing"),
        "FP_OFFLINE_URI": str(tmp_path / "offline"),
        "FP_PROJECT": "validate",
        "FP_PARTITIONS_START": (current_hour().replace(hour=0)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "FP_REDIS_URL": "redis://127.0.0.1:1/0",  # never contacted: nothing here materializes
    })
    env.update(overrides)
    return env


def run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_dagster_definitions_validate_passes(tmp_path):
    result = run([str(DAGSTER), "definitions", "validate", "-w", "workspace.yaml"], environment(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Validation successful for code location feature_platform" in output
    assert "All code locations passed validation" in output


def test_dagster_definitions_validate_fails_on_a_broken_setting(tmp_path):
    # the same command must be able to fail: a start that is not on a whole hour does not load
    result = run([str(DAGSTER), "definitions", "validate", "-w", "workspace.yaml"],
                 environment(tmp_path, FP_PARTITIONS_START="2026-01-01T00:30:00Z"))
    assert result.returncode != 0
    assert "must fall on a whole hour" in result.stdout + result.stderr


SENSOR_TICK = textwrap.dedent("""
    import json, sys
    import dagster as dg
    from definitions import defs
    repository = defs.get_repository_def()
    sensor = repository.get_sensor_def("cdc_landing_sensor")
    context = dg.build_sensor_context(instance=dg.DagsterInstance.ephemeral(), definitions=defs,
                                      resources={"landing": defs.resources["landing"],
                                                 "offline": defs.resources["offline"]})
    result = sensor.evaluate_tick(context)
    print(json.dumps({
        "skip": result.skip_message,
        "requests": [{"selection": sorted(k.to_user_string() for k in r.asset_selection), "tags": dict(r.tags)}
                     for r in result.run_requests],
        "cdc_assets": sorted(k.to_user_string() for k in repository.asset_graph.get_all_asset_keys()
                             if k.path[0] == "cdc"),
    }))
""")


def test_the_deployed_sensor_requests_the_change_log_and_everything_downstream(tmp_path):
    """The real code location: a landed orders batch requests cdc/orders and the feature views on it.

    With the sensor's asset_selection limited to the change logs, Dagster refused every such
    request (DagsterInvalidSubsetError) as soon as feature views were built on a change log.
    """
    env = environment(tmp_path)
    commit = current_hour().replace(hour=0)
    line = dumps(order_message("c", lsn=1, commit_ms=ms(commit), tx_id=1, after=order_row(1)))
    write_landing_file(tmp_path / "landing", landing_name(0, 0), [line])
    result = run([sys.executable, "-c", SENSOR_TICK], env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["cdc_assets"] == ["cdc/customers", "cdc/orders", "cdc/products", "cdc/products_on_hand"]
    assert report["skip"] is None and len(report["requests"]) == 1
    [request] = report["requests"]
    start = commit.strftime("%Y-%m-%d-%H:%M")
    assert request["tags"]["dagster/asset_partition_range_start"] == start
    # Feature views read orders: a change can alter their values at every later instant, so
    # the run reaches the current hour (and no view history exists before the commit's hour).
    assert request["tags"]["dagster/asset_partition_range_end"] == current_hour().strftime("%Y-%m-%d-%H:%M")
    assert "cdc/orders" in request["selection"] and "cdc/customers" not in request["selection"]
    assert len(request["selection"]) > 1, "nothing downstream of cdc/orders was selected"


SENSOR_RUN = textwrap.dedent("""
    import json
    import dagster as dg
    from definitions import defs
    repository = defs.get_repository_def()
    sensor = repository.get_sensor_def("cdc_landing_sensor")
    instance = dg.DagsterInstance.ephemeral()
    context = dg.build_sensor_context(instance=instance, definitions=defs,
                                      resources={"landing": defs.resources["landing"],
                                                 "offline": defs.resources["offline"]})
    [request] = sensor.evaluate_tick(context).run_requests
    job = repository.get_job(sensor.job_name)
    # the run the daemon would launch, executed here in this process (execute_in_process runs
    # the steps in the order the in-process executor takes them)
    outcome = job.execute_in_process(instance=instance, tags=request.tags,
                                     asset_selection=list(request.asset_selection))
    print(json.dumps({
        "job": job.name,
        "executor": job.executor_def.name,
        "success": outcome.success,
        "starts": [e.step_key for e in outcome.all_events if e.event_type_value == "STEP_START"],
    }))
""")


def test_sensor_runs_use_the_in_process_executor_and_each_online_step_follows_its_view(tmp_path):
    """A CDC run's steps run in one process (no process start per step), and the online table of
    a view goes as soon as its history is written, not after the histories of unrelated views."""
    redis_url = os.environ.get("FP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    project = f"runorder{os.getpid()}"
    env = environment(tmp_path, FP_REDIS_URL=redis_url, FP_PROJECT=project)
    commit = current_hour()
    line = dumps(order_message("c", lsn=1, commit_ms=ms(commit), tx_id=1, after=order_row(1)))
    write_landing_file(tmp_path / "landing", landing_name(0, 0), [line])
    try:
        result = run([sys.executable, "-c", SENSOR_RUN], env)
    finally:
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"fp:{project}:*"))
        if keys:
            client.delete(*keys)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["job"] == "cdc_landing_sensor_job" and report["executor"] == "in_process"
    assert report["success"], report
    starts = report["starts"]
    # orders feed two views: both histories and both online tables ran, after the change log
    views = ["customer_orders", "product_sales"]
    assert starts[0] == "cdc__orders", starts
    assert {f"{layer}__{view}" for layer in ("features", "online") for view in views} <= set(starts), starts
    for view in views:
        position = starts.index(f"features__{view}")
        assert starts[position + 1] == f"online__{view}", f"online__{view} waited behind other steps: {starts}"
