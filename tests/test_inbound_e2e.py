"""Inbound end to end: provider webhook → web app → Redis → worker → sandbox download → S3.

Real processes throughout (uvicorn, a Celery worker and beat, Valkey, SeaweedFS, the sandbox over
HTTP). Address rules are proven end to end only with loopback canaries.
"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from config.queues import INTAKE_QUEUE
from sandbox import ucx as sb_ucx
from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.system import SUBSCRIBER_SECRET, System, sandbox_fire, wait_for
from tests.test_pdfcheck import SELF_REFERENCE
from worker.domain import parse_iso
from worker.fastpath.messages import task_message
from worker.io.archive import s3_client
from worker.store.records import dedup_key


class Canary:
    """A loopback HTTP server that must never be reached; it counts every request."""

    def __init__(self, host: str) -> None:
        hits: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"%PDF-1.4 canary")

            def log_message(self, *args: Any) -> None:
                pass

        self.hits = hits
        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Redirector:
    """A server on an allowed host (127.0.0.1) that redirects every request to ``target``."""

    def __init__(self, target: str) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("location", target)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fax.pdf"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


class Receiver:
    """A loopback event subscriber that keeps every request it gets."""

    def __init__(self) -> None:
        received: list[tuple[dict[str, str], bytes]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.received = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory,
    s3_server: str,
    sandbox_server: Any,
    receiver: Receiver,
) -> Iterator[System]:
    subscriber = (
        f'[[subscribers]]\nurl = "{receiver.url}"\nsecret = "{SUBSCRIBER_SECRET}"\n'
        'types = ["fax.received", "fax.archived", "fax.failed"]\n'
    )
    extra = (
        subscriber
        + """
[accounts.pv-local]
provider = "primevox"
base_url = "SANDBOX/primevox"
webhook_token = "test-webhook-token-8c1f"
auth = "a"
container_id = "1"
box_id = "1"
download_hosts = ["localhost"]

