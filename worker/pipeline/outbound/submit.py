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

import redis
from celery.exceptions import SoftTimeLimitExceeded

from config import tracing
from worker import metrics
from worker.domain import Direction, FaxRecord, State
from worker.logctx import bind_fax
from worker.pipeline.outbound import schedule
from worker.pipeline.steps import save_step
from worker.providers.base import (
    BadDestinationError,
    OutcomeUnknownError,
    OutgoingDocument,
    ProviderError,
)
from worker.retry import SUBMIT
from worker.runtime import Runtime
from worker.store import keys, replicas, scripts
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


def fail_fax(
    runtime: Runtime, fax_id: str, reason: str, detail: str, provider_error: str = ""
) -> None:
    """Fail the send with ``reason``; ``fax.failed`` goes with the write that failed it (once).
    ``provider_error``: the account whose provider's error failed it (the hourly counts)."""
    record = save_step(
        runtime,
        fax_id,
        State.FAILED,
        reason=reason,
        detail=detail,
        events=("fax.failed",),
        provider_error=provider_error,
    )
    if record is not None and record.state == State.FAILED:
        log.warning("fax %s failed: %s (%s)", fax_id, reason, detail)


def _may_start(record: FaxRecord) -> bool:
    """Still to be submitted, by nobody else: checked in the write that records the attempt, so
    a cancel (or a second worker) that came first stops this submit before it leaves."""
    if record.final or not needs_submit(record):
        return False
    return not record.work.get("submit_started") or bool(record.work.get("operator_resubmit"))


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
    _register_submit(runtime, account_name, record)
    epoch = replicas.epoch_sync(runtime.store.redis, runtime.settings)  # for _start_replicated
    starting = save_step(
        runtime,
        fax_id,
        None,
        due_at=lease_due,
        work={"submit_started": time.time(), "reference": _reference(record, attempt)},
        drop_work=("operator_resubmit",),
        attempts={"submit": attempt},
        precondition=_may_start,
        run_started=True,
    )
    if starting is None:
        return None  # cancelled (or taken by another worker) since it was read
    if not _start_replicated(runtime, fax_id, epoch):
        return None
    try:
        with (
            _document(runtime, starting) as document,
            tracing.span(
                "provider submit", {"faxrelay.fax_id": fax_id, "faxrelay.account": account_name}
            ),
        ):
            result = provider.submit(document, record.to_number)
    except (OutcomeUnknownError, SoftTimeLimitExceeded) as exc:
        # The request may have left (a lost answer; a submit stopped at its time limit).
        if isinstance(exc, SoftTimeLimitExceeded):
            exc = OutcomeUnknownError(provider.name, "submit", "the submit ran over its time limit")
        record = runtime.store.get(fax_id)
        return _resolve_lost_submit(runtime, record, float(record.work["submit_started"]), str(exc))
    except BadDestinationError as exc:
        fail_fax(runtime, fax_id, "bad_destination", str(exc))
        return None
    except ProviderError as exc:
        _submit_failed(runtime, fax_id, attempt, exc, account_name)
        return None
    return _submitted(runtime, fax_id, account_name, result.job_id, result.raw)


def _start_replicated(runtime: Runtime, fax_id: str, epoch: str) -> bool:
    """With FAXRELAY_REDIS_MIN_REPLICAS, ``submit_started`` must be on the replicas before the
    request leaves: after a failover to a replica without it the fax would be submitted twice.
    Not confirmed (in time, or Redis failed over meanwhile): the mark is taken back (nothing has
    left yet) and the submit waits."""
    try:
        replicas.confirm_sync(runtime.store.redis, runtime.settings, epoch)
    except (replicas.NotReplicated, redis.ConnectionError, redis.TimeoutError) as exc:
        save_step(
            runtime,
            fax_id,
            None,
            note=f"submit postponed: {exc}",
            due_at=time.time() + 30 * runtime.settings.retry_scale,
            drop_work=("submit_started",),
        )
        return False
    return True


def _reference(record: FaxRecord, attempt: int) -> str:
    """Unique to this submit of this fax (a redial is another submit), short enough for a fax
    station id (20 characters): the fax id's random part and the attempt."""
    return f"fr{record.id[-12:]}-{attempt}"


@contextlib.contextmanager
def _document(runtime: Runtime, record: FaxRecord) -> Iterator[OutgoingDocument]:
    with tempfile.TemporaryFile() as spool:
        runtime.archive.download_to(record.document_key, spool)
        size = spool.tell()
        spool.seek(0)
        url = runtime.archive.presigned_url(record.document_key, runtime.settings.presign_expiry)
        yield OutgoingDocument(
            filename=f"{record.id}.pdf",
            stream=spool,
            size=size,
            url=url,
            reference=str(record.work.get("reference", "")),
        )


