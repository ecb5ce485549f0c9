"""The CDC sensor: sees each new landing file and requests the partitions its changes touch.

How it never misses a file, and never announces one twice:

* A file is *staged* once (decoded into the offline store, see ``cdc.change_log``) and
  *announced* once (its hours requested). Staging leaves a manifest per file; announcing
  leaves an entry in an announcement log under ``_cdc_sensor/announced/``.
* A tick lists the landing zone *incrementally* (``cdc.landing.scan_landing_zone``: after
  the frontier, after each active folder's last file, and a bounded slice of a rolling
  sweep), never the whole zone or bucket at once; the listing state rides in the cursor.
  It announces every listed file without an announcement, whatever its folder or its
  modification time — a file that lands late in an old folder is found by the sweep
  within one pass. Files are taken oldest first, a bounded number per tick, so a landing
  zone of 100k files (or a bucket of millions) stays well inside Dagster's 60 s limit.
* The log entry for a tick's files is written at the start of the *next* tick, from the
  cursor: Dagster commits a cursor only after the tick's runs were submitted, so a tick
  that dies half-way announces nothing and its files are simply taken again. Run keys
  derived from the files make such a repeat harmless.

How a landed batch reaches Redis quickly (issue #8's freshness figure, ``bench/freshness.py``):

* The sensor ticks on every round of the daemon's sensor loop (every 5 s), not every 30 s.
  What a tick reads stays small: the incremental listing, the announcement log read once per
  file (``AnnouncementLog`` caches the immutable entries it has read), and the rolling sweep at
  most once per ``sweep_interval_seconds`` rather than on every tick.
* Its runs are runs of ``<sensor>_job``, an asset job with the *in-process* executor: a CDC
  run is a handful of small steps (change logs, then views, then their online tables), and
  the default multiprocess executor starting a Python process per step cost more than the
  steps' work. Backfills and the hourly schedule keep the default executor.
* Within a run, a view's online step goes as soon as its history is written, before the next
  view's history (``dagster/priority`` op tags on the feature-view assets, see
  ``feature_view_assets``).
* Back-pressure: the runs go one at a time (the run queue's limit on this sensor's tag), so
  while one of its runs waits in the queue a tick takes nothing; what lands meanwhile goes
  into one later run instead of a run per tick piling up behind a slow one.
"""


import hashlib
import json
import time
from datetime import datetime

import dagster as dg
from dagster._core.definitions.data_version import DATA_VERSION_TAG
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    SENSOR_NAME_TAG,
)

from feature_platform.cdc.change_log import ChangeLog, file_id, parse_hour
from feature_platform.cdc.landing import ScanState, scan_landing_zone
from feature_platform.feature_view import FeatureView
from feature_platform.offline_store import OfflineFeatureStore
from feature_platform.orchestration.change_log_assets import change_log_key, topic_key
from feature_platform.orchestration.partitions import contiguous_ranges, partition_key_of
from feature_platform.orchestration.resources import LandingZoneResource, OfflineStoreResource
from feature_platform.sources import SourceTable
from feature_platform.storage import Store

ANNOUNCED_PREFIX = "_cdc_sensor/announced"


PENDING_PREFIX = "_cdc_sensor/pending"

# The Dagster daemon evaluates sensors in a loop that comes round every 5 s at most
# (dagster._daemon.sensor.MIN_INTERVAL_LOOP_TIME). A minimum interval under that lets the sensor
# tick on every round; 5 itself would skip every other round, because the interval is measured
# from the previous tick's start, a moment after its round began.
DEFAULT_MINIMUM_INTERVAL_SECONDS = 3

# The rolling sweep (a slice of up to keys_per_listing keys of the whole zone) only finds files
# that land late in old folders; it keeps the cadence the sensor had when it ticked every 30 s,
# so ticking more often does not multiply the listing requests sent to object storage.
DEFAULT_SWEEP_INTERVAL_SECONDS = 30.0

# Announcement-log entries already read: per log (its full path), entry (path, size, mtime) ->
# its ids. An entry is never rewritten (a tick's file is named by the hash of its ids, a merged
# file by the hash of its content), so a tick lists the log but reads only entries it has not
# seen; ticking every 5 s then costs one listing, not a GET of every entry.
_ANNOUNCED_CACHE: dict[str, dict[tuple, frozenset[str]]] = {}


