"""Prometheus metrics: the event counters and histograms every process records, and the scrape.

Worker processes (Celery's prefork children) and the web app each record their own events. With
``PROMETHEUS_MULTIPROC_DIR`` set (``faxrelay up`` sets it to ``{state dir}/metrics``), every process
writes its values to files there and the web app's ``/metrics`` adds them up
(prometheus_client's multiprocess mode); without it, ``/metrics`` shows the web process's own
values only. The variable must be set before the process starts (prometheus_client reads it at
import), and the directory should be emptied when the whole system starts. That is
prometheus_client's documented multiprocess mode, used as it is: each recorded value asks for the
process id, so that a forked child (Celery's prefork workers) writes files of its own. (Caching the
id, by swapping prometheus_client's value class, saved nothing measurable: ``Counter.inc()`` takes
about 1.1 µs either way, and the busy path records no value per request, see ``webhook``.)

Gauges that describe the records (archive backlog, faxes at risk, faxes by state) are not recorded
here: the web app reads them from Redis at scrape time and passes them to ``render``, from the
counters the store's scripts keep as they move records (``worker.store.keys.STATS``) and bounded
reads of the backlog (``webhooks.stats``), so a scrape costs the same with a million faxes as
with a hundred.

Recording never raises: a metrics problem must not fail a webhook or a fax.
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

# prometheus_client writes a value's file when the value is created, so the directory has to exist
# before the metric objects below.
if os.environ.get(MULTIPROC_ENV):
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)

from prometheus_client import (  # noqa: E402 - after the directory exists
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.multiprocess import MultiProcessCollector  # noqa: E402
from prometheus_client.registry import REGISTRY, Collector  # noqa: E402

log = logging.getLogger(__name__)
P = ParamSpec("P")

CONTENT_TYPE = CONTENT_TYPE_LATEST
FAST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SLOW = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0)

WEBHOOKS = Counter(
    "faxrelay_webhooks",
    "Provider webhook requests, by account, route and outcome",
    ["account", "route", "outcome"],
)
INGEST_SECONDS = Histogram(
    "faxrelay_webhook_ingest_seconds",
    "Time from a webhook request's arrival to its answer (durable when 2xx)",
    ["route"],
    buckets=FAST,
)
ARCHIVE_SECONDS = Histogram(
    "faxrelay_archive_latency_seconds",
    "Time from a fax's receipt to its PDF stored in the archive",
    buckets=SLOW,
)
ARCHIVE_UPLOADS = Counter(
    "faxrelay_archive_uploads", "PDFs written to the archive, by area and outcome",
    ["area", "outcome"],
)  # fmt: skip
PROVIDER_CALLS = Counter(
    "faxrelay_provider_calls",
    "HTTP calls to provider APIs, by provider, operation and outcome",
    ["provider", "operation", "outcome"],
)
PROVIDER_SECONDS = Histogram(
    "faxrelay_provider_call_seconds",
    "Duration of HTTP calls to provider APIs (until the answer's headers)",
    ["provider", "operation"],
    buckets=(*FAST, 30.0, 60.0),
)
RETRIES = Counter(
    "faxrelay_retries", "Retries scheduled, by step and kind of failure", ["step", "kind"]
)
SWEEPS = Counter("faxrelay_sweeps", "Sweeper runs")
SWEEP_WAKEUPS = Counter(
    "faxrelay_sweeper_wakeups", "Wake-ups the sweeper sent, by what it woke", ["kind"]
)
EVENT_DELIVERIES = Counter(
    "faxrelay_event_deliveries", "Event delivery attempts, by outcome", ["outcome"]
)
REFUSALS_UNLOGGED = Counter(
    "faxrelay_webhook_refusals_unlogged",
    "Refused webhook requests over the refusal rate limits: answered, not logged",
    ["refusal"],
)
RETENTION = Counter(
    "faxrelay_retention",
    "Final records filed in S3 and removed from Redis after the retention window",
    ["action"],
)
OPERATOR_ACTIONS = Counter(
    "faxrelay_operator_actions",
    "Dashboard actions (retry, cancel, replay), by outcome",
    ["action", "outcome"],
)


def _safe(record: Callable[P, None]) -> Callable[P, None]:
    def wrapped(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            record(*args, **kwargs)
        except Exception:  # a full disk under the multiprocess dir must not fail a fax
            log.debug("metrics: could not record %s", record.__name__, exc_info=True)

    wrapped.__name__ = record.__name__
    wrapped.__doc__ = record.__doc__
    return wrapped


# --- recording -------------------------------------------------------------------------------------


# Webhooks are the one event counted per request on a busy path: three writes to the shared
# metric files per webhook (count, latency bucket, latency sum) cost as much as its log entry. They
# are added up here instead, and written by ``flush_webhooks`` (the web app calls it every second
# and before each scrape). Only the event loop's thread touches these.
#
# Writing a latency tally needs prometheus_client's private ``_buckets`` and ``_sum`` of a
# histogram child: its public ``observe()`` takes one value at a time, and calling it once per
# webhook costs 2.2 µs each in multiprocess mode (200,000 calls in a loop, prometheus_client 0.26),
# against about 140 µs of web-process CPU per webhook in ``python -m bench.ingest``: 1.5 % of the
# ingest path, for nothing. Hence the pinned prometheus-client range (pyproject.toml) and the
# contract test (tests/test_metrics.py), which fails if a version lays a histogram out otherwise.
_webhook_counts: dict[tuple[str, str, str], int] = {}
_webhook_latency: dict[str, list[float]] = {}  # route → count per INGEST_SECONDS bucket, then sum
_INGEST_BOUNDS = (*FAST, float("inf"))  # the histogram's buckets, +Inf included
FLUSH_SECONDS = 1.0


def _forget_pending() -> None:
    # A forked child would otherwise write its parent's pending counts a second time.
    _webhook_counts.clear()
    _webhook_latency.clear()


os.register_at_fork(after_in_child=_forget_pending)


def webhook(account: str, route: str, outcome: str, seconds: float) -> None:
    """One provider webhook request answered (``outcome``: accepted, duplicate, bad_token …).

    Counted in this process until the next ``flush_webhooks``."""
    key = (account, route, outcome)
    _webhook_counts[key] = _webhook_counts.get(key, 0) + 1
    tally = _webhook_latency.get(route)
    if tally is None:
        tally = _webhook_latency[route] = [0.0] * (len(_INGEST_BOUNDS) + 1)
    seconds = max(seconds, 0.0)
    tally[bisect.bisect_left(_INGEST_BOUNDS, seconds)] += 1  # the bucket observe() would pick
    tally[-1] += seconds


@_safe
def flush_webhooks() -> None:
    """Write the webhooks counted since the last flush to the metrics."""
    global _webhook_counts, _webhook_latency
    counts, _webhook_counts = _webhook_counts, {}
    latency, _webhook_latency = _webhook_latency, {}
    for key, count in counts.items():
        WEBHOOKS.labels(*key).inc(count)
    for route, tally in latency.items():
        # observe() adds 1 to one bucket and the value to the sum; this adds a whole tally.
        # (prometheus_client keeps the buckets' values in ``_buckets``, the sum in ``_sum``.)
        child = INGEST_SECONDS.labels(route)
        for bucket, observed in zip(child._buckets, tally[:-1], strict=True):
            if observed:
                bucket.inc(observed)
        child._sum.inc(tally[-1])


@_safe
def provider_call(provider: str, operation: str, outcome: str, seconds: float) -> None:
    """One HTTP call to a provider (``outcome``: ok, http_4xx, http_5xx, transport_error,
    outcome_unknown)."""
    PROVIDER_CALLS.labels(provider, operation, outcome).inc()
    PROVIDER_SECONDS.labels(provider, operation).observe(max(seconds, 0.0))


@_safe
def archived(area: str, uploaded: bool, since_receipt: float | None) -> None:
    """A PDF stored under ``area`` (inbound, quarantine …); the latency for received faxes."""
    ARCHIVE_UPLOADS.labels(area, "uploaded" if uploaded else "already_there").inc()
    if since_receipt is not None:
        ARCHIVE_SECONDS.observe(max(since_receipt, 0.0))


@_safe
def retry(step: str, kind: str) -> None:
    """A retry scheduled (``step``: download, submit, redial, event, operator)."""
    RETRIES.labels(step, kind).inc()


@_safe
def sweep(records: int, deliveries: int) -> None:
    SWEEPS.inc()
    if records:
        SWEEP_WAKEUPS.labels("record").inc(records)
    if deliveries:
        SWEEP_WAKEUPS.labels("delivery").inc(deliveries)


@_safe
def event_delivery(outcome: str) -> None:
    EVENT_DELIVERIES.labels(outcome).inc()


@_safe
def refusal_unlogged(refusal: str) -> None:
    """A refused request over the refusal rate limits (``refusal``: unknown_account,
    bad_token …): answered, but not logged."""
    REFUSALS_UNLOGGED.labels(refusal).inc()


@_safe
def retention(filed: int, removed: int) -> None:
    """Final records filed in S3, and records removed from Redis past their retention."""
    if filed:
        RETENTION.labels("filed").inc(filed)
    if removed:
        RETENTION.labels("removed").inc(removed)


@_safe
def operator_action(action: str, outcome: str) -> None:
    OPERATOR_ACTIONS.labels(action, outcome).inc()


def http_outcome(status: int) -> str:
    return "ok" if status < 400 else f"http_{status // 100}xx"


# --- scraping --------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """Gauges computed from Redis at scrape time."""

    backlog: int = 0
    at_risk: int = 0
    by_state: dict[tuple[str, str], int] = field(default_factory=dict)  # (direction, state)
    oldest_backlog_seconds: float = 0.0


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        return list(self._families())

    def _families(self) -> Iterator[Metric]:
        s = self.snapshot
        yield GaugeMetricFamily(
            "faxrelay_archive_backlog", "Received faxes not archived or failed yet", s.backlog
        )
        yield GaugeMetricFamily(
            "faxrelay_archive_backlog_oldest_seconds",
            "Age of the oldest received fax not archived yet",
            s.oldest_backlog_seconds,
        )
        yield GaugeMetricFamily(
            "faxrelay_faxes_at_risk",
            "Received faxes not archived whose provider copy expires within the risk margin",
            s.at_risk,
        )
        states = GaugeMetricFamily(
            "faxrelay_faxes", "Fax records by direction and state", labels=["direction", "state"]
        )
        for (direction, state), count in sorted(s.by_state.items()):
            states.add_metric([direction, state], count)
        yield states


def multiprocess_dir() -> str:
    return os.environ.get(MULTIPROC_ENV, "")


def render(snapshot: Snapshot) -> bytes:
    """The exposition text: every process's counters and histograms, and ``snapshot``.

    Reads the multiprocess directory (blocking file I/O): call it in a thread from async code.
    """
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry.register(_Forward(REGISTRY))
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)


class _Forward(Collector):
    """This process's default registry (single-process mode)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return list(self.source.collect())


def prepare_multiproc_dir(path: Path) -> str:
    """Empty (or create) ``path`` for a fresh system start and return it, for
    ``PROMETHEUS_MULTIPROC_DIR``: counters restart from zero with the processes that write them."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
