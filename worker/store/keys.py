"""Every Redis key faxrelay writes, with its lifetime and its cap: the one place to learn what is
in Redis (DESIGN principle 9: every piece of state has a lifetime and a cap).

All of faxrelay's own keys start with ``fr:``. Every module, the Lua scripts of
``worker.store.scripts`` too, builds them with the functions and constants below, so this list is
complete. A key without a TTL says what bounds it instead.

Fax records (``worker.store.records``; written only by its Lua scripts, so a record and its
indexes never disagree)::

    fr:fax:{id}              string  no TTL while live; removed retention_days after final
        The record as JSON: the truth about a fax (DESIGN principle 1), so it never expires
        while the fax can still change. Once final, its public JSON is filed in S3
        (``worker.pipeline.retention``: beside its archive, and by id under
        ``{prefix}records/{YYYY}/{MM}/{DD}/{id}.json``, the date the one in the id), and
        ``record_retention_days`` (default 30) after it became final the retention sweep
        removes it with its index entries, in one script (``worker.store.retention``). The
        API, the CLI and the dashboard answer a removed record from S3. Its ``history`` is
        capped (``records.HISTORY_CAP`` entries: the first and the newest).
    fr:ix:all, fr:ix:dir:{direction}, fr:ix:acct:{account}, fr:ix:state:{state}
                             zset    no TTL
        Listing indexes: record ids, all scored 0 so that they sort by id, which is by creation
        time. A member leaves with its record (the same script); a record is in one state index.
    fr:due                   zset    no TTL
        Record id -> when it next needs work (epoch seconds): the sweeper's queue. An id leaves
        it when its record needs no more work.
    fr:final:unfiled         zset    no TTL
        Final records whose final JSON is not in S3 yet (or is stale: a final record saved
        again comes back here), id -> when it became final. Added by the save script; the
        retention sweep files each and moves it to fr:final. Bounded by the records.
    fr:final                 zset    no TTL
        Final records filed in S3, id -> when they became final. The retention sweep removes
        the records scored before now - retention (bounded batches), so its size is the
        number of faxes finished within the retention window.
    fr:final:upgrade         hash    no TTL
        One field per final state: how far the one-off walk of a store older than the filing
        queue has gone ("~" when done), so that the final records it holds leave too.
    fr:lease:{id}            string  PX lease_seconds (default 15 s)
        The token of the worker working on the record. It lapses by itself when that worker
        dies, so that another can take the sweeper's wake-up within seconds; renewed every
        third of it while the step runs (``pipeline.steps.leased``).
    fr:lock:retain           string  PX RETAIN_LOCK_MS
        Held by the one retention sweep running, so that two beat ticks do not file twice.

Counters kept by the same scripts that move records (so ``/metrics`` and the overview read a
few numbers, never the records)::

    fr:stats                 hash    no TTL
        "{direction}:{state}" -> records in Redis in that state (create +1, a move -1/+1,
        removal -1). Bounded: one field per direction and state. "_built" marks it rebuilt
        from the indexes once (``retention.ensure_stats``: a store older than the counters).
    fr:last-ok               hash    no TTL
        "{account}" -> when (epoch seconds) a fax of the account last reached a state the
        provider completed (archived, submitted, sending, delivered, accepted). One field per
        account.
    fr:day:{day}             hash    EX DAY_STATS_TTL (3 days)
        Records created on UTC day number {day} (epoch days, from the id): "{direction}:
        {state}" -> how many are in that state now; "{account}:finished" and
        "{account}:failed" and "reason:{reason}" -> finals and failures among them.
    fr:hour:{hour}           hash    EX HOUR_STATS_TTL (8 days)
        What happened in UTC hour {hour} (epoch hours), for the overview's charts of the last
        24 hours and 7 days: "{direction}:{state}" -> records that reached that final state
        in the hour; "lat:{i}" -> inbound records archived in the hour whose time from receipt
        to archive fell in bucket i of ARCHIVE_LATENCY_BOUNDS (a fixed histogram, from which
        the overview reads p50 and p99); "err:{account}" -> downloads and submits the account's
        provider answered with an error. Bounded: one field per final state, bucket and
        account, and at most 8 * 24 hashes.

Dedup and idempotency keys, ``fr:key:{scope}:{key}`` -> JSON ``{"id", "fingerprint"}`` naming
a record (``dedup_ref``). The script that creates a record writes its key in the same step, so
that two deliveries of one event make one record::

    fr:key:in:{account}:{provider fax id, or sha256-{digest} for a fax known by its content}
                             no TTL while the record is live; then EXPIREAT
        Providers re-send webhooks, and reconcile lists faxes, for as long as they keep a fax.
        When the record is filed the key gets an expiry: the later of the record's removal
        (final + retention) and receipt + the provider's dedup window
        (``retention.dedup_window_days``: PrimeVox's 30-day expiry; for UCX and voip.ms the
        reconcile look-back plus ``RECONCILE_OVERLAP_DAYS``, beyond which reconcile records
        nothing; at least ``WEBHOOK_RESEND_DAYS``; plus ``DEDUP_MARGIN_DAYS``), so a fax a
        provider can still announce stays a duplicate. A content key claimed while archiving
        (``pipeline.inbound``) has that expiry from the start, counted from the provider copy's
        expiry, in case the record never archives (it then has no sha256 to be found by).
    fr:key:idem:{account}:{Idempotency-Key}
                             EX idempotency_ttl (default 48 h; the setting cannot go below 24 h)
        A send's Idempotency-Key (DESIGN promises at least 24 h).
    fr:key:job:{account}:{provider job id}
                             EX JOB_TTL (30 days); when filed, EXPIREAT the record's removal
        Routes the provider's status webhooks to the send's record; they stop long before.
        Also who owns the job: ``{"id", "adopted"?}`` (``scripts.CLAIM_JOB``), so that a lost
        submit's look-up never takes another send's job (``adopted``: taken by such a look-up,
        and given up to the send whose own submit answer names it).

The raw webhook log (``worker.store.rawlog``), capped by count and bytes per bucket and overall,
at write time by the script that adds an entry::

    fr:wh:{log id}           string  EX webhook_log_days (default 14 days)
        One request to a webhook route, its body kept up to webhook_log_body_bytes (none for an
        unknown account).
    fr:wh:ix                 zset    no TTL; webhook_log_max_entries / _max_bytes
        Every entry, "{log id}|{bucket}|{bytes}" -> arrival time. Over a cap, the oldest
        entries go (with their strings); the sweeper drops those older than webhook_log_days.
    fr:wh:ix:{bucket}        zset    no TTL; the bucket's caps
        The same members per bucket: an account's name for the requests that carried its
        token (webhook_log_account_entries / _account_bytes); "!{account}" for the ones
        refused for a missing or wrong token, "!?" for unknown accounts
        (webhook_log_refused_entries / _refused_bytes each).
    fr:wh:bytes              hash    no TTL
        "{bucket}" -> bytes of the bucket's entries, "*" -> of all: what the byte caps check.
    fr:refusals:{minute}     hash    EX REFUSAL_WINDOW_TTL (2 minutes)
        Refused (unauthenticated) requests in that minute, per bucket ("b:{bucket}") and per
        client address hashed into REFUSAL_ADDRESS_SLOTS slots ("a:{slot}"): beyond
        refusal_limit_per_minute a refusal is answered but not logged. At most
        REFUSAL_ADDRESS_SLOTS + buckets fields, whatever the number of addresses.

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
    fr:submits:{account}:{to}  zset  EX SUBMITS_TTL (1 day); members older than it trimmed
        Sends whose submit to number {to} through the account started, fax id -> when. A lost
        submit's look-up reads it: where the provider lists nothing the sender chose (UCX),
        another send to the same number in the same window that owns no job yet could own
        any unowned job listed, so no job is taken then (``outbound.submit``). A send leaves
        it once submitted (it can be no rival then); the rest (refused, lost) within the day.
        Bounded by the submits in flight to one number, plus a day of those never answered.
    fr:reconciled:{account}  string  no TTL
        When the last reconcile of an account's list API started (ISO 8601). One per configured
        account; losing it only makes the next reconcile look further back.
    fr:backfill:{id}         string  EX BACKFILL_TTL (7 days)
        One backfill started over the API: its range, state and the faxes it recorded (at most
        ``worker.pipeline.backfill.MAX_FAXES``), for its progress (``worker.pipeline.backfill``).
    fr:replicated            string  PX REPLICATION_BARRIER_TTL_MS (1 minute)
        A barrier written just before ``WAIT`` when an acknowledgement must be on the replicas
        (``worker.store.replicas``, FAXRELAY_REDIS_MIN_REPLICAS); one key, overwritten each time.

The acceptor of queue-driven sends (``worker.acceptor``): a message of the public ``celery``
queue is always in one of Redis's lists or in ``fr:accept:later``, each move one command or script::

    fr:accept:{node}:taking  list    no TTL; at most one message
        The message acceptor node {node} is handling, moved here from the queue in one step
        (BLMOVE), so that a crash never loses it; removed once its result is stored. The node
        handles it again when it restarts; another node moves it back onto the queue once the
        node's heartbeat has lapsed (``ACCEPT_TAKE_OVER``).
    fr:accept:{node}:alive   string  EX ACCEPT_ALIVE_TTL (10 s), renewed every few seconds
        The node's heartbeat: "{host}:{pid}:{token}" of the process running it.
    fr:accept:nodes          zset    no TTL
        Node -> its last heartbeat (epoch seconds), so that a live node finds dead nodes'
        lists without a scan. One member per running node; a dead one's leaves when its list
        is taken over.
    fr:accept:later          zset    no TTL
        Messages waiting to be tried again (S3, Redis or the document URL was down) or for
        their ETA, the message -> when it is due; moved back onto the queue when due, and there
        in one script. Bounded by the queue-driven sends of an outage: each leaves within
        ``retry.QUEUED_SEND``'s attempts (about an hour), then fails with a stored reason.

Not faxrelay's, so not built here:

- Celery's keys, named by kombu: one list per queue, named as in ``config.queues`` (the web app
  also LPUSHes wake-ups there itself), and ``unacked``, ``unacked_index``, ``unacked_mutex``,
  ``_kombu.binding.{queue}``. A message is only a wake-up; the records above are the truth
  (except on the public ``celery`` queue, whose messages the acceptor keeps as listed above).
- Celery's results of ``faxrelay.send_fax`` only, ``celery-task-meta-{task id}``: EX
  ``result_expires`` (24 h, ``config.celery_app``), written through the app's result backend.
- Event counters and histograms are prometheus_client's, in process or in its multiprocess
  files (``worker.metrics``); the gauges come from ``fr:stats`` above.
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
FINAL = f"{PREFIX}final"
UNFILED = f"{PREFIX}final:unfiled"
FINAL_UPGRADE = f"{PREFIX}final:upgrade"
RETAIN_LOCK = f"{PREFIX}lock:retain"
RETAIN_LOCK_MS = 120_000

# --- counters ----------------------------------------------------------------------------------
STATS = f"{PREFIX}stats"
LAST_OK = f"{PREFIX}last-ok"
DAY_STATS_PREFIX = f"{PREFIX}day:"
DAY_STATS_TTL = 3 * 86400
HOUR_STATS_PREFIX = f"{PREFIX}hour:"
HOUR_STATS_TTL = 8 * 86400  # the 7-day chart, plus the hours of the day it starts in
# Upper bounds (seconds) of the receipt-to-archive buckets of fr:hour:{hour}: bucket i holds the
# times up to bound i (and above bound i - 1); one more bucket holds the times above the last.
ARCHIVE_LATENCY_BOUNDS = (
    1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 259200,
)  # fmt: skip


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


def day_stats_key(day: int) -> str:
    """The counters of the records created on UTC day ``day`` (days since the epoch)."""
    return f"{DAY_STATS_PREFIX}{day}"


def hour_stats_key(hour: int) -> str:
    """The counters of UTC hour ``hour`` (hours since the epoch)."""
    return f"{HOUR_STATS_PREFIX}{hour}"


def stats_field(direction: str, state: str) -> str:
    return f"{direction}:{state}"


# --- dedup and idempotency ----------------------------------------------------------------------
DEDUP_PREFIX = f"{PREFIX}key:"
JOB_TTL = 30 * 86400
# The inbound dedup window (``worker.pipeline.retention.dedup_window_days``): at least this many
# days from receipt for any provider (webhook re-sends), plus a margin for clocks and time zones.
WEBHOOK_RESEND_DAYS = 7.0
DEDUP_MARGIN_DAYS = 1.0
# Reconcile (UCX, voip.ms) looks this far beyond ``reconcile_lookback_days`` (a day of overlap
# with its previous run), and records no listed fax received before that: the dedup window of a
# listing provider covers exactly this, whatever slack the provider's own listing has.
RECONCILE_OVERLAP_DAYS = 1.0


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
WEBHOOK_LOG_BUCKET_PREFIX = f"{WEBHOOK_LOG_INDEX}:"
WEBHOOK_LOG_BYTES = f"{WEBHOOK_LOG_PREFIX}bytes"
WEBHOOK_LOG_ALL_BYTES = "*"  # the WEBHOOK_LOG_BYTES field of every entry's bytes
UNKNOWN_BUCKET = "!?"  # requests to an account that is not configured
REFUSALS_PREFIX = f"{PREFIX}refusals:"
REFUSAL_WINDOW_TTL = 120
REFUSAL_ADDRESS_SLOTS = 4096


SUBMITS_TTL = 86400


def submits_key(account: str, to: str) -> str:
    return f"{PREFIX}submits:{account}:{to}"


def pending_status_key(account: str, job_id: str) -> str:
    return f"{PREFIX}pending-status:{account}:{job_id}"


def delivery_key(delivery_id: str) -> str:
    return DELIVERY_PREFIX + delivery_id


def webhook_log_key(log_id: str) -> str:
    return WEBHOOK_LOG_PREFIX + log_id


def webhook_log_bucket(bucket: str) -> str:
    """The index of one bucket of the raw log (``refused_bucket`` or an account's name)."""
    return WEBHOOK_LOG_BUCKET_PREFIX + bucket


def refused_bucket(account: str | None) -> str:
    """The log bucket of the requests refused for a missing or wrong token (None: unknown
    account). Account names hold no ``!``, so these never meet an account's own bucket."""
    return UNKNOWN_BUCKET if account is None else f"!{account}"


def refusals_key(minute: int) -> str:
    return f"{REFUSALS_PREFIX}{minute}"


def reconciled_key(account: str) -> str:
    return f"{PREFIX}reconciled:{account}"


BACKFILL_TTL = 7 * 86400
REPLICATION_BARRIER = f"{PREFIX}replicated"
REPLICATION_BARRIER_TTL_MS = 60_000


def backfill_key(job_id: str) -> str:
    return f"{PREFIX}backfill:{job_id}"


# --- the acceptor of queue-driven sends (worker.acceptor) --------------------------------------
ACCEPT_PREFIX = f"{PREFIX}accept:"
ACCEPT_NODES = f"{ACCEPT_PREFIX}nodes"
ACCEPT_LATER = f"{ACCEPT_PREFIX}later"
ACCEPT_ALIVE_TTL = 10  # seconds; the node renews it every ACCEPT_ALIVE_TTL / 4


def accept_taking_key(node: str) -> str:
    return f"{ACCEPT_PREFIX}{node}:taking"


def accept_alive_key(node: str) -> str:
    return f"{ACCEPT_PREFIX}{node}:alive"
