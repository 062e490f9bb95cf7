"""Celery routing, named once: which queue each task goes to, and the queues a worker consumes.

Each kind of work has its own queue, so a backlog of one (a burst of inbound faxes to archive)
does not hold up another (outbound faxes to submit), and a queue's length says which work is
behind. The Celery app's routes, the ``-Q`` list a worker is started with, and the wake-ups the
web app, the worker and the CLI publish straight onto Redis all read this module. It imports
nothing of faxrelay's, so every layer may use it without loading the Celery app.
"""

from __future__ import annotations

from typing import NamedTuple

# Services on the same broker send ``faxrelay.send_fax`` to Celery's default queue
# (DESIGN.md "Queue-driven sends"); faxrelay's own work runs on its own queues.
DEFAULT_QUEUE = "celery"
INTAKE_QUEUE = "faxrelay.intake"
ARCHIVE_QUEUE = "faxrelay.archive"
SEND_QUEUE = "faxrelay.send"
POLL_QUEUE = "faxrelay.poll"
EVENTS_QUEUE = "faxrelay.events"

# The deployed worker processes split these between them (config/workers.py); a worker that
# consumes them all (the tests' single worker) takes WORKER_QUEUES.
QUEUES = (DEFAULT_QUEUE, INTAKE_QUEUE, ARCHIVE_QUEUE, SEND_QUEUE, POLL_QUEUE, EVENTS_QUEUE)
WORKER_QUEUES = ",".join(QUEUES)  # as ``celery worker -Q`` takes them
# kombu's Redis transport writes a queue's bindings under this key once a worker consumes the
# queue: waiting for it to exist is waiting for a worker to be ready.
WORKER_READY_KEY = f"_kombu.binding.{ARCHIVE_QUEUE}"


class Route(NamedTuple):
    """A task's name and the queue its messages are published to."""

    task: str
    queue: str


# A webhook's wake-up archives the fax at once: it is archive work, on the archive queue.
HANDLE_INBOUND = Route("faxrelay.handle_inbound", ARCHIVE_QUEUE)
RECONCILE_ACCOUNT = Route("faxrelay.reconcile_account", INTAKE_QUEUE)
RECONCILE_ALL = Route("faxrelay.reconcile_all", INTAKE_QUEUE)
SWEEP = Route("faxrelay.sweep", INTAKE_QUEUE)
RETAIN = Route("faxrelay.retain", INTAKE_QUEUE)  # files final records in S3, then removes them
ARCHIVE_FAX = Route("faxrelay.archive_fax", ARCHIVE_QUEUE)
SUBMIT_FAX = Route("faxrelay.submit_fax", SEND_QUEUE)
POLL_FAX = Route("faxrelay.poll_fax", POLL_QUEUE)
DELIVER_EVENT = Route("faxrelay.deliver_event", EVENTS_QUEUE)
SEND_FAX = Route("faxrelay.send_fax", DEFAULT_QUEUE)  # the public, queue-driven send
BACKFILL = Route("faxrelay.backfill", INTAKE_QUEUE)  # one started over the API

ROUTES = (
    HANDLE_INBOUND,
    RECONCILE_ACCOUNT,
    RECONCILE_ALL,
    SWEEP,
    RETAIN,
    ARCHIVE_FAX,
    SUBMIT_FAX,
    POLL_FAX,
    DELIVER_EVENT,
    SEND_FAX,
    BACKFILL,
)


def task_routes() -> dict[str, dict[str, str]]:
    """``ROUTES`` in the shape of Celery's ``task_routes`` setting."""
    return {route.task: {"queue": route.queue} for route in ROUTES}
