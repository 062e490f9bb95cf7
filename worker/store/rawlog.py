"""The raw webhook log: every request to a provider webhook route, accepted or refused.

Each entry keeps the method, path (token redacted), headers (secrets redacted), the body (up to
``webhook_log_body_bytes``; none for an unknown account), the answer's status and outcome, and the
fax it made. ``faxrelay webhooks list|show|replay`` reads them.

Bounded (DESIGN principle 9; the keys and caps are listed in ``worker.store.keys``): entries
expire after ``webhook_log_days``, and each goes into a bucket, whose count and bytes are capped
as the whole log's are, the oldest entries leaving at once when a write goes over (the store's
``LOG`` script). A request that carried the account's token goes into the account's bucket; one
refused for a missing or wrong token into the account's refused bucket (small caps, but it keeps
the body, so that a webhook refused for a rotated token can be replayed once the token is fixed);
one to an unknown account into a single refused bucket, without its body. Refusals are logged
only up to ``webhook_refusals_per_minute`` per account and per client address (``refusal_allowed``),
so a flood of them costs a few counters, whatever its size.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import re
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import orjson
import redis
import redis.asyncio as aioredis

from config.settings import Settings
from worker.fastpath import ids
from worker.fastpath.forms import unquoted
from worker.store import keys, scripts

LOG_INDEX = keys.WEBHOOK_LOG_INDEX
REDACTED = "[redacted]"
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
SECRET_PARAMS = frozenset({"token", "auth", "api_password", "password", "secret"})
# What an unauthenticated refusal keeps of the request's own text (the caller chose it all).
REFUSED_HEADER_BYTES = 4096
REFUSED_NAME_CHARS = 64
TRIM_BATCH = 5000


def b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode()


def new_log_id(now: float) -> str:
    return f"wh_{int(now * 1000):011x}{ids.random_hex(4)}"


def redact_headers(headers: dict[str, str]) -> dict[str, str]:
    if SECRET_HEADERS.isdisjoint(map(str.lower, headers)):
        return dict(headers)  # nothing to hide: the usual webhook (its token is in the query)
    return {k: (REDACTED if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


# A secret parameter's value, where the names are written plainly (no %-escapes or "+"): the text
# after "name=" at the start or after "&". Lookbehinds only, so the replacement is a plain string.
_PLAIN_SECRET = re.compile(
    "(?:"
    + "|".join(f"(?<=(?<![^&]){re.escape(name)}=)" for name in sorted(SECRET_PARAMS))
    + ")[^&]*",
    flags=re.IGNORECASE,
)


def redact_query(query: str) -> str:
    """The query string with the values of secret parameters replaced (kept as sent otherwise)."""
    if "=" not in query:
        return query
    if "%" not in query and "+" not in query:
        return _PLAIN_SECRET.sub(REDACTED, query)
    parts = []
    for part in query.split("&"):
        key, sep, _ = part.partition("=")
        parts.append(
            f"{key}={REDACTED}" if sep and unquoted(key).lower() in SECRET_PARAMS else part
        )
    return "&".join(parts)


@dataclass
class LogEntry:
    id: str
    at: float
    account: str
    route: str  # "inbound" | "status"
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body_b64: str
    body_size: int
    truncated: bool
    status: int = 0
    outcome: str = ""
    detail: str = ""
    fax_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def capture(
        cls,
        *,
        account: str,
        route: str,
        method: str,
        path: str,
        query: str,
        headers: dict[str, str],
        now: float | None = None,
    ) -> LogEntry:
        """The entry for a request as it arrives, secrets redacted; its body comes with
        ``keep_body`` once read."""
        now = now if now is not None else time.time()
        return cls(
            id=new_log_id(now),
            at=now,
            account=account,
            route=route,
            method=method,
            path=path,
            query=redact_query(query),
            headers=redact_headers(headers),
            body_b64="",
            body_size=0,
            truncated=False,
        )

    def keep_body(self, body: bytes, cap: int) -> None:
        """The request's body, up to ``cap`` bytes (``truncated`` says when it was longer)."""
        self.body_b64 = b64(body[:cap])
        self.body_size = len(body)
        self.truncated = len(body) > cap

    def keep_little(self) -> None:
        """For a request refused before its sender proved anything (an unknown account): no
        body, and only the first ``REFUSED_HEADER_BYTES`` of its headers and short names, so
        that what a stranger sends costs a bounded entry. It is never replayable."""
        self.account = self.account[:REFUSED_NAME_CHARS]
        self.path = self.path[: 4 * REFUSED_NAME_CHARS]
        self.query = self.query[: 4 * REFUSED_NAME_CHARS]
        kept: dict[str, str] = {}
        room = REFUSED_HEADER_BYTES
        for name, value in self.headers.items():
            room -= len(name) + len(value)
            if room < 0:
                kept["x-faxrelay-headers-cut"] = "1"
                break
            kept[name] = value
        self.headers = kept
        self.body_b64, self.body_size, self.truncated = "", 0, True

    @property
    def body(self) -> bytes:
        return base64.b64decode(self.body_b64)

    def to_json(self) -> bytes:
        return orjson.dumps(self)  # a dataclass: orjson writes its fields in order

    @classmethod
    def from_json(cls, raw: bytes | str) -> LogEntry:
        return cls(**json.loads(raw))


