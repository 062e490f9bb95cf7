"""CallerIP: the shared provider contract, the client against the sandbox over real HTTP, and
MockTransport tests for answers the docs do not promise."""

from __future__ import annotations

import httpx
import pytest

from config.accounts import Account
from sandbox import callerip as sandbox_callerip
from sandbox.pdf import make_pdf
from tests.providers.contract import TIMEOUT as CONTRACT_TIMEOUT
from tests.providers.contract import Call, StatusWordsContract
from tests.providers.helpers import Answer, MockNetwork, document, fault, wait_for
from tests.sandbox_server import RunningSandbox
from worker.providers import provider_class
from worker.providers.base import (
    BadDestinationError,
    FailureCause,
    JobState,
    JobStatus,
    OutcomeUnknownError,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
)
from worker.providers.callerip import CallerIPClient

PDF = make_pdf(1)
IN_PROGRESS = ["Loading", "Converting", "Pending", "Sending"]


def make_account(base_url: str, token: str = sandbox_callerip.VALID_TOKEN) -> Account:
    return Account(name="cip", provider="callerip", base_url=base_url, token=token)


def client(
    sandbox: RunningSandbox,
    http: httpx.Client,
    token: str = sandbox_callerip.VALID_TOKEN,
    timeout: float | None = None,
) -> CallerIPClient:
    account = make_account(sandbox.base_url("callerip"), token)
    return CallerIPClient(account, http, httpx.Timeout(timeout) if timeout else None)


# --- against the sandbox ---------------------------------------------------------------


def test_registry_finds_the_module() -> None:
    assert provider_class("callerip") is CallerIPClient
    assert CallerIPClient.capabilities.track is True
    assert CallerIPClient.capabilities.find_submitted is False


def test_submit_sends_the_documented_form(sandbox: RunningSandbox, http: httpx.Client) -> None:
    result = client(sandbox, http).submit(document(PDF), "+1 (647) 495-9659")

    job = sandbox.sb.jobs["callerip"][result.job_id]
    assert job.to_number == "6474959659"
    assert job.document == PDF
    assert result.raw["status"] == "Loading"
    (send,) = sandbox.requests("callerip", "send")
    assert send["fields"] == {
        "token": sandbox_callerip.VALID_TOKEN,
        "number": "6474959659",
        "sendCover": "N",
        "coverFrom": "",
        "coverTo": "",
        "coverSubject": "",
        "coverMessage": "",
        "file": {"name": "fax.pdf", "size": len(PDF)},
    }


@pytest.mark.parametrize(
    ("outcome", "last_word", "last_state"),
    [("success", "Success", JobState.DELIVERED), ("failed", "Failed", JobState.FAILED)],
)
def test_a_job_passes_through_the_six_states(
    sandbox: RunningSandbox,
    http: httpx.Client,
    outcome: str,
    last_word: str,
    last_state: JobState,
) -> None:
    sandbox.control("outcomes", provider="callerip", outcomes=[outcome])
    sandbox.sb.job_duration["callerip"] = 60.0
    provider = client(sandbox, http)
    job_id = provider.submit(document(PDF), "6474959659").job_id
    sandbox.control("clock", speed=40)  # 60 s of provider time in 1.5 s
    seen: list[str] = []
    states: list[JobState] = []

    def final() -> bool:
        status = provider.status(job_id)
        if not seen or seen[-1] != status.raw_status:
            seen.append(status.raw_status)
            states.append(status.state)
        return status.state.final

    wait_for(final)
    assert seen == [*IN_PROGRESS, last_word]
    assert states == [
        JobState.QUEUED,
        JobState.QUEUED,
        JobState.QUEUED,
        JobState.SENDING,
        last_state,
    ]


@pytest.mark.parametrize("outcome", ["failed", "busy", "no_answer", "bad_number"])
def test_every_failure_ends_failed(
    sandbox: RunningSandbox, http: httpx.Client, outcome: str
) -> None:
    sandbox.control("outcomes", provider="callerip", outcomes=[outcome])
    provider = client(sandbox, http)
    job_id = provider.submit(document(PDF), "6474959659").job_id
    assert provider.status(job_id).state is JobState.QUEUED
    sandbox.control("clock", advance=sandbox.sb.job_duration["callerip"])
    status = provider.status(job_id)
    assert status.state is JobState.FAILED
    assert status.raw_status == "Failed"
    assert status.cause is FailureCause.OTHER
    assert status.detail


