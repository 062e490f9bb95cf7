"""Every Redis key faxrelay writes, with its lifetime: the one place to learn what is in Redis.

All of faxrelay's own keys start with ``fr:``. Every module, the Lua scripts of
``worker.store.scripts`` too, builds them with the functions and constants below, so this list is
complete. A key without a TTL says what bounds it instead.

Fax records (``worker.store.records``; written only by its Lua scripts, so a record and its
indexes never disagree)::

    fr:fax:{id}              string  no TTL
        The record as JSON: the truth about a fax (DESIGN principle 1), so it may not expire
        while the fax can still change. Final records stay too: nothing removes them yet
        (the retention window of DESIGN principle 9 is not implemented).
    fr:ix:all, fr:ix:dir:{direction}, fr:ix:acct:{account}, fr:ix:state:{state}
                             zset    no TTL
        Listing indexes: record ids, all scored 0 so that they sort by id, which is by creation
        time. They live as long as the records they list; a record is in one state index.
    fr:due                   zset    no TTL
        Record id -> when it next needs work (epoch seconds): the sweeper's queue. An id leaves
        it when its record needs no more work.
    fr:lease:{id}            string  PX lease_seconds (default 300 s)
        The token of the worker working on the record. It lapses by itself when that worker
        dies, so that another can take the sweeper's wake-up; renewed at each half while the
        work goes on.

Dedup and idempotency keys, ``fr:key:{scope}:{key}`` -> JSON ``{"id", "fingerprint"}`` naming
a record (``dedup_ref``). The script that creates a record writes its key in the same step, so
that two deliveries of one event make one record::

    fr:key:in:{account}:{provider fax id, or sha256-{digest} for a fax known by its content}
                             no TTL
        Providers re-send webhooks, and reconcile lists faxes, for as long as they keep a fax:
        the key lives with its record.
    fr:key:idem:{account}:{Idempotency-Key}
                             EX idempotency_ttl (default 48 h; the setting cannot go below 24 h)
        A send's Idempotency-Key (DESIGN promises at least 24 h).
    fr:key:job:{account}:{provider job id}
                             EX JOB_TTL (30 days)
        Routes the provider's status webhooks to the send's record; they stop long before.

Everything else::

    fr:pending-status:{account}:{job id}    string  EX PENDING_STATUS_TTL (7 days)
        A status webhook that came before the worker saved the job id; the submit step takes it
        (GETDEL). One for a job that is not ours expires.
    fr:delivery:{id}         string  EX DELIVERY_TTL (14 days)
        One event to one target, JSON with its attempts and last error: the outbox that the
        deliver_event task drains (``worker.pipeline.events``). Deleted once delivered; one
        given up is kept for inspection until it expires.
    fr:deliveries:due        zset    no TTL
        Delivery id -> when to try next. An id leaves it when delivered, given up or gone.
    fr:wh:{log id}           string  EX webhook_log_days (default 14 days)
        One request to a webhook route, accepted or refused, its body kept up to
        webhook_log_body_bytes (``worker.store.rawlog``).
    fr:wh:ix                 zset    no TTL
        Log id -> arrival time, for listing. The sweeper drops the members older than
        webhook_log_days (``rawlog.trim``), whose entries have expired.
    fr:reconciled:{account}  string  no TTL
        When the last reconcile of an account's list API started (ISO 8601). One per configured
        account; losing it only makes the next reconcile look further back.

Not faxrelay's, so not built here:

- Celery's keys, named by kombu: one list per queue, named as in ``config.queues`` (the web app
  also LPUSHes wake-ups there itself), and ``unacked``, ``unacked_index``, ``unacked_mutex``,
  ``_kombu.binding.{queue}``. A message is only a wake-up; the records above are the truth.
- No metrics or counters live in Redis: event counters are prometheus_client's, in process or in
  its multiprocess files (``worker.metrics``); the gauges are computed from the indexes above.
"""

from __future__ import annotations

import json

PREFIX = "fr:"

# --- fax records ------------------------------------------------------------------------------
FAX_PREFIX = f"{PREFIX}fax:"
INDEX_PREFIX = f"{PREFIX}ix:"
INDEX_ALL = f"{INDEX_PREFIX}all"
INDEX_DIRECTION_PREFIX = f"{INDEX_PREFIX}dir:"
INDEX_ACCOUNT_PREFIX = f"{INDEX_PREFIX}acct:"
INDEX_STATE_PREFIX = f"{INDEX_PREFIX}state:"
DUE = f"{PREFIX}due"
LEASE_PREFIX = f"{PREFIX}lease:"


def fax_key(fax_id: str) -> str:
    return FAX_PREFIX + fax_id


def direction_index(direction: str) -> str:
    return INDEX_DIRECTION_PREFIX + direction


def account_index(account: str) -> str:
    return INDEX_ACCOUNT_PREFIX + account


def state_index(state: str) -> str:
    return INDEX_STATE_PREFIX + state


def lease_key(fax_id: str) -> str:
    return LEASE_PREFIX + fax_id


# --- dedup and idempotency ----------------------------------------------------------------------
DEDUP_PREFIX = f"{PREFIX}key:"
JOB_TTL = 30 * 86400


def dedup_key(scope: str, key: str) -> str:
    return f"{DEDUP_PREFIX}{scope}:{key}"


def dedup_ref(fax_id: str, fingerprint: str = "") -> str:
    """What a dedup key holds (as the create script writes it)."""
    return json.dumps({"id": fax_id, "fingerprint": fingerprint})


def inbound_scope(account: str) -> str:
    """Received faxes of an account, by provider fax id (or content id)."""
    return f"in:{account}"


def idempotency_scope(account: str) -> str:
    """Sends of an account, by the caller's ``Idempotency-Key``."""
    return f"idem:{account}"


def job_scope(account: str) -> str:
    """Sends of an account, by the provider's job id."""
    return f"job:{account}"


# --- everything else ----------------------------------------------------------------------------
PENDING_STATUS_TTL = 7 * 86400
DELIVERY_PREFIX = f"{PREFIX}delivery:"
DELIVERIES_DUE = f"{PREFIX}deliveries:due"
DELIVERY_TTL = 14 * 86400
WEBHOOK_LOG_PREFIX = f"{PREFIX}wh:"
WEBHOOK_LOG_INDEX = f"{WEBHOOK_LOG_PREFIX}ix"


def pending_status_key(account: str, job_id: str) -> str:
    return f"{PREFIX}pending-status:{account}:{job_id}"


def delivery_key(delivery_id: str) -> str:
    return DELIVERY_PREFIX + delivery_id


def webhook_log_key(log_id: str) -> str:
    return WEBHOOK_LOG_PREFIX + log_id


def reconciled_key(account: str) -> str:
    return f"{PREFIX}reconciled:{account}"
