"""Retention against the whole system (web app, worker, beat, Valkey, SeaweedFS, the sandbox),
with a retention of seconds (``FAXRELAY_RECORD_RETENTION_SECONDS``, the tests' and benchmarks'
setting): a final record's JSON goes to S3 beside its archive and by id, the record leaves Redis
with its index entries, the API, the CLI and the dashboard still answer it from S3, a duplicate
webhook inside the provider's window is still a duplicate, and a live record never leaves.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.system import API_TOKEN, ROOT, System, sandbox_fire, wait_for
from worker.io.archive import s3_client
from worker.store import keys
from worker.store.records import dedup_key

RETENTION = 2.0  # seconds


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, s3_server: str, sandbox_server: Any
) -> Iterator[System]:
    s = System(
        tmp_path_factory.mktemp("retention"),
        s3_server,
        sandbox_server.url,
        BUCKET,
        env_overrides={"FAXRELAY_RECORD_RETENTION_SECONDS": str(RETENTION)},
    ).start()
    yield s
    s.stop()


def indexed(system: System, fax_id: str) -> list[str]:
    """The indexes that still name ``fax_id``."""
    client = system.store().redis
    names = [key.decode() for key in client.scan_iter(f"{keys.INDEX_PREFIX}*")]
    names += [keys.DUE, keys.FINAL, keys.UNFILED]
    return [name for name in names if client.zscore(name, fax_id) is not None]


def gone_from_redis(system: System, fax_id: str, timeout: float = 30) -> None:
    client = system.store().redis
    wait_for(lambda: not client.exists(keys.fax_key(fax_id)), timeout, f"{fax_id} to leave")
    assert indexed(system, fax_id) == []


def s3_json(system: System, key: str) -> dict[str, Any]:
    body = s3_client(system.s3_endpoint).get_object(Bucket=BUCKET, Key=key)["Body"].read()
    data: dict[str, Any] = json.loads(body)
    return data


def receive(system: System, sandbox: Any) -> tuple[str, str]:
    """A PrimeVox fax announced by its webhook: (its provider id, faxrelay's id)."""
    fax = dict(sandbox.control("inbound", provider="primevox"))
    answer = sandbox_fire(
        sandbox.url, provider="primevox", kind="inbound", url=system.webhook_url("pv"), id=fax["id"]
    )
    assert answer["status"] == 200, answer
    return str(fax["id"]), str(answer["headers"]["faxrelay-fax-id"])


def cli(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhooks.cli", *args],
        capture_output=True, text=True, cwd=ROOT, env=system.env, timeout=60, check=False,
    )  # fmt: skip


def test_a_received_fax_past_retention_is_answered_from_s3_and_stays_a_duplicate(
    system: System, sandbox: Any
) -> None:
    provider_id, fax_id = receive(system, sandbox)
    archived = system.wait_state(fax_id, "archived")
    public = archived.public()
    gone_from_redis(system, fax_id)

    # The sidecar beside the PDF holds the final record; the by-id copy too.
    sidecar = s3_json(system, archived.archive["key"].removesuffix(".pdf") + ".json")
    assert sidecar["record"] == public
    assert sidecar["sha256"] == archived.sha256 and sidecar["id"] == fax_id

    with system.api() as api:
        answer = api.get(f"/v1/faxes/{fax_id}")
        assert answer.status_code == 200, answer.text
        assert answer.json() == public
        assert api.get("/v1/faxes/fx_0000000000000000000000ff").status_code == 404

    shown = cli(system, "faxes", "show", fax_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == public

    page = httpx.get(
        f"{system.web_url}/faxes/{fax_id}",
        headers={"authorization": f"Bearer {API_TOKEN}"},
        timeout=30,
    )
    assert page.status_code == 200 and fax_id in page.text

    # PrimeVox may announce it again within its 30 days: still a duplicate of the same fax.
    again = sandbox_fire(
        sandbox.url,
        provider="primevox",
        kind="inbound",
        url=system.webhook_url("pv"),
        id=provider_id,
    )
    assert again["status"] == 200, again
    assert again["headers"]["faxrelay-outcome"] == "duplicate"
    assert again["headers"]["faxrelay-fax-id"] == fax_id
    assert not system.store().redis.exists(keys.fax_key(fax_id))  # no second record either
    # The dedup key outlives the record: until the provider's window has passed.
    ttl = system.store().redis.ttl(dedup_key(keys.inbound_scope("pv"), provider_id))
    assert 30 * 86400 < ttl <= 31 * 86400


def send_request(label: str) -> dict[str, Any]:
    pdf = make_pdf(1, 0, label=f"retention {label}")
    return {
        "account": "ci",
        "to": "+1 555 201 0123",
        "document": {"base64": base64.b64encode(pdf).decode()},
    }


def send(system: System, request: dict[str, Any] | None = None, key: str = "") -> str:
    headers = {"idempotency-key": key} if key else {}
    with system.api() as api:
        sent = api.post(
            "/v1/faxes", json=request or send_request(uuid.uuid4().hex), headers=headers
        )
    assert sent.status_code == 202, sent.text
    return str(sent.json()["id"])


def test_a_sent_fax_gets_its_sidecar_beside_the_document_and_leaves(system: System) -> None:
    request, key = send_request(uuid.uuid4().hex), f"retention-{uuid.uuid4().hex}"
    fax_id = send(system, request, key)
    done = system.wait_state(fax_id, "delivered", "failed", timeout=60)
    # Submitted, it is no lost submit's rival: it leaves that set at once, not after a day.
    rivals = keys.submits_key("ci", done.to_number)
    assert system.store().redis.zscore(rivals, fax_id) is None
    gone_from_redis(system, fax_id)
    sidecar = s3_json(system, done.document_key.removesuffix(".pdf") + ".json")
    assert sidecar["record"] == done.public() and sidecar["state"] == done.state
    with system.api() as api:
        answer = api.get(f"/v1/faxes/{fax_id}")
        assert answer.status_code == 200 and answer.json() == done.public()
        # Its Idempotency-Key keeps its own TTL (48 h), not the record's: a repeat of the request
        # is still the same fax, answered from S3, and sends nothing again.
        ttl = system.store().redis.ttl(dedup_key(keys.idempotency_scope("ci"), key))
        assert 47 * 3600 < ttl <= 48 * 3600
        again = api.post("/v1/faxes", json=request, headers={"idempotency-key": key})
        assert again.status_code == 200 and again.json() == done.public()
        # Found, and final: an action on it is refused as on any final fax, not "no such fax".
        for action in ("cancel", "retry"):
            refused = api.post(f"/v1/faxes/{fax_id}/{action}")
            assert refused.status_code == 409, (action, refused.text)
        assert api.post("/v1/faxes/fx_0000000000000000000000ff/cancel").status_code == 404
    assert not system.store().redis.exists(keys.fax_key(fax_id))


def test_a_fax_that_is_not_final_never_leaves(system: System, sandbox: Any) -> None:
    sandbox.control(
        "faults", provider="primevox", operation="download", kind="error", status=503, count=10_000
    )
    try:
        _, fax_id = receive(system, sandbox)
        store = system.store()
        wait_for(
            lambda: (r := store.find(fax_id)) is not None and r.attempts.get("download", 0) >= 2,
            30,
            "two download attempts",
        )
        # A fax sent after it finishes and leaves: the retention sweep has run past the first
        # one's window meanwhile.
        later = send(system)
        system.wait_state(later, "delivered", "failed", timeout=60)
        gone_from_redis(system, later)
        live = store.find(fax_id)
        assert live is not None and not live.final
        assert keys.INDEX_ALL in indexed(system, fax_id)
    finally:
        httpx.delete(f"{sandbox.url}/_sandbox/faults", timeout=30)
