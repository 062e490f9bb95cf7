"""What every pipeline step does around its work: hold the record's lease, and save its outcome
(a forward move plus bookkeeping) in one compare-and-set write. Shared by inbound and outbound.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
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
from worker.pipeline.events import outbox as events_outbox
from worker.runtime import EVENT_TASK, Runtime
from worker.store import keys
from worker.store.records import SideLog

log = logging.getLogger(__name__)


# A renewed lease is held at most this long: longer than any task's hard time limit
# (config/celery_app.py), which ends a stuck step first; this bounds a step run outside Celery.
MAX_HOLD_SECONDS = 900.0
# Extends the lease only while the token is still ours (it may have lapsed and been taken).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


class _Final(Exception):
    """The record is already final: nothing more is written to it."""


@contextlib.contextmanager
def leased(runtime: Runtime, fax_id: str) -> Iterator[bool]:
    """Hold the record's lease while working on it; yields False if another worker has it.

    The lease is short (``lease_seconds``, 15 s by default) and renewed every third of it while
    the step runs (up to ``MAX_HOLD_SECONDS``): a long download, upload or submit is never taken
    for a dead worker's (which would start it a second time, or resolve a submit still in flight
    as lost), while a worker that dies stops renewing, so the sweeper's next wake-up takes its
    fax within seconds."""
    token = uuid.uuid4().hex
    seconds = runtime.settings.lease_seconds
    if not runtime.store.acquire_lease(fax_id, token, seconds):
        yield False
        return
    done = threading.Event()
    threading.Thread(target=_keep_lease, args=(runtime, fax_id, token, done), daemon=True).start()
    try:
        yield True
    finally:
        done.set()
        runtime.store.release_lease(fax_id, token)


def _keep_lease(runtime: Runtime, fax_id: str, token: str, done: threading.Event) -> None:
    seconds = runtime.settings.lease_seconds
    key = keys.lease_key(fax_id)
    for _ in range(int(MAX_HOLD_SECONDS / (seconds / 3)) + 1):
        if done.wait(seconds / 3):
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
    events: tuple[str, ...] = (),
    owe: tuple[str, ...] = (),
    precondition: Callable[[FaxRecord], bool] | None = None,
    run_started: bool = False,
    provider_error: str = "",
) -> FaxRecord | None:
    """Move the record to ``target`` (None: stay) and update its bookkeeping in one write.

    ``fields`` sets record attributes (archive, sha256, pages …); ``due_at`` is when it next needs
    work (ignored once final). Returns None when the move is illegal (the record moved on).
    ``forward_only``: where the record is already past ``target`` (a redial or failover resubmits
    a fax that is ``sending``), keep its state and save the rest instead of abandoning the write.
    ``live_only``: write nothing and return None when the record is already final (another
    worker finished it); so with a final ``target``, a returned record is one this write moved.
    ``events``: emitted by the same script as the write (their deliveries are the save's
    outbox), and only when this write made the move to ``target`` (always, with no target);
    woken at once after it. ``owe``: clean-up the record owes once final (``cleanup.UNSTAGE``,
    ``cleanup.PROVIDER_DELETE``), kept in it, and due, until done. ``precondition``: write
    nothing (None) unless it holds for the current record (checked atomically with the write).
    ``run_started``: this write starts a step's run (counted in ``work["interrupted"]`` until
    any other write says how it ended). ``provider_error``: the account whose provider answered
    the step with an error (a download, a submit), counted by the same write for the overview.
    """
    moved = False
    delivery_ids: list[str] = []

    def mutate(record: FaxRecord) -> None:
        nonlocal moved
        moved = False
        if live_only and record.final:
            raise _Final
        if precondition is not None and not precondition(record):
            raise _Final
        move = target
        if move is not None and forward_only and record.state != move:
            move = move if can_move(record, move) else None
        if move is not None:
            try:
                transition(record, move, reason=reason, detail=detail, note=note)
                moved = True
            except NoChange:
                pass
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
        if run_started:
            record.work["interrupted"] = int(record.work.get("interrupted", 0)) + 1
        else:
            record.work.pop("interrupted", None)
        if owe:
            owed = list(record.work.get("owed", []))
            record.work["owed"] = owed + [kind for kind in owe if kind not in owed]
        record.attempts.update(attempts or {})
        record.provider_ids.update(provider_ids or {})
        record.due_at = due_at
        if record.final:
            # Final: no more steps; only owed clean-up keeps it due (the saver does it at once,
            # the sweeper if the saver died first).
            record.due_at = time.time() + runtime.settings.wake_grace if owes(record) else None
        record.updated_at = iso(utcnow()) or record.updated_at

    def outbox(record: FaxRecord) -> list[SideLog]:
        delivery_ids.clear()
        if not events or (target is not None and not moved):
            return []
        entries: list[SideLog] = []
        for event_type in events:
            ids, written = events_outbox(runtime.settings, record, event_type)
            delivery_ids.extend(ids)
            entries.extend(written)
        return entries

    try:
        record, _ = runtime.store.update(fax_id, mutate, outbox, provider_error=provider_error)
    except IllegalTransition as exc:
        log.info("%s", exc)
        return None
    except _Final:
        log.info("fax %s is already final or moved on; nothing saved", fax_id)
        return None
    wake_deliveries(runtime, delivery_ids)
    return record


def owes(record: FaxRecord) -> bool:
    """The record still owes clean-up (``work["owed"]``)."""
    return bool(record.work.get("owed"))


def wake_deliveries(runtime: Runtime, delivery_ids: list[str]) -> None:
    """Wake the deliveries a save wrote; one not woken (a publish that failed) is the sweeper's."""
    for delivery_id in delivery_ids:
        try:
            runtime.send_task(EVENT_TASK.task, EVENT_TASK.queue, [delivery_id])
        except Exception as exc:  # the broker is down: the delivery is recorded and due
            log.warning("event delivery %s not woken now (the sweeper will): %s", delivery_id, exc)
