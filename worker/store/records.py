"""The Redis store of fax records: the truth about every fax (DESIGN.md principle 1).

The keys it writes (the record, its indexes, dedup and idempotency keys, the due index, leases)
and their lifetimes are listed in ``worker.store.keys``; its Lua scripts are in
``worker.store.scripts``.

Every write goes through a Lua script, so a record and its indexes never disagree. Creation is one
atomic step with dedup and, optionally, the Celery message that wakes the worker. Updates are
compare-and-set on the record's ``version``: a concurrent writer makes the loser re-read and re-apply
its change, so no transition is ever lost.

``FaxStore`` is for the worker (blocking redis client); ``AsyncFaxStore`` for the web app.
"""

from __future__ import annotations

import builtins
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, TypeVar

import anyio
import orjson
import redis
import redis.asyncio as aioredis

from config import connect
from config.settings import Settings
from worker.domain import FaxRecord, State
from worker.store import keys, scripts
from worker.store.groupcommit import GroupCommit

# The key helpers under the names other modules import them by.
from worker.store.keys import dedup_key as dedup_key
from worker.store.keys import dedup_ref as dedup_ref
from worker.store.keys import fax_key as fax_key

T = TypeVar("T")
MAX_CAS_ATTEMPTS = 50
# A record's history keeps its first entry (how the fax began) and the newest ones, with one
# entry counting those dropped between: a fax retried hourly for weeks must not grow without end.
HISTORY_CAP = 50
# Records one listing page reads at most: a filter that matches few records of a large index
# answers a short page with a cursor to go on from, rather than reading the whole index.
MAX_LIST_SCAN = 5000
# Reads a record that has left Redis (past its retention) from its archived copy, or None.
RetiredReader = Callable[[str], FaxRecord | None]


class RecordNotFound(KeyError):
    def __init__(self, fax_id: str) -> None:
        super().__init__(fax_id)
        self.fax_id = fax_id

    def __str__(self) -> str:
        return f"no fax with id {self.fax_id}"


class ConcurrentUpdateError(RuntimeError):
    """Too many writers raced for one record (should never happen in practice)."""


class Created(NamedTuple):  # a NamedTuple: made on every webhook, and cheaper than a dataclass
    record: FaxRecord
    created: bool  # False: the dedup key named an existing record
    fingerprint: str = ""  # what the existing key was created with (idempotency checks)


class SideLog(NamedTuple):
    """A log entry written by the create script itself (one round trip for a webhook).

    ``json`` is stored under ``key`` and ``member`` added to the ``index_key`` sorted set at
    ``score``; on a dedup hit its ``outcome`` becomes "duplicate" and ``fax_id`` the existing id.
    """

    key: str
    json: bytes
    ttl: int
    index_key: str
    score: float
    member: str

    def args(self) -> list[str | int | bytes]:
        return [self.key, self.json, self.ttl, self.index_key, _score(self.score), self.member]


NO_LOG: list[str | int | bytes] = ["", "", 0, "", "0", ""]


class ScriptArgs(Protocol):
    """A raw-log entry as the create script writes it (``rawlog.LogWrite``): its six arguments."""

    def args(self) -> list[str | int | bytes]: ...


@dataclass(frozen=True)
class Page:
    items: list[FaxRecord]
    next_cursor: str | None


def _dumps(record: FaxRecord) -> bytes:
    # orjson writes the dataclass itself, fields in their order and the enums as their values:
    # the same JSON as record.to_json() gives, without building that dict on every write.
    try:
        return orjson.dumps(record)
    except TypeError:  # an int beyond 64 bits in a provider's raw fields: orjson cannot write it
        return json.dumps(record.to_json(), default=str).encode()


def _loads(raw: bytes | str | None) -> FaxRecord | None:
    if raw is None:
        return None
    return FaxRecord.from_json(orjson.loads(raw))


def _score(value: float) -> bytes:
    # A sorted-set score as Redis reads it (shortest round-tripping text, as repr() gives),
    # written by orjson: repr() of a float costs more than the rest of a webhook's arguments.
    return orjson.dumps(float(value))


def _due_arg(record: FaxRecord) -> str | bytes:
    return "" if record.due_at is None else _score(record.due_at)


