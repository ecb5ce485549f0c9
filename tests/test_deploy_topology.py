"""The deployment in ``deploy/``, run for real on loopback.

* ``test_deploy_topology_sensor_queue_redis_and_daemon_restart``: the three Dagster processes
  of a deployment, each on its own — ``dagster code-server start`` (the user code),
  ``dagster-webserver`` and ``dagster-daemon run`` — with ``deploy/dagster.yaml`` (copied
  unmodified into a fresh DAGSTER_HOME; its values come from the environment and point at the
  real PostgreSQL, a fresh database per test) and ``deploy/workspace.yaml`` used in place (the
  code server's host and port are environment variables there too). A CDC batch lands, the CDC
  sensor fires, the run goes through the QueuedRunCoordinator (enqueued, dequeued, started,
  succeeded), and the features reach Redis. The daemon is then killed; the next batch lands
  while it is down; the restarted daemon picks it up exactly once.
* ``test_compose_file_matches_the_instance_and_workspace``: ``docker compose config`` when a
  Docker engine answers; otherwise (said plainly) the compose file is checked against
  ``deploy/dagster.yaml`` and ``deploy/workspace.yaml`` with PyYAML — the native topology test
  above stands for actually running it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlparse

import dagster as dg
import pytest
import redis
import yaml
from dagster._core.events import DagsterEventType
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster._core.storage.dagster_run import RunRecord
from dagster._grpc.client import DagsterGrpcClient

from assets.feature_views import customer_orders
from feature_platform.embedded_redis import find_free_port
from feature_platform.online_store import RedisOnlineStore
from feature_platform.orchestration.partitions import partition_key_of
from tests.conftest import (current_hour, dagster_ui_answers, dumps, fresh_postgres_database, landing_name, ms,
                            order_message, order_row, write_landing_file)

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
BIN = Path(sys.executable).parent
REDIS_URL = os.environ.get("FP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
LOCATION = "feature_platform"
SENSOR = "cdc_landing_sensor"
SENSOR_TAG = "dagster/sensor_name"
CDC_ORDERS = dg.AssetKey(["cdc", "orders"])
TOPIC_ORDERS = dg.AssetKey(["topics", "orders"])
ONLINE_CUSTOMER_ORDERS = dg.AssetKey(["online", "customer_orders"])
PURCHASER = 1001


def env_names(config: object) -> set[str]:
    """Every ``{env: NAME}`` a Dagster yaml file reads."""
    if isinstance(config, dict):
        if set(config) == {"env"}:
            return {config["env"]}
        return set().union(*(env_names(value) for value in config.values())) if config else set()
    if isinstance(config, list):
        return set().union(*(env_names(value) for value in config)) if config else set()
    return set()


# -- the processes -----------------------------------------------------------------------------

class Topology:
    """The deployment's processes, each in its own session with its output in a log file."""

    def __init__(self, root: Path, environment: dict[str, str]):
        self.root, self.environment = root, environment
        self.processes: dict[str, subprocess.Popen] = {}
        self.logs: dict[str, list[Path]] = {}
        self.timings: list[str] = []  # how long each wait took, printed with the logs

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = self.root / f"{name}-{len(self.logs.get(name, [])) + 1}.log"
        self.logs.setdefault(name, []).append(log)
        with log.open("wb") as output:
            process = subprocess.Popen(command, cwd=REPO, env=self.environment, stdout=output,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        """SIGKILL to the whole process group: no clean shutdown, as when a machine or pod dies."""
        process = self.processes.pop(name)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop_all(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 20
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.wait(timeout=10)
            try:  # run workers the code server spawned are in its group; gone with it
                os.killpg(process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def report(self) -> str:
        parts = ["----- waits -----", *self.timings]
        for name, logs in self.logs.items():
            for log in logs:
                text = log.read_text(errors="replace") if log.exists() else "(no log)"
                parts.append(f"----- {log.name} (last 4000 characters) -----\n{text[-4000:]}")
        return "\n".join(parts)

    def check_alive(self, what: str) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise AssertionError(f"{name} exited ({process.returncode}) while waiting for {what}")

    def wait_until(self, predicate, timeout: float, what: str, interval: float = 1.0):
        began = time.monotonic()
        deadline = began + timeout
        while time.monotonic() < deadline:
            self.check_alive(what)
            value = predicate()
            if value:
                self.timings.append(f"{time.monotonic() - began:6.1f} s  {what}")
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        answer = json.loads(response.read())
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


WORKSPACE_QUERY = """
query { workspaceOrError { __typename ... on Workspace { locationEntries {
  name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }
"""

SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  __typename ... on Sensor { name sensorState { status } } ... on PythonError { message } } }
"""

RUN_QUERY = """
query Run($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status tags { key value } } } }
"""


def code_server_loaded(port: int) -> bool:
    """The code server answers and has loaded definitions.py (it loads after it starts listening)."""
    try:
        answer = DagsterGrpcClient(port=port, host="127.0.0.1").list_repositories()
    except Exception:  # not listening yet, or still loading the code
        return False
    return "ListRepositoriesResponse" in answer


def location_loaded(port: int) -> bool:
    entries = graphql(port, WORKSPACE_QUERY)["workspaceOrError"]["locationEntries"]
    [entry] = entries
    if entry["loadStatus"] != "LOADED":
        return False
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", f"{entry['name']} failed to load: {location}"
    return True


# -- the database ------------------------------------------------------------------------------

@pytest.fixture
def fresh_database():
    """A new, empty PostgreSQL database for this test's Dagster instance, dropped afterwards."""
    with fresh_postgres_database("fp_deploy") as database:
        yield {
            "DAGSTER_POSTGRES_HOST": database.host, "DAGSTER_POSTGRES_PORT": str(database.port),
            "DAGSTER_POSTGRES_USER": database.user, "DAGSTER_POSTGRES_PASSWORD": database.password,
            "DAGSTER_POSTGRES_DB": database.name,
        }


