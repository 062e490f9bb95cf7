"""Celery tasks: thin wrappers over the pipelines' plain functions.

Every task takes a record id (or an account / delivery id), reads the record, and does its next
step; all of them are idempotent, hence ``acks_late`` (config/celery_app.py) is safe.
"""

from __future__ import annotations

from typing import Any

from config import queues
from config.celery_app import app
from worker.pipeline import events, inbound, sweeper
from worker.pipeline.outbound import accept, follow
from worker.providers import provider_class
from worker.runtime import RECONCILE_TASK, get_runtime


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


@app.task(name=queues.DELIVER_EVENT.task)
def deliver_event(delivery_id: str) -> str:
    runtime = get_runtime()
    return events.deliver(runtime.store.redis, runtime.settings, delivery_id)


@app.task(name=queues.SUBMIT_FAX.task)
def submit_fax(fax_id: str) -> None:
    follow.submit_fax(get_runtime(), fax_id)


@app.task(name=queues.POLL_FAX.task)
def poll_fax(fax_id: str) -> None:
    follow.poll_fax(get_runtime(), fax_id)


class SendRefused(Exception):
    """A queued send that cannot be accepted; the message says what is wrong."""


@app.task(name=queues.SEND_FAX.task)
def send_fax(
    account: str = "",
    to: str = "",
    document: dict[str, Any] | None = None,
    idempotency_key: str = "",
    callback_url: str = "",
    metadata: dict[str, Any] | None = None,
) -> str:
    """The public queue-driven send (DESIGN.md "Queue-driven sends"); returns the fax id.

    The same validation as ``POST /v1/faxes`` (``accept_send``); the idempotency key is shared
    with the HTTP API's ``Idempotency-Key`` header, so a redelivered message makes no second fax.
    """
    missing = [name for name, value in (("account", account), ("to", to)) if not value]
    if not document:
        missing.append("document")
    if missing:
        raise SendRefused(f"422 missing_field: missing: {', '.join(missing)}")
    if not isinstance(document, dict):
        raise SendRefused("422 bad_document: document must be an object")
    request = accept.SendRequest(
        account=str(account),
        to=str(to),
        document=document,
        idempotency_key=str(idempotency_key or ""),
        callback_url=str(callback_url or ""),
        metadata=metadata if metadata is not None else {},
    )
    try:
        accepted = accept.accept_send(get_runtime(), request)
    except accept.SendError as exc:
        raise SendRefused(f"{exc.status} {exc.code}: {exc.message}") from None
    return accepted.record.id
