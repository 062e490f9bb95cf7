"""Request bodies read under a cap, so that a request's size costs nothing before it is refused:
a declared length over the cap is refused before reading, and a chunked body (which declares
none) as soon as what has arrived passes the cap.

- ``capped(request, limit)``: the same request, whose body stops at ``limit`` bytes with
  ``BodyTooLarge`` (for Starlette's multipart parser, which streams parts to spooled files but
  has no cap of its own on a whole request);
- ``small_form(request, limit)``: a short urlencoded form (``/login``, the dashboard's buttons),
  read whole under the cap and parsed, without python-multipart;
- ``read_capped(headers, receive, limit)`` and ``read_prefix(receive, cap)``: the webhook routes'
  raw ASGI bodies (``webhooks.intake``), keeping what was read of a refused one for the raw log.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import Message, Receive

# The dashboard's forms: a token, a CSRF token, a "next" path.
FORM_BYTES = 8 * 1024


class BodyTooLarge(Exception):
    """The body is over ``limit`` bytes; ``partial`` is what had been read (nothing when the
    declared length said so), for the raw log."""

    def __init__(self, limit: int, partial: bytes = b"") -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit
        self.partial = partial


class ClientLeft(Exception):
    """The client went away before its whole body was in; ``partial`` is what had arrived."""

    def __init__(self, partial: bytes) -> None:
        super().__init__("the client left mid-body")
        self.partial = partial


def capped(request: Request, limit: int) -> Request:
    """``request`` with a body that raises BodyTooLarge once more than ``limit`` bytes came."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    received = 0
    receive = request.receive

    async def counting() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(limit)
        return message

    return Request(request.scope, counting)


async def small_form(request: Request, limit: int = FORM_BYTES) -> dict[str, str]:
    """An urlencoded form of at most ``limit`` bytes (the last of a repeated name wins); an empty
    form for any other content type. Raises BodyTooLarge."""
    body = bytearray()
    async for chunk in capped(request, limit).stream():
        body += chunk
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    return dict(parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True))


async def read_capped(headers: dict[str, str], receive: Receive, limit: int) -> bytes:
    """The body, refusing (without reading on) one larger than ``limit``, chunked ones too."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        body: bytes = message.get("body", b"")  # the whole body in one message: the usual case
        if len(body) > limit:
            raise BodyTooLarge(limit, body)
        return body
    chunks: list[bytes] = []
    size = 0
    while True:
        if message["type"] == "http.disconnect":
            raise ClientLeft(b"".join(chunks))
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            raise BodyTooLarge(limit, b"".join(chunks))
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()


async def read_prefix(receive: Receive, cap: int) -> tuple[bytes, bool]:
    """Up to about ``cap`` bytes of a body that will not be used (a refused request's, kept in
    the raw log so that it can be replayed), and whether that was all of it. Reads no further."""
    chunks: list[bytes] = []
    size = 0
    while size <= cap:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks), False  # the client left
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
    return b"".join(chunks), False
