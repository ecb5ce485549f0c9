"""Soak, small: 12 batches landed 1.5 s apart while ``scripts/dev`` runs ``dagster dev``
(bench/soak_dev.py; the full 200-batch run is that script outside the suite). Every batch is
announced and staged exactly once, every sensor run succeeds (one at a time), the change log and Redis hold
each order exactly once, and the long-running processes' memory stays flat.
"""

import pytest

from conftest import load_bench_script


@pytest.mark.timeout(420)
def test_small_soak_under_dagster_dev_processes_every_batch_exactly_once(tmp_path):
    soak_dev = load_bench_script("soak_dev")
    report = soak_dev.soak(batches=12, interval=1.5, orders_per_batch=3, workdir=tmp_path, timeout=380)
    print(report)  # shown with -s: the timings and memory figures
    assert report["runs"] >= 1 and report["runs_failed"] == 0, report
    assert report["files_announced"] == report["manifests"] == 12, report
    assert report["files_announced_more_than_once"] == [], report
    assert report["change_log_rows"] == report["orders"] == 36, report
    assert report["redis_counts_exact"], report
    assert report["sensor_runs_overlapping"] == [], report  # the run queue takes sensor runs one at a time
    assert len(report["memory"]) >= 3, report  # webserver, daemon, code server (and the launcher)
    assert report["memory_flat"], report["memory"]
