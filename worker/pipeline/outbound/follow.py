"""Following a send to its final state: the worker's two wake-ups of an outbound record.

- ``submit_fax``  the submit step (``submit.submit_step``), then at once any status webhook that
                  came before the job id was saved (the intake keeps it under the job id).
- ``poll_fax``    ask the provider (or take the final status a webhook pushed) and move the record
                  forward; a record due to go again (a redial, a failover) is submitted instead.
                  Polls come when the job's state is likely to change (``schedule``: from the
                  provider's words, when each was seen, and the fax's pages), backing off to
                  the provider's ``poll_cap`` when they say nothing. Past ``send_deadline``
                  the fax fails ``timeout``.
- a failed job    busy / no answer redials after ``redial_delay`` up to ``redial_count`` times; a
                  provider's own failure fails over, once, to the account's ``fallback_account``;
                  anything else fails the fax.

``status_update`` is the pure rule for a status a webhook pushes; the web intake applies it
through the async store.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from worker import metrics
from worker.domain import (
    Direction,
    FaxRecord,
    SeenStatus,
    State,
    Work,
    can_move,
    parse_iso,
    transition,
    utcnow,
)
from worker.logctx import bind_fax, fax_context
from worker.pipeline.outbound import schedule
from worker.pipeline.outbound.submit import (
    NewJob,
    fail_fax,
    job_dedup,
    needs_submit,
    route_account,
    submit_step,
)
from worker.pipeline.steps import leased, save_step
from worker.providers import provider_class
from worker.providers.base import FailureCause, JobState, JobStatus, ProviderError
from worker.runtime import SUBMIT_TASK, Runtime
from worker.store import keys
from worker.store.records import dedup_key

log = logging.getLogger(__name__)

STATE_FOR_JOB: dict[JobState, State] = {
    JobState.QUEUED: State.SUBMITTED,
    JobState.SENDING: State.SENDING,
    JobState.DELIVERED: State.DELIVERED,
    JobState.FAILED: State.FAILED,
    JobState.CANCELLED: State.CANCELLED,
    JobState.ACCEPTED: State.ACCEPTED,
    JobState.UNKNOWN: State.SUBMITTED,  # unknown words never end a fax
}


def submit_fax(runtime: Runtime, fax_id: str) -> None:
    with fax_context(fax_id), leased(runtime, fax_id) as mine:
        if mine:
            _submit_and_follow(runtime, fax_id)


def poll_fax(runtime: Runtime, fax_id: str) -> None:
    with fax_context(fax_id), leased(runtime, fax_id) as mine:
        if mine:
            _poll(runtime, fax_id)


def _submit_and_follow(runtime: Runtime, fax_id: str) -> None:
    job = submit_step(runtime, fax_id)
    if job is not None:
        _take_early_status(runtime, fax_id, job)


def _take_early_status(runtime: Runtime, fax_id: str, job: NewJob) -> None:
    """A status webhook that came before the job id was saved: apply it now, and act on it."""
    # Deleted only once applied (a worker that dies first leaves it to expire; polls learn it).
    pending_key = keys.pending_status_key(job.account, job.job_id)
    pending = runtime.store.redis.get(pending_key)
    if pending is None:
        return
    provider = runtime.provider(job.account)
    body = pending.encode() if isinstance(pending, str) else pending
    event = provider.parse_status_webhook({}, body)
    runtime.store.update(
        fax_id,
        lambda r: status_update(
            r,
            event.status,
            job.at,
            "status webhook",
            provider.poll_first * runtime.settings.retry_scale,
        ),
    )
    runtime.store.redis.delete(pending_key)
    _poll(runtime, fax_id)  # the caller holds the lease: poll_fax would skip it


def seen_status(status: JobStatus, now: float, source: str) -> SeenStatus:
    """A job status as the record keeps it (``work["last_status"]``, ``work["pushed_status"]``)."""
    return {
        "state": str(status.state),
        "raw": status.raw_status,
        "detail": status.detail,
        "cause": str(status.cause) if status.cause else "",
        "provider_retried": status.provider_retried,
        "at": now,
        "source": source,
    }


def status_update(
    record: FaxRecord, status: JobStatus, now: float, source: str, next_poll: float
) -> bool:
    """Apply a status a webhook pushed; returns True when the worker must act now.

    Progress is applied at once and the next poll pushed out by ``next_poll`` seconds. A final
    status is left for the worker (it emits the events and decides redial or failover), which
    is woken at once.
    """
    if record.final:
        return False
    if status.state.final:
        record.work["pushed_status"] = seen_status(status, now, source)
        record.work.pop("not_before", None)
        record.due_at = now
        return True
    target = STATE_FOR_JOB[status.state]
    if can_move(record, target):
        transition(record, target, note=f"{source}: {status.raw_status}")
    record.work["last_status"] = seen_status(status, now, source)
    record.due_at = record.work["not_before"] = now + next_poll
    return False


def next_poll_after_webhook(provider_name: str, retry_scale: float) -> float:
    """How far a progress webhook pushes the next poll out: the provider's first poll delay."""
    return provider_class(provider_name).poll_first * retry_scale


