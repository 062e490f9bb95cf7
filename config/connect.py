"""Redis connections, made in one place from the settings: the store (sync and async, its group
commit included), the raw log and events (they use the store's client), the Celery broker and
result backend, beat, the CLI and ``/readyz`` all get their clients or URLs here.

Two ways to find Redis:

- ``FAXRELAY_REDIS_URL``: one server. ``FAXRELAY_REDIS_PASSWORD`` is used when the URL has none.
- ``FAXRELAY_REDIS_SENTINELS`` (``host:port,…``) with ``FAXRELAY_REDIS_SENTINEL_MASTER``: every new
  connection asks the sentinels which node is the primary now (redis-py's ``Sentinel``; kombu's
  ``sentinel://`` transport and Celery's Sentinel result backend for Celery). The password is the
  data nodes' and the sentinels' (compose.ha.yaml gives both the same). The database is 0.

After a failover a connection to the old primary fails (refused, reset, or ``READONLY`` once it
is back as a replica); the clients made here retry such commands on a new connection, which asks
the sentinels again. How long they keep trying is a policy per kind of process (below, as data):
the web app gives up within about a second and answers 503, so that the provider retries later
instead of waiting on an open request; workers and the CLI keep trying long enough to ride out a
failover (the sentinels' ``down-after-milliseconds`` plus an election: seconds). Every command
faxrelay sends is safe to repeat (scripts deduplicate and compare-and-set).

This module lives in ``config`` (not ``worker.store``) because the Celery app, in ``config``,
needs the broker options: dependencies point from the worker to the configuration only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.retry
import redis.sentinel
from redis.backoff import ExponentialBackoff

from config.settings import Settings

# Where the embedded defaults point when nothing is configured (the Celery app is imported by
# every process, also where no Redis is set yet; the first command then fails with a clear error).
DEFAULT_URL = "redis://127.0.0.1:6379/0"
RETRY_ON = [redis.ConnectionError, redis.TimeoutError]
# A sentinel answers from memory: a short timeout, so that one that is down costs little before
# the next is asked.
SENTINEL_TIMEOUT = 1.0


@dataclass(frozen=True)
class Policy:
    """Timeouts and retries of one kind of process's Redis connections (seconds)."""

    socket_timeout: float
    connect_timeout: float
    retries: int  # attempts after the first, on a fresh connection each
    backoff_base: float
    backoff_cap: float
    health_check_interval: int = 30

    def total_backoff(self) -> float:
        """How long the retries wait in all (what a failover has to fit in)."""
        return float(
            sum(min(self.backoff_cap, self.backoff_base * 2**n) for n in range(1, self.retries + 1))
        )


# The web app answers a provider within seconds: 503 rather than an open request (about 0.7 s of
# retries; the provider retries the webhook).
WEB = Policy(socket_timeout=5.0, connect_timeout=2.0, retries=3, backoff_base=0.05, backoff_cap=0.5)
# Workers and commands: the same against one server (a restart is retried for about a second)...
WORKER = Policy(
    socket_timeout=30.0, connect_timeout=5.0, retries=3, backoff_base=0.05, backoff_cap=1.0
)
# ...and with Sentinel long enough for a failover to finish (about 15 s of retries), so that a
# step in flight carries on against the new primary instead of failing and waiting for the sweeper.
WORKER_SENTINEL = Policy(
    socket_timeout=30.0, connect_timeout=2.0, retries=10, backoff_base=0.1, backoff_cap=2.0
)


def configured(settings: Settings) -> bool:
    """Whether the settings name a Redis (a URL or sentinels)."""
    return bool(settings.redis_url or settings.redis_sentinels)


