"""Request bodies read under a cap, so that a request's size costs nothing before it is refused:
a declared length over the cap is refused before reading, and a chunked body (which declares
none) as soon as what has arrived passes the cap.

- ``capped(request, limit)``: the same request, whose body stops at ``limit`` bytes with
  ``BodyTooLarge`` (for Starlette's multipart parser, which streams parts to spooled files but
  has no cap of its own on a whole request);
- ``small_form(request, limit)``: a short urlencoded form (``/login``, the dashboard's buttons),
  read whole under the cap and parsed, without python-multipart.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import Message

# The dashboard's forms: a token, a CSRF token, a "next" path.
FORM_BYTES = 8 * 1024


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


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
