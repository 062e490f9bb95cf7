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
        os._exit(0)
    os.waitpid(pid, 0)
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