# -- the topology test -------------------------------------------------------------------------

def land_orders(landing: Path, offset: int, first_id: int, count: int) -> None:
    """``count`` new orders of customer 1001, committed seconds ago, in one Debezium batch file."""
    now = datetime.now(timezone.utc)
    commit = ms(max(now - timedelta(seconds=5), current_hour()))
    lines = [dumps(order_message("c", lsn=first_id * 10 + i, commit_ms=commit + i, tx_id=first_id,
                                 after=order_row(first_id + i, day=current_hour(), purchaser=PURCHASER)))
             for i in range(count)]
    write_landing_file(landing, landing_name(0, offset), lines)


def sensor_runs(instance: dg.DagsterInstance) -> list[RunRecord]:
    """The sensor's runs, oldest first."""
    return sorted(instance.get_run_records(filters=dg.RunsFilter(tags={SENSOR_TAG: SENSOR})),
                  key=lambda record: record.create_timestamp)


def lifecycle(instance: dg.DagsterInstance, run_id: str) -> list[DagsterEventType]:
    lifecycle_types = {DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_DEQUEUED, DagsterEventType.RUN_STARTING,
                       DagsterEventType.RUN_START, DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE,
                       DagsterEventType.RUN_CANCELED}
    return [entry.dagster_event.event_type for entry in instance.all_logs(run_id)
            if entry.is_dagster_event and entry.dagster_event.event_type in lifecycle_types]


def finished(instance: dg.DagsterInstance, count: int):
    """The first ``count`` sensor runs once all of them have finished, else None."""
    records = sensor_runs(instance)
    if len(records) < count or not all(record.dagster_run.is_finished for record in records[:count]):
        return None
    return records[:count]


def sensor_ticks_since(instance: dg.DagsterInstance, moment: datetime) -> int:
    """How many CDC sensor ticks began after ``moment`` and are over."""
    [state] = [state for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR)
               if state.instigator_name == SENSOR]
    ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, after=moment.timestamp())
    return sum(1 for tick in ticks if tick.status != TickStatus.STARTED)