[accounts.ucx-del]
provider = "ucx"
base_url = "SANDBOX/ucx"
client_id = "UCXID"
client_secret = "UCXSECRET"
fax_id = "UCXFAX"
reconcile_interval = 0
delete_after_archive = true
""".replace("SANDBOX", sandbox_server.url)
        .replace("UCXID", sb_ucx.CLIENT_ID)
        .replace("UCXSECRET", sb_ucx.CLIENT_SECRET)
        .replace("UCXFAX", sb_ucx.FAX_ID)
    )
    s = System(
        tmp_path_factory.mktemp("inbound"),
        s3_server,
        sandbox_server.url,
        BUCKET,
        extra_config=extra,
        env_overrides={"FAXRELAY_WEBHOOK_MAX_BYTES": str(1024 * 1024)},
    ).start()
    yield s
    s.stop()


def new_inbound(sandbox: Any, provider: str = "primevox", **fields: Any) -> dict[str, Any]:
    return dict(sandbox.control("inbound", provider=provider, **fields))  # type: ignore[arg-type]


def fire(
    system: System, sandbox: Any, fax_id: str, account: str = "pv", **options: Any
) -> dict[str, Any]:
    provider = system_provider(account)
    return sandbox_fire(
        sandbox.url,
        provider=provider,
        kind="inbound",
        url=system.webhook_url(account),
        id=fax_id,
        **options,
    )


def system_provider(account: str) -> str:
    return {"pv": "primevox", "pv-local": "primevox", "ucx": "ucx", "vm": "voipms"}[account]


def fax_id_for(system: System, account: str, provider_fax_id: str) -> str:
    raw = system.store().redis.get(dedup_key(f"in:{account}", provider_fax_id))
    assert raw is not None, f"no record for {account}/{provider_fax_id}"
    return str(json.loads(raw)["id"])


def objects(prefix: str, s3_endpoint: str) -> list[str]:
    listing = s3_client(s3_endpoint).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [o["Key"] for o in listing.get("Contents", [])]


def test_primevox_webhook_archives_identical_bytes_with_sidecar(
    system: System, sandbox: Any
) -> None:
    fax = new_inbound(sandbox, pages=3, size=300_000)
    answer = fire(system, sandbox, fax["id"])
    assert answer["status"] == 200
    fax_id = fax_id_for(system, "pv", fax["id"])
    record = system.wait_state(fax_id, "archived")
    s3 = s3_client(system.s3_endpoint)
    key = record.archive["key"]
    assert key.startswith(f"inbound/pv/{record.created_at[:4]}/{record.created_at[5:7]}/")
    assert key.endswith(f"/{fax_id}.pdf")
    pdf = s3.get_object(Bucket=BUCKET, Key=key)
    body = pdf["Body"].read()
    assert hashlib.sha256(body).hexdigest() == fax["sha256"]
    assert pdf["Metadata"]["sha256"] == fax["sha256"]
    sidecar = json.loads(s3.get_object(Bucket=BUCKET, Key=key[:-4] + ".json")["Body"].read())
    assert sidecar["sha256"] == fax["sha256"]
    assert sidecar["id"] == fax_id and sidecar["pages"] == 3
    assert record.pages == 3 and record.sha256 == fax["sha256"]
    assert [h["state"] for h in record.history] == ["received", "fetching", "archived"]
    # PrimeVox keeps a received fax 30 days from its receivedAt (whole seconds in the webhook).
    received = datetime.strptime(record.raw["receivedAt"], "%Y-%m-%d %H:%M:%S")
    expected = received.replace(tzinfo=UTC) + timedelta(days=30)
    assert record.expires_at == expected.strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def test_same_webhook_three_times_is_one_record_and_one_object(
    system: System, sandbox: Any
) -> None:
    fax = new_inbound(sandbox)
    answers = [fire(system, sandbox, fax["id"]) for _ in range(3)]
    assert [a["status"] for a in answers] == [200, 200, 200]
    ids = {a["headers"]["faxrelay-fax-id"] for a in answers}
    assert len(ids) == 1
    fax_id = ids.pop()
    record = system.wait_state(fax_id, "archived")
    prefix = record.archive["key"].rsplit("/", 1)[0] + "/"
    mine = [k for k in objects(prefix, system.s3_endpoint) if fax_id in k]
    assert sorted(mine) == sorted([record.archive["key"], record.archive["key"][:-4] + ".json"])
    assert len(sandbox.requests("primevox", "download")) == 1


def test_bad_token_oversized_and_garbage_are_refused_and_logged(system: System) -> None:
    url = f"{system.web_url}/webhooks/pv/inbound"
    bad = httpx.post(url, params={"token": "wrong"}, data={"fileUrl": "http://x/y"})
    assert bad.status_code == 401
    basic = httpx.post(url, auth=("primevox", "test-webhook-token-8c1f"), content=b"")
    assert basic.status_code == 422  # the Basic password is accepted; the empty body is not
    big = httpx.post(system.webhook_url("pv"), content=b"a=" + b"x" * (2 * 1024 * 1024))
    assert big.status_code == 413

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    chunked = httpx.post(system.webhook_url("pv"), content=chunks())
    assert chunked.status_code == 413
    garbage = httpx.post(
        system.webhook_url("pv"),
        content=b"\x00\x01 this is not a webhook",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert garbage.status_code == 422
    assert "error" in garbage.json()
    assert httpx.post(system.webhook_url("nobody"), content=b"a=b").status_code == 404
    # Other methods and near-miss paths still get the router's answers.
    assert httpx.get(url).status_code == 405
    assert (
        httpx.post(f"{system.web_url}/webhooks/pv/inbound/extra", content=b"a=b").status_code == 404
    )

    from worker.store.rawlog import list_entries

    entries = list_entries(system.store().redis, limit=20)
    statuses = [e.status for e in entries]
    for code in (401, 413, 422, 404):
        assert code in statuses
    kept = next(e for e in entries if e.status == 422 and e.body.startswith(b"\x00\x01"))
    assert kept.body == b"\x00\x01 this is not a webhook"
    assert all("wrong" not in e.query for e in entries)  # tokens are redacted
    assert all(e.headers.get("authorization") in (None, "[redacted]") for e in entries)


def test_a_client_that_leaves_mid_body_is_kept_in_the_log(system: System) -> None:
    from urllib.parse import urlsplit

    from worker.store.rawlog import list_entries

    url = urlsplit(system.webhook_url("pv"))
    probe = f"left-{time.time_ns()}"
    body = b"efaxID=1&fileUrl="
    head = (
        f"POST {url.path}?{url.query}&probe={probe} HTTP/1.1\r\nHost: {url.netloc}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 5000\r\n\r\n"
    )
    with socket.create_connection((url.hostname, url.port), timeout=10) as conn:
        conn.sendall(head.encode() + body)  # 17 of the 5,000 bytes promised, then gone

    def left() -> Any:
        entries = list_entries(system.store().redis, limit=50, account="pv")
        return next((e for e in entries if probe in e.query), None)

    entry = wait_for(left, 15, "the half-sent webhook in the raw log")
    assert (entry.outcome, entry.status) == ("disconnected", 499)
    assert body.startswith(entry.body)  # what had arrived when the client left (maybe nothing)
    assert "token=[redacted]" in entry.query


def _post_primevox(system: System, account: str, url: str, efax_id: str) -> str:
    answer = httpx.post(
        system.webhook_url(account),
        data={"efaxID": efax_id, "fileUrl": url, "callerIdNum": "5551230000"},
    )
    assert answer.status_code == 200, answer.text
    return answer.headers["faxrelay-fax-id"]


def test_disallowed_hosts_and_redirects_are_never_fetched(system: System) -> None:
    canary = Canary("127.0.0.2")
    local = Canary("127.0.0.1")
    redirect = Redirector(f"http://127.0.0.2:{canary.port}/redirected.pdf")
    try:
        not_allowed = _post_primevox(
            system, "pv", f"http://127.0.0.2:{canary.port}/fax.pdf", f"c1-{time.time_ns()}"
        )
        redirected = _post_primevox(system, "pv", redirect.url, f"c2-{time.time_ns()}")
        # "localhost" is an allowed host of pv-local, but it resolves to loopback.
        by_name = _post_primevox(
            system, "pv-local", f"http://localhost:{local.port}/fax.pdf", f"c3-{time.time_ns()}"
        )
        for fax_id in (not_allowed, redirected, by_name):
            record = system.wait_state(fax_id, "failed")
            assert record.reason == "download_refused", record.public()
        assert "not an allowed host" in system.record(not_allowed).reason_detail
        assert "non-public" in system.record(by_name).reason_detail
        assert canary.hits == [] and local.hits == []
    finally:
        canary.close()
        local.close()
        redirect.close()


def test_three_503s_then_success_is_archived(system: System, sandbox: Any) -> None:
    fax = new_inbound(sandbox)
    sandbox.control(
        "faults", provider="primevox", operation="download", kind="error", status=503, count=3
    )
    fire(system, sandbox, fax["id"])
    record = system.wait_state(fax_id_for(system, "pv", fax["id"]), "archived", timeout=60)
    assert record.sha256 == fax["sha256"]
    assert record.attempts["download"] == 3
    assert len(sandbox.requests("primevox", "download")) == 4


def test_non_pdf_is_quarantined(system: System, sandbox: Any) -> None:
    fax = new_inbound(sandbox)
    sandbox.control("faults", provider="primevox", operation="download", kind="not_pdf")
    fire(system, sandbox, fax["id"])
    record = system.wait_state(fax_id_for(system, "pv", fax["id"]), "failed")
    assert record.reason == "not_pdf"
    assert record.archive["key"].startswith("quarantine/pv/")
    body = s3_client(system.s3_endpoint).get_object(Bucket=BUCKET, Key=record.archive["key"])
    assert b"<html>" in body["Body"].read()


def test_expired_file_fails_as_expired(system: System, sandbox: Any) -> None:
    sandbox.control("clock", advance=-31 * 86400)  # received 31 days ago: past PrimeVox's 30
    try:
        fax = new_inbound(sandbox)
    finally:
        sandbox.control("clock", advance=31 * 86400)
    fire(system, sandbox, fax["id"])
    record = system.wait_state(fax_id_for(system, "pv", fax["id"]), "failed", timeout=60)
    assert record.reason == "expired", record.public()


def _archived_with(system: System, account: str, sha256: str) -> Any:
    page = system.store().list(account=account, direction="inbound", limit=100)
    return next((r for r in page.items if r.sha256 == sha256 and r.state == "archived"), None)


def test_ucx_reconciliation_archives_faxes_no_webhook_announced(
    system: System, sandbox: Any
) -> None:
    fax = new_inbound(sandbox, provider="ucx", pages=2)
    system.store().redis.lpush(
        INTAKE_QUEUE, task_message("faxrelay.reconcile_account", INTAKE_QUEUE, ["ucx"])
    )
    record = wait_for(lambda: _archived_with(system, "ucx", fax["sha256"]), 30, "reconcile")
    assert record.pages == 2
    assert record.history[0]["state"] == "received"


def test_voipms_callback_without_id_reconciles_and_with_pdf_archives(
    system: System, sandbox: Any
) -> None:
    listed = new_inbound(sandbox, provider="voipms")
    answer = fire(system, sandbox, listed["id"], account="vm", with_id=False, with_pdf=False)
    assert answer["status"] == 200 and answer["body"] == "ok"  # voip.ms expects "ok"
    assert answer["headers"]["faxrelay-outcome"] == "reconcile"
    raw = wait_for(
        lambda: system.store().redis.get(dedup_key("in:vm", listed["id"])), 30, "reconcile"
    )
    record = system.wait_state(json.loads(raw)["id"], "archived")
    assert record.sha256 == listed["sha256"]

    carried = new_inbound(sandbox, provider="voipms", pages=2)
    downloads_before = len(sandbox.requests("voipms", "getFaxMessagePDF"))
    answer = fire(system, sandbox, carried["id"], account="vm", multipart=True, with_pdf=True)
    assert answer["body"] == "ok"
    wait_for(lambda: _archived_with(system, "vm", carried["sha256"]), 30, "archive")
    assert len(sandbox.requests("voipms", "getFaxMessagePDF")) == downloads_before


def test_worker_killed_mid_archive_still_archives_exactly_once(
    system: System, sandbox: Any
) -> None:
    fax = new_inbound(sandbox, size=200_000)
    sandbox.control("faults", provider="primevox", operation="download", kind="hang", seconds=4)
    fire(system, sandbox, fax["id"])
    fax_id = fax_id_for(system, "pv", fax["id"])
    system.wait_state(fax_id, "fetching")
    wait_for(lambda: sandbox.requests("primevox", "download"), 10, "the download to start")
    system.kill_worker()
    system.start_worker()
    record = system.wait_state(fax_id, "archived", timeout=60)
    assert record.sha256 == fax["sha256"]
    prefix = record.archive["key"].rsplit("/", 1)[0] + "/"
    assert [k for k in objects(prefix, system.s3_endpoint) if k.endswith(f"{fax_id}.pdf")] == [
        record.archive["key"]
    ]


def test_redis_down_answers_503_and_loses_nothing_accepted(system: System, sandbox: Any) -> None:
    accepted = new_inbound(sandbox)
    refused = new_inbound(sandbox)
    assert fire(system, sandbox, accepted["id"])["status"] == 200  # durable before the outage
    system.stop_redis()
    assert fire(system, sandbox, refused["id"])["status"] == 503
    system.start_redis()
    assert fire(system, sandbox, refused["id"])["status"] == 200  # the provider's retry
    # Should the worker wedge after all (config/embedded.py CELERY_FATAL), a supervisor restarts it.
    wait_for(lambda: system.procs["worker"].wedged or system.worker_consumes(), 20, "worker state")
    system.ensure_worker()
    for fax in (accepted, refused):
        system.wait_state(fax_id_for(system, "pv", fax["id"]), "archived", timeout=60)


def test_record_accepted_before_a_redis_restart_survives_it(system: System, sandbox: Any) -> None:
    fax = new_inbound(sandbox)
    sandbox.control(
        "faults", provider="primevox", operation="download", kind="error", status=503, count=2
    )
    assert fire(system, sandbox, fax["id"])["status"] == 200
    fax_id = fax_id_for(system, "pv", fax["id"])
    system.stop_redis()
    system.start_redis()
    wait_for(lambda: system.procs["worker"].wedged or system.worker_consumes(), 20, "worker state")
    system.ensure_worker()
    record = system.wait_state(fax_id, "archived", timeout=90)
    assert record.sha256 == fax["sha256"]


def test_a_worker_with_a_download_in_flight_keeps_running_through_a_redis_restart(
    system: System, sandbox: Any
) -> None:
    """kombu's own transport stops a worker whose broker connection drops with a task in flight
    (``Unrecoverable error: AttributeError … 'hostname'``), dropping everything it was running
    until the leases lapse; ``config.broker``'s reconnects, and the download finishes."""
    worker = system.procs["worker"]
    fatal_before = system.log_tail(10**6).count("Unrecoverable error")
    held = new_inbound(sandbox, size=200_000)
    sandbox.control("faults", provider="primevox", operation="download", kind="hang", seconds=4)
    fire(system, sandbox, held["id"])
    held_id = fax_id_for(system, "pv", held["id"])
    wait_for(lambda: sandbox.requests("primevox", "download"), 10, "the download to start")
    system.procs["redis"].signal(signal.SIGKILL)
    system.procs.pop("redis").process.wait(10)  # type: ignore[union-attr]
    system.start_redis()
    assert system.wait_state(held_id, "archived", timeout=60).sha256 == held["sha256"]
    after = new_inbound(sandbox)
    fire(system, sandbox, after["id"])  # taken by the same consumer, reconnected
    system.wait_state(fax_id_for(system, "pv", after["id"]), "archived", timeout=30)
    assert system.procs["worker"] is worker and worker.alive() and not worker.wedged
    assert system.log_tail(10**6).count("Unrecoverable error") == fatal_before


