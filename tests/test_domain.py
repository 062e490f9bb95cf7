"""The fax record's state machine: states only move forward, and the public form of a record."""

from __future__ import annotations

import random
import typing
from datetime import UTC, datetime

import pytest

from worker.domain import (
    FINAL_STATES,
    TRANSITIONS,
    Direction,
    FaxRecord,
    IllegalTransition,
    NoChange,
    State,
    Work,
    WorkKey,
    can_move,
    new_fax_id,
    parse_iso,
    transition,
)

INBOUND_STATES = {State.RECEIVED, State.FETCHING, State.ARCHIVED, State.FAILED}
OUTBOUND_STATES = {
    State.QUEUED,
    State.SUBMITTED,
    State.SENDING,
    State.DELIVERED,
    State.FAILED,
    State.CANCELLED,
    State.ACCEPTED,
    State.UNKNOWN,
}
# Paths from the initial state to every state of a direction (legal moves only).
PATH = {
    Direction.INBOUND: {
        State.RECEIVED: [],
        State.FETCHING: [State.FETCHING],
        State.ARCHIVED: [State.FETCHING, State.ARCHIVED],
        State.FAILED: [State.FAILED],
    },
    Direction.OUTBOUND: {
        State.QUEUED: [],
        State.SUBMITTED: [State.SUBMITTED],
        State.SENDING: [State.SUBMITTED, State.SENDING],
        State.DELIVERED: [State.SUBMITTED, State.SENDING, State.DELIVERED],
        State.FAILED: [State.FAILED],
        State.CANCELLED: [State.CANCELLED],
        State.ACCEPTED: [State.ACCEPTED],
        State.UNKNOWN: [State.UNKNOWN],
    },
}
LEGAL = [
    (direction, source, target)
    for direction, table in TRANSITIONS.items()
    for source, targets in table.items()
    for target in sorted(targets)
]
STATES_OF = {Direction.INBOUND: INBOUND_STATES, Direction.OUTBOUND: OUTBOUND_STATES}
ILLEGAL = [
    (direction, source, target)
    for direction, states in STATES_OF.items()
    for source in sorted(states)
    for target in sorted(set(State) - {source})
    if target not in TRANSITIONS[direction].get(source, frozenset())
]


def record_in(direction: Direction, state: State) -> FaxRecord:
    record = FaxRecord.new(direction, "main", "primevox", note="created")
    for step in PATH[direction][state]:
        transition(record, step)
    assert record.state == state
    return record


def test_new_records_start_in_the_initial_state() -> None:
    inbound = FaxRecord.new(Direction.INBOUND, "main", "primevox", note="webhook")
    outbound = FaxRecord.new(Direction.OUTBOUND, "main", "ucx")
    assert inbound.state == State.RECEIVED
    assert outbound.state == State.QUEUED
    assert inbound.history == [{"state": "received", "at": inbound.created_at, "note": "webhook"}]
    assert inbound.id.startswith("fx_") and inbound.id != outbound.id


def test_the_forward_paths_match_the_contract() -> None:
    # DESIGN.md: inbound received → fetching → archived, or failed; outbound queued → submitted →
    # sending → delivered | failed | cancelled, accepted, unknown.
    inbound = record_in(Direction.INBOUND, State.ARCHIVED)
    assert [h["state"] for h in inbound.history] == ["received", "fetching", "archived"]
    outbound = record_in(Direction.OUTBOUND, State.DELIVERED)
    assert [h["state"] for h in outbound.history] == [
        "queued",
        "submitted",
        "sending",
        "delivered",
    ]
    for final in FINAL_STATES:
        for direction in Direction:
            assert final not in TRANSITIONS[direction], f"{final} must be final"


@pytest.mark.parametrize(
    ("direction", "source", "target"), LEGAL, ids=[f"{d}:{s}->{t}" for d, s, t in LEGAL]
)
def test_every_legal_move_works_and_is_recorded(
    direction: Direction, source: State, target: State
) -> None:
    record = record_in(direction, source)
    before = list(record.history)
    assert can_move(record, target)
    result = transition(record, target, note=f"to {target}")
    assert result is record
    assert record.state == target
    assert record.history[:-1] == before
    last = record.history[-1]
    assert last["state"] == str(target)
    assert last["note"] == f"to {target}"
    assert last["at"] == record.updated_at
    assert parse_iso(last["at"]) >= parse_iso(record.created_at)


