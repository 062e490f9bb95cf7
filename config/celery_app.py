"""The Celery app: JSON only, late acks, one message at a time, a queue per kind of work.

A Celery message is only a wake-up (DESIGN.md principle 1): tasks read the Redis record and do its next
step, and the sweeper re-sends wake-ups for records that are overdue. So nothing relies on long
countdowns (which the Redis transport would redeliver after the visibility timeout), and a lost or
duplicated message never loses or duplicates a fax.

``config.queues`` names the queue each task goes to and the queues a worker consumes.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery, signals
from kombu import Exchange, Queue

from config.logging import TASK_ID, configure_logging
from config.queues import DEFAULT_QUEUE, QUEUES, RECONCILE_ALL, SWEEP, task_routes
from config.settings import get_settings

# Longer than any countdown the code uses (the longest is a few seconds of event-delivery backoff).
VISIBILITY_TIMEOUT = 2 * 3600


def create_celery() -> Celery:
    settings = get_settings()
    app = Celery("faxrelay", include=["worker.tasks"])
    app.conf.update(
        broker_url=settings.redis_url or "redis://127.0.0.1:6379/0",
        broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
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


@signals.task_prerun.connect
def _task_started(task_id: str | None = None, **_: Any) -> None:
    TASK_ID.set(task_id)


@signals.task_postrun.connect
def _task_finished(**_: Any) -> None:
    TASK_ID.set(None)
