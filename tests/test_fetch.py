"""The URL rules, checked without opening a connection to anything.

The inner transport is an ``httpx.MockTransport`` that records what would have been sent, so a
refusal is proven by its staying empty; resolvers are stand-ins that return fixed addresses.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest

from worker.io.fetch import GuardedTransport, URLRefused, is_public_address

NOT_PUBLIC = [
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "127.0.0.1",
    "127.0.0.2",
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "0.0.0.0",
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "::1",
    "fe80::1",
    "fe80::1%eth0",
    "fc00::1",  # unique local
    "::ffff:10.0.0.1",  # IPv4 inside IPv6
    "::ffff:8.8.8.8",  # even a public IPv4 inside IPv6 is refused
    "64:ff9b::a00:1",  # NAT64
    "2002:a00:1::1",  # 6to4
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "::10.0.0.1",  # IPv4-compatible (::/96)
    "::8.8.8.8",
    "::ffff:0:a00:1",  # IPv4-translated (::ffff:0:0:0/96)
    "::ffff:0:808:808",
    "fec0::1",  # site-local (deprecated)
    "feff::1",
    "4000::1",  # reserved: outside global unicast 2000::/3
    "ff02::1",
    "not an address",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111"]


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not is_public_address(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert is_public_address(address)


class Recorder:
    """Stands in for the network: records each request instead of sending it."""

    def __init__(self, answer: httpx.Response | None = None) -> None:
        self.sent: list[httpx.Request] = []
        self.answer = answer

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return self.answer or httpx.Response(200, content=b"%PDF-1.4")


def client(
    allowed: list[str], addresses: list[str], recorder: Recorder, allow_private: bool = False
) -> httpx.Client:
    transport = GuardedTransport(
        allowed,
        allow_private=allow_private,
        resolver=lambda host, port: addresses,
        inner=httpx.MockTransport(recorder),
    )
    return httpx.Client(transport=transport, follow_redirects=True)


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "169.254.169.254", "100.64.0.1", "::ffff:10.0.0.1", "fe80::1"]
)
def test_a_name_resolving_to_a_private_address_is_never_fetched(address: str) -> None:
    recorder = Recorder()
    with (
        client(["files.example.com"], [address], recorder) as http,
        pytest.raises(URLRefused) as refused,
    ):
        http.get("https://files.example.com/fax.pdf")
    assert recorder.sent == []
    assert "non-public" in refused.value.reason


def test_one_private_address_among_public_ones_is_enough_to_refuse() -> None:
    recorder = Recorder()
    http = client(["files.example.com"], ["8.8.8.8", "10.0.0.1"], recorder)
    with http, pytest.raises(URLRefused):
        http.get("https://files.example.com/fax.pdf")
    assert recorder.sent == []


def test_a_host_not_allowed_is_refused_before_any_lookup() -> None:
    looked_up: list[str] = []
    recorder = Recorder()
    transport = GuardedTransport(
        ["files.example.com"],
        resolver=lambda host, port: looked_up.append(host) or ["8.8.8.8"],  # type: ignore[func-returns-value]
        inner=httpx.MockTransport(recorder),
    )
    with httpx.Client(transport=transport) as http, pytest.raises(URLRefused) as refused:
        http.get("https://elsewhere.example.net/fax.pdf")
    assert looked_up == [] and recorder.sent == []
    assert "not an allowed host" in refused.value.reason


def test_the_connection_goes_to_the_checked_address_with_the_name_kept() -> None:
    recorder = Recorder()
    with client(["files.example.com"], ["93.184.216.34"], recorder) as http:
        answer = http.get("https://files.example.com/fax.pdf?x=1")
    assert answer.status_code == 200
    [sent] = recorder.sent
    assert sent.url.host == "93.184.216.34" and sent.url.path == "/fax.pdf"
    assert sent.headers["host"] == "files.example.com"
    assert sent.extensions["sni_hostname"] == "files.example.com"


def test_a_redirect_to_a_host_not_allowed_is_not_followed() -> None:
    recorder = Recorder(
        httpx.Response(302, headers={"location": "http://10.0.0.1/latest/meta-data"})
    )
    http = client(["files.example.com"], ["93.184.216.34"], recorder)
    with http, pytest.raises(URLRefused):
        http.get("https://files.example.com/fax.pdf")
    assert [r.url.host for r in recorder.sent] == ["93.184.216.34"]  # the first hop only


def test_ip_literals_in_the_configuration_and_allow_private_are_trusted() -> None:
    recorder = Recorder()
    with client(["127.0.0.1"], [], recorder) as http:
        assert http.get("http://127.0.0.1:9/fax.pdf").status_code == 200
    with client(["pbx.internal"], ["10.1.2.3"], recorder, allow_private=True) as http:
        assert http.get("http://pbx.internal/fax.pdf").status_code == 200
    assert [r.url.host for r in recorder.sent] == ["127.0.0.1", "10.1.2.3"]


def test_other_schemes_are_refused() -> None:
    recorder = Recorder()
    transport = GuardedTransport(["files.example.com"], inner=httpx.MockTransport(recorder))
    with pytest.raises(URLRefused):
        transport.check(httpx.Request("GET", "ftp://files.example.com/fax.pdf"))


def unresolvable(host: str, port: int) -> list[str]:
    raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")


@pytest.mark.parametrize(
    ("resolver", "says"),
    [(unresolvable, "Temporary failure in name resolution"), (lambda h, p: [], "no address")],
)
def test_a_name_that_does_not_resolve_is_a_connect_error_not_a_refusal(
    resolver: Callable[[str, int], list[str]], says: str
) -> None:
    """A DNS outage is retried like any connection failure; only the rules refuse for good."""
    recorder = Recorder()
    transport = GuardedTransport(
        ["files.example.com"], resolver=resolver, inner=httpx.MockTransport(recorder)
    )
    with httpx.Client(transport=transport) as http, pytest.raises(httpx.ConnectError) as failed:
        http.get("https://files.example.com/fax.pdf")
    assert recorder.sent == []
    assert "'files.example.com'" in str(failed.value) and says in str(failed.value)
    assert failed.value.request.url == "https://files.example.com/fax.pdf"
