"""PrimeVox: the shared provider contract, the client against the sandbox over real HTTP, the
webhook parsers, and MockTransport tests for answers the docs do not promise."""

from __future__ import annotations

import hashlib
import io
import json
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode

import httpx
import pytest

from config.accounts import Account
from sandbox import primevox as pv_sandbox
from sandbox.pdf import make_pdf
from tests.providers.contract import TIMEOUT as CONTRACT_TIMEOUT
from tests.providers.contract import Call, StatusWordsContract
from tests.providers.helpers import Answer, MockNetwork, answer_with, fault, wait_for
from tests.sandbox_server import RunningSandbox, free_port
from worker.providers import primevox as pv
from worker.providers import provider_class
from worker.providers.base import (
    BadDestinationError,
    ErrorKind,
    FailureCause,
    InboundFax,
    JobState,
    JobStatus,
    OutcomeUnknownError,
    OutgoingDocument,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    WebhookError,
)
from worker.providers.fields import is_url, keyed, pick_keyed

PDF = make_pdf(2, 20_000, label="outgoing")
TIMEOUT = httpx.Timeout(5.0, connect=2.0)


# --- a loopback server standing in for S3 (documents by URL) and for faxrelay's webhook routes ---
@dataclass
class Posted:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FileServer:
    url: str
    files: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)
    posts: list[Posted] = field(default_factory=list)

    def serve(
        self, path: str, body: bytes, status: int = 200, ctype: str = "application/pdf"
    ) -> str:
        self.files[path.split("?")[0]] = (status, ctype, body)
        return f"{self.url}{path}"


@pytest.fixture(scope="module")
def file_server() -> Iterator[FileServer]:
    port = free_port()
    server_state = FileServer(url=f"http://127.0.0.1:{port}")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, ctype, body = server_state.files.get(
                self.path.split("?")[0], (404, "text/plain", b"NoSuchKey")
            )
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            server_state.posts.append(
                Posted(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            )
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield server_state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def files(file_server: FileServer) -> FileServer:
    file_server.files.clear()
    file_server.posts.clear()
    return file_server


def make_account(base_url: str, **overrides: str) -> Account:
    values: dict[str, Any] = {
        "name": "pv",
        "provider": "primevox",
        "base_url": base_url,
        "auth": pv_sandbox.VALID_AUTH,
        "container_id": pv_sandbox.VALID_CONTAINER,
        "box_id": pv_sandbox.VALID_BOX,
    }
    values.update(overrides)
    return Account(**values)


@pytest.fixture
def provider(sandbox: RunningSandbox, http: httpx.Client) -> pv.PrimeVoxClient:
    return pv.PrimeVoxClient(make_account(sandbox.base_url("primevox")), http, TIMEOUT)


def presigned(files: FileServer, body: bytes = PDF, **kwargs: Any) -> str:
    """A document URL shaped like an S3 presigned URL (&, =, %2F in the query)."""
    url = files.serve("/bucket/outbound/fax.pdf", body, **kwargs)
    return url + "?X-Amz-Credential=AKIA%2F20240101%2Fus-east-1&X-Amz-Signature=abc%3D&x=1"


def document(url: str) -> OutgoingDocument:
    return OutgoingDocument("fax.pdf", io.BytesIO(PDF), len(PDF), url=url)


def db_error(message: str) -> dict[str, Any]:
    return {"kind": "error", "status": 200, "body": json.dumps({"error": message})}


# --- registry and class data ------------------------------------------------------------------------
def test_registered_with_its_capabilities() -> None:
    cls = provider_class("primevox")
    assert cls is pv.PrimeVoxClient
    assert cls.inbound_retention_days == 30
    caps = cls.capabilities
    assert (caps.track, caps.status_webhook, caps.inbound_webhook) == (True, True, True)
    assert not (caps.cancel or caps.list_inbound or caps.delete_inbound or caps.find_submitted)


def test_undocumented_operations_are_refused_without_a_request(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient
) -> None:
    for call in (
        lambda: provider.cancel("1"),
        lambda: provider.find_submitted("5552345678", datetime.now(UTC)),
        lambda: provider.list_inbound(datetime.now(UTC)),
        lambda: provider.delete_inbound(InboundFax("1")),
    ):
        with pytest.raises(ProviderPermanentError, match="no such operation"):
            call()
    assert sandbox.requests("primevox") == []


# --- destinations ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("+1 (555) 234-5678", "5552345678"),
        ("555.234.5678", "5552345678"),
        ("15552345678", "5552345678"),
        ("[555] 234 5678", "5552345678"),
        ("  5552345678 ", "5552345678"),
    ],
)
def test_normalize_destination(given: str, expected: str) -> None:
    assert pv.PrimeVoxClient.normalize_destination(given) == expected


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("+44 20 7946 0958", "international"),
        ("011 44 20 7946 0958", "international"),
        ("442079460958", "international"),
        ("+33 1 23 45 67 89", "international"),
        ("12345", "expected 10 digits"),
        ("155523456789", "expected 10 digits"),
        ("555-234-567a", "not a phone number"),
        ("", "empty"),
        ("0552345678", "cannot start with 0 or 1"),
        ("5551234567", "cannot start with 0 or 1"),
    ],
)
def test_normalize_destination_refuses(given: str, reason: str) -> None:
    with pytest.raises(BadDestinationError, match=reason) as caught:
        pv.PrimeVoxClient.normalize_destination(given)
    assert caught.value.provider == "primevox"