@pytest.mark.parametrize(
    ("direction", "source", "target"), ILLEGAL, ids=[f"{d}:{s}->{t}" for d, s, t in ILLEGAL]
)
def test_every_illegal_move_is_refused(direction: Direction, source: State, target: State) -> None:
    record = record_in(direction, source)
    snapshot = record.to_json()
    assert not can_move(record, target)
    with pytest.raises(IllegalTransition) as info:
        transition(record, target)
    assert info.value.current == source and info.value.target == target
    assert str(info.value) == f"fax {record.id}: cannot move from {source} to {target}"
    assert record.to_json() == snapshot  # untouched


@pytest.mark.parametrize(
    ("direction", "source", "target"),
    [
        (Direction.OUTBOUND, State.DELIVERED, State.SENDING),
        (Direction.OUTBOUND, State.SENDING, State.SUBMITTED),
        (Direction.OUTBOUND, State.SUBMITTED, State.QUEUED),
        (Direction.OUTBOUND, State.CANCELLED, State.DELIVERED),
        (Direction.OUTBOUND, State.FAILED, State.DELIVERED),
        (Direction.INBOUND, State.ARCHIVED, State.FETCHING),
        (Direction.INBOUND, State.ARCHIVED, State.FAILED),
        (Direction.INBOUND, State.FAILED, State.ARCHIVED),
        (Direction.INBOUND, State.FETCHING, State.RECEIVED),
        # inbound states on outbound records and the reverse
        (Direction.OUTBOUND, State.QUEUED, State.FETCHING),
        (Direction.OUTBOUND, State.SENDING, State.ARCHIVED),
        (Direction.INBOUND, State.RECEIVED, State.SUBMITTED),
        (Direction.INBOUND, State.FETCHING, State.DELIVERED),
    ],
)
def test_named_backward_and_cross_direction_moves(
    direction: Direction, source: State, target: State
) -> None:
    record = record_in(direction, source)
    with pytest.raises(IllegalTransition, match=f"cannot move from {source} to {target}$"):
        transition(record, target)
    assert record.state == source


@pytest.mark.parametrize(
    ("direction", "state"),
    [(d, s) for d, states in STATES_OF.items() for s in sorted(states)],
)
def test_repeating_the_current_state_is_no_change(direction: Direction, state: State) -> None:
    record = record_in(direction, state)
    snapshot = record.to_json()
    with pytest.raises(NoChange):
        transition(record, state)
    assert record.to_json() == snapshot


def test_failed_records_reason_and_detail() -> None:
    record = record_in(Direction.INBOUND, State.FETCHING)
    transition(record, State.FAILED, reason="not_pdf", detail="the download was HTML")
    assert record.reason == "not_pdf"
    assert record.reason_detail == "the download was HTML"
    assert record.history[-1]["note"] == "the download was HTML"  # the detail when no note


def test_out_of_order_events_cannot_undo_delivery() -> None:
    record = record_in(Direction.OUTBOUND, State.SUBMITTED)
    transition(record, State.DELIVERED)
    for late in (State.SENDING, State.SUBMITTED, State.QUEUED, State.FAILED):
        with pytest.raises(IllegalTransition):
            transition(record, late)
    with pytest.raises(NoChange):
        transition(record, State.DELIVERED)
    assert record.state == State.DELIVERED
    assert [h["state"] for h in record.history] == ["queued", "submitted", "delivered"]


# --- the public form ----------------------------------------------------------------------

CONTRACT_FIELDS = {
    "id",
    "direction",
    "account",
    "provider",
    "state",
    "reason",
    "reason_detail",
    "from",
    "to",
    "pages",
    "sha256",
    "provider_ids",
    "raw",
    "archive",
    "document_key",
    "created_at",
    "updated_at",
    "expires_at",
    "history",
}