class AnnouncementLog:
    """Which landing files have had their partitions requested (one small JSON file per tick).

    A tick writes its file ids as *pending*; the next tick, seeing that tick's key in the
    committed cursor, promotes them to *announced*. A pending list that no cursor names
    (its tick died) is never promoted, so those files are taken again.
    """

    def __init__(self, offline: Store):
        self.offline = offline

    def announced(self, compact_above: int = 64) -> set[str]:
        ids: set[str] = set()
        entries = self.offline.list_files(ANNOUNCED_PREFIX, recursive=False)
        seen = _ANNOUNCED_CACHE.get(self.offline.full_path(ANNOUNCED_PREFIX), {})
        current = {}
        for entry in entries:
            key = (entry.path, entry.size, entry.mtime_ns)
            current[key] = seen.get(key) or frozenset(json.loads(self.offline.read_bytes(entry.path)))
            ids.update(current[key])
        _ANNOUNCED_CACHE[self.offline.full_path(ANNOUNCED_PREFIX)] = current  # only what is listed now
        if len(entries) > compact_above:
            # One file per tick would grow without end: fold them into one. The merged file is
            # written before the old ones go, so a crash in between only leaves duplicates.
            merged = hashlib.sha1("\n".join(sorted(ids)).encode()).hexdigest()[:16]
            self.offline.write_bytes(f"{ANNOUNCED_PREFIX}/merged-{merged}.json", json.dumps(sorted(ids)).encode())
            for entry in entries:
                if not entry.path.endswith(f"merged-{merged}.json"):
                    self.offline.delete(entry.path)
        return ids

    def write_pending(self, tick_key: str, ids: list[str]) -> None:
        self.offline.write_bytes(f"{PENDING_PREFIX}/{tick_key}.json", json.dumps(sorted(ids)).encode())

    def promote(self, tick_key: str) -> None:
        pending = f"{PENDING_PREFIX}/{tick_key}.json"
        if self.offline.exists(pending):
            self.offline.write_bytes(f"{ANNOUNCED_PREFIX}/{tick_key}.json", self.offline.read_bytes(pending))
            self.offline.delete(pending)


def _downstream_keys(context: dg.SensorEvaluationContext, keys: set[dg.AssetKey]) -> set[dg.AssetKey]:
    """The change logs plus everything built from them (feature views, online tables)."""
    repository = context.repository_def
    if repository is None:
        return keys
    graph = repository.asset_graph
    result, frontier = set(keys), list(keys)
    while frontier:
        key = frontier.pop()
        for child in graph.get(key).child_keys:
            if child not in result and graph.get(child).is_materializable:
                result.add(child)
                frontier.append(child)
    return result


def plan_run_requests(hours_by_table: dict[str, set[str]], tables: dict[str, SourceTable],
                      partitions_def: dg.TimeWindowPartitionsDefinition, batch_key: str,
                      context: dg.SensorEvaluationContext | None = None,
                      history_unknown_from: dict[str, datetime] | None = None) -> list[dg.RunRequest]:
    """The runs a batch needs, each over a range of partitions, selecting change logs and downstream.

    A table read by no feature view needs only the hours its changes touched (one run per
    contiguous range). A table that feeds feature views needs more: a change committed at T
    can alter their values at every later instant (a window it enters, a ``last`` it becomes),
    so the run goes from the earliest touched hour to the current one — and starts earlier
    still where a view's history is not known yet (``history_unknown_from``: its horizon).
    """
    first = partitions_def.get_first_partition_window()
    last = partitions_def.get_last_partition_window()
    if first is None or last is None:
        return []
    history_unknown_from = history_unknown_from or {}
    keys_by_range: dict[tuple[str, str], set[dg.AssetKey]] = {}
    through_now: set[dg.AssetKey] = set()
    through_now_from: datetime | None = None
    for table_name, hours in hours_by_table.items():
        starts = sorted(max(parse_hour(label), first.start) for label in hours if parse_hour(label) < last.end)
        # (a commit in a partition that does not exist yet is the schedule's to take)
        if table_name in history_unknown_from:
            start = min([*starts, history_unknown_from[table_name]])
            through_now.add(change_log_key(tables[table_name]))
            through_now_from = start if through_now_from is None else min(through_now_from, start)
            continue
        for key_range in contiguous_ranges([partition_key_of(start) for start in starts]):
            keys_by_range.setdefault(key_range, set()).add(change_log_key(tables[table_name]))
    if through_now:
        key_range = (partition_key_of(max(through_now_from, first.start)), partition_key_of(last.start))
        keys_by_range.setdefault(key_range, set()).update(through_now)
    requests = []
    for (first_key, last_key), keys in sorted(keys_by_range.items()):
        selection = _downstream_keys(context, keys) if context is not None else keys
        tags = {ASSET_PARTITION_RANGE_START_TAG: first_key, ASSET_PARTITION_RANGE_END_TAG: last_key}
        requests.append(dg.RunRequest(
            run_key=f"{batch_key}:{first_key}:{last_key}",
            asset_selection=sorted(selection, key=lambda k: k.to_user_string()),
            tags=tags,
        ))
    return requests


