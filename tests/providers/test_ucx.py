"""UCX Virtual Fax: the shared provider contract, the client against the sandbox (real HTTP), and
MockTransport answers the docs do not promise."""

from __future__ import annotations

import hashlib
import io
import json
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from config.accounts import Account
from sandbox import ucx as sandbox_ucx
from sandbox.pdf import make_pdf
from tests.providers.contract import TIMEOUT as CONTRACT_TIMEOUT
from tests.providers.contract import Call, StatusWordsContract, TokenContract
from tests.providers.helpers import Answer, MockNetwork, fault, wait_for
from tests.providers.helpers import document as outgoing
from tests.sandbox_server import RunningSandbox
from worker.providers import provider_class
from worker.providers import ucx as ucx_module
from worker.providers.base import (
    BadDestinationError,
    FailureCause,
    InboundFax,
    JobState,
    JobStatus,
    OutcomeUnknownError,
    OutgoingDocument,
    Provider,
    ProviderAuthError,
    ProviderPermanentError,
    ProviderTransientError,
    SubmitResult,
)
from worker.providers.ucx import UcxClient

TO = "+1 (469) 555-0101"
DIALED = "14695550101"


def account(base_url: str, **overrides: str) -> Account:
    fields = {
        "client_id": sandbox_ucx.CLIENT_ID,
        "client_secret": sandbox_ucx.CLIENT_SECRET,
        "fax_id": sandbox_ucx.FAX_ID,
        **overrides,
    }
    return Account(name="ucx-test", provider="ucx", base_url=base_url, **fields)


@pytest.fixture
def client(sandbox: RunningSandbox, http: httpx.Client) -> UcxClient:
    return UcxClient(account(sandbox.base_url("ucx")), http)


def document(pages: int = 2) -> OutgoingDocument:
    return outgoing(make_pdf(pages), filename="letter.pdf")


def ops(sandbox: RunningSandbox) -> list[str]:
    return [r["operation"] for r in sandbox.requests("ucx")]


# --- registry, destinations ----------------------------------------------------------------


def test_registered_under_its_name() -> None:
    assert provider_class("ucx") is UcxClient
    assert UcxClient.capabilities.find_submitted and UcxClient.capabilities.cancel
    assert not UcxClient.capabilities.inbound_webhook


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("+1 (469) 555-0101", "14695550101"),
        ("1.469.555.0101", "14695550101"),
        ("011 44 20 7946 0958", "011442079460958"),
        ("[598]", "598"),
    ],
)
def test_normalize_destination_strips_formatting(given: str, expected: str) -> None:
    assert UcxClient.normalize_destination(given) == expected


@pytest.mark.parametrize(
    ("given", "words"),
    [
        ("", "empty"),
        ("469-555-CALL", "digits only"),
        ("12", "3 to 20"),
        ("1" * 21, "3 to 20"),
        ("469 555 0101 x12", "digits only"),
    ],
)
def test_normalize_destination_refuses(given: str, words: str) -> None:
    with pytest.raises(BadDestinationError) as info:
        UcxClient.normalize_destination(given)
    assert words in str(info.value)
    assert info.value.provider == "ucx"


def test_submit_refuses_bad_number_without_calling(
    client: UcxClient, sandbox: RunningSandbox
) -> None:
    with pytest.raises(BadDestinationError):
        client.submit(document(), "fax me")
    assert "filesend" not in ops(sandbox)


# --- token ----------------------------------------------------------------------------------


def test_check_reports_faxes_and_usage(client: UcxClient, sandbox: RunningSandbox) -> None:
    result = client.check()
    assert result["fax_id"] == sandbox_ucx.FAX_ID
    assert {f["name"] for f in result["faxes"]} == {"Sales", "Support"}
    assert result["usage"] == [{"id": "2", "state": "Running and idle", "jobCount": 0}]
    token_call = sandbox.requests("ucx", "token")[0]
    assert token_call["headers"]["authorization"].startswith("Basic ")
    faxlist_call = sandbox.requests("ucx", "faxlist")[0]
    assert faxlist_call["headers"]["authorization"] == f"Bearer {sandbox_ucx.TOKEN}"
    assert faxlist_call["headers"]["accept"] == "application/json"


