"""The worker processes a deployment runs: which queues each consumes and how many tasks it runs at
once. ``faxrelay up``, the benchmarks and the production-default tests start them from here; the
Procfile and compose.yaml spell the same commands out (tests/test_deploy.py checks they match).

Three kinds, so that kinds of work do not block each other:

- ``archiver`` consumes ``faxrelay.archive`` only: every received fax's download, check and upload.
  A burst of large faxes fills its slots and nothing else's.
- ``worker`` consumes faxrelay's other queues: sends, polls, event deliveries, the sweeper and
  reconcile. A send or a poll that is due waits for one of these slots only, never behind a
  200 MB archive (``python -m bench.headofline`` measures it).
- ``acceptor`` consumes the public ``celery`` queue: other services' ``faxrelay.send_fax``.

The worker and the archiver run Celery's threads pool (``config.pool``, set in
``config.celery_app``): their tasks wait on providers, S3 and Redis, so one process keeps tens of
transfers in flight. Separate processes also keep the archiver's CPU work (hashing, PDF checks)
off the GIL the sends run under. Their messages are only wake-ups (DESIGN.md principle 1): one
lost with a crashed process costs a sweep, never a fax.

The acceptor is not a Celery worker but ``worker.acceptor``, because its messages are the data:
until ``send_fax`` has made its record, the message is the only copy of another service's send.
kombu's Redis transport takes a message off its list and only then records it as unacknowledged,
so a message is lost when its consuming process dies in between (the chaos soak, ``bench.chaos``,
lost 2 of 472 queue-driven sends in 10 minutes to 11 kills of a prefork worker's main process, and
left 54 more waiting out the visibility timeout). The acceptor moves each message into its own
processing list in one Redis command and removes it only once the send is recorded and its result
stored; one message at a time, so more acceptors are more processes, each with its own stable
node name (``--node``, default ``acceptor@{host}``), which a restart under a supervisor keeps.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NamedTuple

from config.queues import (
    ARCHIVE_QUEUE,
    DEFAULT_QUEUE,
    EVENTS_QUEUE,
    INTAKE_QUEUE,
    POLL_QUEUE,
    SEND_QUEUE,
)


class WorkerKind(NamedTuple):
    """One kind of worker process: its name (process type, node name prefix), its queues, how
    many tasks it runs at once by default, and its pool (threads or prefork processes); or the
    module it runs instead of ``celery worker``."""

    name: str
    queues: tuple[str, ...]
    concurrency: int
    prefork: bool = False
    module: str = ""  # not a Celery worker: ``python -m {module} --node {node}`` (the acceptor)

    @property
    def queue_list(self) -> str:
        """The queues as ``celery worker -Q`` takes them."""
        return ",".join(self.queues)

    @property
    def ready_key(self) -> str:
        """kombu's binding key of the kind's first queue: it exists once a worker consumes it."""
        return f"_kombu.binding.{self.queues[0]}"


# An archive holds its slot for a download plus an upload (seconds to minutes against a slow
# provider): 64 keep 64 transfers in flight, the baseline ``bench.archive`` compares against.
ARCHIVER = WorkerKind("archiver", (ARCHIVE_QUEUE,), 64)
# Submits, polls and event deliveries are single requests of a second or so.
WORKER = WorkerKind("worker", (SEND_QUEUE, POLL_QUEUE, EVENTS_QUEUE, INTAKE_QUEUE), 32)
# A queue-driven send is accepted in tens of milliseconds (its document to S3, its record to
# Redis), one at a time per process; the submit itself is the worker's.
ACCEPTOR = WorkerKind("acceptor", (DEFAULT_QUEUE,), 1, module="worker.acceptor")
KINDS = (WORKER, ARCHIVER, ACCEPTOR)  # every queue of config.queues: exactly one kind consumes it


def worker_argv(
    kind: WorkerKind,
    node: str,
    *,
    concurrency: int | None = None,
    extra: Sequence[str] = (),
    python: str = sys.executable,
) -> list[str]:
    """The ``celery worker`` command line of one process of ``kind``, node name ``node`` (the
    acceptor's own command for the acceptor: ``concurrency`` does not apply)."""
    if kind.module:
        return [python, "-m", kind.module, "--node", node, *extra]
    # `-P processes` is prefork: config.celery_app names the threads pool, and Celery takes
    # `-P prefork` for "not given".
    pool = ["-P", "processes"] if kind.prefork else []
    return [
        python, "-m", "celery", "-A", "config.celery_app", "worker", *pool,
        "-Q", kind.queue_list, "--concurrency", str(concurrency or kind.concurrency),
        "-l", "info", "-n", node, *extra,
    ]  # fmt: skip
