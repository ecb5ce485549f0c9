"""The seeded workloads of ``bench/run``, written once under ``bench/.data/`` and reused.

Workload A (offline/online, shaped like Feast's own examples): ``customers`` customers,
``rows`` hourly rows of 10 float features over ``days`` days, ``entity_rows`` training rows.
Each customer gets ``rows / customers`` rows, one in each of as many equal slices of the
period (so consecutive rows of a customer are less than two slices apart: always inside
the 7-day TTL). The rows *are* the feature history: they are written straight into our
offline store as the hourly partitions of a latest-state view (``features/hourly_stats/
<YYYY-MM-DDTHH>.parquet``, one row per value change, exactly what an engine writes), and
Feast's FileSource and the raw DuckDB ASOF JOIN read those same files.

Workload B (CDC compute): the change log of the ``orders`` table (change_log_schema, as the
change-log assets write it) with ``events`` events over 90 days: creates, quantity updates,
deletes, and late arrivals (orders whose ``order_date`` is days before their commit).

Both depend only on their arguments and seed: the same size gives the same bytes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from assets.sources import orders  # noqa: E402
from feature_platform.cdc.change_log import change_log_schema, parquet_options  # noqa: E402
from feature_platform.engines.frames import unscaled_to_decimal  # noqa: E402
from feature_platform.entity import Entity  # noqa: E402
from feature_platform.expressions import col  # noqa: E402
from feature_platform.feature_view import Aggregation, Feature, FeatureView  # noqa: E402
from feature_platform.offline_store import OfflineFeatureStore  # noqa: E402
from feature_platform.sources import Column, SourceTable  # noqa: E402
from feature_platform.storage import Store  # noqa: E402

DATA = REPO / "bench" / ".data"
START = datetime(2026, 3, 1, tzinfo=timezone.utc)
PROJECT = "bench"
FEATURES = [f"f{i}" for i in range(10)]
A_VIEW = "hourly_stats"
B_VIEW = "customer_spend"
US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR


@dataclass(frozen=True)
class SizeA:
    customers: int
    rows: int
    entity_rows: int
    days: int = 30

    @property
    def name(self) -> str:
        return f"a-{self.customers}-{self.rows}-{self.entity_rows}"


SIZES_A = {"full": SizeA(100_000, 2_000_000, 200_000), "tiny": SizeA(1_000, 20_000, 2_000)}
SIZES_B = {"full": 1_000_000, "tiny": 20_000}

# -- workload A: the definitions ------------------------------------------------------------------

customer = Entity("customer", join_key="customer_id")
hourly_source = SourceTable(
    name="customer_hourly_stats", topic="bench.customer_hourly_stats", primary_key=("customer_id",),
    columns=(Column("customer_id", "int64"), *[Column(name, "float64") for name in FEATURES]))
hourly_stats = FeatureView(
    name=A_VIEW, entity=customer, source=hourly_source, entity_column="customer_id",
    features=[Feature(name) for name in FEATURES], ttl=timedelta(days=7),
    description="Precomputed hourly customer statistics, written to the offline store as they are.")

# -- workload B: the definitions ------------------------------------------------------------------

order_value = col("quantity") * col("unit_price")
customer_spend = FeatureView(
    name=B_VIEW, entity=Entity("customer", join_key="customer_id"), source=orders, entity_column="purchaser",
    timestamp_field="order_date",
    aggregations=[
        Aggregation("order_count_30d", "count", window="30d"),
        Aggregation("total_spend_30d", "sum", order_value, window="30d"),
        Aggregation("avg_order_value_30d", "mean", order_value, window="30d"),
    ],
    ttl=timedelta(days=2),
    description="The sweep aggregations of the demo's customer_orders, which a hand-written SQL can match.")


def a_paths(size: SizeA) -> dict[str, Path]:
    root = DATA / size.name
    return {"root": root, "offline": root / "offline", "entity_df": root / "entity_rows.parquet",
            "manifest": root / "manifest.json",
            "history_dir": root / "offline" / PROJECT / "features" / A_VIEW}


def build_workload_a(size: SizeA, seed: int = 8) -> dict:
    """Write workload A (if not there yet) and return its manifest."""
    paths = a_paths(size)
    if paths["manifest"].exists():
        return json.loads(paths["manifest"].read_text())
    rng = np.random.default_rng(seed)
    hours = size.days * 24
    per_customer = size.rows // size.customers
    slice_hours = hours // per_customer
    customer_ids = np.repeat(np.arange(1, size.customers + 1, dtype=np.int64), per_customer)
    slot = np.tile(np.arange(per_customer, dtype=np.int64), size.customers)
    hour = slot * slice_hours + rng.integers(0, slice_hours, size=len(slot))
    # Values rounded to 6 places: plain numbers, the same bits through every Parquet reader.
    values = {name: np.round(rng.normal(100.0, 25.0, size=len(slot)), 6) for name in FEATURES}
    valid_from_us = int(START.timestamp() * 1_000_000) + hour * US_PER_HOUR
    order = np.lexsort((customer_ids, hour))
    offline = OfflineFeatureStore(Store(str(paths["offline"] / PROJECT)))
    schema = hourly_stats.history_schema()
    sorted_hours = hour[order]
    boundaries = np.flatnonzero(np.diff(sorted_hours)) + 1
    for chunk in np.split(order, boundaries):
        h = int(hour[chunk[0]])
        table = pa.Table.from_arrays(
            [pa.array(customer_ids[chunk]), pa.array(valid_from_us[chunk]).cast(pa.timestamp("us", tz="UTC")),
             *[pa.array(values[name][chunk]) for name in FEATURES], pa.array(np.zeros(len(chunk), dtype=bool))],
            schema=schema)
        moment = START + timedelta(hours=h)
        offline.write_partition(hourly_stats, moment, table, as_of=moment + timedelta(hours=1))
    end = START + timedelta(hours=hours)
    # Training rows: random customers at random instants from the second day to the end.
    entity_customers = rng.integers(1, size.customers + 1, size=size.entity_rows)
    first_us = int((START + timedelta(days=1)).timestamp() * 1_000_000)
    last_us = int(end.timestamp() * 1_000_000)
    entity_times = rng.integers(first_us, last_us, size=size.entity_rows) // 1_000_000 * 1_000_000
    pq.write_table(pa.table({"row_id": np.arange(size.entity_rows, dtype=np.int64),
                             "customer_id": entity_customers.astype(np.int64),
                             "event_timestamp": pa.array(entity_times).cast(pa.timestamp("us", tz="UTC"))}),
                   paths["entity_df"])
    manifest = {"size": asdict(size), "start": START.isoformat(), "end": end.isoformat(), "project": PROJECT,
                "view": A_VIEW, "features": FEATURES, "ttl_seconds": 7 * 86400,
                "offline_root": str(paths["offline"]), "history_glob": str(paths["history_dir"] / "*.parquet"),
                "entity_df": str(paths["entity_df"]), "seed": seed}
    paths["manifest"].write_text(json.dumps(manifest, indent=1))
    return manifest


# -- workload B: a CDC change log of orders -----------------------------------------------------------

def b_path(events: int, seed: int = 8) -> Path:
    return DATA / f"b-{events}-s{seed}" / "change_log.parquet"


def build_workload_b(events: int, seed: int = 8, days: int = 90) -> Path:
    """The orders change log: ~76% creates, 19% quantity updates, 5% deletes; 3% of orders
    arrive late (their order_date is 1-10 days before their commit). One customer per 20 events."""
    path = b_path(events, seed)
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    creates = int(events * 0.76)
    updates = int(events * 0.19)
    deletes = events - creates - updates
    customers = max(events // 20, 10)
    start_us = int(START.timestamp() * 1_000_000)
    span_us = days * US_PER_DAY
    # Creates: commit times over the period; order_date is the commit's day, or days earlier (late).
    create_commit = np.sort(start_us + rng.integers(0, span_us, size=creates))
    late = rng.random(creates) < 0.03
    order_day = create_commit // US_PER_DAY - np.where(late, rng.integers(1, 11, size=creates), 0)
    order_date = order_day * US_PER_DAY
    purchaser = rng.zipf(1.3, size=creates) % customers + 1  # a few customers order a lot
    quantity = rng.integers(1, 6, size=creates)
    product = rng.integers(1, 200, size=creates)
    unit_price = rng.integers(199, 50_000, size=creates)  # unscaled cents
    order_id = np.arange(1, creates + 1)
    # Deletes cancel orders that get no update; updates change the quantity of other orders, later.
    chosen = rng.permutation(creates)
    deleted, updated = chosen[:deletes], rng.choice(chosen[deletes:], size=updates, replace=True)
    delay = lambda n: rng.exponential(2 * US_PER_DAY, size=n).astype(np.int64) + 1_000_000  # noqa: E731
    update_commit = create_commit[updated] + delay(updates)
    delete_commit = create_commit[deleted] + delay(deletes)
    rows = {
        "index": np.concatenate([order_id - 1, updated, deleted]),
        "op": np.concatenate([np.full(creates, "c"), np.full(updates, "u"), np.full(deletes, "d")]),
        "commit": np.concatenate([create_commit, update_commit, delete_commit]),
        "quantity": np.concatenate([quantity, rng.integers(1, 6, size=updates), quantity[deleted]]),
    }
    keep = rows["commit"] < start_us + span_us + 30 * US_PER_DAY
    rows = {k: v[keep] for k, v in rows.items()}
    # Commit order is lsn order; an order's updates keep their commit order among themselves.
    order = np.lexsort((np.arange(len(rows["commit"])), rows["commit"]))
    rows = {k: v[order] for k, v in rows.items()}
    n = len(rows["commit"])
    lsn = 1_000_000 + np.arange(n, dtype=np.int64) * 8
    index = rows["index"]
    schema = change_log_schema(orders)
    table = pa.Table.from_arrays([
        pa.array(order_id[index].astype(np.int32)),
        pa.array(order_date[index]).cast(pa.timestamp("us", tz="UTC")),
        pa.array(purchaser[index].astype(np.int32)),
        pa.array(rows["quantity"].astype(np.int32)),
        pa.array(product[index].astype(np.int32)),
        unscaled_to_decimal(pd.Series(unit_price[index], dtype="Int64"), 2, precision=10),
        pa.array(rows["op"]),
        pa.array(lsn),
        pa.array(rows["commit"]).cast(pa.timestamp("us", tz="UTC")),
        pa.array(lsn),
        pa.array(np.zeros(n, dtype=bool)),
        pa.nulls(n, pa.list_(pa.string())),
        pa.array(np.char.add(np.char.add("[", order_id[index].astype(str)), "]")),
        pa.array(np.full(n, "bench")),
        pa.array(np.arange(n, dtype=np.int64)),
    ], schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, **parquet_options(table.schema))  # as ChangeLog.write: Spark reads it in parallel
    return path


def b_debezium_path(events: int, seed: int = 8) -> Path:
    return DATA / f"b-debezium-{events}-s{seed}" / "change_log.parquet"


def build_workload_b_debezium(events: int, seed: int = 8, days: int = 90) -> Path:
    """Workload B through the platform's own CDC path: the demo's Debezium generator writes
    about ``events`` orders change events over ``days`` days as S3-sink batch files (creates,
    updates, deletes, primary-key changes, late commits, redeliveries, a connector restart,
    tombstones), and the change log is what the ``cdc/orders`` asset's code makes of them
    (decode, stage every file, de-duplicate, order by LSN). Written once; the landing zone and
    staging are deleted afterwards, the counts kept in ``ingest.json`` beside the log."""
    import shutil
    import time

    from feature_platform.cdc.change_log import ChangeLog
    from feature_platform.demo.generator import generate_landing_zone

    path = b_debezium_path(events, seed)
    if path.exists():
        return path
    work = path.parent / "work"
    shutil.rmtree(work, ignore_errors=True)
    # Per order per day the generator emits ~1.115 orders events (creates, then updates,
    # deletes and snapshot rows); one customer per 20 events, as in the numpy workload.
    generated = generate_landing_zone(work / "landing", customers=max(events // 20, 200), products=200,
                                      weeks=days / 7, orders_per_day=events / (days * 1.115), seed=seed,
                                      end=START + timedelta(days=days))
    log = ChangeLog(Store(str(work / "offline")), orders)
    began = time.perf_counter()
    staged = log.stage_pending(Store(str(work / "landing")))
    staging_seconds = time.perf_counter() - began
    built = log.build(START - timedelta(days=3650), START + timedelta(days=days + 3650), is_first_partition=True)
    if built.quarantine.num_rows:
        raise RuntimeError(f"{built.quarantine.num_rows} generated lines were quarantined: "
                           f"{built.quarantine.slice(0, 3).to_pylist()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(built.table, path, **parquet_options(built.table.schema))  # as ChangeLog.write
    (path.parent / "ingest.json").write_text(json.dumps({
        "orders_events_generated": generated.events.get("orders"), "files": len(staged),
        "records_in": built.records_in, "duplicates_dropped": built.duplicates, "change_log_rows": built.table.num_rows,
        "staging_seconds": staging_seconds, "generation_seconds": generated.seconds}, indent=1))
    shutil.rmtree(work)
    return path


def build_sync_memory_file(entities: int, seed: int = 8) -> Path:
    """A history of ``hourly_stats`` with two rows per entity (the latest must be picked)."""
    path = DATA / f"sync-{entities}-s{seed}" / "history.parquet"
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    keys = np.tile(np.arange(1, entities + 1, dtype=np.int64), 2)
    start_us = int(START.timestamp() * 1_000_000)
    valid_from = start_us + rng.integers(0, 30 * US_PER_DAY, size=len(keys))
    table = pa.Table.from_arrays(
        [pa.array(keys), pa.array(valid_from).cast(pa.timestamp("us", tz="UTC")),
         *[pa.array(np.round(rng.normal(100.0, 25.0, size=len(keys)), 6)) for _ in FEATURES],
         pa.array(np.zeros(len(keys), dtype=bool))], schema=hourly_stats.history_schema())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=100_000)
    return path


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES_A), default="full")
    arguments = parser.parse_args()
    print(json.dumps(build_workload_a(SIZES_A[arguments.size]), indent=1))
    print(build_workload_b(SIZES_B[arguments.size]))
