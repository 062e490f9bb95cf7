"""Signed events to subscribers and to a send's ``callback_url`` (Standard Webhooks).

Each event is a body ``{"type", "timestamp", "data": <record>}`` signed per target:
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature: v1,<base64 HMAC-SHA256 of
"{id}.{timestamp}.{body}">`` with the target's ``whsec_`` secret. The ``standardwebhooks`` reference
library verifies them unchanged.

Deliveries are durable: each (event, target) pair is a Redis entry with a due time, delivered by a
task and re-woken by the sweeper until it succeeds or its retries (``retry.EVENT``) run out.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any

import httpx
import redis

from config.accounts import EVENT_TYPES as EVENT_TYPES
from config.accounts import Subscriber, webhook_secret_key
from config.settings import Settings
from worker import metrics
from worker.domain import FaxRecord, iso, utcnow
from worker.io.fetch import URLRefused, guarded_client
from worker.retry import EVENT
from worker.store import keys
from worker.store.records import SideLog

log = logging.getLogger(__name__)

DELIVERY_PREFIX = keys.DELIVERY_PREFIX
DELIVERIES_DUE = keys.DELIVERIES_DUE


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value for one body."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(webhook_secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def subscriber_key(subscriber: Subscriber) -> str:
    """Which subscriber a delivery is for, stable across restarts and not the secret itself.

    The URL alone is not enough: two subscribers may share one URL with different secrets.
    """
    secret = subscriber.secret.get_secret_value()
    return hashlib.sha256(f"faxrelay-subscriber:{subscriber.url}:{secret}".encode()).hexdigest()[
        :16
    ]


@dataclass(frozen=True)
class Target:
    url: str
    secret: str
    kind: str  # "callback" (URL from a caller: host rules apply) or "subscriber" (configured)
    subscriber: str = ""  # subscriber_key() of a subscriber target


def targets_for(settings: Settings, record: FaxRecord, event_type: str) -> list[Target]:
    out = [
        Target(s.url, s.secret.get_secret_value(), "subscriber", subscriber_key(s))
        for s in settings.subscribers
        if s.wants(event_type)
    ]
    if record.callback_url and settings.event_secret is not None:
        out.append(
            Target(record.callback_url, settings.event_secret.get_secret_value(), "callback")
        )
    return out


def outbox(
    settings: Settings, record: FaxRecord, event_type: str
) -> tuple[list[str], list[SideLog]]:
    """One delivery per target of the event, as outbox entries for the store's save script to
    write with the record's move (DESIGN.md principle 8); and their ids, to wake once saved.

    Each is due after ``wake_grace``: the saver wakes it at once, and the sweeper if the saver
    died first."""
    body = json.dumps(
        {"type": event_type, "timestamp": iso(utcnow()), "data": record.public()},
        separators=(",", ":"),
    )
    ids: list[str] = []
    entries: list[SideLog] = []
    due = time.time() + settings.wake_grace
    for target in targets_for(settings, record, event_type):
        delivery_id = "msg_" + secrets.token_hex(12)
        entry = {
            "id": delivery_id,
            "type": event_type,
            "fax_id": record.id,
            "url": target.url,
            "kind": target.kind,
            "subscriber": target.subscriber,
            "body": body,
            "attempts": 0,
            "last_error": "",
        }
        entries.append(
            SideLog(
                keys.delivery_key(delivery_id),
                json.dumps(entry).encode(),
                keys.DELIVERY_TTL,
                DELIVERIES_DUE,
                due,
                delivery_id,
            )
        )
        ids.append(delivery_id)
    return ids, entries


def emit(client: redis.Redis, settings: Settings, record: FaxRecord, event_type: str) -> list[str]:
    """Record one delivery per target on its own (no state change goes with it); returns their
    ids for the caller to wake. A step that moves a record writes its events with the move
    instead (``steps.save_step``'s ``events``)."""
    ids, entries = outbox(settings, record, event_type)
    if entries:
        pipe = client.pipeline(transaction=True)
        for entry in entries:
            pipe.set(entry.key, entry.json, ex=entry.ttl)
            pipe.zadd(entry.index_key, {entry.member: entry.score})
        pipe.execute()
    return ids


def _secret_for(settings: Settings, entry: dict[str, Any]) -> str | None:
    if entry["kind"] == "callback":
        return settings.event_secret.get_secret_value() if settings.event_secret else None
    key = entry.get("subscriber")  # absent in deliveries recorded before it was kept: URL only
    for subscriber in settings.subscribers:
        if subscriber.url == entry["url"] and key in (None, subscriber_key(subscriber)):
            return subscriber.secret.get_secret_value()
    return None  # that subscriber was removed or its secret changed


def deliver(client: redis.Redis, settings: Settings, delivery_id: str) -> str:
    """Try one delivery; returns "delivered", "retry", "gave_up" or "gone"."""
    outcome = _deliver(client, settings, delivery_id)
    metrics.event_delivery(outcome)
    if outcome == "retry":
        metrics.retry("event", "delivery")
    return outcome


def _deliver(client: redis.Redis, settings: Settings, delivery_id: str) -> str:
    raw = client.get(keys.delivery_key(delivery_id))
    if raw is None:
        client.zrem(DELIVERIES_DUE, delivery_id)
        return "gone"
    entry = json.loads(raw)
    secret = _secret_for(settings, entry)
    if secret is None:
        client.zrem(DELIVERIES_DUE, delivery_id)
        log.warning("event %s: no secret for its target any more; dropped", delivery_id)
        return "gone"
    permanent = False
    try:
        status = _post(settings, entry, delivery_id, secret)
    except URLRefused as exc:
        error, permanent = str(exc), True
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    except Exception as exc:
        # Anything else (a secret that does not decode, a URL httpx cannot parse) is a failed
        # attempt too: a crash here would never be counted, and the sweeper would retry forever.
        log.exception("event %s: delivery failed locally", delivery_id)
        error = f"{type(exc).__name__}: {exc}"
    else:
        if 200 <= status < 300:
            client.delete(keys.delivery_key(delivery_id))
            client.zrem(DELIVERIES_DUE, delivery_id)
            return "delivered"
        error = f"HTTP {status}"
    entry["attempts"] += 1
    entry["last_error"] = error
    exhausted = EVENT.max_attempts is not None and entry["attempts"] >= EVENT.max_attempts
    if permanent or exhausted:
        client.zrem(DELIVERIES_DUE, delivery_id)
        client.set(keys.delivery_key(delivery_id), json.dumps(entry), ex=keys.DELIVERY_TTL)
        log.error("event %s to %s given up: %s", delivery_id, entry["url"], error)
        return "gave_up"
    delay = EVENT.backoff.delay(entry["attempts"]) * settings.retry_scale
    client.set(keys.delivery_key(delivery_id), json.dumps(entry), ex=keys.DELIVERY_TTL)
    client.zadd(DELIVERIES_DUE, {delivery_id: time.time() + delay})
    return "retry"


def _post(settings: Settings, entry: dict[str, Any], delivery_id: str, secret: str) -> int:
    """Sign and send one delivery; returns the HTTP status."""
    timestamp = int(time.time())
    body = entry["body"].encode()
    headers = {
        "content-type": "application/json",
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, delivery_id, timestamp, body),
        "user-agent": "faxrelay",
    }
    timeout = httpx.Timeout(settings.read_timeout, connect=settings.connect_timeout)
    if entry["kind"] == "callback":
        with guarded_client(settings.callback_hosts, timeout=timeout) as http:
            return http.post(entry["url"], content=body, headers=headers).status_code
    with httpx.Client(timeout=timeout) as http:
        return http.post(entry["url"], content=body, headers=headers).status_code


def claim_due_deliveries(client: redis.Redis, grace: float, limit: int = 500) -> list[str]:
    now = time.time()
    ids = [
        i.decode() if isinstance(i, bytes) else str(i)
        for i in client.zrangebyscore(DELIVERIES_DUE, "-inf", now, start=0, num=limit)
    ]
    if ids:
        client.zadd(DELIVERIES_DUE, dict.fromkeys(ids, now + grace))
    return ids