def _submit_failed(
    runtime: Runtime, fax_id: str, attempt: int, exc: ProviderError, account: str
) -> None:
    """The provider of ``account`` refused the submit (nothing was taken): retry by ``SUBMIT``,
    or fail; counted among the account's provider errors either way."""
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
            provider_error=account,
        )
        return
    reason = SUBMIT.on_exhausted if retryable else "provider_error"
    fail_fax(runtime, fax_id, reason, str(exc), provider_error=account)


def _first_poll(runtime: Runtime, fax_id: str) -> float:
    """Seconds to the first status poll: about when a fax of its pages can first be through."""
    record = runtime.store.find(fax_id)
    return schedule.first_poll(record.pages if record else None, runtime.settings.retry_scale)


def _claim_job(runtime: Runtime, fax_id: str, account: str, job_id: str, mode: str) -> str | None:
    """Make ``job_id`` the fax's (``scripts.CLAIM_JOB``): None when another send owns it (an
    adoption), else the send it was taken from ('' when none)."""
    scope, key = job_dedup(account, job_id)
    ok, owner = runtime.store.redis.eval(
        scripts.CLAIM_JOB, 1, dedup_key(scope, key), fax_id, mode, keys.JOB_TTL
    )
    owner = owner.decode() if isinstance(owner, bytes) else str(owner or "")
    return owner if ok else None


def _submitted(
    runtime: Runtime,
    fax_id: str,
    account_name: str,
    job_id: str,
    raw: dict[str, Any],
    *,
    adopted: str = "",
) -> NewJob | None:
    """Record the job (and where its status webhooks lead); the job to follow, if tracked.

    ``adopted``: how a lost submit's look-up settled on this job (the job key is claimed
    already); otherwise the provider's answer named it, and any send that had adopted the same
    job by mistake is sent to ``unknown``."""
    provider = runtime.provider(account_name)
    now = time.time()
    if job_id and not adopted:
        previous = _claim_job(runtime, fax_id, account_name, job_id, "answer")
        if previous:
            _disown(runtime, previous, fax_id, job_id)
    tracked = provider.capabilities.track
    note = f"submitted to {account_name}" + (f" as job {job_id}" if job_id else "")
    if adopted:
        note += f" ({adopted})"
    if not job_id and tracked:
        note += (
            f"; {provider.name} returned no job id and the send carried nothing it lists back, "
            "so its outcome is matched by destination and time only (another fax to the same "
            "number can be taken for it)"
        )
    record = save_step(
        runtime,
        fax_id,
        State.SUBMITTED if tracked else State.ACCEPTED,
        note=note,
        due_at=now + _first_poll(runtime, fax_id),
        work={"submitted_at": now, "submit_raw": raw, "polls": 0},
        drop_work=("submit_started", "resubmit", "resubmit_at", "submit_lost"),
        provider_ids={"job_id": job_id},
        forward_only=True,  # a redial or failover resubmits a fax that is already sending
        events=("fax.submitted",),
    )
    if record is None:
        return None
    # Submitted: never another lost submit's rival again (``_rivals``). Its entry goes now, so
    # the set holds the submits in flight, not a day of them (one number may get them all).
    runtime.store.redis.zrem(keys.submits_key(account_name, record.to_number), fax_id)
    return NewJob(account_name, job_id, now) if tracked else None


def _disown(runtime: Runtime, fax_id: str, owner: str, job_id: str) -> None:
    """``fax_id`` had adopted ``job_id`` after a lost submit, and the provider's answer to
    ``owner``'s submit named that job: the adoption was wrong, and ``fax_id``'s own submit is
    unsettled after all (an operator decides)."""
    log.error("fax %s had adopted job %s, which is fax %s's", fax_id, job_id, owner)
    save_step(
        runtime,
        fax_id,
        State.UNKNOWN,
        reason="submit_outcome_unknown",
        detail=f"job {job_id}, taken for this fax after its submit's answer was lost, is fax "
        f"{owner}'s. Check at the provider, then retry or cancel the fax.",
        due_at=None,
        work={"submit_lost": True},
        provider_ids={"job_id": ""},
        forward_only=True,
        live_only=True,
    )


