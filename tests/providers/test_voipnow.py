"""VoipNow: the shared provider contract, the client against the sandbox over real HTTP, and
MockTransport tests for answers the docs do not promise."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from config.accounts import Account
from sandbox import voipnow as sandbox_voipnow
from sandbox.pdf import make_pdf
from tests.providers.contract import TIMEOUT as CONTRACT_TIMEOUT
from tests.providers.contract import Call, TokenContract
from tests.providers.helpers import Answer, MockNetwork, document, fault, wait_for
from tests.sandbox_server import RunningSandbox
from worker.providers import provider_class
from worker.providers.base import (
    BadDestinationError,
    JobState,
    OutcomeUnknownError,
    OutgoingDocument,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    SubmitResult,
)
from worker.providers.voipnow import VoipNowClient

PDF = make_pdf(2)


def make_account(base_url: str, **fields: str) -> Account:
    values: dict[str, Any] = {
        "provider": "voipnow",
        "base_url": base_url,
        "client_id": sandbox_voipnow.CLIENT_ID,
        "client_secret": sandbox_voipnow.CLIENT_SECRET,
        "extension": sandbox_voipnow.EXTENSION,
    }
    values.update(fields)
    return Account(name="vn", **values)


@pytest.fixture
def vn(sandbox: RunningSandbox) -> Iterator[RunningSandbox]:
    """The sandbox with VoipNow's token lifetime back at its default."""
    sandbox_voipnow.set_token_lifetime(sandbox.sb, sandbox_voipnow.DEFAULT_TOKEN_LIFETIME)
    yield sandbox
    sandbox_voipnow.set_token_lifetime(sandbox.sb, sandbox_voipnow.DEFAULT_TOKEN_LIFETIME)


def client(
    sandbox: RunningSandbox, http: httpx.Client, timeout: float | None = None, **fields: str
) -> VoipNowClient:
    account = make_account(sandbox.base_url("voipnow"), **fields)
    return VoipNowClient(account, http, httpx.Timeout(timeout) if timeout else None)


def statuses(sandbox: RunningSandbox, operation: str) -> list[int]:
    return [r["status"] for r in sandbox.requests("voipnow", operation)]


# --- against the sandbox ---------------------------------------------------------------


def test_registry_finds_the_module() -> None:
    assert provider_class("voipnow") is VoipNowClient
    assert VoipNowClient.capabilities.track is False
    assert VoipNowClient.capabilities.find_submitted is False


def test_submit_sends_the_pdf_and_the_recipient(vn: RunningSandbox, http: httpx.Client) -> None:
    result = client(vn, http).submit(document(PDF), "+1 (555) 123-4567")

    jobs = vn.sb.jobs["voipnow"]
    assert list(jobs) == [result.job_id]
    job = jobs[result.job_id]
    assert job.document == PDF
    assert job.extra["recipients"] == ["15551234567"]
    assert result.raw["uid"] == job.extra["uid"]
    (send,) = vn.requests("voipnow", "send")
    assert send["path"] == "/voipnow/uapi/faxes/@me/0003*210"
    assert send["fields"]["files"] == [{"name": "fax.pdf", "size": len(PDF)}]
    assert json.loads(send["fields"]["request"]) == {"recipients": ["15551234567"]}
    (token,) = vn.requests("voipnow", "token")
    assert send["headers"]["authorization"].startswith("Bearer ")
    assert token["fields"]["grant_type"] == "client_credentials"


def test_submit_on_behalf_of_a_user_id(vn: RunningSandbox, http: httpx.Client) -> None:
    client(vn, http, user_id=sandbox_voipnow.USER_ID).submit(document(PDF), "7778888")
    (send,) = vn.requests("voipnow", "send")
    assert send["path"] == f"/voipnow/uapi/faxes/{sandbox_voipnow.USER_ID}/0003*210"


def test_token_is_renewed_shortly_before_it_expires(vn: RunningSandbox, http: httpx.Client) -> None:
    sandbox_voipnow.set_token_lifetime(vn.sb, 600)
    provider = client(vn, http)
    now = [1000.0]
    provider.clock = lambda: now[0]
    provider.submit(document(PDF), "7778888")
    now[0] += 600 - 61  # more than the 60 s margin before expiry: still used
    provider.submit(document(PDF), "7778888")
    assert len(vn.requests("voipnow", "token")) == 1
    now[0] += 2  # inside the margin: renewed before the provider could refuse it
    provider.submit(document(PDF), "7778888")
    assert len(vn.requests("voipnow", "token")) == 2
    assert statuses(vn, "send") == [200, 200, 200]  # never refused