def _ttl(days: float) -> int:
    return max(1, int(days * 86400))


class LogWrite(NamedTuple):
    """One entry as the store's scripts write it (``scripts.LOG``, or the create script in the
    same round trip as a webhook's record): stored under ``key`` for ``ttl`` seconds, indexed at
    ``score`` under ``tag`` (``{log id}|{bucket}``), within ``caps``."""

    key: str
    json: bytes
    ttl: int
    caps: str
    score: float
    tag: str

    def args(self) -> list[str | int | bytes]:
        return [self.key, self.json, self.ttl, self.caps, orjson.dumps(self.score), self.tag]


def bucket_of(entry: LogEntry, settings: Settings) -> str:
    """An entry's bucket: its account's, unless it was refused before its sender was known
    (``outcome`` "refused" with 401, or any 404): then the account's refused bucket, or the
    unknown accounts' one."""
    if entry.account not in settings.accounts:
        return keys.refused_bucket(None)
    if entry.status in (401, 404):
        return keys.refused_bucket(entry.account)
    return entry.account


def caps(settings: Settings, bucket: str) -> str:
    """The caps the store's scripts check, as they read them."""
    if bucket.startswith("!"):
        entries, size = settings.webhook_log_refused_entries, settings.webhook_log_refused_bytes
    else:
        entries, size = settings.webhook_log_account_entries, settings.webhook_log_account_bytes
    return f"{entries},{size},{settings.webhook_log_max_entries},{settings.webhook_log_max_bytes}"


def log_write(entry: LogEntry, settings: Settings) -> LogWrite:
    bucket = bucket_of(entry, settings)
    return LogWrite(
        keys.webhook_log_key(entry.id),
        entry.to_json(),
        _ttl(settings.webhook_log_days),
        caps(settings, bucket),
        entry.at,
        f"{entry.id}|{bucket}",
    )


def side_log(entry: LogEntry, settings: Settings) -> LogWrite:
    """The entry as the store's create script writes it, in the same round trip."""
    return log_write(entry, settings)


def add_to_pipeline(pipe: Any, entry: LogEntry, settings: Settings) -> None:
    """Queue the entry's write on a (sync or async) pipeline."""
    pipe.eval(scripts.LOG, 0, *log_write(entry, settings).args())


async def write(client: aioredis.Redis, entry: LogEntry, settings: Settings) -> None:
    await client.eval(scripts.LOG, 0, *log_write(entry, settings).args())


async def refusal_allowed(
    client: aioredis.Redis, bucket: str, address: str, per_minute: int, now: float | None = None
) -> bool:
    """Whether a refused request may still be logged this minute: at most ``per_minute`` per
    bucket (an account, or the unknown accounts) and per client address. Addresses are hashed
    into ``REFUSAL_ADDRESS_SLOTS`` counters, so the counters' size does not grow with the
    number of addresses a flood comes from."""
    minute = int((now if now is not None else time.time()) // 60)
    slot = zlib.crc32(address.encode()) % keys.REFUSAL_ADDRESS_SLOTS
    window = keys.refusals_key(minute)
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(window, f"b:{bucket}", 1)
    pipe.hincrby(window, f"a:{slot}", 1)
    pipe.expire(window, keys.REFUSAL_WINDOW_TTL)
    by_bucket, by_address, _ = await pipe.execute()
    return int(by_bucket) <= per_minute and int(by_address) <= per_minute


def trim(client: redis.Redis, days: float, limit: int = TRIM_BATCH) -> int:
    """Drop the entries older than ``days`` (whose strings have expired) from the indexes and
    the byte counts; at most ``limit`` a call."""
    cutoff = time.time() - _ttl(days)
    return int(client.eval(scripts.LOG_TRIM, 0, repr(cutoff), limit))


def member_id(member: bytes | str) -> str:
    """The log id of an index member (``{log id}|{bucket}|{bytes}``, or an older bare id)."""
    return _text(member).partition("|")[0]


def _newest(client: redis.Redis, index: str, limit: int) -> list[tuple[float, str]]:
    found = cast(list[tuple[bytes, float]], client.zrevrange(index, 0, limit - 1, withscores=True))
    return [(float(score), member_id(member)) for member, score in found]


def list_entries(
    client: redis.Redis, limit: int = 50, account: str | None = None
) -> list[LogEntry]:
    """The newest entries, of one account (its own and its refused bucket) or of all."""
    if account is None:
        newest = _newest(client, keys.WEBHOOK_LOG_INDEX, limit)
    else:
        own = _newest(client, keys.webhook_log_bucket(account), limit)
        refused = _newest(client, keys.webhook_log_bucket(keys.refused_bucket(account)), limit)
        newest = heapq.nlargest(limit, own + refused)
    if not newest:
        return []
    raws = client.mget([keys.webhook_log_key(log_id) for _, log_id in newest])
    return [LogEntry.from_json(raw) for raw in raws if raw is not None]


def get_entry(client: redis.Redis, log_id: str) -> LogEntry | None:
    raw = client.get(keys.webhook_log_key(log_id))
    return LogEntry.from_json(raw) if raw is not None else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
