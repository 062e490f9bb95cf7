"""The inbound pipeline: every received fax fetched, checked and archived before the provider deletes it.

Steps (each a plain function; ``tasks.py`` wraps them):

- ``handle_inbound``  after a webhook: archive (the same step as the sweeper's wake-ups).
- ``archive_fax``     announce ``fax.received`` once, download under the URL rules to a temporary
                      file, check it is a PDF, archive it with its sidecar, mark the record
                      ``archived``. Transient and unforeseen failures retry with backoff until the
                      provider's copy expires (``retry.ARCHIVE``); a 404 retries a few times
                      (``retry.ARCHIVE_NOT_FOUND``); a refused URL or a non-PDF fails at once.
                      A PDF already archived under another record of the account, when one of the
                      two is known only by its content (voip.ms's callback without an id), ends
                      as ``duplicate`` of that record.
- ``reconcile``       list what the provider holds and record anything no webhook announced.

A received fax is recorded the same way wherever it is learnt of: ``new_inbound`` makes its record
and dedup key (pure, no I/O: the web intake's hot path stores them through the async store, in one
script with its wake-up message and log entry); ``create_inbound`` stores them through the blocking
store (reconcile, the CLI's backfill).

Only one worker works on a record at a time (a lease in Redis); a worker that dies loses its lease
and the sweeper wakes the record again, so a killed worker costs a retry, never a fax.
"""

from __future__ import annotations

import logging
import tempfile
import time
from datetime import timedelta
from typing import IO, Any

from celery.exceptions import SoftTimeLimitExceeded

from config import tracing
from worker import metrics
from worker.domain import (
    Direction,
    FaxRecord,
    State,
    Work,
    iso,
    iso_at,
    parse_iso,
    utcnow,
)
from worker.io.archive import sha256_of
from worker.io.fetch import URLRefused
from worker.io.pdfcheck import check_pdf
from worker.logctx import bind_fax, fax_context
from worker.outage import storage_down
from worker.pipeline import cleanup
from worker.pipeline.retention import dedup_expiry
from worker.pipeline.steps import leased, save_step
from worker.providers import provider_class
from worker.providers.base import (
    CONTENT_ID_PREFIX,
    InboundFax,
    NotFoundError,
    ProviderError,
    is_content_id_of,
)
from worker.retry import ARCHIVE, ARCHIVE_NOT_FOUND, ARCHIVE_STORAGE, INTERRUPTED, RetryRule
from worker.runtime import INBOUND_TASK, Runtime
from worker.store import keys
from worker.store.records import Created, dedup_key, dedup_ref

log = logging.getLogger(__name__)

STORAGE = "storage"  # the attempt counter of ARCHIVE_STORAGE (faxrelay's S3 was down)


def inbound_dedup(account: str, provider_fax_id: str) -> tuple[str, str]:
    """The dedup scope and key of a received fax: one record per account and provider fax id."""
    return keys.inbound_scope(account), provider_fax_id


def new_inbound(runtime: Runtime, account_name: str, fax: InboundFax) -> tuple[FaxRecord, str]:
    """The ``received`` record of a fax the provider announced or listed, and the dedup key to
    store it under (a repeat finds the first record instead). No I/O: the web intake's hot path
    calls it once per webhook (hence a plain tuple)."""
    account = runtime.settings.account(account_name)
    retention = provider_class(account.provider).inbound_retention_days
    now = time.time()
    received = fax.received_at.timestamp() if fax.received_at is not None else now
    record = FaxRecord.new(
        Direction.INBOUND,
        account_name,
        account.provider,
        from_number=fax.from_number,
        to_number=fax.to_number,
        pages=fax.pages,
        provider_ids={"fax_id": fax.provider_fax_id},
        raw=fax.raw,
    )
    record.work["received_at"] = iso_at(received)  # the archive's date and sidecar say so
    if fax.download_url:
        record.work["download_url"] = fax.download_url
    if retention is not None:
        record.expires_at = iso_at(received + retention * 86400.0)
    record.due_at = now + runtime.settings.wake_grace
    scope, key = inbound_dedup(account_name, fax.provider_fax_id)
    return record, dedup_key(scope, key)


def create_inbound(runtime: Runtime, account_name: str, fax: InboundFax) -> Created:
    """Record a fax the provider holds unless it is known already (then: the known record).

    Publishes no wake-up: a caller that created the record wakes it (or archives it itself).
    """
    record, dedup = new_inbound(runtime, account_name, fax)
    return runtime.store.create(record, dedup=dedup)


