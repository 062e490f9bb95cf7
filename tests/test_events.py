"""Event deliveries through worker/events.py against a real Valkey and a loopback receiver, and the
beat's reconcile fan-out (worker/tasks.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import standardwebhooks
from pydantic import SecretStr

from config.accounts import Subscriber
from config.settings import Settings
from tests.test_inbound_e2e import Receiver
from worker import runtime, tasks
from worker.domain import Direction, FaxRecord, iso, utcnow
from worker.pipeline import events
from worker.retry import EVENT
from worker.runtime import RECONCILE_TASK, Runtime

SECRET_A = "whsec_c3Vic2NyaWJlci1hLXNlY3JldC1mb3ItdGVzdHM="
SECRET_B = "whsec_c3Vic2NyaWJlci1iLXNlY3JldC1mb3ItdGVzdHM="


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def received_fax() -> FaxRecord:
    return FaxRecord.new(Direction.INBOUND, "main", "ucx")


def verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        standardwebhooks.Webhook(secret).verify(body, headers)
    except standardwebhooks.WebhookVerificationError:
        return False
    return True


def test_subscribers_sharing_a_url_each_get_their_own_signature(
    redis_url: str, receiver: Receiver
) -> None:
    settings = Settings(
        redis_url=redis_url,
        subscribers=(
            Subscriber(url=receiver.url, secret=SecretStr(SECRET_A)),
            Subscriber(url=receiver.url, secret=SecretStr(SECRET_B)),
        ),
    )
    client = redis.Redis.from_url(redis_url)
    ids = events.emit(client, settings, received_fax(), "fax.received")
    assert [events.deliver(client, settings, i) for i in ids] == ["delivered", "delivered"]
    # Deliveries are made in configuration order: the first for A, the second for B.
    (headers_a, body_a), (headers_b, body_b) = receiver.received
    assert verifies(SECRET_A, headers_a, body_a) and not verifies(SECRET_B, headers_a, body_a)
    assert verifies(SECRET_B, headers_b, body_b) and not verifies(SECRET_A, headers_b, body_b)
    # What the delivery keeps to tell them apart is not the secret.
    assert SECRET_B.removeprefix("whsec_") not in str(client.keys("*"))


def test_a_delivery_that_fails_locally_is_counted_and_given_up(
    redis_url: str, receiver: Receiver
) -> None:
    # A secret that does not decode (settings refuse it now; built unchecked to reach the worker).
    broken = Subscriber.model_construct(url=receiver.url, secret=SecretStr("whsec_abc"), types=())
    settings = Settings(redis_url=redis_url, retry_scale=0.001)
    settings = settings.model_copy(update={"subscribers": (broken,)})
    client = redis.Redis.from_url(redis_url)
    [delivery_id] = events.emit(client, settings, received_fax(), "fax.received")
    assert EVENT.max_attempts is not None
    outcomes = [events.deliver(client, settings, delivery_id) for _ in range(EVENT.max_attempts)]
    assert outcomes == ["retry"] * (EVENT.max_attempts - 1) + ["gave_up"]
    entry = json.loads(client.get(events.DELIVERY_PREFIX + delivery_id) or "{}")
    assert entry["attempts"] == EVENT.max_attempts
    assert "must be whsec_ followed by base64" in entry["last_error"]
    assert client.zscore(events.DELIVERIES_DUE, delivery_id) is None  # the sweeper stops
    assert receiver.received == []


ACCOUNTS: dict[str, dict[str, Any]] = {
    # Providers that can list received faxes.
    "ucx-due": {"provider": "ucx", "client_id": "c", "client_secret": "s", "fax_id": "f"},
    "voipms-due": {
        "provider": "voipms",
        "api_username": "u",
        "api_password": "p",
        "from_number": "5145550100",
    },
    "ucx-recent": {"provider": "ucx", "client_id": "c", "client_secret": "s", "fax_id": "f"},
    "ucx-off": {
        "provider": "ucx",
        "client_id": "c",
        "client_secret": "s",
        "fax_id": "f",
        "reconcile_interval": 0,
    },
    # Providers that cannot: a task for them would return at once.
    "primevox": {"provider": "primevox", "auth": "a", "container_id": "1", "box_id": "1"},
    "voipnow": {"provider": "voipnow", "client_id": "c", "client_secret": "s", "extension": "1"},
    "callerip": {"provider": "callerip", "token": "t"},
}


def test_reconcile_all_queues_only_due_accounts_that_can_list_received_faxes(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    accounts = {
        name: {"base_url": "https://provider.example", **spec} for name, spec in ACCOUNTS.items()
    }
    settings = Settings(redis_url=redis_url, accounts=accounts)  # type: ignore[arg-type]
    sent: list[tuple[str, str, list[str]]] = []
    rt = Runtime(settings, lambda task, queue, args: sent.append((task, queue, args)))
    rt.store.redis.set("fr:reconciled:ucx-recent", iso(utcnow()) or "")
    monkeypatch.setattr(runtime, "_runtime", rt)
    tasks.reconcile_all()
    assert sorted(sent) == [
        (RECONCILE_TASK[0], RECONCILE_TASK[1], ["ucx-due"]),
        (RECONCILE_TASK[0], RECONCILE_TASK[1], ["voipms-due"]),
    ]
