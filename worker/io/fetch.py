"""Fetching URLs that arrive from outside, under DESIGN.md's "Fetching URLs" rules.

``GuardedTransport`` wraps httpx's transport. For every request (redirect hops included, since httpx
sends each hop through the transport) it:

1. refuses a host that is not in the allowed set, without opening a connection;
2. for a host given by name, resolves it and refuses it unless every address is public (no
   loopback, private, link-local, site-local, CGNAT, multicast, reserved, or IPv4 inside IPv6) —
   unless the account allows private networks. A name that does not resolve (or resolves to
   nothing) is not refused: it raises ``httpx.ConnectError``, a transient failure the callers
   retry, since a DNS outage must not fail a fax for good;
3. connects to the address it checked (the Host header and TLS server name keep the name), so a
   second, different DNS answer cannot slip in between check and connect.

An IP literal in the allowed set (written so in the configuration) is trusted as written.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

import httpx

Resolver = Callable[[str, int], list[str]]

# IPv6 ranges that carry an IPv4 address inside them: IPv4-compatible, IPv4-translated, NAT64,
# 6to4, Teredo. (IPv4-mapped ::ffff:0:0/96 is ``ipv4_mapped``.)
_EMBEDDED_V4 = tuple(
    ipaddress.ip_network(n)
    for n in (
        "::/96",
        "::ffff:0:0:0/96",
        "64:ff9b::/96",
        "64:ff9b:1::/48",
        "2002::/16",
        "2001::/32",
    )
)


class URLRefused(Exception):
    """The URL's host is not allowed, or resolves to an address that is not public (final)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"refused to fetch {url}: {reason}")


def is_public_address(address: str) -> bool:
    """True only for globally routable unicast addresses that are not IPv4 inside IPv6."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None or ip.sixtofour is not None or ip.teredo is not None:
            return False
        if ip.is_site_local or any(ip in net for net in _EMBEDDED_V4):
            return False
    # Python 3.11's is_global lets reserved IPv6 space (e.g. 4000::/3) through.
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def normalise_hosts(hosts: Iterable[str]) -> frozenset[str]:
    """Hosts as the configuration gives them: bare names, IP literals, or URLs."""
    out = set()
    for host in hosts:
        host = host.strip().lower()
        if not host:
            continue
        out.add(host_of(host) if "://" in host else host.strip("[]"))
    return frozenset(out)


class GuardedTransport(httpx.BaseTransport):
    def __init__(
        self,
        allowed_hosts: Iterable[str],
        *,
        allow_private: bool = False,
        resolver: Resolver = system_resolver,
        inner: httpx.BaseTransport | None = None,
    ) -> None:
        self.allowed = normalise_hosts(allowed_hosts)
        self.allow_private = allow_private
        self.resolver = resolver
        self.inner = inner or httpx.HTTPTransport()

    def check(self, request: httpx.Request) -> str:
        """The address to connect to for ``request``; raises URLRefused, or httpx.ConnectError
        when the name does not resolve."""
        url = request.url
        host = url.host.lower()
        text = str(url)
        if url.scheme not in ("http", "https"):
            raise URLRefused(text, f"scheme {url.scheme!r} is not http(s)")
        if host not in self.allowed:
            raise URLRefused(text, f"host {host!r} is not an allowed host")
        if is_ip_literal(host):
            return host  # written as an IP literal in the configuration: trusted as written
        try:
            addresses = self.resolver(host, url.port or (443 if url.scheme == "https" else 80))
        except OSError as exc:
            raise httpx.ConnectError(
                f"host {host!r} does not resolve: {exc}", request=request
            ) from exc
        if not addresses:
            raise httpx.ConnectError(f"host {host!r} resolves to no address", request=request)
        if not self.allow_private:
            for address in addresses:
                if not is_public_address(address):
                    raise URLRefused(text, f"host {host!r} resolves to non-public {address}")
        return addresses[0]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        address = self.check(request)
        if address == request.url.host:
            return self.inner.handle_request(request)
        pinned = httpx.Request(
            request.method,
            request.url.copy_with(host=address),
            headers=request.headers,  # keeps Host: the name
            stream=request.stream,
            extensions={**request.extensions, "sni_hostname": request.url.host},
        )
        return self.inner.handle_request(pinned)

    def close(self) -> None:
        self.inner.close()


def guarded_client(
    allowed_hosts: Iterable[str],
    *,
    allow_private: bool = False,
    timeout: httpx.Timeout | None = None,
    resolver: Resolver = system_resolver,
    max_redirects: int = 5,
) -> httpx.Client:
    return httpx.Client(
        transport=GuardedTransport(allowed_hosts, allow_private=allow_private, resolver=resolver),
        timeout=timeout or httpx.Timeout(60.0, connect=10.0),
        follow_redirects=True,
        max_redirects=max_redirects,
    )
