"""Queue-driven sends and ``POST /v1/faxes`` through faults, end to end: the web app, a Celery
worker and beat as real processes; S3 reached through a loopback proxy that the test takes down
and brings back (``tests/faultproxy.py``), as an S3 outage would.

A caller is another service with its own Celery app on the same broker (nothing of faxrelay's
imported), which names that Redis as its result backend.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery

from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.faultproxy import FaultProxy
from tests.system import System, sandbox_fire, wait_for


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, s3_gate: FaultProxy, sandbox_server: Any
) -> Iterator[System]:
    s = System(
        tmp_path_factory.mktemp("faultwindows"),
        f"http://{s3_gate.url_host}",
        sandbox_server.url,
        BUCKET,
    ).start()
    yield s
    s.stop()


def document() -> dict[str, str]:
    pdf = make_pdf(1, label=f"queued {uuid.uuid4().hex}")
    return {"base64": base64.b64encode(pdf).decode()}


def submits(sandbox: Any) -> list[dict[str, Any]]:
    return list(sandbox.requests("ucx", "filesend"))


def test_a_queued_send_answers_its_fax_id_and_its_task_id_is_its_idempotency_key(
    system: System, sandbox: Any, caller: Celery, gate: FaultProxy
) -> None:
    sandbox.control("duration", provider="ucx", seconds=1)
    kwargs = {"account": "ucx", "to": "+1 469 555 0171", "document": document()}
    task_id = f"task-{uuid.uuid4().hex}"
    first = caller.send_task("faxrelay.send_fax", kwargs=kwargs, task_id=task_id)
    fax_id = first.get(timeout=60)
    # The same message delivered again (its worker died before the ack): the same fax.
    again = caller.send_task("faxrelay.send_fax", kwargs=kwargs, task_id=task_id)
    assert again.get(timeout=60) == fax_id

    record = system.wait_state(fax_id, "delivered", timeout=60)
    assert record.idempotency_key == task_id
    assert [s["fields"]["destination"] for s in submits(sandbox)] == ["14695550171"]
    with system.api() as api:
        found = api.get("/v1/faxes", params={"idempotency_key": task_id}).json()
        assert [item["id"] for item in found["items"]] == [fax_id]
        assert found["items"][0]["idempotency_key"] == task_id
        scoped = api.get("/v1/faxes", params={"idempotency_key": task_id, "account": "pv"})
        assert scoped.json()["items"] == []
    # Only this task keeps a result: faxrelay's own tasks (the sweeper runs twice a second,
    # the submit, polls and event deliveries ran) leave none behind.
    results = {r.decode() for r in system.store().redis.scan_iter("celery-task-meta-*")}
    assert f"celery-task-meta-{task_id}" in results
    assert len(results) <= 2  # at most the other test's queued send besides


def test_an_s3_outage_is_a_503_over_http_and_a_retry_on_the_queue(
    system: System, sandbox: Any, caller: Celery, gate: FaultProxy
) -> None:
    sandbox.control("duration", provider="ucx", seconds=1)
    gate.set_down(True)
    with system.api() as api:
        answer = api.post(
            "/v1/faxes", json={"account": "ucx", "to": "14695550172", "document": document()}
        )
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"].isdigit()
        error = answer.json()["error"]
        assert error["code"] == "storage_unavailable" and "S3" in error["message"]
        by_key = api.post(
            "/v1/faxes",
            json={"account": "ucx", "to": "14695550172", "document": {"s3_key": "in/x.pdf"}},
        )
        assert by_key.status_code == 503, by_key.text  # not the caller's 422: S3 is down

    queued = caller.send_task(
        "faxrelay.send_fax",
        kwargs={"account": "ucx", "to": "14695550173", "document": document()},
    )
    wait_for(
        lambda: f"queued send {queued.id}" in system.log_tail(400), 60, "the task's first retry"
    )
    assert queued.state in ("PENDING", "RETRY")  # not failed, not acked as done
    gate.set_down(False)
    fax_id = queued.get(timeout=120)
    system.wait_state(fax_id, "delivered", timeout=60)
    assert [s["fields"]["destination"] for s in submits(sandbox)] == ["14695550173"]


def test_a_fax_received_while_s3_is_down_is_downloaded_once_and_archived_when_it_is_back(
    system: System, sandbox: Any, gate: FaultProxy
) -> None:
    """Attempts during an outage of faxrelay's own S3 ask S3 before they download again, and
    back off on their own short schedule: neither the provider nor its backoff pays for it."""
    gate.set_down(True)
    fax = dict(sandbox.control("inbound", provider="primevox"))
    answer = sandbox_fire(
        sandbox.url, provider="primevox", kind="inbound", url=system.webhook_url("pv"), id=fax["id"]
    )
    assert answer["status"] == 200  # Redis has it: S3 is not needed to acknowledge
    fax_id = answer["headers"]["faxrelay-fax-id"]

    def downloads() -> int:
        return sum(fax["id"] in str(r) for r in sandbox.requests("primevox", "download"))

    wait_for(lambda: system.record(fax_id).attempts.get("storage", 0) >= 4, 60, "4 attempts")
    record = system.record(fax_id)
    assert downloads() == 1  # the first attempt's; the others found S3 still down first
    assert "download" not in record.attempts  # the provider's backoff has not grown
    assert record.state == "fetching" and "S3 is unavailable" in record.history[-1]["note"]

    gate.set_down(False)
    archived = system.wait_state(fax_id, "archived", timeout=60)
    assert archived.sha256 == fax["sha256"]
    assert downloads() == 2
