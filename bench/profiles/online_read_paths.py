"""One-entity online read, in one process, interleaved call by call on the same entities:
raw redis-py GET of the key, raw MGET of the view's synced mark and the key (what our read
sends), get_online_features_dict and get_online_features (DataFrame). Needs workload A synced
(`bench/run online-read` does it). Run from the repository root:

    .venv/bin/python bench/profiles/online_read_paths.py [CALLS]
"""
import json
import sys
import time
from datetime import datetime

import numpy as np

sys.path.insert(0, "bench")
from ours import store_for  # noqa: E402

manifest = json.load(open("bench/.data/a-100000-2000000-200000/manifest.json"))
store = store_for(manifest)
client = store.online.client
prefix = store.online.key(manifest["view"], "")
synced = store.online.synced_key(manifest["view"])
features = [f"{manifest['view']}:{name}" for name in manifest["features"]]
request_time = datetime.fromisoformat(manifest["end"])
calls = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
warmup = 1_000
rng = np.random.default_rng(1)
reads = {
    "raw GET": lambda k: client.get(f"{prefix}{k}"),
    "raw MGET (mark + key)": lambda k: client.mget([synced, f"{prefix}{k}"]),
    "get_online_features_dict": lambda k: store.get_online_features_dict(
        [{"customer_id": k}], features=features, request_time=request_time),
    "get_online_features (DataFrame)": lambda k: store.get_online_features(
        [{"customer_id": k}], features=features, request_time=request_time),
}
latencies: dict[str, list[float]] = {name: [] for name in reads}
for i in range(calls + warmup):
    entity = int(rng.integers(1, manifest["size"]["customers"] + 1))
    for name, read in reads.items():
        began = time.perf_counter()
        read(entity)
        elapsed = time.perf_counter() - began
        if i >= warmup:
            latencies[name].append(elapsed)
for name, measured in latencies.items():
    p50, p99 = (np.percentile(measured, q) * 1e6 for q in (50, 99))
    print(f"{name:34s} p50 {p50:6.0f} µs  p99 {p99:6.0f} µs")