def test_check_refuses_a_fax_id_the_ucx_does_not_have(
    sandbox: RunningSandbox, http: httpx.Client
) -> None:
    client = UcxClient(account(sandbox.base_url("ucx"), fax_id="9"), http)
    with pytest.raises(ProviderPermanentError, match=r"fax_id 9 is not one of .*2 \(Support\)"):
        client.check()


def test_wrong_credentials_are_an_auth_error(sandbox: RunningSandbox, http: httpx.Client) -> None:
    client = UcxClient(account(sandbox.base_url("ucx"), client_secret="wrong"), http)
    with pytest.raises(ProviderAuthError) as info:
        client.faxlist()
    assert info.value.http_status == 401
    assert info.value.provider_message == "Authentication failed"
    assert info.value.operation == "token"
    assert ops(sandbox) == ["token"]


def test_token_fetched_once_under_concurrent_use(
    client: UcxClient, sandbox: RunningSandbox
) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            client.faxlist()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert ops(sandbox).count("token") == 1
    assert ops(sandbox).count("faxlist") == 8


# --- submit and status --------------------------------------------------------------------


def test_submit_sends_multipart_and_returns_job_id(
    client: UcxClient, sandbox: RunningSandbox
) -> None:
    result = client.submit(document(2), TO)
    assert result.job_id.startswith("TX")
    assert result.raw["device"] == "ttyIAX2"
    call = sandbox.requests("ucx", "filesend")[0]
    assert call["fields"]["fax_id"] == sandbox_ucx.FAX_ID
    assert call["fields"]["destination"] == DIALED
    assert call["fields"]["attachment"]["filename"] == "letter.pdf"
    assert call["fields"]["attachment"]["size"] == len(make_pdf(2))


def test_submit_with_unknown_fax_id_is_permanent(
    sandbox: RunningSandbox, http: httpx.Client
) -> None:
    client = UcxClient(account(sandbox.base_url("ucx"), fax_id="77"), http)
    with pytest.raises(ProviderPermanentError) as info:
        client.submit(document(), TO)
    assert info.value.http_status == 400
    assert "Invalid fax ID" in info.value.provider_message


def test_success_goes_pending_active_done(client: UcxClient, sandbox: RunningSandbox) -> None:
    result = client.submit(document(2), TO)
    first = client.status(result.job_id)
    assert first.state is JobState.QUEUED and first.raw_status == "Pending"
    sandbox.control("clock", speed=50)
    final = wait_for(lambda: (s := client.status(result.job_id)).state.final and s)
    assert final.state is JobState.DELIVERED
    assert final.raw_status == "Done"
    assert final.pages == 2
    assert final.cause is None
    assert not final.provider_retried


@pytest.mark.parametrize(
    ("outcome", "state", "cause", "retried", "text"),
    [
        ("busy", JobState.FAILED, FailureCause.BUSY, True, "Busy signal detected"),
        ("no_answer", JobState.FAILED, FailureCause.NO_ANSWER, True, "No answer from remote"),
        ("bad_number", JobState.FAILED, FailureCause.BAD_NUMBER, False, "Invalid dialing command"),
        ("failed", JobState.FAILED, FailureCause.OTHER, False, "No response to MPS"),
        ("busy_then_success", JobState.DELIVERED, None, True, ""),
        ("blocked_then_success", JobState.DELIVERED, None, False, ""),
    ],
)
def test_outcomes_reach_their_final_state(
    client: UcxClient,
    sandbox: RunningSandbox,
    outcome: str,
    state: JobState,
    cause: FailureCause | None,
    retried: bool,
    text: str,
) -> None:
    sandbox.control("outcomes", provider="ucx", outcomes=[outcome])
    result = client.submit(document(1), TO)
    sandbox.control("clock", speed=50)
    final = wait_for(lambda: (s := client.status(result.job_id)).state.final and s)
    assert final.state is state
    assert final.cause is cause
    assert final.provider_retried is retried
    assert text in final.detail


