"""The deployed workers' I/O concurrency, counted at the sandbox (never timed): one archiver process
keeps tens of slow downloads in flight, and a send goes out while every archive slot is held by a
download that hangs. Real processes: the web app, the archiver and the worker at their default
concurrency (``config.workers``, as ``faxrelay up`` runs them), beat, Valkey, SeaweedFS, and the
sandbox over HTTP with its network model (``sandbox.network``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from config.celery_app import ARCHIVER_NICE
from config.workers import ARCHIVER
from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.system import sandbox_fire, wait_for
from tests.workers import DeployedSystem
from worker.store import keys


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, s3_server: str, sandbox_server: Any
) -> Iterator[DeployedSystem]:
    s = DeployedSystem(
        tmp_path_factory.mktemp("concurrency"), s3_server, sandbox_server.url, BUCKET
    )
    s.start()
    yield s
    s.stop()


def network(sandbox: Any) -> dict[str, Any]:
    answer = httpx.get(f"{sandbox.url}/_sandbox/network", timeout=10)
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data


def announce(system: DeployedSystem, sandbox: Any, count: int) -> list[str]:
    """``count`` PrimeVox faxes created in the sandbox and announced to the web app: record ids.

    Eight webhooks at a time: one after the other they took about 0.25 s each on a busy 2-core
    machine, so the first downloads were over before the last were announced."""
    faxes = [sandbox.control("inbound", provider="primevox", pages=1) for _ in range(count)]

    def fire(fax: dict[str, Any]) -> str:
        fired = sandbox_fire(
            sandbox.url,
            provider="primevox",
            kind="inbound",
            url=system.webhook_url("pv"),
            id=fax["id"],
        )
        assert fired["status"] == 200, fired
        return str(fired["headers"]["faxrelay-fax-id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(fire, faxes))


def archived(system: DeployedSystem, ids: list[str]) -> int:
    scores = system.store().redis.zmscore(keys.state_index("archived"), ids)
    return sum(score is not None for score in scores)


def test_one_archiver_keeps_tens_of_slow_downloads_in_flight(
    system: DeployedSystem, sandbox: Any
) -> None:
    """Every provider call takes 5 s: 24 received faxes are downloaded side by side, not 2 or 4
    at a time as the prefork pool did."""
    sandbox.control("network", latency=5.0)
    ids = announce(system, sandbox, 24)
    wait_for(lambda: network(sandbox)["peak"] >= 20, 60, "20 downloads in flight at the sandbox")
    wait_for(lambda: archived(system, ids) == len(ids), 120, "every fax archived")
    assert network(sandbox)["calls"] == len(ids)  # one download each, none started twice


def test_a_send_goes_out_while_every_archive_slot_is_held(
    system: DeployedSystem, sandbox: Any
) -> None:
    """Every archiver thread is stuck in a download that hangs 30 s; a send submitted meanwhile
    reaches the provider before any of them is answered (a single pool over every queue would
    hand it the first slot that frees)."""
    slots = ARCHIVER.concurrency
    sandbox.control(
        "faults", provider="primevox", operation="download", kind="hang", seconds=30, count=slots
    )
    ids = announce(system, sandbox, slots)
    wait_for(lambda: network(sandbox)["in_flight"] >= slots, 60, "every archive slot downloading")
    document = {"base64": base64.b64encode(make_pdf(1)).decode()}
    with system.api() as api:
        answer = api.post(
            "/v1/faxes", json={"account": "ci", "to": "5552220000", "document": document}
        )
    assert answer.status_code == 202, answer.text
    fax = answer.json()["id"]
    system.wait_state(fax, "submitted", "sending", "delivered", timeout=15)
    assert network(sandbox)["in_flight"] >= slots  # the downloads were all still hanging
    assert archived(system, ids) == 0
    wait_for(lambda: archived(system, ids) == len(ids), 120, "every fax archived")


def test_the_archiver_yields_the_cpu_to_the_worker(system: DeployedSystem) -> None:
    """The archiver's CPU work waits behind the worker's (sends, polls) on a shared host."""
    ours = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, system.procs["worker"].pid) == ours
    archiver = os.getpriority(os.PRIO_PROCESS, system.procs[ARCHIVER.name].pid)
    assert archiver == min(19, ours + ARCHIVER_NICE)