def test_webhook_log_cli_lists_shows_and_replays(system: System, sandbox: Any) -> None:
    import os
    import subprocess
    import sys

    fax = new_inbound(sandbox)
    first = {"id": fire(system, sandbox, fax["id"])["headers"]["faxrelay-fax-id"]}
    env = {**os.environ, **{k: v for k, v in system.env.items() if k.startswith("FAXRELAY_")}}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "webhooks.cli", "webhooks", *args],
            capture_output=True, text=True, env=env, timeout=60, check=False,
        )  # fmt: skip

    listed = cli("list", "--account", "pv", "--limit", "5")
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if first["id"] in row)
    log_id = line.split()[0]
    shown = cli("show", log_id)
    assert shown.returncode == 0, shown.stderr
    entry = json.loads(shown.stdout)
    assert entry["fax_id"] == first["id"] and entry["status"] == 200
    assert f"efaxID={fax['id']}" in entry["body"]
    assert "test-webhook-token" not in shown.stdout  # the token is redacted
    replayed = cli("replay", log_id, "--url", system.web_url)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    state = system.record(first["id"]).state
    assert replayed.stdout.split() == [
        "200",
        "outcome=duplicate",
        f"fax-id={first['id']}",
        f"state={state}",
    ]
    assert cli("show", "wh_nonexistent").returncode == 1


