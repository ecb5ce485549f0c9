"""Is a single-run range backfill at least as fast per partition as single-partition runs?

Builds a seeded demo landing zone, then materializes the same hours of every asset twice,
into separate offline stores: once as one range run (what a UI backfill with the
single-run policy does), once as one run per hourly partition. Prints seconds per
partition for both and their ratio.

    .venv/bin/python bench/range_vs_single.py [--hours 24]
"""

import argparse
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
START = datetime(2026, 3, 1, tzinfo=timezone.utc)

RUNNER = """
import sys, time
from datetime import datetime, timedelta
from feature_platform.orchestration.runner import RangeRun, load_definitions, run_range
import dagster as dg
from feature_platform.orchestration.partitions import partition_key_of
start, hours, per_run = datetime.fromisoformat(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
defs, instance = load_definitions(), dg.DagsterInstance.ephemeral()
began = time.perf_counter()
for first in range(0, hours, per_run):
    s, e = start + timedelta(hours=first), start + timedelta(hours=min(first + per_run, hours) - 1)
    result = run_range(defs, instance, RangeRun(partition_key_of(s), partition_key_of(e), per_run), as_of=e + timedelta(hours=1))
    assert result.success, result
print(time.perf_counter() - began)
"""


def timed_materialization(data: Path, hours: int, per_run: int, project: str) -> float:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_HOME"))}
    environment.update(FP_DATA_DIR=str(data), FP_PROJECT=project, FP_PARTITIONS_START=START.isoformat(),
                       FP_REDIS_URL=os.environ.get("FP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
                       PYTHONPATH=str(REPO))
    output = subprocess.run([sys.executable, "-c", RUNNER, START.isoformat(), str(hours), str(per_run)],
                            env=environment, cwd=data, capture_output=True, text=True, check=True)
    return float(output.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=int, default=24)
    arguments = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from feature_platform.demo.generator import generate_landing_zone

    with tempfile.TemporaryDirectory() as scratch:
        results = {}
        for label, per_run in (("one range run", arguments.hours), ("one run per partition", 1)):
            data = Path(scratch) / label.replace(" ", "_")
            generate_landing_zone(data / "landing", customers=60, products=20, weeks=arguments.hours / 168 + 0.01,
                                  orders_per_day=200, end=START + timedelta(hours=arguments.hours), seed=3)
            seconds = timed_materialization(data, arguments.hours, per_run, f"bench_{per_run}")
            results[label] = seconds / arguments.hours
        range_run, single_runs = results["one range run"], results["one run per partition"]
        print(f"{'variant':<24}{'s / partition':>14}")
        for label, value in results.items():
            print(f"{label:<24}{value:>14.3f}")
        print(f"range run / single runs: {range_run / single_runs:.2f}x  (target: <= 1.00x)")


if __name__ == "__main__":
    main()
