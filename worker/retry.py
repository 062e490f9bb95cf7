"""Retry rules as data: which failures retry, with what backoff, and what happens when they run out.

Each pipeline step names its rule; ``next_delay`` gives the wait before attempt ``n`` (1-based) with
full jitter, so a provider outage does not make every worker come back at the same moment.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    first: float  # seconds before the second attempt
    cap: float  # longest wait
    factor: float = 2.0
    jitter: float = 0.2  # ± fraction

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Wait after the ``attempt``-th failure (1-based)."""
        base = min(self.cap, self.first * self.factor ** max(0, attempt - 1))
        spread = base * self.jitter
        return max(0.0, base + (rng or random).uniform(-spread, spread))


@dataclass(frozen=True)
class RetryRule:
    """What a step does on failure.

    ``retry_on``: error kinds that retry (ErrorKind values, plus "timeout"/"truncated"…).
    ``max_attempts``: attempts before giving up (None: until ``deadline`` — the record's expiry).
    ``on_exhausted``: the reason the record fails with when retries run out.
    """

    backoff: Backoff
    retry_on: frozenset[str]
    max_attempts: int | None
    on_exhausted: str


# Downloading a received fax: keep trying while the provider still has the file.
ARCHIVE = RetryRule(
    backoff=Backoff(first=30.0, cap=3600.0),
    retry_on=frozenset({"transient", "auth", "truncated"}),
    max_attempts=None,  # bounded by the record's expires_at
    on_exhausted="expired",
)
# A 404 for the file: the provider may be slow to publish it; a few tries, then give up.
ARCHIVE_NOT_FOUND = RetryRule(
    backoff=Backoff(first=30.0, cap=600.0),
    retry_on=frozenset({"not_found"}),
    max_attempts=4,
    on_exhausted="not_found",
)
# Submitting an outbound fax: transient errors before the request left.
SUBMIT = RetryRule(
    backoff=Backoff(first=15.0, cap=900.0),
    retry_on=frozenset({"transient"}),
    max_attempts=8,
    on_exhausted="provider_error",
)
# Delivering an event to a subscriber or callback_url.
EVENT = RetryRule(
    backoff=Backoff(first=10.0, cap=3600.0),
    retry_on=frozenset({"transient"}),
    max_attempts=12,
    on_exhausted="undeliverable",
)