def test_token_expired_at_the_provider_is_renewed_on_401(
    vn: RunningSandbox, http: httpx.Client
) -> None:
    sandbox_voipnow.set_token_lifetime(vn.sb, 100)
    provider = client(vn, http)
    provider.submit(document(PDF), "7778888")
    vn.control("clock", advance=101)  # the sandbox's token is now expired; the client's is not

    result = provider.submit(document(PDF), "7778888")

    assert result.job_id in vn.sb.jobs["voipnow"]
    assert statuses(vn, "send") == [200, 401, 200]
    assert len(vn.requests("voipnow", "token")) == 2
    first, retry = vn.requests("voipnow", "send")[1:]
    assert first["headers"]["authorization"] != retry["headers"]["authorization"]
    assert retry["fields"]["files"] == [{"name": "fax.pdf", "size": len(PDF)}]  # rewound


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"client_id": "someone-else"}, "invalid_client"),
    ],
)
def test_refused_credentials_are_an_auth_error(
    vn: RunningSandbox, http: httpx.Client, fields: dict[str, str], code: str
) -> None:
    with pytest.raises(ProviderAuthError) as info:
        VoipNowClient(make_account(vn.base_url("voipnow"), **fields), http).submit(
            document(PDF), "7778888"
        )
    assert info.value.provider == "voipnow"
    assert info.value.operation == "token"
    assert info.value.http_status == 401
    assert code in info.value.provider_message
    assert not vn.requests("voipnow", "send")


def test_check_obtains_a_token(vn: RunningSandbox, http: httpx.Client) -> None:
    sandbox_voipnow.set_token_lifetime(vn.sb, 5400)
    answer = client(vn, http).check()
    assert answer["token"] == "obtained"
    assert answer["token_lifetime_seconds"] == 5400
    assert answer["extension"] == sandbox_voipnow.EXTENSION
    assert statuses(vn, "token") == [200]
    with pytest.raises(ProviderAuthError):
        client(vn, http, client_secret="wrong").check()


@pytest.mark.parametrize(
    ("fields", "code"),
    [({"user_id": "999"}, "user_invalid"), ({"extension": "0003*999"}, "extension_invalid")],
)
def test_wrong_user_or_extension_is_an_account_error(
    vn: RunningSandbox, http: httpx.Client, fields: dict[str, str], code: str
) -> None:
    with pytest.raises(ProviderAuthError) as info:
        VoipNowClient(make_account(vn.base_url("voipnow"), **fields), http).submit(
            document(PDF), "7778888"
        )
    assert info.value.http_status == 400
    assert info.value.provider_message.startswith(code)


@pytest.mark.parametrize(
    ("content", "filename"),
    [(b"<html>not a pdf</html>", "fax.pdf"), (PDF, "fax.docx"), (b"", "fax.pdf")],
)
def test_an_invalid_file_is_refused_permanently(
    vn: RunningSandbox, http: httpx.Client, content: bytes, filename: str
) -> None:
    with pytest.raises(ProviderPermanentError) as info:
        client(vn, http).submit(document(content, filename), "7778888")
    assert not isinstance(info.value, BadDestinationError)
    assert info.value.http_status == 400
    assert "fx_file_invalid" in info.value.provider_message


@pytest.mark.parametrize(
    ("status", "code", "error_class"),
    [
        (400, "fx_recipients_invalid", BadDestinationError),
        (400, "fx_max_files_reached", ProviderPermanentError),
        (400, "internal_server_error", ProviderTransientError),
        (500, "internal_server_error", ProviderTransientError),
        (400, "something_new", ProviderPermanentError),
        (503, "something_new", ProviderTransientError),
    ],
)
def test_documented_error_codes_map_to_kinds(
    vn: RunningSandbox,
    http: httpx.Client,
    status: int,
    code: str,
    error_class: type[ProviderError],
) -> None:
    body = json.dumps({"error": {"code": code, "message": "words from the provider"}})
    fault(vn, "voipnow", "send", status=status, body=body)
    with pytest.raises(error_class) as info:
        client(vn, http).submit(document(PDF), "7778888")
    assert type(info.value) is error_class
    assert info.value.http_status == status
    assert info.value.provider_message == f"{code}: words from the provider"


def test_http_204_means_nothing_was_sent(vn: RunningSandbox, http: httpx.Client) -> None:
    fault(vn, "voipnow", "send", kind="error", status=204)
    with pytest.raises(ProviderPermanentError) as info:
        client(vn, http).submit(document(PDF), "7778888")
    assert info.value.http_status == 204


