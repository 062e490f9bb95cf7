"""The sweeper: wakes every record whose next step is overdue, and every due event delivery.

This is what makes a lost message, a killed worker or a Redis restart harmless: the record says
what it needs and when, and the sweeper (run by beat every ``sweep_interval`` seconds) sends the
wake-up again. Claiming pushes the due time out by ``wake_grace`` so a wake-up in flight is not
sent twice by the next sweep.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from worker import metrics
from worker.pipeline.events import claim_due_deliveries
from worker.runtime import EVENT_TASK, Runtime
from worker.store import rawlog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepResult:
    records: int
    deliveries: int


def sweep(runtime: Runtime, limit: int = 500) -> SweepResult:
    grace = runtime.settings.wake_grace
    woken = 0
    for fax_id in runtime.store.claim_due(limit=limit, grace=grace):
        record = runtime.store.find(fax_id)
        if record is None or (record.final and not record.work.get("owed")):
            continue
        runtime.wake(record)
        woken += 1
    deliveries = claim_due_deliveries(runtime.store.redis, grace, limit)
    rawlog.trim(runtime.store.redis, runtime.settings.webhook_log_days)
    for delivery_id in deliveries:
        runtime.send_task(EVENT_TASK[0], EVENT_TASK[1], [delivery_id])
    metrics.sweep(woken, len(deliveries))
    if woken or deliveries:
        log.info("sweep woke %d records and %d event deliveries", woken, len(deliveries))
    return SweepResult(woken, len(deliveries))