def test_subscribers_get_signed_received_and_archived_events(
    system: System, sandbox: Any, receiver: Receiver
) -> None:
    from standardwebhooks import Webhook

    fax = new_inbound(sandbox)
    fire(system, sandbox, fax["id"])
    fax_id = fax_id_for(system, "pv", fax["id"])
    system.wait_state(fax_id, "archived")
    verifier = Webhook(SUBSCRIBER_SECRET)

    def mine() -> list[dict[str, Any]]:
        events = [verifier.verify(body, headers) for headers, body in list(receiver.received)]
        return [e for e in events if e["data"]["id"] == fax_id]

    events = wait_for(lambda: len(mine()) >= 2 and mine(), 30, "both events")
    assert sorted(e["type"] for e in events) == ["fax.archived", "fax.received"]
    archived = next(e for e in events if e["type"] == "fax.archived")
    assert archived["data"]["sha256"] == fax["sha256"]
    assert archived["data"]["archive"]["key"].endswith(f"{fax_id}.pdf")
    headers, body = receiver.received[-1]
    with pytest.raises(WebhookVerificationError):
        verifier.verify(body + b" ", headers)


def test_delete_after_archive_removes_the_providers_copy(system: System, sandbox: Any) -> None:
    fax = new_inbound(sandbox, provider="ucx")
    system.store().redis.lpush(
        INTAKE_QUEUE, task_message("faxrelay.reconcile_account", INTAKE_QUEUE, ["ucx-del"])
    )
    record = wait_for(lambda: _archived_with(system, "ucx-del", fax["sha256"]), 30, "archive")
    wait_for(lambda: fax["jobid"] not in sandbox.sb.inbound["ucx"], 30, "the provider's copy gone")
    deletes = sandbox.requests("ucx", "recorddelete")
    assert len(deletes) == 1
    archived = s3_client(system.s3_endpoint).get_object(Bucket=BUCKET, Key=record.archive["key"])
    assert hashlib.sha256(archived["Body"].read()).hexdigest() == fax["sha256"]