def _queued_runs(context: dg.SensorEvaluationContext, sensor_name: str) -> list[str]:
    """Ids of this sensor's runs that are submitted but not launched yet (the run queue holds them)."""
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:
        return []  # a context built without an instance (a bare test): nothing can be queued
    runs = instance.get_run_records(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED],
                              tags={SENSOR_NAME_TAG: sensor_name}),
        limit=1,
    )
    return [record.dagster_run.run_id for record in runs]


def build_cdc_job(tables: list[SourceTable], name: str):
    """The job the CDC sensor's runs belong to: the change logs and everything built from them.

    The sensor's run requests select the change logs *and everything downstream* of them
    (Dagster refuses, with DagsterInvalidSubsetError, any requested asset outside the target:
    a plain list of the change-log keys broke every tick as soon as a feature view was built
    on a change log), each request a subset of this job.

    The executor is in-process: a CDC run is a few small steps in three waves (change logs,
    views, online tables), and the default multiprocess executor started a Python process per
    step (~6-10 s each on a loaded 2-core machine, more than the steps' own work). In one
    process the steps run one at a time, in dependency order and by ``dagster/priority``.
    Step failures and retries are recorded exactly as with the other executors.
    """
    return dg.define_asset_job(
        name,
        selection=dg.AssetSelection.assets(*[change_log_key(t) for t in tables]).downstream().materializable(),
        executor_def=dg.in_process_executor,
        description="The CDC sensor's runs: the change-log partitions a landed batch touches, and everything "
                    "downstream of them, in one process.",
    )


