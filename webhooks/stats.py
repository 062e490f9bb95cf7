"""What the dashboard and ``/metrics`` show, read from Redis (async; nothing here writes).

Everything is computed from the records, their indexes and the raw webhook log:

- faxes today: record ids sort by creation time (``fx_`` + 11 hex digits of epoch ms), so today's
  records are a lexical range of the ``INDEX_ALL`` index (``worker.store.keys``);
- the archive backlog: the ``received`` and ``fetching`` state indexes (inbound only);
- faxes at risk: backlog records whose ``expires_at`` is within ``archive_risk_margin``;
- per-account health: the newest raw-log entry per account, and from today's records the last
  successful step at the provider and the share of finished faxes that failed.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from config.settings import Settings
from worker.domain import Direction, FaxRecord, State, parse_iso
from worker.metrics import Snapshot
from worker.store import rawlog
from worker.store.keys import (
    INDEX_ALL,
    WEBHOOK_LOG_INDEX,
    account_index,
    direction_index,
    fax_key,
    state_index,
    webhook_log_key,
)

MAX_SCAN = 20_000  # records read for one overview at most
CHUNK = 500
OK_STATES = frozenset({"archived", "submitted", "sending", "delivered", "accepted"})
BACKLOG_STATES = (State.RECEIVED, State.FETCHING)
OUTBOUND_STATES = (
    State.QUEUED,
    State.SUBMITTED,
    State.SENDING,
    State.DELIVERED,
    State.CANCELLED,
    State.ACCEPTED,
    State.UNKNOWN,
)
INBOUND_STATES = (State.RECEIVED, State.FETCHING, State.ARCHIVED)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def day_start(now: float | None = None) -> float:
    moment = datetime.fromtimestamp(now if now is not None else time.time(), UTC)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def id_floor(epoch: float) -> str:
    """The smallest record id created at or after ``epoch``."""
    return f"fx_{int(epoch * 1000):011x}"


async def load(client: aioredis.Redis, ids: list[str]) -> list[FaxRecord]:
    out: list[FaxRecord] = []
    for i in range(0, len(ids), CHUNK):
        for raw in await client.mget([fax_key(x) for x in ids[i : i + CHUNK]]):
            if raw is not None:
                out.append(FaxRecord.from_json(_json(raw)))
    return out


def _json(raw: Any) -> dict[str, Any]:
    import json

    data: dict[str, Any] = json.loads(raw)
    return data


async def records_since(client: aioredis.Redis, epoch: float) -> list[FaxRecord]:
    ids = await client.zrangebylex(INDEX_ALL, f"[{id_floor(epoch)}", "+", start=0, num=MAX_SCAN)
    return await load(client, [_text(i) for i in ids])


@dataclass
class AtRisk:
    record: FaxRecord
    seconds_left: float


@dataclass
class Backlog:
    records: list[FaxRecord]
    at_risk: list[AtRisk]
    oldest_seconds: float


async def backlog(client: aioredis.Redis, settings: Settings, now: float) -> Backlog:
    ids: list[str] = []
    for state in BACKLOG_STATES:
        found = await client.zrange(state_index(state), 0, MAX_SCAN - 1)
        ids.extend(_text(i) for i in found)
    records = [r for r in await load(client, ids) if r.direction == Direction.INBOUND]
    at_risk = []
    oldest = 0.0
    for record in records:
        created = parse_iso(record.created_at)
        if created is not None:
            oldest = max(oldest, now - created.timestamp())
        expires = parse_iso(record.expires_at)
        if expires is not None and expires.timestamp() - now < settings.archive_risk_margin:
            at_risk.append(AtRisk(record, expires.timestamp() - now))
    at_risk.sort(key=lambda item: item.seconds_left)
    records.sort(key=lambda r: r.id)
    return Backlog(records, at_risk, oldest)


async def by_state(client: aioredis.Redis) -> dict[tuple[str, str], int]:
    """Record counts by (direction, state), from the indexes."""
    pipe = client.pipeline(transaction=False)
    for state in INBOUND_STATES + OUTBOUND_STATES:
        pipe.zcard(state_index(state))
    pipe.zcard(state_index(State.FAILED))
    pipe.zintercard(2, [state_index(State.FAILED), direction_index(Direction.OUTBOUND)])
    counts = [int(c) for c in await pipe.execute()]
    out: dict[tuple[str, str], int] = {}
    for state, count in zip(INBOUND_STATES, counts, strict=False):
        out[("inbound", str(state))] = count
    for state, count in zip(OUTBOUND_STATES, counts[len(INBOUND_STATES) :], strict=False):
        out[("outbound", str(state))] = count
    failed, failed_out = counts[-2], counts[-1]
    out[("outbound", "failed")] = failed_out
    out[("inbound", "failed")] = max(failed - failed_out, 0)
    return out


async def snapshot(client: aioredis.Redis, settings: Settings) -> Snapshot:
    now = time.time()
    pending = await backlog(client, settings, now)
    return Snapshot(
        backlog=len(pending.records),
        at_risk=len(pending.at_risk),
        by_state=await by_state(client),
        oldest_backlog_seconds=pending.oldest_seconds,
    )


# --- the overview --------------------------------------------------------------------------------


@dataclass
class AccountHealth:
    name: str
    provider: str
    last_webhook: rawlog.LogEntry | None = None
    webhooks_today: int = 0
    webhooks_refused_today: int = 0
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
    truncated: bool = False
    states: list[str] = field(default_factory=list)


async def recent_log(
    client: aioredis.Redis, since: float, limit: int = 5000
) -> list[rawlog.LogEntry]:
    ids = await client.zrevrangebyscore(WEBHOOK_LOG_INDEX, "+inf", since, start=0, num=limit)
    out = []
    keys = [webhook_log_key(_text(i)) for i in ids]
    for i in range(0, len(keys), CHUNK):
        for raw in await client.mget(keys[i : i + CHUNK]):
            if raw is not None:
                out.append(rawlog.LogEntry.from_json(raw))
    return out


async def last_webhooks(
    client: aioredis.Redis, accounts: Iterable[str]
) -> dict[str, rawlog.LogEntry]:
    """The newest raw-log entry of each account (looks at the newest few thousand entries)."""
    wanted = set(accounts)
    found: dict[str, rawlog.LogEntry] = {}
    start = 0
    while wanted - set(found) and start < 5000:
        ids = await client.zrevrange(WEBHOOK_LOG_INDEX, start, start + 499)
        if not ids:
            break
        start += len(ids)
        for raw in await client.mget([webhook_log_key(_text(i)) for i in ids]):
            if raw is None:
                continue
            entry = rawlog.LogEntry.from_json(raw)
            if entry.account in wanted and entry.account not in found:
                found[entry.account] = entry
    return found


def _last_ok(record: FaxRecord) -> str | None:
    times = [str(h.get("at")) for h in record.history if h.get("state") in OK_STATES]
    return max(times) if times else None


async def overview(client: aioredis.Redis, settings: Settings) -> Overview:
    now = time.time()
    start = day_start(now)
    records = await records_since(client, start)
    today: Counter[tuple[str, str]] = Counter()
    totals: Counter[str] = Counter()
    for record in records:
        today[(str(record.direction), str(record.state))] += 1
        totals[str(record.direction)] += 1
    failures = sorted(
        (r for r in records if r.state == State.FAILED), key=lambda r: r.updated_at, reverse=True
    )
    reasons = Counter(r.reason or "(none)" for r in failures).most_common()
    health = {
        name: AccountHealth(name, account.provider) for name, account in settings.accounts.items()
    }
    for record in records:
        h = health.get(record.account)
        if h is None:
            continue
        ok = _last_ok(record)
        if ok and (h.last_ok is None or ok > h.last_ok):
            h.last_ok = ok
        if record.final:
            h.finished_today += 1
            h.failed_today += record.state == State.FAILED
    for entry in await recent_log(client, start):
        h = health.get(entry.account)
        if h is not None:
            h.webhooks_today += 1
            h.webhooks_refused_today += entry.status >= 300 or entry.status == 0
    for name, entry in (await last_webhooks(client, health)).items():
        health[name].last_webhook = entry
    # Accounts' last success before today: the newest records of each account.
    for h in health.values():
        if h.last_ok is None:
            ids = await client.zrevrange(account_index(h.name), 0, 49)
            oks = [t for r in await load(client, [_text(i) for i in ids]) if (t := _last_ok(r))]
            h.last_ok = max(oks) if oks else None
    states = sorted({state for _, state in today})
    return Overview(
        day=datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d"),
        today=dict(today),
        today_total=dict(totals),
        backlog=await backlog(client, settings, now),
        failures=failures[:50],
        failure_reasons=reasons,
        health=sorted(health.values(), key=lambda h: h.name),
        truncated=len(records) >= MAX_SCAN,
        states=states,
    )


async def creating_webhook(client: aioredis.Redis, record: FaxRecord) -> rawlog.LogEntry | None:
    """The raw-log entry of the webhook that created ``record`` (or, failing that, the newest
    one that named it), searched around the record's creation time."""
    created = parse_iso(record.created_at)
    if created is None:
        return None
    at = created.timestamp()
    ids = await client.zrangebyscore(WEBHOOK_LOG_INDEX, at - 600, at + 600, start=0, num=5000)
    named: list[rawlog.LogEntry] = []
    keys = [webhook_log_key(_text(i)) for i in ids]
    for i in range(0, len(keys), CHUNK):
        for raw in await client.mget(keys[i : i + CHUNK]):
            if raw is None:
                continue
            entry = rawlog.LogEntry.from_json(raw)
            if entry.fax_id == record.id:
                named.append(entry)
    for entry in named:
        if entry.outcome == "accepted" and entry.route == "inbound":
            return entry
    return named[-1] if named else None
