"""What the dashboard and ``/metrics`` show, read from Redis (async; nothing here writes).

No request reads work proportional to the number of faxes (DESIGN.md principle 9): the counts come
from the counters the store's scripts keep as they move records (``worker.store.keys``: STATS,
and the day hashes), and every list is a bounded read of an index:

- faxes by direction and state (``/metrics``): ``fr:stats``, one hash read;
- faxes today by direction and state, failures by reason, each account's finished and failed
  faxes: today's ``fr:day:{day}`` hash;
- the archive backlog: its size from the counters, its oldest records (``BACKLOG_SHOWN``) from the
  ``received`` and ``fetching`` state indexes, which sort by id, so by age;
- faxes at risk: among the oldest ``AT_RISK_SCAN`` backlog records of each state (the ones whose
  provider copy expires first: a provider's expiry counts from its receipt), read in a thread
  (only their expiry, unless shown), so that a large backlog never holds up the event loop;
- today's failures: the newest ``FAILURES_SHOWN`` of the ``failed`` state index;
- per account: its newest raw-log entries (the head of its log buckets), the entries since
  midnight (a count over the bucket's index), and its last success (``keys.LAST_OK``, kept by
  the save script).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import anyio
import orjson
import redis.asyncio as aioredis

from config.settings import Settings
from worker.domain import FaxRecord, State, iso_at, parse_iso
from worker.metrics import Snapshot
from worker.store import rawlog
from worker.store.keys import (
    LAST_OK,
    STATS,
    day_stats_key,
    fax_key,
    refused_bucket,
    state_index,
    webhook_log_bucket,
    webhook_log_key,
)

AT_RISK_SCAN = 1000  # backlog records read per state for the at-risk gauge and list
BACKLOG_SHOWN = 50
FAILURES_SHOWN = 50
CREATOR_SCAN = 200  # log entries read to find the webhook that created a record
BACKLOG_STATES = (State.RECEIVED, State.FETCHING)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def day_start(now: float | None = None) -> float:
    moment = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def id_floor(epoch: float) -> str:
    """The smallest record id created at or after ``epoch``."""
    return f"fx_{int(epoch * 1000):011x}"


def id_time(fax_id: str) -> float | None:
    """When the record was created, from its id (``fx_`` + 11 hex digits of epoch ms)."""
    try:
        return int(fax_id[3:14], 16) / 1000.0
    except ValueError:
        return None


async def load(client: aioredis.Redis, ids: list[str]) -> list[FaxRecord]:
    if not ids:
        return []
    raws = await client.mget([fax_key(x) for x in ids])
    return [FaxRecord.from_json(orjson.loads(raw)) for raw in raws if raw is not None]


async def _counters(client: aioredis.Redis, key: str) -> dict[str, int]:
    raw = await client.hgetall(key)
    return {_text(k): int(v) for k, v in raw.items() if not _text(k).startswith("_")}


@dataclass
class AtRisk:
    record: FaxRecord
    seconds_left: float


@dataclass
class Backlog:
    count: int  # every received fax not archived or failed yet (the counters)
    records: list[FaxRecord]  # the oldest of them, at most BACKLOG_SHOWN
    at_risk: list[AtRisk]
    oldest_seconds: float


async def backlog(
    client: aioredis.Redis, settings: Settings, now: float, counts: dict[str, int]
) -> Backlog:
    """The backlog's size from ``counts`` (``fr:stats``), and a bounded look at its oldest."""
    ids: list[str] = []
    oldest = 0.0
    for state in BACKLOG_STATES:
        found = [_text(i) for i in await client.zrange(state_index(state), 0, AT_RISK_SCAN - 1)]
        if found and (created := id_time(found[0])) is not None:
            oldest = max(oldest, now - created)
        ids.extend(found)
    raws = await client.mget([fax_key(x) for x in ids]) if ids else []
    # Up to twice AT_RISK_SCAN records to read: in a thread, not on the event loop (webhooks wait
    # on it), and only their expiry unless shown.
    records, at_risk = await anyio.to_thread.run_sync(
        _assess, ids, raws, now, settings.archive_risk_margin
    )
    count = sum(counts.get(f"inbound:{state}", 0) for state in BACKLOG_STATES)
    return Backlog(count, records, at_risk, oldest)


def _assess(
    ids: list[str], raws: list[bytes | str | None], now: float, margin: float
) -> tuple[list[FaxRecord], list[AtRisk]]:
    """The oldest ``BACKLOG_SHOWN`` records, and those whose provider copy expires within
    ``margin``, of the backlog records read. Blocking (CPU): run in a thread."""
    shown = set(sorted(ids)[:BACKLOG_SHOWN])
    records: list[FaxRecord] = []
    at_risk: list[AtRisk] = []
    for fax_id, raw in zip(ids, raws, strict=True):
        if raw is None:
            continue
        data = orjson.loads(raw)
        expires = parse_iso(data.get("expires_at"))
        left = expires.timestamp() - now if expires is not None else None
        if fax_id not in shown and (left is None or left >= margin):
            continue  # neither shown nor at risk: a full record is not needed
        record = FaxRecord.from_json(data)
        if fax_id in shown:
            records.append(record)
        if left is not None and left < margin:
            at_risk.append(AtRisk(record, left))
    at_risk.sort(key=lambda item: item.seconds_left)
    records.sort(key=lambda r: r.id)
    return records, at_risk


