"""Feature-view assets: ``features/<view>``, hourly-partitioned, computed by pandas or Spark.

A run over a partition range computes the whole range in one pass from the change log
(everything committed up to the range's end) and writes one history file per hour. The
values of the current, incomplete hour are computed up to the run's *as-of* instant: now,
or the ``feature_platform/as_of`` tag that ``feature-platform materialize-incremental
--end`` sets.
"""

from datetime import datetime, timedelta, timezone

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_platform.catalog import describe_view
from feature_platform.cdc.change_log import ChangeLog, change_log_schema, hour_label
from feature_platform.engines.pandas_engine import HistoryRange, compute_history
from feature_platform.feature_view import FeatureView
from feature_platform.offline_store import OfflineFeatureStore
from feature_platform.online_store import to_micros
from feature_platform.orchestration import feature_checks
from feature_platform.orchestration.change_log_assets import change_log_key
from feature_platform.orchestration.partitions import hours_between
from feature_platform.orchestration.resources import OfflineStoreResource

FEATURES_GROUP = "features"
AS_OF_TAG = "feature_platform/as_of"

# Step priority of a view's history (Dagster's ``dagster/priority`` op tag; the default is 0).
# Below the default, so that in a run over several views the online table of a view whose
# history is written (priority 0) goes before the next view's history: with one step at a time
# (the CDC runs' in-process executor) or few (the multiprocess executor's max_concurrent), a
# view's values reach Redis without waiting for unrelated views. The change logs (also 0) come
# before every history anyway, as its inputs.
FEATURES_STEP_PRIORITY = -1
PRIORITY_TAG = "dagster/priority"


def feature_view_key(view: FeatureView) -> dg.AssetKey:
    return dg.AssetKey(["features", view.name])


def run_as_of(context: dg.AssetExecutionContext) -> datetime:
    tag = context.run.tags.get(AS_OF_TAG)
    if tag:
        return datetime.fromisoformat(tag.replace("Z", "+00:00")).astimezone(timezone.utc)
    return datetime.now(timezone.utc)


def read_change_log(change_log: ChangeLog, until: datetime) -> pa.Table:
    """Every change committed before ``until``, from the built change-log partitions."""
    last_hour = hour_label(until - timedelta(microseconds=1))
    tables = []
    for entry in sorted(change_log.offline.list_files(change_log.partition_prefix, recursive=False),
                        key=lambda e: e.path):
        label = entry.path.rsplit("/", 1)[-1].removesuffix(".parquet")
        if label <= last_hour:
            tables.append(change_log.offline.read_table(entry.path))
    schema = change_log_schema(change_log.table)
    if not tables:
        return schema.empty_table()
    table = pa.concat_tables([t.cast(schema) for t in tables])
    limit = pa.scalar(to_micros(until), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    return table.filter(pc.less(table.column("_commit_time"), limit))


def column_lineage(view: FeatureView) -> dg.TableColumnLineage:
    """Each feature → the source columns (in the change log) it is computed from."""
    upstream = change_log_key(view.source)
    return dg.TableColumnLineage(deps_by_column={
        name: [dg.TableColumnDep(asset_key=upstream, column_name=column) for column in view.source_columns_of(name)
               if column in view.source.column_names]
        for name in view.stored_dtypes()
    })


# Hourly cadence: the schedule completes an hour at :05, so a view more than an hour and a
# quarter behind is late, and two hours behind has failed to keep up.
HOURLY_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75))


def column_schema(view: FeatureView) -> dg.TableSchema:
    descriptions = {f.name: f.description for f in (*view.aggregations, *view.features, *view.derived, *view.on_demand)}
    columns = [dg.TableColumn(view.entity.join_key, "int64" if view.history_schema().field(0).type == pa.int64()
                              else "string", description=f"Join key of entity '{view.entity.name}'."),
               dg.TableColumn("valid_from", "timestamp[us, UTC]", description="When this value became true.")]
    for name, dtype in view.stored_dtypes().items():
        columns.append(dg.TableColumn(name, str(dtype), description=descriptions.get(name) or None))
    return dg.TableSchema(columns=columns)


def feature_statistics(rows: pa.Table, view: FeatureView) -> dict[str, float]:
    """Per numeric feature: mean, p50 and p95 of the values written (for the UI's plots)."""
    stats: dict[str, float] = {}
    for name, dtype in view.stored_dtypes().items():
        if dtype.kind not in ("int", "float", "decimal") or rows.num_rows == 0:
            continue
        values = rows.column(name).cast(pa.float64()).to_numpy(zero_copy_only=False)
        values = values[~np.isnan(values)]
        if len(values):
            stats[f"{name}/mean"] = float(np.mean(values))
            stats[f"{name}/p50"] = float(np.percentile(values, 50))
            stats[f"{name}/p95"] = float(np.percentile(values, 95))
    return stats


