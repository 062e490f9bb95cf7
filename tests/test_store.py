"""The Redis store against a real Redis-compatible server (valkey)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from worker.domain import (
    Direction,
    FaxRecord,
    IllegalTransition,
    NoChange,
    State,
    can_move,
    new_fax_id,
    transition,
)
from worker.store import keys
from worker.store.records import Created, FaxStore, RecordNotFound, dedup_key

BASE = 1_700_000_000.0


def make(
    direction: Direction = Direction.INBOUND,
    account: str = "main",
    *,
    at: float | None = None,
    **fields: Any,
) -> FaxRecord:
    provider = "primevox" if direction == Direction.INBOUND else "ucx"
    fax_id = new_fax_id(now=at) if at is not None else None
    return FaxRecord.new(direction, account, provider, fax_id=fax_id, **fields)


def run_threads(count: int, target) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads released together; return results in order."""
    barrier = threading.Barrier(count)

    def go(i: int) -> Any:
        barrier.wait(timeout=30)
        return target(i)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(go, range(count)))


# --- create / get -------------------------------------------------------------------------


def test_create_and_get_round_trip(store: FaxStore) -> None:
    record = make(
        from_number="+15145550100",
        to_number="+15145550199",
        provider_ids={"fax": "abc"},
        raw={"Field": "value"},
        pages=3,
        expires_at="2030-01-01T00:00:00.000000Z",
        due_at=BASE,
    )
    created = store.create(record)
    assert created.created is True
    assert created.record == record
    loaded = store.get(record.id)
    assert loaded == record
    assert store.find(record.id) == record
    assert store.find("fx_missing") is None
    with pytest.raises(RecordNotFound, match="no fax with id fx_missing"):
        store.get("fx_missing")


def test_dedup_returns_the_existing_record(store: FaxStore) -> None:
    key = dedup_key("main:primevox", "fax-123")
    first = store.create(make(from_number="+1555"), dedup=key, fingerprint="fp-1")
    second = store.create(make(from_number="+1999"), dedup=key, fingerprint="fp-2")
    assert first.created is True
    assert second == Created(first.record, False, "fp-1")
    assert store.get(first.record.id).from_number == "+1555"
    assert store.list().items == [first.record]
    assert store.lookup("main:primevox", "fax-123") == first.record
    assert store.lookup("main:primevox", "fax-999") is None


def test_dedup_ttl_is_applied(store: FaxStore) -> None:
    key = dedup_key("idem:main", "k1")
    store.create(make(Direction.OUTBOUND), dedup=key, dedup_ttl=48 * 3600)
    assert 47 * 3600 < store.redis.ttl(key) <= 48 * 3600
    kept = dedup_key("main:primevox", "k2")
    store.create(make(), dedup=kept)
    assert store.redis.ttl(kept) == -1  # no expiry


def test_concurrent_creates_with_one_dedup_key(redis_url: str, store: FaxStore) -> None:
    key = dedup_key("main:primevox", "same-fax")

    def create(i: int) -> Created:
        own = FaxStore.from_url(redis_url)
        try:
            return own.create(make(raw={"thread": i}), dedup=key, queue="wake", message=f"m{i}")
        finally:
            own.redis.close()

    results = run_threads(20, create)
    ids = {r.record.id for r in results}
    assert len(ids) == 1
    assert sum(r.created for r in results) == 1
    (fax_id,) = ids
    assert [r.id for r in store.list(limit=100).items] == [fax_id]
    assert len(list(store.redis.scan_iter("fr:fax:*"))) == 1
    assert store.redis.llen("wake") == 1  # one wake-up for one fax


# --- updates ------------------------------------------------------------------------------

RANK = {State.QUEUED: 0, State.UNKNOWN: 1, State.SUBMITTED: 2, State.SENDING: 3}


def rank(state: State) -> int:
    return RANK.get(state, 4)  # every final state ranks last


def test_update_applies_a_transition(store: FaxStore) -> None:
    record = make(Direction.OUTBOUND)
    store.create(record)
    saved, result = store.update(record.id, lambda r: transition(r, State.SUBMITTED).state)
    assert result == State.SUBMITTED
    assert saved.version == 1
    assert store.get(record.id) == saved
    with pytest.raises(NoChange):
        store.update(record.id, lambda r: transition(r, State.SUBMITTED))
    with pytest.raises(IllegalTransition):
        store.update(record.id, lambda r: transition(r, State.QUEUED))
    assert store.get(record.id).version == 1  # the refused updates wrote nothing
    with pytest.raises(RecordNotFound):
        store.update("fx_missing", lambda r: None)


