"""Our platform's side of each benchmark, one measured call per process (bench/run starts these).

    ours.py historical MANIFEST OUT.parquet        FeatureStore.get_historical_features
    ours.py sync MANIFEST                          online sync (sync_view: DuckDB latest rows -> Redis)
    ours.py read MANIFEST ITERATIONS               FeatureStore.get_online_features p50/p99, 1 and 100 entities
    ours.py cdc ENGINE CHANGE_LOG OUT.parquet      feature history of workload B (pandas or spark)
    ours.py sync-file HISTORY.parquet              online sync of a history file (the 1M-entity memory figure)

Each prints one JSON object on its last line: seconds of the measured call, and the peak
RSS of this process and its children (Spark's JVM), sampled every 20 ms.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import workloads  # noqa: E402
from latency import WARMUP, figures  # noqa: E402
from feature_platform.config import Settings  # noqa: E402
from feature_platform.feature_store import FeatureStore  # noqa: E402
from feature_platform.online_store import RedisOnlineStore  # noqa: E402
from feature_platform.redis_client import connect  # noqa: E402
from feature_platform.registry import Registry  # noqa: E402

REDIS_URL = os.environ.get("FP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")


class PeakRss:
    """Peak resident memory of this process plus its children, sampled in a thread."""

    def __init__(self, interval: float = 0.02):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> int:
        me = psutil.Process()
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sample())
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRss":
        self.peak = self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._sample())

    @property
    def mb(self) -> float:
        return self.peak / 2**20


def store_for(manifest: dict) -> FeatureStore:
    settings = Settings(landing_uri="", offline_uri=manifest["offline_root"], redis_url=REDIS_URL,
                        project=manifest["project"], partitions_start=datetime.fromisoformat(manifest["start"]))
    return FeatureStore(settings, Registry.of([workloads.hourly_stats]))


def clear_view(online: RedisOnlineStore, view_name: str) -> None:
    """Delete this view's keys (and only them) from the benchmark's Redis db."""
    keys = list(online.client.scan_iter(match=f"{online.key(view_name, '')}*", count=5000))
    for i in range(0, len(keys), 5000):
        online.client.delete(*keys[i:i + 5000])


def historical(manifest: dict, out: str) -> dict:
    store = store_for(manifest)
    entity_df = pd.read_parquet(manifest["entity_df"])
    features = [f"{manifest['view']}:{name}" for name in manifest["features"]]
    with PeakRss() as rss:
        began = time.perf_counter()
        frame = store.get_historical_features(entity_df, features=features)
        seconds = time.perf_counter() - began
    frame.to_parquet(out)
    return {"seconds": seconds, "rows": len(frame), "peak_rss_mb": rss.mb}


def sync(manifest: dict) -> dict:
    from feature_platform.orchestration.online_assets import sync_view

    store = store_for(manifest)
    online, start = store.online, datetime.fromisoformat(manifest["start"])
    clear_view(online, manifest["view"])
    with PeakRss() as rss:
        began = time.perf_counter()
        result = sync_view(workloads.hourly_stats, store.offline, online, start, start)
        seconds = time.perf_counter() - began
    written = result["entities_written"]
    assert written == manifest["size"]["customers"], result
    return {"seconds": seconds, "entities": written, "entities_per_s": written / seconds, "peak_rss_mb": rss.mb}


def read(manifest: dict, iterations: int) -> dict:
    """Latencies of the SDK's two online reads on the same entities, in turn: the DataFrame
    (``get_online_features``) and plain Python values (``get_online_features_dict``, the shape
    of Feast's ``.to_dict()``, which its side measures)."""
    store = store_for(manifest)
    features = [f"{manifest['view']}:{name}" for name in manifest["features"]]
    customers = manifest["size"]["customers"]
    rng = np.random.default_rng(1)
    # Ask as of the data's end: the view's synced-through time is the workload's end, in the past.
    request_time = datetime.fromisoformat(manifest["end"])
    reads = {"": store.get_online_features, "_dict": store.get_online_features_dict}
    result = {}
    for batch in (1, 100):
        latencies: dict[str, list] = {suffix: [] for suffix in reads}
        for i in range(iterations + WARMUP):
            rows = [{"customer_id": int(k)} for k in rng.integers(1, customers + 1, size=batch)]
            # Alternate which goes first, so neither always finds the other's work in the caches.
            for suffix in (("", "_dict") if i % 2 else ("_dict", "")):
                began = time.perf_counter()
                answer = reads[suffix](rows, features=features, request_time=request_time)
                elapsed = time.perf_counter() - began
                if i >= WARMUP:
                    latencies[suffix].append(elapsed)
                assert not answer.stale and all(pd.notna(v) for v in list(answer["f0"])), \
                    "no values online: was the sync run?"
        for suffix, measured in latencies.items():
            result.update(figures(batch, measured, suffix=suffix))
    return result


def cdc(engine: str, change_log: str, out: str) -> dict:
    import pyarrow.parquet as pq

    from feature_platform.engines.pandas_engine import HistoryRange, compute_history

    end = int((workloads.START + timedelta(days=200)).timestamp() * 1_000_000)
    emit = HistoryRange(None, end)
    extra = {}
    if engine == "spark":
        from feature_platform.engines.spark_engine import compute_history_spark
        from feature_platform.engines.spark_session import get_spark

        began = time.perf_counter()
        from feature_platform.config import parse_spark_conf

        # FP_SPARK_CONF as the platform reads it (e.g. spark.driver.memory=8g for 16M events)
        spark = get_spark(os.environ.get("FP_SPARK_MASTER", "local[2]"),
                          **parse_spark_conf(os.environ.get("FP_SPARK_CONF", "")))
        extra["session_start_s"] = time.perf_counter() - began
    with PeakRss() as rss:
        began = time.perf_counter()
        if engine == "pandas":
            history = compute_history(pq.read_table(change_log), workloads.customer_spend, emit)
        else:
            history = compute_history_spark(spark, [change_log], workloads.customer_spend, emit)
        seconds = time.perf_counter() - began
    if engine == "spark":
        # The same computation again in the now warm JVM: what a long-lived session (a Spark
        # Connect server, a notebook) pays, beside the first query's JIT warm-up counted above.
        began = time.perf_counter()
        again = compute_history_spark(spark, [change_log], workloads.customer_spend, emit)
        extra["warm_seconds"] = time.perf_counter() - began
        assert again.equals(history), "the second Spark run differs from the first"
    pq.write_table(history, out)
    return {"seconds": seconds, "rows": history.num_rows, "peak_rss_mb": rss.mb, **extra}


def sync_file(history: str) -> dict:
    """Online sync of every entity's latest row of one history file (streamed in batches)."""
    from feature_platform.orchestration.online_assets import latest_rows

    online = RedisOnlineStore(connect(REDIS_URL), "benchmem")
    view = workloads.hourly_stats
    clear_view(online, view.name)
    with PeakRss() as rss:
        began = time.perf_counter()
        summary = online.write_latest(view, latest_rows([history], view.entity.join_key))
        seconds = time.perf_counter() - began
    clear_view(online, view.name)
    return {"seconds": seconds, "entities": summary.applied, "entities_per_s": summary.applied / seconds,
            "peak_rss_mb": rss.mb}


if __name__ == "__main__":
    command = sys.argv[1]
    if command in ("historical", "sync", "read"):
        manifest = json.loads(Path(sys.argv[2]).read_text())
        outcome = {"historical": lambda: historical(manifest, sys.argv[3]), "sync": lambda: sync(manifest),
                   "read": lambda: read(manifest, int(sys.argv[3]))}[command]()
    elif command == "cdc":
        outcome = cdc(sys.argv[2], sys.argv[3], sys.argv[4])
    elif command == "sync-file":
        outcome = sync_file(sys.argv[2])
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(outcome))
