"""Load the HTTP feature server on loopback: a fixed number of requests, throughput and p99.

    .venv/bin/python bench/load_server.py                       # 20,000 requests, 8 connections
    .venv/bin/python bench/load_server.py --requests 300 --json # a quick check (CI runs about this)
    .venv/bin/python bench/load_server.py --record              # also write bench/RESULTS.md

What runs: a private redis-server (feature_platform/embedded_redis.py) holding the latest
values of the ``churn_model`` service's views for ``--customers`` customers; the real
``feature-platform serve`` process in front of it; and ``--concurrency`` client threads,
each on one keep-alive HTTP/1.1 connection, sending ``POST /get-online-features`` for
``--entities`` random customers until ``--requests`` requests have been answered. Every
answer must be 200 with one value per entity; anything else counts as an error (exit 1).

The load generator shares the machine (and Python's GIL) with the server: on a 2-core box
the figures are a floor, not the server's capacity.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import pyarrow as pa  # noqa: E402

RESULTS = REPO / "bench" / "RESULTS.md"
SECTION = "## Feature server load"
SERVICE = "churn_model"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _value(field: pa.Field, key: int, now: datetime):
    kind = field.type
    if pa.types.is_boolean(kind):
        return key % 2 == 0
    if pa.types.is_integer(kind):
        return key % 97
    if pa.types.is_decimal(kind):
        return Decimal(key % 1000) + Decimal("0.25")
    if pa.types.is_floating(kind):
        return key / 7
    if pa.types.is_timestamp(kind):
        return now - timedelta(days=key % 20)
    if pa.types.is_date(kind):
        return (now - timedelta(days=key % 20)).date()
    return f"value-{key}"


def populate(redis_url: str, project: str, customers: int) -> None:
    """Each view of the service gets one latest row per customer, synced through now."""
    from assets.feature_views import FEATURE_SERVICES, FEATURE_VIEWS
    from feature_platform.online_store import RedisOnlineStore
    from feature_platform.redis_client import connect

    service = next(s for s in FEATURE_SERVICES if s.name == SERVICE)
    views = {reference.split(":")[0] for reference in service.features}
    now = datetime.now(timezone.utc)
    store = RedisOnlineStore(connect(redis_url), project)
    for view in (v for v in FEATURE_VIEWS if v.name in views):
        schema = view.history_schema()
        rows = []
        for key in range(1, customers + 1):
            row = {f.name: _value(f, key, now) for f in schema}
            row.update({view.entity.join_key: key, "valid_from": now - timedelta(minutes=key % 50)})
            if "_deleted" in schema.names:
                row["_deleted"] = False
            rows.append(row)
        store.write_latest(view, pa.Table.from_pylist(rows, schema=schema).to_batches(max_chunksize=5000))
        store.advance_synced_through(view, now)
    store.client.close()


@contextlib.contextmanager
def feature_server(redis_url: str, project: str, *, max_entities: int = 1000, log: Path | None = None):
    """``feature-platform serve`` in its own process on a free loopback port; yields the port."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FP_")}
    environment.update(FP_REDIS_URL=redis_url, FP_PROJECT=project, PYTHONPATH=str(REPO))
    output = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "feature_platform.cli", "serve", "--port", str(port),
                                "--max-entities", str(max_entities), "--log-level", "warning"],
                               cwd=REPO, env=environment, stdout=output, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"feature-platform serve exited with {process.returncode}")
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    connection.close()
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("feature-platform serve did not answer /health within 60 s")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(15)
        if log:
            output.close()


def run_load(port: int, requests: int, concurrency: int, entities: int, customers: int, seed: int = 1) -> dict:
    """Send exactly ``requests`` requests over ``concurrency`` keep-alive connections."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    remaining = [requests]

    def worker(number: int) -> None:
        chooser = random.Random(seed * 1000 + number)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                keys = chooser.sample(range(1, customers + 1), entities)
                body = json.dumps({"feature_service": SERVICE, "entities": {"customer_id": keys}}).encode()
                began = time.perf_counter()
                try:
                    connection.request("POST", "/get-online-features", body=body,
                                       headers={"Content-Type": "application/json"})
                    response = connection.getresponse()
                    payload = response.read()
                    elapsed = time.perf_counter() - began
                    problem = None
                    if response.status != 200:
                        problem = f"HTTP {response.status}: {payload[:200]!r}"
                    else:
                        answer = json.loads(payload)
                        if answer["results"][0]["values"] != keys:
                            problem = "the answer is not for the entities asked"
                except (OSError, http.client.HTTPException, ValueError) as error:
                    elapsed, problem = time.perf_counter() - began, f"{type(error).__name__}: {error}"
                    connection.close()
                    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                with lock:
                    latencies.append(elapsed)
                    if problem:
                        errors.append(problem)
        finally:
            connection.close()

    began = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    ordered = sorted(latencies)

    def percentile(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000

    return {"requests": len(latencies), "errors": len(errors), "first_errors": errors[:5],
            "concurrency": concurrency, "entities_per_request": entities, "seconds": round(wall, 2),
            "requests_per_second": round(len(latencies) / wall, 1), "p50_ms": round(percentile(50), 2),
            "p99_ms": round(percentile(99), 2), "max_ms": round(ordered[-1] * 1000, 2)}


def record(result: dict, command: str) -> None:
    """Write (or replace) this script's section of bench/RESULTS.md, leaving the others alone."""
    load = os.getloadavg()[0]
    section = (
        f"{SECTION}\n\n"
        f"`{command}` — {datetime.now(timezone.utc):%Y-%m-%d}, load average {load:.1f} when it ended "
        f"(other test runs shared the 2 cores)\n\n"
        "| requests | connections | entities / request | errors | req/s | p50 ms | p99 ms | max ms |\n"
        "|---|---|---|---|---|---|---|---|\n"
        f"| {result['requests']} | {result['concurrency']} | {result['entities_per_request']} | {result['errors']} "
        f"| {result['requests_per_second']} | {result['p50_ms']} | {result['p99_ms']} | {result['max_ms']} |\n\n"
        f"`feature-platform serve` (uvicorn, one process) on loopback in front of a private redis-server; "
        f"`POST /get-online-features` for the `{SERVICE}` service (6 features of 2 views) over "
        "keep-alive connections from Python threads on the same machine, so the client's CPU is in the figures.\n"
    )
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    text = pattern.sub(lambda _: section + "\n", text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text.rstrip("\n") + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description="Bounded loopback load on the HTTP feature server.")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--entities", type=int, default=10, help="entities per request")
    parser.add_argument("--customers", type=int, default=2_000, help="customers stored in Redis")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.add_argument("--record", action="store_true", help="write the result into bench/RESULTS.md")
    args = parser.parse_args()

    from feature_platform.embedded_redis import start_embedded_redis

    project = "load"
    with start_embedded_redis() as redis_server:
        populate(redis_server.url, project, args.customers)
        with feature_server(redis_server.url, project) as port:
            run_load(port, min(200, args.requests), args.concurrency, args.entities, args.customers, seed=0)  # warm-up
            result = run_load(port, args.requests, args.concurrency, args.entities, args.customers)
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))
    if args.record:
        command = "bench/load_server.py " + " ".join(
            f"--{name} {getattr(args, name)}" for name in ("requests", "concurrency", "entities", "customers"))
        record(result, command)
    return 1 if result["errors"] or result["requests"] != args.requests else 0


if __name__ == "__main__":
    sys.exit(main())
