"""Online read latency of get_online_features on workload A (full size), N entities per call; run from the repository root:

    .venv/bin/python -m pyinstrument -r text bench/profiles/profile_online_read.py N
"""
import sys, json, time
sys.path.insert(0, "bench")
from ours import store_for
from datetime import datetime
import numpy as np
m = json.load(open("bench/.data/a-100000-2000000-200000/manifest.json"))
store = store_for(m)
features = [f"hourly_stats:{f}" for f in m["features"]]
rt = datetime.fromisoformat(m["end"])
n = int(sys.argv[1])
rng = np.random.default_rng(1)
for i in range(50):
    store.get_online_features([{"customer_id": int(k)} for k in rng.integers(1, 100000, size=n)], features=features, request_time=rt)
t = time.perf_counter()
for i in range(500):
    store.get_online_features([{"customer_id": int(k)} for k in rng.integers(1, 100000, size=n)], features=features, request_time=rt)
print("mean ms", (time.perf_counter()-t)/500*1000)
