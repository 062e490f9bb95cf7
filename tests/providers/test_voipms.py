"""voip.ms: the shared provider contract, the client against the sandbox over real HTTP, the
url_callback parser, and MockTransport tests for answers the docs do not promise."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import time
import urllib.parse
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest

from config.accounts import Account
from sandbox import voipms as vsandbox
from sandbox.core import StoredFax
from sandbox.pdf import make_pdf
from tests.providers.contract import TIMEOUT as CONTRACT_TIMEOUT
from tests.providers.contract import Call, StatusWordsContract
from tests.providers.helpers import Answer, MockNetwork, fault, wait_for
from tests.providers.helpers import document as outgoing
from tests.sandbox_server import RunningSandbox
from worker.providers import provider_class
from worker.providers import voipms as vm
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
    WebhookError,
)
from worker.providers.voipms import VoipMsClient

TO = "5552341234"


# --- fixtures and helpers -------------------------------------------------------------------
def make_account(base_url: str, **overrides: Any) -> Account:
    fields: dict[str, Any] = {
        "name": "vms",
        "provider": "voipms",
        "base_url": base_url,
        "api_username": vsandbox.API_USERNAME,
        "api_password": vsandbox.API_PASSWORD,
        "from_number": vsandbox.FAX_NUMBER,
        "from_name": "Faxrelay Test",
        "station_id": "RELAY-1",
    }
    fields.update(overrides)
    return Account(**fields)


@pytest.fixture
def vsb(sandbox: RunningSandbox) -> RunningSandbox:
    vsandbox.reset_state(sandbox.sb)
    sandbox.sb.job_duration["voipms"] = 0.6
    # The session's clock may have been moved by other tests (reset keeps the time): voip.ms's
    # clock is the real one, so bring the sandbox's back to it.
    sandbox.sb.clock.advance(time.time() - sandbox.sb.clock.now())
    return sandbox


@pytest.fixture
def client(vsb: RunningSandbox, http: httpx.Client) -> VoipMsClient:
    return VoipMsClient(make_account(vsb.base_url("voipms")), http)


def client_for(vsb: RunningSandbox, http: httpx.Client, **overrides: Any) -> VoipMsClient:
    return VoipMsClient(make_account(vsb.base_url("voipms"), **overrides), http)


def document(content: bytes | None = None) -> OutgoingDocument:
    return outgoing(make_pdf(2) if content is None else content)


def sandbox_now(vsb: RunningSandbox) -> datetime:
    return datetime.fromtimestamp(vsb.sb.clock.now(), UTC)


def store(vsb: RunningSandbox, **fields: Any) -> StoredFax:
    pages = int(fields.pop("pages", 1))
    fax = StoredFax(
        id=str(vsb.sb.new_id()),
        provider="voipms",
        pdf=make_pdf(pages),
        pages=pages,
        received_at=fields.pop("received_at", vsb.sb.clock.now()),
        **fields,
    )
    vsandbox.store_inbound(vsb.sb, fax, vsb.url)
    return fax


MOCK_BASE = "https://voip.example"


def mock_client(answer: Answer) -> VoipMsClient:
    return VoipMsClient(make_account(MOCK_BASE), MockNetwork(answer).http)


def answer(data: Any, status: int = 200) -> Answer:
    return lambda request: httpx.Response(status, json=data)


# --- registry and destinations ---------------------------------------------------------------
def test_registry_names_the_client() -> None:
    assert provider_class("voipms") is VoipMsClient
    assert VoipMsClient.capabilities.find_submitted and not VoipMsClient.capabilities.cancel
    assert VoipMsClient.webhook_ack == "ok"  # voip.ms retries its url_callback until it reads "ok"


@pytest.mark.parametrize(
    "given",
    ["5552341234", "+1 (555) 234-1234", "1-555-234-1234", "555.234.1234", "[555] 234 1234"],
)
def test_normalize_destination_gives_ten_digits(given: str) -> None:
    assert VoipMsClient.normalize_destination(given) == "5552341234"


@pytest.mark.parametrize(
    ("given", "reason"),
    [
        ("", "no number"),
        ("555-CALL-NOW", "characters other than digits"),
        ("234-1234", "not a North American number"),
        ("+44 20 7946 0958", "not a North American number"),
        ("0552341234", "may not start with 0 or 1"),
        ("5551234567", "may not start with 0 or 1"),
    ],
)
def test_normalize_destination_refuses_with_a_reason(given: str, reason: str) -> None:
    with pytest.raises(BadDestinationError) as caught:
        VoipMsClient.normalize_destination(given)
    assert reason in caught.value.provider_message
    assert caught.value.provider == "voipms"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("John Doe <5552341234>", ("John Doe", "5552341234")),
        ('"Acme, Inc." <+1 555-234-1234>', ("Acme, Inc.", "15552341234")),
        ("5552341234", ("", "5552341234")),
        ("<5552341234>", ("", "5552341234")),
        ("Anonymous", ("", "Anonymous")),
    ],
)
def test_parse_callerid(value: str, expected: tuple[str, str]) -> None:
    assert vm.parse_callerid(value) == expected


def test_date_ranges_stay_within_92_days() -> None:
    ranges = vm.date_ranges(date(2024, 1, 1), date(2024, 12, 31))
    assert ranges[0][0] == date(2024, 1, 1) and ranges[-1][1] == date(2024, 12, 31)
    assert all((end - start).days < 92 for start, end in ranges)
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert start == end + timedelta(days=1)  # no gap, no overlap


# --- outbound against the sandbox ------------------------------------------------------------
def test_submit_posts_the_file_and_answers_no_id(vsb: RunningSandbox, client: VoipMsClient) -> None:
    pdf = make_pdf(3)
    result = client.submit(document(pdf), "+1 (555) 234-1234")
    assert result.job_id == ""
    assert result.raw["to_number"] == TO
    [logged] = vsb.requests("voipms", "sendFaxMessage")
    assert logged["method"] == "POST"
    assert logged["query"] == {}  # credentials and the file travel in the body
    fields = logged["fields"]
    assert fields["to_number"] == TO
    assert fields["from_number"] == vsandbox.FAX_NUMBER
    assert fields["from_name"] == "Faxrelay Test"
    assert fields["station_id"] == "RELAY-1"
    assert fields["file"] == f"<{len(pdf)} bytes>"
    [job] = vsb.sb.jobs["voipms"].values()
    assert job.document == pdf and job.to_number == TO


def test_from_name_defaults_to_from_number(vsb: RunningSandbox, http: httpx.Client) -> None:
    client = client_for(vsb, http, from_name=None, station_id=None)
    client.submit(document(), TO)
    fields = vsb.requests("voipms", "sendFaxMessage")[0]["fields"]
    assert fields["from_name"] == vsandbox.FAX_NUMBER
    assert "station_id" not in fields


def test_submitted_fax_is_delivered(vsb: RunningSandbox, client: VoipMsClient) -> None:
    at = sandbox_now(vsb)
    client.submit(document(make_pdf(2)), TO)
    first = client.status("", TO, at)
    assert first.state in (JobState.QUEUED, JobState.SENDING)
    final = wait_for(lambda: (s := client.status("", TO, at)).state.final and s)
    assert final.state is JobState.DELIVERED
    assert final.raw_status == "SUCCESS"
    assert final.pages == 2
    assert final.raw["destination"] == TO


@pytest.mark.parametrize(
    ("outcome", "cause"),
    [
        ("busy", FailureCause.BUSY),
        ("no_answer", FailureCause.NO_ANSWER),
        ("bad_number", FailureCause.BAD_NUMBER),
        ("failed", None),
    ],
)
def test_failed_fax_says_why(
    vsb: RunningSandbox, client: VoipMsClient, outcome: str, cause: FailureCause | None
) -> None:
    vsb.control("outcomes", provider="voipms", outcomes=[outcome])
    vsb.control("clock", speed=20)
    at = sandbox_now(vsb)
    client.submit(document(), TO)
    final = wait_for(lambda: (s := client.status("", TO, at)).state.final and s)
    assert final.state is JobState.FAILED
    assert final.cause is cause
    assert final.detail  # voip.ms's msg is passed on


def test_status_matches_the_fax_nearest_the_submit(
    vsb: RunningSandbox, client: VoipMsClient
) -> None:
    vsb.control("outcomes", provider="voipms", outcomes=["busy", "success"])
    first_at = sandbox_now(vsb)
    client.submit(document(), TO)
    client.submit(document(), "5559876543")  # another destination: never matched
    vsb.control("clock", advance=600)
    second_at = sandbox_now(vsb)
    client.submit(document(), TO)
    vsb.control("clock", advance=60)
    assert client.status("", TO, first_at).cause is FailureCause.BUSY
    assert client.status("", TO, second_at).state is JobState.DELIVERED
    assert client.status("", "5559876543", first_at).state is JobState.DELIVERED


def test_status_before_the_fax_is_listed(vsb: RunningSandbox, client: VoipMsClient) -> None:
    waiting = client.status("", TO, datetime.now(UTC))
    assert waiting.state is JobState.QUEUED and not waiting.state.final
    lost = client.status("", TO, datetime.now(UTC) - timedelta(hours=3))
    assert lost.state is JobState.UNKNOWN and "no fax to 5552341234" in lost.detail
    with pytest.raises(ProviderPermanentError, match="needs the destination"):
        client.status("", "", datetime.now(UTC))


def test_find_submitted_after_a_lost_answer(vsb: RunningSandbox, client: VoipMsClient) -> None:
    since = sandbox_now(vsb)
    assert client.find_submitted(TO, since) is None
    client.submit(document(), TO)
    found = client.find_submitted("+1 555 234 1234", since)
    assert found is not None and found.job_id == ""
    assert found.raw["destination"] == TO and found.raw["folder"] == "SENT"
    assert client.find_submitted("5559876543", since) is None
    assert client.find_submitted(TO, since + timedelta(hours=2)) is None


def test_submit_with_bad_credentials(vsb: RunningSandbox, http: httpx.Client) -> None:
    client = client_for(vsb, http, api_password="wrong")
    with pytest.raises(ProviderAuthError) as caught:
        client.submit(document(), TO)
    error = caught.value
    assert (error.provider, error.operation, error.http_status) == ("voipms", "submit", 200)
    assert error.provider_message.startswith("invalid_credentials")
    assert not vsb.sb.jobs["voipms"]


@pytest.mark.parametrize(
    ("setup", "content", "code"),
    [
        ("from", None, "invalid_from_number"),
        ("funds", None, "non_sufficient_funds"),
        ("size", None, "exceeds_file_size"),
        ("", b"\x00\x01\x02 binary", "invalid_file"),
        ("", b"", "missing_file"),
    ],
)
def test_submit_refusals_are_permanent(
    vsb: RunningSandbox,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
    setup: str,
    content: bytes | None,
    code: str,
) -> None:
    overrides = {"from_number": "5559990000"} if setup == "from" else {}
    if setup == "funds":
        vsandbox.state(vsb.sb).balance = 0.0
    if setup == "size":
        monkeypatch.setattr(vsandbox, "MAX_FILE_BYTES", 100)
    client = client_for(vsb, http, **overrides)
    with pytest.raises(ProviderPermanentError) as caught:
        client.submit(document(content), TO)
    assert caught.value.provider_message.startswith(code)
    assert not vsb.sb.jobs["voipms"]


def test_sandbox_refuses_bad_destination(vsb: RunningSandbox, client: VoipMsClient) -> None:
    # The client normalises first; a number only voip.ms refuses still maps to the right error.
    params = {"to_number": "123", "from_name": "x", "from_number": vsandbox.FAX_NUMBER}
    params["file"] = base64.b64encode(make_pdf()).decode()
    with pytest.raises(BadDestinationError, match="invalid_to_number"):
        client.call("sendFaxMessage", params, post=True, idempotent=False)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("method_maintenance", ProviderTransientError),
        ("limit_reached", ProviderTransientError),
        ("sent_fail", ProviderTransientError),
        ("invalid_to_number", BadDestinationError),
        ("ip_not_enabled", ProviderAuthError),
        ("api_not_enabled", ProviderAuthError),
    ],
)
def test_submit_error_codes(
    vsb: RunningSandbox, client: VoipMsClient, code: str, error: type[Exception]
) -> None:
    fault(vsb, "voipms", "sendFaxMessage", status=200, body=json.dumps({"status": code}))
    with pytest.raises(error) as caught:
        client.submit(document(), TO)
    assert not isinstance(caught.value, OutcomeUnknownError)
    assert code in str(caught.value)


def test_submit_503_is_transient_but_502_is_outcome_unknown(
    vsb: RunningSandbox, client: VoipMsClient
) -> None:
    fault(vsb, "voipms", "sendFaxMessage", status=503)
    with pytest.raises(ProviderTransientError) as caught:
        client.submit(document(), TO)
    assert caught.value.http_status == 503
    fault(vsb, "voipms", "sendFaxMessage", status=502, body="<html>Bad Gateway</html>")
    with pytest.raises(OutcomeUnknownError) as unknown:
        client.submit(document(), TO)
    assert unknown.value.http_status == 502 and "Bad Gateway" in unknown.value.provider_message
    assert len(vsb.requests("voipms", "sendFaxMessage")) == 2  # one request each: no retry


def test_submit_timeout_is_outcome_unknown_and_not_retried(
    vsb: RunningSandbox, http: httpx.Client
) -> None:
    client = VoipMsClient(make_account(vsb.base_url("voipms")), http, httpx.Timeout(0.4))
    fault(vsb, "voipms", "sendFaxMessage", kind="hang", seconds=1.5)
    with pytest.raises(OutcomeUnknownError) as caught:
        client.submit(document(), TO)
    assert caught.value.operation == "submit"
    assert len(vsb.requests("voipms", "sendFaxMessage")) == 1
    # The provider did take it: find_submitted is how the relay learns so.
    assert wait_for(lambda: client.find_submitted(TO, sandbox_now(vsb) - timedelta(minutes=1)))


def test_slow_list_call_times_out_as_transient(vsb: RunningSandbox, http: httpx.Client) -> None:
    client = VoipMsClient(make_account(vsb.base_url("voipms")), http, httpx.Timeout(0.3))
    fault(vsb, "voipms", "getFaxMessages", kind="hang", seconds=1.0)
    with pytest.raises(ProviderTransientError) as caught:
        client.list_inbound(datetime.now(UTC))
    assert not isinstance(caught.value, OutcomeUnknownError)
    assert caught.value.operation == "list_inbound"


# --- inbound against the sandbox -------------------------------------------------------------
def test_list_inbound_reads_inbox(vsb: RunningSandbox, client: VoipMsClient) -> None:
    assert client.list_inbound(datetime.now(UTC) - timedelta(hours=1)) == []  # no_message
    made = vsb.control("inbound", provider="voipms", pages=3, **{"from": "5553334444"})
    assert isinstance(made, dict)
    named = store(vsb, from_number="5552341234", extra={"caller_name": "John Doe"})
    client.submit(document(), TO)  # SENT: not inbound
    faxes = {
        f.provider_fax_id: f for f in client.list_inbound(sandbox_now(vsb) - timedelta(hours=1))
    }
    assert set(faxes) == {made["id"], named.id}
    first = faxes[made["id"]]
    assert (first.from_number, first.to_number, first.pages) == ("5553334444", "5559870000", 3)
    assert first.received_at is not None
    assert abs((first.received_at - sandbox_now(vsb)).total_seconds()) < 60
    assert faxes[named.id].from_number == "5552341234"
    assert faxes[named.id].raw["callerid"] == "John Doe <5552341234>"


def test_list_inbound_splits_long_ranges(vsb: RunningSandbox, client: VoipMsClient) -> None:
    now = vsb.sb.clock.now()
    old = store(vsb, received_at=now - 200 * 86400)
    recent = store(vsb, received_at=now - 3600)
    faxes = client.list_inbound(sandbox_now(vsb) - timedelta(days=250))
    assert [f.provider_fax_id for f in faxes] == [old.id, recent.id]  # oldest first
    calls = vsb.requests("voipms", "getFaxMessages")
    assert len(calls) >= 3
    for call in calls:
        start = date.fromisoformat(call["query"]["from"])
        end = date.fromisoformat(call["query"]["to"])
        assert 0 <= (end - start).days <= 92
        assert call["status"] == 200
    recent_only = client.list_inbound(sandbox_now(vsb) - timedelta(days=2))
    assert [f.provider_fax_id for f in recent_only] == [recent.id]


def test_get_fax_messages_errors(vsb: RunningSandbox, client: VoipMsClient) -> None:
    with pytest.raises(ProviderPermanentError, match="invalid_folder"):
        client.fax_messages("NOPE", date(2024, 1, 1), date(2024, 1, 2))
    with pytest.raises(ProviderPermanentError, match="invalid_date"):
        client.call("getFaxMessages", {"from": "30/03/2014"})
    with pytest.raises(ProviderPermanentError, match="invalid_daterange"):
        client.call("getFaxMessages", {"from": "2024-01-01", "to": "2024-06-01"})


def test_download_decodes_the_pdf(vsb: RunningSandbox, client: VoipMsClient) -> None:
    made = vsb.control("inbound", provider="voipms", pages=2, size=40_000)
    assert isinstance(made, dict)
    sink = io.BytesIO()
    written = client.download(InboundFax(made["id"]), sink, max_bytes=10**6)
    assert written == made["size"] == len(sink.getvalue())
    assert hashlib.sha256(sink.getvalue()).hexdigest() == made["sha256"]


def test_download_honours_max_bytes(vsb: RunningSandbox, client: VoipMsClient) -> None:
    made = vsb.control("inbound", provider="voipms", size=200_000)
    assert isinstance(made, dict)
    for limit in (1_000, made["size"] - 1):
        sink = io.BytesIO()
        with pytest.raises(ProviderPermanentError, match=f"over the {limit}-byte limit"):
            client.download(InboundFax(made["id"]), sink, max_bytes=limit)
        assert sink.getvalue() == b""


def test_download_faults(vsb: RunningSandbox, client: VoipMsClient) -> None:
    made = vsb.control("inbound", provider="voipms", size=50_000)
    assert isinstance(made, dict)
    fax = InboundFax(made["id"])
    fault(vsb, "voipms", "getFaxMessagePDF", kind="truncate")
    with pytest.raises(ProviderTransientError):
        client.download(fax, io.BytesIO(), 10**6)
    fault(vsb, "voipms", "getFaxMessagePDF", kind="not_pdf")
    sink = io.BytesIO()
    client.download(fax, sink, 10**6)  # handed on: the archive step quarantines it
    assert sink.getvalue().startswith(b"<html>")
    fault(vsb, "voipms", "getFaxMessagePDF", kind="expired")
    with pytest.raises(ProviderPermanentError, match="invalid_id"):
        client.download(fax, io.BytesIO(), 10**6)
    fault(vsb, "voipms", "getFaxMessagePDF", status=500)
    with pytest.raises(ProviderTransientError) as caught:
        client.download(fax, io.BytesIO(), 10**6)
    assert caught.value.http_status == 500
    sink = io.BytesIO()
    assert client.download(fax, sink, 10**6) == made["size"]  # and then it works


def test_download_unknown_fax(vsb: RunningSandbox, client: VoipMsClient) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        client.download(InboundFax("999999"), io.BytesIO(), 10**6)
    assert caught.value.provider_message.startswith("invalid_id")
    assert caught.value.operation == "download"


def test_delete_inbound_is_idempotent(vsb: RunningSandbox, client: VoipMsClient) -> None:
    made = vsb.control("inbound", provider="voipms")
    assert isinstance(made, dict)
    fax = InboundFax(made["id"])
    client.delete_inbound(fax)
    assert made["id"] not in vsb.sb.inbound["voipms"]
    assert client.list_inbound(datetime.now(UTC) - timedelta(hours=1)) == []
    client.delete_inbound(fax)  # already gone: fine
    with pytest.raises(ProviderPermanentError, match="invalid_id"):
        client.call("deleteFaxMessage", {"id": made["id"]})  # the plain call reports it
    fault(vsb, "voipms", "deleteFaxMessage", status=200, body='{"status":"method_maintenance"}')
    with pytest.raises(ProviderTransientError):
        client.delete_inbound(fax)


# --- operator calls against the sandbox ------------------------------------------------------
def test_check(vsb: RunningSandbox, client: VoipMsClient, http: httpx.Client) -> None:
    result = client.check()
    assert result["ok"] is True
    assert vsandbox.FAX_NUMBER in result["fax_numbers"]
    assert {"INBOX", "SENT"} <= set(result["folders"])
    stranger = client_for(vsb, http, from_number="5559990000").check()
    assert stranger["ok"] is False and "5559990000" in stranger["problem"]
    with pytest.raises(ProviderAuthError):
        client_for(vsb, http, api_username="nobody@example.com").check()


def test_sandbox_credentials_and_methods(vsb: RunningSandbox) -> None:
    url = f"{vsb.base_url('voipms')}/api/v1/rest.php"
    assert httpx.get(url, params={"method": "getFaxFolders"}).json() == {
        "status": "missing_credentials"
    }
    creds = {"api_username": vsandbox.API_USERNAME, "api_password": vsandbox.API_PASSWORD}
    assert httpx.get(url, params={**creds, "method": "getCDR"}).json()["status"] == "invalid_method"
    assert httpx.post(url, data={**creds, "method": "getFaxFolders"}).json()["status"] == "success"


# --- url_callback -------------------------------------------------------------------------
def callback(vsb: RunningSandbox, fax_id: str, **options: Any) -> tuple[dict[str, str], bytes]:
    content_type, body = vsandbox.inbound_webhook(vsb.sb, fax_id, vsb.url, options)
    return {"Content-Type": content_type}, body


@pytest.mark.parametrize("multipart", [True, False])
def test_callback_with_pdf_and_id(vsb: RunningSandbox, multipart: bool) -> None:
    fax = store(vsb, pages=2, from_number="5553334444", extra={"caller_name": "John Doe"})
    headers, body = callback(vsb, fax.id, multipart=multipart, with_pdf=True)
    event = VoipMsClient.parse_inbound_webhook(headers, body)
    assert event.pdf == fax.pdf
    assert event.fax is not None
    assert event.fax.provider_fax_id == fax.id
    assert (event.fax.from_number, event.fax.to_number, event.fax.pages) == (
        "5553334444",
        fax.to_number,
        2,
    )
    assert event.raw["from"] == "John Doe <5553334444>"
    if multipart:
        assert event.raw["pdf"]["size"] == len(fax.pdf)


@pytest.mark.parametrize("multipart", [True, False])
def test_callback_with_id_only(vsb: RunningSandbox, multipart: bool) -> None:
    fax = store(vsb)
    event = VoipMsClient.parse_inbound_webhook(
        *callback(vsb, fax.id, multipart=multipart, with_pdf=False)
    )
    assert event.pdf is None
    assert event.fax is not None and event.fax.provider_fax_id == fax.id
    assert event.fax.received_at is not None


@pytest.mark.parametrize("multipart", [True, False])
def test_callback_without_id_or_pdf_means_reconcile(vsb: RunningSandbox, multipart: bool) -> None:
    fax = store(vsb)
    headers, body = callback(vsb, fax.id, multipart=multipart, with_pdf=False, with_id=False)
    event = VoipMsClient.parse_inbound_webhook(headers, body)
    assert event.fax is None and event.pdf is None
    assert event.raw["to"] == fax.to_number  # the fields are still kept


def test_callback_pdf_without_id_gets_a_stable_id(vsb: RunningSandbox) -> None:
    fax = store(vsb)
    first = VoipMsClient.parse_inbound_webhook(*callback(vsb, fax.id, with_id=False))
    again = VoipMsClient.parse_inbound_webhook(*callback(vsb, fax.id, with_id=False))
    assert first.fax is not None and again.fax is not None
    assert first.fax.provider_fax_id == again.fax.provider_fax_id != ""
    assert first.pdf == fax.pdf


def test_callback_default_shape_is_multipart_with_pdf(vsb: RunningSandbox) -> None:
    fax = store(vsb)
    headers, body = callback(vsb, fax.id)
    assert headers["Content-Type"].startswith("multipart/form-data; boundary=")
    assert VoipMsClient.parse_inbound_webhook(headers, body).pdf == fax.pdf


def test_callback_loose_field_spellings() -> None:
    body = urllib.parse.urlencode(
        {
            "Fax_ID": "777",
            "CallerID": "Acme <555-234-1234>",
            "Destination": "+1 555 987 0000",
            "Page_Count": "4",
            "Date": "2024-05-01 10:00:00",
            "x_unknown": "kept",
        }
    ).encode()
    event = VoipMsClient.parse_inbound_webhook(
        {"content-type": "application/x-www-form-urlencoded"}, body
    )
    assert event.fax is not None
    assert event.fax.provider_fax_id == "777"
    assert (event.fax.from_number, event.fax.to_number, event.fax.pages) == (
        "5552341234",
        "5559870000",
        4,
    )
    assert event.fax.received_at == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert event.raw["x_unknown"] == "kept"


def test_callback_json_and_content_type_less_bodies() -> None:
    event = VoipMsClient.parse_inbound_webhook({}, b'{"id": 55, "from": "5552341234"}')
    assert event.fax is not None and event.fax.provider_fax_id == "55"
    event = VoipMsClient.parse_inbound_webhook({}, b"id=56&to=5559870000")
    assert event.fax is not None and event.fax.provider_fax_id == "56"
    assert VoipMsClient.parse_inbound_webhook({}, b"").fax is None  # a bare ping: reconcile


def test_callback_multipart_picks_the_pdf_part() -> None:
    pdf = make_pdf()
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="note"; filename="n.txt"\r\n'
            "Content-Type: text/plain\r\n\r\nhello\r\n"
            f'--{boundary}\r\nContent-Disposition: form-data; name="attachment"; '
            'filename="fax.pdf"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + pdf
        + f"\r\n--{boundary}--\r\n".encode()
    )
    event = VoipMsClient.parse_inbound_webhook(
        {"Content-Type": f'multipart/form-data; boundary="{boundary}"'}, body
    )
    assert event.pdf == pdf
    assert event.raw["note"]["filename"] == "n.txt"


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        ("multipart/form-data", b"id=1", "without a boundary"),
        ("multipart/form-data; boundary=xyz", b"no boundary here", "does not contain"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="pdf"\r\n\r\n%PDF-1.4 half',
            "closing boundary",
        ),
        ("application/x-www-form-urlencoded", b"\xff\xfe\x00garbage", "UTF-8"),
        ("application/x-www-form-urlencoded", b"just some words", "not form data"),
        ("application/json", b"{not json", "not valid JSON"),
        ("application/json", b"[1, 2]", "not an object"),
    ],
)
def test_callback_bodies_that_cannot_be_understood(
    content_type: str, body: bytes, reason: str
) -> None:
    with pytest.raises(WebhookError, match=reason):
        VoipMsClient.parse_inbound_webhook({"Content-Type": content_type}, body)


# --- the shared provider contract (MockTransport) -------------------------------------------
def method_of(request: httpx.Request) -> str:
    """The voip.ms method a request calls (in the query, or in the body of a POST)."""
    params = urllib.parse.parse_qs(request.url.query.decode())
    if request.method == "POST":
        params = urllib.parse.parse_qs(request.content.decode())
    return params.get("method", [""])[0]


def success(request: httpx.Request) -> httpx.Response:
    """voip.ms's success answer to each method faxrelay calls."""
    answers: dict[str, dict[str, Any]] = {
        "sendFaxMessage": {},
        "getFaxMessages": {"status": "no_message"},
        "getFaxMessagePDF": {"message_base64": base64.b64encode(make_pdf(1)).decode()},
        "deleteFaxMessage": {},
        "getFaxNumbersInfo": {"numbers": [{"did": vsandbox.FAX_NUMBER}]},
        "getFaxFolders": {"folders": [{"id": "1", "name": "INBOX"}]},
    }
    return httpx.Response(200, json={"status": "success", **answers[method_of(request)]})


