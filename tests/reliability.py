"""Helpers shared by the reliability tests (tests/test_reliability_*.py): the real CLI in its
own process group, the fault-injection pause points (feature_platform/faults.py), and
snapshots of the offline store and of a project's Redis keys to compare runs with.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import redis

from feature_platform.demo.generator import generate_landing_zone
from feature_platform.storage import Store, is_temporary_name

REPO = Path(__file__).resolve().parents[1]
START = datetime(2026, 3, 1, tzinfo=timezone.utc)
END = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)  # a whole hour in the past: every as_of is fixed
SHARED_REDIS = os.environ.get("FP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def small_demo_landing(root: Path) -> None:
    """Half a day of the demo shop: ~170 change events in ~20 files, all four source tables."""
    generate_landing_zone(root, customers=15, products=6, weeks=0.5 / 7, orders_per_day=60,
                          end=datetime(2026, 3, 1, 11, 30, tzinfo=timezone.utc), seed=3)


def cli_environment(data: Path, project: str, redis_url: str, **extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("FP_", "DAGSTER_HOME"))}
    environment.update(FP_DATA_DIR=str(data), FP_PROJECT=project, FP_REDIS_URL=redis_url,
                       FP_PARTITIONS_START=START.isoformat(), PYTHONPATH=str(REPO), **extra)
    return environment


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "feature_platform.cli", *args]


MATERIALIZE = ("materialize", "--start", START.isoformat(), "--end", END.isoformat())


def start_cli(environment: dict[str, str], *args: str, log: Path) -> subprocess.Popen:
    """The CLI in its own process group (so kill -9 takes everything it started), output to ``log``."""
    with log.open("ab") as output:
        return subprocess.Popen(cli_command(*args), cwd=REPO, env=environment, stdout=output,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)


def run_cli(environment: dict[str, str], *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), cwd=REPO, env=environment, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def wait_for_pause(directory: Path, point: str, process: subprocess.Popen, log: Path, timeout: float = 120) -> dict:
    """Wait until the run stands at ``point`` (it wrote ``<point>.reached``); its pid and detail."""
    marker = directory / f"{point}.reached"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists():
            try:
                return json.loads(marker.read_text())
            except json.JSONDecodeError:
                pass  # being written
        if process.poll() is not None:
            raise AssertionError(f"the run ended ({process.returncode}) before reaching {point}:\n"
                                 + log.read_text(errors="replace")[-4000:])
        time.sleep(0.05)
    raise AssertionError(f"the run did not reach {point} within {timeout}s:\n" + log.read_text(errors="replace")[-4000:])


def release(directory: Path, point: str) -> None:
    (directory / f"{point}.release").write_text("go")


def kill_group(process: subprocess.Popen) -> None:
    """kill -9 the process and everything in its group, and reap it."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(30)


def offline_snapshot(root: Path) -> dict[str, bytes]:
    """Every file a reader can see under an offline root (temporary names excluded), with its bytes."""
    store = Store(str(root))
    return {entry.path: store.read_bytes(entry.path) for entry in store.list_files()}


def temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and any(is_temporary_name(part) for part in p.relative_to(root).parts)]


def redis_snapshot(url: str, project: str) -> dict[str, dict[bytes, bytes]]:
    """Every key of a project (a view's meta hash as a dict, an entity's packed row as bytes),
    keyed by its name without the project prefix."""
    client = redis.Redis.from_url(url)
    prefix = f"fp:{project}:"
    try:
        return {key.decode()[len(prefix):]: client.hgetall(key) if key.endswith(b":_meta") else client.get(key)
                for key in client.scan_iter(match=prefix + "*", count=1000)}
    finally:
        client.close()


def drop_redis_project(url: str, project: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=f"fp:{project}:*", count=1000):
            client.delete(key)
    finally:
        client.close()
