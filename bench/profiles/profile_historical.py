"""Profile of FeatureStore.get_historical_features on workload A (full size):
.venv/bin/python -m pyinstrument -r text bench/profiles/profile_historical.py"""
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ours import store_for  # noqa: E402

manifest = json.loads((Path(__file__).resolve().parents[1] / ".data" / "a-100000-2000000-200000" / "manifest.json").read_text())
store = store_for(manifest)
entity_df = pd.read_parquet(manifest["entity_df"])
began = time.perf_counter()
store.get_historical_features(entity_df, features=[f"{manifest['view']}:{name}" for name in manifest["features"]])
print("seconds", time.perf_counter() - began)