def test_public_has_the_contract_field_names() -> None:
    record = FaxRecord.new(
        Direction.INBOUND,
        "main",
        "primevox",
        from_number="+15145550100",
        to_number="+15145550199",
        provider_ids={"fax": "123"},
        due_at=1234.5,
        work={"last_error": "timeout", "not_before": 1234.5},
    )
    record.version = 7
    public = record.public()
    assert set(public) >= CONTRACT_FIELDS
    assert public["from"] == "+15145550100"
    assert public["to"] == "+15145550199"
    assert public["direction"] == "inbound" and public["state"] == "received"
    assert public["provider_ids"] == {"fax": "123"}
    for internal in ("due_at", "work", "version", "from_number", "to_number"):
        assert internal not in public
    # The stored form keeps them (the store needs them) and round-trips.
    assert FaxRecord.from_json(record.to_json()) == record


def test_fax_ids_sort_by_creation_time() -> None:
    ids = [new_fax_id(now=t) for t in (1_700_000_000.000, 1_700_000_000.001, 1_800_000_000.0)]
    assert ids == sorted(ids)
    assert len({len(i) for i in ids}) == 1


def test_fax_ids_are_the_documented_form() -> None:
    fax_id = new_fax_id(now=1_700_000_000.123)
    assert fax_id.startswith("fx_") and len(fax_id) == 3 + 11 + 12
    assert fax_id[3:14] == f"{1_700_000_000_123:011x}"
    int(fax_id[14:], 16)  # the random part is hex


def test_work_keys_name_every_field_of_work() -> None:
    """``save_step(drop_work=...)`` is typed by ``WorkKey``: it must list exactly ``Work``'s keys."""
    assert set(typing.get_args(WorkKey)) == set(Work.__annotations__)
    assert Work.__required_keys__ == frozenset()


def test_backoff_is_exponential_capped_and_jittered_as_documented() -> None:
    from worker.retry import Backoff

    backoff = Backoff(first=10.0, cap=60.0)
    rng = random.Random(7)
    for attempt, base in ((1, 10.0), (2, 20.0), (3, 40.0), (4, 60.0), (9, 60.0)):
        delays = [backoff.delay(attempt, rng) for _ in range(200)]
        assert all(base * 0.8 <= d <= base * 1.2 for d in delays), (attempt, min(delays))
        assert max(delays) - min(delays) > base * 0.2  # spread, not a fixed wait
    assert Backoff(first=10.0, cap=60.0, jitter=0.0).delay(2) == 20.0


def test_retry_rules_name_provider_error_kinds() -> None:
    from worker import retry
    from worker.providers.base import ErrorKind

    rules = [retry.ARCHIVE, retry.ARCHIVE_NOT_FOUND, retry.SUBMIT, retry.EVENT]
    for rule in rules:
        assert rule.retry_on and all(isinstance(k, ErrorKind) for k in rule.retry_on)
    assert retry.SUBMIT.retry_on == {ErrorKind.TRANSIENT, ErrorKind.AUTH}
    assert ErrorKind.BAD_DESTINATION not in retry.SUBMIT.retry_on


def test_iso_writes_what_isoformat_writes() -> None:
    import random
    from datetime import timedelta, timezone

    from worker.domain import iso, iso_at

    def reference(moment: datetime) -> str:
        return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"

    rng = random.Random(20261123)
    start = datetime(1971, 1, 1, tzinfo=UTC)
    moments = [start + timedelta(seconds=rng.randrange(0, 130 * 365 * 86400)) for _ in range(2000)]
    moments = [
        m.replace(microsecond=rng.choice([0, 1, 499999, 500000, 999999, rng.randrange(10**6)]))
        for m in moments
    ]
    moments += [m.astimezone(timezone(timedelta(hours=-5))) for m in moments[:100]]  # other zones
    for moment in moments:
        assert iso(moment) == reference(moment), moment
        assert iso_at(moment.timestamp()) == reference(moment), moment
    assert iso(None) is None