def inbound_fax_of(record: FaxRecord) -> InboundFax:
    return InboundFax(
        provider_fax_id=record.provider_ids.get("fax_id", ""),
        from_number=record.from_number,
        to_number=record.to_number,
        pages=record.pages,
        received_at=parse_iso(record.work.get("received_at") or record.created_at),
        download_url=str(record.work.get("download_url", "")),
        raw=record.raw,
    )


def handle_inbound(runtime: Runtime, fax_id: str) -> None:
    archive_fax(runtime, fax_id)


def _announce(runtime: Runtime, record: FaxRecord) -> None:
    """``fax.received`` once per record, before anything else happens to it (under the lease);
    the mark and the event are one write."""
    if record.work.get("announced"):
        return
    save_step(
        runtime,
        record.id,
        None,
        due_at=record.due_at,
        work={"announced": True},
        events=("fax.received",),
        precondition=lambda r: not r.work.get("announced"),
        live_only=True,
    )


# Failures after which a staged PDF (one that came inside the webhook) is no longer needed: it is
# not a PDF (its bytes are quarantined), or the fax never depended on it. Other failures (expired,
# time_limit) keep it: it may be all there is of the fax.
UNSTAGE_ON = frozenset({"not_pdf", "download_refused", "provider_error", "not_found"})


def _fail(
    runtime: Runtime,
    fax_id: str,
    reason: str,
    detail: str,
    *,
    provider_error: str = "",
    **changes: Any,
) -> None:
    record = save_step(
        runtime,
        fax_id,
        State.FAILED,
        reason=reason,
        detail=detail,
        fields=changes,
        provider_error=provider_error,
        live_only=True,
        events=("fax.failed",),
        owe=(cleanup.UNSTAGE,) if reason in UNSTAGE_ON else (),
    )
    if record is not None:
        log.warning("fax %s failed: %s (%s)", fax_id, reason, detail)
        cleanup.clean_up(runtime, record)


def _retry(
    runtime: Runtime,
    record: FaxRecord,
    rule: RetryRule,
    kind: str,
    detail: str,
    *,
    provider_error: bool = False,
) -> None:
    """Schedule another attempt ``rule.backoff`` from now (before the provider's copy expires),
    or fail when the copy has expired or the rule's attempts at ``kind`` have run out.

    ``kind`` names the attempt counter (an ErrorKind value, ``not_found``, ``unexpected`` or
    ``STORAGE``).
    ``provider_error``: the provider answered the download with an error (the hourly counts).
    """
    erred = record.account if provider_error else ""
    attempts_of_kind = record.attempts.get(kind, 0) + 1
    # The download attempts set the provider's backoff; a rule counted apart backs off by its own.
    counter = kind if rule.counted_apart else "download"
    attempts = record.attempts.get(counter, 0) + 1
    now = time.time()
    expires = parse_iso(record.expires_at)
    if expires is not None and now >= expires.timestamp():
        _fail(
            runtime,
            record.id,
            "expired",
            f"the provider's copy expired; last error: {detail}",
            provider_error=erred,
        )
        return
    if rule.max_attempts is not None and attempts_of_kind >= rule.max_attempts:
        _fail(runtime, record.id, rule.on_exhausted, detail, provider_error=erred)
        return
    delay = rule.backoff.delay(attempts) * runtime.settings.retry_scale
    due = now + delay
    if expires is not None:
        due = min(due, max(now, expires.timestamp() - 60))  # one last try before it goes
    at_risk = (
        expires is not None
        and expires.timestamp() - now < runtime.settings.archive_risk_margin
        and not record.work.get("at_risk_sent")
    )

    # earlier wake-ups: ignored; after S3 was down the next attempt asks it before downloading
    work: Work = {"last_error": detail, "not_before": due, "storage_down": kind == STORAGE}
    if at_risk:
        work["at_risk_sent"] = True
    updated = save_step(
        runtime,
        record.id,
        None,
        note=f"retry: {detail}",
        due_at=due,
        work=work,
        attempts={counter: attempts, kind: attempts_of_kind},
        live_only=True,  # another worker archived it meanwhile: nothing to retry
        events=("fax.archive_at_risk",) if at_risk else (),
        provider_error=erred,
    )
    if updated is None:
        return
    metrics.retry("download", kind)
    log.info(
        "fax %s: %s attempt %d failed (%s); next in %.0f s",
        record.id,
        counter,
        attempts,
        detail,
        delay,
    )


def _download(runtime: Runtime, record: FaxRecord, sink: IO[bytes]) -> int:
    staged = str(record.work.get("staged_key", ""))
    if staged:  # the webhook carried the PDF; it waits in S3 staging
        runtime.archive.download_to(staged, sink)
        return sink.tell()
    provider = runtime.provider(record.account)
    with tracing.span("provider download", {"faxrelay.fax_id": record.id}):
        return provider.download(inbound_fax_of(record), sink, runtime.settings.download_max_bytes)


