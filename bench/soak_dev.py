"""Soak: small Debezium batches landed at a steady rate while ``scripts/dev`` (``dagster dev``:
webserver, daemon, code server) runs the platform; every batch processed exactly once.

    .venv/bin/python bench/soak_dev.py --batches 200 --interval 2      # the full run (~10 min)

tests/test_reliability_soak.py runs it with 12 batches. What is checked at the end:

* exactly once: every landed file was announced by the CDC sensor in exactly one tick (the
  sensor's announcement log lists each file id once) and staged once (one manifest each);
* no duplicated effect: the change log holds each landed order once, and Redis's
  ``order_count_30d`` of every customer equals the orders landed for it;
* every run the sensor started succeeded;
* memory: the resident set size of each long-running process (the ``dagster dev``
  processes alive from start to end, sampled from /proc through psutil every few seconds)
  is flat — its median over the last quarter of the samples is within 25 % + 40 MB of its
  median over the first quarter after start-up.

Each batch is one landing file of ``--orders-per-batch`` new orders for customers
1001..1010, committed now, written to a temporary name and renamed, as an S3 sink's PUT
appears whole.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for path in (REPO, REPO / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import psutil  # noqa: E402

from assets.feature_views import customer_orders  # noqa: E402
from feature_platform.online_store import RedisOnlineStore  # noqa: E402

CUSTOMERS = list(range(1001, 1011))
PROJECT = "soak"


def land_batch(landing: Path, number: int, orders_per_batch: int, now: datetime) -> tuple[str, Counter]:
    """One landing file of new orders, published atomically; its path and orders per customer."""
    from conftest import dumps, landing_name, ms, order_message, order_row

    relative = landing_name(0, number)
    lines, per_customer = [], Counter()
    for index in range(orders_per_batch):
        order_id = 100_000 + number * orders_per_batch + index
        customer = CUSTOMERS[order_id % len(CUSTOMERS)]
        per_customer[customer] += 1
        lines.append(dumps(order_message("c", lsn=order_id, commit_ms=ms(now), tx_id=order_id,
                                         after=order_row(order_id, day=now, purchaser=customer))))
    final = landing / relative
    final.parent.mkdir(parents=True, exist_ok=True)
    temporary = final.with_name(f".{final.name}.tmp")
    temporary.write_text("".join(line + "\n" for line in lines))
    os.replace(temporary, final)
    return relative, per_customer


class RssSampler:
    """RSS of the processes under ``root_pid`` that live through the whole soak."""

    def __init__(self, root_pid: int):
        self.root = psutil.Process(root_pid)
        self.samples: dict[int, list[int]] = {}
        self.names: dict[int, str] = {}

    def sample(self) -> None:
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        for process in processes:
            try:
                rss = process.memory_info().rss
                self.names.setdefault(process.pid, " ".join(process.cmdline()[:4])[-90:])
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            self.samples.setdefault(process.pid, []).append(rss)

    def long_running(self) -> dict[int, list[int]]:
        """Processes seen in (nearly) every sample: not the short-lived run workers."""
        most = max((len(v) for v in self.samples.values()), default=0)
        return {pid: values for pid, values in self.samples.items() if len(values) >= 0.9 * most}

    def report(self) -> list[dict]:
        rows = []
        for pid, values in self.long_running().items():
            quarter = max(1, len(values) // 4)
            early = statistics.median(values[quarter:2 * quarter] or values[:quarter])  # after start-up
            late = statistics.median(values[-quarter:])
            rows.append({"pid": pid, "process": self.names.get(pid, "?"), "samples": len(values),
                         "early_mb": round(early / 2**20, 1), "late_mb": round(late / 2**20, 1),
                         "flat": late <= early * 1.25 + 40 * 2**20})
        return rows


def overlapping_sensor_runs(instance) -> list[tuple[str, str]]:
    """Pairs of CDC sensor runs that were in progress at the same time (the instance's run queue
    lets one run at a time: an older run finishing last would leave its partitions behind)."""
    import dagster as dg

    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/sensor_name": "cdc_landing_sensor"}))
    spans = sorted((r.start_time, r.end_time or float("inf"), r.dagster_run.run_id)
                   for r in records if r.start_time is not None)
    return [(earlier[2], later[2]) for earlier, later in zip(spans, spans[1:]) if later[0] < earlier[1]]


def soak(batches: int, interval: float, orders_per_batch: int, workdir: Path, timeout: float) -> dict:
    from conftest import dagster_ui_answers
    from feature_platform.cdc.change_log import file_id
    from feature_platform.embedded_redis import find_free_port, start_embedded_redis
    from feature_platform.storage import Store

    import dagster as dg
    import pyarrow.parquet as pq
    import redis

    data, home, log = workdir / "data", workdir / "dagster_home", workdir / "dev.log"
    port = find_free_port()
    now = datetime.now(timezone.utc)
    began = time.monotonic()
    with start_embedded_redis() as redis_server:
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_"))}
        environment.update(FP_DATA_DIR=str(data), FP_DAGSTER_HOME=str(home), FP_DAGSTER_PORT=str(port),
                           FP_SKIP_DEMO_DATA="1", FP_NO_INSTALL="1", FP_PROJECT=PROJECT,
                           FP_REDIS_URL=redis_server.url,
                           # Launching a run is a gRPC call to the code server, 60 s by default; on a
                           # 2-core machine shared with other test runs (load average 30+) it was
                           # seen to take longer, failing the run before it started.
                           DAGSTER_GRPC_TIMEOUT_SECONDS=os.environ.get("DAGSTER_GRPC_TIMEOUT_SECONDS", "300"),
                           FP_PARTITIONS_START=(now.replace(minute=0, second=0, microsecond=0)
                                                - timedelta(hours=2)).isoformat())
        (data / "landing").mkdir(parents=True)
        with log.open("wb") as output:
            dev = subprocess.Popen([str(REPO / "scripts" / "dev")], cwd=REPO, env=environment, stdout=output,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        sampler = RssSampler(dev.pid)
        try:
            deadline = began + timeout

            def check_alive(what: str) -> None:
                if dev.poll() is not None:
                    raise RuntimeError(f"scripts/dev exited ({dev.returncode}) {what}:\n{log.read_text()[-4000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"soak did not finish within {timeout:.0f} s {what}:\n{log.read_text()[-3000:]}")

            while not dagster_ui_answers(port):
                check_alive("while starting")
                time.sleep(1)
            started = time.monotonic()
            landed: dict[str, Counter] = {}
            next_sample = 0.0
            for number in range(batches):
                check_alive("while landing")
                relative, per_customer = land_batch(data / "landing", number, orders_per_batch,
                                                    datetime.now(timezone.utc))
                landed[relative] = per_customer
                if time.monotonic() >= next_sample:
                    sampler.sample()
                    next_sample = time.monotonic() + 3
                time.sleep(max(0.0, started + (number + 1) * interval - time.monotonic()))
            landing_seconds = time.monotonic() - started

            expected = Counter()
            for per_customer in landed.values():
                expected.update(per_customer)
            offline = Store(str(data / "offline" / PROJECT))
            client = redis.Redis.from_url(redis_server.url)
            instance = dg.DagsterInstance.from_config(str(home))

            def state() -> dict:
                # Announced ticks, and the last tick's list (promoted only by the next tick, 30 s later).
                announced_lists = [json.loads(offline.read_bytes(e.path)) for folder in ("announced", "pending")
                                   for e in offline.list_files(f"_cdc_sensor/{folder}", recursive=False)]
                announced = Counter(i for ids in announced_lists for i in ids)
                runs = instance.get_runs()
                online = RedisOnlineStore(client, PROJECT)
                counts = {c: int(online.stored_fields(customer_orders, c).get("order_count_30d") or 0)
                          for c in CUSTOMERS}
                return {"announced": announced, "runs": runs, "counts": counts}

            while True:
                check_alive("while processing")
                sampler.sample()
                current = state()
                finished = all(run.is_finished for run in current["runs"])
                # A file is announced once its tick's runs were submitted (the next tick promotes it).
                if (finished and current["counts"] == dict(expected)
                        and set(current["announced"]) >= {file_id(p) for p in landed}):
                    break
                time.sleep(3)
            processing_seconds = time.monotonic() - started - landing_seconds
            for _ in range(3):  # a few samples after the work is done
                time.sleep(2)
                sampler.sample()

            final = state()
            manifests = [e.path for e in offline.list_files("_staging/orders/_manifest", recursive=False)]
            change_log_rows = sum(pq.read_metadata(offline.local_path(e.path)).num_rows
                                  for e in offline.list_files("change_logs/orders", recursive=False))
            runs = final["runs"]
            overlapping = overlapping_sensor_runs(instance)
            instance.dispose()
            client.close()
            memory = sampler.report()
            report = {
                "batches": batches, "orders": sum(expected.values()), "interval_s": interval,
                "landing_s": round(landing_seconds, 1), "processing_after_last_batch_s": round(processing_seconds, 1),
                "runs": len(runs), "runs_failed": sum(1 for r in runs if r.status != dg.DagsterRunStatus.SUCCESS),
                "files_announced": len(final["announced"]),
                "files_announced_more_than_once": sorted(i for i, n in final["announced"].items() if n > 1),
                "manifests": len(manifests), "change_log_rows": change_log_rows,
                "redis_counts_exact": final["counts"] == dict(expected),
                "memory": memory, "memory_flat": all(row["flat"] for row in memory) and bool(memory),
                "sensor_runs_overlapping": overlapping,
            }
            report["ok"] = (report["runs_failed"] == 0 and not report["files_announced_more_than_once"]
                            and report["files_announced"] == batches and report["manifests"] == batches
                            and report["change_log_rows"] == report["orders"] and report["redis_counts_exact"]
                            and report["memory_flat"] and not report["sensor_runs_overlapping"])
            return report
        finally:
            if dev.poll() is None:
                dev.send_signal(signal.SIGTERM)
            try:
                dev.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(dev.pid, signal.SIGKILL)
                dev.wait(30)


def main() -> int:
    parser = argparse.ArgumentParser(description="Soak scripts/dev with small batches at a steady rate.")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between batches")
    parser.add_argument("--orders-per-batch", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--keep", action="store_true", help="keep the working directory")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fp-soak-"))
    report = soak(args.batches, args.interval, args.orders_per_batch, workdir, args.timeout)
    print(json.dumps(report, indent=2))
    if not args.keep:
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
