"""Asset checks of a feature view's partition(s): missing values and drift, and the gate they set.

Both checks run inside the feature-view asset, on the value changes the run wrote, so a
failure at ERROR severity (``blocking=True``) stops the run before ``online/<view>``. A run's
verdict is also written beside the history (``features/<view>/_gate/<hour>.json``): the
online sync never goes past the first hour whose blocking check failed, so a bad partition
reaches Redis neither in this run nor in a later one — until it is re-materialized clean.

A single-run range (a backfill) is checked once, over all the rows it wrote; its verdict
holds for each of its hours (shared/DEPENDENCIES.md, trap 6).
"""

import dataclasses
import json
from datetime import datetime, timedelta

import dagster as dg
import pyarrow as pa

from feature_platform.cdc.change_log import hour_label
from feature_platform.checks import check_drift, check_missing_values
from feature_platform.feature_view import FeatureView
from feature_platform.offline_store import OfflineFeatureStore
from feature_platform.orchestration.partitions import hours_between

MISSING_VALUES_CHECK = "missing_values"
DRIFT_CHECK = "drift"
GATE_FOLDER = "_gate"


def check_specs(view: FeatureView, key: dg.AssetKey, partitions_def: dg.PartitionsDefinition) -> list[dg.AssetCheckSpec]:
    blocking = view.checks.severity == "ERROR"
    return [
        dg.AssetCheckSpec(MISSING_VALUES_CHECK, asset=key, blocking=blocking, partitions_def=partitions_def,
                          description=f"Per feature, the null fraction of the partition's values stays under its "
                                      f"threshold (default {view.checks.max_null_fraction:.0%}); Great Expectations."),
        dg.AssetCheckSpec(DRIFT_CHECK, asset=key, blocking=blocking, partitions_def=partitions_def,
                          description=f"Each feature's distribution against the trailing {view.checks.reference_days} "
                                      "days: PSI, Kolmogorov–Smirnov and mean shift."),
    ]


def _frame(rows: pa.Table, view: FeatureView):
    frame = rows.to_pandas()
    if "_deleted" in frame.columns:
        frame = frame[~frame["_deleted"].astype(bool)]  # a deletion's nulls are not missing values
    for name, dtype in view.stored_dtypes().items():
        if dtype.kind == "decimal":
            frame[name] = frame[name].astype("float64")
    return frame


def reference_rows(view: FeatureView, offline: OfflineFeatureStore, start: datetime) -> pa.Table:
    """The view's history in the ``reference_days`` before ``start`` (what "normal" looked like)."""
    since = start - timedelta(days=view.checks.reference_days)
    tables = [offline.store.read_table(offline.partition_path(view, hour))
              for hour in offline.partition_hours(view) if since <= hour < start]
    schema = view.history_schema()
    return pa.concat_tables([t.cast(schema) for t in tables]) if tables else schema.empty_table()


def warming_up(view: FeatureView, history_began: datetime, reference_start: datetime) -> list[str]:
    """Features whose distribution cannot be stationary yet, so drift would only measure warm-up.

    A 30-day count keeps growing until 30 days of history exist, and an all-history aggregate
    grows for ever: comparing such a feature with last week says "drift" every time. A feature
    is checked once its window fits between the start of history and the reference period.
    """
    available = reference_start - history_began
    unsettled = {a.name for a in view.aggregations if a.window is None or a.window > available}
    for derived in view.derived:
        if derived.expression.columns() & unsettled:
            unsettled.add(derived.name)
    return [name for name in view.stored_dtypes() if name in unsettled]


def evaluate(view: FeatureView, rows: pa.Table, offline: OfflineFeatureStore, start: datetime, end: datetime,
             report_dir: str | None, history_began: datetime) -> list[dg.AssetCheckResult]:
    features = view.stored_dtypes()
    current = _frame(rows, view)
    missing = check_missing_values(current, features, view.checks)
    reference_start = start - timedelta(days=view.checks.reference_days)
    unsettled = warming_up(view, history_began, reference_start)
    drift_config = dataclasses.replace(view.checks, drift_exclude=(*view.checks.drift_exclude, *unsettled))
    drift = check_drift(current, _frame(reference_rows(view, offline, start), view), features, drift_config,
                        report_dir=report_dir)
    if unsettled:
        drift.metadata["warming_up"] = ", ".join(unsettled)
        drift = dataclasses.replace(drift, description=drift.description + f" Not yet checked (window longer "
                                    f"than the history before the reference period): {', '.join(unsettled)}.")
    window = f"{hour_label(start)}..{hour_label(end - timedelta(hours=1))}"
    results = []
    for name, outcome in ((MISSING_VALUES_CHECK, missing), (DRIFT_CHECK, drift)):
        results.append(dg.AssetCheckResult(
            check_name=name, passed=outcome.passed, severity=outcome.dagster_severity(),
            description=outcome.description, metadata={**outcome.dagster_metadata(), "hours": window},
        ))
    blocked = [name for name, outcome in (("missing_values", missing), ("drift", drift))
               if not outcome.passed and view.checks.severity == "ERROR"]
    write_gate(view, offline, start, end, blocked, [missing.description, drift.description])
    return results


def gate_path(view: FeatureView, hour: datetime) -> str:
    return f"features/{view.name}/{GATE_FOLDER}/{hour_label(hour)}.json"


def write_gate(view: FeatureView, offline: OfflineFeatureStore, start: datetime, end: datetime,
               failed_checks: list[str], descriptions: list[str]) -> None:
    verdict = json.dumps({"passed": not failed_checks, "failed_checks": failed_checks,
                          "descriptions": descriptions}, sort_keys=True).encode()
    for hour in hours_between(start, end):
        offline.store.write_bytes(gate_path(view, hour), verdict)


def first_blocked_hour(view: FeatureView, offline: OfflineFeatureStore) -> datetime | None:
    """The earliest hour whose latest materialization failed a blocking check, if any."""
    from feature_platform.cdc.change_log import parse_hour

    for entry in sorted(offline.store.list_files(f"features/{view.name}/{GATE_FOLDER}", recursive=False),
                        key=lambda e: e.path):
        if not json.loads(offline.store.read_bytes(entry.path))["passed"]:
            return parse_hour(entry.path.rsplit("/", 1)[-1].removesuffix(".json"))
    return None