def test_submit_refuses_a_bad_number_before_any_request(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer
) -> None:
    with pytest.raises(BadDestinationError, match="international"):
        provider.submit(document(presigned(files)), "+44 20 7946 0958")
    assert sandbox.requests("primevox") == []


# --- submit against the sandbox ----------------------------------------------------------------------
def test_submit_sends_the_documented_form_and_provider_fetches_the_url(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer
) -> None:
    url = presigned(files)
    result = provider.submit(document(url), "+1 (555) 234-5678")
    assert result.job_id.isdigit()
    assert result.raw["faxID"] == int(result.job_id)
    (logged,) = sandbox.requests("primevox", "send")
    assert logged["method"] == "POST"
    assert logged["path"] == "/primevox/api/fax_send.php"
    assert logged["headers"]["content-type"].startswith("application/x-www-form-urlencoded")
    assert logged["query"] == {}
    assert logged["fields"] == {
        "auth": pv_sandbox.VALID_AUTH,
        "containerID": pv_sandbox.VALID_CONTAINER,
        "boxID": pv_sandbox.VALID_BOX,
        "toNumber": "5552345678",
        "fileUrl": url,  # the presigned URL arrives intact
    }
    job = sandbox.sb.jobs["primevox"][result.job_id]
    assert job.document == PDF  # the sandbox really downloaded it
    assert job.to_number == "5552345678"


@pytest.mark.parametrize(
    ("outcome", "state", "cause", "raw_word"),
    [
        ("success", JobState.DELIVERED, None, "Sent"),
        ("failed", JobState.FAILED, FailureCause.OTHER, "Failed"),
        ("busy", JobState.FAILED, FailureCause.BUSY, "Busy"),
        ("no_answer", JobState.FAILED, FailureCause.NO_ANSWER, "No Answer"),
        ("bad_number", JobState.FAILED, FailureCause.BAD_NUMBER, "Failed: Invalid Number"),
    ],
)
def test_jobs_reach_their_final_state(
    sandbox: RunningSandbox,
    provider: pv.PrimeVoxClient,
    files: FileServer,
    outcome: str,
    state: JobState,
    cause: FailureCause | None,
    raw_word: str,
) -> None:
    sandbox.control("outcomes", provider="primevox", outcomes=[outcome])
    sandbox.control("clock", speed=50)
    job_id = provider.submit(document(presigned(files)), "5552345678").job_id
    status = wait_for(lambda: (s := provider.status(job_id)).state.final and s)
    assert (status.state, status.cause, status.raw_status) == (state, cause, raw_word)
    assert status.raw == {"status": raw_word}
    (logged, *_) = sandbox.requests("primevox", "status")
    assert logged["query"] == {
        "auth": pv_sandbox.VALID_AUTH,
        "containerID": pv_sandbox.VALID_CONTAINER,
        "efaxID": job_id,
    }


def test_job_moves_queued_sending_delivered(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer
) -> None:
    sandbox.control("duration", provider="primevox", seconds=100)
    job_id = provider.submit(document(presigned(files)), "5552345678").job_id
    seen = [provider.status(job_id).state]
    sandbox.control("clock", advance=40)
    seen.append(provider.status(job_id).state)
    sandbox.control("clock", advance=70)
    seen.append(provider.status(job_id).state)
    assert seen == [JobState.QUEUED, JobState.SENDING, JobState.DELIVERED]


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"auth": "wrong"}, ProviderAuthError, pv_sandbox.ERR_AUTH),
        ({"container_id": "999999"}, ProviderAuthError, pv_sandbox.ERR_CONTAINER),
        ({"box_id": "box-a"}, ProviderAuthError, pv_sandbox.ERR_BOX),
        ({"box_id": pv_sandbox.OTHER_BOX}, ProviderAuthError, pv_sandbox.ERR_BOX_SCOPE),
    ],
)
def test_submit_credential_errors(
    sandbox: RunningSandbox,
    http: httpx.Client,
    files: FileServer,
    overrides: dict[str, str],
    error: type[ProviderError],
    message: str,
) -> None:
    provider = pv.PrimeVoxClient(
        make_account(sandbox.base_url("primevox"), **overrides), http, TIMEOUT
    )
    with pytest.raises(error) as caught:
        provider.submit(document(presigned(files)), "5552345678")
    exc = caught.value
    assert (exc.provider, exc.operation, exc.http_status, exc.provider_message) == (
        "primevox",
        "submit",
        200,
        message,
    )
    assert sandbox.sb.jobs["primevox"] == {}


def test_submit_international_refused_by_provider(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer
) -> None:
    # A Canadian number passes our US-shape check; PrimeVox refuses it as international.
    with pytest.raises(BadDestinationError) as caught:
        provider.submit(document(presigned(files)), "+1 416 555 0123")
    assert caught.value.provider_message == pv_sandbox.ERR_INTERNATIONAL
    assert caught.value.kind is ErrorKind.BAD_DESTINATION


