"""The Redis store of fax records: the truth about every fax (DESIGN.md principle 1).

Keys (all under ``fr:``):

- ``fr:fax:{id}``              the record as JSON
- ``fr:key:{scope}:{key}``     dedup / idempotency key → ``{"id", "fingerprint"}`` (TTL for idempotency)
- ``fr:ix:{name}``             list indexes, sorted sets of ids (all scores 0, ordered by id, and ids
                               sort by creation time): ``all``, ``dir:{d}``, ``acct:{a}``, ``state:{s}``
- ``fr:due``                   sorted set id → when the record next needs work (epoch seconds)
- ``fr:lease:{id}``            held by the worker that is working on the record

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import orjson
import redis
import redis.asyncio as aioredis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from worker.domain import FaxRecord, State
from worker.store.groupcommit import GroupCommit

T = TypeVar("T")
PREFIX = "fr:"
MAX_CAS_ATTEMPTS = 50


def fax_key(fax_id: str) -> str:
    return f"{PREFIX}fax:{fax_id}"


def dedup_key(scope: str, key: str) -> str:
    return f"{PREFIX}key:{scope}:{key}"


def dedup_ref(fax_id: str, fingerprint: str = "") -> str:
    """What a dedup key holds (as the create script writes it)."""
    return json.dumps({"id": fax_id, "fingerprint": fingerprint})


DUE_KEY = f"{PREFIX}due"


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


@dataclass(frozen=True)
class Page:
    items: list[FaxRecord]
    next_cursor: str | None


# KEYS: none (single-node Redis; keys are derived from ARGV for clarity).
# ARGV: 1 id, 2 record json, 3 direction, 4 account, 5 state, 6 due ('' = none),
#       7 dedup key ('' = none), 8 dedup ttl seconds (0 = keep), 9 fingerprint,
#       10 queue ('' = none), 11 message,
#       12 log key ('' = none), 13 log json, 14 log ttl, 15 log index, 16 log score, 17 log member
# The optional log entry (the raw webhook log) is written in the same call, so a webhook costs
# one round trip; on a dedup hit it is written with outcome "duplicate" and the existing id.
_CREATE = """
local p = 'fr:'
local function log(outcome, fax_id)
  if ARGV[12] == '' then return end
  local entry = ARGV[13]
  if outcome then
    local decoded = cjson.decode(entry)
    decoded['outcome'] = outcome
    decoded['fax_id'] = fax_id
    entry = cjson.encode(decoded)
  end
  redis.call('SET', ARGV[12], entry, 'EX', ARGV[14])
  redis.call('ZADD', ARGV[15], ARGV[16], ARGV[17])
end
if ARGV[7] ~= '' then
  local existing = redis.call('GET', ARGV[7])
  if existing then
    local ref = cjson.decode(existing)
    log('duplicate', ref['id'])
    return {0, ref['id'], ref['fingerprint'] or ''}
  end
  local ref = cjson.encode({id = ARGV[1], fingerprint = ARGV[9]})
  if tonumber(ARGV[8]) > 0 then
    redis.call('SET', ARGV[7], ref, 'EX', ARGV[8])
  else
    redis.call('SET', ARGV[7], ref)
  end
end
redis.call('SET', p .. 'fax:' .. ARGV[1], ARGV[2])
redis.call('ZADD', p .. 'ix:all', 0, ARGV[1])
redis.call('ZADD', p .. 'ix:dir:' .. ARGV[3], 0, ARGV[1])
redis.call('ZADD', p .. 'ix:acct:' .. ARGV[4], 0, ARGV[1])
redis.call('ZADD', p .. 'ix:state:' .. ARGV[5], 0, ARGV[1])
if ARGV[6] ~= '' then redis.call('ZADD', p .. 'due', ARGV[6], ARGV[1]) end
if ARGV[10] ~= '' then redis.call('LPUSH', ARGV[10], ARGV[11]) end
log(nil, nil)
return {1, ARGV[1], ARGV[9]}
"""

# ARGV: 1 id, 2 expected version, 3 new json, 4 old state, 5 new state, 6 due ('' = none)
_SAVE = """
local p = 'fr:'
local key = p .. 'fax:' .. ARGV[1]
local current = redis.call('GET', key)
if not current then return -1 end
if cjson.decode(current)['version'] ~= tonumber(ARGV[2]) then return 0 end
redis.call('SET', key, ARGV[3])
if ARGV[4] ~= ARGV[5] then
  redis.call('ZREM', p .. 'ix:state:' .. ARGV[4], ARGV[1])
  redis.call('ZADD', p .. 'ix:state:' .. ARGV[5], 0, ARGV[1])
end
if ARGV[6] == '' then
  redis.call('ZREM', p .. 'due', ARGV[1])
else
  redis.call('ZADD', p .. 'due', ARGV[6], ARGV[1])
end
return 1
"""

# ARGV: 1 now, 2 limit, 3 grace. Takes due ids and pushes their due time out by ``grace`` so the
# next sweep does not wake them again while the woken task is on its way.
_CLAIM_DUE = """
local ids = redis.call('ZRANGEBYSCORE', 'fr:due', '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZADD', 'fr:due', tonumber(ARGV[1]) + tonumber(ARGV[3]), id)
end
return ids
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


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
    log: SideLog | None = None,
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


def _index_for(direction: str | None, account: str | None, state: str | None) -> str:
    if state:
        return f"{PREFIX}ix:state:{state}"
    if account:
        return f"{PREFIX}ix:acct:{account}"
    if direction:
        return f"{PREFIX}ix:dir:{direction}"
    return f"{PREFIX}ix:all"


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


