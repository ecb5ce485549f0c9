"""Change-log assets: one hourly-partitioned asset per source table (``cdc/<table>``).

Materializing a partition stages any landed file not yet decoded, then rebuilds that hour
of the table's change log from every file that touched it. A range of partitions (a UI
backfill, a sensor run after a late batch) runs as one run and stages files only once.
"""


from datetime import timedelta

import dagster as dg

from feature_platform.cdc.change_log import BatchAccount, ChangeLog, LineAccount, file_id, hour_label
from feature_platform.orchestration.partitions import hours_between, partition_key_of
from feature_platform.orchestration.resources import LandingZoneResource, OfflineStoreResource
from feature_platform.sources import SourceTable

CHANGE_LOG_GROUP = "change_logs"
TOPIC_GROUP = "cdc"
QUARANTINE_CHECK = "no_quarantined_records"


def change_log_key(table: SourceTable) -> dg.AssetKey:
    return dg.AssetKey(["cdc", table.name])


def topic_key(table: SourceTable) -> dg.AssetKey:
    return dg.AssetKey(["topics", table.name])


def build_topic_source(table: SourceTable) -> dg.AssetSpec:
    """The Debezium topic of a table as it lands: a source asset, observed by the CDC sensor.

    Each time the sensor sees new files of the topic it records an observation whose data
    version moves, so the UI shows when the source last changed and what is stale after it.
    """
    return dg.AssetSpec(
        key=topic_key(table),
        group_name=TOPIC_GROUP,
        kinds={"debezium", "kafka"},
        owners=list(table.owners),
        description=f"Debezium change events of `{table.name}` landing on topic `{table.topic}`. {table.description}",
        metadata={"topic": table.topic, "primary_key": ", ".join(table.primary_key),
                  "dagster/column_schema": dg.TableSchema(columns=[
                      dg.TableColumn(c.name, c.type, description=c.description or None) for c in table.columns])},
    )


def _column_schema(table: SourceTable) -> dg.TableSchema:
    metadata_columns = [
        ("_op", "string", "Debezium op: r (snapshot read), c, u, d, or t (truncate)."),
        ("_lsn", "int64", "Position in the source's commit order; versions of a row are ordered by it."),
        ("_commit_time", "timestamp[us, UTC]", "source.ts_ms: when the change was committed (its knowledge time)."),
        ("_tx_id", "int64", "Source transaction id."),
        ("_snapshot", "bool", "True for rows read by an initial snapshot."),
        ("_unavailable", "list<string>", "TOASTed columns that did not change: the previous value still holds."),
        ("_pk", "string", "Canonical JSON of the primary key (null for a truncate)."),
        ("_source_file", "string", "Landing file the record came from."),
        ("_source_line", "int64", "Line within that file."),
    ]
    return dg.TableSchema(
        columns=[dg.TableColumn(c.name, c.type, description=c.description or None) for c in table.columns]
        + [dg.TableColumn(name, kind, description=text) for name, kind, text in metadata_columns]
    )


MAX_BATCHES_SHOWN = 200  # rows of the per-batch table in the UI; the totals cover every batch
BATCH_ACCOUNTING_SCHEMA = dg.TableSchema(columns=[
    dg.TableColumn("file", "string", description="Landing file (one Debezium batch)."),
    dg.TableColumn("records_in", "int", description="Records of the batch in these partitions: "
                   "change_log_rows + duplicates_dropped + quarantined."),
    dg.TableColumn("change_log_rows", "int"),
    dg.TableColumn("duplicates_dropped", "int", description="Re-deliveries of a (key, lsn, op) already logged."),
    dg.TableColumn("quarantined", "int", description="Bad records, in _quarantine with file, line and reason."),
    dg.TableColumn("tombstones", "int", description="Key-only lines (Kafka compaction markers): no record."),
    dg.TableColumn("markers_skipped", "int", description="Transaction markers and other non-record lines."),
    dg.TableColumn("complete", "bool", description="Every hour the batch touched is in this run: its whole "
                   "content is accounted for here."),
])


def _batch_accounts(log: ChangeLog, accounts: dict[str, BatchAccount], start, end,
                    includes_first_partition: bool, settled: set[str]) -> list[dict]:
    """One row per batch: where its records went, and (when the run covers all its hours) a
    cross-check against the line account its manifest recorded when it was decoded.

    Only batches staged before the partitions were built (``settled``) are cross-checked: the
    sensor may stage a file while the run builds, and the hours built before its fragments
    appeared then miss part of it — that batch is complete in the next run, not lost.
    """
    low, high = hour_label(start), hour_label(end)
    rows = []
    for path, account in sorted(accounts.items()):
        manifest = log.read_manifest(path)
        lines = manifest.account if manifest else LineAccount()
        complete = manifest is not None and file_id(path) in settled and all(
            (hour >= low or includes_first_partition) and hour < high for hour in manifest.hours)
        decoded = lines.changes + lines.quarantined
        rows.append({"file": path, "records_in": account.records_in, "change_log_rows": account.change_log_rows,
                     "duplicates_dropped": account.duplicates_dropped, "quarantined": account.quarantined,
                     "tombstones": lines.tombstones, "markers_skipped": lines.skipped, "complete": complete,
                     "unaccounted": decoded - account.records_in if complete else 0})
    return rows