@pytest.mark.parametrize(
    ("serve", "message"),
    [
        ({"body": b"<html>Access Denied</html>", "ctype": "text/html"}, pv_sandbox.ERR_NOT_PDF),
        ({"body": b"<Error>Request has expired</Error>", "status": 403}, pv_sandbox.ERR_FILE),
        ({"body": PDF[: len(PDF) // 2]}, pv_sandbox.ERR_FILE),  # cut short
    ],
)
def test_submit_file_errors(
    sandbox: RunningSandbox,
    provider: pv.PrimeVoxClient,
    files: FileServer,
    serve: dict[str, Any],
    message: str,
) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        provider.submit(document(presigned(files, **serve)), "5552345678")
    assert caught.value.provider_message == message
    assert sandbox.sb.jobs["primevox"] == {}


def test_submit_without_document_url_sends_nothing(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient
) -> None:
    with pytest.raises(ProviderPermanentError, match="by URL"):
        provider.submit(OutgoingDocument("fax.pdf", io.BytesIO(PDF), len(PDF)), "5552345678")
    assert sandbox.requests("primevox") == []


@pytest.mark.parametrize(
    "message",
    [pv_sandbox.ERR_DB_CONNECT, pv_sandbox.ERR_DB_COMMIT],
)
def test_submit_database_errors_are_transient(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer, message: str
) -> None:
    fault(sandbox, "primevox", "send", **db_error(message))
    with pytest.raises(ProviderTransientError) as caught:
        provider.submit(document(presigned(files)), "5552345678")
    assert caught.value.provider_message == message
    assert len(sandbox.requests("primevox", "send")) == 1  # never retried inside the client


def test_submit_timeout_after_sending_is_outcome_unknown(
    sandbox: RunningSandbox, http: httpx.Client, files: FileServer
) -> None:
    provider = pv.PrimeVoxClient(
        make_account(sandbox.base_url("primevox")), http, httpx.Timeout(0.3, connect=2.0)
    )
    fault(sandbox, "primevox", "send", kind="hang", seconds=1.0)
    with pytest.raises(OutcomeUnknownError) as caught:
        provider.submit(document(presigned(files)), "5552345678")
    assert caught.value.operation == "submit"
    assert len(sandbox.requests("primevox", "send")) == 1
    # … and indeed the provider went on to queue the fax: a blind retry would send it twice.
    wait_for(lambda: sandbox.sb.jobs["primevox"])


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (503, "", ProviderTransientError),  # the sandbox's HTML outage page
        (500, "", OutcomeUnknownError),
        (502, "<html>Bad Gateway</html>", OutcomeUnknownError),
        (200, "<html><body>Maintenance</body></html>", OutcomeUnknownError),
        (404, "<html>Not Found</html>", ProviderPermanentError),
        (401, "<html>Unauthorized</html>", ProviderAuthError),
    ],
)
def test_submit_unreadable_answers(
    sandbox: RunningSandbox,
    provider: pv.PrimeVoxClient,
    files: FileServer,
    status: int,
    body: str,
    error: type[ProviderError],
) -> None:
    fault(sandbox, "primevox", "send", kind="error", status=status, body=body)
    with pytest.raises(error) as caught:
        provider.submit(document(presigned(files)), "5552345678")
    assert type(caught.value) is error
    assert caught.value.http_status == status


def test_submit_connection_refused_is_transient(http: httpx.Client, files: FileServer) -> None:
    provider = pv.PrimeVoxClient(make_account(f"http://127.0.0.1:{free_port()}"), http, TIMEOUT)
    with pytest.raises(ProviderTransientError, match="could not connect"):
        provider.submit(document(presigned(files)), "5552345678")


# --- sandbox checks the client cannot provoke ---------------------------------------------------------
def form_post(sandbox: RunningSandbox, **fields: str) -> dict[str, Any]:
    answer = httpx.post(
        sandbox.base_url("primevox") + "/api/fax_send.php",
        content=urlencode(fields),
        headers={"content-type": "application/x-www-form-urlencoded"},
        timeout=10,
    )
    assert answer.status_code == 200
    data: dict[str, Any] = answer.json()
    return data


def test_sandbox_send_documented_missing_parameter_errors(
    sandbox: RunningSandbox, files: FileServer
) -> None:
    good = {
        "auth": pv_sandbox.VALID_AUTH,
        "containerID": pv_sandbox.VALID_CONTAINER,
        "boxID": pv_sandbox.VALID_BOX,
        "toNumber": "5552345678",
        "fileUrl": presigned(files),
    }
    without_to = {k: v for k, v in good.items() if k != "toNumber"}
    without_url = {k: v for k, v in good.items() if k != "fileUrl"}
    assert form_post(sandbox, **without_to) == {"error": pv_sandbox.ERR_TO_MISSING}
    assert form_post(sandbox, **without_url) == {"error": pv_sandbox.ERR_NO_FILE_URL}
    # Case-sensitive names: containerId is not containerID.
    wrong_case = {("containerId" if k == "containerID" else k): v for k, v in good.items()}
    assert form_post(sandbox, **wrong_case) == {"error": pv_sandbox.ERR_CONTAINER}
    # Parameters must be in the body: the query string does not count.
    answer = httpx.post(sandbox.base_url("primevox") + "/api/fax_send.php", params=good, timeout=10)
    assert answer.json() == {"error": pv_sandbox.ERR_CONTAINER}
    # A file URL off loopback is never fetched by the sandbox.
    assert form_post(sandbox, **{**good, "fileUrl": "http://203.0.113.7/x.pdf"}) == {
        "error": pv_sandbox.ERR_FILE
    }
    assert sandbox.sb.jobs["primevox"] == {}
    # The client maps both missing-parameter answers.
    assert pv.error_kind(pv_sandbox.ERR_TO_MISSING) is ErrorKind.BAD_DESTINATION
    assert pv.error_kind(pv_sandbox.ERR_NO_FILE_URL) is ErrorKind.PERMANENT


# --- status -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("overrides", "job", "error", "message"),
    [
        ({"auth": "nope"}, "real", ProviderAuthError, pv_sandbox.ERR_AUTH),
        ({"container_id": "12345"}, "real", ProviderAuthError, pv_sandbox.ERR_CONTAINER),
        ({}, "424242", ProviderPermanentError, pv_sandbox.ERR_EFAX_ID),
    ],
)
def test_status_documented_errors(
    sandbox: RunningSandbox,
    http: httpx.Client,
    provider: pv.PrimeVoxClient,
    files: FileServer,
    overrides: dict[str, str],
    job: str,
    error: type[ProviderError],
    message: str,
) -> None:
    job_id = provider.submit(document(presigned(files)), "5552345678").job_id
    other = pv.PrimeVoxClient(
        make_account(sandbox.base_url("primevox"), **overrides), http, TIMEOUT
    )
    with pytest.raises(error) as caught:
        other.status(job_id if job == "real" else job)
    assert type(caught.value) is error
    assert (caught.value.operation, caught.value.provider_message) == ("status", message)