def test_concurrent_updates_lose_nothing_and_never_go_back(redis_url: str, store: FaxStore) -> None:
    record = make(Direction.OUTBOUND)
    store.create(record)
    targets = [State.SUBMITTED, State.SENDING, State.DELIVERED]
    rounds = 4  # 10 threads: the history stays under records.HISTORY_CAP, every edit in it
    stop = threading.Event()
    seen: list[State] = []

    def watch() -> None:
        watcher = FaxStore.from_url(redis_url)
        while not stop.is_set():
            seen.append(watcher.get(record.id).state)
        watcher.redis.close()

    def work(i: int) -> None:
        own = FaxStore.from_url(redis_url)

        def mutate(r: FaxRecord) -> None:
            key = f"thread{i}"
            r.attempts[key] = r.attempts.get(key, 0) + 1
            target = targets[i % len(targets)]
            if can_move(r, target):
                transition(r, target, note=f"thread {i} moved")
            r.history.append({"state": str(r.state), "at": r.updated_at, "note": f"edit {i}"})

        for _ in range(rounds):
            own.update(record.id, mutate)
        own.redis.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        run_threads(10, work)
    finally:
        stop.set()
        watcher.join(timeout=30)

    final = store.get(record.id)
    assert final.state == State.DELIVERED
    assert final.version == 10 * rounds
    assert final.attempts == {f"thread{i}": rounds for i in range(10)}
    notes = [h["note"] for h in final.history]
    for i in range(10):
        assert notes.count(f"edit {i}") == rounds
    moves = [State(h["state"]) for h in final.history if not h["note"].startswith("edit ")]
    assert moves[0] == State.QUEUED and moves[-1] == State.DELIVERED
    assert [rank(s) for s in moves] == sorted(rank(s) for s in moves)
    assert seen and [rank(s) for s in seen] == sorted(rank(s) for s in seen)
    # The state index followed: the record is under delivered and nowhere else.
    assert [r.id for r in store.list(state="delivered").items] == [record.id]
    for other in ("queued", "submitted", "sending"):
        assert store.list(state=other).items == []


# --- listing ------------------------------------------------------------------------------


@pytest.fixture
def many(store: FaxStore) -> list[FaxRecord]:
    """25 records with distinct creation times: three accounts, both directions, some moved on."""
    records = []
    for i in range(25):
        direction = Direction.INBOUND if i % 2 == 0 else Direction.OUTBOUND
        record = make(direction, ["north", "south", "east"][i % 3], at=BASE + i)
        store.create(record)
        if i % 4 == 0:
            target = State.FETCHING if direction == Direction.INBOUND else State.SUBMITTED
            record, _ = store.update(record.id, lambda r, t=target: transition(r, t))
        records.append(record)
    return records


def newest_first(records: list[FaxRecord]) -> list[str]:
    return [r.id for r in sorted(records, key=lambda r: r.id, reverse=True)]


def test_list_newest_first(store: FaxStore, many: list[FaxRecord]) -> None:
    page = store.list(limit=100)
    assert [r.id for r in page.items] == newest_first(many)
    assert page.items[0].id == many[-1].id  # the last created comes first
    assert page.items == sorted(page.items, key=lambda r: r.created_at, reverse=True)


@pytest.mark.parametrize(
    "filters",
    [
        {"direction": "inbound"},
        {"direction": "outbound"},
        {"account": "south"},
        {"state": "received"},
        {"state": "submitted"},
        {"direction": "outbound", "account": "north"},
        {"account": "east", "state": "fetching"},
        {"direction": "inbound", "state": "queued"},
    ],
    ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()),
)
def test_list_filters(store: FaxStore, many: list[FaxRecord], filters: dict[str, str]) -> None:
    expected = [
        r for r in many if all(str(getattr(r, field)) == value for field, value in filters.items())
    ]
    got = store.list(limit=100, **filters).items
    assert [r.id for r in got] == newest_first(expected)
    if filters == {"direction": "inbound", "state": "queued"}:
        assert got == []


@pytest.mark.parametrize("limit", [1, 4, 7, 25, 30])
def test_paging_covers_every_record_once(
    store: FaxStore, many: list[FaxRecord], limit: int
) -> None:
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = store.list(limit=limit, cursor=cursor)
        assert len(page.items) <= limit
        seen += [r.id for r in page.items]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == newest_first(many)


