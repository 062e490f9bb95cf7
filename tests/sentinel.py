"""A Redis Sentinel deployment on loopback, for the failover test and benchmark: a Valkey primary,
one replica and three sentinels (quorum 2), all password-protected as in compose.ha.yaml.

The sentinels use a short ``down-after-milliseconds`` so that a failover takes seconds. A node is
started the way a supervisor (compose's restart policy) starts it: the original primary always
comes back as a primary with its own data, and the sentinels turn it into a replica of whoever
was promoted meanwhile (NOTES.md: the binary runs as a sentinel with ``--sentinel``; a sentinel
learns a primary's replicas from its INFO, so the test waits for that before killing anything).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO

import redis

from config.embedded import ManagedProcess, find_redis_server, free_port, wait_until

HOST = "127.0.0.1"
MASTER = "faxrelay"
PASSWORD = "sentinel-test-password-4f1e"  # data nodes and sentinels, as REDIS_PASSWORD in compose


@dataclass
class Node:
    """One Valkey data node; ``replica_of`` is its primary's port at first start (0: a primary)."""

    name: str
    port: int
    data_dir: Path
    replica_of: int = 0
    proc: ManagedProcess | None = None

    def argv(self, appendfsync: str) -> list[str]:
        argv = [
            find_redis_server(),
            "--bind", HOST,
            "--port", str(self.port),
            "--dir", str(self.data_dir.resolve()),
            "--appendonly", "yes",
            "--appendfsync", appendfsync,
            "--maxmemory-policy", "noeviction",
            "--save", "",
            "--requirepass", PASSWORD,
            "--masterauth", PASSWORD,
        ]  # fmt: skip
        if self.replica_of:
            argv += ["--replicaof", HOST, str(self.replica_of)]
        return argv

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            host=HOST, port=self.port, password=PASSWORD, socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )  # fmt: skip