@pytest.mark.parametrize("message", [pv_sandbox.ERR_DB_CONNECT, pv_sandbox.ERR_DB_STATUS])
def test_status_database_errors_are_transient(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, message: str
) -> None:
    fault(sandbox, "primevox", "status", **db_error(message))
    with pytest.raises(ProviderTransientError) as caught:
        provider.status("1")
    assert caught.value.provider_message == message


def test_status_slow_answer_is_a_transient_timeout(
    sandbox: RunningSandbox, http: httpx.Client
) -> None:
    provider = pv.PrimeVoxClient(
        make_account(sandbox.base_url("primevox")), http, httpx.Timeout(0.3, connect=2.0)
    )
    fault(sandbox, "primevox", "status", kind="hang", seconds=1.0)
    started = time.monotonic()
    with pytest.raises(ProviderTransientError, match="no answer") as caught:
        provider.status("1")
    assert not isinstance(caught.value, OutcomeUnknownError)
    assert time.monotonic() - started < 1.0


def test_status_outage_page_is_transient(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient
) -> None:
    fault(sandbox, "primevox", "status", kind="error", status=503)
    with pytest.raises(ProviderTransientError, match="503 Service Unavailable") as caught:
        provider.status("1")
    assert caught.value.http_status == 503


# --- check -----------------------------------------------------------------------------
def test_check_proves_credentials_without_sending(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient
) -> None:
    result = provider.check()
    assert result["credentials"] == "ok"
    assert result["answer"] == pv_sandbox.ERR_EFAX_ID
    assert [r["operation"] for r in sandbox.requests("primevox")] == ["status"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"auth": "nope"}, pv_sandbox.ERR_AUTH),
        ({"container_id": "000000"}, pv_sandbox.ERR_CONTAINER),
    ],
)
def test_check_reports_refused_credentials(
    sandbox: RunningSandbox, http: httpx.Client, overrides: dict[str, str], message: str
) -> None:
    provider = pv.PrimeVoxClient(
        make_account(sandbox.base_url("primevox"), **overrides), http, TIMEOUT
    )
    with pytest.raises(ProviderAuthError) as caught:
        provider.check()
    assert (caught.value.operation, caught.value.provider_message) == ("check", message)


# --- inbound: webhook from the sandbox, then download ----------------------------------------------------
def receive(
    sandbox: RunningSandbox, files: FileServer, **options: Any
) -> tuple[dict[str, Any], Posted]:
    stored = sandbox.control(
        "inbound", provider="primevox", pages=3, size=150_000, **{"from": "5551230000"}
    )
    assert isinstance(stored, dict)
    fired = sandbox.control(
        "fire", provider="primevox", kind="inbound", url=f"{files.url}/hook", id=stored["id"],
        **options,
    )  # fmt: skip
    assert fired == {"status": 200, "body": "ok", "headers": {}}  # a plain receiver
    return stored, files.posts[-1]