def _resolve_lost_submit(
    runtime: Runtime, record: FaxRecord, started: float, detail: str = ""
) -> NewJob | None:
    """The request left and its answer did not come back: find the job, never send it twice,
    never take another send's job.

    The provider's jobs to the same number since the submit started are the candidates, less
    those another send owns (their job keys); exactly one left is this send's and is claimed
    (atomically: two lost submits cannot both take it). None or several: ``unknown``."""
    account_name = route_account(record)
    provider = runtime.provider(account_name)
    detail = detail or "the worker stopped while submitting"
    reference = str(record.work.get("reference", ""))
    if provider.capabilities.find_submitted:
        since = datetime.fromtimestamp(started - 60, UTC)
        try:
            candidates = provider.submitted_candidates(record.to_number, since, reference)
        except ProviderError as exc:
            save_step(
                runtime,
                record.id,
                None,
                note=f"looking up the lost submit failed, will retry: {exc}",
                due_at=time.time() + 30 * runtime.settings.retry_scale,
            )
            return None
        mine = [c for c in candidates if _owner(runtime, account_name, c.job_id) in ("", record.id)]
        rivals: list[str] = []
        if len(mine) == 1 and not (reference and mine[0].job_id == reference):
            # Matched by number and time only: a rival's job looks the same as this one's.
            rivals = _rivals(runtime, account_name, record, since.timestamp() - 120)
            if rivals:
                detail += (
                    f"; {provider.name} lists one unowned job to {record.to_number} since then, "
                    f"but {len(rivals)} other fax(es) to that number ({', '.join(rivals[:3])}) "
                    "were submitted meanwhile without a job of their own, and the provider lists "
                    "nothing that tells their jobs apart"
                )
                _unknown(runtime, record, detail)
                return None
        if len(mine) == 1:
            found = mine[0]
            how = "found after its submit's answer was lost"
            if found.job_id and reference and found.job_id == reference:
                how = f"found by its reference {reference} after its submit's answer was lost"
            if (
                not found.job_id
                or _claim_job(runtime, record.id, account_name, found.job_id, "adopt") is not None
            ):
                return _submitted(
                    runtime, record.id, account_name, found.job_id, found.raw, adopted=how
                )
            mine = []  # another send claimed it meanwhile
        if mine or candidates:
            others = len(candidates) - len(mine)
            detail += (
                f"; {provider.name} lists {len(candidates)} job(s) to {record.to_number} since "
                f"then ({len(mine)} unowned, {others} owned by other faxes), so which one (if "
                "any) is this fax cannot be told"
            )
            _unknown(runtime, record, detail)
            return None
    _unknown(runtime, record, f"{detail}; {provider.name} cannot confirm whether the fax was taken")
    return None


def _register_submit(runtime: Runtime, account: str, record: FaxRecord) -> None:
    """Note that a submit of ``record`` to its number starts (``keys.submits_key``), before the
    attempt is recorded: a lost submit's look-up must know every send that could own a job."""
    key = keys.submits_key(account, record.to_number)
    now = time.time()
    pipe = runtime.store.redis.pipeline(transaction=True)
    pipe.zadd(key, {record.id: now})
    pipe.zremrangebyscore(key, "-inf", now - keys.SUBMITS_TTL)
    pipe.expire(key, keys.SUBMITS_TTL)
    pipe.execute()


def _rivals(runtime: Runtime, account: str, record: FaxRecord, since: float) -> list[str]:
    """Other sends to ``record``'s number whose submit started since ``since`` and that hold no
    job: their request may have left (its answer lost or not in yet), so any job listed to that
    number could be theirs."""
    key = keys.submits_key(account, record.to_number)
    ids = runtime.store.redis.zrangebyscore(key, since, "+inf")
    rivals = []
    for raw in ids:
        fax_id = raw.decode() if isinstance(raw, bytes) else str(raw)
        if fax_id == record.id:
            continue
        other = runtime.store.find(fax_id)
        if other is None or other.provider_ids.get("job_id"):
            continue
        if other.work.get("submit_started") or other.work.get("submit_lost"):
            rivals.append(fax_id)
    return rivals


def _owner(runtime: Runtime, account: str, job_id: str) -> str:
    """The send whose job key names ``job_id`` ('' for none, or no job id)."""
    if not job_id:
        return ""
    ref = runtime.store.redis.get(dedup_key(*job_dedup(account, job_id)))
    return str(json.loads(ref)["id"]) if ref else ""


def _unknown(runtime: Runtime, record: FaxRecord, detail: str) -> None:
    save_step(
        runtime,
        record.id,
        State.UNKNOWN,
        reason="submit_outcome_unknown",
        detail=f"{detail}. Check at the provider, then retry or cancel the fax.",
        due_at=None,
        work={"submit_lost": True},
        # A lost redial or failover resubmit: the record is past ``unknown`` (e.g. sending);
        # it keeps its state with the reason and waits for an operator all the same.
        forward_only=True,
    )