def test_busy_sleeps_between_tries_with_the_reason(
    client: UcxClient, sandbox: RunningSandbox
) -> None:
    sandbox.control("outcomes", provider="ucx", outcomes=["busy"])
    result = client.submit(document(1), TO)
    job = sandbox.sb.jobs["ucx"][result.job_id]
    second_sleep = [offset for word, offset in job.plan if word == "Sleeping"][1]
    sandbox.control("clock", advance=second_sleep + 0.05)
    sleeping = client.status(result.job_id)
    assert sleeping.state is JobState.SENDING  # HylaFAX will redial: not final
    assert sleeping.raw_status == "Sleeping"
    assert sleeping.detail == "Busy signal detected"
    assert sleeping.cause is None
    assert sleeping.provider_retried


def test_status_after_job_left_the_queue_comes_from_records(
    client: UcxClient, sandbox: RunningSandbox
) -> None:
    sandbox.control("outcomes", provider="ucx", outcomes=["busy_then_success"])
    submitted = datetime.now(UTC)
    result = client.submit(document(2), TO)
    sandbox.control("clock", advance=sandbox.sb.job_duration["ucx"] + 0.1)
    in_queue = client.status(result.job_id)
    assert in_queue.state is JobState.DELIVERED
    assert "recordsget" not in ops(sandbox)
    sandbox.control("clock", advance=3 * sandbox.sb.job_duration["ucx"])
    later = client.status(result.job_id, TO, submitted)
    assert later.state is JobState.DELIVERED
    assert later.provider_retried and later.pages == 2
    assert later.raw["jobid"] == result.job_id
    assert ops(sandbox)[-4:] == ["jobstatus", "activejobs", "recordcount", "recordsget"]
    assert sandbox.requests("ucx", "jobstatus")[-1]["status"] == 404


def test_status_of_a_job_found_nowhere_is_unknown(client: UcxClient) -> None:
    status = client.status("TX999999")
    assert status.state is JobState.UNKNOWN
    assert not status.state.final
    assert "TX999999" in status.detail


def test_cancel_ends_the_job_cancelled(client: UcxClient, sandbox: RunningSandbox) -> None:
    result = client.submit(document(1), TO)
    client.cancel(result.job_id)
    call = sandbox.requests("ucx", "jobcancel")[0]
    assert call["method"] == "PUT" and call["fields"] == {"job_id": result.job_id}
    assert call["headers"]["content-type"] == "application/json"
    status = client.status(result.job_id)
    assert status.state is JobState.CANCELLED
    assert status.detail == "Job aborted by request"
    with pytest.raises(ProviderPermanentError, match="not removed"):
        client.cancel(result.job_id)


def test_cancel_unknown_job_is_permanent_not_found(client: UcxClient) -> None:
    with pytest.raises(ProviderPermanentError) as info:
        client.cancel("TX424242")
    assert info.value.http_status == 404
    assert info.value.provider_message == "Job not found"
    assert info.value.operation == "jobcancel"


# --- lost answers ---------------------------------------------------------------------------