@pytest.mark.parametrize(
    "options", [{}, {"variant": "alt"}, {"variant": "bare"}, {"multipart": True}]
)
def test_inbound_webhook_then_download(
    sandbox: RunningSandbox,
    provider: pv.PrimeVoxClient,
    files: FileServer,
    options: dict[str, Any],
) -> None:
    stored, posted = receive(sandbox, files, **options)
    event = pv.PrimeVoxClient.parse_inbound_webhook(posted.headers, posted.body)
    fax = event.fax
    assert fax is not None
    assert fax.provider_fax_id == stored["id"]
    assert fax.download_url == stored["download_url"]
    assert event.raw == fax.raw and len(fax.raw) >= 3  # every raw field kept
    if options.get("variant") != "bare":
        assert fax.pages == 3
        assert fax.to_number == "5559870000"
        assert fax.received_at is not None
        assert abs(fax.received_at.timestamp() - sandbox.sb.clock.now()) < 60
    assert "5551230000" in fax.from_number
    sink = io.BytesIO()
    written = provider.download(fax, sink, max_bytes=10_000_000)
    assert written == stored["size"]
    assert hashlib.sha256(sink.getvalue()).hexdigest() == stored["sha256"]
    (logged,) = sandbox.requests("primevox", "download")
    assert "auth" not in logged["query"]  # the key never rides on a download URL


def test_download_truncated_is_transient(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer
) -> None:
    _, posted = receive(sandbox, files)
    fax = pv.PrimeVoxClient.parse_inbound_webhook(posted.headers, posted.body).fax
    assert fax is not None
    fault(sandbox, "primevox", "download", kind="truncate")
    with pytest.raises(ProviderTransientError, match=r"truncated|broke off"):
        provider.download(fax, io.BytesIO(), max_bytes=10_000_000)
    sink = io.BytesIO()  # the next try gets the whole file
    provider.download(fax, sink, max_bytes=10_000_000)
    assert sink.getvalue().startswith(b"%PDF") and sink.getvalue().rstrip().endswith(b"%%EOF")


def test_download_not_pdf_is_handed_over_for_quarantine(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer
) -> None:
    _, posted = receive(sandbox, files)
    fax = pv.PrimeVoxClient.parse_inbound_webhook(posted.headers, posted.body).fax
    assert fax is not None
    fault(sandbox, "primevox", "download", kind="not_pdf")
    sink = io.BytesIO()
    provider.download(fax, sink, max_bytes=10_000_000)
    assert sink.getvalue().startswith(b"<html>")


def test_download_expired_fault_is_permanent(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer
) -> None:
    _, posted = receive(sandbox, files)
    fax = pv.PrimeVoxClient.parse_inbound_webhook(posted.headers, posted.body).fax
    assert fax is not None
    fault(sandbox, "primevox", "download", kind="expired")
    with pytest.raises(ProviderPermanentError, match="30 days") as caught:
        provider.download(fax, io.BytesIO(), max_bytes=10_000_000)
    assert caught.value.http_status == 404


def test_download_after_retention_is_gone(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer
) -> None:
    _, posted = receive(sandbox, files)
    fax = pv.PrimeVoxClient.parse_inbound_webhook(posted.headers, posted.body).fax
    assert fax is not None
    sandbox.control("clock", advance=29 * 86400)
    provider.download(fax, io.BytesIO(), max_bytes=10_000_000)
    sandbox.control("clock", advance=2 * 86400)
    with pytest.raises(ProviderPermanentError) as caught:
        provider.download(fax, io.BytesIO(), max_bytes=10_000_000)
    assert caught.value.http_status == 404


def test_download_over_the_limit(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer
) -> None:
    _, posted = receive(sandbox, files)
    fax = pv.PrimeVoxClient.parse_inbound_webhook(posted.headers, posted.body).fax
    assert fax is not None
    with pytest.raises(ProviderPermanentError, match="limit"):
        provider.download(fax, io.BytesIO(), max_bytes=1000)


def test_download_server_error_and_missing_url(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer
) -> None:
    _, posted = receive(sandbox, files)
    fax = pv.PrimeVoxClient.parse_inbound_webhook(posted.headers, posted.body).fax
    assert fax is not None
    fault(sandbox, "primevox", "download", kind="error", status=502)
    with pytest.raises(ProviderTransientError) as caught:
        provider.download(fax, io.BytesIO(), max_bytes=10_000_000)
    assert caught.value.http_status == 502
    with pytest.raises(ProviderPermanentError, match="no download URL"):
        provider.download(InboundFax("7"), io.BytesIO(), max_bytes=10)


# --- status webhook ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["default", "alt"])
def test_status_webhook_from_sandbox(
    sandbox: RunningSandbox, provider: pv.PrimeVoxClient, files: FileServer, variant: str
) -> None:
    job_id = provider.submit(document(presigned(files)), "5552345678").job_id
    sandbox.control("clock", advance=10)
    sandbox.control(
        "fire", provider="primevox", kind="status", url=f"{files.url}/status", id=job_id,
        variant=variant,
    )  # fmt: skip
    posted = files.posts[-1]
    assert posted.headers["content-type"] == "application/json"
    event = pv.PrimeVoxClient.parse_status_webhook(posted.headers, posted.body)
    assert event.job_id == job_id
    assert event.status.state is JobState.DELIVERED
    assert event.raw == json.loads(posted.body)


