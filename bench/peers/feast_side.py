"""Feast's side of workload A, run with bench/peers/.venv-feast/bin/python (never the project's venv).

    feast_side.py historical MANIFEST OUT.parquet   get_historical_features(...).to_df()
    feast_side.py materialize MANIFEST              materialize(start, end) into Redis
    feast_side.py read MANIFEST ITERATIONS          get_online_features p50/p99 for 1 and 100 entities

Feast reads the very Parquet files of our offline store (a FileSource over the hourly
partitions of ``hourly_stats``), with its DuckDB offline store and its Redis online store
(``FEAST_REDIS``, default 127.0.0.1:6379 db 14; keys end with the Feast project name).
Prints one JSON object with the timings on its last line.
"""

import json
import os
import resource
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig, ValueType
from feast.types import Float64

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/, for latency.py
from latency import WARMUP, figures  # noqa: E402

FEAST_PROJECT = "bench_feast"
REDIS = os.environ.get("FEAST_REDIS", "127.0.0.1:6379,db=14")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_store(manifest: dict) -> tuple[FeatureStore, FeatureView]:
    repo = Path(manifest["offline_root"]).parent / "feast_repo"
    repo.mkdir(exist_ok=True)
    config = RepoConfig(
        project=FEAST_PROJECT, provider="local", registry=str(repo / "registry.db"),
        offline_store={"type": "duckdb"},
        online_store={"type": "redis", "connection_string": REDIS},
        entity_key_serialization_version=3, repo_path=str(repo))
    store = FeatureStore(config=config)
    customer = Entity(name="customer", join_keys=["customer_id"], value_type=ValueType.INT64)
    source = FileSource(name="hourly_stats_source", path=manifest["history_glob"], timestamp_field="valid_from")
    view = FeatureView(name=manifest["view"], entities=[customer], ttl=timedelta(seconds=manifest["ttl_seconds"]),
                       schema=[Field(name=name, dtype=Float64) for name in manifest["features"]],
                       source=source, online=True)
    store.apply([customer, view])
    return store, view


def historical(manifest: dict, out: str) -> dict:
    store, view = open_store(manifest)
    entity_df = pd.read_parquet(manifest["entity_df"])
    features = [f"{view.name}:{name}" for name in manifest["features"]]
    began = time.perf_counter()
    frame = store.get_historical_features(entity_df=entity_df, features=features).to_df()
    seconds = time.perf_counter() - began
    frame.sort_values("row_id").reset_index(drop=True).to_parquet(out)
    return {"seconds": seconds, "rows": len(frame), "peak_rss_mb": peak_rss_mb()}


def materialize(manifest: dict) -> dict:
    store, view = open_store(manifest)
    start, end = datetime.fromisoformat(manifest["start"]), datetime.fromisoformat(manifest["end"])
    began = time.perf_counter()
    store.materialize(start_date=start, end_date=end, feature_views=[view.name])
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "entities": manifest["size"]["customers"],
            "entities_per_s": manifest["size"]["customers"] / seconds, "peak_rss_mb": peak_rss_mb()}


def read(manifest: dict, iterations: int) -> dict:
    store, view = open_store(manifest)
    features = [f"{view.name}:{name}" for name in manifest["features"]]
    customers = manifest["size"]["customers"]
    rng = np.random.default_rng(1)
    result = {}
    for batch in (1, 100):
        latencies = []
        for i in range(iterations + WARMUP):
            rows = [{"customer_id": int(k)} for k in rng.integers(1, customers + 1, size=batch)]
            began = time.perf_counter()
            answer = store.get_online_features(features=features, entity_rows=rows).to_dict()
            elapsed = time.perf_counter() - began
            if i >= WARMUP:
                latencies.append(elapsed)
        assert answer["f0"][0] is not None, "Feast read no value: was materialize run?"
        result.update(figures(batch, latencies))
    return result


if __name__ == "__main__":
    command, manifest = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    if command == "historical":
        outcome = historical(manifest, sys.argv[3])
    elif command == "materialize":
        outcome = materialize(manifest)
    elif command == "read":
        outcome = read(manifest, int(sys.argv[3]))
    else:
        raise SystemExit(f"unknown command {command!r}: historical, materialize or read")
    print(json.dumps(outcome))
