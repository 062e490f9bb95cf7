"""The network between faxrelay and a provider, as the sandbox models it: a per-request latency and
a per-connection bandwidth, and a count of the provider calls in flight.

A real provider takes a while to answer (a round trip across the internet, its own work) and sends
a large PDF at a few MB/s; the sandbox on loopback answers at once and at memory speed, so without
this no benchmark could see whether faxrelay keeps slow transfers in flight side by side.

``NetworkModel`` wraps the sandbox's ASGI app. For every provider call (not ``/_sandbox/...``):
the call counts as in flight from its arrival until its answer's last byte (``peak`` is the most
seen at once since the model was last set: what tests/test_concurrency.py counts); the handler
runs ``latency`` seconds after the request arrived; request and answer bodies move at
``bandwidth`` bytes a second each (0: as fast as loopback goes), in pieces of ``PIECE`` bytes.
Settings: ``POST /_sandbox/network {latency?, bandwidth?}``, ``faxrelay sandbox --latency
--bandwidth``.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PIECE = 64 * 1024  # bytes sent per paced write


@dataclass
class Network:
    """The model's settings and what it has seen (touched on the event loop only)."""

    latency: float = 0.0  # seconds before each provider call is handled
    bandwidth: float = 0.0  # bytes per second per connection, each way; 0: unlimited
    in_flight: int = 0  # provider calls not answered in full yet
    peak: int = 0  # most provider calls in flight at once since the last ``set``
    calls: int = 0  # provider calls since the last ``set``

    def set(self, latency: float | None = None, bandwidth: float | None = None) -> None:
        if latency is not None:
            self.latency = max(0.0, latency)
        if bandwidth is not None:
            self.bandwidth = max(0.0, bandwidth)
        self.peak, self.calls = self.in_flight, 0

    def reset(self) -> None:
        self.set(0.0, 0.0)

    def as_json(self) -> dict[str, Any]:
        return {
            "latency": self.latency,
            "bandwidth": self.bandwidth,
            "in_flight": self.in_flight,
            "peak": self.peak,
            "calls": self.calls,
        }


class _Pacer:
    """Spreads one direction of one call's bytes at ``bandwidth`` bytes a second."""

    def __init__(self, bandwidth: float) -> None:
        self.bandwidth = bandwidth
        self.started = 0.0
        self.moved = 0

    async def take(self, size: int) -> None:
        """Wait until ``size`` more bytes may have moved."""
        if not self.moved:
            self.started = time.monotonic()
        self.moved += size
        delay = self.started + self.moved / self.bandwidth - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class NetworkModel:
    """ASGI middleware applying ``Network`` to every provider call (see the module's docstring)."""

    def __init__(self, app: ASGIApp, network: Network) -> None:
        self.app = app
        self.network = network

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or str(scope.get("path", "")).startswith("/_sandbox"):
            await self.app(scope, receive, send)
            return
        net = self.network
        net.in_flight += 1
        net.calls += 1
        net.peak = max(net.peak, net.in_flight)
        try:
            if net.latency:
                await asyncio.sleep(net.latency)
            if not net.bandwidth:
                await self.app(scope, receive, send)
                return
            await self.app(scope, _paced_receive(receive, net.bandwidth), _paced_send(send, net))
        finally:
            net.in_flight -= 1


def _paced_receive(receive: Receive, bandwidth: float) -> Receive:
    pacer = _Pacer(bandwidth)

    async def paced() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            await pacer.take(len(message.get("body", b"")))
        return message

    return paced


def _paced_send(send: Send, net: Network) -> Send:
    pacer = _Pacer(net.bandwidth)

    async def paced(message: Message) -> None:
        if message["type"] != "http.response.body" or not net.bandwidth:
            await send(message)
            return
        body: bytes = message.get("body", b"")
        more = bool(message.get("more_body", False))
        if len(body) <= PIECE:
            await pacer.take(len(body))
            await send(message)
            return
        view = memoryview(body)
        for start in range(0, len(body), PIECE):
            piece = bytes(view[start : start + PIECE])
            await pacer.take(len(piece))
            last = start + PIECE >= len(body)
            await send({"type": "http.response.body", "body": piece, "more_body": more or not last})

    return paced


_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "ki": 2**10, "mi": 2**20, "gi": 2**30}
_RATE = re.compile(r"\s*([0-9]*\.?[0-9]+)\s*([kmg]i?)?b?(?:/s)?\s*", re.IGNORECASE)


def parse_rate(text: str) -> float:
    """Bytes per second from ``4MB/s``, ``512kB/s``, ``2MiB/s`` or a bare number of bytes/s."""
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a rate: {text!r} (e.g. 4MB/s, 512kB/s, 2MiB/s)")
    return float(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
