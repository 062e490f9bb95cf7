"""The Celery broker's transport: kombu's Redis (and Sentinel) transport, surviving a reconnect
with a task in flight.

When a worker loses its broker connection, Celery (5.7) collects the connection, which detaches
the transport from it, and then closes it. Closing the consumer's channel hands its unacknowledged
messages back, for which kombu builds a new connection pool from the detached transport's
settings: ``AttributeError: 'NoneType' object has no attribute 'hostname'``. That is not a
connection error, so Celery reports ``Unrecoverable error`` and the worker stops (or hangs) instead
of reconnecting, dropping every task it was running. In a 10-minute chaos soak (``python -m
bench.chaos --minutes 10``) it stopped the archiver 8 times in 13 Redis restarts, and each time
every fax it held waited for its lease to lapse and a restart: the worst webhook→archived outside
the S3 outage was 100.5 s; with this transport, 0 stops and 56.7 s (README "Chaos soak").

Here the detached channel answers with a connection error instead, which Celery's close ignores;
the consumer then reconnects as it does after any other broker error. The messages stay in
kombu's unacknowledged set, which hands them back after the visibility timeout; the records'
leases and the sweeper resume their faxes long before that, and the running tasks finish (Celery
logs ``Couldn't ack …`` for each: their channel is gone; the message comes back as a wake-up that
finds its fax done).
``tests/test_inbound_e2e.py`` (``…keeps_running_through_a_redis_restart``) proves it on a real
worker and Redis: with kombu's transport the fax is not archived and the worker stops. Written
against kombu 5.7 (pyproject pins celery[redis] >=5.5,<6); ``_connparams`` is the one method
overridden.
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

# What ``broker_transport`` names (Celery passes it to kombu, which imports it by this path).
REDIS = "config.broker:Transport"
SENTINEL = "config.broker:SentinelTransport"
DETACHED = "the broker connection was closed (the worker reconnects)"


class _DetachedIsAConnectionError:
    """Before kombu builds a connection pool, check that the transport is still attached."""

    connection: Any

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError(DETACHED)
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]
        return params


class Channel(_DetachedIsAConnectionError, kombu_redis.Channel):
    pass


class SentinelChannel(_DetachedIsAConnectionError, kombu_redis.SentinelChannel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
