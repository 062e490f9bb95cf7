"""The Celery app: JSON only, late acks, one message per pool thread, a queue per kind of work.

A Celery message is only a wake-up (DESIGN.md principle 1): tasks read the Redis record and do its next
step, and the sweeper re-sends wake-ups for records that are overdue. So nothing relies on long
countdowns (which the Redis transport would redeliver after the visibility timeout), and a lost or
duplicated message never loses or duplicates a fax.

``config.queues`` names the queue each task goes to; ``config.workers`` the worker processes and
the queues each consumes; ``config.pool`` is their threads pool.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from config import broker, connect, queues, tracing
from config.logging import TASK_ID, configure_logging
from config.queues import DEFAULT_QUEUE, QUEUES, RECONCILE_ALL, SWEEP, task_routes
from config.settings import get_settings

# Time limits per task, (soft, hard) seconds: nothing waits for ever (a parse or a slow-drip
# download that never ends). The soft limit raises SoftTimeLimitExceeded in the task, which the
# step handles as an interrupted attempt (worker.retry.INTERRUPTED bounds the runs in a row);
# the hard limit kills the pool child, and the record's short lease lets the sweeper wake it
# again. The archive step moves up to ``download_max_bytes`` twice (download, upload).
TIME_LIMITS: dict[str, tuple[float, float]] = {
    queues.HANDLE_INBOUND.task: (540.0, 600.0),
    queues.ARCHIVE_FAX.task: (540.0, 600.0),
    queues.RECONCILE_ACCOUNT.task: (240.0, 270.0),
    queues.RECONCILE_ALL.task: (60.0, 90.0),
    queues.SWEEP.task: (60.0, 90.0),
    queues.RETAIN.task: (60.0, 90.0),  # each of its steps stops after 20 s
    queues.SUBMIT_FAX.task: (240.0, 270.0),
    queues.POLL_FAX.task: (120.0, 150.0),
    queues.DELIVER_EVENT.task: (60.0, 90.0),
    queues.SEND_FAX.task: (240.0, 270.0),
    queues.BACKFILL.task: (240.0, 270.0),  # lists, records and wakes: the archiving is queued
}
# Any task not named above (soft, hard): every task has a hard limit.
DEFAULT_TIME_LIMITS = (240.0, 270.0)
LONGEST_HARD_LIMIT = max(hard for _, hard in (*TIME_LIMITS.values(), DEFAULT_TIME_LIMITS))
# kombu's Redis transport hands a message back to the queue once it has been unacked this long
# (a worker main process that died with it). Every task ends within its hard limit, so this only
# has to outlast the longest one (a message still running must not run twice); with the restore
# scan every 10 s (``unacked_restore_interval`` times ``unacked_restore_throttle``) a dead worker's
# message is back within about 15 minutes instead of kombu's default hour (or 2 h before).
VISIBILITY_TIMEOUT = LONGEST_HARD_LIMIT + 300.0
# The results of ``faxrelay.send_fax`` (the fax id) are kept this long for callers' ``.get()``.
RESULT_EXPIRES = 24 * 3600


def create_celery() -> Celery:
    settings = get_settings()
    app = Celery("faxrelay", include=["worker.tasks"])
    app.conf.update(
        # broker_url, result_backend and its transport options: one Redis, or the primary the
        # sentinels name (kombu's sentinel:// transport, Celery's Sentinel backend).
        **connect.celery_urls(settings),
        # kombu's transport, reconnecting where kombu's own would stop the worker (config/broker.py)
        broker_transport=broker.SENTINEL if settings.redis_sentinels else broker.REDIS,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT,
            "unacked_restore_interval": 10,
            "unacked_restore_throttle": 1,
            **connect.broker_transport_options(settings),  # master_name, sentinel_kwargs
        },
        # Only faxrelay.send_fax keeps its result (its fax id, DESIGN.md "Queue-driven sends"),
        # in the same Redis, for a day; every other task's is ignored (task_ignore_result).
        result_expires=RESULT_EXPIRES,
        task_ignore_result=True,
        task_soft_time_limit=DEFAULT_TIME_LIMITS[0],
        task_time_limit=DEFAULT_TIME_LIMITS[1],
        task_annotations={
            name: {"soft_time_limit": soft, "time_limit": hard}
            for name, (soft, hard) in TIME_LIMITS.items()
        },
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        # Prefork's lost child only: with the threads pool the worker lost is the whole process,
        # whose unacked messages kombu hands back after VISIBILITY_TIMEOUT; the records' short
        # leases let the sweeper wake their faxes again long before that (config/pool.py).
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Threads, keeping the time limits above (config/pool.py says why); a worker started
        # without --concurrency runs this many. config/workers.py: each kind's own number.
        # (`-P processes` still picks prefork: `-P prefork` is read as "not given".)
        worker_pool="config.pool:TaskPool",
        worker_concurrency=32,
        task_default_queue=DEFAULT_QUEUE,
        task_default_exchange=DEFAULT_QUEUE,
        task_default_routing_key=DEFAULT_QUEUE,
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        task_routes=task_routes(),
        worker_hijack_root_logger=False,
        enable_utc=True,
        beat_schedule={
            "sweep": {"task": SWEEP.task, "schedule": settings.sweep_interval},
            "retain": {"task": queues.RETAIN.task, "schedule": settings.sweep_interval},
            "reconcile": {"task": RECONCILE_ALL.task, "schedule": 60.0},
        },
    )
    return app


app = create_celery()


@signals.after_setup_logger.connect
def _quiet_task_lines(**_: object) -> None:
    """Beat wakes the sweeper every few seconds: per-task 'received'/'succeeded' lines would
    drown the log. Failures are still logged (at ERROR)."""
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _process_name() -> str:
    return "beat" if "beat" in sys.argv[1:] else "worker"


@signals.after_setup_logger.connect
def _structured_logs(logger: logging.Logger, loglevel: int | None = None, **_: Any) -> None:
    """Replace Celery's root handler with faxrelay's (JSON lines or text, context, redaction)."""
    # The real stderr: Celery redirects sys.stderr to a logger, which would loop back here.
    configure_logging(_process_name(), level=loglevel or logging.INFO, stream=sys.__stderr__)


@signals.after_setup_task_logger.connect
def _structured_task_logs(logger: logging.Logger, loglevel: int | None = None, **_: Any) -> None:
    """``celery.task`` does not propagate: it gets the same handler."""
    configure_logging(
        _process_name(), level=loglevel or logging.INFO, stream=sys.__stderr__, loggers=[logger]
    )


@signals.worker_init.connect
def _tracing(**_: Any) -> None:
    """FAXRELAY_OTEL: a span per task, joined to the trace its message carries (config.tracing).
    Set up before the pool starts, so that prefork children inherit it."""
    tracing.setup(get_settings().otel, "worker")


# The archiver's CPU priority (nice), below every other faxrelay process's. Its CPU work (PDF
# checks, hashing, S3 request signing, 64 transfers' chunks) is throughput work that can wait; a
# send, a poll or a webhook on the same host waits on the worker, the web app and Redis, which then
# get the cores first. ``bench.headofline`` on 2 shared cores (single runs): the sends' p99 while
# 500 large faxes archived went from 1.30 s to 1.16 s (loaded/idle 2.16 to 1.85); ``bench.archive``
# with it: 0.68 of the plain loop's throughput (target 0.5).
ARCHIVER_NICE = 10


@signals.worker_init.connect
def _archiver_yields_cpu(sender: Any = None, **_: Any) -> None:
    """Lower the CPU priority of a worker that consumes the archive queue only (the archiver of
    ``config.workers``); a worker over every queue keeps its priority (its sends need it)."""
    consumed = getattr(getattr(sender, "app", None), "amqp", None)
    names = set(consumed.queues.consume_from or ()) if consumed is not None else set()
    if names == {queues.ARCHIVE_QUEUE}:
        os.nice(ARCHIVER_NICE)  # raising one's niceness needs no privilege; inherited by children


@signals.task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    TASK_ID.set(task_id)


@signals.task_postrun.connect
def _task_finished(**_: Any) -> None:
    TASK_ID.set(None)
