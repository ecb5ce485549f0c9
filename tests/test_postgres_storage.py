"""Dagster on PostgreSQL storage (dagster-postgres): a sensor tick, its run, its events.

Uses the real PostgreSQL that scripts/test makes sure of (FP_TEST_POSTGRES_URL), with the
``scheme: postgresql+psycopg2`` setting that SQLAlchemy 2.x needs (shared/DEPENDENCIES.md).
"""

from datetime import timedelta

import dagster as dg
import pytest
import yaml

from assets.sources import orders
from feature_platform.orchestration.cdc_sensor import build_cdc_sensor
from feature_platform.orchestration.change_log_assets import build_change_log_asset, change_log_key
from feature_platform.orchestration.partitions import hourly_partitions, partition_key_of
from tests.conftest import (current_hour, dumps, fresh_postgres_database, landing_name, ms, order_message, order_row,
                            write_landing_file)


@pytest.fixture
def postgres_instance(tmp_path):
    """A Dagster instance whose run, event-log and schedule storage live in a fresh PG schema-free database."""
    with fresh_postgres_database("fp_test") as database:
        home = tmp_path / "dagster_home"
        home.mkdir()
        config = {
            "storage": {"postgres": {"postgres_db": {
                "hostname": database.host, "port": database.port, "username": database.user,
                "password": database.password, "db_name": database.name, "scheme": "postgresql+psycopg2",
            }}},
            "telemetry": {"enabled": False},
        }
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            yield instance
        finally:
            instance.dispose()


def test_sensor_triggered_run_is_recorded_in_postgres(postgres_instance, stores):
    hour = current_hour() - timedelta(hours=1)
    partitions = hourly_partitions(hour - timedelta(hours=2))
    change_log = build_change_log_asset(orders, partitions)
    sensor = build_cdc_sensor([orders], partitions)
    defs = dg.Definitions(assets=[change_log], sensors=[sensor], resources=stores.resources)

    commit = ms(hour + timedelta(minutes=10))
    lines = [dumps(order_message("c", lsn=100 + i, commit_ms=commit + i, tx_id=7,
                                 after=order_row(10_000 + i, day=hour))) for i in range(3)]
    write_landing_file(stores.landing_dir, landing_name(0, 0), lines)

    context = dg.build_sensor_context(instance=postgres_instance, definitions=defs, resources=stores.resources)
    tick = sensor.evaluate_tick(context)
    assert len(tick.run_requests) == 1, tick.skip_message
    request = tick.run_requests[0]
    assert request.tags["dagster/asset_partition_range_start"] == partition_key_of(hour)

    job = defs.resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=postgres_instance, tags=request.tags,
                                    asset_selection=request.asset_selection, run_id=None)
    assert result.success

    # The run and its materialization are in PostgreSQL, readable by another instance.
    reloaded = dg.DagsterInstance.from_config(postgres_instance.root_directory)
    try:
        runs = reloaded.get_runs()
        assert [run.run_id for run in runs] == [result.run_id]
        assert runs[0].tags["dagster/asset_partition_range_start"] == partition_key_of(hour)
        event = reloaded.get_latest_materialization_event(change_log_key(orders))
        assert event is not None and event.asset_materialization.partition == partition_key_of(hour)
        assert event.asset_materialization.metadata["dagster/row_count"].value == 3
        assert "postgres" in type(reloaded.run_storage).__module__
    finally:
        reloaded.dispose()