def _create_args(
    record: FaxRecord,
    dedup: str,
    dedup_ttl: int,
    fingerprint: str,
    queue: str,
    message: str,
    log: ScriptArgs | None = None,
) -> list[str | int | bytes]:
    return [
        record.id,
        _dumps(record),
        str(record.direction),
        record.account,
        str(record.state),
        _due_arg(record),
        dedup,
        dedup_ttl,
        fingerprint,
        queue,
        message,
        *(log.args() if log is not None else NO_LOG),
    ]


def _indexes_for(direction: str | None, account: str | None, state: str | None) -> list[str]:
    """The indexes a listing may walk: each filter's (the smallest is walked; the records it
    lists are checked against the other filters), or every record's."""
    found = [
        index
        for value, index in (
            (state, keys.state_index(state or "")),
            (account, keys.account_index(account or "")),
            (direction, keys.direction_index(direction or "")),
        )
        if value
    ]
    return found or [keys.INDEX_ALL]


def _matches(
    record: FaxRecord, direction: str | None, account: str | None, state: str | None
) -> bool:
    return (
        (not direction or record.direction == direction)
        and (not account or record.account == account)
        and (not state or record.state == state)
    )


def _fill(
    items: builtins.list[FaxRecord],
    raws: Any,
    limit: int,
    filters: tuple[str | None, str | None, str | None],
) -> bool:
    """Add the records that match the filters to ``items``; True once ``limit`` is reached."""
    for raw in raws:
        record = _loads(raw)
        if record and _matches(record, *filters):
            items.append(record)
            if len(items) == limit:
                return True
    return False


def _upper(cursor: str | None) -> str:
    return f"({cursor}" if cursor else "+"


def _save_args(
    record: FaxRecord, old_state: State, outbox: Sequence[SideLog] = (), provider_error: str = ""
) -> list[str | int | bytes]:
    """The SAVE script's arguments: compare-and-set against the version the change started from,
    the account whose provider error it records (the hourly counters), and the outbox entries
    written with it."""
    args: list[str | int | bytes] = [
        record.id,
        record.version - 1,
        _dumps(record),
        str(old_state),
        str(record.state),
        _due_arg(record),
        provider_error,
    ]
    for entry in outbox:
        args.extend(entry.args())
    return args


# What a save writes beside the record (its events' deliveries), made from the changed record.
Outbox = Callable[[FaxRecord], Sequence[SideLog]]


def _mutated(
    raw: bytes | str | None, fax_id: str, mutate: Callable[[FaxRecord], T]
) -> tuple[FaxRecord, State, T]:
    record = _loads(raw)
    if record is None:
        raise RecordNotFound(fax_id)
    old_state = record.state
    result = mutate(record)
    _cap_history(record)
    record.version += 1
    return record, old_state, result


def _cap_history(record: FaxRecord) -> None:
    """At most ``HISTORY_CAP`` entries: the first, one that counts the dropped ones (``dropped``),
    and the newest."""
    history = record.history
    if len(history) <= HISTORY_CAP:
        return
    counted = len(history) > 1 and "dropped" in history[1]
    start = 2 if counted else 1
    newest = HISTORY_CAP - 2
    gone = history[start : len(history) - newest]
    dropped = int(history[1]["dropped"]) if counted else 0
    dropped += len(gone)
    marker = {
        "state": gone[-1]["state"],
        "at": gone[-1]["at"],
        "note": f"{dropped} earlier entries not kept (the history keeps {HISTORY_CAP})",
        "dropped": dropped,
    }
    record.history = [history[0], marker, *history[-newest:]]


