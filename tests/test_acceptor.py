"""The acceptor of queue-driven sends (``worker.acceptor``), end to end: the deployed processes
(``tests.workers.DeployedSystem``: the worker, the archiver and the acceptor as ``faxrelay up``
runs them, the web app and beat), S3 behind a loopback proxy that the test takes down, and a
caller that is another service: its own Celery app on the same broker, naming that Redis as its
result backend, publishing ``send_task("faxrelay.send_fax", ...)``.

What the acceptor promises: a published message is never lost (a SIGKILL while it holds one, an
S3 outage, a dead node), never makes a second fax, and ends as a result the caller can read.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from celery.result import AsyncResult

from config.embedded import ManagedProcess
from config.workers import ACCEPTOR, worker_argv
from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.faultproxy import FaultProxy
from tests.sentinel import SentinelCluster
from tests.system import ROOT, accounts_toml, wait_for
from tests.workers import DeployedSystem
from worker.acceptor import queue_lists, take_over_node
from worker.store import keys
from worker.store.records import FaxStore

NODE = f"acceptor@{socket.gethostname()}"  # tests.workers starts it as acceptor@%h


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, s3_gate: FaultProxy, sandbox_server: Any
) -> Iterator[DeployedSystem]:
    s = DeployedSystem(
        tmp_path_factory.mktemp("acceptor"),
        f"http://{s3_gate.url_host}",
        sandbox_server.url,
        BUCKET,
        concurrency={"worker": 4, "archiver": 2},
    )
    s.start()
    yield s
    s.stop()


@pytest.fixture
def client(system: DeployedSystem) -> Iterator[redis.Redis]:
    if "acceptor" not in system.procs or not system.procs["acceptor"].alive():
        system.start_kind(ACCEPTOR)  # a test that failed half-way left it stopped
    connection = redis.Redis.from_url(system.redis_url)
    yield connection
    connection.close()


class DocumentServer:
    """A document URL on loopback: answers the PDF, or, while ``holding``, takes the request and
    answers nothing (a hung server) until ``release()``."""

    def __init__(self, pdf: bytes) -> None:
        self.holding = False
        self.requests = 0
        self.arrived = threading.Event()
        self._released = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                server.arrived.set()
                if server.holding:
                    server._released.wait(60)
                    return  # the connection is closed without an answer
                self.send_response(200)
                self.send_header("content-type", "application/pdf")
                self.send_header("content-length", str(len(pdf)))
                self.end_headers()
                self.wfile.write(pdf)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/document.pdf"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.holding = False
        self._released.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def document() -> dict[str, str]:
    pdf = make_pdf(1, label=f"queued {uuid.uuid4().hex}")
    return {"base64": base64.b64encode(pdf).decode()}


def submits_to(sandbox: Any, number: str) -> int:
    return sum(
        1 for s in sandbox.requests("ucx", "filesend") if s["fields"]["destination"] == number
    )


def held(client: redis.Redis, task_id: str) -> list[str]:
    """Where the message of ``task_id`` is: the queue's lists, the acceptor's processing list,
    its retries."""
    found = []
    for name in (*queue_lists(), keys.accept_taking_key(NODE)):
        if any(task_id.encode() in m for m in client.lrange(name, 0, -1)):
            found.append(name)
    if any(task_id.encode() in m for m in client.zrange(keys.ACCEPT_LATER, 0, -1)):
        found.append(keys.ACCEPT_LATER)
    return found


def one_record(system: DeployedSystem, task_id: str) -> str:
    """The id of the one record whose idempotency key is ``task_id`` (the default key)."""
    with system.api() as api:
        items = api.get("/v1/faxes", params={"idempotency_key": task_id}).json()["items"]
    assert len(items) == 1, items
    return str(items[0]["id"])


def test_a_published_send_is_accepted_once_and_its_result_is_readable(
    system: DeployedSystem, sandbox: Any, caller: Celery, client: redis.Redis, gate: FaultProxy
) -> None:
    sandbox.control("duration", provider="ucx", seconds=1)
    kwargs = {"account": "ucx", "to": "+1 469 555 0181", "document": document()}
    first = caller.send_task("faxrelay.send_fax", kwargs=kwargs)
    fax_id = first.get(timeout=60)
    assert one_record(system, first.id) == fax_id
    # The same message again (a publisher's retry): the same fax, no second record.
    again = caller.send_task("faxrelay.send_fax", kwargs=kwargs, task_id=first.id)
    assert again.get(timeout=60) == fax_id
    # kombu keeps messages of another priority on lists of their own; and one with an ETA waits.
    urgent = caller.send_task(
        "faxrelay.send_fax",
        kwargs={"account": "ucx", "to": "+1 469 555 0182", "document": document()},
        priority=5,
    )
    before = time.time()
    later = caller.send_task(
        "faxrelay.send_fax",
        kwargs={"account": "ucx", "to": "+1 469 555 0183", "document": document()},
        countdown=1,
    )
    assert urgent.get(timeout=60) != fax_id
    later.get(timeout=60)
    assert time.time() - before >= 1.0  # not before its ETA

    system.wait_state(fax_id, "delivered", timeout=60)
    assert submits_to(sandbox, "14695550181") == 1
    # Kept for the caller for a day (config/celery_app.py), and nothing left in the acceptor.
    ttl = client.ttl(f"celery-task-meta-{first.id}")
    assert 23 * 3600 < ttl <= 24 * 3600
    assert held(client, first.id) == [] and held(client, later.id) == []


def test_an_acceptor_killed_holding_a_message_sends_it_once_after_its_restart(
    system: DeployedSystem, sandbox: Any, caller: Celery, client: redis.Redis, gate: FaultProxy
) -> None:
    sandbox.control("duration", provider="ucx", seconds=1)
    server = DocumentServer(make_pdf(1, label=f"held {uuid.uuid4().hex}"))
    try:
        server.holding = True
        result = caller.send_task(
            "faxrelay.send_fax",
            kwargs={"account": "ucx", "to": "+1 469 555 0184", "document": {"url": server.url}},
        )
        wait_for(server.arrived.is_set, 30, "the acceptor fetching the document")
        assert held(client, result.id) == [keys.accept_taking_key(NODE)]
        proc = system.procs.pop("acceptor")
        proc.signal(signal.SIGKILL)
        assert proc.process is not None
        proc.process.wait(10)
        # The message outlived its consumer: still in the node's processing list.
        assert held(client, result.id) == [keys.accept_taking_key(NODE)]
        assert result.state == "PENDING"

        server.release()
        system.start_kind(ACCEPTOR)  # as a supervisor restarts it: the same node name
        fax_id = result.get(timeout=60)
        assert one_record(system, result.id) == fax_id
        system.wait_state(fax_id, "delivered", timeout=60)
        assert submits_to(sandbox, "14695550184") == 1
        assert server.requests == 2  # fetched again by the restarted node
        assert held(client, result.id) == []
    finally:
        server.close()


def test_an_s3_outage_keeps_the_message_until_s3_is_back(
    system: DeployedSystem, sandbox: Any, caller: Celery, client: redis.Redis, gate: FaultProxy
) -> None:
    sandbox.control("duration", provider="ucx", seconds=1)
    gate.set_down(True)
    result = caller.send_task(
        "faxrelay.send_fax",
        kwargs={"account": "ucx", "to": "+1 469 555 0185", "document": document()},
    )
    wait_for(lambda: result.state == "RETRY", 60, "a retry stored for the caller")
    assert held(client, result.id) != []  # waiting for its retry (or being tried), never gone
    with system.api() as api:
        found = api.get("/v1/faxes", params={"idempotency_key": result.id}).json()["items"]
        assert found == []
    gate.set_down(False)
    fax_id = result.get(timeout=120)
    assert one_record(system, result.id) == fax_id
    system.wait_state(fax_id, "delivered", timeout=60)
    assert submits_to(sandbox, "14695550185") == 1
    assert held(client, result.id) == []


def test_a_refused_send_and_a_stranger_task_are_failures_with_their_reasons(
    system: DeployedSystem, caller: Celery, client: redis.Redis, gate: FaultProxy
) -> None:
    refused = caller.send_task(
        "faxrelay.send_fax", kwargs={"account": "ucx", "to": "12", "document": document()}
    )
    with pytest.raises(Exception, match="422 bad_destination") as raised:
        refused.get(timeout=60)
    assert type(raised.value).__name__ == "SendRefused"
    assert refused.state == "FAILURE"

    # Not faxrelay's task: a failure saying so, as a Celery worker stores for an unregistered one.
    stranger = caller.send_task("billing.charge", args=[42])
    with pytest.raises(Exception, match=r"billing\.charge"):
        stranger.get(timeout=60)
    assert stranger.state == "FAILURE"

    # A message that cannot be read is dropped (logged) and does not hold up the ones after it.
    client.lpush("celery", b"this is not a message")
    after = caller.send_task(
        "faxrelay.send_fax",
        kwargs={"account": "ucx", "to": "+1 469 555 0186", "document": document()},
    )
    assert after.get(timeout=60)
    wait_for(
        lambda: "dropped a message: not a JSON message envelope" in system.log_tail(400),
        10,
        "the dropped message in the acceptor's log",
    )
    for task_id in (refused.id, stranger.id, after.id):
        assert held(client, task_id) == []
    assert all(client.llen(name) == 0 for name in (*queue_lists(), keys.accept_taking_key(NODE)))


def test_a_dead_nodes_processing_list_is_taken_over(
    system: DeployedSystem, caller: Celery, client: redis.Redis, gate: FaultProxy
) -> None:
    system.procs.pop("acceptor").stop()  # nobody consumes while the scene is set
    result = caller.send_task(
        "faxrelay.send_fax",
        kwargs={"account": "ucx", "to": "+1 469 555 0187", "document": document()},
    )
    ghost = "acceptor@a-host-that-died"
    ghost_list = keys.accept_taking_key(ghost)
    # What that node's BLMOVE did before it died: the message is in its processing list.
    assert client.lmove("celery", ghost_list, "RIGHT", "LEFT") is not None
    client.zadd(keys.ACCEPT_NODES, {ghost: time.time()})
    client.set(keys.accept_alive_key(ghost), "a-host-that-died:1:x", ex=60)
    assert take_over_node(client, ghost) == -1  # alive: its message is its own
    assert client.llen(ghost_list) == 1

    client.delete(keys.accept_alive_key(ghost))  # its heartbeat lapsed
    system.start_kind(ACCEPTOR)
    fax_id = result.get(timeout=60)
    assert one_record(system, result.id) == fax_id
    assert not client.exists(ghost_list)
    assert client.zscore(keys.ACCEPT_NODES, ghost) is None
    assert client.zscore(keys.ACCEPT_NODES, NODE) is not None
    assert AsyncResult(result.id, app=caller).state == "SUCCESS"


@pytest.mark.timeout(180)
def test_the_acceptor_follows_a_sentinel_failover(
    tmp_path: Path, s3_server: str, sandbox_server: Any
) -> None:
    """Configured with the sentinels only (config/connect.py), as compose.ha.yaml runs it: a
    send before and one after the primary dies are both accepted, with their results."""
    with open(tmp_path / "system.log", "a") as sink:
        cluster = SentinelCluster(tmp_path / "cluster", sink).start()
        config = tmp_path / "faxrelay.toml"
        config.write_text(accounts_toml(sandbox_server.url))
        env = {
            **os.environ,
            **cluster.settings_env(0),
            "FAXRELAY_CONFIG": str(config),
            "FAXRELAY_S3_ENDPOINT_URL": s3_server,
            "FAXRELAY_S3_BUCKET": BUCKET,
            "FAXRELAY_RETRY_SCALE": "0.02",
            "PYTHONPATH": str(ROOT),
        }
        proc = ManagedProcess(
            "acceptor", worker_argv(ACCEPTOR, "acceptor@%h"), sink=sink, env=env, cwd=str(ROOT)
        )
        try:
            proc.start()

            def send(to: str) -> str:
                url = cluster.url()  # the primary now, as another service's Sentinel setup finds
                caller = Celery("other-service", broker=url, backend=url)
                try:
                    result = caller.send_task(
                        "faxrelay.send_fax",
                        kwargs={"account": "ucx", "to": to, "document": document()},
                    )
                    return str(result.get(timeout=60))
                finally:
                    caller.close()

            before = send("+1 469 555 0188")
            old = cluster.primary()
            cluster.kill(old)
            cluster.wait_failover(old.port, 30)
            after = send("+1 469 555 0189")
            store = FaxStore.from_url(cluster.url())
            assert store.get(before).to_number == "14695550188"
            assert store.get(after).to_number == "14695550189"
            assert proc.alive()
        finally:
            proc.stop()
            cluster.stop()