def build_change_log_asset(table: SourceTable, partitions_def: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    key = change_log_key(table)

    @dg.asset(
        key=key,
        deps=[topic_key(table)],
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=CHANGE_LOG_GROUP,
        kinds={"debezium", "parquet"},
        owners=list(table.owners),
        tags={"source_table": table.name},
        description=(
            f"Every committed change of `{table.name}` (topic `{table.topic}`), decoded from Debezium, "
            "de-duplicated, in commit (lsn) order; one partition per hour of commit time. "
            + table.description
        ),
        metadata={"dagster/column_schema": _column_schema(table), "topic": table.topic,
                  "primary_key": ", ".join(table.primary_key)},
        check_specs=[
            dg.AssetCheckSpec(
                QUARANTINE_CHECK,
                asset=key,
                description="Every record of the hour decoded: none went to quarantine.",
                partitions_def=partitions_def,
            )
        ],
    )
    def change_log(context: dg.AssetExecutionContext, landing: LandingZoneResource,
                   offline: OfflineStoreResource):
        log = ChangeLog(offline.store(), table)
        staged_now = log.stage_pending(landing.store())
        staged_account = LineAccount()
        for staged in staged_now:
            staged_account.add(staged.account)
        if staged_now:
            context.log.info(f"decoded {len(staged_now)} new landing file(s): {staged_account}")

        settled = log.staged_ids()  # every fragment of these files exists (the manifest is written last)
        window = context.partition_time_window
        first_partition_start = partitions_def.get_first_partition_window().start
        reasons: list[str] = []
        accounts: dict[str, BatchAccount] = {}
        # Temporary files an earlier run left when it was killed mid-write (readers skip them).
        for abandoned in log.offline.remove_abandoned_temporaries(log.partition_prefix):
            context.log.info(f"removed {abandoned}, a temporary file left by a killed run")
        for hour in hours_between(window.start, window.end):
            built = log.build(hour, hour + timedelta(hours=1), is_first_partition=hour == first_partition_start)
            path = log.write(hour, built)
            context.log.debug(f"{partition_key_of(hour)}: {built.table.num_rows} rows -> {path}")
            for source_file, account in built.account_by_file().items():
                accounts.setdefault(source_file, BatchAccount()).add(account)
            reasons.extend(
                f"{f}:{line}: {reason}" for f, line, reason in zip(
                    built.quarantine.column("file").to_pylist(), built.quarantine.column("line").to_pylist(),
                    built.quarantine.column("reason").to_pylist())
            )
        totals = BatchAccount()
        for account in accounts.values():
            totals.add(account)
        batches = _batch_accounts(log, accounts, window.start, window.end,
                                  includes_first_partition=window.start <= first_partition_start, settled=settled)
        unaccounted = [row for row in batches if row["unaccounted"]]
        if unaccounted:
            # Records a batch's manifest says were decoded, but that no partition holds: data lost.
            raise dg.Failure(description="records of landing files are missing from the change log: " + "; ".join(
                f"{row['file']}: {row['unaccounted']} of {row['records_in'] + row['unaccounted']}"
                for row in unaccounted[:10]))

        metadata = {
            "dagster/row_count": totals.change_log_rows,
            "records_in": totals.records_in,
            "duplicates_dropped": totals.duplicates_dropped,
            "quarantined_records": totals.quarantined,
            "batches": len(accounts),
            "batch_accounting": dg.MetadataValue.table(
                records=[dg.TableRecord({k: v for k, v in row.items() if k != "unaccounted"})
                         for row in batches[:MAX_BATCHES_SHOWN]],
                schema=BATCH_ACCOUNTING_SCHEMA),
            "files_decoded_this_run": len(staged_now),
            "path": dg.MetadataValue.path(log.offline.full_path(log.partition_prefix)),
        }
        if not totals.balanced:  # cannot happen by construction; say so loudly if it ever does
            context.log.error(f"records in ({totals.records_in}) != change-log rows + duplicates + quarantined")
        yield dg.MaterializeResult(metadata=metadata)
        yield dg.AssetCheckResult(
            check_name=QUARANTINE_CHECK,
            passed=totals.quarantined == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "quarantined_records": totals.quarantined,
                "examples": dg.MetadataValue.md("\n".join(f"- `{r}`" for r in reasons[:20]) or "none"),
                "quarantine_path": dg.MetadataValue.path(log.offline.full_path(log.quarantine_prefix)),
            },
        )

    return change_log
