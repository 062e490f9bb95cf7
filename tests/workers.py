"""``tests.system.System`` running the deployed worker processes: one process of each kind in
``config.workers`` (a worker, an archiver and the acceptor), each at its default concurrency, as
``faxrelay up``, the Procfile and compose run them. The other end-to-end tests run one small worker over every
queue; the tests of what the defaults promise (tests/test_concurrency.py) and the benchmarks run
this.

``layout="single"``: instead one process consuming every queue with as many threads as the two
kinds together: the alternative ``bench.headofline`` measures the split against.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import redis

from config.embedded import CELERY_FATAL, ManagedProcess, wait_until
from config.queues import QUEUES
from config.settings import Settings
from config.workers import KINDS, WorkerKind, worker_argv
from tests.system import ROOT, System

QUIET = ("--without-gossip", "--without-mingle", "--without-heartbeat")
SINGLE = WorkerKind("worker", QUEUES, sum(kind.concurrency for kind in KINDS))
# The settings' own defaults for the delays tests/system.py shrinks: the benchmarks run with these.
PRODUCTION_DELAYS = {
    f"FAXRELAY_{name.upper()}": repr(Settings.model_fields[name].default)
    for name in ("retry_scale", "sweep_interval", "lease_seconds", "wake_grace", "redial_delay")
}


@dataclass
class DeployedSystem(System):
    layout: str = "split"  # "split": config.workers' kinds; "single": one process, every queue
    concurrency: dict[str, int] = field(default_factory=dict)  # kind name -> threads, to override
    worker_args: tuple[str, ...] = ()  # more `celery worker` options (`-P processes`: prefork)

    def kinds(self) -> tuple[WorkerKind, ...]:
        return KINDS if self.layout == "split" else (SINGLE,)

    def start_worker(self) -> None:
        for kind in self.kinds():
            self.start_kind(kind)

    def start_kind(self, kind: WorkerKind) -> ManagedProcess:
        """Start the process of ``kind`` (again, after a kill) and wait until it consumes."""
        client = redis.Redis.from_url(self.redis_url)
        client.delete(kind.ready_key)
        # The acceptor (not a Celery worker) keeps its node name across restarts.
        node = f"{kind.name}@%h" if kind.module else f"{kind.name}-{time.monotonic_ns()}@%h"
        argv = worker_argv(
            kind,
            node,
            concurrency=self.concurrency.get(kind.name),
            extra=() if kind.module else (*QUIET, *self.worker_args),
        )
        proc = ManagedProcess(
            kind.name, argv, sink=self._log, env=self.env, cwd=str(ROOT), stop_timeout=20,
            fatal_markers=CELERY_FATAL,
        ).start()  # fmt: skip
        self.procs[kind.name] = proc
        wait_until(lambda: bool(client.exists(kind.ready_key)), 60, kind.name, proc)
        client.close()
        return proc

    def stop_workers(self) -> None:
        for kind in self.kinds():
            proc = self.procs.pop(kind.name, None)
            if proc is not None:
                proc.stop()

    def stop(self) -> None:
        self.stop_workers()
        super().stop()