def test_submit_timeout_is_outcome_unknown_and_find_submitted_recovers(
    sandbox: RunningSandbox, http: httpx.Client
) -> None:
    client = UcxClient(
        account(sandbox.base_url("ucx")), http, timeout=httpx.Timeout(0.4, connect=2.0)
    )
    client.token()
    since = datetime.now(UTC)
    fault(sandbox, "ucx", "filesend", kind="hang", seconds=1.0)
    with pytest.raises(OutcomeUnknownError) as info:
        client.submit(document(1), TO)
    assert info.value.operation == "filesend"
    assert ops(sandbox).count("filesend") == 1  # never retried inside the client
    (job_id,) = wait_for(lambda: dict(sandbox.sb.jobs["ucx"]), what="the hung job queued")
    found = client.find_submitted(TO, since)
    assert found is not None and found.job_id == job_id
    assert found.raw["destination"] == DIALED  # from activejobs while in progress
    assert client.find_submitted("14695550199", since) is None


def test_find_submitted_finds_completed_jobs_and_the_earliest_one(
    client: UcxClient, sandbox: RunningSandbox
) -> None:
    old = client.submit(document(1), TO)
    sandbox.control("clock", advance=600)
    since = datetime.fromtimestamp(sandbox.sb.clock.now(), UTC)
    first = client.submit(document(1), TO)
    sandbox.control("clock", advance=5)
    client.submit(document(1), TO)
    sandbox.control("clock", advance=3 * sandbox.sb.job_duration["ucx"])
    assert client.activejobs("TX") == []
    found = client.find_submitted(TO, since)
    assert found is not None
    assert found.job_id == first.job_id != old.job_id
    assert found.raw["phone_number"] == DIALED


# --- inbound --------------------------------------------------------------------------------


def store(sandbox: RunningSandbox, **fields: Any) -> dict[str, Any]:
    answer = sandbox.control("inbound", provider="ucx", **fields)
    assert isinstance(answer, dict)
    return answer


def test_list_download_delete_inbound(client: UcxClient, sandbox: RunningSandbox) -> None:
    since = datetime.now(UTC) - timedelta(seconds=5)
    stored = store(sandbox, pages=3, size=200_000, **{"from": "2142454571"})
    faxes = client.list_inbound(since)
    assert [f.provider_fax_id for f in faxes] == [stored["jobid"]]
    fax = faxes[0]
    assert fax.from_number == "2142454571" and fax.pages == 3
    assert fax.received_at is not None and fax.received_at >= since - timedelta(seconds=1)
    sink = io.BytesIO()
    written = client.download(fax, sink, max_bytes=10_000_000)
    assert written == stored["size"]
    assert hashlib.sha256(sink.getvalue()).hexdigest() == stored["sha256"]
    client.delete_inbound(fax)
    call = sandbox.requests("ucx", "recorddelete")[0]
    assert call["method"] == "PUT" and call["fields"] == {"job_id": stored["jobid"]}
    assert client.list_inbound(since) == []
    client.delete_inbound(fax)  # already gone: still fine
    with pytest.raises(ProviderPermanentError) as info:
        client.download(fax, io.BytesIO(), max_bytes=10_000_000)
    assert info.value.http_status == 404 and info.value.provider_message == "Job not found"


def test_list_inbound_walks_pages_newest_first_and_stops_at_since(
    client: UcxClient, sandbox: RunningSandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ucx_module, "PAGE_SIZE", 2)
    monkeypatch.setattr(ucx_module, "PAGE_SLACK", 0)
    for _ in range(6):
        store(sandbox)
    sandbox.control("clock", advance=3600)
    since = datetime.fromtimestamp(sandbox.sb.clock.now(), UTC)
    new = [store(sandbox)["jobid"] for _ in range(3)]
    faxes = client.list_inbound(since)
    assert [f.provider_fax_id for f in faxes] == list(reversed(new))
    pages = sandbox.requests("ucx", "recordsget")
    assert len(pages) == 3  # of 5: stops after the first page wholly older than since
    assert [p["query"]["offset"] for p in pages] == ["7", "5", "3"]
    assert len(client.list_inbound(since - timedelta(days=1))) == 9