def test_a_bad_destination_never_reaches_the_provider(
    vn: RunningSandbox, http: httpx.Client
) -> None:
    with pytest.raises(BadDestinationError):
        client(vn, http).submit(document(PDF), "call me maybe")
    assert not vn.requests("voipnow")


def test_a_send_that_times_out_has_an_unknown_outcome(
    vn: RunningSandbox, http: httpx.Client
) -> None:
    provider = client(vn, http, timeout=0.3)
    provider.check()  # token first, so only the send hangs
    fault(vn, "voipnow", "send", kind="hang", seconds=1.0)
    with pytest.raises(OutcomeUnknownError) as info:
        provider.submit(document(PDF), "7778888")
    assert info.value.operation == "send"
    # The provider took the fax after all: exactly why the outcome is "unknown", not "failed".
    wait_for(lambda: len(vn.sb.jobs["voipnow"]) == 1)
    assert len(vn.requests("voipnow", "send")) == 1  # never retried


def test_a_token_call_that_times_out_is_transient(vn: RunningSandbox, http: httpx.Client) -> None:
    fault(vn, "voipnow", "token", kind="hang", seconds=1.0)
    with pytest.raises(ProviderTransientError) as info:
        client(vn, http, timeout=0.3).submit(document(PDF), "7778888")
    assert not isinstance(info.value, OutcomeUnknownError)
    assert info.value.operation == "token"
    assert not vn.requests("voipnow", "send")
    wait_for(lambda: statuses(vn, "token") == [200])  # let the hung call finish in this test


def test_status_is_accepted_without_a_call(vn: RunningSandbox, http: httpx.Client) -> None:
    status = client(vn, http).status("1234")
    assert status.state is JobState.ACCEPTED
    assert status.state.final
    assert not vn.requests("voipnow")


def test_concurrent_submits_share_one_token(vn: RunningSandbox, http: httpx.Client) -> None:
    provider = client(vn, http)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            provider.submit(document(PDF), "7778888")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    assert len(vn.sb.jobs["voipnow"]) == 8
    assert len(vn.requests("voipnow", "token")) == 1


# --- the sandbox's own refusals (the documented errors the client cannot provoke) -----------


def _raw_send(sandbox: RunningSandbox, files: list[tuple[str, Any]], request: str | None) -> Any:
    base = sandbox.base_url("voipnow")
    token = httpx.post(
        f"{base}/oauth/token.php",
        data={
            "grant_type": "client_credentials",
            "client_id": sandbox_voipnow.CLIENT_ID,
            "client_secret": sandbox_voipnow.CLIENT_SECRET,
        },
    ).json()["access_token"]
    data = {"request": request} if request is not None else {}
    return httpx.post(
        f"{base}/uapi/faxes/@me/0003*210",
        files=files or {"x": ("x.txt", b"")},
        data=data,
        headers={"Authorization": f"Bearer {token}"},
    )


@pytest.mark.parametrize(
    "request_part",
    [None, "not json", '{"recipients": []}', '{"recipients": ["555-CALL"]}', '{"to": ["1"]}'],
)
def test_sandbox_refuses_bad_recipients(vn: RunningSandbox, request_part: str | None) -> None:
    answer = _raw_send(vn, [("files", ("fax.pdf", PDF))], request_part)
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "fx_recipients_invalid"


def test_sandbox_refuses_too_many_files(vn: RunningSandbox) -> None:
    files = [("files", (f"p{i}.pdf", PDF)) for i in range(sandbox_voipnow.MAX_FILES + 1)]
    answer = _raw_send(vn, files, '{"recipients": ["7778888"]}')
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "fx_max_files_reached"


def test_sandbox_refuses_a_missing_token_and_a_wrong_grant(vn: RunningSandbox) -> None:
    base = vn.base_url("voipnow")
    answer = httpx.post(f"{base}/uapi/faxes/@me/0003*210", files={"files": ("f.pdf", PDF)})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "access_denied"
    grant = httpx.post(f"{base}/oauth/token.php", data={"grant_type": "password"})
    assert grant.status_code == 400
    assert grant.json()["error"] == "unsupported_grant_type"


# --- the shared provider contract (MockTransport) -------------------------------------------
MOCK_BASE = "https://pbx.example.test"
TOKEN_OK = {"access_token": "t0k", "token_type": "Bearer", "expires_in": 3600}


def is_token_request(request: httpx.Request) -> bool:
    return request.url.path.endswith("/oauth/token.php")