def test_a_refused_token_is_an_auth_error(sandbox: RunningSandbox, http: httpx.Client) -> None:
    provider = client(sandbox, http, token="not-a-line-token")
    with pytest.raises(ProviderAuthError) as info:
        provider.submit(document(PDF), "6474959659")
    assert info.value.provider == "callerip"
    assert info.value.operation == "send"
    assert info.value.http_status == 401
    assert "Invalid token" in info.value.provider_message
    with pytest.raises(ProviderAuthError) as info:
        provider.status("whatever")
    assert info.value.operation == "status"
    assert not sandbox.sb.jobs["callerip"]


def test_a_document_that_is_not_a_pdf_is_refused(
    sandbox: RunningSandbox, http: httpx.Client
) -> None:
    with pytest.raises(ProviderPermanentError) as info:
        client(sandbox, http).submit(document(b"<html>hello</html>"), "6474959659")
    assert not isinstance(info.value, BadDestinationError)
    assert info.value.http_status == 400
    assert "PDF" in info.value.provider_message
    assert '{"error"' in info.value.provider_message  # the raw body is kept
    assert not sandbox.sb.jobs["callerip"]


def test_status_of_an_unknown_fax_is_permanent(sandbox: RunningSandbox, http: httpx.Client) -> None:
    with pytest.raises(ProviderPermanentError) as info:
        client(sandbox, http).status("00000000-0000-4000-8000-000000000000")
    assert info.value.http_status == 404
    assert "Fax not found" in info.value.provider_message


def test_another_lines_fax_is_not_visible(sandbox: RunningSandbox, http: httpx.Client) -> None:
    job_id = client(sandbox, http).submit(document(PDF), "6474959659").job_id
    with pytest.raises(ProviderPermanentError) as info:
        client(sandbox, http, token=sandbox_callerip.OTHER_TOKEN).status(job_id)
    assert info.value.http_status == 404


def test_a_bad_destination_never_reaches_the_provider(
    sandbox: RunningSandbox, http: httpx.Client
) -> None:
    with pytest.raises(BadDestinationError) as info:
        client(sandbox, http).submit(document(PDF), "+44 20 7946 0958")
    assert "10" in info.value.provider_message
    assert not sandbox.requests("callerip")


def test_check_reads_the_token(sandbox: RunningSandbox, http: httpx.Client) -> None:
    answer = client(sandbox, http).check()
    assert answer["token"] == "accepted"
    assert "404" in answer["how"]
    (probe,) = sandbox.requests("callerip", "status")
    assert probe["query"]["token"] == sandbox_callerip.VALID_TOKEN
    assert probe["status"] == 404
    with pytest.raises(ProviderAuthError):
        client(sandbox, http, token="wrong").check()


def test_a_send_that_times_out_has_an_unknown_outcome(
    sandbox: RunningSandbox, http: httpx.Client
) -> None:
    fault(sandbox, "callerip", "send", kind="hang", seconds=1.0)
    with pytest.raises(OutcomeUnknownError) as info:
        client(sandbox, http, timeout=0.3).submit(document(PDF), "6474959659")
    assert info.value.operation == "send"
    # The provider took the fax after all: exactly why the outcome is "unknown", not "failed".
    wait_for(lambda: len(sandbox.sb.jobs["callerip"]) == 1)
    assert len(sandbox.requests("callerip", "send")) == 1  # never retried


def test_a_status_call_that_times_out_is_transient(
    sandbox: RunningSandbox, http: httpx.Client
) -> None:
    job_id = client(sandbox, http).submit(document(PDF), "6474959659").job_id
    fault(sandbox, "callerip", "status", kind="hang", seconds=1.0)
    with pytest.raises(ProviderTransientError) as info:
        client(sandbox, http, timeout=0.3).status(job_id)
    assert not isinstance(info.value, OutcomeUnknownError)
    wait_for(lambda: [r["status"] for r in sandbox.requests("callerip", "status")] == [200])


