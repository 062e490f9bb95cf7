"""The fax record and the rules for moving it forward.

A record is plain JSON in Redis (see ``worker/store/records.py``); ``FaxRecord`` is its typed form,
and ``Work`` the typed form of its internal step data. States only move
forward: ``TRANSITIONS`` lists every legal move, and ``transition`` refuses anything else with
``IllegalTransition``. Repeating the current state is a harmless no-op (``NoChange``), so a duplicated
or out-of-order event can never move a record backwards.
"""

from __future__ import annotations

import enum
import functools
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, TypedDict

from worker.fastpath import ids


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class State(enum.StrEnum):
    # inbound
    RECEIVED = "received"
    FETCHING = "fetching"
    ARCHIVED = "archived"
    # outbound
    QUEUED = "queued"
    SUBMITTED = "submitted"
    SENDING = "sending"
    DELIVERED = "delivered"
    CANCELLED = "cancelled"
    ACCEPTED = "accepted"
    UNKNOWN = "unknown"
    # both
    FAILED = "failed"


FINAL_STATES = frozenset(
    {State.ARCHIVED, State.DELIVERED, State.FAILED, State.CANCELLED, State.ACCEPTED}
)

# Legal moves. ``unknown`` is not final: an operator (or a later lookup) may still settle it.
TRANSITIONS: dict[Direction, dict[State, frozenset[State]]] = {
    Direction.INBOUND: {
        State.RECEIVED: frozenset({State.FETCHING, State.ARCHIVED, State.FAILED}),
        State.FETCHING: frozenset({State.ARCHIVED, State.FAILED}),
    },
    Direction.OUTBOUND: {
        State.QUEUED: frozenset(
            {
                State.SUBMITTED,
                State.SENDING,
                State.DELIVERED,
                State.FAILED,
                State.CANCELLED,
                State.ACCEPTED,
                State.UNKNOWN,
            }
        ),
        # A redial or failover resubmits from submitted/sending: the new job may end accepted
        # (a VoipNow fallback) or its submit may be lost (unknown).
        State.SUBMITTED: frozenset(
            {
                State.SENDING,
                State.DELIVERED,
                State.FAILED,
                State.CANCELLED,
                State.ACCEPTED,
                State.UNKNOWN,
            }
        ),
        State.SENDING: frozenset(
            {State.DELIVERED, State.FAILED, State.CANCELLED, State.ACCEPTED, State.UNKNOWN}
        ),
        State.UNKNOWN: frozenset(
            {
                State.SUBMITTED,
                State.SENDING,
                State.DELIVERED,
                State.FAILED,
                State.CANCELLED,
                State.ACCEPTED,
            }
        ),
    },
}

INITIAL_STATE = {Direction.INBOUND: State.RECEIVED, Direction.OUTBOUND: State.QUEUED}


class IllegalTransition(Exception):
    """A move the state machine does not allow (e.g. delivered → sending)."""

    def __init__(self, fax_id: str, current: State, target: State) -> None:
        self.fax_id, self.current, self.target = fax_id, current, target
        super().__init__(f"fax {fax_id}: cannot move from {current} to {target}")


