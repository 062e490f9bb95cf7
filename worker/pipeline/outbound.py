"""The outbound pipeline: a document and a number in, one submit at the provider, followed to the end.

Steps (plain functions; ``tasks.py`` and the web API wrap them):

- ``accept_send``  validate (account, destination by the provider module, PDF, size, callback host),
                   store the document under ``outbound/``, create the record with the idempotency key.
- ``submit_fax``   record the attempt, then submit. A submit whose answer was lost is never blindly
                   repeated: the provider's job list is searched where it has one, otherwise the
                   record goes to ``unknown`` for an operator.
- ``poll_fax``     ask the provider (or take the status a webhook pushed) and move the record forward;
                   polls back off exponentially from the record's due time. Busy / no answer redials
                   after ``redial_delay`` up to ``redial_count``; a provider's own failure fails over to
                   the account's ``fallback_account``; past ``send_deadline`` the fax fails ``timeout``.
- ``cancel_fax``   before submit anywhere; after, where the provider can cancel.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import io
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx

from worker import metrics
from worker.domain import (
    Direction,
    FaxRecord,
    State,
    can_move,
    iso,
    parse_iso,
    transition,
    utcnow,
)
from worker.io.fetch import URLRefused, guarded_client, host_of, normalise_hosts
from worker.io.pdfcheck import check_pdf
from worker.logctx import bind_fax, fax_context
from worker.pipeline.steps import leased, save_step
from worker.providers import provider_class
from worker.providers.base import (
    BadDestinationError,
    ErrorKind,
    FailureCause,
    JobState,
    JobStatus,
    OutcomeUnknownError,
    OutgoingDocument,
    ProviderError,
)
from worker.retry import SUBMIT, Backoff
from worker.runtime import SUBMIT_TASK, Runtime
from worker.store.records import RecordNotFound, dedup_key

log = logging.getLogger(__name__)


class SendError(Exception):
    """A send request that cannot be accepted; ``status`` is the HTTP status the API answers."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def job_dedup(account: str, job_id: str) -> tuple[str, str]:
    return f"job:{account}", job_id


# --- accepting a send ----------------------------------------------------------------------


@dataclass
class SendRequest:
    account: str
    to: str
    document: dict[str, Any]  # {"base64"} | {"s3_key"} | {"url"}
    idempotency_key: str = ""
    callback_url: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    file: bytes | None = None  # multipart upload


@dataclass(frozen=True)
class Accepted:
    record: FaxRecord
    created: bool


