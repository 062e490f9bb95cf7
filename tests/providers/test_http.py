"""The HTTP plumbing every provider shares: downloads (compressed, cut short, oversized), a name
that does not resolve, and the configured timeouts. No connection is opened: the network is an
``httpx.MockTransport``."""

from __future__ import annotations

import gzip
import io
import socket

import httpx
import pytest

from config.accounts import PROVIDER_FIELDS, Account
from config.settings import Settings
from sandbox.pdf import make_pdf
from worker.io.fetch import GuardedTransport
from worker.providers import PROVIDER_NAMES, provider_for
from worker.providers._http import stream_to
from worker.providers.base import InboundFax, ProviderPermanentError, ProviderTransientError
from worker.runtime import Runtime

PDF = make_pdf(3, 50_000, label="received")
URL = "https://files.example.com/fax.pdf"


def download(body: bytes, headers: dict[str, str], max_bytes: int = 10_000_000) -> bytes:
    """What ``stream_to`` writes for an answer with this body (as sent on the wire) and headers."""

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, stream=httpx.ByteStream(body))

    sink = io.BytesIO()
    with (
        httpx.Client(transport=httpx.MockTransport(serve)) as http,
        http.stream("GET", URL) as response,
    ):
        written = stream_to("primevox", "download", response, sink, max_bytes)
    assert written == len(sink.getvalue())
    return sink.getvalue()


def gzip_headers(wire: bytes) -> dict[str, str]:
    return {
        "content-type": "application/pdf",
        "content-encoding": "gzip",
        "content-length": str(len(wire)),
    }


def test_a_gzip_encoded_pdf_downloads_whole() -> None:
    wire = gzip.compress(PDF)
    assert len(wire) < len(PDF)  # else the test would not tell wire bytes from decoded ones
    assert download(wire, gzip_headers(wire)) == PDF


def test_a_gzip_encoded_pdf_cut_short_is_truncated() -> None:
    wire = gzip.compress(PDF)
    with pytest.raises(ProviderTransientError, match="truncated"):
        download(wire[: len(wire) // 2], gzip_headers(wire))


def test_a_gzip_bomb_stops_at_the_limit() -> None:
    wire = gzip.compress(b"\0" * 5_000_000)  # a few kB on the wire
    with pytest.raises(ProviderPermanentError, match="over the 1000000-byte limit"):
        download(wire, gzip_headers(wire), max_bytes=1_000_000)


def test_a_broken_gzip_stream_is_transient() -> None:
    wire = b"\x1f\x8b" + b"not gzip at all" * 10
    with pytest.raises(ProviderTransientError, match="broke off"):
        download(wire, gzip_headers(wire))


def test_a_plain_pdf_cut_short_is_still_truncated() -> None:
    headers = {"content-type": "application/pdf", "content-length": str(len(PDF))}
    assert download(PDF, headers) == PDF
    with pytest.raises(ProviderTransientError, match=f"truncated: 1000 of {len(PDF)} bytes"):
        download(PDF[:1000], headers)


def account(provider: str) -> Account:
    required = {field: "x" for field, needed in PROVIDER_FIELDS[provider].items() if needed}
    return Account.model_validate(
        {"name": "main", "provider": provider, "base_url": "https://api.example.com"} | required
    )


def test_a_download_host_that_does_not_resolve_is_a_transient_error() -> None:
    """A DNS outage retries (ProviderTransientError), it does not fail the fax as refused."""
    sent: list[httpx.Request] = []

    def unresolvable(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    def network(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, content=PDF)

    transport = GuardedTransport(
        ["files.example.com"], resolver=unresolvable, inner=httpx.MockTransport(network)
    )
    with httpx.Client(transport=transport) as http:
        provider = provider_for(account("primevox"), http)
        with pytest.raises(ProviderTransientError) as failed:
            provider.download(InboundFax("f1", download_url=URL), io.BytesIO(), 10_000_000)
    assert sent == []
    assert (failed.value.provider, failed.value.operation) == ("primevox", "download")
    assert "'files.example.com' does not resolve" in str(failed.value)
    assert "Temporary failure in name resolution" in str(failed.value)


@pytest.mark.parametrize("provider", PROVIDER_NAMES)
def test_providers_use_the_configured_timeouts(
    provider: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FAXRELAY_CONFIG", raising=False)
    monkeypatch.setenv("FAXRELAY_READ_TIMEOUT", "7.5")
    monkeypatch.setenv("FAXRELAY_CONNECT_TIMEOUT", "2.5")
    settings = Settings(accounts={"main": account(provider)})
    client = Runtime(settings, lambda *a: None).provider("main")
    assert client.timeout == httpx.Timeout(7.5, connect=2.5)
