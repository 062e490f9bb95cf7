"""The Redis side of retention: the filing queue of final records, their removal after the
retention window, and the counters' one-off rebuild (the keys: ``worker.store.keys``).

The save script puts a record that becomes final in ``keys.UNFILED``; once its final JSON is in
S3, ``mark_filed`` moves it to ``keys.FINAL`` (scored by when it became final), and
``expire_final`` removes the records whose retention has passed, each with its index entries, in
one script and bounded batches. ``worker.pipeline.retention`` drives these from a beat task.
"""

from __future__ import annotations

from typing import Any, cast

import redis

from worker.domain import FINAL_STATES, Direction, State
from worker.store import keys, scripts


def unfiled(client: redis.Redis, limit: int) -> list[tuple[str, float]]:
    """Up to ``limit`` final records waiting to be filed, oldest first: (id, when final)."""
    found = cast(
        list[tuple[Any, float]], client.zrange(keys.UNFILED, 0, limit - 1, withscores=True)
    )
    return [(_text(member), float(score)) for member, score in found]


def mark_filed(client: redis.Redis, fax_id: str, version: int) -> bool:
    """The record's JSON of ``version`` is in S3: it may leave once its retention has passed.
    False when it changed since (it is filed again on the next round) or is gone."""
    return bool(client.eval(scripts.MARK_FILED, 0, fax_id, version))


def expire_final(client: redis.Redis, cutoff: float, limit: int) -> int:
    """Remove up to ``limit`` filed records that became final before ``cutoff`` (epoch s)."""
    return int(client.eval(scripts.EXPIRE_FINAL, 0, repr(cutoff), limit))


def expire_dedup(client: redis.Redis, fax_id: str, at: float, dedup_keys: list[str]) -> None:
    """Give the dedup keys that still name ``fax_id`` an expiry at ``at`` (epoch s)."""
    if dedup_keys:
        client.eval(scripts.EXPIRE_DEDUP, 0, fax_id, int(at), *dedup_keys)


def ensure_stats(client: redis.Redis) -> bool:
    """Rebuild the counters from the indexes once (a store older than them); True if it did."""
    directions = [str(d) for d in Direction]
    states = [str(s) for s in State]
    return bool(client.eval(scripts.REBUILD_STATS, 0, *directions, "|", *states))


def enqueue_old_finals(client: redis.Redis, limit: int) -> int:
    """Queue for filing up to ``limit`` per final state of the final records written before the
    filing queue existed; -1 once all are queued (then a call costs one hash read per state)."""
    states = sorted(str(s) for s in FINAL_STATES)
    return int(client.eval(scripts.ENQUEUE_FINALS, 0, limit, *states))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