def _document_bytes(runtime: Runtime, req: SendRequest) -> bytes:
    limit = runtime.settings.document_max_bytes
    doc = req.document or {}
    if req.file is not None:
        data = req.file
    elif "base64" in doc:
        try:
            data = base64.b64decode(str(doc["base64"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SendError(422, "bad_document", f"document.base64 is not base64: {exc}") from exc
    elif "s3_key" in doc:
        try:
            with tempfile.SpooledTemporaryFile() as spool:
                runtime.archive.download_to(str(doc["s3_key"]), spool)
                spool.seek(0)
                data = spool.read(limit + 1)
        except Exception as exc:  # botocore raises several kinds; the message says which
            raise SendError(422, "bad_document", f"document.s3_key cannot be read: {exc}") from exc
    elif "url" in doc:
        data = _fetch_document(runtime, str(doc["url"]))
    else:
        raise SendError(422, "bad_document", "document needs one of base64, s3_key or url")
    if len(data) > limit:
        raise SendError(413, "too_large", f"document over {limit} bytes")
    if not data:
        raise SendError(422, "bad_document", "document is empty")
    return data


def _fetch_document(runtime: Runtime, url: str) -> bytes:
    settings = runtime.settings
    if not url.startswith("https://") and not _is_literal_allowed(url, settings.document_hosts):
        raise SendError(422, "bad_document", "document.url must be https")
    limit = settings.document_max_bytes
    try:
        with (
            guarded_client(settings.document_hosts, timeout=runtime.timeout) as http,
            http.stream("GET", url) as answer,
        ):
            if answer.status_code != 200:
                raise SendError(
                    422, "bad_document", f"document.url answered HTTP {answer.status_code}"
                )
            chunks, size = [], 0
            for chunk in answer.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise SendError(413, "too_large", f"document over {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except URLRefused as exc:
        raise SendError(422, "url_refused", exc.reason) from exc
    except httpx.HTTPError as exc:
        raise SendError(422, "bad_document", f"document.url could not be fetched: {exc}") from exc


def _is_literal_allowed(url: str, hosts: tuple[str, ...]) -> bool:
    """Plain http is allowed only to hosts the configuration names (e.g. a local test server)."""
    return host_of(url) in normalise_hosts(hosts)


def _check_callback(runtime: Runtime, url: str) -> None:
    if not url:
        return
    if runtime.settings.event_secret is None:
        raise SendError(422, "no_event_secret", "callback_url needs FAXRELAY_EVENT_SECRET set")
    if not url.startswith(("https://", "http://")):
        raise SendError(422, "bad_callback", "callback_url must be an http(s) URL")
    if host_of(url) not in normalise_hosts(runtime.settings.callback_hosts):
        raise SendError(
            422, "callback_refused", f"callback_url host {host_of(url)!r} is not an allowed host"
        )


def fingerprint(account: str, to: str, sha256: str, callback_url: str, metadata: Any) -> str:
    canonical = json.dumps([account, to, sha256, callback_url, metadata], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def accept_send(runtime: Runtime, req: SendRequest) -> Accepted:
    """Validate, store the document, create the record (or find the idempotent one)."""
    settings = runtime.settings
    account = settings.accounts.get(req.account)
    if account is None:
        raise SendError(422, "unknown_account", f"no account named {req.account!r}")
    try:
        to = provider_class(account.provider).normalize_destination(req.to)
    except BadDestinationError as exc:
        raise SendError(422, "bad_destination", exc.provider_message) from exc
    _check_callback(runtime, req.callback_url)
    if not isinstance(req.metadata, dict):
        raise SendError(422, "bad_metadata", "metadata must be a JSON object")
    scope = f"idem:{account.name}"
    if req.idempotency_key and len(req.idempotency_key) > 255:
        raise SendError(422, "bad_idempotency_key", "Idempotency-Key is longer than 255 characters")
    data = _document_bytes(runtime, req)
    checked = check_pdf(io.BytesIO(data))
    if not checked.ok:
        raise SendError(422, "not_pdf", f"document: {checked.problem}")
    sha = hashlib.sha256(data).hexdigest()
    print_ = fingerprint(account.name, to, sha, req.callback_url, req.metadata)
    if req.idempotency_key:
        existing = runtime.store.lookup(scope, req.idempotency_key)
        if existing is not None:
            return _idempotent(runtime, scope, req.idempotency_key, existing, print_)
    record = FaxRecord.new(
        Direction.OUTBOUND,
        account.name,
        account.provider,
        to_number=to,
        from_number=_from_number(account.name, runtime),
        pages=checked.pages,
        sha256=sha,
        callback_url=req.callback_url,
        metadata=req.metadata,
    )
    stored = runtime.archive.put_file(
        runtime.archive.key_for("outbound", record), io.BytesIO(data), sha256=sha, size=len(data)
    )
    record.document_key = stored.key
    record.due_at = time.time() + settings.wake_grace
    created = runtime.store.create(
        record,
        dedup=dedup_key(scope, req.idempotency_key) if req.idempotency_key else "",
        dedup_ttl=settings.idempotency_ttl,
        fingerprint=print_,
    )
    if not created.created:  # lost a race with an identical request
        runtime.archive.client.delete_object(Bucket=runtime.archive.bucket, Key=stored.key)
        return _idempotent(runtime, scope, req.idempotency_key, created.record, print_)
    runtime.send_task(SUBMIT_TASK[0], SUBMIT_TASK[1], [record.id])
    return Accepted(record, True)


def _idempotent(runtime: Runtime, scope: str, key: str, record: FaxRecord, print_: str) -> Accepted:
    raw = runtime.store.redis.get(dedup_key(scope, key))
    stored_print = json.loads(raw)["fingerprint"] if raw else ""
    if stored_print and stored_print != print_:
        raise SendError(
            409, "idempotency_conflict", "this Idempotency-Key was used with a different request"
        )
    return Accepted(record, False)


def _from_number(account_name: str, runtime: Runtime) -> str:
    account = runtime.settings.account(account_name)
    return account.from_number or ""


# --- submitting ---------------------------------------------------------------------------


def route_account(record: FaxRecord) -> str:
    """The account the fax currently goes through (the fallback after a failover)."""
    return str(record.work.get("route_account") or record.account)


def _fail(runtime: Runtime, fax_id: str, reason: str, detail: str) -> None:
    record = save_step(runtime, fax_id, State.FAILED, reason=reason, detail=detail)
    if record is not None and record.state == State.FAILED:
        log.warning("fax %s failed: %s (%s)", fax_id, reason, detail)
        runtime.emit(record, "fax.failed")


def _needs_submit(record: FaxRecord) -> bool:
    return record.state in (State.QUEUED, State.UNKNOWN) or bool(record.work.get("resubmit"))


def submit_fax(runtime: Runtime, fax_id: str) -> None:
    with fax_context(fax_id), leased(runtime, fax_id) as mine:
        if mine:
            _submit(runtime, fax_id)


def _submit(runtime: Runtime, fax_id: str) -> None:
    record = runtime.store.find(fax_id)
    bind_fax(record)
    if record is None or record.direction != Direction.OUTBOUND or record.final:
        return
    if not _needs_submit(record) or record.scheduled_later(time.time()):
        return  # a duplicate wake-up: submitted already, or its retry is not due yet
    lost = record.state == State.UNKNOWN or record.work.get("submit_lost")
    if lost and not record.work.get("operator_resubmit"):
        return  # waits for an operator (faxes retry) to decide
    resubmit_at = float(record.work.get("resubmit_at", 0))
    if resubmit_at > time.time() + 1:
        save_step(runtime, fax_id, None, due_at=resubmit_at)
        return
    account_name = route_account(record)
    provider = runtime.provider(account_name)
    started = record.work.get("submit_started")
    if started and not record.work.get("operator_resubmit"):
        # A previous attempt sent its request and never recorded the answer.
        _resolve_lost_submit(runtime, record, float(started))
        return
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
        _resolve_lost_submit(runtime, record, float(record.work["submit_started"]), str(exc))
        return
    except BadDestinationError as exc:
        _fail(runtime, fax_id, "bad_destination", str(exc))
        return
    except ProviderError as exc:
        _submit_failed(runtime, fax_id, attempt, exc)
        return
    _submitted(runtime, fax_id, account_name, result.job_id, result.raw)


@contextlib.contextmanager
def _document(runtime: Runtime, record: FaxRecord) -> Any:
    with tempfile.TemporaryFile() as spool:
        runtime.archive.download_to(record.document_key, spool)
        size = spool.tell()
        spool.seek(0)
        url = runtime.archive.presigned_url(record.document_key, runtime.settings.presign_expiry)
        yield OutgoingDocument(filename=f"{record.id}.pdf", stream=spool, size=size, url=url)


def _submit_failed(runtime: Runtime, fax_id: str, attempt: int, exc: ProviderError) -> None:
    retryable = exc.kind in SUBMIT.retry_on or exc.kind == ErrorKind.AUTH
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
    _fail(runtime, fax_id, reason, str(exc))


def _submitted(
    runtime: Runtime, fax_id: str, account_name: str, job_id: str, raw: dict[str, Any]
) -> None:
    provider = runtime.provider(account_name)
    now = time.time()
    if job_id:
        scope, key = job_dedup(account_name, job_id)
        runtime.store.redis.set(dedup_key(scope, key), json.dumps({"id": fax_id}), ex=30 * 86400)
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
        return
    runtime.emit(record, "fax.submitted")
    if not tracked:
        return
    pending = runtime.store.redis.getdel(f"fr:pending-status:{account_name}:{job_id}")
    if pending is not None:
        body = pending.encode() if isinstance(pending, str) else pending
        event = provider.parse_status_webhook({}, body)
        runtime.store.update(
            fax_id,
            lambda r: status_update(
                r,
                event.status,
                now,
                "status webhook",
                provider.poll_first * runtime.settings.retry_scale,
            ),
        )
        _poll(runtime, fax_id)  # the caller holds the lease: poll_fax would skip it


def _resolve_lost_submit(
    runtime: Runtime, record: FaxRecord, started: float, detail: str = ""
) -> None:
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
            return
        if found is not None:
            _submitted(runtime, record.id, account_name, found.job_id, found.raw)
            return
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


# --- following the job ----------------------------------------------------------------------

STATE_FOR_JOB: dict[JobState, State] = {
    JobState.QUEUED: State.SUBMITTED,
    JobState.SENDING: State.SENDING,
    JobState.DELIVERED: State.DELIVERED,
    JobState.FAILED: State.FAILED,
    JobState.CANCELLED: State.CANCELLED,
    JobState.ACCEPTED: State.ACCEPTED,
    JobState.UNKNOWN: State.SUBMITTED,  # unknown words never end a fax
}


def _status_json(status: JobStatus, now: float, source: str) -> dict[str, Any]:
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
        record.work["pushed_status"] = _status_json(status, now, source)
        record.work.pop("not_before", None)
        record.due_at = now
        return True
    target = STATE_FOR_JOB[status.state]
    if can_move(record, target):
        transition(record, target, note=f"{source}: {status.raw_status}")
    record.work["last_status"] = _status_json(status, now, source)
    record.due_at = record.work["not_before"] = now + next_poll
    return False


def next_poll_after_webhook(provider_name: str, retry_scale: float) -> float:
    """How far a progress webhook pushes the next poll out: the provider's first poll delay."""
    return provider_class(provider_name).poll_first * retry_scale


def poll_fax(runtime: Runtime, fax_id: str) -> None:
    with fax_context(fax_id), leased(runtime, fax_id) as mine:
        if mine:
            _poll(runtime, fax_id)


def _poll(runtime: Runtime, fax_id: str) -> None:
    record = runtime.store.find(fax_id)
    bind_fax(record)
    if record is None or record.final or record.direction != Direction.OUTBOUND:
        return
    if _needs_submit(record):
        _submit(runtime, fax_id)
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
        done = save_step(
            runtime,
            fax_id,
            target,
            note=f"{pushed['source'] if pushed else 'poll'}: {status.raw_status}",
            work={"last_status": _status_json(status, now, "poll"), "polls": polls},
            drop_work=("pushed_status",),
        )
        if done is not None and done.state == target:
            event = {State.DELIVERED: "fax.delivered", State.CANCELLED: "fax.cancelled"}.get(target)
            if event:
                runtime.emit(done, event)
        return
    if now >= deadline:
        _fail(
            runtime,
            fax_id,
            "timeout",
            f"no final state within {runtime.settings.send_deadline:.0f} s; "
            f"last status {status.raw_status or status.detail!r}",
        )
        return
    target = STATE_FOR_JOB[status.state]
    delay = min(
        Backoff(first=provider.poll_first, cap=provider.poll_cap).delay(polls)
        * runtime.settings.retry_scale,
        max(1.0, deadline - now),
    )
    save_step(
        runtime,
        fax_id,
        target if can_move(record, target) else None,
        note=f"poll: {status.raw_status}" if status.raw_status else "",
        due_at=now + delay,
        work={
            "last_status": _status_json(status, now, "poll"),
            "polls": polls,
            "not_before": now + delay,
        },
    )


def _forget_job(runtime: Runtime, record: FaxRecord) -> None:
    """A failed job is about to be replaced (redial, failover): its late status webhooks must
    no longer reach the record, or they would fail the new job."""
    job_id = record.provider_ids.get("job_id", "")
    if job_id:
        runtime.store.redis.delete(dedup_key(*job_dedup(route_account(record), job_id)))


def _job_failed(runtime: Runtime, record: FaxRecord, status: JobStatus) -> None:
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
    _fail(runtime, record.id, reason, f"{route_account(record)}: {words}")


# --- cancelling -------------------------------------------------------------------------------


def cancel_fax(runtime: Runtime, fax_id: str) -> FaxRecord:
    """Cancel if still possible; SendError(409) says why not."""
    record = runtime.store.find(fax_id)
    if record is None:
        raise RecordNotFound(fax_id)
    if record.direction != Direction.OUTBOUND:
        raise SendError(409, "not_cancellable", "only outbound faxes can be cancelled")
    if record.final:
        raise SendError(409, "not_cancellable", f"the fax is already {record.state}")
    if record.state == State.QUEUED and not record.work.get("submit_started"):
        done = save_step(runtime, fax_id, State.CANCELLED, note="cancelled before submit")
        if done is not None and done.state == State.CANCELLED:
            runtime.emit(done, "fax.cancelled")
            return done
        return cancel_fax(runtime, fax_id)  # it moved meanwhile: decide again
    provider = runtime.provider(route_account(record))
    job_id = record.provider_ids.get("job_id", "")
    if not provider.capabilities.cancel or not job_id:
        raise SendError(
            409,
            "not_cancellable",
            f"{provider.name} cannot cancel a fax once it is submitted (state {record.state})",
        )
    try:
        provider.cancel(job_id)
    except ProviderError as exc:
        raise SendError(409, "not_cancellable", str(exc)) from exc
    done = save_step(runtime, fax_id, State.CANCELLED, note=f"cancelled at {provider.name}")
    if done is None:
        raise SendError(409, "not_cancellable", "the fax reached a final state meanwhile")
    runtime.emit(done, "fax.cancelled")
    return done


def retry_fax(runtime: Runtime, fax_id: str) -> FaxRecord:
    """Operator action: wake a stuck record now; an ``unknown`` send is submitted again."""

    def mutate(record: FaxRecord) -> None:
        if record.final:
            raise SendError(409, "final", f"the fax is already {record.state}")
        record.work.pop("not_before", None)  # the operator says now, whatever the backoff said
        if record.state == State.UNKNOWN or record.work.get("submit_lost"):
            record.work["operator_resubmit"] = True
            record.work.pop("submit_lost", None)
            record.work.pop("submit_started", None)
        record.history.append(
            {"state": str(record.state), "at": iso(utcnow()), "note": "retry by operator"}
        )
        record.due_at = time.time()

    record, _ = runtime.store.update(fax_id, mutate)
    runtime.wake(record)
    return record