class TestContract(TokenContract):
    provider = "voipnow"

    def client(self, http: httpx.Client) -> Provider:
        return VoipNowClient(make_account(MOCK_BASE), http, CONTRACT_TIMEOUT)

    def calls(self) -> list[Call]:
        return [
            Call("send", lambda c: c.submit(document(PDF), "7778888"), sends=True),
            Call("token", lambda c: c.check()),
        ]

    def answer(self, request: httpx.Request) -> httpx.Response:
        if is_token_request(request):
            return httpx.Response(200, json=TOKEN_OK)
        return httpx.Response(200, json={"id": 1, "uid": "5d8e"})

    def is_token_request(self, request: httpx.Request) -> bool:
        return is_token_request(request)

    def token_answer(self, token: str) -> httpx.Response:
        return httpx.Response(200, json={**TOKEN_OK, "access_token": token})

    def submit(self, client: Provider, doc: OutgoingDocument) -> SubmitResult:
        return client.submit(doc, "7778888")


# --- answers the docs do not promise (MockTransport) -----------------------------------------
def mock_client(send_answer: Answer, token_answer: Answer | None = None) -> VoipNowClient:
    """A client whose sends get ``send_answer`` and token requests ``token_answer``."""

    def handle(request: httpx.Request) -> httpx.Response:
        if is_token_request(request):
            return token_answer(request) if token_answer else httpx.Response(200, json=TOKEN_OK)
        return send_answer(request)

    return VoipNowClient(make_account(MOCK_BASE), MockNetwork(handle).http)


def test_an_html_error_page_is_quoted_in_the_error() -> None:
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    provider = mock_client(lambda r: httpx.Response(502, text=page))
    with pytest.raises(ProviderTransientError) as info:
        provider.submit(document(PDF), "7778888")
    assert info.value.http_status == 502
    assert "502 Bad Gateway" in info.value.provider_message


@pytest.mark.parametrize("body", [b"", b"{not json", b"[1, 2]", b'{"uid": "abc"}'])
def test_an_unreadable_success_has_an_unknown_outcome(body: bytes) -> None:
    provider = mock_client(lambda r: httpx.Response(200, content=body))
    with pytest.raises(OutcomeUnknownError) as info:
        provider.submit(document(PDF), "7778888")
    assert info.value.http_status == 200


def test_the_fax_id_may_be_a_string_or_a_number() -> None:
    answers = iter([{"id": "1", "uid": "5d8e"}, {"id": 2, "uid": "6e9f"}])
    provider = mock_client(lambda r: httpx.Response(200, json=next(answers)))
    assert provider.submit(document(PDF), "7778888").job_id == "1"
    assert provider.submit(document(PDF), "7778888").job_id == "2"


@pytest.mark.parametrize(
    ("answer", "error_class"),
    [
        (httpx.Response(200, content=b"<html>login</html>"), ProviderTransientError),
        (httpx.Response(200, json={"token_type": "Bearer"}), ProviderTransientError),
        (httpx.Response(500, text=""), ProviderTransientError),
        (
            httpx.Response(401, json={"error": {"code": "access_denied", "message": "no"}}),
            ProviderAuthError,
        ),
        (httpx.Response(400, json={"error": "invalid_grant"}), ProviderAuthError),
    ],
)
def test_unreadable_or_refused_token_answers(
    answer: httpx.Response, error_class: type[ProviderError]
) -> None:
    provider = mock_client(lambda r: httpx.Response(200, json={"id": 1}), lambda r: answer)
    with pytest.raises(error_class) as info:
        provider.check()
    assert type(info.value) is error_class
    assert info.value.operation == "token"


def test_expires_in_as_a_string_is_honoured() -> None:
    provider = mock_client(
        lambda r: httpx.Response(200, json={"id": 1}),
        lambda r: httpx.Response(200, json={"access_token": "a", "expires_in": "7200"}),
    )
    assert provider.check()["token_lifetime_seconds"] == 7200.0


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+1 (555) 123-4567", "15551234567"),
        ("555.123.4567", "5551234567"),
        ("7778888", "7778888"),
        ("0003*210", "0003*210"),
    ],
)
def test_normalize_destination(number: str, expected: str) -> None:
    assert VoipNowClient.normalize_destination(number) == expected


@pytest.mark.parametrize("number", ["", "  ", "555-CALL-NOW", "***", "5" * 33, "12#34"])
def test_normalize_destination_refuses(number: str) -> None:
    with pytest.raises(BadDestinationError) as info:
        VoipNowClient.normalize_destination(number)
    assert info.value.provider == "voipnow"