def materialize_view(view: FeatureView, offline: OfflineFeatureStore, change_log: ChangeLog,
                     window_start: datetime, window_end: datetime, first_partition: datetime,
                     as_of: datetime, compute=compute_history) -> dict:
    """Compute and write the view's history for [window_start, window_end), up to ``as_of``."""
    known_until = min(window_end, as_of)
    changes = read_change_log(change_log, known_until)
    emit = HistoryRange(None if window_start <= first_partition else to_micros(window_start), to_micros(known_until))
    history = compute(changes, view, emit)
    valid_from = history.column("valid_from")
    # Temporary files an earlier run left when it was killed mid-write (readers skip them).
    abandoned = offline.store.remove_abandoned_temporaries(offline.prefix(view))
    written, rows_written = [], 0
    for hour in hours_between(window_start, window_end):
        if hour >= known_until:
            break  # an hour that has not started yet as of this run
        hour_end = hour + timedelta(hours=1)
        upper = pc.less(valid_from, pa.scalar(hour_end, pa.timestamp("us", tz="UTC")))
        in_hour = upper if hour <= first_partition else pc.and_(
            upper, pc.greater_equal(valid_from, pa.scalar(hour, pa.timestamp("us", tz="UTC"))))
        rows = history.filter(in_hour)
        written.append(offline.write_partition(view, hour, rows, min(hour_end, as_of)))
        rows_written += rows.num_rows
    join_key = view.entity.join_key
    return {
        "history": history,
        "metadata": {
            "dagster/row_count": rows_written,
            "entities_changed": len(pc.unique(history.column(join_key))) if history.num_rows else 0,
            "change_log_rows_read": changes.num_rows,
            "as_of": known_until.isoformat(),
            "engine": view.engine,
            "partitions_written": len(written),
            "abandoned_temporaries_removed": len(abandoned),
            **{key: dg.MetadataValue.float(value) for key, value in feature_statistics(history, view).items()},
        },
    }


def build_feature_view_asset(view: FeatureView, partitions_def: dg.TimeWindowPartitionsDefinition,
                             extra_metadata: dict | None = None) -> dg.AssetsDefinition:
    key = feature_view_key(view)
    kinds = {view.engine, "parquet"}
    tags = {"entity": view.entity.name, "ttl": _duration_tag(view.ttl), **view.tags}
    windows = sorted({_duration_tag(a.window) for a in view.aggregations if a.window is not None})
    if windows:
        tags["window"] = "_".join(windows)
    required_resources = {"offline"} | ({"pyspark"} if view.engine == "spark" else set())

    @dg.asset(
        key=key,
        deps=[change_log_key(view.source)],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=FEATURES_GROUP,
        kinds=kinds,
        owners=list(view.owners),
        tags=tags,
        code_version=view.code_version(),
        description=describe_view(view),
        metadata={"dagster/column_schema": column_schema(view), "dagster/column_lineage": column_lineage(view),
                  "ttl": _duration_tag(view.ttl), **(extra_metadata or {})},
        required_resource_keys=required_resources,
        op_tags={PRIORITY_TAG: str(FEATURES_STEP_PRIORITY)},
        freshness_policy=HOURLY_FRESHNESS,
        check_specs=feature_checks.check_specs(view, key, partitions_def),
    )
    def feature_view(context: dg.AssetExecutionContext):
        offline: OfflineStoreResource = context.resources.offline
        store = offline.store()
        window = context.partition_time_window
        first_partition = partitions_def.get_first_partition_window().start
        compute = compute_history
        if view.engine == "spark":
            from feature_platform.engines.spark_engine import compute_history_spark

            spark = context.resources.pyspark.spark_session

            def compute(changes, view_, emit):
                return compute_history_spark(spark, changes, view_, emit)

        offline_features = OfflineFeatureStore(store)
        result = materialize_view(view, offline_features, ChangeLog(store, view.source),
                                  window.start, window.end, first_partition, run_as_of(context), compute)
        yield dg.MaterializeResult(metadata=result["metadata"])
        report_dir = None
        if store.is_local:
            report_dir = store.full_path(f"checks/{view.name}/{window.start:%Y-%m-%dT%H}_{window.end:%Y-%m-%dT%H}")
        yield from feature_checks.evaluate(view, result["history"], offline_features, window.start,
                                           window.end, report_dir, history_began=first_partition)

    return feature_view


def _duration_tag(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
