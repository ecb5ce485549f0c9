"""Freshness: from a CDC batch landing to its values being readable in Redis, through `dagster dev`.

    freshness.py BATCHES

Starts ``scripts/dev`` (the README's command: ``dagster dev`` with the CDC sensor on) over a
fresh demo landing zone of a few hours, waits for the first sync of ``online/customer_orders``,
then lands BATCHES live batches (``append_live_batch``: the demo's orders committed in the last
minute) one after another. For each it measures the seconds from the batch's files landing to
the view's ``synced_through`` in Redis reaching that instant (a sync writes every entity's
latest values before it moves ``synced_through``, so from then on the batch is readable).
Prints p50 and max as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from feature_platform.demo.generator import append_live_batch, generate_landing_zone  # noqa: E402
from feature_platform.online_store import RedisOnlineStore  # noqa: E402

REDIS_URL = os.environ.get("FP_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
PROJECT = "benchfresh"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def synced_through(client: redis.Redis) -> datetime | None:
    return RedisOnlineStore(client, PROJECT).synced_through("customer_orders")


def wait_for(predicate, timeout: float, what: str, process: subprocess.Popen, log: Path, poll: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"scripts/dev exited while waiting for {what}:\n{log.read_text()[-3000:]}")
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n{log.read_text()[-3000:]}")


def clear(client: redis.Redis) -> None:
    keys = list(client.scan_iter(match=f"fp:{PROJECT}:*", count=5000))
    for i in range(0, len(keys), 5000):
        client.delete(*keys[i:i + 5000])


def main(batches: int) -> dict:
    client = redis.Redis.from_url(REDIS_URL)
    clear(client)
    now = datetime.now(timezone.utc)
    hour = now.replace(minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory(prefix="fp-bench-fresh-") as scratch:
        data, home, log = Path(scratch) / "data", Path(scratch) / "home", Path(scratch) / "dev.log"
        generate_landing_zone(data / "landing", weeks=0.1, customers=200, orders_per_day=240, end=now)
        port = free_port()
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_"))}
        environment.update(FP_DATA_DIR=str(data), FP_DAGSTER_HOME=str(home), FP_DAGSTER_PORT=str(port),
                           FP_SKIP_DEMO_DATA="1", FP_NO_INSTALL="1", FP_PROJECT=PROJECT, FP_REDIS_URL=REDIS_URL,
                           FP_PARTITIONS_START=(hour - timedelta(hours=2)).isoformat())
        with log.open("wb") as output:
            process = subprocess.Popen([str(REPO / "scripts" / "dev")], cwd=REPO, env=environment, stdout=output,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        latencies = []
        try:
            began = time.monotonic()
            wait_for(lambda: synced_through(client), 600, "the first sync of online/customer_orders", process, log)
            startup = time.monotonic() - began
            for _ in range(batches):
                landed = datetime.now(timezone.utc)
                started = time.monotonic()
                append_live_batch(data / "landing", window_seconds=60, orders=20)
                wait_for(lambda: (synced_through(client) or landed) > landed, 600,
                         "the batch to reach Redis", process, log)
                latencies.append(time.monotonic() - started)
                print(f"batch readable after {latencies[-1]:.1f} s", file=sys.stderr, flush=True)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
            clear(client)
            # Kept for reading where the time went (sensor tick, run launch, step processes).
            (REPO / "bench" / ".data").mkdir(parents=True, exist_ok=True)
            (REPO / "bench" / ".data" / "freshness-dev.log").write_bytes(log.read_bytes())
    return {"p50_s": float(np.percentile(latencies, 50)), "max_s": max(latencies), "latencies_s": latencies,
            "first_sync_after_start_s": startup}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)))
