"""Operator actions, shared by the HTTP API, the dashboard and the CLI.

- ``cancel_fax``  an outbound fax: before submit anywhere; after it, where the provider can.
- ``retry_fax``   any record that is not final, inbound or outbound: wake it now, past its backoff.
                  An outbound fax whose submit outcome is unknown is submitted again (the operator
                  has checked at the provider first).

Both answer ``SendError(409)`` when the record no longer allows the action.
"""

from __future__ import annotations

import time

from worker.domain import Direction, FaxRecord, State, iso, utcnow
from worker.pipeline.outbound.accept import SendError
from worker.pipeline.outbound.submit import route_account
from worker.pipeline.steps import save_step
from worker.providers.base import ProviderError
from worker.runtime import Runtime
from worker.store.records import RecordNotFound


def _retired(runtime: Runtime, fax_id: str) -> FaxRecord:
    """A fax no longer in Redis: its archived copy (``RecordNotFound`` when there is none).
    Only final records leave Redis, so an action on one is refused as on any final record."""
    return runtime.store.get(fax_id)


def cancel_fax(runtime: Runtime, fax_id: str) -> FaxRecord:
    """Cancel if still possible; SendError(409) says why not."""
    record = runtime.store.find(fax_id) or _retired(runtime, fax_id)
    if record.direction != Direction.OUTBOUND:
        raise SendError(409, "not_cancellable", "only outbound faxes can be cancelled")
    if record.final:
        raise SendError(409, "not_cancellable", f"the fax is already {record.state}")
    if record.state == State.QUEUED and not record.work.get("submit_started"):
        # Only while no submit has started: checked in the write itself, so a submit that
        # starts meanwhile either sees the fax cancelled (and stops) or makes this write fail.
        done = save_step(
            runtime,
            fax_id,
            State.CANCELLED,
            note="cancelled before submit",
            precondition=_not_started,
            events=("fax.cancelled",),
        )
        if done is not None and done.state == State.CANCELLED:
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
    done = save_step(
        runtime,
        fax_id,
        State.CANCELLED,
        note=f"cancelled at {provider.name}",
        events=("fax.cancelled",),
    )
    if done is None:
        raise SendError(409, "not_cancellable", "the fax reached a final state meanwhile")
    return done


def _not_started(record: FaxRecord) -> bool:
    return record.state == State.QUEUED and not record.work.get("submit_started")


def retry_fax(runtime: Runtime, fax_id: str) -> FaxRecord:
    """Wake a record that is not final now, whatever its backoff said; SendError(409) if final.

    For an outbound fax whose submit outcome is unknown this is the operator's go-ahead to
    submit it again. RecordNotFound when there is no such record.
    """

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

    try:
        record, _ = runtime.store.update(fax_id, mutate)
    except RecordNotFound:
        mutate(_retired(runtime, fax_id))  # final: refused as such (or not found at all)
        raise
    runtime.wake(record)
    return record