def describe(settings: Settings) -> str:
    """Where Redis is, without its password: for messages and logs."""
    if settings.redis_sentinels:
        return f"sentinel master {settings.redis_sentinel_master!r} via " + ",".join(
            settings.redis_sentinels
        )
    if not settings.redis_url:
        return "(no Redis configured)"
    parts = urlsplit(settings.redis_url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _password(settings: Settings) -> str | None:
    return settings.redis_password.get_secret_value() if settings.redis_password else None


def _options(policy: Policy, retry: Any) -> dict[str, Any]:
    return {
        "socket_timeout": policy.socket_timeout,
        "socket_connect_timeout": policy.connect_timeout,
        "health_check_interval": policy.health_check_interval,
        "retry": retry,
        "retry_on_error": list(RETRY_ON),
    }


def _sentinel_kwargs(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_timeout": SENTINEL_TIMEOUT,
        "socket_connect_timeout": SENTINEL_TIMEOUT,
    }
    if (password := _password(settings)) is not None:
        kwargs["password"] = password
    return kwargs


def policy_for(settings: Settings, kind: str) -> Policy:
    """``web``, or ``worker`` (workers, beat, the CLI)."""
    if kind == "web":
        return WEB
    return WORKER_SENTINEL if settings.redis_sentinels else WORKER


def sync_client(settings: Settings, policy: Policy | None = None) -> redis.Redis:
    """A blocking client of the primary (workers, beat's tasks, the CLI)."""
    policy = policy or policy_for(settings, "worker")
    options = _options(policy, _sync_retry(policy))
    if settings.redis_sentinels:
        sentinel = redis.sentinel.Sentinel(
            list(settings.sentinel_addresses), sentinel_kwargs=_sentinel_kwargs(settings)
        )
        client: redis.Redis = sentinel.master_for(
            settings.redis_sentinel_master, password=_password(settings), db=0, **options
        )
        return client
    # A password in the URL wins over FAXRELAY_REDIS_PASSWORD (redis-py applies the URL's last).
    return redis.Redis.from_url(
        settings.redis_url or DEFAULT_URL, password=_password(settings), **options
    )


def sync_client_from_url(url: str, policy: Policy = WORKER) -> redis.Redis:
    """A blocking client of the server at ``url`` (tests and tools that were handed a URL)."""
    return redis.Redis.from_url(url, **_options(policy, _sync_retry(policy)))


def _sync_retry(policy: Policy) -> redis.retry.Retry:
    return redis.retry.Retry(
        ExponentialBackoff(cap=policy.backoff_cap, base=policy.backoff_base), policy.retries
    )


def async_client(settings: Settings, policy: Policy | None = None) -> aioredis.Redis:
    """A non-blocking client of the primary (the web app; its group commit follows it)."""
    policy = policy or policy_for(settings, "web")
    retry = redis.asyncio.retry.Retry(
        ExponentialBackoff(cap=policy.backoff_cap, base=policy.backoff_base), policy.retries
    )
    options = _options(policy, retry)
    if settings.redis_sentinels:
        sentinel = redis.asyncio.sentinel.Sentinel(
            list(settings.sentinel_addresses), sentinel_kwargs=_sentinel_kwargs(settings)
        )
        client: aioredis.Redis = sentinel.master_for(
            settings.redis_sentinel_master, password=_password(settings), db=0, **options
        )
        return client
    return aioredis.Redis.from_url(
        settings.redis_url or DEFAULT_URL, password=_password(settings), **options
    )


# --- Celery ----------------------------------------------------------------------------------
def celery_urls(settings: Settings) -> dict[str, Any]:
    """``broker_url``, ``result_backend`` and the result backend's transport options."""
    if settings.redis_sentinels:
        url = _sentinel_url(settings)
        return {
            "broker_url": url,
            "result_backend": url,
            "result_backend_transport_options": _sentinel_transport(settings),
        }
    url = _with_password(settings.redis_url or DEFAULT_URL, _password(settings))
    return {"broker_url": url, "result_backend": url, "result_backend_transport_options": {}}


def broker_transport_options(settings: Settings) -> dict[str, Any]:
    """What the broker's transport options need for Sentinel (nothing for a URL)."""
    return _sentinel_transport(settings) if settings.redis_sentinels else {}


def _sentinel_transport(settings: Settings) -> dict[str, Any]:
    return {
        "master_name": settings.redis_sentinel_master,
        "sentinel_kwargs": _sentinel_kwargs(settings),
    }


def _sentinel_url(settings: Settings) -> str:
    """kombu's and Celery's form: ``sentinel://:password@host:port/0`` per sentinel, ``;``-joined
    (the password in the URL is the primary's; the sentinels' is in ``sentinel_kwargs``)."""
    password = _password(settings)
    auth = f":{quote(password, safe='')}@" if password else ""
    urls = []
    for host, port in settings.sentinel_addresses:
        where = f"[{host}]" if ":" in host else host
        urls.append(f"sentinel://{auth}{where}:{port}/0")
    return ";".join(urls)


def _with_password(url: str, password: str | None) -> str:
    parts = urlsplit(url)
    if not password or parts.password:
        return url
    user, _, where = parts.netloc.rpartition("@")
    netloc = f"{user}:{quote(password, safe='')}@{where}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
