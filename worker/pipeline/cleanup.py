"""The clean-up a final inbound record owes, and doing it until it is done.

Written by the same save as the record's final move (``work["owed"]``, DESIGN.md principle 8), so a
worker killed right after archiving still owes it: the record stays in the due index, the sweeper
wakes it, and the archive step (``inbound.archive_fax``) does what is owed. Kinds:

- ``UNSTAGE``          the staged copy of a PDF that came inside the webhook (voip.ms), once it is
                       archived, quarantined, or never needed.
- ``PROVIDER_DELETE``  the provider's copy, where the account sets ``delete_after_archive``.

A failure keeps it owed, due after ``retry.CLEAN_UP``'s backoff, until its attempts run out; then
it is given up with a note in the history (an orphaned copy, never a lost fax).
"""

from __future__ import annotations

import contextlib
import logging
import time

from worker.domain import FaxRecord, iso, utcnow
from worker.providers.base import CONTENT_ID_PREFIX, NotFoundError
from worker.retry import CLEAN_UP
from worker.runtime import Runtime

log = logging.getLogger(__name__)

UNSTAGE = "unstage"
PROVIDER_DELETE = "provider_delete"


def owed_once_archived(runtime: Runtime, record: FaxRecord) -> tuple[str, ...]:
    """What ``record`` owes once its PDF is in the archive (or another record's is)."""
    owed = [UNSTAGE] if record.work.get("staged_key") else []
    account = runtime.settings.account(record.account)
    by_content = record.provider_ids.get("fax_id", "").startswith(CONTENT_ID_PREFIX)
    deletes = runtime.provider(record.account).capabilities.delete_inbound
    if account.delete_after_archive and not by_content and deletes:
        owed.append(PROVIDER_DELETE)
    return tuple(owed)


def clean_up(runtime: Runtime, record: FaxRecord) -> None:
    """Do the clean-up the final ``record`` owes; what was done leaves ``work["owed"]`` in one
    write, what failed stays owed and due."""
    done: list[str] = []
    failure = ""
    for kind in record.work.get("owed", []):
        try:
            _clean(runtime, record, kind)
        except Exception as exc:  # S3 or the provider down: the sweeper brings it back
            failure = f"{kind}: {type(exc).__name__}: {exc}"
            log.warning("fax %s: clean-up %s failed, will retry: %s", record.id, kind, exc)
            continue
        done.append(kind)
    if not done and not failure:
        return

    def mark(r: FaxRecord) -> None:
        owed = [kind for kind in r.work.get("owed", []) if kind not in done]
        r.due_at = None
        if owed:
            attempts = int(r.work.get("owed_attempts", 0)) + 1
            if CLEAN_UP.max_attempts is not None and attempts >= CLEAN_UP.max_attempts:
                note = f"clean-up given up after {attempts} attempts ({failure})"
                r.history.append({"state": str(r.state), "at": iso(utcnow()), "note": note})
                owed = []
            else:
                r.work["owed_attempts"] = attempts
                delay = CLEAN_UP.backoff.delay(attempts) * runtime.settings.retry_scale
                r.due_at = time.time() + delay
        if owed:
            r.work["owed"] = owed
        else:
            r.work.pop("owed", None)
            r.work.pop("owed_attempts", None)

    runtime.store.update(record.id, mark)


def _clean(runtime: Runtime, record: FaxRecord, kind: str) -> None:
    if kind == UNSTAGE:
        staged = str(record.work.get("staged_key", ""))
        if staged:
            runtime.archive.client.delete_object(Bucket=runtime.archive.bucket, Key=staged)
    elif kind == PROVIDER_DELETE:
        from worker.pipeline.inbound import inbound_fax_of  # inbound imports this module

        # A copy gone already (an earlier attempt whose answer was lost) is done too.
        with contextlib.suppress(NotFoundError):
            runtime.provider(record.account).delete_inbound(inbound_fax_of(record))
    else:
        log.warning("fax %s: unknown clean-up %r dropped", record.id, kind)