def build_cdc_sensor(tables: list[SourceTable], partitions_def: dg.TimeWindowPartitionsDefinition,
                     name: str = "cdc_landing_sensor", max_files_per_tick: int = 2000,
                     time_budget_seconds: float = 40.0,
                     minimum_interval_seconds: int = DEFAULT_MINIMUM_INTERVAL_SECONDS,
                     views: list[FeatureView] = (), keys_per_listing: int = 5000,
                     max_active_folders: int = 200, folder_idle_seconds: float = 86_400.0,
                     sweep_interval_seconds: float = DEFAULT_SWEEP_INTERVAL_SECONDS) -> dg.SensorDefinition:
    by_topic = {table.topic: table for table in tables}
    by_name = {table.name: table for table in tables}
    views_by_table: dict[str, list[FeatureView]] = {}
    for view in views:
        views_by_table.setdefault(view.source.name, []).append(view)

    def history_unknown_from(offline_store: Store, touched: set[str]) -> dict[str, datetime]:
        """Per touched table with views: where its views' known history ends (earliest horizon)."""
        first = partitions_def.get_first_partition_window().start
        history = OfflineFeatureStore(offline_store)
        unknown = {}
        for table_name in touched & set(views_by_table):
            horizons = [history.horizon(view, first) for view in views_by_table[table_name]]
            unknown[table_name] = min(first if h is None else h.replace(minute=0, second=0, microsecond=0)
                                      for h in horizons)
        return unknown

    job = build_cdc_job(tables, f"{name}_job")  # hourly-partitioned as its assets are

    @dg.sensor(
        name=name,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        job=job,
        description=(
            "Watches the landing zone for new Debezium batches and requests the change-log "
            "partitions (and everything downstream) that their commits touch, old hours included."
        ),
    )
    def cdc_sensor(context: dg.SensorEvaluationContext, landing: LandingZoneResource,
                   offline: OfflineStoreResource):
        began = time.monotonic()
        queued = _queued_runs(context, name)
        if queued:
            # Back-pressure: with a tick every 5 s and runs one at a time, a steady stream of
            # batches would otherwise queue runs faster than they finish. The files wait here
            # and go, together, into the next run once the queued one has started.
            return dg.SkipReason(f"run {queued[0]} of this sensor is still queued; new files wait for the next tick")
        landing_store, offline_store = landing.store(), offline.store()
        announcements = AnnouncementLog(offline_store)
        cursor = json.loads(context.cursor) if context.cursor else {}
        if cursor.get("pending_tick"):
            # The previous tick's runs were submitted (or its cursor would not exist): record it.
            announcements.promote(cursor["pending_tick"])
        state = ScanState.from_json(cursor.get("listing"))
        last_sweep = cursor.get("last_sweep") or 0.0
        sweep = time.time() - last_sweep >= sweep_interval_seconds
        try:
            scan = scan_landing_zone(landing_store, by_topic, state, keys_per_listing, time_budget_seconds / 4,
                                     sweep=sweep)
        except OSError as error:
            return dg.SkipReason(f"landing zone {landing.uri} is unreadable ({error}); will retry")
        if scan.swept:
            last_sweep = time.time()
        files, unrecognised = scan.files, scan.unrecognised
        announced = announcements.announced()
        new_files = sorted((f for f in files if file_id(f.path) not in announced),
                           key=lambda f: (f.mtime_ns, f.path))
        already = {f.path for f in files if file_id(f.path) in announced}

        def listing_after(taken_paths: set[str]) -> dict:
            return scan.advance(state, taken_paths, already, time.time(), max_active_folders,
                                folder_idle_seconds).to_json()

        if not new_files:
            context.update_cursor(json.dumps({"pending_tick": None, "last_tick": cursor.get("last_tick"),
                                              "listing": listing_after(set()), "last_sweep": last_sweep}))
            note = f" ({len(unrecognised)} unrecognised file(s) ignored)" if unrecognised else ""
            return dg.SkipReason(f"no new landing files among {len(files)} listed{note}")

        hours_by_table: dict[str, set[str]] = {}
        taken: list[str] = []
        quarantined = 0
        for landing_file in new_files[:max_files_per_tick]:
            if time.monotonic() - began > time_budget_seconds:
                break
            table = by_topic[landing_file.topic]
            staged = ChangeLog(offline_store, table).stage_file(landing_store, landing_file)
            hours_by_table.setdefault(table.name, set()).update(staged.hours)
            quarantined += staged.account.quarantined
            taken.append(staged.file_id)

        batch_key = hashlib.sha1("\n".join(sorted(taken)).encode()).hexdigest()[:16]
        requests = plan_run_requests(hours_by_table, by_name, partitions_def, batch_key, context,
                                     history_unknown_from(offline_store, set(hours_by_table)))
        left = len(new_files) - len(taken)
        context.log.info(
            f"{len(taken)} new file(s) decoded ({quarantined} record(s) quarantined); "
            f"{len(requests)} run(s) requested; {left} file(s) left for the next tick"
        )
        announcements.write_pending(batch_key, taken)
        taken_paths = {f.path for f in new_files[:len(taken)]}
        context.update_cursor(json.dumps({"pending_tick": batch_key, "last_tick": batch_key,
                                          "listing": listing_after(taken_paths), "last_sweep": last_sweep}))
        # Each topic that received files moves its data version: the source asset's observation.
        observations = []
        for table_name in sorted(hours_by_table):
            table = by_name[table_name]
            new_paths = sorted(f.path for f in new_files[:len(taken)] if f.topic == table.topic)
            version = hashlib.sha1("\n".join(new_paths).encode()).hexdigest()[:16]
            observations.append(dg.AssetObservation(
                asset_key=topic_key(table),
                metadata={"new_files": len(new_paths), "latest_file": new_paths[-1] if new_paths else ""},
                tags={DATA_VERSION_TAG: version},
            ))
        if not requests:
            return dg.SensorResult(skip_reason=f"{len(taken)} new file(s) touched no existing partition",
                                   asset_events=observations)
        return dg.SensorResult(run_requests=requests, asset_events=observations)

    return cdc_sensor