class NoChange(Exception):
    """The record is already in the target state."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime | None) -> str | None:
    """``moment`` in UTC as ISO 8601 with microseconds and a ``Z`` (``2026-11-23T07:30:12.000123Z``)."""
    if moment is None:
        return None
    return iso_at(moment.timestamp())


def iso_at(epoch: float) -> str:
    """``epoch`` seconds as ``iso()`` writes them.

    The date and time of day come from a small cache of whole seconds: formatting them (C's
    printf, in datetime's isoformat and in strftime) costs more than the rest of making a record.
    """
    seconds = math.floor(epoch)
    micros = round((epoch - seconds) * 1e6)
    if micros == 1_000_000:  # rounded up into the next second
        seconds, micros = seconds + 1, 0
    return f"{_second_text(seconds)}.{micros:06d}Z"


@functools.lru_cache(maxsize=64)
def _second_text(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def new_fax_id(now: float | None = None) -> str:
    """Sortable by creation time, unguessable: 'fx_' + 11 hex digits of epoch milliseconds (fixed
    width until the year 2527) + 12 random hex digits (6 bytes from the OS)."""
    ms = int((now if now is not None else time.time()) * 1000)
    return f"fx_{ms:011x}{ids.random_hex(6)}"


class SeenStatus(TypedDict):
    """A provider job status as a record keeps it (``JobStatus`` in JSON, with when and whence)."""

    state: str  # a JobState value
    raw: str  # the provider's own word(s)
    detail: str  # the provider's explanation, if any
    cause: str  # a FailureCause value; "" when the provider gave none
    provider_retried: bool  # the provider redialled itself already (so faxrelay does not)
    at: float  # epoch seconds it was seen
    source: str  # "poll" or "status webhook"


class Work(TypedDict, total=False):
    """``FaxRecord.work``: what the pipeline steps keep between wake-ups (the inbound download and
    the outbound sub-state machine around submit, redial and failover). Internal: never in the
    public record. Times are epoch seconds unless named ISO."""

    # both directions
    not_before: float  # the step's own schedule: a wake-up earlier than this is a duplicate
    # inbound
    received_at: str  # ISO time the provider received the fax (the archive's date and sidecar)
    download_url: str  # where the provider's copy of the PDF is fetched
    staged_key: str  # S3 key of the PDF that came inside the webhook, until archived
    announced: bool  # fax.received was emitted (it is, once, before anything else)
    at_risk_sent: bool  # fax.archive_at_risk was emitted (once)
    last_error: str  # the last download failure, for operators (dashboard, CLI)
    storage_down: bool  # the last attempt met faxrelay's S3 down: the next asks S3 first
    owed: list[str]  # clean-up owed once final (``pipeline.cleanup``): due until done
    owed_attempts: int  # failed attempts at the owed clean-up (bounded by ``retry.CLEAN_UP``)
    interrupted: int  # step runs in a row that ended without a verdict (killed, time limit)
    # outbound
    reference: str  # something unique to the send that the provider lists (voip.ms: station id)
    route_account: str  # the account the fax goes through now (the fallback after a failover)
    submit_started: float  # a submit request may have left and its answer is not recorded yet
    submit_lost: bool  # the submit's outcome is unknown: it waits for an operator
    operator_resubmit: bool  # an operator said to submit again despite a lost submit
    resubmit: bool  # submit again (a redial or failover) although the record is past queued
    resubmit_at: float  # when that resubmit is due (a redial waits ``redial_delay``)
    failed_over: bool  # it failed over once: a second provider failure fails the fax
    submitted_at: float  # when the provider took the job (status lookups search from there)
    submit_raw: dict[str, Any]  # the provider's answer to the submit
    polls: int  # status polls since the submit: their backoff grows with it
    queued_seen_at: float  # the latest poll that saw the job queued (outbound/schedule.py)
    sending_seen_at: float  # the first poll that saw its current attempt sending
    last_status: SeenStatus  # the latest job status seen (poll or webhook)
    pushed_status: SeenStatus  # a final status a webhook pushed, for the worker to act on
    last_failure: str  # the provider's words for the failure that led to a redial or failover


# The keys of ``Work``, for a step that names the ones it drops (``steps.save_step``).
WorkKey = Literal[
    "not_before",
    "received_at",
    "download_url",
    "staged_key",
    "announced",
    "at_risk_sent",
    "last_error",
    "storage_down",
    "owed",
    "owed_attempts",
    "interrupted",
    "reference",
    "route_account",
    "submit_started",
    "submit_lost",
    "operator_resubmit",
    "resubmit",
    "resubmit_at",
    "failed_over",
    "submitted_at",
    "submit_raw",
    "polls",
    "last_status",
    "pushed_status",
    "last_failure",
    "queued_seen_at",
    "sending_seen_at",
]


@dataclass
class FaxRecord:
    id: str
    direction: Direction
    account: str
    provider: str
    state: State
    created_at: str
    updated_at: str
    reason: str = ""
    reason_detail: str = ""
    from_number: str = ""
    to_number: str = ""
    pages: int | None = None
    sha256: str = ""
    provider_ids: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    archive: dict[str, str] = field(default_factory=dict)
    document_key: str = ""
    expires_at: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)  # per step: download, submit, poll …
    callback_url: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""  # the send's Idempotency-Key (a queue-driven send's: its task id)
    # Internal bookkeeping (not part of the public record): when the record next needs work
    # (the store keeps its due index from this), the steps' own data, the write counter.
    due_at: float | None = None
    work: Work = field(default_factory=Work)
    version: int = 0

    @classmethod
    def new(
        cls,
        direction: Direction,
        account: str,
        provider: str,
        *,
        fax_id: str | None = None,
        note: str = "",
        **fields: Any,
    ) -> FaxRecord:
        now = iso_at(time.time())
        state = INITIAL_STATE[direction]
        return cls(
            id=fax_id or new_fax_id(),
            direction=direction,
            account=account,
            provider=provider,
            state=state,
            created_at=now,
            updated_at=now,
            history=[{"state": str(state), "at": now, "note": note}],
            **fields,
        )

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    def scheduled_later(self, now: float, slack: float = 0.5) -> bool:
        """Its next step is scheduled after ``now`` (``work["not_before"]``): a wake-up that
        arrives earlier is a duplicate (e.g. the sweeper's, while the first one was queued)."""
        return float(self.work.get("not_before", 0)) > now + slack

    def to_json(self) -> dict[str, Any]:
        # A shallow copy (asdict() deep-copies every nested value, on every write of a record);
        # callers serialise it at once and do not mutate it.
        data = dict(self.__dict__)
        data["direction"] = str(self.direction)
        data["state"] = str(self.state)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FaxRecord:
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in data.items() if k in known}
        values["direction"] = Direction(values["direction"])
        values["state"] = State(values["state"])
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """The record as the API, events and sidecars show it (DESIGN.md "Records")."""
        data = self.to_json()
        data["from"] = data.pop("from_number")
        data["to"] = data.pop("to_number")
        for internal in ("due_at", "work", "version"):
            data.pop(internal)
        return data


def transition(
    record: FaxRecord, target: State, *, reason: str = "", detail: str = "", note: str = ""
) -> FaxRecord:
    """Move ``record`` to ``target`` in place; raise IllegalTransition or NoChange."""
    if record.state == target:
        raise NoChange(target)
    allowed = TRANSITIONS[record.direction].get(record.state, frozenset())
    if target not in allowed:
        raise IllegalTransition(record.id, record.state, target)
    now = iso(utcnow()) or ""
    record.state = target
    record.updated_at = now
    if reason or target == State.FAILED:
        record.reason, record.reason_detail = reason, detail
    record.history.append({"state": str(target), "at": now, "note": note or detail})
    return record


def can_move(record: FaxRecord, target: State) -> bool:
    return target in TRANSITIONS[record.direction].get(record.state, frozenset())