def test_status_webhook_forms() -> None:
    parse = pv.PrimeVoxClient.parse_status_webhook
    urlencoded = parse(
        {"content-type": "application/x-www-form-urlencoded"},
        b"containerId=314159&efaxId=77&status=failed+-+busy",
    )
    assert (urlencoded.job_id, urlencoded.status.state) == ("77", JobState.FAILED)
    assert urlencoded.status.cause is FailureCause.BUSY
    nested = parse({}, b'{"data": {"FAXID": 78, "STATUS": "Sending"}, "containerID": "1"}')
    assert (nested.job_id, nested.status.state) == ("78", JobState.SENDING)
    errored = parse({}, json.dumps({"efaxID": 79, "error": pv_sandbox.ERR_DB_STATUS}).encode())
    assert errored.status.state is JobState.UNKNOWN
    assert errored.status.detail == pv_sandbox.ERR_DB_STATUS


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b'{"status": "Sent"', "not a JSON object"),
        (b'["Sent"]', "not a JSON object"),
        (b'{"status": "Sent", "containerID": "314159"}', "no fax id"),
        (b'{"efaxID": 5, "containerID": "314159"}', "no status"),
    ],
)
def test_status_webhook_refuses(body: bytes, match: str) -> None:
    with pytest.raises(WebhookError, match=match):
        pv.PrimeVoxClient.parse_status_webhook({"content-type": "application/json"}, body)


# --- inbound webhook parser --------------------------------------------------------------------------------
FORM = {"content-type": "application/x-www-form-urlencoded"}


def test_inbound_names_are_case_insensitive_and_raw_is_kept() -> None:
    body = urlencode(
        {
            "CONTAINERID": "314159",
            "BoxID": "4001",
            "Fax_ID": "abc-1",
            "FILE_URL": "https://pbx.example.net/efax/get.php?f=1",
            "Caller_ID_Num": "5551230000",
            "To_Number": "5559870000",
            "Num_Pages": "4",
            "Received": "2024-05-06 07:08:09",
            "unheard_of": "kept",
        }
    ).encode()
    event = pv.PrimeVoxClient.parse_inbound_webhook(FORM, body)
    fax = event.fax
    assert fax is not None
    assert fax.provider_fax_id == "abc-1"
    assert fax.download_url == "https://pbx.example.net/efax/get.php?f=1"
    assert (fax.from_number, fax.to_number, fax.pages) == ("5551230000", "5559870000", 4)
    assert fax.received_at == datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
    assert fax.raw["unheard_of"] == "kept" and fax.raw["CONTAINERID"] == "314159"


def test_inbound_single_unnamed_url_and_derived_id_is_stable() -> None:
    body = b"container_id=314159&x1=https%3A%2F%2Fpbx.example.net%2Fdl%2Fa9f3.pdf&ts=1714979289"
    first = pv.PrimeVoxClient.parse_inbound_webhook(FORM, body).fax
    second = pv.PrimeVoxClient.parse_inbound_webhook(FORM, body).fax
    assert first is not None and second is not None
    assert first.download_url == "https://pbx.example.net/dl/a9f3.pdf"
    assert first.provider_fax_id.startswith("url-")
    assert first.provider_fax_id == second.provider_fax_id
    assert first.received_at == datetime.fromtimestamp(1714979289, tz=UTC)
    other = pv.PrimeVoxClient.parse_inbound_webhook(FORM, body.replace(b"a9f3", b"b000")).fax
    assert other is not None and other.provider_fax_id != first.provider_fax_id


def test_inbound_json_and_multipart_pdf_part() -> None:
    event = pv.PrimeVoxClient.parse_inbound_webhook(
        {"content-type": "application/json"},
        b'{"containerID": "314159", "uniqueID": 991, "pdfUrl": "http://10.0.0.5/f.pdf"}',
    )
    assert event.fax is not None
    assert (event.fax.provider_fax_id, event.fax.download_url) == ("991", "http://10.0.0.5/f.pdf")
    pdf = make_pdf(1)
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="from"\r\n\r\n5551230000\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="fax"; filename="f.pdf"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + pdf
        + f"\r\n--{boundary}--\r\n".encode()
    )
    event = pv.PrimeVoxClient.parse_inbound_webhook(
        {"content-type": f"multipart/form-data; boundary={boundary}"}, body
    )
    assert event.pdf == pdf
    assert event.fax is not None and event.fax.provider_fax_id.startswith("pdf-")
    assert event.fax.from_number == "5551230000"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "empty"),
        (b"containerId=314159&efaxID=5&pages=1", "no download URL"),
        (b"efaxID=5&url=%2Frelative%2Fpath.pdf", "no download URL"),
        (b"a=http%3A%2F%2Fh%2F1&b=http%3A%2F%2Fh%2F2", "several URLs"),
        (b"&&&", "no fields"),
    ],
)
def test_inbound_refuses(body: bytes, match: str) -> None:
    with pytest.raises(WebhookError, match=match):
        pv.PrimeVoxClient.parse_inbound_webhook(FORM, body)


def test_inbound_invalid_json_is_refused() -> None:
    with pytest.raises(WebhookError, match="not a JSON object"):
        pv.PrimeVoxClient.parse_inbound_webhook({"content-type": "application/json"}, b"{oops")


