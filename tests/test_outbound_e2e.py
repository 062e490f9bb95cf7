"""Outbound end to end: ``POST /v1/faxes`` (or a Celery message) → web app → Redis → worker →
sandbox provider → followed to a final state, and never sent twice.

Real processes throughout (uvicorn, a Celery worker and beat, Valkey, SeaweedFS, the sandbox over
HTTP). Jobs are sped up with the sandbox's ``duration`` control; the system's ``retry_scale`` shrinks
faxrelay's own poll and redial delays.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import standardwebhooks

from sandbox import primevox as sb_primevox
from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.system import EVENT_SECRET, System, wait_for
from worker.domain import FaxRecord
from worker.io.archive import s3_client

MAX_DOCUMENT = 1024 * 1024  # FAXRELAY_DOCUMENT_MAX_BYTES for this module

# The operation name the sandbox logs for each provider's submit.
SUBMIT_OP = {
    "primevox": "send",
    "ucx": "filesend",
    "voipnow": "send",
    "voipms": "sendFaxMessage",
    "callerip": "send",
}
PROVIDER_OF = {
    "pv": "primevox",
    "pv-fallback": "primevox",
    "ucx": "ucx",
    "vn": "voipnow",
    "vm": "voipms",
    "ci": "callerip",
    "ci-list": "callerip",
}


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, s3_server: str, sandbox_server: Any
) -> Iterator[System]:
    from sandbox import callerip as sb_callerip

    extra = f"""
