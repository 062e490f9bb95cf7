"""The system the chaos soak runs against, and the supervisor that restarts what the soak kills.

faxrelay as separate processes, as a deployment runs them: the web app, one worker process of each
kind of ``config.workers`` (``worker``: sends, polls, events, sweeps; ``archiver``: received faxes;
``acceptor``: queue-driven sends, under a node name it keeps across restarts), beat with a
schedule file that outlives it; on its own Redis-compatible server (AOF ``appendfsync always``)
and its own SeaweedFS, with the provider sandbox as a process of its own. It is
``tests.system.System`` (the end-to-end tests' web app, settings and accounts) with those workers,
S3 that can be stopped, and a supervisor.

The supervisor does what systemd or compose's restart policy does: when a process exits (or a
worker prints Celery's "Unrecoverable error" and wedges) it kills what is left of the process
group and starts it again at once. Kills, restarts and the time each part was down are counted
here for the soak's table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import signal
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import redis
from celery import Celery

from bench.common import HOST, descendants, sandbox_process
from config.embedded import (
    CELERY_FATAL,
    ManagedProcess,
    SeaweedPorts,
    StartupError,
    free_port,
    start_seaweed,
    wait_until,
)
from config.workers import KINDS, WorkerKind, worker_argv
from tests.system import ROOT, System
from worker.store import keys

RESTART_POLL = 0.2  # seconds between the supervisor's looks at its processes


@dataclass
class Outage:
    """A part down from ``start`` to ``end`` (epoch seconds; ``end`` None while it lasts)."""

    part: str
    start: float
    end: float | None = None

    def seconds(self, now: float | None = None) -> float:
        return (self.end if self.end is not None else (now or time.time())) - self.start


@dataclass
class ChaosSystem(System):
    """``System`` with a worker process of each kind, its own S3 and sandbox, and a supervisor."""

    kinds: tuple[WorkerKind, ...] = KINDS
    concurrency: int | None = None  # threads per worker process (None: each kind's default)
    s3_ports: SeaweedPorts | None = None
    s3_dir: Path | None = None
    s3_proc: ManagedProcess | None = None
    sandbox_proc: ManagedProcess | None = None
    sink: IO[str] | None = None  # where S3's and the sandbox's lines go (the system's log file)
    kills: Counter[str] = field(default_factory=Counter)
    restarts: Counter[str] = field(default_factory=Counter)
    outages: list[Outage] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._stop_supervising = threading.Event()
        self._supervisor: threading.Thread | None = None
        self._down: dict[str, Outage] = {}  # part -> its open outage

    @classmethod
    def create(
        cls, tmp: Path, bucket: str, sink_path: Path, **fields: object
    ) -> tuple[ChaosSystem, str]:
        """Start SeaweedFS and the sandbox (each its own process); returns the system, not yet
        started, and the sandbox URL."""
        sink = open(sink_path, "a")  # noqa: SIM115 - closed in stop()
        try:
            ports, s3_proc = _seaweed(tmp / "s3", bucket, sink)
        except BaseException:
            sink.close()
            raise
        sandbox_port = free_port()
        try:
            sandbox = sandbox_process(sandbox_port, sink=sink)
        except BaseException:
            s3_proc.stop()
            sink.close()
            raise
        sandbox_url = f"http://{HOST}:{sandbox_port}"
        (tmp / "system").mkdir(exist_ok=True)
        system = cls(
            tmp / "system",
            f"http://{HOST}:{ports.s3}",
            sandbox_url,
            bucket,
            s3_ports=ports,
            s3_dir=tmp / "s3",
            s3_proc=s3_proc,
            sandbox_proc=sandbox,
            sink=sink,
            **fields,  # type: ignore[arg-type]
        )
        return system, sandbox_url

    # --- lifecycle -----------------------------------------------------------------------
    @property
    def worker_names(self) -> list[str]:
        return [kind.name for kind in self.kinds]

    def worker_process(self, name: str) -> ManagedProcess:
        """A worker process of the kind ``name`` as the Procfile runs it; not started yet."""
        kind = next(k for k in self.kinds if k.name == name)
        # The acceptor keeps its node name across restarts: it takes back its processing list.
        node = f"{name}@%h" if kind.module else f"{name}-{time.monotonic_ns()}@%h"
        return ManagedProcess(
            name,
            worker_argv(kind, node, concurrency=self.concurrency),
            sink=self._log,
            env=self.env,
            cwd=str(ROOT),
            stop_timeout=20,
            fatal_markers=CELERY_FATAL,
        )

    def start_worker(self) -> None:
        """Every worker (System.start calls this once), ready when each answers a ping (the
        acceptor: when it holds its heartbeat)."""
        for name in self.worker_names:
            self.procs[name] = self.worker_process(name).start()
        celery_kinds = [kind.name for kind in self.kinds if not kind.module]
        expected = {self.node_name(name) for name in celery_kinds}
        heartbeats = [
            keys.accept_alive_key(self.node_name(kind.name)) for kind in self.kinds if kind.module
        ]
        control = self.control_app()
        client = redis.Redis.from_url(self.redis_url)
        try:
            wait_until(
                lambda: (
                    expected <= _pinged(control) and client.exists(*heartbeats) == len(heartbeats)
                ),
                90,
                "workers",
                self.procs[self.worker_names[0]],
            )
        finally:
            control.close()
            client.close()

    def node_name(self, name: str) -> str:
        argv = list(self.procs[name].argv)
        option = "--node" if "--node" in argv else "-n"  # the acceptor's, or Celery's
        return argv[argv.index(option) + 1].replace("%h", socket.gethostname())

    def start_beat(self) -> None:
        """Beat with one schedule file for good, as compose keeps it on a volume: a restarted
        beat remembers when it last sent each periodic task (reconcile runs every minute)."""
        self.procs["beat"] = ManagedProcess(
            "beat",
            [sys.executable, "-m", "celery", "-A", "config.celery_app", "beat", "-l", "info",
             "-s", str(self.tmp / "celerybeat-schedule")],
            sink=self._log, env=self.env, cwd=str(ROOT),
        ).start()  # fmt: skip

    def control_app(self) -> Celery:
        """A Celery app of another service on the same broker (pings, queue-driven sends)."""
        return Celery("chaos-client", broker=self.redis_url, set_as_current=False)

    def supervise(self) -> None:
        self._supervisor = threading.Thread(target=self._supervise, daemon=True)
        self._supervisor.start()

    def stop(self) -> None:
        self._stop_supervising.set()
        if self._supervisor is not None:
            self._supervisor.join(60)
        for name in ("beat", *self.worker_names):
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop()
        super().stop()  # web, redis; closes the log
        for proc in (self.s3_proc, self.sandbox_proc):
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.stop()
        if self.sink is not None:
            self.sink.close()

    def note(self, text: str) -> None:
        """A line in the system log, among the processes' own."""
        with contextlib.suppress(ValueError):
            self._log.write(f"[chaos] {time.strftime('%H:%M:%S')} {text}\n")
            self._log.flush()

    # --- kills ---------------------------------------------------------------------------
    def kill_worker(self) -> None:
        """SIGKILL one worker process at random: a pool child where the pool has processes (the
        pool replaces it), else the worker's main process (the supervisor restarts it)."""
        with self._lock:
            name = self.rng.choice(self.worker_names)
            proc = self.procs.get(name)
            if proc is None or not proc.alive():
                return
            children = descendants(proc.pid)
            if children and self.rng.random() < 0.65:
                pid, kind = self.rng.choice(children), f"{name} pool child"
            else:
                pid, kind = proc.pid, name
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                self.kills[kind] += 1
                self.note(f"SIGKILL {kind} {pid} of {name}")

    def kill(self, name: str) -> None:
        """SIGKILL a whole part ("web", "beat", "redis"); the supervisor starts it again."""
        with self._lock:
            proc = self.procs.get(name)
            if proc is None or not proc.alive() or name in self._down:
                return
            if name in ("web", "redis"):
                self._down[name] = Outage(name, time.time())
            proc.signal(signal.SIGKILL)
            self.kills[name] += 1
            self.note(f"SIGKILL {name} {proc.pid}")

    # --- S3 outage -----------------------------------------------------------------------
    def stop_s3(self) -> None:
        with self._lock:
            self._down["s3"] = Outage("s3", time.time())
        self.note("stopping S3")
        assert self.s3_proc is not None
        self.s3_proc.stop()

    def start_s3(self) -> None:
        assert self.s3_ports is not None and self.s3_dir is not None and self.sink is not None
        # Its S3 port is the system's endpoint and stays; its inner ports may have been taken.
        self.s3_ports, self.s3_proc = _seaweed(
            self.s3_dir, self.bucket, self.sink, keep_s3=self.s3_ports.s3
        )
        self._ended("s3")
        self.note("S3 back")

    def outage_seconds(self, part: str) -> float:
        now = time.time()
        return sum(o.seconds(now) for o in self.outages if o.part == part) + (
            self._down[part].seconds(now) if part in self._down else 0.0
        )

    def windows(self, part: str) -> list[tuple[float, float]]:
        """When ``part`` was down: (start, end) pairs, an ongoing outage up to now."""
        now = time.time()
        spans = [(o.start, o.end or now) for o in self.outages if o.part == part]
        if part in self._down:
            spans.append((self._down[part].start, now))
        return spans

    def _ended(self, part: str) -> None:
        with self._lock:
            outage = self._down.pop(part, None)
            if outage is not None:
                outage.end = time.time()
                self.outages.append(outage)

    # --- the supervisor ------------------------------------------------------------------
    def _supervise(self) -> None:
        while not self._stop_supervising.wait(RESTART_POLL):
            for name in ("redis", "web", "beat", *self.worker_names):
                proc = self.procs.get(name)
                if proc is None or (proc.alive() and not proc.wedged):
                    continue
                try:
                    self._restart(name, proc)
                except Exception as exc:  # e.g. Redis still loading: try again next round
                    self.note(f"restarting {name} failed, trying again: {exc}")

    def _restart(self, name: str, proc: ManagedProcess) -> None:
        reason = "wedged" if proc.alive() else f"exited ({proc.process and proc.process.poll()})"
        self.note(f"{name} {reason}; restarting it")
        # What a supervisor does first: nothing of the old process group may survive (a killed
        # worker main leaves its pool children behind).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        if proc.process is not None:
            with contextlib.suppress(Exception):
                proc.process.wait(10)
        if name == "redis":
            with self._lock:
                self._down.setdefault("redis", Outage("redis", time.time()))
            self.start_redis()
            self._ended("redis")
        elif name == "web":
            with self._lock:
                self._down.setdefault("web", Outage("web", time.time()))
            self.start_web()
            self._ended("web")
        elif name == "beat":
            self.start_beat()
        else:
            with self._lock:
                self.procs[name] = self.worker_process(name).start()
        self.restarts[name + (" (wedged)" if reason == "wedged" else "")] += 1


def _seaweed(
    data: Path, bucket: str, sink: IO[str], keep_s3: int = 0, attempts: int = 3
) -> tuple[SeaweedPorts, ManagedProcess]:
    """SeaweedFS on free ports; on a busy machine another process may take one of them between
    the pick and the start, so a failed start is tried again on newly picked ports."""
    for attempt in range(1, attempts + 1):
        ports = SeaweedPorts.pick()
        if keep_s3:
            ports = dataclasses.replace(ports, s3=keep_s3)
        try:
            return ports, start_seaweed(data, ports, bucket, sink=sink)
        except StartupError:
            if attempt == attempts:
                raise
    raise AssertionError("unreachable")


def _pinged(control: Celery) -> set[str]:
    try:
        replies = control.control.ping(timeout=1.0)
    except Exception:
        return set()
    return {name for reply in replies or [] for name in reply}