# --- tables ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("word", "state", "cause"),
    [
        ("SUCCESS", JobState.DELIVERED, None),
        ("delivered", JobState.DELIVERED, None),
        ("no_answer", JobState.FAILED, FailureCause.NO_ANSWER),
        ("No-Answer", JobState.FAILED, FailureCause.NO_ANSWER),
        ("Failed: Busy", JobState.FAILED, FailureCause.BUSY),
        ("failed (no answer)", JobState.FAILED, FailureCause.NO_ANSWER),
        ("Error", JobState.FAILED, FailureCause.PROVIDER),
        ("Sending (attempt 2)", JobState.SENDING, None),
        ("  pending ", JobState.QUEUED, None),
        ("Canceled", JobState.CANCELLED, None),
        ("Transmogrified", JobState.UNKNOWN, None),
        ("", JobState.UNKNOWN, None),
    ],
)
def test_status_words(word: str, state: JobState, cause: FailureCause | None) -> None:
    status = pv.job_status(word)
    assert (status.state, status.cause, status.raw_status) == (state, cause, word)


def test_failure_word_saying_the_provider_redials_is_not_final() -> None:
    status = pv.job_status("Busy - will retry in 5 minutes")
    assert status.state is JobState.SENDING and not status.state.final
    assert (status.cause, status.provider_retried) == (FailureCause.BUSY, True)
    assert status.detail == "will retry in 5 minutes"


def test_every_documented_error_string_is_in_the_table() -> None:
    documented = [value for name, value in vars(pv_sandbox).items() if name.startswith("ERR_")]
    assert len(documented) == 13
    transient = {pv_sandbox.ERR_DB_CONNECT, pv_sandbox.ERR_DB_COMMIT, pv_sandbox.ERR_DB_STATUS}
    for message in documented:
        kind = pv.error_kind(message)
        assert kind is not None, message
        assert (kind is ErrorKind.TRANSIENT) == (message in transient), message
    # Spelling slack: case, spaces, trailing period, the docs' stray quote.
    assert pv.error_kind('"The file you want to send is not a PDF".') is ErrorKind.PERMANENT
    assert pv.error_kind("  your api auth key is invalid  ") is ErrorKind.AUTH
    assert pv.error_kind("Unknown issue with database query, something new") is ErrorKind.TRANSIENT
    assert pv.error_kind("Something entirely new.") is None


# --- MockTransport: answers the docs do not promise --------------------------------------------------------
MOCK_BASE = "https://pbx.example.net"
DOWNLOAD_URL = f"{MOCK_BASE}/efax/fax_download.php?efaxID=5&key=k"


def mock_provider(
    answer: Answer,
) -> tuple[pv.PrimeVoxClient, list[httpx.Request]]:
    network = MockNetwork(answer)
    return pv.PrimeVoxClient(make_account(MOCK_BASE), network.http, TIMEOUT), network.requests


def submit_document() -> OutgoingDocument:
    return OutgoingDocument(
        "f.pdf", io.BytesIO(PDF), len(PDF), url="https://bucket.s3.amazonaws.com/f.pdf?sig=a%2Fb"
    )


class TestContract(StatusWordsContract):
    provider = "primevox"

    def client(self, http: httpx.Client) -> Provider:
        return pv.PrimeVoxClient(make_account(MOCK_BASE), http, CONTRACT_TIMEOUT)

    def calls(self) -> list[Call]:
        fax = InboundFax("5", download_url=DOWNLOAD_URL)
        return [
            Call("submit", lambda c: c.submit(submit_document(), "5552345678"), sends=True),
            Call("status", lambda c: c.status("5")),
            Call("download", lambda c: c.download(fax, io.BytesIO(), 10_000_000)),
            Call("check", lambda c: c.check()),
        ]

    def answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == pv.SEND_PATH:
            return httpx.Response(200, json={"success": "Fax queued", "faxID": 5})
        if request.url.path == pv.STATUS_PATH:
            return httpx.Response(200, json={"status": "Sent"})
        return httpx.Response(200, content=PDF, headers={"content-type": "application/pdf"})

    def status_answer(self, word: str) -> httpx.Response:
        return httpx.Response(200, json={"status": word})

    def ask_status(self, client: Provider) -> JobStatus:
        return client.status("5")


def test_submit_sends_the_presigned_url_as_it_is() -> None:
    provider, seen = mock_provider(
        answer_with(200, '{"success": "ok", "faxID": 5}', "application/json")
    )
    document = submit_document()
    provider.submit(document, "5552345678")
    assert parse_qs(seen[0].content.decode())["fileUrl"] == [document.url]


def test_download_fetches_the_url_as_it_is() -> None:
    provider, seen = mock_provider(answer_with(200, PDF, "application/pdf"))
    provider.download(InboundFax("5", download_url=DOWNLOAD_URL), io.BytesIO(), 10_000_000)
    assert [str(r.url) for r in seen] == [DOWNLOAD_URL]  # no credentials added to it


