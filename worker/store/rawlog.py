"""The raw webhook log: every request to a provider webhook route, accepted or refused.

Each entry keeps the method, path (token redacted), headers (secrets redacted), the body (up to
``webhook_log_body_bytes``), the answer's status and outcome, and the fax it made. Entries expire
after ``webhook_log_days``; ``faxrelay webhooks list|show|replay`` reads them.

Keys (``worker.store.keys``): each entry as JSON under ``webhook_log_key(id)``, with TTL, and the
``WEBHOOK_LOG_INDEX`` sorted set (id → time) for listing.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import redis.asyncio as aioredis

from worker.fastpath import ids
from worker.fastpath.forms import unquoted
from worker.store import keys
from worker.store.records import SideLog

LOG_INDEX = keys.WEBHOOK_LOG_INDEX
REDACTED = "[redacted]"
SECRET_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
SECRET_PARAMS = frozenset({"token", "auth", "api_password", "password", "secret"})


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


def add_to_pipeline(pipe: Any, entry: LogEntry, days: float) -> None:
    """Queue the entry's writes on a (sync or async) pipeline."""
    pipe.set(keys.webhook_log_key(entry.id), entry.to_json(), ex=_ttl(days))
    pipe.zadd(LOG_INDEX, {entry.id: entry.at})


def side_log(entry: LogEntry, days: float) -> SideLog:
    """The entry as the store's create script writes it, in the same round trip."""
    return SideLog(
        keys.webhook_log_key(entry.id), entry.to_json(), _ttl(days), LOG_INDEX, entry.at, entry.id
    )


async def write(client: aioredis.Redis, entry: LogEntry, days: float) -> None:
    pipe = client.pipeline(transaction=False)
    add_to_pipeline(pipe, entry, days)
    await pipe.execute()


def trim(client: redis.Redis, days: float) -> int:
    """Drop index entries whose log entries have expired."""
    return int(client.zremrangebyscore(LOG_INDEX, "-inf", time.time() - _ttl(days)))


def list_entries(
    client: redis.Redis, limit: int = 50, account: str | None = None
) -> list[LogEntry]:
    out: list[LogEntry] = []
    start = 0
    while len(out) < limit:
        ids = [_text(i) for i in client.zrevrange(LOG_INDEX, start, start + 199)]
        if not ids:
            break
        start += len(ids)
        for raw in client.mget([keys.webhook_log_key(i) for i in ids]):
            if raw is None:
                continue
            entry = LogEntry.from_json(raw)
            if account is None or entry.account == account:
                out.append(entry)
                if len(out) == limit:
                    break
    return out


def get_entry(client: redis.Redis, log_id: str) -> LogEntry | None:
    raw = client.get(keys.webhook_log_key(log_id))
    return LogEntry.from_json(raw) if raw is not None else None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