[accounts.ci-list]
provider = "callerip"
base_url = "{sandbox_server.url}/callerip"
token = "{sb_callerip.VALID_TOKEN}"
"""
    s = System(
        tmp_path_factory.mktemp("outbound"),
        s3_server,
        sandbox_server.url,
        BUCKET,
        extra_config=extra,
        env_overrides={"FAXRELAY_DOCUMENT_MAX_BYTES": str(MAX_DOCUMENT)},
    ).start()
    yield s
    s.stop()


@pytest.fixture
def api(system: System) -> Iterator[httpx.Client]:
    with system.api() as client:
        yield client


# --- helpers -----------------------------------------------------------------------------------


def pdf(pages: int = 1, size: int = 0) -> bytes:
    """A PDF unique to the call (so no two tests share a document or a fingerprint)."""
    return make_pdf(pages, size, label=f"faxrelay outbound {uuid.uuid4().hex}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def send(
    api: httpx.Client,
    account: str,
    to: str,
    document: dict[str, Any] | None = None,
    *,
    key: str = "",
    **extra: Any,
) -> httpx.Response:
    body = {"account": account, "to": to, "document": document or {"base64": b64(pdf())}, **extra}
    headers = {"idempotency-key": key} if key else {}
    return api.post("/v1/faxes", json=body, headers=headers)


def accepted(answer: httpx.Response, status: int = 202) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    data: dict[str, Any] = answer.json()
    return data


def submits(sandbox: Any, provider: str) -> list[dict[str, Any]]:
    return sandbox.requests(provider, SUBMIT_OP[provider])


def jobs(sandbox: Any, provider: str) -> list[dict[str, Any]]:
    """The sandbox's outbound jobs, read in process: ``GET /_sandbox/jobs`` cannot serialise UCX
    jobs (their ``extra`` holds ``Phase`` objects), a sandbox bug."""
    sb = sandbox.sb
    now = sb.clock.now()
    with sb.lock:
        found = list(sb.jobs[provider].values())
    return [{"id": j.id, "to": j.to_number, "state": j.state_at(now)} for j in found]


def fast(sandbox: Any, *providers: str, seconds: float = 1.0) -> None:
    for provider in providers:
        sandbox.control("duration", provider=provider, seconds=seconds)


def assert_error(answer: httpx.Response, status: int, code: str | None = None) -> str:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"code", "message"} and error["message"], error
    if code is not None:
        assert error["code"] == code, error
    return str(error["message"])


def states(record: FaxRecord) -> list[str]:
    return [h["state"] for h in record.history]


def notes(record: FaxRecord) -> str:
    return "\n".join(str(h.get("note", "")) for h in record.history)


class Server:
    """A loopback HTTP server: serves ``content`` on GET, records every POST."""

    def __init__(self, content: bytes = b"", content_type: str = "application/pdf") -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        self.gets: list[str] = []
        posts, gets = self.posts, self.gets

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                gets.append(self.path)
                self.send_response(200)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- every provider, the happy path --------------------------------------------------------------

HAPPY = [
    # account, destination as a caller writes it, as the provider's docs show it, final state
    ("pv", "+1 (555) 234-5678", "5552345678", "delivered"),
    ("ucx", "+1 469-555-0101", "14695550101", "delivered"),
    ("vn", "+1 555 234 5600", "15552345600", "accepted"),
    ("vm", "(555) 234-5679", "5552345679", "delivered"),
    ("ci", "1-555-234-5680", "5552345680", "delivered"),
]


@pytest.mark.parametrize(("account", "to", "normalised", "final"), HAPPY)
def test_each_provider_sends_once_and_reaches_its_final_state(
    system: System,
    sandbox: Any,
    api: httpx.Client,
    account: str,
    to: str,
    normalised: str,
    final: str,
) -> None:
    provider = PROVIDER_OF[account]
    fast(sandbox, provider)
    document = pdf(pages=2)
    fax = accepted(send(api, account, to, {"base64": b64(document)}, metadata={"ref": account}))
    assert fax["state"] == "queued" and fax["direction"] == "outbound"
    assert fax["to"] == normalised and fax["pages"] == 2
    assert fax["sha256"] == hashlib.sha256(document).hexdigest()
    assert fax["document_key"].startswith(f"outbound/{account}/")
    stored = s3_client(system.s3_endpoint).get_object(Bucket=BUCKET, Key=fax["document_key"])
    assert stored["Body"].read() == document

    record = system.wait_state(fax["id"], final)
    [submit] = submits(sandbox, provider)
    assert submit["status"] == 200, submit
    fields = submit["fields"]
    if provider == "primevox":
        assert fields["toNumber"] == normalised
        assert fields["auth"] == sb_primevox.VALID_AUTH
        assert fields["boxID"] == sb_primevox.VALID_BOX
        assert fields["fileUrl"].startswith(system.s3_endpoint)
    elif provider == "ucx":
        assert fields["destination"] == normalised and fields["fax_id"]
        assert fields["attachment"]["size"] == len(document)
    elif provider == "voipnow":
        assert json.loads(fields["request"]) == {"recipients": [normalised]}
        assert [f["size"] for f in fields["files"]] == [len(document)]
    elif provider == "voipms":
        assert fields["to_number"] == normalised
        assert fields["file"] == f"<{len(document)} bytes>"
    else:
        assert fields["number"] == normalised and fields["sendCover"] == "N"
        assert fields["file"]["size"] == len(document)
    [job] = jobs(sandbox, provider)
    assert job["to"] == normalised
    if provider != "voipms":  # voip.ms answers no job id: it is found in SENT by number and time
        assert record.provider_ids["job_id"] == str(job["id"])
    assert states(record)[0] == "queued" and states(record)[-1] == final
    assert record.attempts["submit"] == 1
    assert record.public()["metadata"] == {"ref": account}


# --- other ways in ---------------------------------------------------------------------------------


def test_multipart_upload(system: System, sandbox: Any, api: httpx.Client) -> None:
    fast(sandbox, "ucx")
    document = pdf(pages=3)
    answer = api.post(
        "/v1/faxes",
        data={"account": "ucx", "to": "14695550102", "metadata": json.dumps({"k": "v"})},
        files={"document": ("letter.pdf", document, "application/pdf")},
    )
    fax = accepted(answer)
    assert fax["pages"] == 3 and fax["sha256"] == hashlib.sha256(document).hexdigest()
    system.wait_state(fax["id"], "delivered")
    [submit] = submits(sandbox, "ucx")
    assert submit["fields"]["attachment"]["size"] == len(document)


def test_document_by_s3_key_and_by_url(system: System, sandbox: Any, api: httpx.Client) -> None:
    fast(sandbox, "callerip")
    by_key = pdf()
    key = f"uploads/{uuid.uuid4().hex}.pdf"
    s3_client(system.s3_endpoint).put_object(Bucket=BUCKET, Key=key, Body=by_key)
    by_url = pdf(pages=2)
    server = Server(by_url)
    try:
        first = accepted(send(api, "ci", "5552345681", {"s3_key": key}))
        second = accepted(send(api, "ci", "5552345682", {"url": f"{server.url}/doc.pdf"}))
        assert server.gets == ["/doc.pdf"]
    finally:
        server.close()
    assert first["sha256"] == hashlib.sha256(by_key).hexdigest()
    assert second["sha256"] == hashlib.sha256(by_url).hexdigest() and second["pages"] == 2
    for fax in (first, second):
        system.wait_state(fax["id"], "delivered")
    sizes = sorted(s["fields"]["file"]["size"] for s in submits(sandbox, "callerip"))
    assert sizes == sorted([len(by_key), len(by_url)])

    missing = send(api, "ci", "5552345683", {"s3_key": "uploads/no-such-object.pdf"})
    assert_error(missing, 422, "bad_document")
    refused = send(api, "ci", "5552345683", {"url": "http://127.0.0.2:9/doc.pdf"})
    assert refused.status_code == 422, refused.text


def test_get_and_list_with_filters_and_cursor(
    system: System, sandbox: Any, api: httpx.Client
) -> None:
    fast(sandbox, "callerip")
    ids = [accepted(send(api, "ci-list", f"555234570{i}"))["id"] for i in range(5)]
    for fax_id in ids:
        system.wait_state(fax_id, "delivered")

    one = api.get(f"/v1/faxes/{ids[0]}")
    assert one.status_code == 200 and one.json()["id"] == ids[0]
    assert one.json()["state"] == "delivered" and one.json()["account"] == "ci-list"

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params = {"account": "ci-list", "direction": "outbound", "limit": "2"}
        if cursor:
            params["cursor"] = cursor
        page = api.get("/v1/faxes", params=params)
        assert page.status_code == 200, page.text
        body = page.json()
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
        assert pages < 10
    assert seen == list(reversed(ids))  # newest first, each once
    assert pages in (3, 4)

    delivered = api.get("/v1/faxes", params={"account": "ci-list", "state": "delivered"}).json()
    assert sorted(i["id"] for i in delivered["items"]) == sorted(ids)
    queued = api.get("/v1/faxes", params={"account": "ci-list", "state": "queued"}).json()
    assert queued["items"] == []
    inbound = api.get("/v1/faxes", params={"account": "ci-list", "direction": "inbound"}).json()
    assert inbound["items"] == []
    assert_error(api.get("/v1/faxes", params={"limit": "many"}), 422)


# --- refusals ------------------------------------------------------------------------------------


def test_refusals_answer_json_errors(system: System, api: httpx.Client) -> None:
    body = {"account": "pv", "to": "5552345678", "document": {"base64": b64(pdf())}}
    assert_error(httpx.post(f"{system.web_url}/v1/faxes", json=body), 401)
    wrong = {"authorization": "Bearer not-the-token"}
    assert_error(httpx.post(f"{system.web_url}/v1/faxes", json=body, headers=wrong), 403)
    assert_error(httpx.get(f"{system.web_url}/v1/faxes", headers=wrong), 403)
    assert_error(api.get("/v1/faxes/fx_doesnotexist"), 404, "not_found")
    assert_error(api.post("/v1/faxes/fx_doesnotexist/cancel"), 404, "not_found")

    international = send(api, "pv", "+44 20 7946 0000")
    message = assert_error(international, 422, "bad_destination")
    assert "international" in message and "PrimeVox" in message
    assert "digits" in assert_error(send(api, "ci", "555-1234"), 422, "bad_destination")
    not_pdf = send(api, "pv", "5552345678", {"base64": b64(b"<html>not a pdf</html>")})
    assert_error(not_pdf, 422, "not_pdf")
    assert_error(send(api, "nobody", "5552345678"), 422, "unknown_account")
    assert_error(send(api, "pv", "5552345678", {"base64": "%%% not base64"}), 422)
    assert_error(api.post("/v1/faxes", json={"account": "pv"}), 422, "missing_field")
    assert_error(
        api.post("/v1/faxes", content=b"{not json", headers={"content-type": "application/json"}),
        422,
    )
    outside = send(api, "pv", "5552345678", callback_url="http://127.0.0.2:9/hook")
    assert_error(outside, 422, "callback_refused")

    big = pdf(size=MAX_DOCUMENT + 4096)
    assert_error(send(api, "pv", "5552345678", {"base64": b64(big)}), 413, "too_large")
    # Under the request cap (base64 is larger than the bytes) but over the document cap.
    just_over = pdf(size=MAX_DOCUMENT + 16)
    assert_error(send(api, "pv", "5552345678", {"base64": b64(just_over)}), 413, "too_large")
    huge = b64(pdf(size=MAX_DOCUMENT * 6 // 5))  # over the API's cap on a request's size
    body = json.dumps({"account": "pv", "to": "5552345678", "document": {"base64": huge}})

    def chunked() -> Iterator[bytes]:  # no content-length: the cap applies while reading
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536].encode()

    streamed = api.post(
        "/v1/faxes", content=chunked(), headers={"content-type": "application/json"}
    )
    assert "request over" in assert_error(streamed, 413, "too_large")  # refused while reading
    server = Server(big)
    try:
        by_url = send(api, "pv", "5552345678", {"url": f"{server.url}/big.pdf"})
        assert_error(by_url, 413, "too_large")
    finally:
        server.close()
    multipart = api.post(
        "/v1/faxes",
        data={"account": "pv", "to": "5552345678"},
        files={"document": ("big.pdf", big, "application/pdf")},
    )
    assert_error(multipart, 413, "too_large")


# --- the provider says no --------------------------------------------------------------------------


def test_busy_then_redial_delivers(system: System, sandbox: Any, api: httpx.Client) -> None:
    fast(sandbox, "primevox")
    sandbox.control("outcomes", provider="primevox", outcomes=["busy", "success"])
    fax = accepted(send(api, "pv", "5552345690"))
    first = system.wait_state(fax["id"], "submitted").provider_ids["job_id"]
    fast(sandbox, "primevox", seconds=120)  # the redial's job stays on the line
    second = wait_for(
        lambda: (j := system.record(fax["id"]).provider_ids["job_id"]) != first and j,
        30,
        "the redial's job",
    )
    url = system.webhook_url("pv", "status")
    # A late webhook about the busy first job must not touch the redialled fax.
    late = sandbox.control("fire", provider="primevox", kind="status", url=url, id=first)
    assert late["status"] == 200, late
    assert system.record(fax["id"]).provider_ids["job_id"] == second
    sandbox.control("fire", provider="primevox", kind="status", url=url, id=second, status="Sent")
    record = system.wait_state(fax["id"], "delivered", timeout=20)
    assert len(submits(sandbox, "primevox")) == 2
    assert record.attempts["redial"] == 1 and record.attempts["submit"] == 2
    assert "redial 1 of" in notes(record) and "busy" not in record.work.get("pushed_status", {})
    assert record.provider_ids["job_id"] == second == str(jobs(sandbox, "primevox")[-1]["id"])


def test_permanent_failures_fail_with_the_providers_words(
    system: System, sandbox: Any, api: httpx.Client
) -> None:
    fast(sandbox, "ucx", "primevox")
    sandbox.control("outcomes", provider="ucx", outcomes=["failed"])
    sandbox.control("outcomes", provider="primevox", outcomes=["bad_number"])
    line = accepted(send(api, "ucx", "14695550103"))
    number = accepted(send(api, "pv", "5552345691"))
    # A Canadian number is a valid NANP number to us; PrimeVox refuses it at submit.
    canadian = accepted(send(api, "pv", "+1 416 555 0101"))

    failed = system.wait_state(line["id"], "failed")
    assert failed.reason == "provider_error"
    assert "No response to MPS repeated 3 tries" in failed.reason_detail
    failed = system.wait_state(number["id"], "failed")
    assert failed.reason == "bad_destination" and "Invalid Number" in failed.reason_detail
    failed = system.wait_state(canadian["id"], "failed")
    assert failed.reason == "bad_destination"
    assert "You cannot fax international destinations" in failed.reason_detail
    assert len(submits(sandbox, "ucx")) == 1  # never redialled, never resubmitted
    assert len(submits(sandbox, "primevox")) == 2


def test_provider_failure_fails_over_to_the_fallback_account(
    system: System, sandbox: Any, api: httpx.Client
) -> None:
    fast(sandbox, "primevox", "callerip")
    sandbox.control("outcomes", provider="primevox", outcomes=["failed"])
    fax = accepted(send(api, "pv-fallback", "5552345692"))
    record = system.wait_state(fax["id"], "delivered", timeout=40)
    assert len(submits(sandbox, "primevox")) == 1
    [callerip] = submits(sandbox, "callerip")
    assert callerip["fields"]["number"] == "5552345692"
    assert record.work["route_account"] == "ci"
    [job] = jobs(sandbox, "callerip")
    assert record.provider_ids["job_id"] == job["id"]
    assert "failing over to ci" in notes(record)


# --- idempotency -----------------------------------------------------------------------------------


def test_idempotent_repeats_and_conflicts(system: System, sandbox: Any, api: httpx.Client) -> None:
    fast(sandbox, "ucx")
    document = {"base64": b64(pdf())}
    key = f"order-{uuid.uuid4().hex}"
    first = accepted(send(api, "ucx", "14695550104", document, key=key))
    again = accepted(send(api, "ucx", "14695550104", document, key=key), 200)
    assert again["id"] == first["id"]
    other = send(api, "ucx", "14695550199", document, key=key)
    assert_error(other, 409, "idempotency_conflict")

    s3 = s3_client(system.s3_endpoint)
    prefix = first["document_key"].rsplit("/", 1)[0] + "/"

    def objects() -> set[str]:  # the documents (a final fax also gets an {id}.json sidecar)
        listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
        return {o["Key"] for o in listing.get("Contents", []) if not o["Key"].endswith(".json")}

    before = objects()
    concurrent_key = f"burst-{uuid.uuid4().hex}"
    burst_doc = {"base64": b64(pdf())}

    def one(_: int) -> httpx.Response:
        with system.api() as client:
            return send(client, "ucx", "14695550105", burst_doc, key=concurrent_key)

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(one, range(20)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 19 + [202], [a.text for a in answers if a.status_code >= 300]
    ids = {a.json()["id"] for a in answers}
    assert len(ids) == 1
    for fax_id in (first["id"], *ids):
        system.wait_state(fax_id, "delivered")
    destinations = sorted(s["fields"]["destination"] for s in submits(sandbox, "ucx"))
    assert destinations == ["14695550104", "14695550105"]
    # One document object for the burst: the losers of the race removed theirs.
    assert objects() - before == {system.record(ids.pop()).document_key}


# --- crashes ---------------------------------------------------------------------------------------


def _kill_while_submitting(system: System, sandbox: Any, faxes: dict[str, str]) -> None:
    """``faxes``: provider → fax id, each with its submit hanging at the sandbox."""
    for provider, fax_id in faxes.items():
        wait_for(lambda p=provider: submits(sandbox, p), 20, f"the {provider} submit to start")  # type: ignore[misc]
        assert system.record(fax_id).state == "queued"
    system.kill_worker()
    system.start_worker()


def test_worker_killed_mid_submit_finds_the_job_and_sends_once(
    system: System, sandbox: Any, api: httpx.Client
) -> None:
    fast(sandbox, "ucx", "voipms")
    for provider in ("ucx", "voipms"):
        sandbox.control(
            "faults", provider=provider, operation=SUBMIT_OP[provider], kind="hang", seconds=2
        )
    ucx = accepted(send(api, "ucx", "14695550106"))
    vm = accepted(send(api, "vm", "5552345693"))
    _kill_while_submitting(system, sandbox, {"ucx": ucx["id"], "voipms": vm["id"]})
    for provider, fax in (("ucx", ucx), ("voipms", vm)):
        record = system.wait_state(fax["id"], "delivered", timeout=60)
        assert len(submits(sandbox, provider)) == 1, provider
        assert record.attempts["submit"] == 1
        assert "unknown" not in states(record)
    [job] = jobs(sandbox, "ucx")
    assert system.record(ucx["id"]).provider_ids["job_id"] == job["id"]


def test_worker_killed_mid_submit_without_a_job_list_goes_unknown(
    system: System, sandbox: Any, api: httpx.Client
) -> None:
    fast(sandbox, "primevox", "callerip")
    for provider in ("primevox", "callerip"):
        sandbox.control(
            "faults", provider=provider, operation=SUBMIT_OP[provider], kind="hang", seconds=2
        )
    pv = accepted(send(api, "pv", "5552345694"))
    ci = accepted(send(api, "ci", "5552345695"))
    _kill_while_submitting(system, sandbox, {"primevox": pv["id"], "callerip": ci["id"]})
    for provider, fax in (("primevox", pv), ("callerip", ci)):
        record = system.wait_state(fax["id"], "unknown", timeout=60)
        assert record.reason == "submit_outcome_unknown"
        assert "cannot confirm" in record.reason_detail and provider in record.reason_detail
        assert record.due_at is None  # it waits for an operator, never resubmitted blindly
    # The requests did reach the providers (they were only hanging): one each, never repeated.
    wait_for(lambda: len(jobs(sandbox, "callerip")) == 1, 10, "callerip job")
    assert len(submits(sandbox, "primevox")) == 1 and len(submits(sandbox, "callerip")) == 1


# --- status webhooks, cancel, events -----------------------------------------------------------------


def test_primevox_status_webhook_moves_the_record_at_once(
    system: System, sandbox: Any, api: httpx.Client
) -> None:
    fast(sandbox, "primevox", seconds=120)  # the sandbox's own status says Queued for a long time
    fax = accepted(send(api, "pv", "5552345696"))
    record = system.wait_state(fax["id"], "submitted")
    job_id = record.provider_ids["job_id"]
    url = system.webhook_url("pv", "status")

    def fire(word: str) -> None:
        answer = sandbox.control(
            "fire", provider="primevox", kind="status", url=url, id=job_id, status=word
        )
        assert answer["status"] == 200, answer

    fire("Sending")
    moved = system.record(fax["id"])  # applied before the webhook was answered
    assert moved.state == "sending" and "status webhook: Sending" in notes(moved)
    fire("Sent")
    done = system.wait_state(fax["id"], "delivered", timeout=10)
    assert "status webhook: Sent" in notes(done)
    assert [j["state"] for j in jobs(sandbox, "primevox")] == ["Queued"]

    # A webhook that comes before the worker has even saved the job id is kept for it.
    probe = sandbox.control("inbound", provider="primevox")
    next_job = int(probe["id"]) + 1
    early = httpx.post(
        url,
        json={"containerID": sb_primevox.VALID_CONTAINER, "efaxID": next_job, "status": "Sent"},
    )
    assert early.status_code == 200 and early.headers["faxrelay-outcome"] == "pending"
    fax = accepted(send(api, "pv", "5552345697"))
    done = system.wait_state(fax["id"], "delivered", timeout=10)
    assert done.provider_ids["job_id"] == str(next_job)


def test_cancel(system: System, sandbox: Any, api: httpx.Client) -> None:
    fast(sandbox, "ucx", seconds=120)
    fax = accepted(send(api, "ucx", "14695550107"))
    system.wait_state(fax["id"], "submitted")
    answer = api.post(f"/v1/faxes/{fax['id']}/cancel")
    assert answer.status_code == 202, answer.text
    assert answer.json()["state"] == "cancelled"
    [cancel] = sandbox.requests("ucx", "jobcancel")
    assert cancel["fields"]["job_id"] == system.record(fax["id"]).provider_ids["job_id"]
    assert jobs(sandbox, "ucx")[0]["state"] == "Failed"
    assert_error(api.post(f"/v1/faxes/{fax['id']}/cancel"), 409, "not_cancellable")

    fast(sandbox, "primevox", seconds=120)
    followed = accepted(send(api, "pv", "5552345689"))
    system.wait_state(followed["id"], "submitted")
    refused = assert_error(api.post(f"/v1/faxes/{followed['id']}/cancel"), 409, "not_cancellable")
    assert "primevox cannot cancel" in refused
    assert system.record(followed["id"]).state == "submitted"

    fast(sandbox, "callerip")
    done = accepted(send(api, "ci", "5552345698"))
    system.wait_state(done["id"], "delivered")
    message = assert_error(api.post(f"/v1/faxes/{done['id']}/cancel"), 409, "not_cancellable")
    assert "delivered" in message
    assert system.record(done["id"]).state == "delivered"


def test_callback_gets_signed_events(system: System, sandbox: Any, api: httpx.Client) -> None:
    fast(sandbox, "callerip")
    hook = Server()
    try:
        fax = accepted(send(api, "ci", "5552345699", callback_url=f"{hook.url}/events"))
        system.wait_state(fax["id"], "delivered")

        def types() -> list[str] | None:
            seen = [json.loads(body)["type"] for _, body in hook.posts]
            return seen if {"fax.submitted", "fax.delivered"} <= set(seen) else None

        wait_for(types, 20, "fax.submitted and fax.delivered at the callback")
    finally:
        hook.close()
    verifier = standardwebhooks.Webhook(EVENT_SECRET)
    for headers, body in hook.posts:
        event = verifier.verify(body, headers)
        assert event["data"]["id"] == fax["id"]
    delivered = next(json.loads(b) for _, b in hook.posts if b"fax.delivered" in b)
    assert delivered["data"]["state"] == "delivered"
    tampered_headers, tampered = hook.posts[0]
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        verifier.verify(tampered.replace(b"ci", b"cj", 1), tampered_headers)


# --- the Celery route ------------------------------------------------------------------------------


def test_send_fax_task_on_the_broker(system: System, sandbox: Any) -> None:
    from celery import Celery

    fast(sandbox, "ucx")
    # Another service on the same broker: its own Celery app, nothing of faxrelay's imported.
    app = Celery("other-service", broker=system.redis_url)
    key = f"celery-{uuid.uuid4().hex}"
    kwargs = {
        "account": "ucx",
        "to": "+1 469 555 0108",
        "document": {"base64": b64(pdf())},
        "idempotency_key": key,
        "metadata": {"from": "celery"},
    }
    app.send_task("faxrelay.send_fax", kwargs=kwargs)
    app.send_task("faxrelay.send_fax", kwargs=kwargs)  # a duplicated message: still one fax
    store = system.store()
    record = wait_for(lambda: store.lookup("idem:ucx", key), 30, "the queued send's record")
    record = system.wait_state(record.id, "delivered")
    assert record.to_number == "14695550108" and record.metadata == {"from": "celery"}
    assert [s["fields"]["destination"] for s in submits(sandbox, "ucx")] == ["14695550108"]

    # The same key used over HTTP names the same fax.
    with system.api() as client:
        again = client.post(
            "/v1/faxes",
            json={k: v for k, v in kwargs.items() if k != "idempotency_key"},
            headers={"idempotency-key": key},
        )
    assert accepted(again, 200)["id"] == record.id

    bad = {**kwargs, "to": "12", "idempotency_key": ""}
    app.send_task("faxrelay.send_fax", kwargs=bad)
    refusal = "SendRefused: 422 bad_destination: '12' has 2 digits"
    wait_for(lambda: refusal in system.log_tail(300), 20, "the refused task in the worker log")