def test_a_provider_outage_is_transient(sandbox: RunningSandbox, http: httpx.Client) -> None:
    provider = client(sandbox, http)
    job_id = provider.submit(document(PDF), "6474959659").job_id
    fault(sandbox, "callerip", "status", kind="error", status=503)
    with pytest.raises(ProviderTransientError) as info:
        provider.status(job_id)
    assert info.value.http_status == 503
    assert "Service Unavailable" in info.value.provider_message
    assert provider.status(job_id).state is JobState.QUEUED  # the next poll works


# --- the sandbox's own refusals (the documented parameters the client always sends) --------


def _raw_send(sandbox: RunningSandbox, **fields: str) -> httpx.Response:
    data = {"token": sandbox_callerip.VALID_TOKEN, "number": "6474959659", "sendCover": "N"}
    data.update(fields)
    data = {k: v for k, v in data.items() if v != "-"}
    files = {"file": ("fax.pdf", PDF)} if fields.get("file") != "-" else None
    data.pop("file", None)
    return httpx.post(f"{sandbox.base_url('callerip')}/api/fax/send", data=data, files=files)


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"number": "-"}, 400, "number"),
        ({"number": "64749596"}, 400, "number"),
        ({"number": "16474959659"}, 400, "number"),
        ({"file": "-"}, 400, "file"),
        ({"sendCover": "-"}, 400, "sendCover"),
        ({"token": "-"}, 401, "token"),
    ],
)
def test_sandbox_refuses_missing_or_bad_parameters(
    sandbox: RunningSandbox, fields: dict[str, str], status: int, words: str
) -> None:
    answer = _raw_send(sandbox, **fields)
    assert answer.status_code == status
    assert words in answer.json()["error"]
    assert not sandbox.sb.jobs["callerip"]


def test_sandbox_status_needs_a_uuid(sandbox: RunningSandbox) -> None:
    answer = httpx.get(
        f"{sandbox.base_url('callerip')}/api/fax/status",
        params={"token": sandbox_callerip.VALID_TOKEN},
    )
    assert answer.status_code == 400
    assert "uuid" in answer.json()["error"]


# --- the shared provider contract (MockTransport) -------------------------------------------
MOCK_BASE = "https://fax.example.test:8000"


class TestContract(StatusWordsContract):
    provider = "callerip"

    def client(self, http: httpx.Client) -> Provider:
        return CallerIPClient(make_account(MOCK_BASE), http, CONTRACT_TIMEOUT)

    def calls(self) -> list[Call]:
        return [
            Call("send", lambda c: c.submit(document(PDF), "6474959659"), sends=True),
            Call("status", lambda c: c.status("u-1")),
            # A refusal of the made-up uuid that does not speak of the token is reported.
            Call("check", lambda c: c.check(), raises_on_refusal=False),
        ]

    def answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/fax/send":
            return httpx.Response(200, json={"uuid": "u-1", "status": "Loading"})
        return httpx.Response(200, json={"status": "Pending"})

    def status_answer(self, word: str) -> httpx.Response:
        return httpx.Response(200, json={"status": word})

    def ask_status(self, client: Provider) -> JobStatus:
        return client.status("u-1")


# --- answers the docs do not promise (MockTransport) -----------------------------------------
def mock_client(answer: Answer) -> CallerIPClient:
    return CallerIPClient(make_account(MOCK_BASE), MockNetwork(answer).http)


@pytest.mark.parametrize(
    ("word", "state"),
    [("success", JobState.DELIVERED), ("FAILED", JobState.FAILED), (" Sending ", JobState.SENDING)],
)
def test_status_words_ignore_case_and_spaces(word: str, state: JobState) -> None:
    assert (
        mock_client(lambda r: httpx.Response(200, json={"status": word})).status("u").state is state
    )


def test_a_failure_reason_is_kept_when_given() -> None:
    body = {"status": "Failed", "reason": "Remote fax busy"}
    status = mock_client(lambda r: httpx.Response(200, json=body)).status("u")
    assert status.detail == "Remote fax busy"
    assert status.raw == body


@pytest.mark.parametrize(
    ("answer", "error_class"),
    [
        (httpx.Response(200, content=b""), ProviderTransientError),
        (httpx.Response(200, content=b"{not json"), ProviderTransientError),
        (httpx.Response(200, json={"uuid": "x"}), ProviderTransientError),
        (httpx.Response(502, text="<html><h1>502 Bad Gateway</h1></html>"), ProviderTransientError),
        (httpx.Response(200, json={"error": "Invalid token"}), ProviderAuthError),
        (httpx.Response(400, json={"message": "uuid is malformed"}), ProviderPermanentError),
        (httpx.Response(403, text="Forbidden"), ProviderAuthError),
    ],
)
def test_unexpected_status_answers(
    answer: httpx.Response, error_class: type[ProviderError]
) -> None:
    with pytest.raises(error_class) as info:
        mock_client(lambda r: answer).status("u")
    assert type(info.value) is error_class
    assert info.value.operation == "status"
    assert info.value.http_status == answer.status_code