class TestContract(StatusWordsContract):
    provider = "voipms"

    def client(self, http: httpx.Client) -> Provider:
        return VoipMsClient(make_account(MOCK_BASE), http, CONTRACT_TIMEOUT)

    def calls(self) -> list[Call]:
        now = datetime.now(UTC)
        fax = InboundFax("9")
        return [
            Call("submit", lambda c: c.submit(document(), TO), sends=True),
            Call("status", lambda c: c.status("", TO, now)),
            Call("find_submitted", lambda c: c.find_submitted(TO, now)),
            Call("list_inbound", lambda c: c.list_inbound(now)),
            Call("download", lambda c: c.download(fax, io.BytesIO(), 10_000_000)),
            Call("delete_inbound", lambda c: c.delete_inbound(fax)),
            Call("getFaxNumbersInfo", lambda c: c.check()),
        ]

    def answer(self, request: httpx.Request) -> httpx.Response:
        return success(request)

    def status_answer(self, word: str) -> httpx.Response:
        fax = {
            "id": "9",
            "folder": "SENT",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "destination": TO,
            "status": word,
            "msg": "",
        }
        return httpx.Response(200, json={"status": "success", "faxes": {"0": fax}})  # PHP-style

    def ask_status(self, client: Provider) -> JobStatus:
        return client.status("", TO, datetime.now(UTC))