def archive_fax(runtime: Runtime, fax_id: str) -> None:
    with (
        tracing.span("archive", {"faxrelay.fax_id": fax_id}),
        fax_context(fax_id),
        leased(runtime, fax_id) as mine,
    ):
        if mine:
            _archive(runtime, fax_id)


def _archive(runtime: Runtime, fax_id: str) -> None:
    record = runtime.store.find(fax_id)
    bind_fax(record)
    if record is None or record.direction != Direction.INBOUND:
        return
    if record.final:
        cleanup.clean_up(runtime, record)  # what it still owes (the sweeper woke it for that)
        return
    if record.scheduled_later(time.time()):
        return  # a duplicate wake-up (e.g. the sweeper while this one was queued)
    runs = int(record.work.get("interrupted", 0))
    if INTERRUPTED.max_attempts is not None and runs >= INTERRUPTED.max_attempts:
        _fail(
            runtime,
            fax_id,
            INTERRUPTED.on_exhausted,
            f"the archive step ended without a result {runs} times in a row (its worker was "
            "killed, or it ran over its time limit)",
        )
        return
    _announce(runtime, record)
    lease_due = time.time() + runtime.settings.lease_seconds
    fetching = save_step(
        runtime,
        fax_id,
        State.FETCHING,
        note="downloading",
        due_at=lease_due,
        live_only=True,
        run_started=True,
    )
    if fetching is None:
        return  # another worker finished it meanwhile
    try:
        _fetch_and_archive(runtime, fetching)
    except SoftTimeLimitExceeded:  # a download or parse that would not end: bounded retries
        log.warning("fax %s: the archive step ran over its time limit", fax_id)
        _retry(
            runtime, fetching, INTERRUPTED, "time_limit", "the archive step ran over its time limit"
        )
    except Exception as exc:  # S3 down, or unforeseen (a bug): retried until the copy expires
        detail = f"{type(exc).__name__}: {exc}"
        if storage_down(exc) == "S3":
            log.warning("fax %s: S3 is unavailable: %s", fax_id, detail)
            _retry(runtime, fetching, ARCHIVE_STORAGE, STORAGE, f"S3 is unavailable: {detail}")
            return
        log.exception("fax %s: archiving failed", fax_id)
        _retry(runtime, fetching, ARCHIVE, "unexpected", detail)


def _fetch_and_archive(runtime: Runtime, record: FaxRecord) -> None:
    fax_id = record.id
    if record.work.get("storage_down"):
        runtime.archive.ping()  # still down: raises, and this attempt downloads nothing
    with tempfile.NamedTemporaryFile(prefix="faxrelay-") as spool:
        try:
            _download(runtime, record, spool)
        except URLRefused as exc:
            _fail(runtime, fax_id, "download_refused", exc.reason)
            return
        except ProviderError as exc:
            if isinstance(exc, NotFoundError) or exc.http_status == 404:
                _retry(
                    runtime, record, ARCHIVE_NOT_FOUND, "not_found", str(exc), provider_error=True
                )
            elif exc.kind in ARCHIVE.retry_on:
                _retry(runtime, record, ARCHIVE, str(exc.kind), str(exc), provider_error=True)
            else:
                _fail(runtime, fax_id, "provider_error", str(exc), provider_error=record.account)
            return
        checked = check_pdf(spool)
        if not checked.ok:
            stored = runtime.archive.quarantine(record, spool, "application/octet-stream")
            _fail(
                runtime,
                fax_id,
                "not_pdf",
                checked.problem,
                archive={"bucket": stored.bucket, "key": stored.key},
                sha256=stored.sha256,
            )
            return
        digest, size = sha256_of(spool)
        owner = _content_owner(runtime, record, digest)
        if owner is not None and owner.state != State.ARCHIVED:
            # The other record has the same fax and has not archived it yet: which of the two
            # archives it is decided once it has (it may yet fail: then this one takes it).
            _retry(
                runtime, record, ARCHIVE, "content_owner", f"{owner.id} holds the same PDF for now"
            )
            return
        if owner is not None:
            _end_duplicate(runtime, record, owner, digest)
            return
        note = "archived"
        if record.pages is not None and checked.pages != record.pages:
            note = f"archived; provider said {record.pages} pages, the PDF has {checked.pages}"
        stored = runtime.archive.archive_inbound(
            record, spool, digest, size=size, pages=checked.pages
        )
    archived = save_step(
        runtime,
        fax_id,
        State.ARCHIVED,
        note=note,
        fields={
            "archive": {"bucket": stored.bucket, "key": stored.key},
            "sha256": stored.sha256,
            "pages": checked.pages,
        },
        live_only=True,
        events=("fax.archived",),
        owe=cleanup.owed_once_archived(runtime, record),
    )
    if archived is None:
        return  # another worker (whose lease had lapsed) archived it first: its event stands
    cleanup.clean_up(runtime, archived)


