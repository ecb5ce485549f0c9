"""Crash safety: ``kill -9`` a real ``feature-platform materialize`` run while it writes an
offline partition and while it syncs Redis; the re-run ends byte-identical to a run that was
never interrupted, and no reader ever sees a half-written partition.

How the kills hit those moments every time: the run is started with ``FP_FAULT_PAUSE_AT``
(feature_platform/faults.py), so it stands still exactly

* after writing the complete temporary file of ``features/customer_orders/2026-03-01T05``
  and before renaming it over the final name (``offline-write``) — the only window in which
  a half-published partition could exist; and
* after every ``customer_orders`` entity's row is in Redis and before its ``synced_through``
  moves, with other views not synced yet (``online-sync``) — Redis is then ahead of its
  watermark, and partly synced across views.

Timing alone (a big partition, a sleep) would hit those windows only sometimes; a pause
point makes the test deterministic on any machine, and it is inert in real deployments.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from assets.feature_views import customer_orders
from feature_platform.offline_store import OfflineFeatureStore
from feature_platform.online_store import META, SYNCED
from feature_platform.storage import Store
from reliability import (
    MATERIALIZE,
    SHARED_REDIS,
    START,
    cli_environment,
    drop_redis_project,
    kill_group,
    offline_snapshot,
    redis_snapshot,
    run_cli,
    small_demo_landing,
    start_cli,
    temporary_files,
    wait_for_pause,
)

PAUSED_HOUR = START + timedelta(hours=5)
ORDERS_SYNCED = f"customer_orders:{SYNCED}"


@pytest.mark.timeout(300)
def test_kill_9_mid_write_and_mid_sync_then_rerun_is_byte_identical(tmp_path):
    data = tmp_path / "data"
    small_demo_landing(data / "landing")
    suffix = uuid.uuid4().hex[:8]
    reference, crashed = f"ref_{suffix}", f"crash_{suffix}"
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    try:
        done = run_cli(cli_environment(data, reference, SHARED_REDIS), *MATERIALIZE)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
        expected_offline = offline_snapshot(data / "offline" / reference)
        expected_redis = redis_snapshot(SHARED_REDIS, reference)
        assert any(path.startswith("features/customer_orders/") for path in expected_offline)
        assert expected_redis[ORDERS_SYNCED].startswith(b"packed-1")  # the reference run synced Redis

        # 1. kill -9 while features/customer_orders/<05h> is written but not yet published.
        crash_root = data / "offline" / crashed
        log = tmp_path / "run1.log"
        target = f"features/customer_orders/{PAUSED_HOUR:%Y-%m-%dT%H}.parquet"
        process = start_cli(cli_environment(data, crashed, SHARED_REDIS, FP_FAULT_PAUSE_AT=f"offline-write:{target}",
                                            FP_FAULT_DIR=str(pauses)), *MATERIALIZE, log=log)
        try:
            paused = wait_for_pause(pauses, "offline-write", process, log)
            assert paused["detail"].endswith(target)
            # The complete temporary file sits next to the final name, which does not exist yet.
            [temporary] = temporary_files(crash_root / "features" / "customer_orders")
            assert temporary.stat().st_size > 0 and not (crash_root / target).exists()
            readers_see_no_partial_partition(crash_root, temporary)
        finally:
            kill_group(process)
        assert process.returncode == -9

        # 2. kill -9 while online/customer_orders is synced but its synced_through has not moved.
        log = tmp_path / "run2.log"
        process = start_cli(cli_environment(data, crashed, SHARED_REDIS, FP_FAULT_PAUSE_AT="online-sync:customer_orders:written",
                                            FP_FAULT_DIR=str(pauses)), *MATERIALIZE, log=log)
        try:
            wait_for_pause(pauses, "online-sync", process, log)
            partial = redis_snapshot(SHARED_REDIS, crashed)
            order_keys = [k for k in partial
                          if k.startswith("customer_orders:") and k.split(":", 1)[1] not in (META, SYNCED)]
            assert order_keys, "the pause comes after the rows were written"
            assert ORDERS_SYNCED not in partial  # ...and before the watermark moved
        finally:
            kill_group(process)
        assert partial != expected_redis  # the kill really left Redis half-synced

        # The killed writer's temporary file is still there: kept while it could have a
        # writer (younger than an hour), so the re-run below finds it two hours old.
        assert temporary.exists()
        two_hours_ago = time.time() - 2 * 3600
        os.utime(temporary, (two_hours_ago, two_hours_ago))

        # 3. An ordinary re-run: offline byte-identical, Redis the same values, and the
        #    abandoned temporary file removed.
        again = run_cli(cli_environment(data, crashed, SHARED_REDIS), *MATERIALIZE)
        assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-4000:]
        assert offline_snapshot(crash_root) == expected_offline
        assert redis_snapshot(SHARED_REDIS, crashed) == expected_redis
        assert not temporary.exists()
        assert not list((crash_root / "features" / "customer_orders").glob(".*.tmp"))
    finally:
        drop_redis_project(SHARED_REDIS, reference)
        drop_redis_project(SHARED_REDIS, crashed)


def readers_see_no_partial_partition(root, temporary) -> None:
    """While the run stands between writing and renaming: every reader the platform uses, and
    plain DuckDB / pyarrow dataset reads of the folder, see only published partitions."""
    folder = root / "features" / "customer_orders"
    published = sorted(p.name for p in folder.glob("*.parquet"))
    assert published == [f"{START + timedelta(hours=h):%Y-%m-%dT%H}.parquet" for h in range(5)]

    history = OfflineFeatureStore(Store(str(root)))
    assert history.known_partitions(customer_orders, START) == [START + timedelta(hours=h) for h in range(5)]
    assert history.horizon(customer_orders, START) == PAUSED_HOUR  # nothing past the published hours is trusted
    rows = history.read_history(customer_orders, START)
    assert all(v < PAUSED_HOUR for v in rows.column("valid_from").to_pylist())

    connection = duckdb.connect()
    try:
        files = connection.execute(f"SELECT DISTINCT filename FROM read_parquet('{folder}/*.parquet', filename=true)").fetchall()
        assert temporary.name not in {f[0].rsplit('/', 1)[-1] for f in files}
        assert connection.execute(f"SELECT count(*) FROM read_parquet('{folder}/*.parquet')").fetchone()[0] == rows.num_rows
    finally:
        connection.close()
    dataset = ds.dataset(str(folder), format="parquet")  # ignores '.'/'_' names by default
    assert temporary.name not in {f.rsplit('/', 1)[-1] for f in dataset.files}
    assert dataset.to_table().num_rows == rows.num_rows


def test_only_our_own_abandoned_temporaries_older_than_an_hour_are_removed(tmp_path):
    """The sweep removes what a killed writer of this store left, and nothing else: not a
    temporary file a live writer may still be writing (younger than an hour), not another
    tool's hidden or temporary files, not the published files, not other folders."""
    store = Store(str(tmp_path))
    store.write_table("features/v/2026-01-01T00.parquet", pa.table({"a": [1]}))
    store.write_table("features/w/2026-01-01T00.parquet", pa.table({"a": [1]}))
    folder, other = tmp_path / "features" / "v", tmp_path / "features" / "w"
    abandoned = folder / f".2026-01-01T01.parquet.{uuid.uuid4().hex}.tmp"
    being_written = folder / f".2026-01-01T02.parquet.{uuid.uuid4().hex}.tmp"
    not_ours = [folder / ".keep", folder / "notes.tmp", folder / ".x.parquet.not-a-uuid.tmp",
                folder / f"visible.{uuid.uuid4().hex}.tmp"]
    elsewhere = other / f".2026-01-01T01.parquet.{uuid.uuid4().hex}.tmp"
    two_hours_ago = time.time() - 2 * 3600
    for path in [abandoned, being_written, *not_ours, elsewhere]:
        path.write_bytes(b"partial")
        if path is not being_written:
            os.utime(path, (two_hours_ago, two_hours_ago))

    assert store.remove_abandoned_temporaries("features/v") == [f"features/v/{abandoned.name}"]
    assert not abandoned.exists()
    assert being_written.exists() and elsewhere.exists() and all(path.exists() for path in not_ours)
    assert (folder / "2026-01-01T00.parquet").exists()
    assert store.remove_abandoned_temporaries("features/v") == []  # nothing left to remove
    assert store.remove_abandoned_temporaries("features/none") == []  # a folder not written yet
    # A live writer's file goes too once it is old enough for the caller's limit.
    assert store.remove_abandoned_temporaries("features/v", older_than=timedelta(0)) == [
        f"features/v/{being_written.name}"]
