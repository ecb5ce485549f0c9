"""bench/run's harness at tiny size: the workloads build, every side of a benchmark runs and the
values the benchmarks compare agree. Timings are printed by bench/run and never asserted here.

Feast's side needs its own venv (bench/peers/setup_feast.sh, ~1 min to install): the smoke
test covers our side and the raw ceilings, which need nothing but the project's venv and Redis.
"""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

import harness  # noqa: E402
import workloads  # noqa: E402


def redis_url() -> str:
    return os.environ.get("FP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def run_side(tmp_path, script, *args) -> dict:
    environment = {**os.environ, "FP_BENCH_REDIS_URL": redis_url()}
    done = subprocess.run([sys.executable, str(REPO / "bench" / script), *map(str, args)], capture_output=True,
                          text=True, cwd=tmp_path, env=environment, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_workload_a_sides_agree_and_report_timings(tmp_path, monkeypatch):
    monkeypatch.setattr(workloads, "DATA", tmp_path / "data")
    # A project of this run's own: the sides write the manifest's project's keys in the tests'
    # Redis db, where another suite's smoke test (or bench/run's "bench") may be at work.
    monkeypatch.setattr(workloads, "PROJECT", f"bench_smoke_{uuid.uuid4().hex[:8]}")
    size = workloads.SizeA(customers=200, rows=4_000, entity_rows=500, days=10)
    manifest = workloads.build_workload_a(size)
    assert manifest["project"] == workloads.PROJECT
    path = workloads.a_paths(size)["manifest"]
    assert len(list(Path(manifest["history_glob"]).parent.glob("*.parquet"))) <= size.days * 24
    ours = run_side(tmp_path, "ours.py", "historical", path, tmp_path / "ours.parquet")
    raw = run_side(tmp_path, "ceilings.py", "asof", path, tmp_path / "raw.parquet")
    assert ours["rows"] == raw["rows"] == 500 and ours["seconds"] > 0 and raw["peak_rss_mb"] > 0
    ours_frame, raw_frame = pd.read_parquet(tmp_path / "ours.parquet"), pd.read_parquet(tmp_path / "raw.parquet")
    assert harness.frames_equal(ours_frame, raw_frame, manifest["features"]) == 0
    assert ours_frame["f0"].notna().sum() > 400  # most rows find a value: the comparison means something

    client = redis.Redis.from_url(redis_url())
    prefix = f"fp:{manifest['project']}:{manifest['view']}:"
    try:
        synced = run_side(tmp_path, "ours.py", "sync", path)
        assert synced["entities"] == 200
        assert sum(1 for _ in client.scan_iter(match=f"{prefix}*", count=1000)) >= 200  # under this run's project
        reads = run_side(tmp_path, "ours.py", "read", path, 20)
        raw_reads = run_side(tmp_path, "ceilings.py", "redis-read", path, 20)
        assert {"p50_ms_1", "p99_ms_1", "p50_ms_100", "p99_ms_100"} <= set(reads) & set(raw_reads)
        assert len(reads["ms_100"]) == 20
        assert {"p50_ms_1_dict", "p99_ms_1_dict", "p99_ms_100_dict"} <= set(reads) and len(reads["ms_1_dict"]) == 20
    finally:
        stale = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if stale:
            client.delete(*stale)


def test_workload_b_pandas_engine_equals_the_hand_written_sql(tmp_path, monkeypatch):
    monkeypatch.setattr(workloads, "DATA", tmp_path / "data")
    log = workloads.build_workload_b(5_000)
    changes = pd.read_parquet(log)
    assert set(changes["_op"]) == {"c", "u", "d"}
    late = (changes["_commit_time"] - changes["order_date"]) > pd.Timedelta(days=1)
    assert late.any(), "workload B must hold late arrivals"
    pandas_run = run_side(tmp_path, "ours.py", "cdc", "pandas", log, tmp_path / "pandas.parquet")
    sql_run = run_side(tmp_path, "ceilings.py", "cdc-sql", log, tmp_path / "sql.parquet")
    assert pandas_run["rows"] == sql_run["rows"] > 5_000
    assert harness.compare_histories(tmp_path / "pandas.parquet", tmp_path / "sql.parquet") == 0


def test_workload_b_from_debezium_files_pandas_engine_equals_the_hand_written_sql(tmp_path, monkeypatch):
    """Workload B as the CDC figure uses it: the demo's Debezium batch files through the
    platform's decoder and change-log build, then the pandas engine against the SQL."""
    monkeypatch.setattr(workloads, "DATA", tmp_path / "data")
    log = workloads.build_workload_b_debezium(3_000, days=4)
    ingest = json.loads((log.parent / "ingest.json").read_text())
    changes = pd.read_parquet(log)
    assert {"c", "u", "d"} <= set(changes["_op"])
    assert ingest["change_log_rows"] == len(changes) == ingest["records_in"] - ingest["duplicates_dropped"]
    assert not (log.parent / "work").exists()  # the landing zone and staging are not kept
    pandas_run = run_side(tmp_path, "ours.py", "cdc", "pandas", log, tmp_path / "pandas.parquet")
    sql_run = run_side(tmp_path, "ceilings.py", "cdc-sql", log, tmp_path / "sql.parquet")
    assert pandas_run["rows"] == sql_run["rows"] > 1_000
    assert harness.compare_histories(tmp_path / "pandas.parquet", tmp_path / "sql.parquet") == 0
