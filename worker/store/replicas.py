"""Acknowledge only what the replicas have (DESIGN.md principle 2, ``FAXRELAY_REDIS_MIN_REPLICAS``).

Redis replicates asynchronously: a primary that dies right after answering a write may take it
along, and the replica promoted in its place never had it. With ``FAXRELAY_REDIS_MIN_REPLICAS`` =
N > 0, faxrelay answers a webhook 200 or an API 202 only after ``WAIT N timeout`` says N replicas
have the write; when they do not within ``FAXRELAY_REDIS_WAIT_TIMEOUT`` the answer is 503, and the
provider (or client) retries: the retry finds the same record through its dedup or idempotency key.

``WAIT`` counts the writes of the connection it is sent on. The group commit sends one after its
scripts on its own connection (``worker.store.groupcommit``). Any other acknowledgement takes the
primary's ``epoch`` before its writes and calls ``confirm`` after them: a barrier write then
``WAIT``, on one connection. Replication is one ordered stream, so when the barrier has reached N
replicas, everything written before it on the same primary, on any connection, has too. "The same
primary" is what the epoch checks: the replication id, which a replica promoted by a failover
changes. Without it, writes made on the old primary and a barrier retried on the new one after a
failover would be confirmed by replicas that never had the writes.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from config.settings import Settings
from worker.store import keys


class NotReplicated(RedisError):
    """The write is on the primary, but fewer than the required replicas confirmed it in time
    (or the primary changed meanwhile, so it is not known to be anywhere).

    A RedisError: callers that answer 503 when Redis is unavailable answer it here too."""

    def __init__(self, required: int, confirmed: int, timeout: float, detail: str = "") -> None:
        super().__init__(
            detail
            or f"written, but {confirmed} of {required} required replica(s) confirmed it within "
            f"{timeout:g} s (FAXRELAY_REDIS_MIN_REPLICAS)"
        )
        self.required = required
        self.confirmed = confirmed


def wait_args(min_replicas: int, timeout: float) -> tuple[int, int]:
    """``WAIT``'s arguments: ``timeout`` in whole milliseconds, at least 1 (0 would block for
    ever)."""
    return (min_replicas, max(1, round(timeout * 1000)))


def check(answer: Any, min_replicas: int, timeout: float) -> None:
    """Raise NotReplicated unless ``answer`` (WAIT's) counts ``min_replicas``."""
    confirmed = answer if isinstance(answer, int) else 0
    if confirmed < min_replicas:
        raise NotReplicated(min_replicas, confirmed, timeout)


def _replid(info: Any) -> str:
    return str(info.get("master_replid", "")) if isinstance(info, dict) else ""


def _checked(settings: Settings, epoch: str, answer: Any, info: Any) -> None:
    required, timeout = settings.redis_min_replicas, settings.redis_wait_timeout
    if _replid(info) != epoch:
        raise NotReplicated(
            required, 0, timeout, "the primary changed since the write (a failover): not known "
            "to be on the new primary or its replicas"
        )  # fmt: skip
    check(answer, required, timeout)


async def epoch(client: aioredis.Redis, settings: Settings) -> str:
    """The primary's replication id, taken before the writes ``confirm`` is for ("" when no
    replica is required: nothing is asked then)."""
    if not settings.redis_min_replicas:
        return ""
    return _replid(await client.info("replication"))


def epoch_sync(client: redis.Redis, settings: Settings) -> str:
    """As ``epoch``, for a blocking client."""
    if not settings.redis_min_replicas:
        return ""
    return _replid(client.info("replication"))


async def confirm(client: aioredis.Redis, settings: Settings, since: str) -> None:
    """Return once every write made since ``since`` (an ``epoch``) is on the required replicas (at
    once when none are required); NotReplicated, or the connection's error, otherwise."""
    required = settings.redis_min_replicas
    if not required:
        return
    pipe = client.pipeline(transaction=False)  # one connection: WAIT counts its writes
    pipe.set(keys.REPLICATION_BARRIER, b"1", px=keys.REPLICATION_BARRIER_TTL_MS)
    pipe.wait(*wait_args(required, settings.redis_wait_timeout))
    pipe.info("replication")
    _, answer, info = await pipe.execute()
    _checked(settings, since, answer, info)


def confirm_sync(client: redis.Redis, settings: Settings, since: str) -> None:
    """As ``confirm``, for the worker: before an action that cannot be taken back (a submit to a
    provider), the record that says it was started must survive a failover, or a promoted
    replica without it would start it again."""
    required = settings.redis_min_replicas
    if not required:
        return
    pipe = client.pipeline(transaction=False)
    pipe.set(keys.REPLICATION_BARRIER, b"1", px=keys.REPLICATION_BARRIER_TTL_MS)
    pipe.wait(*wait_args(required, settings.redis_wait_timeout))
    pipe.info("replication")
    _, answer, info = pipe.execute()
    _checked(settings, since, answer, info)


async def readiness(client: aioredis.Redis, settings: Settings) -> str:
    """For ``/readyz``: "ok", or "error: …" when fewer replicas are online than required (no
    acknowledgement can be given then)."""
    info = await client.info("replication")
    online = sum(
        1
        for name, value in info.items()
        if name.startswith("slave") and isinstance(value, dict) and value.get("state") == "online"
    )
    required = settings.redis_min_replicas
    if online < required:
        return f"error: {online} replica(s) online, FAXRELAY_REDIS_MIN_REPLICAS={required}"
    return "ok"
