"""worker/metrics.py in multiprocess mode: each process, forked ones too, records in its own file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import os
    from worker import metrics

    metrics.webhook("acct", "inbound", "accepted", 0.01)
    pid = os.fork()
    if pid == 0:
        metrics.webhook("acct", "inbound", "accepted", 0.01)
        metrics.webhook("acct", "inbound", "accepted", 0.01)
        metrics.flush_webhooks()
        os._exit(0)
    os.waitpid(pid, 0)
    metrics.flush_webhooks()
    print(os.getpid(), pid)
    """
)


def test_a_forked_child_records_in_its_own_file_and_scrape_sums_both(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    parent, child = done.stdout.split()
    files = {p.name for p in tmp_path.iterdir()}
    assert f"counter_{parent}.db" in files
    assert f"counter_{child}.db" in files
    scrape = subprocess.run(
        [sys.executable, "-c", "from worker import metrics; print(metrics.render(metrics.Snapshot()).decode())"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    line = next(x for x in scrape.splitlines() if x.startswith("faxrelay_webhooks_total{"))
    assert float(line.rsplit(" ", 1)[1]) == 3.0


def _scrape_value(scrape: str, prefix: str) -> float:
    line = next(x for x in scrape.splitlines() if x.startswith(prefix))
    return float(line.rsplit(" ", 1)[1])


def test_webhook_latencies_land_in_the_buckets_observe_would_pick() -> None:
    from worker import metrics

    def scrape() -> str:
        return metrics.render(metrics.Snapshot()).decode()

    bucket = 'faxrelay_webhook_ingest_seconds_bucket{le="%s",route="bucket-test"}'
    labels = ("0.005", "0.01", "0.25", "5.0", "+Inf")
    # A bound counts as inside its bucket (le = "less or equal"), as in Histogram.observe.
    latencies = [0.001, 0.004, 0.005, 0.0051, 0.2, 3.0, 20.0, -1.0]
    for seconds in latencies:
        metrics.webhook("acct", "bucket-test", "accepted", seconds)
    assert "bucket-test" not in scrape()  # counted in process until the flush
    metrics.flush_webhooks()
    after = scrape()
    got = [_scrape_value(after, bucket % le) for le in labels]
    assert got == [4.0, 5.0, 6.0, 7.0, 8.0]  # cumulative; the negative one counts as 0
    assert _scrape_value(after, 'faxrelay_webhook_ingest_seconds_sum{route="bucket-test"}') == (
        sum(s for s in latencies if s > 0)
    )
    counted = 'faxrelay_webhooks_total{account="acct",outcome="accepted",route="bucket-test"}'
    assert _scrape_value(after, counted) == len(latencies)


def test_the_histogram_layout_flush_webhooks_writes_into() -> None:
    """``flush_webhooks`` adds whole tallies to prometheus_client's private ``_buckets`` (one value
    per bound, +Inf last, not cumulative) and ``_sum`` of a histogram child: the pinned
    prometheus-client range has them; a version without them fails here, not in production."""
    from prometheus_client import CollectorRegistry, Histogram

    registry = CollectorRegistry()
    histogram = Histogram("layout_probe_seconds", "probe", ["route"], buckets=(0.1, 1.0), registry=registry)  # fmt: skip
    child = histogram.labels("r")
    assert len(child._buckets) == 3  # 0.1, 1.0 and +Inf
    child._buckets[1].inc(4)  # four observations in (0.1, 1.0]
    child._buckets[2].inc(1)  # one above 1.0
    child._sum.inc(7.5)
    samples = {
        (s.name, s.labels.get("le")): s.value
        for family in registry.collect()
        for s in family.samples
    }
    assert samples[("layout_probe_seconds_bucket", "0.1")] == 0
    assert samples[("layout_probe_seconds_bucket", "1.0")] == 4
    assert samples[("layout_probe_seconds_bucket", "+Inf")] == 5
    assert samples[("layout_probe_seconds_count", None)] == 5
    assert samples[("layout_probe_seconds_sum", None)] == 7.5
