"""The landing zone and the offline store on S3-compatible object storage.

A real S3 server (moto's, started as its own process on a loopback port) stands in for
AWS, MinIO or Ceph; the platform reaches it exactly as a deployment would, through
``FP_LANDING_URI=s3://...``, ``FP_OFFLINE_URI=s3://...`` and ``FP_S3_ENDPOINT_URL``.

* ``Store`` on S3 lists, in S3's key order and after a key (``StartAfter``, across pages),
  exactly what the same files in a folder give; temporary names are never listed; a reader
  racing a writer only ever sees a whole object.
* The CDC sensor lists a bucket incrementally: a tick never lists the whole bucket, a new
  file in an earlier Kafka partition's folder is found on the next tick, and a file in a
  folder that sorts before everything seen is found within one pass of the sweep.
* The whole pipeline — landing on S3, sensor ticks, their Dagster runs (change logs,
  feature views, offline store on S3, Redis sync) — gives byte-identical offline history,
  the same Redis values and the same ``get_historical_features`` as on local folders.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from assets.feature_views import FEATURE_SERVICES, FEATURE_VIEWS
from conftest import ORDERS_DIR, current_hour, landing_name
from feature_platform.config import Settings
from feature_platform.demo.generator import generate_landing_zone
from feature_platform.feature_store import FeatureStore
from feature_platform.orchestration.resources import LandingZoneResource, OfflineStoreResource
from feature_platform.registry import Registry
from feature_platform.storage import Store
from test_cdc_sensor import ORDERS_KEY, harness, order_line, requested_hours
from test_pipeline import projects  # noqa: F401  (the fixture: Redis keys of each project removed after)

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("FP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BUCKET = "feature-platform-test"
UTC = timezone.utc


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class S3Server:
    endpoint: str
    environment: dict[str, str]  # what a deployment sets to reach it

    def client(self):
        if not hasattr(self, "_client"):
            import boto3

            self._client = boto3.session.Session().client("s3", endpoint_url=self.endpoint, region_name="us-east-1")
        return self._client

    def put(self, key: str, data: bytes) -> None:
        self.client().put_object(Bucket=BUCKET, Key=key, Body=data)

    def keys(self, prefix: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", [])]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server in its own process on a free loopback port, stopped at teardown."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{port}"
    environment = {"FP_S3_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
                   "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1"}
    saved = {name: os.environ.get(name) for name in environment}
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, f"moto server exited: {Path(log.name).read_text()[-2000:]}"
            try:
                urllib.request.urlopen(endpoint, timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not answer within 30 s"
                time.sleep(0.2)
        os.environ.update(environment)
        server = S3Server(endpoint, environment)
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def s3_uri(prefix: str) -> str:
    return f"s3://{BUCKET}/{prefix}"


# -- Store ------------------------------------------------------------------------------------

TRICKY_PATHS = [  # S3 orders keys by bytes: "a-b" < "a/x" < "a0"; folders are only key prefixes
    "a-b", "a/x", "a/y/z", "a0", "b/.hidden.tmp", "b/c.json", "b/c.json.partial", "b/_temp/d", "b/e",
    "topics/t/partition=0/t+0+0000000001.json", "topics/t/partition=0/t+0+0000000002.json",
    "topics/t/partition=1/t+1+0000000001.json", "topics/t/partition=10/t+10+0000000001.json",
    "topics/t/partition=2/t+2+0000000001.json", "über/ü.json", "z",
]


def test_store_on_s3_lists_after_a_key_exactly_as_a_folder_does(s3, tmp_path, monkeypatch):
    prefix = f"store-{uuid.uuid4().hex[:8]}"
    remote, local = Store(s3_uri(prefix)), Store(str(tmp_path / "local"))
    for number, path in enumerate(TRICKY_PATHS):
        s3.put(f"{prefix}/{path}", f"{number}".encode())  # as a foreign writer would, temporary names too
        (tmp_path / "local" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "local" / path).write_bytes(f"{number}".encode())
    monkeypatch.setattr("feature_platform.storage.S3_PAGE_SIZE", 3)  # several ListObjectsV2 pages

    def listed(store, folder, after, limit):
        listing = store.list_after(folder, after, limit)
        return [f.path for f in listing.files], listing.last_key, listing.complete

    for folder in ("", "a", "b", "topics/t", "topics/t/partition=1", "missing"):
        for after in (None, "a", "a-b", "a/x", "b/c.json", "topics/t/partition=0/t+0+0000000001.json", "zz"):
            for limit in (2, 5, 100):
                assert listed(remote, folder, after, limit) == listed(local, folder, after, limit), (folder, after, limit)
    everything = [f.path for f in remote.list_after("", None, 100).files]
    assert everything == sorted(p for p in TRICKY_PATHS if p not in (
        "b/.hidden.tmp", "b/c.json.partial", "b/_temp/d"))
    assert sorted(f.path for f in remote.list_files()) == everything  # pyarrow's listing agrees
    assert remote.read_bytes("topics/t/partition=10/t+10+0000000001.json") == b"12"


def test_store_on_s3_writes_whole_objects_only(s3):
    """Overwrites race a reader: every read is one whole version, never a mix or a prefix."""
    store = Store(s3_uri(f"atomic-{uuid.uuid4().hex[:8]}"))
    versions = [bytes([65 + n]) * (3 * 1024 * 1024) for n in range(4)]  # 3 MiB: larger than one upload part
    store.write_bytes("features/v/2026-01-01T00.parquet", versions[0])
    stop, seen, errors = threading.Event(), set(), []

    def read():
        while not stop.is_set():
            data = store.read_bytes("features/v/2026-01-01T00.parquet")
            if data not in versions:
                errors.append((len(data), data[:1], data[-1:]))
            seen.add(data[:1])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(12):
            store.write_bytes("features/v/2026-01-01T00.parquet", versions[round_ % 4])
    finally:
        stop.set()
        reader.join()
    assert not errors, f"a reader saw a partial object: {errors[:3]}"
    assert len(seen) >= 2
    # no folder markers, no temporary objects: exactly the one key
    assert s3.keys(store.root.split("/", 1)[1]) == [f"{store.root.split('/', 1)[1]}/features/v/2026-01-01T00.parquet"]


def test_s3_settings_are_checked_and_named():
    from feature_platform.config import S3Options

    options = S3Options.from_env({"FP_S3_ENDPOINT_URL": "http://minio:9000/", "AWS_DEFAULT_REGION": "eu-west-3"})
    assert options == S3Options(endpoint_url="http://minio:9000", region="eu-west-3")
    assert S3Options.from_env({}) == S3Options(endpoint_url=None, region="us-east-1")
    with pytest.raises(ValueError, match="FP_S3_ENDPOINT_URL='minio:9000' must start with http"):
        S3Options.from_env({"FP_S3_ENDPOINT_URL": "minio:9000"})
    with pytest.raises(ValueError, match="names no bucket"):
        Store("s3://")


def test_an_unreachable_bucket_is_a_sensor_skip_not_a_crash(s3):
    stores = S3Stores(f"s3://no-such-bucket-{uuid.uuid4().hex[:8]}/landing", s3_uri("offline-unreachable"))
    result = harness(stores).tick(None)
    assert result.run_requests == []
    assert "is unreadable" in result.skip_message and "will retry" in result.skip_message
    assert result.cursor is None  # nothing was taken, nothing is forgotten


# -- the CDC sensor on a bucket ----------------------------------------------------------------

@dataclass
class S3Stores:
    landing_uri: str
    offline_uri: str

    @property
    def resources(self) -> dict:
        return {"landing": LandingZoneResource(uri=self.landing_uri),
                "offline": OfflineStoreResource(uri=self.offline_uri, project="test")}


def test_sensor_lists_a_bucket_incrementally(s3):
    prefix = f"sensor-{uuid.uuid4().hex[:8]}"
    stores = S3Stores(s3_uri(f"{prefix}/landing"), s3_uri(f"{prefix}/offline"))
    h = harness(stores, keys_per_listing=4)
    base = current_hour() - timedelta(days=5)

    def land(partition: int, offset: int, hour: datetime, topic_dir: str = ORDERS_DIR) -> None:
        relative = landing_name(partition, offset).replace(ORDERS_DIR, topic_dir)
        s3.put(f"{prefix}/landing/{relative}", (order_line(offset * 10 + partition, offset * 10 + partition + 1,
                                                           hour) + "\n").encode())

    hours = {}
    for partition in range(3):
        for offset in range(4):
            hours[(partition, offset)] = base + (partition * 4 + offset) * timedelta(hours=1)
            land(partition, offset, hours[(partition, offset)])

    def tick_until_quiet(cursor, limit):
        requested, listed = set(), []
        for _ in range(limit):
            result = h.tick(cursor)
            cursor = result.cursor
            if result.run_requests:
                requested |= requested_hours(result.run_requests)[ORDERS_KEY]
            else:
                listed.append(int(result.skip_message.split(" among ")[1].split()[0]))
                if len(listed) >= 2:
                    return cursor, requested, listed
        raise AssertionError(f"still finding files after {limit} ticks")

    cursor, requested, listed = tick_until_quiet(None, 12)
    assert requested == set(hours.values())
    assert all(n <= 3 * 4 for n in listed), f"quiet ticks listed {listed}: more than one slice each"

    # partition 0 gets its next file: it sorts before everything in partition=1 and 2, but
    # after partition=0's mark, so the very next tick finds it
    land(0, 4, base + 40 * timedelta(hours=1))
    result = h.tick(cursor)
    assert requested_hours(result.run_requests)[ORDERS_KEY] == {base + 40 * timedelta(hours=1)}
    cursor = result.cursor

    # a folder nobody has seen, sorting before every other: the sweep finds it within one pass
    late = base - timedelta(hours=30)
    early_folder = f"{ORDERS_DIR}/partition=0-backfill"  # "-" sorts before "/": first of all
    s3.put(f"{prefix}/landing/{early_folder}/{ORDERS_DIR.split('/')[1]}+0+0000000000.json",
           (order_line(999, 999, late) + "\n").encode())
    found_after = None
    for ticks in range(1, 3 * 4 + 6):
        result = h.tick(cursor)
        cursor = result.cursor
        if result.run_requests:
            found_after = ticks
            assert requested_hours(result.run_requests)[ORDERS_KEY] == {late}
            break
    assert found_after is not None, "the sweep never found the file in an early folder"


# -- the whole pipeline ------------------------------------------------------------------------

def drive_sensor_pipeline(as_of: datetime, max_ticks: int = 20) -> None:
    """What the daemon does with this deployment (``definitions.py``, configured from the
    environment): tick the CDC sensor, launch each run it requests as a Dagster run, and go
    on until a tick finds no new landing file. Runs carry the same as-of instant, so two
    deployments fed the same batches write the same bytes."""
    import dagster as dg

    from definitions import defs
    from feature_platform.orchestration.feature_view_assets import AS_OF_TAG
    from resources import build_resources

    sensor = defs.get_sensor_def("cdc_landing_sensor")
    job = defs.resolve_implicit_global_asset_job_def()
    instance = dg.DagsterInstance.ephemeral()
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    sensor_resources = {key: build_resources()[key] for key in ("landing", "offline")}  # as the daemon: only its own
    cursor, runs = None, 0
    for _ in range(max_ticks):
        context = dg.build_sensor_context(instance=instance, definitions=defs, resources=sensor_resources,
                                          cursor=cursor, sensor_name=sensor.name)
        result = sensor.evaluate_tick(context)
        for request in result.run_requests:
            run = job.execute_in_process(run_config=quiet, instance=instance, asset_selection=request.asset_selection,
                                         tags={**request.tags, AS_OF_TAG: as_of.isoformat()}, raise_on_error=False)
            failures = [event.message for event in run.all_events if event.is_failure]
            assert run.success, f"run for {request.run_key} failed: {failures[-3:]}"
            runs += 1
        cursor = result.cursor
        if not result.run_requests and "no new landing files" in (result.skip_message or ""):
            print(json.dumps({"runs": runs}))
            return
    raise SystemExit(f"the sensor still found files after {max_ticks} ticks")


def run_deployments(environments: list[dict[str, str]], cwd: Path, as_of: datetime) -> list[dict]:
    """``drive_sensor_pipeline`` in processes of their own (side by side: the deployment reads
    its settings at import), one per environment."""
    processes = []
    for number, environment in enumerate(environments):
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_HOME", "AWS_"))}
        clean.update(PYTHONPATH=str(REPO), FP_REDIS_URL=REDIS_URL, **environment)
        output = open(cwd / f"deployment-{number}.log", "w+")
        processes.append((subprocess.Popen([sys.executable, __file__, as_of.isoformat()], cwd=cwd, env=clean,
                                           stdout=output, stderr=subprocess.STDOUT, text=True), output))
    results = []
    try:
        for process, output in processes:
            process.wait(timeout=500)
            output.seek(0)
            text = output.read()
            assert process.returncode == 0, text[-6000:]
            results.append(json.loads(text.strip().splitlines()[-1]))
    finally:
        for process, output in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
            output.close()
    return results


@pytest.mark.timeout(600)
def test_the_pipeline_on_s3_equals_the_pipeline_on_folders(s3, tmp_path, projects):  # noqa: F811
    as_of = datetime.now(UTC).replace(second=0, microsecond=0)
    start = as_of.replace(minute=0) - timedelta(hours=10)  # the 4 hours before it fold into the first partition
    landing = tmp_path / "landing"
    generate_landing_zone(landing, customers=20, products=6, weeks=14 / 168, orders_per_day=150,
                          end=as_of - timedelta(minutes=15), seed=13)
    prefix = f"pipeline-{uuid.uuid4().hex[:8]}"
    for path in sorted(p for p in landing.rglob("*") if p.is_file()):  # as a Kafka Connect S3 sink would
        s3.put(f"{prefix}/landing/{path.relative_to(landing).as_posix()}", path.read_bytes())
    on_s3, on_disk = projects("s3"), projects("disk")
    common = {"FP_PARTITIONS_START": start.isoformat()}
    s3_data_dir = tmp_path / "s3-run-data"
    s3_runs, disk_runs = run_deployments([
        {**common, **s3.environment, "FP_PROJECT": on_s3, "FP_DATA_DIR": str(s3_data_dir),
         "FP_LANDING_URI": s3_uri(f"{prefix}/landing"), "FP_OFFLINE_URI": s3_uri(f"{prefix}/offline")},
        {**common, "FP_PROJECT": on_disk, "FP_DATA_DIR": str(tmp_path / "disk"), "FP_LANDING_URI": str(landing)},
    ], tmp_path, as_of)
    assert s3_runs["runs"] >= 1 and s3_runs == disk_runs
    assert not s3_data_dir.exists(), "the S3 deployment wrote to local disk"
    offline_keys = s3.keys(f"{prefix}/offline/{on_s3}/")
    assert any("/change_logs/" in key for key in offline_keys) and any("/features/" in key for key in offline_keys)

    registry = Registry.of(FEATURE_VIEWS, FEATURE_SERVICES)
    remote = FeatureStore(Settings(landing_uri=s3_uri(f"{prefix}/landing"), offline_uri=s3_uri(f"{prefix}/offline"),
                                   redis_url=REDIS_URL, project=on_s3, partitions_start=start), registry)
    local = FeatureStore(Settings(landing_uri=str(landing), offline_uri=str(tmp_path / "disk" / "offline"),
                                  redis_url=REDIS_URL, project=on_disk, partitions_start=start), registry)
    assert remote.offline.store.s3 is not None and local.offline.store.is_local
    for view in FEATURE_VIEWS:
        hours = remote.offline.partition_hours(view)
        assert hours and hours == local.offline.partition_hours(view), view.name
        for hour in hours:
            path = remote.offline.partition_path(view, hour)
            assert remote.offline.store.read_bytes(path) == local.offline.store.read_bytes(path), (view.name, hour)
        assert remote.online.synced_through(view) == local.online.synced_through(view) == as_of, view.name

        keys = sorted(set(remote.offline.read_history(view, start).column(view.entity.join_key).to_pylist()))
        assert len(keys) > 3, view.name
        references = [f"{view.name}:{name}" for name in view.feature_names]
        rows = [{view.entity.join_key: k} for k in [*keys, 999_999]]
        pd.testing.assert_frame_equal(remote.get_online_features(rows, features=references, request_time=as_of),
                                      local.get_online_features(rows, features=references, request_time=as_of))

        moments = [start - timedelta(hours=1), start + timedelta(hours=3, minutes=13), as_of - timedelta(hours=2),
                   as_of]
        entity_df = pd.DataFrame([{view.entity.join_key: k, "event_timestamp": t} for k in keys for t in moments])
        from_s3 = remote.get_historical_features(entity_df, features=references)
        from_disk = local.get_historical_features(entity_df, features=references)
        pd.testing.assert_frame_equal(from_s3, from_disk)
        stored = [name for name in view.feature_names if name in view.stored_dtypes()]
        assert from_s3[stored].notna().any().any(), f"{view.name}: no value was read at all"


if __name__ == "__main__":  # run_deployment's child process
    drive_sensor_pipeline(datetime.fromisoformat(sys.argv[1]))