# --- one fax, one archive, one set of events ---------------------------------------------------


def unique_pdf(pages: int = 1) -> str:
    """A PDF no other test sends (the sandbox's own are the same bytes for the same pages), base64."""
    return base64.b64encode(make_pdf(pages, label=f"fax {uuid.uuid4().hex}")).decode()


def reconcile(system: System, account: str) -> None:
    system.store().redis.lpush(
        INTAKE_QUEUE, task_message("faxrelay.reconcile_account", INTAKE_QUEUE, [account])
    )


def delivered(system: System, receiver: Receiver, *fax_ids: str) -> list[tuple[str, str]]:
    """(fax id, type) of the events about these faxes, once every one emitted has arrived."""
    redis = system.store().redis

    def undelivered() -> list[bytes]:
        entries = (redis.get(key) for key in redis.scan_iter("fr:delivery:*"))
        return [e for e in entries if e and json.loads(e)["fax_id"] in fax_ids]

    wait_for(lambda: not undelivered(), 30, "the events to be delivered")
    events = (json.loads(body) for _, body in list(receiver.received))
    return [(e["data"]["id"], e["type"]) for e in events if e["data"]["id"] in fax_ids]


def test_a_pdf_pypdf_cannot_read_is_quarantined(system: System, sandbox: Any) -> None:
    # pypdf's AttributeError escaped the check: the record stayed "fetching", downloaded again
    # each time its lease lapsed, never quarantined and never expired.
    fax = new_inbound(sandbox, pdf_base64=base64.b64encode(SELF_REFERENCE).decode())
    fire(system, sandbox, fax["id"])
    record = system.wait_state(fax_id_for(system, "pv", fax["id"]), "failed")
    assert record.reason == "not_pdf"
    assert record.reason_detail.startswith("the PDF cannot be parsed: AttributeError")
    assert record.archive["key"].startswith("quarantine/pv/")
    body = s3_client(system.s3_endpoint).get_object(Bucket=BUCKET, Key=record.archive["key"])
    assert body["Body"].read() == SELF_REFERENCE
    assert len(sandbox.requests("primevox", "download")) == 1