def test_paging_with_a_filter(store: FaxStore, many: list[FaxRecord]) -> None:
    seen: list[str] = []
    cursor = None
    while True:
        page = store.list(direction="outbound", limit=3, cursor=cursor)
        seen += [r.id for r in page.items]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == newest_first([r for r in many if r.direction == Direction.OUTBOUND])


def test_state_index_follows_transitions(store: FaxStore) -> None:
    record = make()
    store.create(record)
    assert [r.id for r in store.list(state="received").items] == [record.id]
    store.update(record.id, lambda r: transition(r, State.FETCHING))
    assert store.list(state="received").items == []
    assert [r.id for r in store.list(state="fetching").items] == [record.id]
    store.update(record.id, lambda r: transition(r, State.ARCHIVED))
    assert store.list(state="fetching").items == []
    assert [r.state for r in store.list(state="archived").items] == [State.ARCHIVED]
    # An edit that keeps the state keeps the index.
    store.update(record.id, lambda r: setattr(r, "pages", 4))
    assert [r.pages for r in store.list(state="archived").items] == [4]


# --- due index ----------------------------------------------------------------------------


def test_claim_due_returns_overdue_and_pushes_them_out(store: FaxStore) -> None:
    now = BASE + 10_000
    overdue = [make(due_at=now - 100), make(due_at=now - 1), make(due_at=now)]
    future = make(due_at=now + 1000)
    undated = make()
    for record in [*overdue, future, undated]:
        store.create(record)
    assert store.due_count(now) == 3
    claimed = store.claim_due(now=now, grace=60)
    assert sorted(claimed) == sorted(r.id for r in overdue)
    assert store.claim_due(now=now, grace=60) == []
    assert store.claim_due(now=now + 59, grace=60) == []
    assert store.due_count(now + 59) == 0
    # Once the grace has run out they are due again (the woken task never came).
    assert sorted(store.claim_due(now=now + 60, grace=60)) == sorted(r.id for r in overdue)


def test_claim_due_leaves_a_leased_record_to_its_worker_until_the_lease_lapses(
    store: FaxStore,
) -> None:
    now = BASE + 10_000
    held, free = make(due_at=now - 1), make(due_at=now - 1)
    store.create(held)
    store.create(free)
    assert store.acquire_lease(held.id, "worker-a", 5.0)
    assert store.claim_due(now=now, grace=60) == [free.id]  # its worker is on the other one
    # Looked at again when the lease would lapse, not a whole grace later.
    assert 4.0 < float(store.redis.zscore(keys.DUE, held.id)) - now <= 5.5
    store.release_lease(held.id, "worker-a")  # as when the lease lapses: the worker died
    assert store.claim_due(now=now + 6, grace=60) == [held.id]


def test_claim_due_respects_limit(store: FaxStore) -> None:
    now = BASE + 10_000
    for i in range(5):
        store.create(make(due_at=now - i))
    first = store.claim_due(now=now, limit=2)
    second = store.claim_due(now=now, limit=10)
    assert len(first) == 2 and len(second) == 3
    assert not set(first) & set(second)


def test_update_moves_or_clears_the_due_time(store: FaxStore) -> None:
    now = BASE + 10_000
    record = make(due_at=now - 5)
    store.create(record)

    def later(r: FaxRecord) -> None:
        r.due_at = now + 500

    store.update(record.id, later)
    assert store.claim_due(now=now) == []
    assert store.claim_due(now=now + 500) == [record.id]

    def done(r: FaxRecord) -> None:
        transition(r, State.ARCHIVED)
        r.due_at = None

    store.update(record.id, done)
    assert store.claim_due(now=now + 1_000_000) == []
    assert store.due_count(now + 1_000_000) == 0


def test_claim_due_defaults_to_the_current_time(store: FaxStore) -> None:
    record = make(due_at=time.time() - 1)
    store.create(record)
    store.create(make(due_at=time.time() + 3600))
    assert store.claim_due() == [record.id]


# --- leases -------------------------------------------------------------------------------


def test_leases(store: FaxStore) -> None:
    assert store.acquire_lease("fx_1", "worker-a", 30) is True
    assert store.acquire_lease("fx_1", "worker-b", 30) is False
    store.release_lease("fx_1", "worker-b")  # not the holder: nothing happens
    assert store.acquire_lease("fx_1", "worker-b", 30) is False
    assert store.acquire_lease("fx_2", "worker-b", 30) is True  # leases are per record
    store.release_lease("fx_1", "worker-a")
    assert store.acquire_lease("fx_1", "worker-b", 30) is True


