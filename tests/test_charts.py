"""The overview's charts (webhooks/charts.py) and the hourly counters behind them, kept by the
store's scripts as records move (``fr:hour:{hour}`` in worker/store/keys.py), on a real Valkey.
The dashboard and browser checks of the same figures are in tests/test_dashboard.py.
"""

from __future__ import annotations

import asyncio
import re
import time

import pytest
import redis.asyncio as aioredis

from webhooks import charts
from worker.domain import Direction, FaxRecord, State, new_fax_id, transition
from worker.store import keys
from worker.store.records import FaxStore

LAT_BUCKETS = len(keys.ARCHIVE_LATENCY_BOUNDS) + 1


def bucket_of(seconds: float) -> list[int]:
    """A histogram with one count in the bucket that holds ``seconds``."""
    counts = [0] * LAT_BUCKETS
    index = next(
        (i for i, bound in enumerate(keys.ARCHIVE_LATENCY_BOUNDS) if seconds <= bound),
        LAT_BUCKETS - 1,
    )
    counts[index] = 1
    return counts


def test_percentiles_are_read_within_their_bucket() -> None:
    in_30_to_60 = [c * 10 for c in bucket_of(45)]  # ten times in (30 s, 60 s]
    assert charts.percentile(in_30_to_60, 0.5) == 45.0
    assert charts.percentile(in_30_to_60, 0.99) == pytest.approx(59.7)
    mixed = [a * 98 + b * 2 for a, b in zip(bucket_of(0.5), bucket_of(10**9), strict=True)]
    assert charts.percentile(mixed, 0.5) == pytest.approx(50 / 98)  # within (0, 1 s]
    # the last bucket has no upper bound: it answers its lower one
    assert charts.percentile(mixed, 0.99) == float(keys.ARCHIVE_LATENCY_BOUNDS[-1])
    assert charts.percentile([0] * LAT_BUCKETS, 0.5) is None


def move(store: FaxStore, fax_id: str, *states: State, provider_error: str = "") -> None:
    for state in states:

        def step(record: FaxRecord, state: State = state) -> None:
            transition(record, state, reason="provider_error" if state == State.FAILED else "")

        store.update(fax_id, step, provider_error=provider_error)


def hour_now() -> int:
    return int(time.time() // 3600)


def test_the_scripts_count_outcomes_latency_and_errors_in_the_hour(
    store: FaxStore, redis_url: str
) -> None:
    received = time.time() - 40  # each took about 40 s: bucket (30 s, 60 s]
    for _ in range(4):
        record = FaxRecord.new(Direction.INBOUND, "pv", "primevox", fax_id=new_fax_id(now=received))
        store.create(record)
        move(store, record.id, State.FETCHING, State.ARCHIVED)
    failed = FaxRecord.new(Direction.OUTBOUND, "ucx", "ucx")
    store.create(failed)
    # a refused submit retried (an error, no move), then refused for good
    store.update(failed.id, lambda r: None, provider_error="ucx")
    move(store, failed.id, State.FAILED, provider_error="ucx")
    hour = hour_now()

    counters = {
        k.decode(): int(v) for k, v in store.redis.hgetall(keys.hour_stats_key(hour)).items()
    }
    if not counters:  # the hour turned between the writes and the read
        hour -= 1
        counters = {
            k.decode(): int(v) for k, v in store.redis.hgetall(keys.hour_stats_key(hour)).items()
        }
    assert counters == {
        "inbound:archived": 4,
        "lat:6": 4,  # (30 s, 60 s]
        "outbound:failed": 1,
        "err:ucx": 2,
    }
    ttl = store.redis.ttl(keys.hour_stats_key(hour))
    assert keys.HOUR_STATS_TTL - 60 < ttl <= keys.HOUR_STATS_TTL

    async def draw() -> charts.Charts:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await charts.charts(client, "24h", ["pv", "ucx"], now=hour * 3600 + 1800)
        finally:
            await client.aclose()

    shown = asyncio.run(draw())
    label = time.strftime("%Y-%m-%d %H:00", time.gmtime(hour * 3600))
    assert f'data-hour="{label}" data-archived="4" data-failed="0"' in shown.inbound.svg
    assert ("archived", "#2f9e5b", "4") in shown.inbound.legend
    assert ("failed", "#d64545", "1") in shown.outbound.legend
    assert shown.errors.legend == [("ucx", charts.PALETTE[0], "2")]
    point = re.search(r'data-p50="([\d.]+)" data-p99="([\d.]+)"', shown.latency.svg)
    assert point is not None
    assert 30 < float(point[1]) <= float(point[2]) <= 60
    assert shown.latency.legend[0][2] == charts.short(float(point[1]))


def test_an_unknown_span_is_the_last_day_and_a_week_has_168_hours(redis_url: str) -> None:
    async def both() -> tuple[charts.Charts, charts.Charts]:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return (
                await charts.charts(client, "nonsense", []),
                await charts.charts(client, "7d", []),
            )
        finally:
            await client.aclose()

    day, week = asyncio.run(both())
    assert day.span == "24h" and week.span == "7d"
    assert "none in this span" in day.inbound.svg
    assert week.errors.legend == [("none", "#98a2b3", "0")]
    # a label under each of the week's 7 midnights (but one too near the right edge)
    assert len(re.findall(r">(Mon|Tue|Wed|Thu|Fri|Sat|Sun) \d\d<", week.inbound.svg)) in (6, 7)
