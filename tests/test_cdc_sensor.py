"""The CDC sensor, evaluated the way the Dagster daemon does it (``evaluate_tick``) on real
resources over tmp dirs, with no mocks.

* The first tick requests runs whose partition ranges (``dagster/asset_partition_range_start``
  / ``_end``) cover exactly the hours the new files touch, per table, selecting the touched
  change logs and everything downstream of them; hours before the first partition go to the
  first partition, hours that do not exist yet are left to the hourly schedule.
* A tick with the returned cursor and no new files skips; a late file in an *old* folder is
  still found and requests its old hours; a fresh context with only the stored cursor string
  (a daemon restart) never re-announces; a tick whose cursor was lost (it crashed) is redone
  by the next tick with the same files and run keys; ``max_files_per_tick`` defers files
  without losing any; an unreadable landing zone is a SkipReason that keeps the cursor.
* Scale: 100,000 one-line files in 1,000 folders. The first tick over all of them finishes
  well inside Dagster's 60 s; over an already-announced zone a tick lists only a slice
  (incremental listing), and one new file in an old folder is found within one pass.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

from assets.sources import customers, orders
from conftest import (
    CAPTURED,
    ORDERS_DIR,
    UTC,
    current_hour,
    dumps,
    landing_name,
    ms,
    order_message,
    order_row,
    write_landing_file,
)
from feature_platform.cdc.change_log import file_id
from feature_platform.orchestration.cdc_sensor import AnnouncementLog, build_cdc_sensor
from feature_platform.orchestration.change_log_assets import build_change_log_asset, change_log_key
from feature_platform.orchestration.partitions import hourly_partitions, partition_key_of, partition_start

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"
HOUR = timedelta(hours=1)
ORDERS_KEY = change_log_key(orders)
CUSTOMERS_KEY = change_log_key(customers)
FEATURES_KEY = dg.AssetKey(["features", "order_stats"])
ONLINE_KEY = dg.AssetKey(["online", "order_stats"])


@dataclass
class Harness:
    sensor: dg.SensorDefinition
    defs: dg.Definitions
    stores: object
    start: datetime

    def tick(self, cursor: str | None, instance: dg.DagsterInstance | None = None):
        context = dg.build_sensor_context(
            instance=instance or dg.DagsterInstance.ephemeral(), definitions=self.defs,
            resources=self.stores.resources, cursor=cursor, sensor_name=self.sensor.name,
        )
        return self.sensor.evaluate_tick(context)


def harness(stores, *, days: int = 10, **sensor_options) -> Harness:
    # These ticks follow each other within a second: sweep on every one of them unless a test
    # says otherwise (the deployed sensor sweeps at most every 30 s; see the test of that below).
    sensor_options.setdefault("sweep_interval_seconds", 0)
    start = current_hour() - timedelta(days=days)
    partitions = hourly_partitions(start)
    change_logs = [build_change_log_asset(table, partitions) for table in (orders, customers)]

    @dg.asset(key=FEATURES_KEY, deps=[ORDERS_KEY], partitions_def=partitions,
              backfill_policy=dg.BackfillPolicy.single_run())
    def order_stats():
        return None

    @dg.asset(key=ONLINE_KEY, deps=[FEATURES_KEY], partitions_def=partitions,
              backfill_policy=dg.BackfillPolicy.single_run())
    def online_order_stats():
        return None

    sensor = build_cdc_sensor([orders, customers], partitions, **sensor_options)
    defs = dg.Definitions(assets=[*change_logs, order_stats, online_order_stats], sensors=[sensor],
                          resources=stores.resources)
    return Harness(sensor, defs, stores, start)


def order_line(pk: int, lsn: int, commit: datetime) -> str:
    return dumps(order_message("c", lsn=lsn, commit_ms=ms(commit), tx_id=lsn, after=order_row(pk)))


def customer_line(pk: int, lsn: int, commit: datetime) -> str:
    message = json.loads((CAPTURED / "pg-update-customer-toast-placeholder-replica-identity-default.json").read_text())
    message["payload"]["after"]["id"] = pk
    message["payload"]["source"].update(ts_ms=ms(commit), lsn=lsn)
    return dumps(message)


def customers_name(partition: int, offset: int) -> str:
    return landing_name(partition, offset, topic=customers.topic)


def requested_hours(run_requests) -> dict[dg.AssetKey, set[datetime]]:
    """Asset key -> every hour some run request covers for it."""
    hours: dict[dg.AssetKey, set[datetime]] = {}
    for request in run_requests:
        first, last = partition_start(request.tags[RANGE_START]), partition_start(request.tags[RANGE_END])
        assert first <= last and request.partition_key is None
        covered = set()
        while first <= last:
            covered.add(first)
            first += HOUR
        for key in request.asset_selection:
            assert not hours.get(key, set()) & covered, f"{key} requested twice for the same hour"
            hours.setdefault(key, set()).update(covered)
    return hours


def test_first_tick_requests_exactly_the_touched_hours(stores):
    h = harness(stores)
    t = h.start + timedelta(days=3, hours=4)
    write_landing_file(stores.landing_dir, landing_name(0, 0), [
        order_line(1, 100, t + timedelta(minutes=5)),
        order_line(2, 101, t + HOUR + timedelta(minutes=59, seconds=59)),
        order_line(3, 102, h.start - timedelta(days=30)),  # committed before the first partition
    ])
    write_landing_file(stores.landing_dir, landing_name(1, 0), [order_line(4, 103, t + 4 * HOUR)])
    write_landing_file(stores.landing_dir, customers_name(0, 0), [customer_line(1001, 104, t + HOUR)])
    write_landing_file(stores.landing_dir, landing_name(2, 0), [order_line(5, 105, current_hour() + 3 * HOUR)])
    write_landing_file(stores.landing_dir, f"{ORDERS_DIR}/notes/README.txt", ["not a landing file"])

    result = h.tick(None)
    assert result.skip_message is None
    hours = requested_hours(result.run_requests)
    orders_hours = {h.start, t, t + HOUR, t + 4 * HOUR}  # not the future hour: the schedule takes it
    assert hours == {ORDERS_KEY: orders_hours, FEATURES_KEY: orders_hours, ONLINE_KEY: orders_hours,
                     CUSTOMERS_KEY: {t + HOUR}}
    for request in result.run_requests:
        selection = set(request.asset_selection)
        assert selection in ({ORDERS_KEY, FEATURES_KEY, ONLINE_KEY}, {CUSTOMERS_KEY})
        assert request.tags["dagster/sensor_name"] == h.sensor.name
    ranges = sorted((r.tags[RANGE_START], r.tags[RANGE_END], len(r.asset_selection)) for r in result.run_requests)
    assert ranges == sorted([
        (partition_key_of(h.start), partition_key_of(h.start), 3),
        (partition_key_of(t), partition_key_of(t + HOUR), 3),
        (partition_key_of(t + 4 * HOUR), partition_key_of(t + 4 * HOUR), 3),
        (partition_key_of(t + HOUR), partition_key_of(t + HOUR), 1),
    ])
    assert len({r.run_key for r in result.run_requests}) == len(result.run_requests)

    # the next tick with the returned cursor has nothing to do
    again = h.tick(result.cursor)
    assert again.run_requests == [] and again.skip_message.startswith("no new landing files among 4")


def test_a_late_file_in_an_old_folder_requests_its_old_hours(stores):
    h = harness(stores)
    recent = current_hour() - 2 * HOUR
    write_landing_file(stores.landing_dir, landing_name(1, 0), [order_line(1, 500, recent)])
    first = h.tick(None)
    assert requested_hours(first.run_requests)[ORDERS_KEY] == {recent}
    assert h.tick(first.cursor).run_requests == []

    # a batch from days ago lands late, in the old partition=0 folder, with an old mtime
    old = h.start + timedelta(days=2, hours=7)
    late = write_landing_file(stores.landing_dir, landing_name(0, 0), [
        order_line(2, 10, old + timedelta(minutes=1)), order_line(3, 11, old + HOUR)],
        mtime=old + timedelta(minutes=30))
    assert late.stat().st_mtime < (recent.timestamp())
    second = h.tick(first.cursor)
    assert requested_hours(second.run_requests)[ORDERS_KEY] == {old, old + HOUR}
    assert h.tick(second.cursor).run_requests == []


def test_ticking_often_does_not_sweep_more_often(stores):
    """Ticks every few seconds list what is new (frontier, active folders) on every tick, but the
    rolling sweep of the whole zone, which finds late files in old folders, at most once per
    sweep_interval_seconds: object storage is not listed 6× as much for ticking 6× as often."""
    h = harness(stores, sweep_interval_seconds=3600)
    recent = current_hour() - 2 * HOUR
    write_landing_file(stores.landing_dir, landing_name(1, 0), [order_line(1, 500, recent)])
    first = h.tick(None)  # a first tick sweeps: nothing has been swept yet
    assert requested_hours(first.run_requests)[ORDERS_KEY] == {recent}

    old = h.start + timedelta(days=2, hours=7)
    write_landing_file(stores.landing_dir, landing_name(0, 0), [order_line(2, 10, old + timedelta(minutes=1))])
    write_landing_file(stores.landing_dir, landing_name(1, 1), [order_line(3, 501, recent)])
    second = h.tick(first.cursor)
    # the new file after the frontier is taken at once; the late one in the old folder waits
    assert requested_hours(second.run_requests)[ORDERS_KEY] == {recent}
    assert h.tick(second.cursor).run_requests == []

    # once the sweep interval has passed (here: the cursor's last sweep an hour ago), it is found
    cursor = json.loads(second.cursor)
    cursor["last_sweep"] -= 3600
    third = h.tick(json.dumps(cursor))
    assert requested_hours(third.run_requests)[ORDERS_KEY] == {old}


def test_while_a_sensor_run_is_queued_new_files_wait_for_one_later_run(stores):
    """Back-pressure: ticking every 5 s with runs one at a time, a steady stream of batches must
    not queue runs faster than they finish. While one of the sensor's runs waits in the queue,
    a tick takes nothing; the files it left go into one run once the queue has moved."""
    h = harness(stores)
    recent = current_hour() - 2 * HOUR
    write_landing_file(stores.landing_dir, landing_name(0, 0), [order_line(1, 500, recent)])
    instance = dg.DagsterInstance.ephemeral()
    first = h.tick(None, instance)
    assert first.run_requests

    # the first run is queued behind another; two more batches land meanwhile
    location = RegisteredCodeLocationOrigin("feature_platform")  # a queued run names its code location
    instance.add_run(dg.DagsterRun(
        job_name="cdc_landing_sensor_job", run_id="queued-run", status=dg.DagsterRunStatus.QUEUED,
        tags={"dagster/sensor_name": h.sensor.name},
        remote_job_origin=RemoteJobOrigin(RemoteRepositoryOrigin(location, "__repository__"), "cdc_landing_sensor_job"),
    ))
    write_landing_file(stores.landing_dir, landing_name(0, 1), [order_line(2, 501, recent + HOUR)])
    write_landing_file(stores.landing_dir, landing_name(0, 2), [order_line(3, 502, recent + HOUR)])
    waiting = h.tick(first.cursor, instance)
    assert waiting.run_requests == [] and "still queued" in waiting.skip_message
    assert waiting.cursor == first.cursor  # nothing taken: the cursor stays where it was

    # the queued run has left the queue (here: canceled): the next tick takes both files, in one run
    instance.report_run_canceled(instance.get_run_by_id("queued-run"))
    later = h.tick(first.cursor, instance)
    assert len(later.run_requests) == 1
    assert requested_hours(later.run_requests)[ORDERS_KEY] == {recent + HOUR}


def test_restart_with_only_the_stored_cursor_never_reannounces(stores):
    h = harness(stores)
    t = h.start + timedelta(days=1)
    write_landing_file(stores.landing_dir, landing_name(0, 0), [order_line(1, 1, t)])
    stored_cursor = h.tick(None).cursor
    assert isinstance(stored_cursor, str)

    # a new daemon: a fresh instance, fresh definitions, a fresh context, only the cursor string
    restarted = harness(stores)
    after_restart = restarted.tick(stored_cursor, dg.DagsterInstance.ephemeral())
    assert after_restart.run_requests == [] and "no new landing files" in after_restart.skip_message
    write_landing_file(stores.landing_dir, landing_name(0, 1), [order_line(2, 2, t + 5 * HOUR)])
    fresh = harness(stores).tick(after_restart.cursor, dg.DagsterInstance.ephemeral())
    assert requested_hours(fresh.run_requests)[ORDERS_KEY] == {t + 5 * HOUR}
    assert harness(stores).tick(fresh.cursor).run_requests == []


def test_a_crashed_tick_is_redone_by_the_next_tick(stores):
    h = harness(stores)
    t = h.start + timedelta(days=4)
    write_landing_file(stores.landing_dir, landing_name(0, 0), [order_line(1, 1, t)])
    committed = h.tick(None).cursor

    write_landing_file(stores.landing_dir, landing_name(0, 1), [order_line(2, 2, t + 2 * HOUR)])
    write_landing_file(stores.landing_dir, customers_name(0, 0), [customer_line(1002, 3, t + 3 * HOUR)])
    crashed = h.tick(committed)  # its runs and cursor never reached the daemon's storage
    assert len(crashed.run_requests) == 2

    redone = h.tick(committed)
    assert requested_hours(redone.run_requests) == requested_hours(crashed.run_requests)
    assert requested_hours(redone.run_requests)[ORDERS_KEY] == {t + 2 * HOUR}
    # same run keys: the daemon launches each run once even though the work was done twice
    assert sorted(r.run_key for r in redone.run_requests) == sorted(r.run_key for r in crashed.run_requests)
    assert h.tick(redone.cursor).run_requests == []


def test_files_beyond_max_files_per_tick_wait_for_the_next_tick(stores):
    h = harness(stores, max_files_per_tick=2)
    base = h.start + timedelta(days=5)
    expected = {}
    for number in range(5):  # five files, five distinct hours, landing one after the other
        hour = base + 3 * number * HOUR
        path = write_landing_file(stores.landing_dir, landing_name(number % 2, number), [order_line(number, number, hour)],
                                  mtime=datetime.now(UTC) - timedelta(minutes=10 - number))
        expected[hour] = path
    cursor, per_tick = None, []
    for _ in range(5):
        result = h.tick(cursor)
        cursor = result.cursor
        if not result.run_requests:
            assert "no new landing files" in result.skip_message
            break
        per_tick.append(requested_hours(result.run_requests)[ORDERS_KEY])
    assert [len(hours) for hours in per_tick] == [2, 2, 1]
    hours = [hour for tick_hours in per_tick for hour in sorted(tick_hours)]
    assert hours == sorted(expected)  # oldest files first, each exactly once, none lost


def test_unreadable_landing_zone_is_a_skip_that_keeps_the_cursor(stores, tmp_path):
    h = harness(stores)
    write_landing_file(stores.landing_dir, landing_name(0, 0), [order_line(1, 1, h.start + HOUR)])
    cursor = h.tick(None).cursor
    not_a_folder = tmp_path / "landing-is-a-file"
    not_a_folder.write_text("x")
    broken = harness(type(stores)(stores.root, not_a_folder, stores.offline_dir))
    result = broken.tick(cursor)
    assert result.run_requests == []
    assert "unreadable" in result.skip_message and "will retry" in result.skip_message
    assert result.cursor == cursor  # nothing was taken, nothing is forgotten


def test_one_tick_over_100k_files_stays_well_inside_60_seconds(stores):
    h = harness(stores)
    hour = h.start + timedelta(days=6)
    line = (order_line(1, 1, hour + timedelta(minutes=1)) + "\n").encode()
    paths = []
    made = time.monotonic()
    for folder in range(1000):
        directory = stores.landing_dir / ORDERS_DIR / f"partition={folder}"
        directory.mkdir(parents=True)
        for offset in range(100):
            name = f"{orders.topic}+{folder}+{offset:010d}.json"
            (directory / name).write_bytes(line)
            paths.append(f"{ORDERS_DIR}/partition={folder}/{name}")
    assert time.monotonic() - made < 60  # making the zone is not what is measured

    # the very first tick over 100,000 new files: bounded by max_files_per_tick and its time budget
    began = time.monotonic()
    first = h.tick(None)
    first_seconds = time.monotonic() - began
    assert first_seconds < 60, f"first tick took {first_seconds:.1f} s"
    assert requested_hours(first.run_requests)[ORDERS_KEY] == {hour}

    # everything announced, as after ~50 ticks of 2,000 files (one announcement file per tick)
    log = AnnouncementLog(stores.offline)
    log.promote(json.loads(first.cursor)["pending_tick"])
    taken = log.announced()
    assert 0 < len(taken) < len(paths)
    rest = [file_id(p) for p in paths if file_id(p) not in taken]
    for number in range(0, len(rest), 2000):
        log.write_pending(f"preannounced-{number}", rest[number:number + 2000])
        log.promote(f"preannounced-{number}")
    quiet = h.tick(first.cursor)
    assert quiet.run_requests == [] and "no new landing files among" in quiet.skip_message
    listed = int(quiet.skip_message.split(" among ")[1].split()[0])
    assert listed < 20_000, f"a tick listed {listed} files: it must list incrementally, not the whole zone"

    # one more file lands, late, in an old folder: the incremental listing (frontier, active
    # folders, rolling sweep) finds it within one pass, and every tick stays well inside 60 s
    late_hour = hour - timedelta(days=3)
    write_landing_file(stores.landing_dir, landing_name(17, 999_999), [order_line(2, 2, late_hour)])
    cursor, ticks, slowest = quiet.cursor, 0, 0.0
    while True:
        began = time.monotonic()
        result = h.tick(cursor)
        slowest = max(slowest, time.monotonic() - began)
        ticks += 1
        if result.run_requests:
            break
        assert "no new landing files" in result.skip_message
        assert ticks <= 2 * len(paths) // 5000 + 2, "the late file was not found within one pass"
        cursor = result.cursor
    assert slowest < 20, f"a tick over 100,001 files took {slowest:.1f} s"
    assert requested_hours(result.run_requests) == {ORDERS_KEY: {late_hour}, FEATURES_KEY: {late_hour},
                                                    ONLINE_KEY: {late_hour}}
    print(f"\n100k-file zone: first tick {first_seconds:.1f} s; late file found after {ticks} tick(s), "
          f"slowest {slowest:.1f} s")
