"""The online sync's reader, ``latest_rows``: exactly each entity's latest history row.

It reads partition files newest first, in growing steps, and skips entities a newer step
already gave (online_assets.latest_rows). Checked against the plain definition — per entity,
the row of greatest ``valid_from`` over all files — on generated histories, for step sizes
from one file up to all of them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feature_platform.orchestration.online_assets import latest_rows

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
HOUR_MICROS = 3_600_000_000

# One history row: entity, hour, µs into the hour, a value, deleted?
row = st.tuples(st.integers(0, 12), st.integers(0, 9), st.integers(0, HOUR_MICROS - 1),
                st.one_of(st.none(), st.floats(allow_nan=False)), st.booleans())


def write_partitions(directory, rows: list[tuple], key_type: str) -> list[str]:
    """One file per hour 0..9 (empty hours too), each holding the rows of its hour only, with
    one row per (entity, valid_from) as the engines write them."""
    unique = {(entity, hour, micros): (value, deleted) for entity, hour, micros, value, deleted in rows}
    paths = []
    for hour in range(10):
        chosen = sorted((k, v) for k, v in unique.items() if k[1] == hour)
        keys = [k[0] if key_type == "int" else f"customer-{k[0]}" for k, _ in chosen]
        table = pa.table({
            "customer_id": pa.array(keys, pa.int64() if key_type == "int" else pa.string()),
            "valid_from": pa.array([T0 + timedelta(hours=hour, microseconds=k[2]) for k, _ in chosen],
                                   pa.timestamp("us", tz="UTC")),
            "value": pa.array([v[0] for _, v in chosen], pa.float64()),
            "_deleted": pa.array([v[1] for _, v in chosen], pa.bool_()),
        })
        path = directory / f"{hour:02d}.parquet"
        pq.write_table(table, path)
        paths.append(str(path))
    return paths


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(row, max_size=60), files_per_step=st.sampled_from([1, 2, 3, 4, 100]),
       key_type=st.sampled_from(["int", "string"]))
def test_latest_rows_are_each_entitys_row_of_greatest_valid_from(tmp_path_factory, rows, files_per_step, key_type):
    paths = write_partitions(tmp_path_factory.mktemp("history"), rows, key_type)
    every_row = pa.concat_tables([pq.read_table(p) for p in paths]).to_pylist()
    expected: dict = {}
    for history_row in every_row:
        stored = expected.get(history_row["customer_id"])
        if stored is None or history_row["valid_from"] > stored["valid_from"]:
            expected[history_row["customer_id"]] = history_row

    got = [r for batch in latest_rows(paths, "customer_id", files_per_step=files_per_step) for r in batch.to_pylist()]

    assert len(got) == len({r["customer_id"] for r in got}), "an entity came twice"
    assert {r["customer_id"]: r for r in got} == expected
