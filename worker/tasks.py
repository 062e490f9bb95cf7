"""Celery tasks: thin wrappers over the pipelines' plain functions.

Every task takes a record id (or an account / delivery id), reads the record, and does its next
step; all of them are idempotent, hence ``acks_late`` (config/celery_app.py) is safe.
"""

from __future__ import annotations

from typing import Any

from config.celery_app import app

from . import events, inbound, sweeper
from .runtime import get_runtime


@app.task(name="faxrelay.handle_inbound")
def handle_inbound(fax_id: str) -> None:
    inbound.handle_inbound(get_runtime(), fax_id)


@app.task(name="faxrelay.archive_fax")
def archive_fax(fax_id: str) -> None:
    inbound.archive_fax(get_runtime(), fax_id)


@app.task(name="faxrelay.reconcile_account")
def reconcile_account(account: str) -> list[str]:
    return inbound.reconcile(get_runtime(), account)


@app.task(name="faxrelay.reconcile_all")
def reconcile_all() -> None:
    runtime = get_runtime()
    for name, account in runtime.settings.accounts.items():
        if account.reconcile_interval and inbound.reconcile_is_due(runtime, name):
            runtime.send_task("faxrelay.reconcile_account", "faxrelay.intake", [name])


@app.task(name="faxrelay.sweep")
def sweep() -> dict[str, Any]:
    result = sweeper.sweep(get_runtime())
    return {"records": result.records, "deliveries": result.deliveries}


@app.task(name="faxrelay.deliver_event")
def deliver_event(delivery_id: str) -> str:
    runtime = get_runtime()
    return events.deliver(runtime.store.redis, runtime.settings, delivery_id)