# --- MockTransport: what the docs do not promise ---------------------------------------------
@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (500, b"<html><h1>Internal Server Error</h1></html>", ProviderTransientError, "Internal"),
        (403, b"<html>Forbidden</html>", ProviderAuthError, "Forbidden"),
        (404, b"Not Found", ProviderPermanentError, "Not Found"),
        (200, b"<html>maintenance</html>", ProviderTransientError, "not a JSON object"),
        (200, b"", ProviderTransientError, "(empty body)"),
        (200, b'{"status": "succ', ProviderTransientError, "not a JSON object"),
        (200, b'{"faxes": []}', ProviderTransientError, "no status member"),
        (200, b'{"status": "some_new_code"}', ProviderPermanentError, "some_new_code"),
        (429, b'{"status": "limit_reached"}', ProviderTransientError, "limit_reached"),
    ],
)
def test_unpromised_answers(status: int, body: bytes, error: type[Exception], text: str) -> None:
    client = mock_client(lambda request: httpx.Response(status, content=body))
    with pytest.raises(error) as caught:
        client.list_inbound(datetime.now(UTC))
    assert text in str(caught.value)
    assert caught.value.http_status == status  # type: ignore[attr-defined]
    assert caught.value.provider == "voipms"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, b"", OutcomeUnknownError),
        (200, b"<html>ok?</html>", OutcomeUnknownError),
        (504, b"Gateway Timeout", OutcomeUnknownError),
        (500, b"<html>oops</html>", OutcomeUnknownError),
        (503, b"<html>down</html>", ProviderTransientError),
        (400, b"Bad Request", ProviderPermanentError),
    ],
)
def test_submit_unreadable_answers(status: int, body: bytes, error: type[Exception]) -> None:
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(status, content=body)

    with pytest.raises(error) as caught:
        mock_client(handler).submit(document(), TO)
    if error is not OutcomeUnknownError:
        assert not isinstance(caught.value, OutcomeUnknownError)
    assert len(calls) == 1


