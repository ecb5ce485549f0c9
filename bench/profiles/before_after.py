"""Before/after of this session's performance edits, interleaved in one process on workload A.

    .venv/bin/python bench/profiles/before_after.py [BASE_COMMIT]

Loads feature_store.py, online_store.py and historical.py as they were at BASE_COMMIT (default
1a57366, before the edits) next to the current ones, and times the same calls alternately
(old, new, old, new...), so load on this shared machine falls on both alike.
"""

import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parents[1]
REPO = BENCH.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(BENCH))

import ours  # noqa: E402
import workloads  # noqa: E402
from feature_platform import historical, online_store  # noqa: E402
from feature_platform.orchestration.online_assets import latest_rows  # noqa: E402
from feature_platform.redis_client import connect  # noqa: E402


def old_module(base: str, name: str, scratch: Path):
    source = subprocess.run(["git", "show", f"{base}:feature_platform/{name}.py"], cwd=REPO, check=True,
                            capture_output=True, text=True).stdout
    path = scratch / f"old_{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"old_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def percentiles(values) -> str:
    return f"p50 {np.percentile(values, 50) * 1000:.3f} ms, p99 {np.percentile(values, 99) * 1000:.3f} ms"


def main(base: str) -> None:
    manifest = json.loads(workloads.a_paths(workloads.SIZES_A["full"])["manifest"].read_text())
    with tempfile.TemporaryDirectory() as scratch:
        old_fs = old_module(base, "feature_store", Path(scratch))
        old_os = old_module(base, "online_store", Path(scratch))
        old_hist = old_module(base, "historical", Path(scratch))
    new_store = ours.store_for(manifest)
    old_store = old_fs.FeatureStore(new_store.settings, new_store.registry)
    features = [f"{manifest['view']}:{name}" for name in manifest["features"]]
    request_time = datetime.fromisoformat(manifest["end"])
    rng = np.random.default_rng(3)
    for batch in (1, 100):
        timings = {"before": [], "after": []}
        for _ in range(1500):
            rows = [{"customer_id": int(k)} for k in rng.integers(1, manifest["size"]["customers"] + 1, size=batch)]
            for label, store in (("before", old_store), ("after", new_store)):
                began = time.perf_counter()
                store.get_online_features(rows, features=features, request_time=request_time)
                timings[label].append(time.perf_counter() - began)
        for label, values in timings.items():
            print(f"get_online_features, {batch} entities, {label}: {percentiles(values[100:])}")

    view = workloads.hourly_stats
    paths = sorted(Path(manifest["history_glob"]).parent.glob("*.parquet"))
    batches = list(latest_rows([str(p) for p in paths], view.entity.join_key))
    client = connect(ours.REDIS_URL)
    for _ in range(2):
        for label, module in (("before", old_os), ("after", online_store)):
            store = module.RedisOnlineStore(client, "benchab")
            ours.clear_view(store, view.name)
            began = time.perf_counter()
            store.write_latest(view, iter(batches))
            seconds = time.perf_counter() - began
            print(f"write_latest, {sum(b.num_rows for b in batches):,} entities, {label}: {seconds:.2f} s "
                  f"({sum(b.num_rows for b in batches) / seconds:,.0f} entities/s)")
            ours.clear_view(store, view.name)

    entity_df = historical.normalize_entity_df(pd.read_parquet(manifest["entity_df"]), ["customer_id"])
    offline, first = new_store.offline, new_store.settings.partitions_start
    files, horizon = offline.history_files(view, first), offline.horizon(view, first)
    for _ in range(2):
        for label, module in (("before", old_hist), ("after", historical)):
            began = time.perf_counter()
            module.lookup_view(entity_df, view, files, horizon, list(manifest["features"]))
            print(f"lookup_view, {len(entity_df):,} rows, {label}: {time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "1a57366")
