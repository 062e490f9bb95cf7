"""Celery tasks: thin wrappers over the pipelines' plain functions.

Every task takes a record id (or an account / delivery id), reads the record, and does its next
step; all of them are idempotent, hence ``acks_late`` (config/celery_app.py) is safe.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from config import queues
from config.celery_app import app
from worker.pipeline import backfill as backfill_job
from worker.pipeline import events, inbound, retention, sweeper
from worker.pipeline.outbound import follow, queued
from worker.pipeline.outbound.queued import SendUnavailable
from worker.providers import provider_class
from worker.retry import QUEUED_SEND
from worker.runtime import RECONCILE_TASK, get_runtime

log = logging.getLogger(__name__)


@app.task(name=queues.HANDLE_INBOUND.task)
def handle_inbound(fax_id: str) -> None:
    inbound.handle_inbound(get_runtime(), fax_id)


@app.task(name=queues.ARCHIVE_FAX.task)
def archive_fax(fax_id: str) -> None:
    inbound.archive_fax(get_runtime(), fax_id)


@app.task(name=queues.RECONCILE_ACCOUNT.task)
def reconcile_account(account: str) -> list[str]:
    return inbound.reconcile(get_runtime(), account)


@app.task(name=queues.RECONCILE_ALL.task)
def reconcile_all() -> None:
    runtime = get_runtime()
    for name, account in runtime.settings.accounts.items():
        # A provider that cannot list received faxes would make each task return at once.
        if not provider_class(account.provider).capabilities.list_inbound:
            continue
        if account.reconcile_interval and inbound.reconcile_is_due(runtime, name):
            runtime.send_task(RECONCILE_TASK[0], RECONCILE_TASK[1], [name])


@app.task(name=queues.SWEEP.task)
def sweep() -> dict[str, Any]:
    result = sweeper.sweep(get_runtime())
    return {"records": result.records, "deliveries": result.deliveries}


@app.task(name=queues.RETAIN.task)
def retain() -> dict[str, Any]:
    result = retention.retain(get_runtime())
    return {"filed": result.filed, "removed": result.removed}


@app.task(name=queues.DELIVER_EVENT.task)
def deliver_event(delivery_id: str) -> str:
    runtime = get_runtime()
    return events.deliver(runtime.store.redis, runtime.settings, delivery_id)


@app.task(name=queues.BACKFILL.task)
def backfill(job_id: str) -> None:
    backfill_job.run(get_runtime(), job_id)


@app.task(name=queues.SUBMIT_FAX.task)
def submit_fax(fax_id: str) -> None:
    follow.submit_fax(get_runtime(), fax_id)


@app.task(name=queues.POLL_FAX.task)
def poll_fax(fax_id: str) -> None:
    follow.poll_fax(get_runtime(), fax_id)


@app.task(bind=True, name=queues.SEND_FAX.task, ignore_result=False, max_retries=None)
def send_fax(
    self: Task[Any, str],
    account: str = "",
    to: str = "",
    document: dict[str, Any] | None = None,
    idempotency_key: str = "",
    callback_url: str = "",
    metadata: dict[str, Any] | None = None,
) -> str:
    """The public queue-driven send (``queued.send_queued``); returns the fax id, which the
    result backend keeps (config/celery_app.py: this task only, 24 h).

    Deployments consume the ``celery`` queue with ``worker.acceptor``, which never loses a
    message to a crash; this task serves a Celery worker that consumes every queue (the tests'
    single worker). An unreachable S3 or Redis (or document URL) retries the task with backoff
    (``retry.QUEUED_SEND``) instead of failing it.
    """
    runtime = get_runtime()
    try:
        return queued.send_queued(
            runtime,
            self.request.id or "",
            account=account,
            to=to,
            document=document,
            idempotency_key=idempotency_key,
            callback_url=callback_url,
            metadata=metadata,
        )
    except (queued.SendDeferred, SoftTimeLimitExceeded) as exc:
        failure: Exception = exc
    attempt = self.request.retries + 1
    delay = queued.retry_delay(runtime, attempt)
    if delay is None:
        log.error(
            "queued send %s given up after %d attempts: %s", self.request.id, attempt, failure
        )
        raise SendUnavailable(f"503 {QUEUED_SEND.on_exhausted}: {failure}") from None
    log.warning("queued send %s: %s; retry %d in %.1f s", self.request.id, failure, attempt, delay)
    raise self.retry(countdown=delay, exc=failure)
