"""What every pipeline step does around its work: hold the record's lease, and save its outcome
(a forward move plus bookkeeping) in one compare-and-set write. Shared by inbound and outbound.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator
from typing import Any

from .domain import FaxRecord, IllegalTransition, NoChange, State, can_move, iso, transition, utcnow
from .runtime import Runtime

log = logging.getLogger(__name__)


@contextlib.contextmanager
def leased(runtime: Runtime, fax_id: str) -> Iterator[bool]:
    """Hold the record's lease while working on it; yields False if another worker has it.

    A worker that dies loses its lease, and the sweeper wakes the record again."""
    token = uuid.uuid4().hex
    if not runtime.store.acquire_lease(fax_id, token, runtime.settings.lease_seconds):
        yield False
        return
    try:
        yield True
    finally:
        runtime.store.release_lease(fax_id, token)


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
    work: dict[str, Any] | None = None,
    drop_work: tuple[str, ...] = (),
    attempts: dict[str, int] | None = None,
    provider_ids: dict[str, str] | None = None,
    forward_only: bool = False,
) -> FaxRecord | None:
    """Move the record to ``target`` (None: stay) and update its bookkeeping in one write.

    ``fields`` sets record attributes (archive, sha256, pages …); ``due_at`` is when it next needs
    work (ignored once final). Returns None when the move is illegal (the record moved on).
    ``forward_only``: where the record is already past ``target`` (a redial or failover resubmits
    a fax that is ``sending``), keep its state and save the rest instead of abandoning the write.
    """

    def mutate(record: FaxRecord) -> None:
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
    return record