def scheduled_run_ids(instance: dg.DagsterInstance) -> set[str]:
    """Runs of the hourly schedule (it fires at minute 5 of each hour, if the test spans one)."""
    return {record.dagster_run.run_id for record in instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/schedule_name": "hourly_materialization"}))}


def run_timing(record: RunRecord, landed: float) -> str:
    """When the run was requested, started and ended, in seconds after its batch landed."""
    moments = [record.create_timestamp.timestamp(), record.start_time, record.end_time]
    return "run {}: requested +{:.0f} s, started +{:.0f} s, ended +{:.0f} s after its batch landed".format(
        record.dagster_run.run_id[:8], *[(moment or landed) - landed for moment in moments])


def materializations(instance: dg.DagsterInstance, key: dg.AssetKey) -> list:
    records = instance.fetch_materializations(key, limit=1000).records
    return [(record.run_id, record.asset_materialization.partition) for record in records]


@pytest.mark.timeout(480)
def test_deploy_topology_sensor_queue_redis_and_daemon_restart(tmp_path, fresh_database, monkeypatch):
    home, landing, offline = tmp_path / "dagster_home", tmp_path / "landing", tmp_path / "offline"
    for folder in (home, landing, offline):
        folder.mkdir()
    shutil.copyfile(DEPLOY / "dagster.yaml", home / "dagster.yaml")  # unmodified
    project = f"deploy{uuid.uuid4().hex[:8]}"
    code_port, web_port = find_free_port(), find_free_port()
    hour = current_hour()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_"))}
    environment.update(fresh_database)
    environment.update(
        DAGSTER_HOME=str(home),
        DAGSTER_CODE_SERVER_HOST="127.0.0.1", DAGSTER_CODE_SERVER_PORT=str(code_port),
        FP_LANDING_URI=str(landing), FP_OFFLINE_URI=str(offline), FP_PROJECT=project, FP_REDIS_URL=REDIS_URL,
        FP_PARTITIONS_START=(hour - timedelta(hours=2)).isoformat(),
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    # The test reads the same instance: deploy/dagster.yaml resolves its env: keys from here.
    for name, value in fresh_database.items():
        monkeypatch.setenv(name, value)

    # Every env: key of the two committed files is set: nothing is filled in by this test.
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    assert env_names(yaml.safe_load((home / "dagster.yaml").read_text())) <= set(environment)
    assert env_names(workspace) <= set(environment)

    topology = Topology(tmp_path, environment)
    store = redis.Redis.from_url(REDIS_URL)
    instance = None
    try:
        topology.start("code-server", [str(BIN / "dagster"), "code-server", "start", "-m", "definitions",
                                       "--working-directory", str(REPO), "-h", "127.0.0.1", "-p", str(code_port),
                                       "--location-name", LOCATION])
        topology.wait_until(lambda: code_server_loaded(code_port), 120, "the code server to load definitions.py", 2)
        # Batch 1, three orders, lands as the daemon comes up: its first sensor tick takes it
        # (rather than the tick 30 s later, which only makes the test slower).
        land_orders(landing, offset=0, first_id=30_000, count=3)
        landed = time.time()
        workspace_file = str(DEPLOY / "workspace.yaml")
        topology.start("webserver", [str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port),
                                     "-w", workspace_file])
        topology.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace_file])
        topology.wait_until(lambda: dagster_ui_answers(web_port), 90, "the webserver", 2)
        topology.wait_until(lambda: location_loaded(web_port), 60, "the webserver to load the gRPC location", 2)

        # The CDC sensor is on by default: the daemon ticks it with no `dagster sensor start`.
        selector = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__", "sensorName": SENSOR}
        sensor = graphql(web_port, SENSOR_QUERY, {"selector": selector})["sensorOrError"]
        assert sensor["__typename"] == "Sensor", sensor
        assert sensor["sensorState"]["status"] == "RUNNING"

        instance = dg.DagsterInstance.from_config(str(home))
        assert "postgres" in type(instance.run_storage).__module__
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"

        # -- batch 1 ----------------------------------------------------------------------------
        [first] = topology.wait_until(lambda: finished(instance, 1), 240, "the sensor's first run to finish", 3)
        first_run = first.dagster_run
        topology.timings.append(run_timing(first, landed))
        assert first_run.status == dg.DagsterRunStatus.SUCCESS, f"run {first_run.run_id} ended {first_run.status}"
        # Through the queue: the sensor's submission enqueued it (QUEUED); only the daemon's
        # queue loop launches a queued run (STARTING), then the run worker started and finished.
        assert lifecycle(instance, first_run.run_id) == [
            DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING, DagsterEventType.RUN_START,
            DagsterEventType.RUN_SUCCESS]
        online = RedisOnlineStore(store, project)
        assert online.stored_fields(customer_orders, PURCHASER).get("order_count_30d") == "3"
        # The webserver reads the same PostgreSQL: it sees the run and its sensor.
        seen = graphql(web_port, RUN_QUERY, {"runId": first_run.run_id})["runOrError"]
        assert seen["status"] == "SUCCESS"
        assert {"key": SENSOR_TAG, "value": SENSOR} in seen["tags"]

        # -- the daemon dies; batch 2 lands while it is down; a new daemon starts -------------
        topology.kill("daemon")
        land_orders(landing, offset=3, first_id=40_000, count=2)
        landed = time.time()
        time.sleep(2)
        assert len(sensor_runs(instance)) == 1  # nothing ticks without a daemon
        topology.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace_file])
        _, second = topology.wait_until(lambda: finished(instance, 2), 240, "the restarted daemon's run to finish", 3)
        second_run = second.dagster_run
        topology.timings.append(run_timing(second, landed))
        assert second_run.status == dg.DagsterRunStatus.SUCCESS, f"run {second_run.run_id} ended {second_run.status}"
        assert lifecycle(instance, second_run.run_id) == lifecycle(instance, first_run.run_id)
        assert online.stored_fields(customer_orders, PURCHASER).get("order_count_30d") == "5"

        # Exactly once: the sensor tick after the second run was requested (the one that records
        # its files as announced) requests no third run, and every materialization of the change
        # log and of the online table came from one of the two runs (or the hourly schedule, if
        # the test spans minute 5 of an hour), each partition once per run.
        topology.wait_until(lambda: sensor_ticks_since(instance, second.create_timestamp) >= 1, 90,
                            "a sensor tick after the second run was requested", 3)
        assert [record.dagster_run.run_id for record in sensor_runs(instance)] == [first_run.run_id, second_run.run_id]
        assert first_run.tags["dagster/run_key"] != second_run.tags["dagster/run_key"]
        hours = {partition_key_of(hour + timedelta(hours=h)) for h in range(-2, 2)}
        allowed = {first_run.run_id, second_run.run_id} | scheduled_run_ids(instance)
        for asset in (CDC_ORDERS, ONLINE_CUSTOMER_ORDERS):
            events = materializations(instance, asset)
            assert {run_id for run_id, _ in events} <= allowed, events
            for run_id in (first_run.run_id, second_run.run_id):
                partitions = [partition for event_run, partition in events if event_run == run_id]
                assert partitions, f"{asset.to_user_string()} was not materialized by run {run_id}"
                assert len(partitions) == len(set(partitions)), f"{asset.to_user_string()} twice: {partitions}"
                assert set(partitions) <= hours, partitions
        # Each landing file was announced once, by its own tick: the sensor's observations of
        # the topic name one new file each, batch 1's then batch 2's (a tick that took batch 1
        # again with batch 2 would name two files).
        observed = [record.event_log_entry.asset_observation.metadata
                    for record in instance.fetch_observations(TOPIC_ORDERS, limit=100, ascending=True).records]
        assert [(entry["new_files"].value, entry["latest_file"].value) for entry in observed] == [
            (1, landing_name(0, 0)), (1, landing_name(0, 3))]
        assert online.stored_fields(customer_orders, PURCHASER).get("order_count_30d") == "5"
    except BaseException:
        print(topology.report(), file=sys.stderr)
        raise
    finally:
        print("\n".join(["waits:", *topology.timings]))
        if instance is not None:
            instance.dispose()
        topology.stop_all()
        for stale in store.scan_iter(match=f"fp:{project}:*", count=500):
            store.delete(stale)
        store.close()


