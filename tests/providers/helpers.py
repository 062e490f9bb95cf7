"""What the provider tests share: waiting on the sandbox, documents to send, sandbox faults, and a
mock network (``httpx.MockTransport``) that records every request it is sent."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from sandbox.pdf import make_pdf
from tests.sandbox_server import RunningSandbox
from worker.providers.base import OutgoingDocument

T = TypeVar("T")

PDF = make_pdf(2, label="outgoing")
POLL_EVERY = 0.02  # seconds: sandbox jobs change state every few tenths of a second


def wait_for(check: Callable[[], T], timeout: float = 10.0, what: str = "condition") -> T:
    """Call ``check`` until it returns something truthy, and return that; fail after ``timeout``.

    Polls at a short fixed interval: tests that record every state a job passes through must not
    skip one.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout:g} s (last: {value!r})")
        time.sleep(POLL_EVERY)


def document(content: bytes = PDF, filename: str = "fax.pdf", url: str = "") -> OutgoingDocument:
    """A document to submit, read from memory (``url``: where PrimeVox fetches it)."""
    return OutgoingDocument(filename, io.BytesIO(content), len(content), url=url)


def fault(
    sandbox: RunningSandbox, provider: str, operation: str, kind: str = "error", **extra: Any
) -> None:
    """Make the sandbox's next ``operation`` call of ``provider`` fail (see sandbox.core)."""
    sandbox.control("faults", provider=provider, operation=operation, kind=kind, **extra)


Answer = Callable[[httpx.Request], httpx.Response]


class MockNetwork:
    """An ``httpx.Client`` over ``httpx.MockTransport``: every request is recorded, then
    answered by ``answer`` (which may raise an ``httpx.TransportError`` to play a failure)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[httpx.Request] = []
        self.http = httpx.Client(transport=httpx.MockTransport(self._handle))

    def _handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def answer_with(status: int, body: bytes | str, content_type: str = "text/html") -> Answer:
    """An answer that is always the same."""
    content = body.encode() if isinstance(body, str) else body
    return lambda request: httpx.Response(
        status, content=content, headers={"content-type": content_type}
    )


def raising(exc: type[httpx.TransportError], message: str = "network failure") -> Answer:
    """An answer that never comes: the transport fails with ``exc``."""

    def fail(request: httpx.Request) -> httpx.Response:
        raise exc(message, request=request)

    return fail
