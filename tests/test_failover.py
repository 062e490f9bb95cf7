"""Redis Sentinel: faxrelay follows a failover by itself and, with FAXRELAY_REDIS_MIN_REPLICAS=1,
loses nothing it acknowledged (README "Deploying", DESIGN.md principle 2).

Real servers on loopback: a Valkey primary, a replica and three sentinels (``tests.sentinel``),
SeaweedFS, the sandbox, and faxrelay's web app, worker and beat configured with the sentinels only.
The scenario is ``tests.failover_scenario``'s; ``bench/failover.py`` runs it longer, with
MIN_REPLICAS=0 beside it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import failover_scenario
from tests.conftest import BUCKET
from tests.sentinel import SentinelCluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[SentinelCluster]:
    with open(tmp_path / "cluster.log", "a") as log:
        running = SentinelCluster(tmp_path / "cluster", log).start()
        try:
            yield running
        finally:
            running.stop()


@pytest.mark.timeout(240)
def test_a_failover_loses_nothing_acknowledged_with_min_replicas(
    tmp_path: Path, cluster: SentinelCluster, s3_server: str, sandbox: Any
) -> None:
    sandbox.control("duration", provider="callerip", seconds=1.0)
    system = failover_scenario.start_system(
        tmp_path / "system",
        cluster,
        s3_endpoint=s3_server,
        sandbox_url=sandbox.url,
        bucket=BUCKET,
        min_replicas=1,
    )
    try:
        ready = httpx.get(f"{system.web_url}/readyz", timeout=10).json()
        assert ready["checks"]["replicas"] == "ok", ready
        outcome = failover_scenario.run(
            system, cluster, before=8, after=6, restart_as_replica=True, log=system._log
        )
        # Between the failover and the old primary's return as a replica, nothing could be on
        # a replica: a send was refused rather than acknowledged.
        assert outcome.refused_not_replicated, outcome.summary()
        assert outcome.webhooks >= 8 and outcome.sends >= 1, outcome.summary()
        assert outcome.lost == 0, outcome.summary()
        assert not outcome.not_archived and not outcome.not_submitted, (
            f"{outcome.summary()}\n{system.log_tail(80)}"
        )
        assert not outcome.submitted_twice, outcome.summary()
    finally:
        system.stop()
