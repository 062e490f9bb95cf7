"""What every pipeline step does around its work: hold the record's lease, and save its outcome
(a forward move plus bookkeeping) in one compare-and-set write. Shared by inbound and outbound.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Iterator
from typing import Any

from worker.domain import (
    FaxRecord,
    IllegalTransition,
    NoChange,
    State,
    Work,
    WorkKey,
    can_move,
    iso,
    transition,
    utcnow,
)
from worker.runtime import Runtime
from worker.store import keys

log = logging.getLogger(__name__)


# A renewed lease is held at most this many lease lengths: a worker stuck for good (a parse
# that never ends) must not keep the record from the sweeper for ever.
MAX_HOLD = 12
# Extends the lease only while the token is still ours (it may have lapsed and been taken).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class _Final(Exception):
    """The record is already final: nothing more is written to it."""


@contextlib.contextmanager
def leased(runtime: Runtime, fax_id: str, *, renew: bool = False) -> Iterator[bool]:
    """Hold the record's lease while working on it; yields False if another worker has it.

    A worker that dies loses its lease, and the sweeper wakes the record again. ``renew``: extend
    the lease each time half of it has passed (up to ``MAX_HOLD`` lease lengths), so that a long
    download and upload is not started a second time by the sweeper; a killed worker's renewals
    stop with it."""
    token = uuid.uuid4().hex
    seconds = runtime.settings.lease_seconds
    if not runtime.store.acquire_lease(fax_id, token, seconds):
        yield False
        return
    done = threading.Event()
    if renew:
        threading.Thread(
            target=_keep_lease, args=(runtime, fax_id, token, done), daemon=True
        ).start()
    try:
        yield True
    finally:
        done.set()
        runtime.store.release_lease(fax_id, token)


def _keep_lease(runtime: Runtime, fax_id: str, token: str, done: threading.Event) -> None:
    seconds = runtime.settings.lease_seconds
    key = keys.lease_key(fax_id)
    for _ in range(2 * MAX_HOLD):
        if done.wait(seconds / 2):
            return
        try:
            if not runtime.store.redis.eval(_RENEW, 1, key, token, int(seconds * 1000)):
                return  # lost (Redis restarted, or it lapsed): the sweeper's rules apply again
        except Exception as exc:  # Redis unreachable: try again at the next half
            log.warning("fax %s: lease not renewed: %s", fax_id, exc)


def save_step(
    runtime: Runtime,
    fax_id: str,
    target: State | None,
    *,
    reason: str = "",
    detail: str = "",
    note: str = "",
    due_at: float | None = None,
    fields: dict[str, Any] | None = None,
    work: Work | None = None,
    drop_work: tuple[WorkKey, ...] = (),
    attempts: dict[str, int] | None = None,
    provider_ids: dict[str, str] | None = None,
    forward_only: bool = False,
    live_only: bool = False,
) -> FaxRecord | None:
    """Move the record to ``target`` (None: stay) and update its bookkeeping in one write.

    ``fields`` sets record attributes (archive, sha256, pages …); ``due_at`` is when it next needs
    work (ignored once final). Returns None when the move is illegal (the record moved on).
    ``forward_only``: where the record is already past ``target`` (a redial or failover resubmits
    a fax that is ``sending``), keep its state and save the rest instead of abandoning the write.
    ``live_only``: write nothing and return None when the record is already final (another
    worker finished it); so with a final ``target``, a returned record is one this write moved.
    """

    def mutate(record: FaxRecord) -> None:
        if live_only and record.final:
            raise _Final
        move = target
        if move is not None and forward_only and record.state != move:
            move = move if can_move(record, move) else None
        if move is not None:
            with contextlib.suppress(NoChange):
                transition(record, move, reason=reason, detail=detail, note=note)
        else:
            if reason:
                record.reason, record.reason_detail = reason, detail
            if note or reason:
                record.history.append(
                    {"state": str(record.state), "at": iso(utcnow()), "note": note or detail}
                )
        for name, value in (fields or {}).items():
            setattr(record, name, value)
        record.work.update(work or {})
        for key in drop_work:
            record.work.pop(key, None)
        record.attempts.update(attempts or {})
        record.provider_ids.update(provider_ids or {})
        record.due_at = None if record.final else due_at
        record.updated_at = iso(utcnow()) or record.updated_at

    try:
        record, _ = runtime.store.update(fax_id, mutate)
    except IllegalTransition as exc:
        log.info("%s", exc)
        return None
    except _Final:
        log.info("fax %s is already final; nothing saved", fax_id)
        return None
    return record
