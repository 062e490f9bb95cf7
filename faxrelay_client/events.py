"""Checking a faxrelay event (Standard Webhooks: ``webhook-id``, ``webhook-timestamp``,
``webhook-signature``) the way a receiver must: the HMAC in constant time, and a fresh timestamp.

```python
from faxrelay_client import InvalidEvent, verify_event

event = verify_event(secret, request.headers, request.body)   # raises InvalidEvent
if event.type == "fax.delivered": ...
```
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ValidationError

from faxrelay_client.models import Fax

EventType = Literal[
    "fax.received", "fax.archived", "fax.archive_at_risk", "fax.submitted", "fax.delivered",
    "fax.failed", "fax.cancelled",
]  # fmt: skip


class InvalidEvent(Exception):
    """Not a genuine, fresh faxrelay event; the message says why."""


class Event(BaseModel):
    type: EventType
    timestamp: str
    data: Fax


def verify_event(
    secret: str, headers: Mapping[str, str], body: bytes, *, tolerance: float = 300.0
) -> Event:
    """The event, once its signature (by ``secret``, ``whsec_…``) and its timestamp (within
    ``tolerance`` seconds of now; 0: not checked) are proven; InvalidEvent otherwise."""
    lower = {k.lower(): v for k, v in headers.items()}
    missing = [
        h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if h not in lower
    ]
    if missing:
        raise InvalidEvent(f"missing header(s) {', '.join(missing)}")
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidEvent("the secret is not a whsec_ secret (whsec_ followed by base64)") from exc
    stamp = lower["webhook-timestamp"]
    if not stamp.isdigit():
        raise InvalidEvent(f"webhook-timestamp {stamp!r} is not a number")
    signed = f"{lower['webhook-id']}.{stamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1)[1] for s in lower["webhook-signature"].split() if s.startswith("v1,")]
    # Every candidate compared, in constant time.
    if not any([hmac.compare_digest(expected, candidate) for candidate in given]):
        raise InvalidEvent("the signature does not match (forged, altered, or another secret)")
    age = time.time() - int(stamp)
    if tolerance and abs(age) > tolerance:
        raise InvalidEvent(f"webhook-timestamp is {age:.0f} s off (tolerance {tolerance:.0f} s)")
    try:
        return Event.model_validate_json(body)
    except ValidationError as exc:
        raise InvalidEvent(f"the body is not a faxrelay event: {exc}") from exc