@dataclass
class SentinelCluster:
    tmp: Path
    sink: IO[str]
    down_after_ms: int = 2000
    failover_timeout_ms: int = 6000
    appendfsync: str = "always"
    sentinel_count: int = 3  # 0: a primary and its replica only
    # > 0: the replica follows the first primary through a DelayProxy (a lagging replica).
    link_delay: float = 0.0
    proxy: DelayProxy | None = None
    nodes: list[Node] = field(default_factory=list)
    sentinel_ports: list[int] = field(default_factory=list)
    sentinels: list[ManagedProcess] = field(default_factory=list)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self) -> SentinelCluster:
        try:
            primary_port = free_port()
            upstream = primary_port
            if self.link_delay:
                self.proxy = DelayProxy(primary_port, self.link_delay).start()
                upstream = self.proxy.port
                # A sentinel re-points a replica that follows another address than the primary's
                # ("+fix-slave-config", the relay's) once failover-timeout has passed: keep the
                # relay in place for the length of a benchmark.
                self.failover_timeout_ms = max(self.failover_timeout_ms, 600_000)
            self.nodes = [
                Node("redis-a", primary_port, self.tmp / "redis-a"),
                Node("redis-b", free_port(), self.tmp / "redis-b", replica_of=upstream),
            ]
            for node in self.nodes:
                self.start_node(node)
            self.wait_replicas(self.nodes[0], 1, 30)
            self.sentinel_ports = [free_port() for _ in range(self.sentinel_count)]
            for n, port in enumerate(self.sentinel_ports):
                self.sentinels.append(self._start_sentinel(n, port, primary_port))
            for port, proc in zip(self.sentinel_ports, self.sentinels, strict=True):
                # Each knows the replica (failover needs one) and the other two (the quorum).
                wait_until(partial(self._sentinel_ready, port), 30, f"sentinel {port}", proc)
        except BaseException:
            self.stop()
            raise
        return self

    def start_node(self, node: Node) -> None:
        node.data_dir.mkdir(parents=True, exist_ok=True)
        node.proc = ManagedProcess(
            node.name, node.argv(self.appendfsync), sink=self.sink, stop_timeout=10
        ).start()
        client = node.client(timeout=1)
        try:
            # While the AOF loads the node answers LOADING: ping raises until it is done.
            wait_until(lambda: bool(client.ping()), 30, node.name, node.proc)
        finally:
            client.close()

    def _start_sentinel(self, n: int, port: int, primary_port: int) -> ManagedProcess:
        directory = self.tmp / f"sentinel-{n}"
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "sentinel.conf"  # sentinels rewrite their file: it must be writable
        conf.write_text(
            f"port {port}\nbind {HOST}\ndir {directory.resolve()}\n"
            f'requirepass "{PASSWORD}"\n'
            f"sentinel monitor {MASTER} {HOST} {primary_port} 2\n"
            f'sentinel auth-pass {MASTER} "{PASSWORD}"\n'
            f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        return ManagedProcess(
            f"sentinel-{n}", [find_redis_server(), str(conf), "--sentinel"], sink=self.sink
        ).start()

    def _sentinel_ready(self, port: int) -> bool:
        client = self.sentinel_client(port)
        try:
            replicas = client.sentinel_slaves(MASTER)
            others = client.sentinel_sentinels(MASTER, return_responses=True)
            return bool(replicas) and isinstance(others, list) and len(others) >= 2
        finally:
            client.close()

    def signal(self, node: Node, signum: int) -> None:
        assert node.proc is not None
        node.proc.signal(signum)

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.stop()
        self.sentinels.clear()
        for node in self.nodes:
            if node.proc is not None:
                node.proc.stop()
        if self.proxy is not None:
            self.proxy.close()

    # --- what a test needs -----------------------------------------------------------------
    @property
    def sentinel_addresses(self) -> str:
        """As ``FAXRELAY_REDIS_SENTINELS`` takes them."""
        return ",".join(f"{HOST}:{port}" for port in self.sentinel_ports)

    def settings_env(self, min_replicas: int, wait_timeout: float = 1.0) -> dict[str, str]:
        return {
            "FAXRELAY_REDIS_URL": "",
            "FAXRELAY_REDIS_SENTINELS": self.sentinel_addresses,
            "FAXRELAY_REDIS_SENTINEL_MASTER": MASTER,
            "FAXRELAY_REDIS_PASSWORD": PASSWORD,
            "FAXRELAY_REDIS_MIN_REPLICAS": str(min_replicas),
            "FAXRELAY_REDIS_WAIT_TIMEOUT": str(wait_timeout),
        }

    def sentinel_client(self, port: int) -> redis.Redis:
        return redis.Redis(
            host=HOST, port=port, password=PASSWORD, socket_timeout=1, socket_connect_timeout=1,
            decode_responses=True,
        )  # fmt: skip

    def primary_port(self) -> int:
        """The primary's port as a majority of the sentinels name it (0 while they disagree)."""
        named: list[int] = []
        for port in self.sentinel_ports:
            client = self.sentinel_client(port)
            try:
                address = client.sentinel_get_master_addr_by_name(MASTER, return_responses=True)
                if isinstance(address, tuple):
                    named.append(int(address[1]))
            except redis.RedisError:
                continue
            finally:
                client.close()
        best = max(set(named), key=named.count, default=0)
        return best if named.count(best) >= 2 else 0

    def failovers(self) -> int:
        """Failovers so far: the configuration epoch the sentinels agree on (one per failover)."""
        epochs = []
        for port in self.sentinel_ports:
            client = self.sentinel_client(port)
            try:
                state = client.sentinel_master(MASTER, return_responses=True)
                if isinstance(state, dict):
                    epochs.append(int(state["config-epoch"]))
            except (redis.RedisError, KeyError, ValueError):
                continue
            finally:
                client.close()
        return max(epochs, default=0)

    def node(self, port: int) -> Node:
        return next(n for n in self.nodes if n.port == port)

    def primary(self) -> Node:
        return self.node(self.primary_port())

    def url(self) -> str:
        """A plain URL of the current primary (for a test's own checks)."""
        return f"redis://:{PASSWORD}@{HOST}:{self.primary_port()}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url())

    def kill(self, node: Node) -> None:
        """SIGKILL, as a crash: the OS keeps what the node wrote to its AOF."""
        assert node.proc is not None
        node.proc.signal(signal.SIGKILL)
        assert node.proc.process is not None
        node.proc.process.wait(10)

    def wait_failover(self, old_port: int, timeout: float) -> Node:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.primary_port()
            if port and port != old_port:
                return self.node(port)
            time.sleep(0.1)
        raise AssertionError(f"no failover within {timeout:.0f} s")

    def wait_settled(self, timeout: float) -> Node:
        """Until the primary the sentinels name has a replica online (under load they may fail
        over more than once: a busy new primary can miss ``down-after-milliseconds`` too)."""
        deadline = time.monotonic() + timeout
        while True:
            port = self.primary_port()
            if port:
                try:
                    self.wait_replicas(self.node(port), 1, min(2.0, timeout))
                    if self.primary_port() == port:
                        return self.node(port)
                except AssertionError:
                    pass
            if time.monotonic() > deadline:
                raise AssertionError(f"no primary with a replica online within {timeout:.0f} s")
            time.sleep(0.2)

    def wait_replicas(self, primary: Node, count: int, timeout: float) -> None:
        """Until ``primary`` is a primary with ``count`` replicas online (synchronised)."""
        client = primary.client()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                try:
                    info = client.info("replication")
                except redis.RedisError:
                    info = {}
                online = [
                    v for k, v in info.items()
                    if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
                ]  # fmt: skip
                if info.get("role") == "master" and len(online) >= count:
                    return
                time.sleep(0.1)
        finally:
            client.close()
        raise AssertionError(f"{primary.name} had no {count} replica(s) online in {timeout:.0f} s")


class DelayProxy:
    """A TCP relay on loopback that delivers what the primary sends ``delay`` seconds late, and
    drops what it still holds when the primary's side closes: a replica lagging behind its primary
    (a slow or distant link), which loses the writes in flight when the primary's host dies.
    What the replica sends (its acknowledgements) passes at once."""

    def __init__(self, upstream_port: int, delay: float) -> None:
        self.upstream_port = upstream_port
        self.delay = delay
        self.listener = socket.create_server((HOST, 0))
        self.port = int(self.listener.getsockname()[1])
        self.closed = threading.Event()

    def start(self) -> DelayProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def close(self) -> None:
        self.closed.set()
        self.listener.close()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                downstream, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.upstream_port), timeout=2)
            except OSError:
                downstream.close()
                continue
            upstream.settimeout(None)
            queue: deque[tuple[float, bytes]] = deque()
            ready = threading.Condition()
            gone = threading.Event()
            for target, args in (
                (self._pump, (downstream, upstream, gone)),  # acknowledgements: at once
                (self._hold, (upstream, queue, ready, gone)),
                (self._deliver, (downstream, queue, ready, gone)),
            ):
                threading.Thread(target=target, args=args, daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, gone: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        gone.set()

    def _hold(
        self,
        upstream: socket.socket,
        queue: deque[tuple[float, bytes]],
        ready: threading.Condition,
        gone: threading.Event,
    ) -> None:
        with contextlib.suppress(OSError):
            while data := upstream.recv(65536):
                with ready:
                    queue.append((time.monotonic() + self.delay, data))
                    ready.notify()
        gone.set()  # the primary is gone: what is held never arrives
        with ready:
            ready.notify()

    @staticmethod
    def _deliver(
        downstream: socket.socket,
        queue: deque[tuple[float, bytes]],
        ready: threading.Condition,
        gone: threading.Event,
    ) -> None:
        try:
            while not gone.is_set():
                with ready:
                    while not queue and not gone.is_set():
                        ready.wait(0.1)
                    if gone.is_set():
                        break
                    due, data = queue[0]
                wait = due - time.monotonic()
                if wait > 0:
                    gone.wait(wait)
                    continue
                with ready:
                    queue.popleft()
                downstream.sendall(data)
        except OSError:
            pass
        finally:
            # Reset, not FIN: nothing more reaches the replica, as when a host dies.
            with contextlib.suppress(OSError):
                downstream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            downstream.close()