def test_archive_date_and_sidecar_follow_the_providers_receipt_and_the_pdf(
    system: System, sandbox: Any
) -> None:
    sandbox.control("clock", advance=-3 * 86400)  # received three days ago
    try:
        fax = new_inbound(sandbox, pages=5, pdf_base64=unique_pdf(pages=2))  # "5 pages": wrong
    finally:
        sandbox.control("clock", advance=3 * 86400)
    fire(system, sandbox, fax["id"])
    fax_id = fax_id_for(system, "pv", fax["id"])
    record = system.wait_state(fax_id, "archived")
    received = datetime.strptime(record.raw["receivedAt"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    assert record.archive["key"] == f"inbound/pv/{received:%Y/%m/%d}/{fax_id}.pdf"
    s3 = s3_client(system.s3_endpoint)
    sidecar = json.loads(
        s3.get_object(Bucket=BUCKET, Key=record.archive["key"][:-4] + ".json")["Body"].read()
    )
    assert parse_iso(sidecar["received_at"]) == received
    assert sidecar["pages"] == record.pages == 2


def test_an_archive_longer_than_the_lease_runs_once(
    system: System, sandbox: Any, receiver: Receiver
) -> None:
    fax = new_inbound(sandbox, provider="ucx", pdf_base64=unique_pdf())
    # The download outlasts the 6 s lease: the sweeper wakes the record meanwhile.
    sandbox.control("faults", provider="ucx", operation="filedownload", kind="hang", seconds=10)
    reconcile(system, "ucx-del")
    fax_id = wait_for(lambda: fax_id_for_or_none(system, "ucx-del", fax["jobid"]), 30, "record")
    record = system.wait_state(fax_id, "archived", timeout=60)
    assert record.sha256 == fax["sha256"]
    assert len(sandbox.requests("ucx", "filedownload")) == 1  # no second worker started
    wait_for(lambda: sandbox.requests("ucx", "recorddelete"), 30, "the provider's copy deleted")
    assert len(sandbox.requests("ucx", "recorddelete")) == 1
    types = sorted(t for _, t in delivered(system, receiver, fax_id))
    assert types == ["fax.archived", "fax.received"]


def fax_id_for_or_none(system: System, account: str, provider_fax_id: str) -> str | None:
    raw = system.store().redis.get(dedup_key(f"in:{account}", provider_fax_id))
    return str(json.loads(raw)["id"]) if raw is not None else None


@pytest.mark.parametrize("callback_first", [True, False], ids=["callback-first", "listing-first"])
def test_a_voipms_fax_called_back_without_an_id_and_listed_later_is_archived_once(
    system: System, sandbox: Any, receiver: Receiver, callback_first: bool
) -> None:
    """voip.ms's callback with the PDF but no id names the fax by its content; the listing names
    it by voip.ms's own id. Either way round: one archive, one fax.archived."""
    fax = new_inbound(sandbox, provider="voipms", pdf_base64=unique_pdf())

    def callback() -> str:
        answer = fire(system, sandbox, fax["id"], account="vm", with_id=False, with_pdf=True)
        assert answer["body"] == "ok" and answer["headers"]["faxrelay-outcome"] == "accepted"
        return str(answer["headers"]["faxrelay-fax-id"])

    def listing() -> str:
        reconcile(system, "vm")
        return wait_for(lambda: fax_id_for_or_none(system, "vm", fax["id"]), 30, "reconcile")

    first = callback() if callback_first else listing()
    system.wait_state(first, "archived")
    second = listing() if callback_first else callback()
    duplicate = system.wait_state(second, "failed")
    assert duplicate.reason == "duplicate" and first in duplicate.reason_detail
    assert duplicate.sha256 == fax["sha256"] and duplicate.archive == {}

    pdfs = [k for k in objects("inbound/vm/", system.s3_endpoint) if k.endswith(".pdf")]
    assert [k for k in pdfs if first in k or second in k] == [system.record(first).archive["key"]]

    def staged() -> list[str]:
        return [k for k in objects("staging/vm/", system.s3_endpoint) if first in k or second in k]

    wait_for(lambda: not staged(), 30, "the staged copy removed")
    events = delivered(system, receiver, first, second)
    assert [e for e in events if e[1] != "fax.received"] == [(first, "fax.archived")]


def test_a_webhook_refused_for_its_token_is_kept_whole_and_replays_once_fixed(
    system: System, sandbox: Any
) -> None:
    import os
    import subprocess
    import sys

    from worker.store.rawlog import list_entries

    fax = new_inbound(sandbox)
    refused = sandbox_fire(
        sandbox.url,
        provider="primevox",
        kind="inbound",
        url=system.webhook_url("pv", token="rotated-away"),
        id=fax["id"],
    )
    assert refused["status"] == 401
    entry = next(
        e
        for e in list_entries(system.store().redis, limit=50, account="pv")
        if f"efaxID={fax['id']}".encode() in e.body
    )
    assert (entry.status, entry.truncated) == (401, False)
    env = {**os.environ, **{k: v for k, v in system.env.items() if k.startswith("FAXRELAY_")}}
    replayed = subprocess.run(
        [sys.executable, "-m", "webhooks.cli", "webhooks", "replay", entry.id, "--url", system.web_url],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "outcome=accepted" in replayed.stdout
    system.wait_state(fax_id_for(system, "pv", fax["id"]), "archived")


def test_inputs_that_once_crashed_the_intake_are_answered_and_logged(system: System) -> None:
    from worker.store.rawlog import list_entries

    url = f"{system.web_url}/webhooks/pv/inbound"
    probe = f"probe{time.time_ns()}"
    # A Basic header that is not ASCII: no password given, so 401 (was a 500).
    odd_auth = httpx.post(
        f"{url}?probe={probe}a", content=b"a=b", headers={"authorization": b"Basic \xe9\xe9"}
    )
    assert odd_auth.status_code == 401
    # A page count that isdigit() takes but int() does not: no page count (was a 500).
    superscript = httpx.post(
        system.webhook_url("pv") + f"&probe={probe}b",
        data={"efaxID": f"{probe}b", "fileUrl": "http://127.0.0.1:9/f.pdf", "pages": "²"},
    )
    assert superscript.status_code == 200, superscript.text
    assert system.record(superscript.headers["faxrelay-fax-id"]).pages is None
    # A multipart part in a charset Python does not know: read as UTF-8 (was a 500).
    boundary = "b0undary"
    multipart = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=efaxID\r\n"
        f"Content-Type: text/plain; charset=bogus-8\r\n\r\n{probe}c\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=fileUrl\r\n\r\n"
        f"http://127.0.0.1:9/f.pdf\r\n--{boundary}--\r\n"
    ).encode()
    odd_charset = httpx.post(
        system.webhook_url("pv") + f"&probe={probe}c",
        content=multipart,
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert odd_charset.status_code == 200, odd_charset.text
    entries = list_entries(system.store().redis, limit=50, account="pv")
    logged = {e.query.rsplit("probe=", 1)[1]: e.status for e in entries if probe in e.query}
    assert logged == {f"{probe}a": 401, f"{probe}b": 200, f"{probe}c": 200}