def test_received_fax_past_expiry_is_gone(client: UcxClient, sandbox: RunningSandbox) -> None:
    stored = store(sandbox, expires_in=10)
    fax = InboundFax(provider_fax_id=stored["jobid"])
    sandbox.control("clock", advance=11)
    assert client.list_inbound(datetime.now(UTC) - timedelta(hours=1)) == []
    with pytest.raises(ProviderPermanentError, match="Job not found"):
        client.download(fax, io.BytesIO(), 10_000_000)


@pytest.mark.parametrize(
    ("kind", "error", "words"),
    [
        ("truncate", ProviderTransientError, "broke off|truncated"),
        ("expired", ProviderPermanentError, "Not Found"),
    ],
)
def test_download_faults(
    client: UcxClient,
    sandbox: RunningSandbox,
    kind: str,
    error: type[Exception],
    words: str,
) -> None:
    stored = store(sandbox, size=100_000)
    fault(sandbox, "ucx", "filedownload", kind=kind)
    with pytest.raises(error, match=words):
        client.download(InboundFax(stored["jobid"]), io.BytesIO(), 10_000_000)


def test_download_over_the_limit_is_refused(client: UcxClient, sandbox: RunningSandbox) -> None:
    stored = store(sandbox, size=50_000)
    with pytest.raises(ProviderPermanentError, match="limit"):
        client.download(InboundFax(stored["jobid"]), io.BytesIO(), max_bytes=1000)


def test_download_renews_token_on_401(client: UcxClient, sandbox: RunningSandbox) -> None:
    stored = store(sandbox)
    client.token()
    fault(sandbox, "ucx", "filedownload", kind="error", status=401)
    sink = io.BytesIO()
    assert client.download(InboundFax(stored["jobid"]), sink, 10_000_000) == stored["size"]
    assert ops(sandbox) == ["token", "filedownload", "token", "filedownload"]


def test_sent_document_downloads_and_tx_record_deletes(
    client: UcxClient, sandbox: RunningSandbox
) -> None:
    result = client.submit(document(2), TO)
    sink = io.BytesIO()
    client.download(InboundFax(result.job_id), sink, 10_000_000)
    assert sink.getvalue() == make_pdf(2)
    sandbox.control("clock", advance=sandbox.sb.job_duration["ucx"] + 1)
    assert client.recordcount("TX") == 1
    assert client.recorddelete(result.job_id) == f"ID {result.job_id} deleted"
    assert client.recordcount("TX") == 0


# --- operator calls and documented errors ---------------------------------------------------


def test_operator_calls(client: UcxClient, sandbox: RunningSandbox) -> None:
    client.submit(document(1), TO)
    store(sandbox)
    store(sandbox)
    assert client.faxusage("2") == [{"id": "2", "state": "Sending", "jobCount": 1}]
    assert len(client.faxusage()) == 2
    active = client.activejobs("TX")
    assert [a["destination"] for a in active] == [DIALED]
    assert client.activejobs("RX") == []
    assert client.recordcount("RX") == 2
    assert len(client.recordsget("RX")) == 2
    assert len(client.recordsget("RX", limit=1, offset=1)) == 1


def test_missing_or_invalid_parameter_is_a_permanent_400(client: UcxClient) -> None:
    with pytest.raises(ProviderPermanentError) as info:
        client.recordsget("XX")
    assert info.value.http_status == 400
    assert "type" in info.value.provider_message


def test_unknown_endpoint_is_a_permanent_404(sandbox: RunningSandbox, http: httpx.Client) -> None:
    client = UcxClient(account(f"{sandbox.url}/not-a-ucx"), http)
    with pytest.raises(ProviderPermanentError) as info:
        client.check()
    assert info.value.http_status == 404


def test_server_error_500_with_message_is_transient(
    client: UcxClient, sandbox: RunningSandbox
) -> None:
    body = json.dumps({"result": "Error", "message": "Server-side processing failure"})
    fault(sandbox, "ucx", "activejobs", status=500, body=body)
    with pytest.raises(ProviderTransientError) as info:
        client.activejobs("TX")
    assert info.value.http_status == 500
    assert info.value.provider_message == "Server-side processing failure"