@pytest.mark.parametrize(
    ("answer", "error_class"),
    [
        (httpx.Response(200, content=b""), OutcomeUnknownError),
        (httpx.Response(200, content=b"<html>ok</html>"), OutcomeUnknownError),
        (httpx.Response(200, json={"status": "Loading"}), OutcomeUnknownError),
        (httpx.Response(200, json={"error": "Invalid token"}), ProviderAuthError),
        (httpx.Response(200, json={"error": "Daily limit reached"}), ProviderPermanentError),
        (httpx.Response(413, text="Request Entity Too Large"), ProviderPermanentError),
        (httpx.Response(500, json={"error": "Database error"}), ProviderTransientError),
        (httpx.Response(429, text="slow down"), ProviderTransientError),
    ],
)
def test_unexpected_send_answers(answer: httpx.Response, error_class: type[ProviderError]) -> None:
    with pytest.raises(error_class) as info:
        mock_client(lambda r: answer).submit(document(PDF), "6474959659")
    assert type(info.value) is error_class
    assert info.value.http_status == answer.status_code
    if answer.content:
        assert answer.text.strip()[:20] in info.value.provider_message  # raw body kept


@pytest.mark.parametrize(
    ("answer", "token"),
    [
        (httpx.Response(404, json={"error": "Fax not found"}), "accepted"),
        (httpx.Response(200, json={"status": "Failed"}), "accepted"),
        (httpx.Response(400, json={"error": "uuid is malformed"}), "unclear"),
    ],
)
def test_check_reads_answers(answer: httpx.Response, token: str) -> None:
    result = mock_client(lambda r: answer).check()
    assert result["token"] == token
    assert str(answer.status_code) in result["how"]


@pytest.mark.parametrize(
    ("answer", "error_class"),
    [
        (httpx.Response(403, text="Forbidden"), ProviderAuthError),
        (httpx.Response(400, json={"error": "token is invalid"}), ProviderAuthError),
        (httpx.Response(200, json={"error": "Invalid token"}), ProviderAuthError),
        (httpx.Response(503, text="down"), ProviderTransientError),
    ],
)
def test_check_raises_when_refused_or_down(
    answer: httpx.Response, error_class: type[ProviderError]
) -> None:
    with pytest.raises(error_class):
        mock_client(lambda r: answer).check()


def test_status_asks_for_the_submitted_uuid_with_the_token() -> None:
    answers = iter(
        [
            httpx.Response(200, json={"uuid": "u-1", "status": "Loading"}),
            httpx.Response(200, json={"status": "Pending"}),
        ]
    )
    network = MockNetwork(lambda r: next(answers))
    provider = CallerIPClient(make_account(MOCK_BASE), network.http)
    job_id = provider.submit(document(PDF), "6474959659").job_id
    assert provider.status(job_id).raw_status == "Pending"
    seen = network.requests
    assert [r.url.path for r in seen] == ["/api/fax/send", "/api/fax/status"]
    assert seen[1].url.params["uuid"] == "u-1"
    assert seen[1].url.params["token"] == sandbox_callerip.VALID_TOKEN


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("6474959659", "6474959659"),
        ("+1 (647) 495-9659", "6474959659"),
        ("1-647-495-9659", "6474959659"),
        ("647.495.9659", "6474959659"),
    ],
)
def test_normalize_destination(number: str, expected: str) -> None:
    assert CallerIPClient.normalize_destination(number) == expected


@pytest.mark.parametrize(
    "number", ["", "495-9659", "26474959659", "+44 20 7946 0958", "647-495-CALL", "0003*210"]
)
def test_normalize_destination_refuses(number: str) -> None:
    with pytest.raises(BadDestinationError) as info:
        CallerIPClient.normalize_destination(number)
    assert info.value.provider == "callerip"
    assert "10" in info.value.provider_message
