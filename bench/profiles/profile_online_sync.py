"""Where online sync time goes (workload A, full size): DuckDB's latest rows, then write_latest.

    .venv/bin/python bench/profiles/profile_online_sync.py
    .venv/bin/python -m pyinstrument -r text --show-all bench/profiles/profile_online_sync.py
"""

import json
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(BENCH))

import ours  # noqa: E402
import workloads  # noqa: E402
from feature_platform.online_store import RedisOnlineStore  # noqa: E402
from feature_platform.orchestration.online_assets import latest_rows  # noqa: E402
from feature_platform.redis_client import connect  # noqa: E402

manifest = json.loads(workloads.a_paths(workloads.SIZES_A["full"])["manifest"].read_text())
paths = sorted(str(p) for p in Path(manifest["history_glob"]).parent.glob("*.parquet"))
view = workloads.hourly_stats
began = time.perf_counter()
batches = list(latest_rows(paths, view.entity.join_key))
print(f"latest rows (DuckDB): {time.perf_counter() - began:.2f} s")
online = RedisOnlineStore(connect(ours.REDIS_URL), "benchprofile")
ours.clear_view(online, view.name)
began = time.perf_counter()
summary = online.write_latest(view, iter(batches))
print(f"write_latest: {time.perf_counter() - began:.2f} s for {summary.applied:,} entities")
ours.clear_view(online, view.name)
