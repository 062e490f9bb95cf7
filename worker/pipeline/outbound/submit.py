"""Submitting a send to its provider, at most once per job.

The attempt is recorded (``work["submit_started"]``) before the request leaves, so a worker that
dies mid-submit leaves a trace. A submit whose answer was lost (a timeout after the request left,
a dead worker) is never blindly repeated: the provider's job list is searched where it has one;
otherwise the record goes to ``unknown`` and waits for an operator (``actions.retry_fax``).
Transient refusals, before anything was taken, retry under ``retry.SUBMIT``.

This module does not follow the job: ``submit_step`` hands back the new job, and ``follow`` (which
calls it) takes any status webhook that came before the job id was saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker import metrics
from worker.domain import Direction, FaxRecord, State
from worker.logctx import bind_fax
from worker.pipeline.steps import save_step
from worker.providers.base import (
    BadDestinationError,
    OutcomeUnknownError,
    OutgoingDocument,
    ProviderError,
)
from worker.retry import SUBMIT
from worker.runtime import Runtime
from worker.store import keys
from worker.store.records import dedup_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewJob:
    """A job the provider took for a record that will be followed (the provider tracks jobs)."""

    account: str  # the account it went through (the fallback after a failover)
    job_id: str
    at: float  # epoch seconds it was recorded


def job_dedup(account: str, job_id: str) -> tuple[str, str]:
    """The dedup scope and key that lead a status webhook for ``job_id`` to its record."""
    return keys.job_scope(account), job_id


def route_account(record: FaxRecord) -> str:
    """The account the fax currently goes through (the fallback after a failover)."""
    return str(record.work.get("route_account") or record.account)


def needs_submit(record: FaxRecord) -> bool:
    """Not submitted yet, its submit unsettled, or due to go again (a redial or failover)."""
    return record.state in (State.QUEUED, State.UNKNOWN) or bool(record.work.get("resubmit"))


def fail_fax(runtime: Runtime, fax_id: str, reason: str, detail: str) -> None:
    """Fail the send with ``reason`` and announce ``fax.failed`` (once: only if this write did it)."""
    record = save_step(runtime, fax_id, State.FAILED, reason=reason, detail=detail)
    if record is not None and record.state == State.FAILED:
        log.warning("fax %s failed: %s (%s)", fax_id, reason, detail)
        runtime.emit(record, "fax.failed")


def submit_step(runtime: Runtime, fax_id: str) -> NewJob | None:
    """Submit the record if it needs it; the caller holds its lease.

    Returns the job when the provider took it and tracks jobs, for the caller to follow.
    """
    record = runtime.store.find(fax_id)
    bind_fax(record)
    if record is None or record.direction != Direction.OUTBOUND or record.final:
        return None
    if not needs_submit(record) or record.scheduled_later(time.time()):
        return None  # a duplicate wake-up: submitted already, or its retry is not due yet
    lost = record.state == State.UNKNOWN or record.work.get("submit_lost")
    if lost and not record.work.get("operator_resubmit"):
        return None  # waits for an operator (faxes retry) to decide
    resubmit_at = float(record.work.get("resubmit_at", 0))
    if resubmit_at > time.time() + 1:
        save_step(runtime, fax_id, None, due_at=resubmit_at)
        return None
    account_name = route_account(record)
    provider = runtime.provider(account_name)
    started = record.work.get("submit_started")
    if started and not record.work.get("operator_resubmit"):
        # A previous attempt sent its request and never recorded the answer.
        return _resolve_lost_submit(runtime, record, float(started))
    lease_due = time.time() + runtime.settings.lease_seconds
    attempt = record.attempts.get("submit", 0) + 1
    save_step(
        runtime,
        fax_id,
        None,
        due_at=lease_due,
        work={"submit_started": time.time()},
        drop_work=("operator_resubmit",),
        attempts={"submit": attempt},
    )
    try:
        with _document(runtime, record) as document:
            result = provider.submit(document, record.to_number)
    except OutcomeUnknownError as exc:
        record = runtime.store.get(fax_id)
        return _resolve_lost_submit(runtime, record, float(record.work["submit_started"]), str(exc))
    except BadDestinationError as exc:
        fail_fax(runtime, fax_id, "bad_destination", str(exc))
        return None
    except ProviderError as exc:
        _submit_failed(runtime, fax_id, attempt, exc)
        return None
    return _submitted(runtime, fax_id, account_name, result.job_id, result.raw)


@contextlib.contextmanager
def _document(runtime: Runtime, record: FaxRecord) -> Iterator[OutgoingDocument]:
    with tempfile.TemporaryFile() as spool:
        runtime.archive.download_to(record.document_key, spool)
        size = spool.tell()
        spool.seek(0)
        url = runtime.archive.presigned_url(record.document_key, runtime.settings.presign_expiry)
        yield OutgoingDocument(filename=f"{record.id}.pdf", stream=spool, size=size, url=url)


def _submit_failed(runtime: Runtime, fax_id: str, attempt: int, exc: ProviderError) -> None:
    """The provider refused the submit (nothing was taken): retry by ``SUBMIT``, or fail."""
    retryable = exc.kind in SUBMIT.retry_on
    if retryable and (SUBMIT.max_attempts is None or attempt < SUBMIT.max_attempts):
        metrics.retry("submit", str(exc.kind))
        delay = SUBMIT.backoff.delay(attempt) * runtime.settings.retry_scale
        save_step(
            runtime,
            fax_id,
            None,
            note=f"submit attempt {attempt} failed, retrying: {exc}",
            due_at=time.time() + delay,
            work={"not_before": time.time() + delay},
            drop_work=("submit_started",),  # the provider refused it: nothing was taken
        )
        return
    reason = SUBMIT.on_exhausted if retryable else "provider_error"
    fail_fax(runtime, fax_id, reason, str(exc))


def _submitted(
    runtime: Runtime, fax_id: str, account_name: str, job_id: str, raw: dict[str, Any]
) -> NewJob | None:
    """Record the job (and where its status webhooks lead); the job to follow, if tracked."""
    provider = runtime.provider(account_name)
    now = time.time()
    if job_id:
        scope, key = job_dedup(account_name, job_id)
        runtime.store.redis.set(dedup_key(scope, key), json.dumps({"id": fax_id}), ex=keys.JOB_TTL)
    tracked = provider.capabilities.track
    record = save_step(
        runtime,
        fax_id,
        State.SUBMITTED if tracked else State.ACCEPTED,
        note=f"submitted to {account_name}" + (f" as job {job_id}" if job_id else ""),
        due_at=now + provider.poll_first * runtime.settings.retry_scale,
        work={"submitted_at": now, "submit_raw": raw, "polls": 0},
        drop_work=("submit_started", "resubmit", "resubmit_at", "pushed_status", "submit_lost"),
        provider_ids={"job_id": job_id},
        forward_only=True,  # a redial or failover resubmits a fax that is already sending
    )
    if record is None:
        return None
    runtime.emit(record, "fax.submitted")
    return NewJob(account_name, job_id, now) if tracked else None


def _resolve_lost_submit(
    runtime: Runtime, record: FaxRecord, started: float, detail: str = ""
) -> NewJob | None:
    """The request left and its answer did not come back: find the job, never send it twice."""
    account_name = route_account(record)
    provider = runtime.provider(account_name)
    detail = detail or "the worker stopped while submitting"
    if provider.capabilities.find_submitted:
        try:
            found = provider.find_submitted(
                record.to_number, datetime.fromtimestamp(started - 60, UTC)
            )
        except ProviderError as exc:
            save_step(
                runtime,
                record.id,
                None,
                note=f"looking up the lost submit failed, will retry: {exc}",
                due_at=time.time() + 30 * runtime.settings.retry_scale,
            )
            return None
        if found is not None:
            return _submitted(runtime, record.id, account_name, found.job_id, found.raw)
    save_step(
        runtime,
        record.id,
        State.UNKNOWN,
        reason="submit_outcome_unknown",
        detail=f"{detail}; {provider.name} cannot confirm whether the fax was taken. "
        "Check at the provider, then retry or cancel the fax.",
        due_at=None,
        work={"submit_lost": True},
        # A lost redial or failover resubmit: the record is past ``unknown`` (e.g. sending);
        # it keeps its state with the reason and waits for an operator all the same.
        forward_only=True,
    )
    return None
