"""``faxrelay events``: faxrelay's signed events (Standard Webhooks); ``verify`` checks a saved
delivery's signature and timestamp the way a subscriber must.
"""

from __future__ import annotations

import json
import re
import time
from typing import IO

import click

from webhooks.cli.common import cli_settings, fail


@click.group("events")
def events_group() -> None:
    """faxrelay's signed events (Standard Webhooks)."""


REQUEST_LINE = re.compile(rb"^[A-Z]+ \S+ HTTP/\d")


def _parse_request(raw: bytes) -> tuple[dict[str, str], bytes]:
    """A saved HTTP request: an optional request line, headers, a blank line, the body."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    if lines and REQUEST_LINE.match(lines[0].encode("latin-1")):
        lines = lines[1:]
    headers = _headers(lines)
    length = headers.get("content-length")
    if length and length.isdigit():
        body = body[: int(length)]
    if "chunked" in headers.get("transfer-encoding", ""):
        fail("the saved request is chunked: save the decoded body with --body instead", 2)
    return headers, body


def _headers(lines: list[str] | tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for line in lines:
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            fail(f"not a header (want 'name: value'): {line!r}", 2)
        headers[name.strip().lower()] = value.strip()
    return headers


@events_group.command("verify")
@click.option("--secret", default=None, help="whsec_…; default: FAXRELAY_EVENT_SECRET's value.")
@click.option(
    "--body", "body_file", type=click.File("rb"), default=None, help="The body ('-': stdin)."
)
@click.option("--header", "-H", "header_lines", multiple=True, help="'name: value' (repeat).")
@click.option(
    "--request",
    "request_file",
    type=click.File("rb"),
    default=None,
    help="A saved HTTP request (headers, blank line, body) instead of --body/--header.",
)
@click.option("--tolerance", default=300.0, show_default=True,
              help="Largest age of webhook-timestamp in seconds; 0: do not check it.")  # fmt: skip
def events_verify(
    secret: str | None,
    body_file: IO[bytes] | None,
    header_lines: tuple[str, ...],
    request_file: IO[bytes] | None,
    tolerance: float,
) -> None:
    """Check an event's Standard Webhooks signature: prints ok, or why not (exit 1)."""
    import hmac

    from config.accounts import webhook_secret_key
    from worker.pipeline.events import sign

    if request_file is not None:
        if body_file is not None:
            fail("give --request or --body, not both", 2)
        headers, body = _parse_request(request_file.read())
        headers.update(_headers(header_lines))
    else:
        if body_file is None:
            fail("give the body (--body FILE) and its headers (--header), or --request FILE", 2)
        headers, body = _headers(header_lines), body_file.read()
    if secret is None:
        configured = cli_settings().event_secret
        if configured is None:
            fail("give --secret whsec_… (FAXRELAY_EVENT_SECRET is not set)", 2)
        secret = configured.get_secret_value()
    missing = [
        h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if h not in headers
    ]
    if missing:
        fail(f"not verified: missing header(s) {', '.join(missing)}")
    try:
        timestamp = int(headers["webhook-timestamp"])
    except ValueError:
        fail(f"not verified: webhook-timestamp {headers['webhook-timestamp']!r} is not a number")
    try:
        webhook_secret_key(secret)  # the forms faxrelay signs with: whsec_ + base64, or bare base64
    except ValueError:
        fail("the secret is not a whsec_ secret (whsec_ followed by base64)", 2)
    expected = sign(secret, headers["webhook-id"], timestamp, body).split(",", 1)[1]
    given = [
        s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s.startswith("v1,")
    ]
    if not any(hmac.compare_digest(expected, sig) for sig in given):
        fail("not verified: the signature does not match (forged, altered, or another secret)")
    age = time.time() - timestamp
    if tolerance and abs(age) > tolerance:
        fail(
            f"not verified: the signature matches, but webhook-timestamp is {age:.0f} s "
            f"{'old' if age > 0 else 'in the future'} (tolerance {tolerance:.0f} s): a replay or "
            "a stale saved request (--tolerance 0 skips this check)"
        )
    what = ""
    try:
        event = json.loads(body)
        data = event.get("data") or {}
        what = f": {event.get('type')} for {data.get('id')} ({data.get('state')})"
    except (ValueError, AttributeError):
        pass
    click.echo(f"ok: signature valid, webhook-id {headers['webhook-id']}{what}")