def _content_owner(runtime: Runtime, record: FaxRecord, digest: str) -> FaxRecord | None:
    """Claim the PDF's content for this record; the record that holds the same fax already.

    The same bytes under two real provider ids are two faxes, both archived. The same fax
    comes twice when one of the two records knows it only by its content: voip.ms's callback
    with the PDF but no id (its id: ``sha256-…``), and its listing under voip.ms's own id."""
    scope, key = inbound_dedup(record.account, f"{CONTENT_ID_PREFIX}{digest}")
    claim = dedup_ref(record.id)
    until = _content_claim_expiry(runtime, record)
    if runtime.store.redis.set(dedup_key(scope, key), claim, nx=True, exat=until):
        return None
    owner = runtime.store.lookup(scope, key)
    if owner is None or owner.id == record.id or owner.state == State.FAILED:
        # nothing archived it: ours now
        runtime.store.redis.set(dedup_key(scope, key), claim, exat=until)
        return None
    return owner if _by_content(owner, digest) or _by_content(record, digest) else None


def _content_claim_expiry(runtime: Runtime, record: FaxRecord) -> int | None:
    """When the content claim goes should the record never archive (retention then finds no
    sha256 on it to expire the claim by): as its dedup keys would, had it become final when the
    provider's copy expires, the latest it can (it fails then). Archived, its retention sets the
    claim's expiry again. None when the copy has no known expiry: the claim stays with the
    record, which keeps trying."""
    expires = parse_iso(record.expires_at)
    if expires is None:
        return None
    return int(dedup_expiry(runtime.settings, record, expires.timestamp()))


def _by_content(record: FaxRecord, digest: str) -> bool:
    return is_content_id_of(record.provider_ids.get("fax_id", ""), digest)


def _end_duplicate(runtime: Runtime, record: FaxRecord, owner: FaxRecord, digest: str) -> None:
    """No second upload and no events: the fax's own are the other record's (archived: its
    copies here are no longer needed)."""
    ended = save_step(
        runtime,
        record.id,
        State.FAILED,
        reason="duplicate",
        detail=f"the same fax as {owner.id} (the same PDF, sha256 {digest})",
        fields={"sha256": digest},
        live_only=True,
        owe=cleanup.owed_once_archived(runtime, record),
    )
    if ended is not None:
        log.info("fax %s is a duplicate of %s", record.id, owner.id)
        cleanup.clean_up(runtime, ended)


def reconcile_is_due(runtime: Runtime, account_name: str) -> bool:
    account = runtime.settings.account(account_name)
    last = runtime.store.redis.get(keys.reconciled_key(account_name))
    last_at = parse_iso(_text(last)) if last else None
    return last_at is None or (utcnow() - last_at).total_seconds() >= account.reconcile_interval


def reconcile(runtime: Runtime, account_name: str) -> list[str]:
    """Record every fax the provider lists that faxrelay does not know yet; returns the new ids.

    Nothing received before the horizon (the look-back plus ``keys.RECONCILE_OVERLAP_DAYS``) is
    recorded, whatever the provider lists (voip.ms answers whole days, from a day earlier): the
    dedup key of a received fax lives that long after its receipt (``retention.dedup_window_days``),
    so a fax archived long ago and listed again is never recorded a second time. A fax listed
    without a receipt time is recorded (losing it would be worse)."""
    account = runtime.settings.account(account_name)
    provider = runtime.provider(account_name)
    if not provider.capabilities.list_inbound:
        return []
    marker = keys.reconciled_key(account_name)
    last = runtime.store.redis.get(marker)
    started = utcnow()
    lookback = timedelta(days=runtime.settings.reconcile_lookback_days)
    overlap = timedelta(days=keys.RECONCILE_OVERLAP_DAYS)
    horizon = started - lookback - overlap
    since = started - lookback
    if last is not None:
        since = max(since, parse_iso(_text(last)) or since) - overlap
    new_ids = []
    for fax in provider.list_inbound(since):
        if not fax.provider_fax_id:
            continue
        if fax.received_at is not None and fax.received_at < horizon:
            continue
        created = create_inbound(runtime, account.name, fax)
        if created.created:
            new_ids.append(created.record.id)
            runtime.send_task(INBOUND_TASK[0], INBOUND_TASK[1], [created.record.id])
    runtime.store.redis.set(marker, iso(started) or "")
    if new_ids:
        log.info("reconcile %s: %d faxes no webhook announced", account_name, len(new_ids))
    return new_ids


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