@pytest.mark.parametrize(
    ("status", "body", "error", "match"),
    [
        (502, "<html><h1>502 Bad Gateway</h1></html>", ProviderTransientError, "502 Bad Gateway"),
        (200, "", ProviderTransientError, "empty body"),
        (200, "{not json", ProviderTransientError, "not a JSON object"),
        (200, "{}", ProviderTransientError, "neither status nor error"),
        (403, '{"error": "Your API Auth Key is invalid."}', ProviderAuthError, "Auth Key"),
        (200, '"Your API Auth Key is invalid."', ProviderAuthError, "Auth Key"),
        (200, '{"error": "Brand new failure"}', ProviderPermanentError, "Brand new"),
        (500, '{"error": "Brand new failure"}', ProviderTransientError, "Brand new"),
        (404, "Not Found", ProviderPermanentError, "Not Found"),
    ],
)
def test_status_unpromised_answers(
    status: int, body: str, error: type[ProviderError], match: str
) -> None:
    provider, _ = mock_provider(answer_with(status, body))
    with pytest.raises(error, match=match) as caught:
        provider.status("5")
    assert type(caught.value) is error
    assert caught.value.http_status == status


def test_status_reads_json_after_php_notices() -> None:
    body = (
        "<br />\n<b>Notice</b>: Undefined index: foo in <b>/var/www/api/fax_status.php</b>"
        ' on line <b>12</b><br />\n{"status": "Delivered", "pages": "3"}'
    )
    provider, _ = mock_provider(answer_with(200, body))
    status = provider.status("5")
    assert (status.state, status.pages) == (JobState.DELIVERED, 3)


@pytest.mark.parametrize(
    ("status", "body", "job_id"),
    [
        (200, '{"success": "queued", "faxID": "A77"}', "A77"),
        (200, '{"success": {"faxID": 78}}', "78"),
        (200, '{"Success": "queued", "FaxId": 79.0}', "79"),
        (200, '{"success": true, "error": false, "faxID": 80}', "80"),
    ],
)
def test_submit_success_shapes(status: int, body: str, job_id: str) -> None:
    provider, _ = mock_provider(answer_with(status, body, "application/json"))
    assert provider.submit(submit_document(), "5552345678").job_id == job_id


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, '{"success": "Fax queued"}', OutcomeUnknownError),  # taken, but no id to track
        (200, "", OutcomeUnknownError),
        (200, "<html>Welcome to nginx</html>", OutcomeUnknownError),
        (504, "<html>Gateway Timeout</html>", OutcomeUnknownError),
        (503, "<html>Service Unavailable</html>", ProviderTransientError),
        (429, "slow down", ProviderTransientError),
        (400, '{"error": "You cannot fax international destinations."}', BadDestinationError),
    ],
)
def test_submit_unpromised_answers(status: int, body: str, error: type[ProviderError]) -> None:
    provider, seen = mock_provider(answer_with(status, body))
    with pytest.raises(error) as caught:
        provider.submit(submit_document(), "5552345678")
    assert type(caught.value) is error
    assert caught.value.http_status == status
    assert len(seen) == 1


# --- the inbound webhook's field roles, against the plain lookup they replace -------------------
def _reference_inbound(fields: dict[str, Any]) -> dict[str, Any]:
    """What each role's value is by walking its list of names (the straightforward way)."""
    by_key = keyed(fields.items())
    named = [by_key[n] for n in pv.DOWNLOAD_URL_NAMES if n in by_key]
    download = None
    for value in named:
        candidate = value[0] if isinstance(value, list) and value else value
        if is_url(candidate):
            download = candidate
            break
    roles = {
        "fax_id": pv.FAX_ID_NAMES,
        "from": pv.FROM_NAMES,
        "to": pv.TO_NAMES,
        "pages": pv.PAGES_NAMES,
        "time": pv.TIME_NAMES,
    }
    picked = {role: pick_keyed(by_key, names) for role, names in roles.items()}
    picked["download"] = download
    return {role: value for role, value in picked.items() if value is not None}


def test_inbound_field_roles_pick_what_the_name_lists_say() -> None:
    rng = random.Random(20261123)
    names = [
        *pv.DOWNLOAD_URL_NAMES, *pv.FAX_ID_NAMES, *pv.FROM_NAMES, *pv.TO_NAMES,
        *pv.PAGES_NAMES, *pv.TIME_NAMES, "containerId", "boxId", "note", "extra",
    ]  # fmt: skip
    values: list[Any] = [
        "", " ", "5551230000", "http://files.example/f.pdf", "https://x.example/a?b=c", "ftp://x/y",
        "http://", 3, 0, True, None, [], ["", "http://first.example/p"], ["42", "43"], {"a": 1},
        "2025-06-01T12:00:00Z", "1748779200",
    ]  # fmt: skip

    def spelled(name: str) -> str:
        # The same name as a provider might spell it: case, underscores, dashes.
        out = "".join(c.upper() if rng.random() < 0.3 else c for c in name)
        if len(out) > 2 and rng.random() < 0.3:
            cut = rng.randrange(1, len(out))
            out = out[:cut] + rng.choice("_-") + out[cut:]
        return out

    for _ in range(3000):
        fields = {
            spelled(rng.choice(names)): rng.choice(values) for _ in range(rng.randrange(1, 12))
        }
        assert pv.INBOUND_FIELDS.pick(fields) == _reference_inbound(fields), fields
