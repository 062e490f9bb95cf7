"""Reading a task message as kombu's Redis transport keeps it: the JSON envelope (``body``,
``content-type``, ``headers``, ``properties``) of Celery's message protocol v2 (v1 read too).

``worker.fastpath.messages`` writes this envelope; this module reads it, for the acceptor
(``worker.acceptor``), which takes the public queue's messages without a Celery worker.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any


class BadMessage(Exception):
    """A message the acceptor cannot read; ``task_id`` when it could tell."""

    def __init__(self, reason: str, task_id: str = "") -> None:
        super().__init__(reason)
        self.task_id = task_id


@dataclass(frozen=True)
class Message:
    """One message of the queue, as Celery's message protocol (v2; v1 read too) describes it."""

    raw: bytes  # as it is in Redis: what LREM and the scripts match
    task_id: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0  # attempts that failed for a transient reason so far
    eta: float | None = None  # epoch seconds: not to run before
    expires: float | None = None  # epoch seconds: not to run after

    def with_retries(self, retries: int) -> bytes:
        """The message as kept for its next attempt: the count in ``headers.retries``, where a
        Celery worker's retry puts it too."""
        envelope = json.loads(self.raw)
        headers = envelope.get("headers")
        envelope["headers"] = {**(headers if isinstance(headers, dict) else {}), "retries": retries}
        return json.dumps(envelope).encode()


def parse(raw: bytes) -> Message:
    """Read one kombu message envelope (JSON: ``body``, ``content-type``, ``headers``,
    ``properties``); BadMessage when it is not a JSON task message."""
    try:
        envelope = json.loads(raw)
    except ValueError:
        raise BadMessage("not a JSON message envelope") from None
    if not isinstance(envelope, dict):
        raise BadMessage("not a JSON message envelope")
    headers: dict[str, Any] = _mapping(envelope.get("headers"))
    properties: dict[str, Any] = _mapping(envelope.get("properties"))
    task_id = str(headers.get("id") or properties.get("correlation_id") or "")
    content_type = envelope.get("content-type")
    if content_type != "application/json":  # the app accepts JSON only (config/celery_app.py)
        raise BadMessage(f"content type {content_type!r} is not accepted", task_id)
    if headers.get("compression"):
        raise BadMessage(f"compressed body ({headers['compression']}) is not accepted", task_id)
    body = envelope.get("body", "")
    try:
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body)
        decoded = json.loads(body)
    except (ValueError, TypeError, binascii.Error):
        raise BadMessage("body is not JSON", task_id) from None
    try:
        if "task" in headers:  # protocol 2: the body is [args, kwargs, embed]
            args, kwargs, _embed = decoded
            fields: dict[str, Any] = headers
        else:  # protocol 1: the body is the whole request
            args, kwargs, fields = decoded.get("args", []), decoded.get("kwargs", {}), decoded
            task_id = str(decoded.get("id") or task_id)
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise ValueError("args or kwargs of the wrong type")
        return Message(
            raw=raw,
            task_id=task_id,
            task=str(fields["task"]),
            args=args,
            kwargs=kwargs,
            retries=max(int(headers.get("retries") or 0), int(fields.get("retries") or 0)),
            eta=_when(fields.get("eta")),
            expires=_when(fields.get("expires")),
        )
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise BadMessage(f"not a task message: {exc}", task_id) from None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _when(value: Any) -> float | None:
    """An ISO 8601 time of a message (naive: UTC, Celery's default) as epoch seconds."""
    if not value:
        return None
    moment = datetime.fromisoformat(str(value))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