def _save_args(record: FaxRecord, old_state: State) -> list[str | int | bytes]:
    """The _SAVE script's arguments: compare-and-set against the version the change started from."""
    return [
        record.id,
        record.version - 1,
        _dumps(record),
        str(old_state),
        str(record.state),
        _due_arg(record),
    ]


def _mutated(
    raw: bytes | str | None, fax_id: str, mutate: Callable[[FaxRecord], T]
) -> tuple[FaxRecord, State, T]:
    record = _loads(raw)
    if record is None:
        raise RecordNotFound(fax_id)
    old_state = record.state
    result = mutate(record)
    record.version += 1
    return record, old_state, result


class FaxStore:
    """Blocking store, for workers and the CLI."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._create = client.register_script(_CREATE)
        self._save = client.register_script(_SAVE)
        self._claim_due = client.register_script(_CLAIM_DUE)
        self._release = client.register_script(_RELEASE)

    @classmethod
    def from_url(cls, url: str) -> FaxStore:
        # Retry on a fresh connection when Redis restarted under us: scripts are safe to repeat
        # (creation is deduplicated, updates are compare-and-set).
        client = redis.Redis.from_url(
            url,
            socket_timeout=30,
            socket_connect_timeout=5,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 3),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        )
        return cls(client)

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
        record = _loads(self.redis.get(fax_key(fax_id)))
        if record is None:
            raise RecordNotFound(fax_id)
        return record

    def find(self, fax_id: str) -> FaxRecord | None:
        return _loads(self.redis.get(fax_key(fax_id)))

    def lookup(self, scope: str, key: str) -> FaxRecord | None:
        """The record a dedup key names, if any."""
        ref = self.redis.get(dedup_key(scope, key))
        return self.find(json.loads(ref)["id"]) if ref else None

    def update(self, fax_id: str, mutate: Callable[[FaxRecord], T]) -> tuple[FaxRecord, T]:
        """Apply ``mutate`` to the current record and save it, re-applying on a concurrent write.

        ``mutate`` may raise (e.g. NoChange, IllegalTransition) to abandon the update.
        """
        for _ in range(MAX_CAS_ATTEMPTS):
            record, old_state, result = _mutated(self.redis.get(fax_key(fax_id)), fax_id, mutate)
            saved = self._save(args=_save_args(record, old_state))
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
        """Newest first. ``cursor`` is the ``next_cursor`` of the previous page."""
        index = _index_for(direction, account, state)
        filters = (direction, account, state)
        items: list[FaxRecord] = []
        upper = _upper(cursor)
        batch = max(limit * 2, 50)
        while len(items) < limit:
            ids = [_text(i) for i in self.redis.zrevrangebylex(index, upper, "-", 0, batch)]
            if not ids:
                return Page(items, None)
            if _fill(items, self.redis.mget([fax_key(i) for i in ids]), limit, filters):
                return Page(items, items[-1].id)
            upper = f"({ids[-1]}"
        return Page(items, items[-1].id if items else None)

    def claim_due(
        self, now: float | None = None, limit: int = 500, grace: float = 60.0
    ) -> builtins.list[str]:
        ids = self._claim_due(args=[repr(now if now is not None else time.time()), limit, grace])
        return [_text(i) for i in ids]

    def due_count(self, now: float | None = None) -> int:
        return int(self.redis.zcount(DUE_KEY, "-inf", now if now is not None else time.time()))

    def acquire_lease(self, fax_id: str, token: str, seconds: float) -> bool:
        """Only one worker works on a record at a time; the lease lapses if that worker dies."""
        return bool(
            self.redis.set(f"{PREFIX}lease:{fax_id}", token, nx=True, px=int(seconds * 1000))
        )

    def release_lease(self, fax_id: str, token: str) -> None:
        self._release(keys=[f"{PREFIX}lease:{fax_id}"], args=[token])

    def ping(self) -> bool:
        return bool(self.redis.ping())


class AsyncFaxStore:
    """Non-blocking store, for the web app's event loop."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._create = GroupCommit(client, _CREATE)
        self._save = client.register_script(_SAVE)

    async def create(
        self,
        record: FaxRecord,
        *,
        dedup: str = "",
        dedup_ttl: int = 0,
        fingerprint: str = "",
        queue: str = "",
        message: str = "",
        log: SideLog | None = None,
    ) -> Created:
        """As FaxStore.create, with an optional log entry written by the same script call."""
        created, fax_id, stored_fingerprint = await self._create.call(
            _create_args(record, dedup, dedup_ttl, fingerprint, queue, message, log)
        )
        if created:
            return Created(record, True, fingerprint)
        return Created(await self.get(_text(fax_id)), False, _text(stored_fingerprint))

    async def get(self, fax_id: str) -> FaxRecord:
        record = _loads(await self.redis.get(fax_key(fax_id)))
        if record is None:
            raise RecordNotFound(fax_id)
        return record

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
        index = _index_for(direction, account, state)
        filters = (direction, account, state)
        items: list[FaxRecord] = []
        upper = _upper(cursor)
        batch = max(limit * 2, 50)
        while len(items) < limit:
            ids = [_text(i) for i in await self.redis.zrevrangebylex(index, upper, "-", 0, batch)]
            if not ids:
                return Page(items, None)
            if _fill(items, await self.redis.mget([fax_key(i) for i in ids]), limit, filters):
                return Page(items, items[-1].id)
            upper = f"({ids[-1]}"
        return Page(items, items[-1].id if items else None)

    async def ping(self) -> bool:
        result: Awaitable[bool] | bool = self.redis.ping()
        return bool(await result) if not isinstance(result, bool) else result


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
