"""The whole pipeline on generated Debezium data, through the real CLI and Dagster runs.

* Serving equals training: after the pipeline ran up to T, every entity's online vector
  equals ``get_historical_features`` at T, for every demo view and every feature.
* Incremental equals a full recompute: landing batches in two steps — the second with late
  changes that correct old hours — gives byte-identical offline history and the same Redis
  contents as computing everything once from all batches.
"""

import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
import redis

from assets.feature_views import FEATURE_SERVICES, FEATURE_VIEWS
from feature_platform.config import Settings
from feature_platform.demo.generator import append_late_batch, append_live_batch, generate_landing_zone
from feature_platform.feature_store import FeatureStore
from feature_platform.offline_store import OfflineFeatureStore
from feature_platform.registry import Registry
from feature_platform.storage import Store

REPO = Path(__file__).resolve().parents[1]
REDIS_URL = os.environ.get("FP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
START = datetime(2026, 3, 1, tzinfo=timezone.utc)
END_OF_DEMO = datetime(2026, 3, 2, 20, 30, tzinfo=timezone.utc)


def settings_for(data: Path, project: str) -> Settings:
    return Settings(landing_uri=str(data / "landing"), offline_uri=str(data / "offline"), redis_url=REDIS_URL,
                    project=project, partitions_start=START)


def materialize_incremental(data: Path, project: str, end: datetime, cwd: Path) -> None:
    """The CLI, in its own process, with this deployment's settings (an ephemeral Dagster instance)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_HOME"))}
    environment.update(FP_DATA_DIR=str(data), FP_PROJECT=project, FP_REDIS_URL=REDIS_URL,
                       FP_PARTITIONS_START=START.isoformat(), PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "feature_platform.cli", "materialize-incremental",
                             "--end", end.isoformat()], cwd=cwd, env=environment, capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]


def store_for(data: Path, project: str) -> FeatureStore:
    return FeatureStore(settings_for(data, project), Registry.of(FEATURE_VIEWS, FEATURE_SERVICES))


def known_entities(store: FeatureStore, view) -> list:
    history = store.offline.read_history(view, START)
    return sorted(set(history.column(view.entity.join_key).to_pylist()))


@pytest.fixture
def projects():
    names = []

    def new(prefix: str) -> str:
        names.append(f"{prefix}_{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield new
    client = redis.Redis.from_url(REDIS_URL)
    for name in names:
        for key in client.scan_iter(match=f"fp:{name}:*", count=1000):
            client.delete(key)


@pytest.mark.timeout(900)
def test_online_equals_offline_for_every_demo_view(tmp_path, projects):
    data = tmp_path / "data"
    generate_landing_zone(data / "landing", customers=40, products=12, weeks=2 / 7, orders_per_day=80,
                          end=END_OF_DEMO, seed=11)
    project = projects("parity")
    materialize_incremental(data, project, END_OF_DEMO, tmp_path)
    store = store_for(data, project)
    for view in FEATURE_VIEWS:
        synced = store.online.synced_through(view)
        assert synced == END_OF_DEMO, f"{view.name} synced through {synced}"
        keys = known_entities(store, view) + [999_999]  # and one entity that never existed
        assert len(keys) > 5, f"{view.name}: the demo should give it entities"
        references = [f"{view.name}:{name}" for name in view.feature_names]
        online = store.get_online_features([{view.entity.join_key: k} for k in keys], features=references,
                                           request_time=synced)
        assert online.stale == []
        offline = store.get_historical_features(
            pd.DataFrame({view.entity.join_key: keys, "event_timestamp": [synced] * len(keys)}), features=references)
        for name in view.feature_names:
            served, trained = online[name].tolist(), offline[name].tolist()
            mismatches = [(k, s, t) for k, s, t in zip(keys, served, trained)
                          if not ((pd.isna(s) and pd.isna(t)) or (not pd.isna(s) and not pd.isna(t) and s == t))]
            assert not mismatches, f"{view.name}:{name} online != offline for {mismatches[:5]}"


@pytest.mark.timeout(900)
def test_incremental_batches_equal_a_full_recompute(tmp_path, projects):
    incremental, full = tmp_path / "incremental", tmp_path / "full"
    generate_landing_zone(incremental / "landing", customers=30, products=10, weeks=1 / 7, orders_per_day=80,
                          end=END_OF_DEMO, seed=5)
    first_project, second_project = projects("incremental"), projects("full")
    materialize_incremental(incremental, first_project, END_OF_DEMO, tmp_path)

    # Later batches arrive: the next half hour live, then a batch committed 20 hours ago
    # that lands only now (it corrects every value from its commit on).
    for minutes in (10, 20, 30):
        append_live_batch(incremental / "landing", now=END_OF_DEMO + timedelta(minutes=minutes), seed=minutes)
    late = append_late_batch(incremental / "landing", age=timedelta(hours=20),
                             now=END_OF_DEMO + timedelta(minutes=31), seed=99, orders=6)
    assert late, "the generator wrote no late batch"
    second_end = END_OF_DEMO + timedelta(minutes=45)
    materialize_incremental(incremental, first_project, second_end, tmp_path)

    shutil.copytree(incremental / "landing", full / "landing")
    materialize_incremental(full, second_project, second_end, tmp_path)

    incremental_store, full_store = store_for(incremental, first_project), store_for(full, second_project)
    for view in FEATURE_VIEWS:
        a = OfflineFeatureStore(Store(incremental_store.settings.project_offline_root))
        b = OfflineFeatureStore(Store(full_store.settings.project_offline_root))
        hours = a.partition_hours(view)
        assert hours == b.partition_hours(view) and hours, view.name
        for hour in hours:
            left = a.store.read_bytes(a.partition_path(view, hour))
            right = b.store.read_bytes(b.partition_path(view, hour))
            assert left == right, f"{view.name} partition {hour:%Y-%m-%dT%H} differs"
        keys = known_entities(full_store, view)
        references = [f"{view.name}:{name}" for name in view.feature_names]
        rows = [{view.entity.join_key: k} for k in keys]
        left = incremental_store.get_online_features(rows, features=references, request_time=second_end)
        right = full_store.get_online_features(rows, features=references, request_time=second_end)
        pd.testing.assert_frame_equal(left, right, check_dtype=True)