def test_lease_lapses(store: FaxStore) -> None:
    assert store.acquire_lease("fx_1", "worker-a", 5)
    pttl = store.redis.pttl("fr:lease:fx_1")
    assert 0 < pttl <= 5000


# --- the wake-up message ------------------------------------------------------------------


def test_create_pushes_the_message_once_and_not_for_a_dedup_hit(store: FaxStore) -> None:
    key = dedup_key("main:primevox", "fax-1")
    first = store.create(make(), dedup=key, queue="celery", message='{"task": "first"}')
    assert store.redis.lrange("celery", 0, -1) == [b'{"task": "first"}']
    again = store.create(make(), dedup=key, queue="celery", message='{"task": "second"}')
    assert again.created is False and again.record.id == first.record.id
    assert store.redis.lrange("celery", 0, -1) == [b'{"task": "first"}']
    store.create(make(), queue="celery", message='{"task": "third"}')  # no dedup key
    assert store.redis.lrange("celery", 0, -1) == [b'{"task": "third"}', b'{"task": "first"}']
    store.create(make())  # no queue: nothing pushed
    assert store.redis.llen("celery") == 2


def test_a_stored_record_is_its_to_json(store: FaxStore) -> None:
    import orjson

    record = FaxRecord.new(
        Direction.INBOUND, "acct", "primevox", raw={"a": ["1", "2"]}, provider_ids={"fax_id": "9"}
    )
    record.due_at = 1763884212.125
    store.create(record)
    stored = store.redis.get(f"fr:fax:{record.id}")
    assert stored is not None and orjson.loads(stored) == record.to_json()
    assert list(orjson.loads(stored)) == list(record.to_json())  # the fields in their order


# --- the key layout ---------------------------------------------------------------------------


def test_the_key_layout_is_the_one_redis_already_holds() -> None:
    """Renaming a key family would orphan what a running system has stored: the layout is fixed."""
    assert keys.fax_key("fx_1") == "fr:fax:fx_1"
    assert keys.INDEX_ALL == "fr:ix:all"
    assert keys.direction_index("inbound") == "fr:ix:dir:inbound"
    assert keys.account_index("main") == "fr:ix:acct:main"
    assert keys.state_index("archived") == "fr:ix:state:archived"
    assert keys.DUE == "fr:due"
    assert keys.lease_key("fx_1") == "fr:lease:fx_1"
    assert keys.dedup_key(keys.inbound_scope("main"), "pv-1") == "fr:key:in:main:pv-1"
    assert keys.dedup_key(keys.idempotency_scope("main"), "k") == "fr:key:idem:main:k"
    assert keys.dedup_key(keys.job_scope("main"), "j1") == "fr:key:job:main:j1"
    assert keys.pending_status_key("main", "j1") == "fr:pending-status:main:j1"
    assert keys.delivery_key("msg_1") == "fr:delivery:msg_1"
    assert keys.DELIVERIES_DUE == "fr:deliveries:due"
    assert keys.webhook_log_key("wh_1") == "fr:wh:wh_1"
    assert keys.WEBHOOK_LOG_INDEX == "fr:wh:ix"
    assert keys.webhook_log_bucket("main") == "fr:wh:ix:main"
    assert (keys.FINAL, keys.UNFILED, keys.STATS) == ("fr:final", "fr:final:unfiled", "fr:stats")
    assert keys.reconciled_key("main") == "fr:reconciled:main"
    assert (keys.JOB_TTL, keys.PENDING_STATUS_TTL, keys.DELIVERY_TTL) == (
        30 * 86400,
        7 * 86400,
        14 * 86400,
    )


def test_the_scripts_write_the_documented_keys(store: FaxStore) -> None:
    record = make(Direction.OUTBOUND, "acct-x", due_at=BASE)
    store.create(record)
    written = {k.decode() for k in store.redis.scan_iter("fr:*")}
    assert written == {
        f"fr:fax:{record.id}",
        "fr:ix:all",
        "fr:ix:dir:outbound",
        "fr:ix:acct:acct-x",
        f"fr:ix:state:{record.state}",
        "fr:due",
        "fr:stats",
        keys.day_stats_key(int(time.time() // 86400)),
    }
    store.update(record.id, lambda r: transition(r, State.SUBMITTED))
    assert not store.redis.exists(f"fr:ix:state:{record.state}")
    assert store.redis.zscore("fr:ix:state:submitted", record.id) == 0
