"""Accounting: for every landed batch, records in = change-log rows + duplicates dropped +
quarantined, in the Dagster metadata of the change-log asset (``batch_accounting``), checked
against counts the test makes itself — over generated batches and over the real Debezium
samples in ../shared/cdc/samples — and against the files the run wrote.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pyarrow.parquet as pq
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from assets.sources import customers, orders
from conftest import (
    dumps,
    landing_name,
    ms,
    order_message,
    order_row,
    samples_dir,
    transaction_marker,
    write_landing_file,
    write_text,
)
from feature_platform.cdc.change_log import ChangeLog
from feature_platform.orchestration.change_log_assets import build_change_log_asset, change_log_key
from feature_platform.orchestration.partitions import hourly_partitions, partition_key_of
from reliability import START

HOUR = timedelta(hours=1)
CAPTURED = "debezium-3.6.3-captured"


def materialize_change_logs(stores, tables, hours: int, tmp_path) -> dict[str, dict]:
    """One real Dagster run over ``hours`` partitions; the change-log materialization metadata per table."""
    partitions = hourly_partitions(START)
    assets = [build_change_log_asset(table, partitions) for table in tables]
    (tmp_path / "dagster_home").mkdir(exist_ok=True)
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as instance:
        result = dg.materialize(assets, resources=stores.resources, instance=instance, tags={
            ASSET_PARTITION_RANGE_START_TAG: partition_key_of(START),
            ASSET_PARTITION_RANGE_END_TAG: partition_key_of(START + (hours - 1) * HOUR)})
        assert result.success
        metadata = {}
        for table in tables:
            events = [e for e in result.get_asset_materialization_events() if e.asset_key == change_log_key(table)]
            assert len(events) == hours  # one per partition of the range, all with the run's metadata
            metadata[table.name] = events[0].materialization.metadata
        return metadata


def batch_rows(metadata) -> dict[str, dict]:
    return {row.data["file"]: row.data for row in metadata["batch_accounting"].value.records}


def balanced(row: dict) -> bool:
    return row["records_in"] == row["change_log_rows"] + row["duplicates_dropped"] + row["quarantined"]


def rows_written(stores, prefix: str) -> int:
    root = stores.offline_dir / "test" / prefix
    return sum(pq.read_metadata(p).num_rows for p in root.rglob("*.parquet") if not p.name.startswith("."))


def test_generated_batches_account_for_every_record(stores, tmp_path):
    h0, h1 = START + timedelta(minutes=10), START + HOUR + timedelta(minutes=5)
    creates = [dumps(order_message("c", lsn=100 + pk, commit_ms=ms(h0 if pk <= 3 else h1), tx_id=7,
                                   after=order_row(pk))) for pk in range(1, 6)]
    bad_json = '{"payload": {"op": "c", "after": '  # cut off mid-line
    bad_type = dumps(order_message("c", lsn=200, commit_ms=ms(h1), tx_id=8, after=order_row(9))).replace(
        '"purchaser":1001', '"purchaser":"not a number"')
    assert bad_type != dumps(order_message("c", lsn=200, commit_ms=ms(h1), tx_id=8, after=order_row(9)))
    marker = dumps(transaction_marker("END", 7, 106, ms(h1)))
    first = landing_name(0, 0)
    second = landing_name(0, 100)
    # batch 1: 5 records, 1 cut-off line, 1 tombstone (empty line), 1 transaction marker
    write_landing_file(stores.landing_dir, first,
                       [*creates, bad_json, "", marker], mtime=h1)  # (a line without a commit time files under its landing hour)
    # batch 2: re-delivers records 2 and 4 (a connector restart), 2 new records, 1 record with a bad type
    fresh = [dumps(order_message("c", lsn=300 + pk, commit_ms=ms(h1), tx_id=9, after=order_row(pk)))
             for pk in (10, 11)]
    write_landing_file(stores.landing_dir, second,
                       [creates[1], creates[3], *fresh, bad_type], mtime=h1)

    metadata = materialize_change_logs(stores, [orders], hours=3, tmp_path=tmp_path)["orders"]
    rows = batch_rows(metadata)
    one, two = rows[first], rows[second]
    assert (one["records_in"], one["change_log_rows"], one["duplicates_dropped"], one["quarantined"]) == (6, 5, 0, 1)
    assert (one["tombstones"], one["markers_skipped"], one["complete"]) == (1, 1, True)
    assert (two["records_in"], two["change_log_rows"], two["duplicates_dropped"], two["quarantined"]) == (5, 2, 2, 1)
    assert all(balanced(row) for row in rows.values())

    assert metadata["records_in"].value == 11
    assert metadata["dagster/row_count"].value == 7 == rows_written(stores, "change_logs/orders")
    assert metadata["duplicates_dropped"].value == 2
    assert metadata["quarantined_records"].value == 2 == rows_written(stores, "_quarantine/orders")
    assert metadata["batches"].value == 2


def sample_value_files() -> list:
    """The captured envelopes of ../shared/cdc/samples (value files; .keys siblings ride along)."""
    folder = samples_dir() / CAPTURED
    return sorted(p for p in folder.iterdir()
                  if p.suffix in (".json", ".jsonl") and ".keys." not in p.name)


def test_real_samples_landed_twice_account_for_every_record(stores, tmp_path):
    """Every captured sample lands as a batch of the table it was captured from (customers or
    orders), then again as a re-delivery. Each line is a record, a tombstone or a marker; each
    record is a change-log row, a duplicate or quarantined; the re-delivery adds no row."""
    files = sample_value_files()
    assert len(files) >= 10
    landed = START + timedelta(minutes=30)  # lines without a commit time file under their landing hour
    lines_by_batch: dict[str, int] = {}
    redelivered: set[str] = set()
    for copy in (0, 1):
        for index, sample in enumerate(files):
            table = customers if "customer" in sample.name else orders
            suffix = ".jsonl" if sample.suffix == ".jsonl" else ".json"
            name = landing_name(copy, index, topic=table.topic).replace(".json", suffix)
            relative = f"topics/{table.topic}/partition={copy}/{name}"
            text = sample.read_text()
            write_text(stores.landing_dir, relative, text, mtime=landed)
            keys = sample.with_name(sample.name.replace(".values.", ".").replace(sample.suffix, ".keys" + sample.suffix))
            if keys.exists():
                write_text(stores.landing_dir, relative.replace(suffix, ".keys" + suffix), keys.read_text(), mtime=landed)
            lines_by_batch[relative] = 1 if sample.suffix == ".json" else len(text.rstrip("\n").split("\n"))
            if copy:
                redelivered.add(relative)

    metadata = materialize_change_logs(stores, [orders, customers], hours=2, tmp_path=tmp_path)
    rows = {**batch_rows(metadata["orders"]), **batch_rows(metadata["customers"])}
    assert rows, "the samples produced no records"
    records = rows_total = quarantined = 0
    for path, row in rows.items():
        assert row["complete"], path  # all samples predate the first partition: all in this run
        assert balanced(row), row
        # every line of the batch is a record, a tombstone or a skipped marker
        assert row["records_in"] + row["tombstones"] + row["markers_skipped"] == lines_by_batch[path], row
        if path in redelivered:
            assert row["change_log_rows"] == 0, row  # a re-delivery changes nothing
            assert row["duplicates_dropped"] == row["records_in"] - row["quarantined"], row
        records += row["records_in"]
        rows_total += row["change_log_rows"]
        quarantined += row["quarantined"]
    assert rows_total > 0 and records > rows_total
    for path in set(lines_by_batch) - set(rows):  # batches without any record: only tombstones or markers
        table = customers if customers.topic in path else orders
        manifest = ChangeLog(stores.offline, table).read_manifest(path)
        assert manifest.account.changes == manifest.account.quarantined == 0, path
        assert manifest.account.lines == lines_by_batch[path], path
    for table in (orders, customers):
        data = metadata[table.name]
        assert data["dagster/row_count"].value == rows_written(stores, f"change_logs/{table.name}")
        assert data["quarantined_records"].value == rows_written(stores, f"_quarantine/{table.name}")
        assert data["records_in"].value == (data["dagster/row_count"].value + data["duplicates_dropped"].value
                                            + data["quarantined_records"].value)
    assert sum(metadata[t.name]["records_in"].value for t in (orders, customers)) == records


def test_a_staged_fragment_that_went_missing_fails_the_run_naming_the_batch(stores, tmp_path):
    """The cross-check is not vacuous: records a batch's manifest counted but no partition holds
    (a fragment deleted behind the platform's back) stop the run instead of vanishing."""
    commit = START + timedelta(minutes=5)
    relative = landing_name(0, 7)
    write_landing_file(stores.landing_dir, relative, [
        dumps(order_message("c", lsn=10 + pk, commit_ms=ms(commit + pk * HOUR), tx_id=10 + pk, after=order_row(pk)))
        for pk in (0, 1)])
    [staged] = ChangeLog(stores.offline, orders).stage_pending(stores.landing)
    assert len(staged.hours) == 2
    lost = stores.offline_dir / "test" / "_staging" / "orders" / staged.hours[1] / f"{staged.file_id}.parquet"
    lost.unlink()
    partitions = hourly_partitions(START)
    (tmp_path / "dagster_home").mkdir()
    with dg.DagsterInstance.local_temp(str(tmp_path / "dagster_home")) as instance:
        result = dg.materialize([build_change_log_asset(orders, partitions)], resources=stores.resources,
                                instance=instance, raise_on_error=False, tags={
                                    ASSET_PARTITION_RANGE_START_TAG: partition_key_of(START),
                                    ASSET_PARTITION_RANGE_END_TAG: partition_key_of(START + 2 * HOUR)})
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.event_specific_data.error.message
    assert "missing from the change log" in message and f"{relative}: 1 of 2" in message, message