def by_state(counts: dict[str, int]) -> dict[tuple[str, str], int]:
    """``fr:stats`` as (direction, state) → records in Redis."""
    out: dict[tuple[str, str], int] = {}
    for name, count in counts.items():
        direction, _, state = name.partition(":")
        if state and count > 0:
            out[(direction, state)] = count
    return out


async def snapshot(client: aioredis.Redis, settings: Settings) -> Snapshot:
    counts = await _counters(client, STATS)
    pending = await backlog(client, settings, time.time(), counts)
    return Snapshot(
        backlog=pending.count,
        at_risk=len(pending.at_risk),
        by_state=by_state(counts),
        oldest_backlog_seconds=pending.oldest_seconds,
    )


# --- the overview --------------------------------------------------------------------------------


@dataclass
class AccountHealth:
    name: str
    provider: str
    last_webhook: rawlog.LogEntry | None = None
    webhooks_today: int = 0
    webhooks_refused_today: int = 0  # refused for a missing or wrong token (logged ones)
    last_ok: str | None = None  # ISO time of the last step the provider completed for us
    finished_today: int = 0
    failed_today: int = 0

    @property
    def error_rate(self) -> float | None:
        return self.failed_today / self.finished_today if self.finished_today else None


@dataclass
class Overview:
    day: str
    today: dict[tuple[str, str], int]
    today_total: dict[str, int]
    backlog: Backlog
    failures: list[FaxRecord]
    failure_reasons: list[tuple[str, int]]
    health: list[AccountHealth]
    truncated: bool = False  # kept for templates: counts are never partial now
    states: list[str] = field(default_factory=list)


async def _newest_entry(client: aioredis.Redis, buckets: list[str]) -> rawlog.LogEntry | None:
    newest: tuple[float, str] | None = None
    for bucket in buckets:
        found = await client.zrevrange(webhook_log_bucket(bucket), 0, 0, withscores=True)
        for member, score in cast(list[tuple[bytes, float]], found):
            if newest is None or float(score) > newest[0]:
                newest = (float(score), rawlog.member_id(member))
    if newest is None:
        return None
    raw = await client.get(webhook_log_key(newest[1]))
    return rawlog.LogEntry.from_json(raw) if raw is not None else None


async def _health(
    client: aioredis.Redis, name: str, provider: str, start: float, day: dict[str, int]
) -> AccountHealth:
    h = AccountHealth(name, provider)
    refused = refused_bucket(name)
    h.last_webhook = await _newest_entry(client, [name, refused])
    h.webhooks_today = int(await client.zcount(webhook_log_bucket(name), start, "+inf"))
    h.webhooks_refused_today = int(await client.zcount(webhook_log_bucket(refused), start, "+inf"))
    h.webhooks_today += h.webhooks_refused_today
    h.finished_today = day.get(f"{name}:finished", 0)
    h.failed_today = day.get(f"{name}:failed", 0)
    last_ok = await client.hget(LAST_OK, name)
    h.last_ok = iso_at(float(last_ok)) if last_ok is not None else None
    return h


async def overview(client: aioredis.Redis, settings: Settings) -> Overview:
    now = time.time()
    start = day_start(now)
    day = await _counters(client, day_stats_key(int(start // 86400)))
    today: dict[tuple[str, str], int] = {}
    totals: dict[str, int] = {}
    reasons: list[tuple[str, int]] = []
    for name, count in day.items():
        kind, _, rest = name.partition(":")
        if kind in ("inbound", "outbound") and count > 0:
            today[(kind, rest)] = count
            totals[kind] = totals.get(kind, 0) + count
        elif kind == "reason" and count > 0:
            reasons.append((rest, count))
    reasons.sort(key=lambda item: (-item[1], item[0]))
    failed = await client.zrevrangebylex(
        state_index(State.FAILED), "+", f"[{id_floor(start)}", 0, FAILURES_SHOWN
    )
    failures = sorted(
        await load(client, [_text(i) for i in failed]), key=lambda r: r.updated_at, reverse=True
    )
    health = [
        await _health(client, name, account.provider, start, day)
        for name, account in sorted(settings.accounts.items())
    ]
    return Overview(
        day=datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d"),
        today=today,
        today_total=totals,
        backlog=await backlog(client, settings, now, await _counters(client, STATS)),
        failures=failures,
        failure_reasons=reasons,
        health=health,
        states=sorted({state for _, state in today}),
    )


async def creating_webhook(client: aioredis.Redis, record: FaxRecord) -> rawlog.LogEntry | None:
    """The raw-log entry of the webhook that created ``record`` (or, failing that, the newest
    one that named it): among at most ``CREATOR_SCAN`` entries of the account's log around the
    record's creation (a few seconds first, then ten minutes)."""
    created = parse_iso(record.created_at)
    if created is None:
        return None
    at = created.timestamp()
    index = webhook_log_bucket(record.account)
    named: list[rawlog.LogEntry] = []
    for spread in (5, 600):
        found = await client.zrangebyscore(index, at - spread, at + spread, 0, CREATOR_SCAN)
        ids = [rawlog.member_id(m) for m in cast(list[bytes], found)]
        raws = await client.mget([webhook_log_key(i) for i in ids]) if ids else []
        entries = [rawlog.LogEntry.from_json(raw) for raw in raws if raw is not None]
        named = [e for e in entries if e.fax_id == record.id]
        for entry in named:
            if entry.outcome == "accepted" and entry.route == "inbound":
                return entry
        if named:
            break
    return named[-1] if named else None