class FaxStore:
    """Blocking store, for workers and the CLI."""

    def __init__(self, client: redis.Redis, retired: RetiredReader | None = None) -> None:
        self.redis = client
        self.retired = retired  # where get() finds a record past retention (the S3 copy)
        self._create = client.register_script(scripts.CREATE)
        self._save = client.register_script(scripts.SAVE)
        self._claim_due = client.register_script(scripts.CLAIM_DUE)
        self._release = client.register_script(scripts.RELEASE)

    @classmethod
    def from_settings(cls, settings: Settings) -> FaxStore:
        """The store of the configured Redis (a URL or Sentinel). Its client retries on a fresh
        connection when Redis restarted or failed over under us: scripts are safe to repeat
        (creation is deduplicated, updates are compare-and-set)."""
        return cls(connect.sync_client(settings))

    @classmethod
    def from_url(cls, url: str) -> FaxStore:
        return cls(connect.sync_client_from_url(url))

    def create(
        self,
        record: FaxRecord,
        *,
        dedup: str = "",
        dedup_ttl: int = 0,
        fingerprint: str = "",
        queue: str = "",
        message: str = "",
    ) -> Created:
        """Store a new record unless ``dedup`` names an existing one; optionally LPUSH a message."""
        created, fax_id, stored_fingerprint = self._create(
            args=_create_args(record, dedup, dedup_ttl, fingerprint, queue, message)
        )
        if created:
            return Created(record, True, fingerprint)
        return Created(self.get(_text(fax_id)), False, _text(stored_fingerprint))

    def get(self, fax_id: str) -> FaxRecord:
        """The record; one past retention from its archived copy (``retired``)."""
        record = _loads(self.redis.get(fax_key(fax_id)))
        if record is None and self.retired is not None:
            record = self.retired(fax_id)
        if record is None:
            raise RecordNotFound(fax_id)
        return record

    def find(self, fax_id: str) -> FaxRecord | None:
        return _loads(self.redis.get(fax_key(fax_id)))

    def lookup(self, scope: str, key: str) -> FaxRecord | None:
        """The record a dedup key names, if any."""
        ref = self.redis.get(dedup_key(scope, key))
        return self.find(json.loads(ref)["id"]) if ref else None

    def update(
        self,
        fax_id: str,
        mutate: Callable[[FaxRecord], T],
        outbox: Outbox | None = None,
        *,
        provider_error: str = "",
    ) -> tuple[FaxRecord, T]:
        """Apply ``mutate`` to the current record and save it, re-applying on a concurrent write.

        ``mutate`` may raise (e.g. NoChange, IllegalTransition) to abandon the update.
        ``outbox``: the entries (event deliveries) to write in the same script as the record,
        made from the changed record (so again on each re-application). ``provider_error``: the
        account whose provider answered the step with an error, counted by the same write.
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            record, old_state, result = _mutated(self.redis.get(fax_key(fax_id)), fax_id, mutate)
            entries = outbox(record) if outbox is not None else ()
            saved = self._save(args=_save_args(record, old_state, entries, provider_error))
            if saved == 1:
                return record, result
            if saved == -1:
                raise RecordNotFound(fax_id)
        raise ConcurrentUpdateError(f"fax {fax_id}: gave up after {MAX_CAS_ATTEMPTS} races")

    def list(
        self,
        *,
        direction: str | None = None,
        account: str | None = None,
        state: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """Newest first. ``cursor`` is the ``next_cursor`` of the previous page.

        Reads at most ``MAX_LIST_SCAN`` records: a page may then hold fewer than ``limit``
        items and still have a ``next_cursor`` to go on from."""
        indexes = _indexes_for(direction, account, state)
        if len(indexes) > 1:
            pipe = self.redis.pipeline(transaction=False)
            for index in indexes:
                pipe.zcard(index)
            sizes = pipe.execute()
            indexes = [min(zip(sizes, indexes, strict=True))[1]]
        filters = (direction, account, state)
        items: list[FaxRecord] = []
        upper = _upper(cursor)
        batch = max(limit * 2, 50)
        scanned = 0
        while len(items) < limit:
            ids = [_text(i) for i in self.redis.zrevrangebylex(indexes[0], upper, "-", 0, batch)]
            if not ids:
                return Page(items, None)
            if _fill(items, self.redis.mget([fax_key(i) for i in ids]), limit, filters):
                return Page(items, items[-1].id)
            upper = f"({ids[-1]}"
            scanned += len(ids)
            if scanned >= MAX_LIST_SCAN:
                return Page(items, ids[-1])
        return Page(items, items[-1].id if items else None)

    def claim_due(
        self, now: float | None = None, limit: int = 500, grace: float = 60.0
    ) -> builtins.list[str]:
        ids = self._claim_due(args=[repr(now if now is not None else time.time()), limit, grace])
        return [_text(i) for i in ids]

    def due_count(self, now: float | None = None) -> int:
        return int(self.redis.zcount(keys.DUE, "-inf", now if now is not None else time.time()))

    def acquire_lease(self, fax_id: str, token: str, seconds: float) -> bool:
        """Only one worker works on a record at a time; the lease lapses if that worker dies."""
        return bool(self.redis.set(keys.lease_key(fax_id), token, nx=True, px=int(seconds * 1000)))

    def release_lease(self, fax_id: str, token: str) -> None:
        self._release(keys=[keys.lease_key(fax_id)], args=[token])

    def ping(self) -> bool:
        return bool(self.redis.ping())


class AsyncFaxStore:
    """Non-blocking store, for the web app's event loop."""

    def __init__(
        self,
        client: aioredis.Redis,
        retired: RetiredReader | None = None,
        *,
        min_replicas: int = 0,
        wait_timeout: float = 1.0,
    ) -> None:
        self.redis = client
        self.retired = retired  # blocking (boto3): get() runs it in a thread
        # min_replicas: a create is answered once on that many replicas (worker.store.replicas)
        self._create = GroupCommit(
            client, scripts.CREATE, min_replicas=min_replicas, wait_timeout=wait_timeout
        )
        self._save = client.register_script(scripts.SAVE)

    async def create(
        self,
        record: FaxRecord,
        *,
        dedup: str = "",
        dedup_ttl: int = 0,
        fingerprint: str = "",
        queue: str = "",
        message: str = "",
        log: ScriptArgs | None = None,
    ) -> Created:
        """As FaxStore.create, with an optional log entry written by the same script call."""
        created, fax_id, stored_fingerprint = await self._create.call(
            _create_args(record, dedup, dedup_ttl, fingerprint, queue, message, log)
        )
        if created:
            return Created(record, True, fingerprint)
        return Created(await self.get(_text(fax_id)), False, _text(stored_fingerprint))

    async def get(self, fax_id: str) -> FaxRecord:
        """The record; one past retention from its archived copy (``retired``)."""
        record = _loads(await self.redis.get(fax_key(fax_id)))
        if record is None and self.retired is not None:
            record = await anyio.to_thread.run_sync(self.retired, fax_id)
        if record is None:
            raise RecordNotFound(fax_id)
        return record

    async def lookup(self, scope: str, key: str) -> FaxRecord | None:
        """The record a dedup key names, if any (as FaxStore.lookup)."""
        ref = await self.redis.get(dedup_key(scope, key))
        return _loads(await self.redis.get(fax_key(json.loads(ref)["id"]))) if ref else None

    async def update(self, fax_id: str, mutate: Callable[[FaxRecord], T]) -> tuple[FaxRecord, T]:
        for _ in range(MAX_CAS_ATTEMPTS):
            raw = await self.redis.get(fax_key(fax_id))
            record, old_state, result = _mutated(raw, fax_id, mutate)
            saved = await self._save(args=_save_args(record, old_state))
            if saved == 1:
                return record, result
            if saved == -1:
                raise RecordNotFound(fax_id)
        raise ConcurrentUpdateError(f"fax {fax_id}: gave up after {MAX_CAS_ATTEMPTS} races")

    async def list(
        self,
        *,
        direction: str | None = None,
        account: str | None = None,
        state: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page:
        """As FaxStore.list (bounded the same way)."""
        indexes = _indexes_for(direction, account, state)
        if len(indexes) > 1:
            pipe = self.redis.pipeline(transaction=False)
            for index in indexes:
                pipe.zcard(index)
            sizes = await pipe.execute()
            indexes = [min(zip(sizes, indexes, strict=True))[1]]
        filters = (direction, account, state)
        items: list[FaxRecord] = []
        upper = _upper(cursor)
        batch = max(limit * 2, 50)
        scanned = 0
        while len(items) < limit:
            found = await self.redis.zrevrangebylex(indexes[0], upper, "-", 0, batch)
            ids = [_text(i) for i in found]
            if not ids:
                return Page(items, None)
            if _fill(items, await self.redis.mget([fax_key(i) for i in ids]), limit, filters):
                return Page(items, items[-1].id)
            upper = f"({ids[-1]}"
            scanned += len(ids)
            if scanned >= MAX_LIST_SCAN:
                return Page(items, ids[-1])
        return Page(items, items[-1].id if items else None)

    async def ping(self) -> bool:
        result: Awaitable[bool] | bool = self.redis.ping()
        return bool(await result) if not isinstance(result, bool) else result

    async def aclose(self) -> None:
        """Close the group commit's own connection, then the client's."""
        self._create.close()
        await self.redis.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
