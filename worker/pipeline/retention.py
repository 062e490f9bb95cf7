"""The retention sweep: a final record's JSON goes to S3, and the record leaves Redis once its
retention window has passed (DESIGN.md principle 9; the keys: ``worker.store.keys``).

Beat runs it every ``sweep_interval`` (``faxrelay.retain``), one run at a time (a lock that
lapses if its worker dies). A run:

1. once per store: rebuilds the counters from the indexes and queues for filing the final
   records of a store older than the filing queue (``worker.store.retention``);
2. files the final records waiting (``keys.UNFILED``), ``FILE_BATCH`` at a time: each one's public
   JSON beside its archive and by id (``worker.io.filing``), ``FILE_THREADS`` S3 writes at once.
   The keys that lead to the record get their expiry then (``_lookup_keys``). A record whose
   writes failed (S3 down) stays queued, and so in Redis, for the next run;
3. removes the filed records that became final more than the retention ago
   (``Settings.retention_seconds``), ``EXPIRE_BATCH`` per script call.

Each step stops after ``RUN_SECONDS``, so a backlog (S3 was down for a day) drains over several
runs instead of holding a worker.
"""

from __future__ import annotations

import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import orjson

from config.settings import Settings
from worker import metrics
from worker.domain import Direction, FaxRecord, parse_iso
from worker.io.archive import received_at
from worker.io.filing import file_record
from worker.providers import provider_class
from worker.providers.base import CONTENT_ID_PREFIX
from worker.runtime import Runtime
from worker.store import keys, retention, scripts
from worker.store.records import dedup_key

log = logging.getLogger(__name__)

FILE_BATCH = 500
EXPIRE_BATCH = 200
FILE_THREADS = 8
UPGRADE_BATCH = 5000
RUN_SECONDS = 20.0


@dataclass(frozen=True)
class Retained:
    filed: int
    removed: int


def dedup_window_days(settings: Settings, provider: str) -> float:
    """How long after its receipt a provider may announce a received fax again: its own expiry
    (PrimeVox: 30 days), the reconcile look-back for providers faxrelay lists (UCX, voip.ms:
    ``reconcile_lookback_days`` and ``keys.RECONCILE_OVERLAP_DAYS``, the horizon beyond which
    reconcile records nothing), and webhook re-sends (``keys.WEBHOOK_RESEND_DAYS``) for all;
    plus ``keys.DEDUP_MARGIN_DAYS``."""
    cls = provider_class(provider)
    days = keys.WEBHOOK_RESEND_DAYS
    if cls.inbound_retention_days is not None:
        days = max(days, float(cls.inbound_retention_days))
    if cls.capabilities.list_inbound:
        days = max(days, settings.reconcile_lookback_days + keys.RECONCILE_OVERLAP_DAYS)
    return days + keys.DEDUP_MARGIN_DAYS


def dedup_expiry(settings: Settings, record: FaxRecord, finalised_at: float) -> float:
    """When a received fax's dedup keys may go: not before the provider's dedup window has
    passed since its receipt, nor before the record itself leaves Redis."""
    received = parse_iso(received_at(record))
    start = received.timestamp() if received is not None else finalised_at
    window = settings.dedup_window_seconds  # tests' and benchmarks' accelerated clock
    if window is None:
        window = dedup_window_days(settings, record.provider) * 86400.0
    return max(start + window, finalised_at + settings.retention_seconds)


def _lookup_keys(
    settings: Settings, record: FaxRecord, finalised_at: float
) -> tuple[list[str], float]:
    """The keys that lead to the record (that still name it), and when they may go.

    Inbound: its dedup keys (provider fax id, content id), at ``dedup_expiry``. Outbound: the key
    that routes its job's status webhooks (``keys.JOB_TTL`` otherwise), with the record itself:
    a status webhook for a fax no longer in Redis has nothing to move. Idempotency keys keep
    their own TTL (``idempotency_ttl``)."""
    if record.direction == Direction.INBOUND:
        scope = keys.inbound_scope(record.account)
        found = []
        if record.provider_ids.get("fax_id"):
            found.append(dedup_key(scope, record.provider_ids["fax_id"]))
        if record.sha256:
            found.append(dedup_key(scope, f"{CONTENT_ID_PREFIX}{record.sha256}"))
        return found, dedup_expiry(settings, record, finalised_at)
    job_id = record.provider_ids.get("job_id", "")
    account = str(record.work.get("route_account") or record.account)
    found = [dedup_key(keys.job_scope(account), job_id)] if job_id else []
    return found, finalised_at + settings.retention_seconds


def retain(runtime: Runtime) -> Retained:
    """One run (see the module's docstring); nothing when another run holds the lock."""
    client = runtime.store.redis
    token = uuid.uuid4().hex
    if not client.set(keys.RETAIN_LOCK, token, nx=True, px=keys.RETAIN_LOCK_MS):
        return Retained(0, 0)
    try:
        retention.ensure_stats(client)
        retention.enqueue_old_finals(client, UPGRADE_BATCH)
        filed = file_final(runtime)
        removed = expire(runtime)
    finally:
        client.eval(scripts.RELEASE, 1, keys.RETAIN_LOCK, token)
    metrics.retention(filed, removed)
    if filed or removed:
        log.info("retention: %d final records filed in S3, %d removed from Redis", filed, removed)
    return Retained(filed, removed)


def file_final(runtime: Runtime, batch: int = FILE_BATCH) -> int:
    """File the final records waiting, batch by batch, for up to ``RUN_SECONDS``."""
    client = runtime.store.redis
    deadline = time.monotonic() + RUN_SECONDS
    filed = 0
    with ThreadPoolExecutor(FILE_THREADS, thread_name_prefix="faxrelay-filing") as pool:
        while time.monotonic() < deadline:
            waiting = retention.unfiled(client, batch)
            if not waiting:
                break
            raws = client.mget([keys.fax_key(fax_id) for fax_id, _ in waiting])
            records = {
                fax_id: FaxRecord.from_json(orjson.loads(raw)) if raw is not None else None
                for (fax_id, _), raw in zip(waiting, raws, strict=True)
            }
            futures = {
                fax_id: pool.submit(file_record, runtime.archive, record)
                for fax_id, record in records.items()
                if record is not None
            }
            moved = 0
            for fax_id, finalised_at in waiting:
                record = records[fax_id]
                if record is None:  # gone (nothing to file): leaves the queue
                    retention.mark_filed(client, fax_id, 0)
                    continue
                try:
                    futures[fax_id].result()
                except Exception as exc:  # S3 down or refusing: stays queued, and in Redis
                    log.warning("fax %s: final record not filed in S3: %s", fax_id, exc)
                    continue
                found, at = _lookup_keys(runtime.settings, record, finalised_at)
                retention.expire_dedup(client, fax_id, at, found)
                if retention.mark_filed(client, fax_id, record.version):
                    moved += 1
            filed += moved
            if len(waiting) < batch or not moved:
                break  # all done, or nothing moves (S3 down): the next run tries again
    return filed


def expire(runtime: Runtime, batch: int = EXPIRE_BATCH) -> int:
    """Remove the filed records past their retention, for up to ``RUN_SECONDS``."""
    client = runtime.store.redis
    cutoff = time.time() - runtime.settings.retention_seconds
    deadline = time.monotonic() + RUN_SECONDS
    removed = 0
    while time.monotonic() < deadline:
        count = retention.expire_final(client, cutoff, batch)
        removed += count
        if count < batch:
            break
    return removed