def _poll(runtime: Runtime, fax_id: str) -> None:
    record = runtime.store.find(fax_id)
    bind_fax(record)
    if record is None or record.final or record.direction != Direction.OUTBOUND:
        return
    if needs_submit(record):
        _submit_and_follow(runtime, fax_id)
        return
    account_name = route_account(record)
    provider = runtime.provider(account_name)
    now = time.time()
    pushed = record.work.get("pushed_status")
    if not pushed and record.scheduled_later(time.time()):
        return  # a duplicate wake-up before the scheduled poll
    if pushed:
        status = JobStatus(
            state=JobState(pushed["state"]),
            raw_status=pushed["raw"],
            detail=pushed["detail"],
            cause=FailureCause(pushed["cause"]) if pushed["cause"] else None,
            provider_retried=pushed["provider_retried"],
        )
    else:
        submitted_at = datetime.fromtimestamp(float(record.work.get("submitted_at", now)), UTC)
        try:
            status = provider.status(
                record.provider_ids.get("job_id", ""), record.to_number, submitted_at
            )
        except ProviderError as exc:
            status = JobStatus(
                JobState.UNKNOWN, raw_status="", detail=f"status check failed: {exc}"
            )
    deadline = (
        parse_iso(record.created_at) or utcnow()
    ).timestamp() + runtime.settings.send_deadline
    polls = int(record.work.get("polls", 0)) + 1
    if status.state == JobState.FAILED:
        _job_failed(runtime, record, status)
        return
    if status.state.final:
        target = STATE_FOR_JOB[status.state]
        event = {State.DELIVERED: "fax.delivered", State.CANCELLED: "fax.cancelled"}.get(target)
        save_step(
            runtime,
            fax_id,
            target,
            note=f"{pushed['source'] if pushed else 'poll'}: {status.raw_status}",
            work={"last_status": seen_status(status, now, "poll"), "polls": polls},
            drop_work=("pushed_status",),
            events=(event,) if event else (),
        )
        return
    if now >= deadline:
        fail_fax(
            runtime,
            fax_id,
            "timeout",
            f"no final state within {runtime.settings.send_deadline:.0f} s; "
            f"last status {status.raw_status or status.detail!r}",
        )
        return
    target = STATE_FOR_JOB[status.state]
    queued_at, sending_at = _attempt_seen(record, status.state, now)
    job = schedule.Job(
        submitted_at=float(record.work.get("submitted_at", now)),
        pages=record.pages or 1,
        queued_seen_at=queued_at,
        sending_seen_at=sending_at,
        last_poll_at=record.work["last_status"]["at"] if "last_status" in record.work else None,
    )
    delay = min(
        schedule.next_poll(
            status.state,
            now,
            job,
            poll_first=provider.poll_first,
            poll_cap=provider.poll_cap,
            scale=runtime.settings.retry_scale,
        ),
        max(1.0, deadline - now),
    )
    work: Work = {
        "last_status": seen_status(status, now, "poll"),
        "polls": polls,
        "not_before": now + delay,
    }
    if queued_at is not None:
        work["queued_seen_at"] = queued_at
    if sending_at is not None:
        work["sending_seen_at"] = sending_at
    save_step(
        runtime,
        fax_id,
        target if can_move(record, target) else None,
        note=f"poll: {status.raw_status}" if status.raw_status else "",
        due_at=now + delay,
        work=work,
    )


def _attempt_seen(
    record: FaxRecord, state: JobState, now: float
) -> tuple[float | None, float | None]:
    """When the current attempt was last seen queued and first seen sending, this poll included
    (``schedule``'s inputs). Moments from before the latest submit (a redial) do not count, nor
    a "sending" from before the job was last seen queued (the provider redialled itself)."""
    submitted = float(record.work.get("submitted_at", 0.0))
    queued = record.work.get("queued_seen_at")
    sending = record.work.get("sending_seen_at")
    if queued is not None and queued < submitted:
        queued = None
    if sending is not None and (sending < submitted or (queued is not None and sending < queued)):
        sending = None
    if state == JobState.QUEUED:
        queued, sending = now, None
    elif state == JobState.SENDING and sending is None:
        sending = now
    return queued, sending


def _forget_job(runtime: Runtime, record: FaxRecord) -> None:
    """A failed job is about to be replaced (redial, failover): its late status webhooks must
    no longer reach the record, or they would fail the new job."""
    job_id = record.provider_ids.get("job_id", "")
    if job_id:
        runtime.store.redis.delete(dedup_key(*job_dedup(route_account(record), job_id)))


def _job_failed(runtime: Runtime, record: FaxRecord, status: JobStatus) -> None:
    """Redial, fail over, or fail the fax (see the module's docstring)."""
    settings = runtime.settings
    words = status.detail or status.raw_status
    redials = int(record.attempts.get("redial", 0))
    if (
        status.cause in (FailureCause.BUSY, FailureCause.NO_ANSWER)
        and not status.provider_retried
        and redials < settings.redial_count
    ):
        at = time.time() + settings.redial_delay * settings.retry_scale
        metrics.retry("redial", str(status.cause))
        _forget_job(runtime, record)
        save_step(
            runtime,
            record.id,
            None,
            note=f"{status.cause}: redial {redials + 1} of {settings.redial_count}",
            due_at=at,
            work={"resubmit": True, "resubmit_at": at, "last_failure": words},
            drop_work=("pushed_status",),
            attempts={"redial": redials + 1},
        )
        return
    fallback = settings.account(route_account(record)).fallback_account
    if (
        status.cause in (FailureCause.PROVIDER, FailureCause.OTHER, None)
        and fallback
        and not record.work.get("failed_over")
    ):
        metrics.retry("failover", str(status.cause))
        _forget_job(runtime, record)
        save_step(
            runtime,
            record.id,
            None,
            note=f"{route_account(record)} failed the job ({words}); failing over to {fallback}",
            due_at=time.time(),
            work={
                "resubmit": True,
                "route_account": fallback,
                "failed_over": True,
                "last_failure": words,
            },
            drop_work=("pushed_status",),
        )
        runtime.send_task(SUBMIT_TASK[0], SUBMIT_TASK[1], [record.id])
        return
    reason = "bad_destination" if status.cause == FailureCause.BAD_NUMBER else "provider_error"
    fail_fax(runtime, record.id, reason, f"{route_account(record)}: {words}")