def test_credentials_stay_out_of_errors() -> None:
    client = mock_client(lambda r: httpx.Response(502, content=b"<html>Bad Gateway</html>"))
    with pytest.raises(ProviderTransientError) as caught:
        client.fax_folders()
    assert vsandbox.API_PASSWORD not in str(caught.value)


@pytest.mark.parametrize(
    ("word", "msg", "state", "cause"),
    [
        ("SUCCESS", "", JobState.DELIVERED, None),
        ("sent", "", JobState.DELIVERED, None),
        ("Busy", "", JobState.FAILED, FailureCause.BUSY),
        ("no_answer", "", JobState.FAILED, FailureCause.NO_ANSWER),
        ("FAILED", "Remote end busy", JobState.FAILED, FailureCause.BUSY),
        ("FAILED", "Number not in service", JobState.FAILED, FailureCause.BAD_NUMBER),
        ("FAILED", "page 2 garbled", JobState.FAILED, None),
        ("in-progress", "", JobState.SENDING, None),
        ("Queued", "", JobState.QUEUED, None),
        ("CANCELED", "", JobState.CANCELLED, None),
    ],
)
def test_status_words(word: str, msg: str, state: JobState, cause: FailureCause | None) -> None:
    status = vm.job_status({"status": word, "msg": msg, "pages": "3"})
    assert (status.state, status.cause, status.raw_status) == (state, cause, word)
    assert status.pages == 3


def test_download_answers_it_cannot_use() -> None:
    bad64 = mock_client(answer({"status": "success", "message_base64": "%%%not base64"}))
    with pytest.raises(ProviderTransientError, match="not valid base64"):
        bad64.download(InboundFax("1"), io.BytesIO(), 10**6)
    missing = mock_client(answer({"status": "success"}))
    with pytest.raises(ProviderTransientError, match="no message_base64"):
        missing.download(InboundFax("1"), io.BytesIO(), 10**6)
    huge = mock_client(
        lambda request: httpx.Response(200, headers={"content-length": "99999999"}, content=b"{}")
    )
    with pytest.raises(ProviderPermanentError, match="over the 1000-byte limit"):
        huge.download(InboundFax("1"), io.BytesIO(), 1000)
