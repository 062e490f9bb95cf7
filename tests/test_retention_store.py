"""Retention and the counters at the store's level, against a real Valkey and SeaweedFS: the
filing queue, removal with every index entry, the counters the scripts keep, the history cap,
the bounded listing, and the one-off upgrade of a store older than all of these.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, cast

from config.settings import Settings
from sandbox import voipms as sb_voipms
from tests.sandbox_server import RunningSandbox
from worker.domain import FINAL_STATES, Direction, FaxRecord, State, iso_at, transition
from worker.io.archive import Archive
from worker.io.filing import filed_record, record_key
from worker.pipeline import inbound
from worker.pipeline import retention as pipeline
from worker.runtime import Runtime
from worker.store import keys, retention
from worker.store.records import HISTORY_CAP, MAX_LIST_SCAN, FaxStore, RecordNotFound, dedup_key


def make(
    direction: Direction = Direction.OUTBOUND, account: str = "acct", **fields: Any
) -> FaxRecord:
    provider = "primevox" if direction == Direction.INBOUND else "callerip"
    return FaxRecord.new(direction, account, provider, **fields)


def finish(store: FaxStore, record: FaxRecord, target: State = State.DELIVERED) -> FaxRecord:
    if record.direction == Direction.OUTBOUND:
        store.update(record.id, lambda r: transition(r, State.SUBMITTED))
    updated, _ = store.update(record.id, lambda r: transition(r, target, reason="provider_error"))
    return updated


def stats(store: FaxStore) -> dict[str, int]:
    raw = store.redis.hgetall(keys.STATS)
    return {text(k): int(v) for k, v in raw.items() if text(k) != "_built" and int(v)}


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def runtime_for(redis_url: str, archive: Archive, **settings: Any) -> Runtime:
    s = Settings(
        redis_url=redis_url,
        s3_bucket=archive.bucket,
        s3_prefix=archive.prefix,
        record_retention_seconds=settings.pop("retention", 3600.0),
        **settings,
    )
    runtime = Runtime(s, lambda task, queue, args: None)
    runtime._built["archive"] = archive  # the test's own prefix
    return runtime


def test_a_record_that_becomes_final_is_queued_for_filing_once(store: FaxStore) -> None:
    record = make()
    store.create(record)
    assert store.redis.zcard(keys.UNFILED) == 0
    finish(store, record)
    assert [fax_id for fax_id, _ in retention.unfiled(store.redis, 10)] == [record.id]
    # Filed, then saved again: filed again (its S3 copy would be stale), keeping when it ended.
    at = store.redis.zscore(keys.UNFILED, record.id)
    current = store.get(record.id)
    assert retention.mark_filed(store.redis, record.id, current.version)
    assert store.redis.zscore(keys.FINAL, record.id) == at
    store.update(record.id, lambda r: r.metadata.update(note="late"))
    assert store.redis.zscore(keys.UNFILED, record.id) == at
    assert store.redis.zscore(keys.FINAL, record.id) is None
    # A filing of an older version does not count.
    assert not retention.mark_filed(store.redis, record.id, current.version)


def test_removal_takes_the_record_and_every_index_entry(store: FaxStore) -> None:
    old, young, live = make(account="a1"), make(account="a1"), make(account="a1")
    for r in (old, young, live):
        store.create(r, queue="q", message="m")
    for r in (old, young):
        done = finish(store, r, State.FAILED)
        assert retention.mark_filed(store.redis, r.id, done.version)
    store.redis.zadd(keys.FINAL, {old.id: 1000.0})  # it became final long ago
    assert retention.expire_final(store.redis, time.time() - 60, 100) == 1
    assert store.find(old.id) is None
    for index in store.redis.scan_iter(f"{keys.INDEX_PREFIX}*"):
        assert store.redis.zscore(index, old.id) is None
    assert store.redis.zscore(keys.FINAL, old.id) is None
    assert store.find(young.id) is not None and store.find(live.id) is not None
    assert stats(store) == {"outbound:failed": 1, "outbound:queued": 1}
    assert {r.id for r in store.list(account="a1").items} == {young.id, live.id}


def test_the_counters_follow_every_move_and_rebuild_once(store: FaxStore) -> None:
    records = [make(Direction.INBOUND, "in1") for _ in range(3)] + [make() for _ in range(2)]
    for r in records:
        store.create(r)
    store.update(records[0].id, lambda r: transition(r, State.FETCHING))
    finish(store, records[1], State.ARCHIVED)
    finish(store, records[3], State.FAILED)
    expected = {
        "inbound:received": 1,
        "inbound:fetching": 1,
        "inbound:archived": 1,
        "outbound:queued": 1,
        "outbound:failed": 1,
    }
    assert stats(store) == expected
    day = keys.day_stats_key(int(time.time() // 86400))
    today = {text(k): int(v) for k, v in store.redis.hgetall(day).items()}
    assert today["acct:finished"] == 1 and today["acct:failed"] == 1
    assert today["reason:provider_error"] == 1 and today["in1:finished"] == 1
    # A store whose counters were lost (or that predates them) gets them back from the indexes.
    store.redis.delete(keys.STATS)
    store.redis.hset(keys.STATS, "inbound:received", 99)
    assert retention.ensure_stats(store.redis)
    assert stats(store) == expected
    assert not retention.ensure_stats(store.redis)  # once


def test_final_records_of_an_older_store_join_the_filing_queue(store: FaxStore) -> None:
    records = [make() for _ in range(5)]
    for r in records:
        store.create(r)
        finish(store, r)
    store.redis.delete(keys.UNFILED, keys.FINAL)  # as a store written before the queue
    assert retention.enqueue_old_finals(store.redis, 2) == 2
    assert retention.enqueue_old_finals(store.redis, 2) == 2
    assert retention.enqueue_old_finals(store.redis, 2) == 1
    assert retention.enqueue_old_finals(store.redis, 2) == -1
    assert store.redis.zcard(keys.UNFILED) == 5
    assert {str(s) for s in FINAL_STATES} <= {
        text(k) for k in store.redis.hkeys(keys.FINAL_UPGRADE)
    }


def test_the_history_is_capped(store: FaxStore) -> None:
    record = make()
    store.create(record)
    for i in range(3 * HISTORY_CAP):
        note = f"retry {i}"

        def retried(r: FaxRecord, note: str = note) -> None:
            r.history.append({"state": "queued", "at": "t", "note": note})

        store.update(record.id, retried)
    history = store.get(record.id).history
    assert len(history) == HISTORY_CAP
    assert history[0]["note"] == ""  # how it began
    assert history[1]["dropped"] == 3 * HISTORY_CAP + 1 - HISTORY_CAP + 1
    assert history[-1]["note"] == f"retry {3 * HISTORY_CAP - 1}"


def test_a_filter_that_matches_little_is_paged_not_scanned_whole(store: FaxStore) -> None:
    rare = make(account="rare")
    store.create(rare)
    pipe = store.redis.pipeline(transaction=False)
    for i in range(MAX_LIST_SCAN + 100):  # a big state index of another account
        fax_id = f"fx_{i:023x}"
        pipe.set(keys.fax_key(fax_id), json.dumps({**make().to_json(), "id": fax_id}))
        pipe.zadd(keys.state_index("queued"), {fax_id: 0})
        pipe.zadd(keys.direction_index("inbound"), {fax_id: 0})  # (their JSON: outbound)
    pipe.execute()
    # The account's index is the smallest: walked instead of the state's.
    assert store.list(account="rare", state="queued").items == [rare]
    # Two big indexes and no record that matches both: the page stops after MAX_LIST_SCAN
    # records, with a cursor to go on from; the next page finds the rest.
    page = store.list(direction="inbound", state="queued", limit=10)
    assert page.items == [] and page.next_cursor is not None
    rest = store.list(direction="inbound", state="queued", limit=10, cursor=page.next_cursor)
    assert rest.items == [] and rest.next_cursor is None


def test_filing_writes_the_final_json_where_lookups_find_it(
    redis_url: str, store: FaxStore, archive: Archive
) -> None:
    runtime = runtime_for(redis_url, archive)
    record = make()
    record.document_key = archive.key_for("outbound", record)
    store.create(record)
    done = finish(store, record)
    assert pipeline.file_final(runtime) == 1
    key = record_key(archive, record.id)
    assert key is not None and key.startswith(f"{archive.prefix}records/")
    assert json.loads(archive.get_bytes(key)) == done.public()
    sidecar = json.loads(archive.get_bytes(record.document_key.removesuffix(".pdf") + ".json"))
    assert sidecar["record"] == done.public()
    assert filed_record(archive, record.id) is not None
    assert filed_record(archive, "fx_nothing") is None  # not a fax id: no request at all
    assert filed_record(archive, "fx_0000000000000000000000ff") is None


def test_a_record_past_retention_is_got_from_s3_and_its_dedup_key_lives_on(
    redis_url: str, store: FaxStore, archive: Archive
) -> None:
    runtime = runtime_for(redis_url, archive)
    record = make(Direction.INBOUND, provider_ids={"fax_id": "pv-1"})
    dedup = dedup_key(keys.inbound_scope("acct"), "pv-1")
    store.create(record, dedup=dedup)
    done = finish(store, record, State.FAILED)
    assert pipeline.file_final(runtime) == 1
    store.redis.zadd(keys.FINAL, {record.id: time.time() - 3601})  # final over an hour ago
    assert pipeline.retain(runtime).removed == 1
    assert store.find(record.id) is None
    try:
        store.get(record.id)
        raise AssertionError("a store without a retired reader found it")
    except RecordNotFound:
        pass
    assert runtime.store.get(record.id).public() == done.public()  # the runtime's reads S3
    # PrimeVox may announce it for 30 days: the key stays that long, naming the same fax.
    assert 30 * 86400 < store.redis.ttl(dedup) <= 31 * 86400
    again = runtime.store.create(make(Direction.INBOUND), dedup=dedup)
    assert not again.created and again.record.id == record.id


def test_voipms_listing_a_fax_again_after_its_dedup_window_records_nothing(
    redis_url: str, archive: Archive, sandbox: RunningSandbox
) -> None:
    # voip.ms lists whole days, from the day before the one asked for: with the previous reconcile
    # a look-back ago, its answer reaches back up to three days beyond the look-back. The horizon
    # (look-back + a day) is put at noon UTC, so that whole days reach well past it, and ten days
    # back, so that the look-back, not the webhook re-sends, sets the dedup window.
    now = time.time()
    horizon = (now // 86400 - 10) * 86400 + 43200
    lookback_days = (now - horizon) / 86400 - keys.RECONCILE_OVERLAP_DAYS
    account = {
        "provider": "voipms",
        "base_url": sandbox.base_url("voipms"),
        "api_username": sb_voipms.API_USERNAME,
        "api_password": sb_voipms.API_PASSWORD,
        "from_number": sb_voipms.FAX_NUMBER,
    }
    runtime = runtime_for(
        redis_url, archive, accounts={"vm": account}, reconcile_lookback_days=lookback_days
    )
    window = pipeline.dedup_window_days(runtime.settings, "voipms") * 86400
    listed = {}
    for name, received in (("old", horizon - 1.25 * 86400), ("new", horizon + 3600)):
        fax = cast(dict[str, Any], sandbox.control("inbound", provider="voipms"))
        sandbox.sb.inbound[sb_voipms.NAME][str(fax["id"])].received_at = received
        listed[name] = str(fax["id"])
    runtime.store.redis.set(keys.reconciled_key("vm"), iso_at(now - lookback_days * 86400))

    [fax_id] = inbound.reconcile(runtime, "vm")

    # The old fax was received longer ago than its dedup key lives: it was (if ever) archived
    # long ago, and a second record would archive it again under a new id.
    assert window == (lookback_days + 2) * 86400 and horizon - 1.25 * 86400 + window < now
    record = runtime.store.get(fax_id)
    assert record.provider_ids["fax_id"] == listed["new"]
    # The one recorded stays a duplicate for as long as any later reconcile could list it.
    expiry = pipeline.dedup_expiry(runtime.settings, record, now)
    assert expiry > horizon + 3600 + (lookback_days + keys.RECONCILE_OVERLAP_DAYS) * 86400
    # (voip.ms did list it: the reconcile's own question)
    since = datetime.fromtimestamp(horizon, UTC)
    assert listed["old"] in {f.provider_fax_id for f in runtime.provider("vm").list_inbound(since)}
