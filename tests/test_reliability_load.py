"""A small run of bench/load_server.py in the suite: the real ``feature-platform serve`` process
under concurrent keep-alive load answers every request with 200 and the entities asked for.
The full run (20,000 requests) records throughput and p99 in bench/RESULTS.md.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

LOAD = Path(__file__).resolve().parents[1] / "bench" / "load_server.py"


@pytest.mark.timeout(180)
def test_feature_server_answers_a_bounded_load_without_errors():
    done = subprocess.run([sys.executable, str(LOAD), "--requests", "300", "--concurrency", "6",
                           "--entities", "20", "--customers", "100", "--json"],
                          capture_output=True, text=True, timeout=170, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["requests"] == 300 and result["errors"] == 0, result
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]
