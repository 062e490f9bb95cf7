"""Retry rules as data: which failures retry, with what backoff, and what happens when they run out.

Each pipeline step names its rule. ``Backoff.delay(n)`` is the wait after the ``n``-th failed
attempt (1-based): exponential from ``first``, capped at ``cap``, then spread by ± ``jitter`` (a
fraction of it, uniformly), so a provider outage does not bring every worker back at the same
moment. Callers multiply it by ``retry_scale`` (shortened in tests).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from worker.providers.base import ErrorKind


@dataclass(frozen=True)
class Backoff:
    first: float  # seconds after the first failure (before the second attempt)
    cap: float  # longest wait, before jitter
    factor: float = 2.0  # each further failure multiplies the wait by this
    jitter: float = 0.2  # ± this fraction of the wait, uniformly

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Wait after the ``attempt``-th failure (1-based): ``first * factor ** (attempt - 1)``,
        at most ``cap``, ± ``jitter`` of it; never negative."""
        base = min(self.cap, self.first * self.factor ** max(0, attempt - 1))
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))


@dataclass(frozen=True)
class RetryRule:
    """What a step does on failure.

    ``retry_on``: the provider error kinds that retry under this rule (others fail at once).
    ``max_attempts``: attempts in all, the first included, before giving up (None: until the
    record's deadline, e.g. an inbound record's ``expires_at``).
    ``on_exhausted``: the reason the record fails with when retries run out.
    ``counted_apart``: its failures back off by their own count and leave the step's attempt count
    alone (an outage of faxrelay's own storage says nothing about the provider).
    """

    backoff: Backoff
    retry_on: frozenset[ErrorKind]
    max_attempts: int | None
    on_exhausted: str
    counted_apart: bool = False


# Downloading a received fax: keep trying while the provider still has the file. A download
# that broke off or came short is a transient error; unforeseen errors (a bug) follow this rule
# too.
ARCHIVE = RetryRule(
    backoff=Backoff(first=30.0, cap=3600.0),
    retry_on=frozenset({ErrorKind.TRANSIENT, ErrorKind.AUTH}),
    max_attempts=None,  # bounded by the record's expires_at
    on_exhausted="expired",
)
# Archiving a received fax while faxrelay's own S3 is down (``worker.outage``): a short cap, so
# that faxes resume within a minute of S3's return rather than after the provider backoff that
# the outage would otherwise have grown; the attempts ask S3 before downloading again, so the
# provider is not asked for the file once per retry (``pipeline.inbound``).
ARCHIVE_STORAGE = RetryRule(
    backoff=Backoff(first=5.0, cap=60.0),
    retry_on=frozenset({ErrorKind.TRANSIENT}),
    max_attempts=None,  # bounded by the record's expires_at
    on_exhausted="expired",
    counted_apart=True,
)
# The file is not found: the provider may be slow to publish it, so a few tries, then give up.
# A not-found is a permanent error by kind (NotFoundError); the inbound step picks this rule for
# it, and for any HTTP 404, before it looks at ``ARCHIVE``.
ARCHIVE_NOT_FOUND = RetryRule(
    backoff=Backoff(first=30.0, cap=600.0),
    retry_on=frozenset({ErrorKind.PERMANENT}),
    max_attempts=4,
    on_exhausted="not_found",
)
# Submitting an outbound fax: errors before the request left (nothing was taken). A refused
# login is retried too: credentials may be rotated while the fax waits.
SUBMIT = RetryRule(
    backoff=Backoff(first=15.0, cap=900.0),
    retry_on=frozenset({ErrorKind.TRANSIENT, ErrorKind.AUTH}),
    max_attempts=8,
    on_exhausted="provider_error",
)
# Delivering an event to a subscriber or callback_url: a connection error, a timeout, a non-2xx
# answer or a local failure counts as transient; a refused URL gives up at once.
EVENT = RetryRule(
    backoff=Backoff(first=10.0, cap=3600.0),
    retry_on=frozenset({ErrorKind.TRANSIENT}),
    max_attempts=12,
    on_exhausted="undeliverable",
)
# A queue-driven send (``faxrelay.send_fax``) whose S3 or Redis is unreachable, or whose document
# URL cannot be fetched for now: nothing is recorded yet, so the sweeper cannot retry it; the
# acceptor keeps the message in ``fr:accept:later`` until its next attempt (``worker.acceptor``;
# a Celery worker's task retries itself). 60 attempts at the cap ride out an outage of about an
# hour, then the send fails loudly (logged at ERROR, the caller's ``.get()`` raises).
QUEUED_SEND = RetryRule(
    backoff=Backoff(first=2.0, cap=60.0),
    retry_on=frozenset({ErrorKind.TRANSIENT}),
    max_attempts=60,
    on_exhausted="storage_unavailable",
)
# Clean-up a final record owes (deleting the staged copy of a PDF, the provider's copy after
# archiving): kept in the record and retried by the sweeper; after this many failures it is
# given up with a note in the record's history (an orphaned copy is never a lost fax).
CLEAN_UP = RetryRule(
    backoff=Backoff(first=30.0, cap=3600.0),
    retry_on=frozenset({ErrorKind.TRANSIENT, ErrorKind.AUTH}),
    max_attempts=10,
    on_exhausted="clean_up_failed",
)
# A step that keeps ending without a verdict (its worker killed, or over its Celery time limit,
# e.g. a parse or download that never ends): after this many runs in a row the fax fails with
# ``time_limit`` instead of being woken for ever.
INTERRUPTED = RetryRule(
    backoff=Backoff(first=5.0, cap=300.0),
    retry_on=frozenset({ErrorKind.TRANSIENT}),
    max_attempts=5,
    on_exhausted="time_limit",
)