# -- the compose file --------------------------------------------------------------------------

COMPOSE = DEPLOY / "docker-compose.yml"
DAGSTER_SERVICES = ("code-server", "webserver", "daemon")


def docker_engine() -> tuple[bool, str]:
    """Whether a Docker engine answers (a client alone is not enough), and why not."""
    docker = shutil.which("docker")
    if docker is None:
        return False, "no docker client on PATH"
    probe = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                           timeout=30)
    if probe.returncode != 0:
        return False, (probe.stderr.strip() or probe.stdout.strip()).splitlines()[-1]
    return True, probe.stdout.strip()


def interpolate(value: object) -> object:
    """Compose's ``${NAME:-default}`` with nothing set: the default (``$$`` is a literal ``$``)."""
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if isinstance(value, str):
        text = re.sub(r"\$\{(\w+):-([^}]*)\}", lambda match: match.group(2), value.replace("$$", "\0"))
        assert not re.search(r"\$\{?\w", text), f"compose variable without a default in {value!r}"
        return text.replace("\0", "$")
    return value


def mounts(service: dict) -> dict[str, str]:
    """Target path -> source of every volume of a service (short syntax)."""
    result = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        result[target] = source
    return result


def test_compose_file_matches_the_instance_and_workspace():
    engine, detail = docker_engine()
    if engine:
        checked = subprocess.run(["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
                                 capture_output=True, text=True, timeout=120)
        assert checked.returncode == 0, f"docker compose config refused {COMPOSE}:\n{checked.stderr}"
    else:
        # Said in the test summary (a warning), not hidden in captured output.
        warnings.warn(f"No Docker engine here ({detail}): `docker compose config` did not run; the compose file "
                      "was checked with PyYAML against deploy/dagster.yaml and deploy/workspace.yaml, and "
                      "test_deploy_topology_sensor_queue_redis_and_daemon_restart runs the same topology natively.",
                      stacklevel=1)

    compose = interpolate(yaml.safe_load(COMPOSE.read_text()))  # anchors and merge keys resolved
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "code-server", "webserver", "daemon", "spark-master",
                             "spark-worker"}
    instance_env = env_names(yaml.safe_load((DEPLOY / "dagster.yaml").read_text()))
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    workspace_env = env_names(workspace)
    [entry] = workspace["load_from"]
    assert set(entry) == {"grpc_server"} and entry["grpc_server"]["location_name"] == LOCATION

    postgres = services["postgres"]["environment"]
    for name in DAGSTER_SERVICES:
        service = services[name]
        environment = {key: str(value) for key, value in service["environment"].items()}
        # Every variable the instance and the workspace read is set, and they agree with the
        # database the postgres service creates and the code server's address.
        assert instance_env | workspace_env <= set(environment), (name, (instance_env | workspace_env) - set(environment))
        assert environment["DAGSTER_POSTGRES_HOST"] == "postgres"
        assert environment["DAGSTER_POSTGRES_USER"] == postgres["POSTGRES_USER"]
        assert environment["DAGSTER_POSTGRES_PASSWORD"] == postgres["POSTGRES_PASSWORD"]
        assert environment["DAGSTER_POSTGRES_DB"] == postgres["POSTGRES_DB"]
        assert environment["DAGSTER_CODE_SERVER_HOST"] == "code-server"
        # The instance every process reads is the committed deploy/dagster.yaml.
        volumes = mounts(service)
        home = environment["DAGSTER_HOME"]
        assert (DEPLOY / volumes[f"{home}/dagster.yaml"]).resolve() == DEPLOY / "dagster.yaml"
        assert volumes[f"{home}/storage"] == "dagster-storage"  # compute logs, readable by the UI
        assert "postgres" in service["depends_on"]

    code_port = services["code-server"]["environment"]["DAGSTER_CODE_SERVER_PORT"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd = re.search(r'^CMD \[(.*?)\]', dockerfile, re.M | re.S).group(1).replace("\\\n", " ")
    command = [part.strip().strip('"') for part in cmd.split(",")]
    assert command[:3] == ["dagster", "code-server", "start"]
    assert command[command.index("-p") + 1] == code_port
    assert command[command.index("-m") + 1] == "definitions"
    assert command[command.index("--location-name") + 1] == LOCATION
    assert "openjdk" in dockerfile and "pip install" in dockerfile

    for name in ("webserver", "daemon"):
        command = services[name]["command"]
        workspace_path = command[command.index("-w") + 1]
        assert (DEPLOY / mounts(services[name])[workspace_path]).resolve() == DEPLOY / "workspace.yaml"
        assert services[name]["depends_on"]["code-server"]["condition"] == "service_healthy"
    assert services["webserver"]["command"][0] == "dagster-webserver"
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]

    # The platform's settings: the shared volumes at the paths FP_* name, Redis and Spark by service.
    platform = services["code-server"]["environment"]
    code_volumes = mounts(services["code-server"])
    assert code_volumes[platform["FP_LANDING_URI"]] == "landing"
    assert code_volumes[platform["FP_OFFLINE_URI"]] == "offline"
    assert mounts(services["spark-worker"])[platform["FP_OFFLINE_URI"]] == "offline"  # executors read it
    assert urlparse(platform["FP_REDIS_URL"]).hostname == "redis"
    assert platform["FP_SPARK_MASTER"] == "spark://spark-master:7077"
    assert "spark://spark-master:7077" in services["spark-worker"]["command"]
    assert {"landing", "offline", "dagster-storage", "postgres-data"} <= set(compose["volumes"])


def test_dockerfile_copies_every_package_the_project_installs():
    """The image holds what pyproject.toml installs: a new top-level package cannot go missing from it."""
    import tomllib

    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = {source for line in dockerfile.splitlines() if line.startswith("COPY ")
              for source in line.split()[1:-1] if not source.startswith("--")}
    for source in copied:
        assert (REPO / source).exists(), f"deploy/Dockerfile copies {source}, which is not in the repository"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {pattern.rstrip("*") for pattern in project["packages"]["find"]["include"]}
    modules = {f"{module}.py" for module in project["py-modules"]}
    assert packages | modules | {"pyproject.toml", "README.md"} <= copied, (packages | modules) - copied
    # The code server's module is the one pyproject.toml names as the code location.
    target = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["dg"]["project"]["code_location_target_module"]
    assert f'"-m", "{target}"' in dockerfile