def test_submit_500_page_is_outcome_unknown_but_503_is_transient(
    client: UcxClient, sandbox: RunningSandbox
) -> None:
    fault(sandbox, "ucx", "filesend", kind="error", status=500)
    with pytest.raises(OutcomeUnknownError):
        client.submit(document(1), TO)
    fault(sandbox, "ucx", "filesend", kind="error", status=503)
    with pytest.raises(ProviderTransientError) as info:
        client.submit(document(1), TO)
    assert not isinstance(info.value, OutcomeUnknownError)
    assert info.value.http_status == 503


def test_slow_answer_is_a_transient_timeout(sandbox: RunningSandbox, http: httpx.Client) -> None:
    client = UcxClient(account(sandbox.base_url("ucx")), http, timeout=httpx.Timeout(0.3))
    client.token()
    fault(sandbox, "ucx", "jobstatus", kind="hang", seconds=1.0)
    with pytest.raises(ProviderTransientError, match="no answer"):
        client.status("TX1")


# --- the shared provider contract (MockTransport) -------------------------------------------
MOCK_BASE = "https://ucx.example.test"


def success(request: httpx.Request) -> httpx.Response:
    """The UCX's success answer to each documented method."""
    method = request.url.path.rsplit("/", 1)[-1]
    if method == "filedownload":
        return httpx.Response(200, content=make_pdf(1), headers={"content-type": "application/pdf"})
    answers: dict[str, dict[str, Any]] = {
        "token": {"token": "t1"},
        "filesend": {"job_id": "TX5", "device": "ttyIAX2"},
        "jobstatus": {"status": {"jobid": "TX5", "state": "Done", "sent_pages": "1"}},
        "activejobs": {"count": 0, "list": []},
        "recordcount": {"count": 1},
        "recordsget": {"records": []},
        "jobcancel": {"status": "Job TX5 removed"},
        "recorddelete": {"status": "ID RX7 deleted"},
        "faxlist": {"faxes": [{"id": sandbox_ucx.FAX_ID, "name": "Support"}]},
        "faxusage": {"faxes": [{"id": sandbox_ucx.FAX_ID, "state": "Idle", "jobCount": 0}]},
    }
    return httpx.Response(200, json={"result": "Success", **answers[method]})


def token(client: Provider) -> str:
    assert isinstance(client, UcxClient)
    return client.token()


class TestContract(StatusWordsContract, TokenContract):
    provider = "ucx"

    def client(self, http: httpx.Client) -> Provider:
        return UcxClient(account(MOCK_BASE), http, CONTRACT_TIMEOUT)

    def calls(self) -> list[Call]:
        since = datetime.now(UTC) - timedelta(hours=1)
        fax = InboundFax("RX7")
        return [
            Call("token", token),
            Call("filesend", lambda c: c.submit(document(1), TO), sends=True),
            Call("jobstatus", lambda c: c.status("TX5")),
            Call("activejobs", lambda c: c.find_submitted(TO, since)),
            Call("jobcancel", lambda c: c.cancel("TX5")),
            Call("filedownload", lambda c: c.download(fax, io.BytesIO(), 10_000_000)),
            Call("recordcount", lambda c: c.list_inbound(since)),
            Call("recorddelete", lambda c: c.delete_inbound(fax)),
            Call("faxlist", lambda c: c.check()),
        ]

    def answer(self, request: httpx.Request) -> httpx.Response:
        return success(request)

    def is_token_request(self, request: httpx.Request) -> bool:
        return request.url.path.endswith(f"{ucx_module.API_PATH}/token")

    def token_answer(self, token: str) -> httpx.Response:
        return httpx.Response(200, json={"result": "Success", "token": token})

    def submit(self, client: Provider, doc: OutgoingDocument) -> SubmitResult:
        return client.submit(doc, TO)

    def status_answer(self, word: str) -> httpx.Response:
        status = {"state": word, "attempts": "1", "status_text": "zzz"}
        return httpx.Response(200, json={"result": "Success", "status": status})

    def ask_status(self, client: Provider) -> JobStatus:
        return client.status("TX5")


# --- answers the docs do not promise (MockTransport) ----------------------------------------


def mock_client(answer: Answer) -> UcxClient:
    """A client whose token requests succeed and whose other requests get ``answer``."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            return success(request)
        return answer(request)

    return UcxClient(account(MOCK_BASE), MockNetwork(handle).http)


@pytest.mark.parametrize(
    ("response", "error", "words"),
    [
        (
            httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"),
            ProviderTransientError,
            "502 Bad Gateway",
        ),
        (httpx.Response(200, text=""), ProviderTransientError, "empty body"),
        (httpx.Response(200, text="{not json"), ProviderTransientError, "not a JSON"),
        (httpx.Response(200, json=["a"]), ProviderTransientError, "not a JSON"),
        (httpx.Response(200, json={"faxes": []}), ProviderTransientError, "no result"),
        (
            httpx.Response(200, json={"result": "Error", "message": "License expired"}),
            ProviderAuthError,
            "License expired",
        ),
        (httpx.Response(403, text="Forbidden"), ProviderAuthError, "Forbidden"),
        (
            httpx.Response(200, json={"result": "Success", "faxes": "none"}),
            ProviderTransientError,
            "not a list",
        ),
    ],
)
def test_unpromised_answers(response: httpx.Response, error: type[Exception], words: str) -> None:
    client = mock_client(lambda request: response)
    with pytest.raises(error, match=words) as info:
        client.faxlist()
    assert info.value.provider == "ucx"  # type: ignore[attr-defined]
    assert info.value.operation == "faxlist"  # type: ignore[attr-defined]


def test_result_error_saying_authentication_failed_renews_the_token() -> None:
    tokens: list[str] = []
    answers = iter(
        [
            httpx.Response(200, json={"result": "Error", "message": "Authentication failed"}),
            httpx.Response(200, json={"result": "Success", "count": 3}),
        ]
    )

    def handler(request: httpx.Request) -> httpx.Response:
        tokens.append(request.headers["authorization"])
        return next(answers)

    assert mock_client(handler).recordcount("RX") == 3
    assert len(tokens) == 2


def test_status_falls_back_to_activejobs() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/jobstatus"):
            return httpx.Response(200, json={"result": "Success", "status": []})
        job = {"jobid": "TX83", "state": "Active", "totdials": "2", "status_text": "Dialing"}
        return httpx.Response(200, json={"result": "Success", "count": 1, "list": [job]})

    status = mock_client(handler).status("83")
    assert status.state is JobState.SENDING
    assert status.provider_retried


def test_status_text_words() -> None:
    failed = ucx_module.job_status({"state": "Failed", "status_text": "No local dialtone"})
    assert failed.cause is FailureCause.PROVIDER
    odd = ucx_module.job_status({"state": "Hibernating", "status_text": "zzz"})
    assert (odd.state, odd.raw_status, odd.detail) == (JobState.UNKNOWN, "Hibernating", "zzz")


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"result": "Success", "device": "ttyIAX2"}),
        httpx.Response(200, text="<html>OK</html>"),
        httpx.Response(504, text="Gateway Timeout"),
    ],
)
def test_submit_unreadable_success_is_outcome_unknown(response: httpx.Response) -> None:
    with pytest.raises(OutcomeUnknownError):
        mock_client(lambda request: response).submit(document(1), TO)


def test_submit_bad_destination_answer_is_bad_destination() -> None:
    answer = httpx.Response(400, json={"result": "Error", "message": "Invalid destination"})
    with pytest.raises(BadDestinationError) as info:
        mock_client(lambda request: answer).submit(document(1), TO)
    assert info.value.http_status == 400
