"""The public queue-driven send, ``faxrelay.send_fax`` (DESIGN.md "Queue-driven sends"), as a
plain function: the acceptor (``worker.acceptor``) and the Celery task (``worker.tasks``) both run
it and differ only in how they keep the message and when they try again.

The same validation as ``POST /v1/faxes`` (``accept.accept_send``). The idempotency key is shared
with the HTTP API's ``Idempotency-Key`` header; without one the message's task id is the key, so a
message handled again after its consumer died (the record made, the message not yet removed)
finds the first record instead of making a second fax.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from worker.outage import storage_down
from worker.pipeline.outbound import accept
from worker.pipeline.outbound import request as outbound_request
from worker.retry import QUEUED_SEND, RetryRule
from worker.runtime import Runtime

# The task's parameters, in the order a message's positional args fill them.
FIELDS = ("account", "to", "document", "idempotency_key", "callback_url", "metadata")


class SendRefused(Exception):
    """A queued send that cannot be accepted; the message says what is wrong."""


class SendUnavailable(Exception):
    """A queued send that could not be accepted for ``retry.QUEUED_SEND``'s whole span because
    S3, Redis or the document's URL stayed unreachable; the message says which."""


class SendDeferred(Exception):
    """S3, Redis or the document's URL is unreachable for now: the same message may succeed
    later, so it is kept and tried again (``retry_delay``)."""


def arguments(args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A message's args and kwargs as ``send_queued``'s keyword arguments; SendRefused when
    they do not fit the task's signature (as calling the task would raise TypeError)."""
    if len(args) > len(FIELDS):
        raise SendRefused(f"422 bad_request: at most {len(FIELDS)} positional arguments")
    call = dict(zip(FIELDS, args, strict=False))
    for name, value in kwargs.items():
        if name not in FIELDS:
            raise SendRefused(f"422 bad_request: unexpected argument {name!r}")
        if name in call:
            raise SendRefused(f"422 bad_request: argument {name!r} given twice")
        call[name] = value
    return call


def send_queued(
    runtime: Runtime,
    task_id: str,
    *,
    account: str = "",
    to: str = "",
    document: dict[str, Any] | None = None,
    idempotency_key: str = "",
    callback_url: str = "",
    metadata: dict[str, Any] | None = None,
) -> str:
    """Accept one queued send; returns its fax id (a new record's, or the one its idempotency
    key names). SendRefused: the send is wrong and never will be right. SendDeferred: a
    dependency is down; try again later."""
    try:  # the /v1 model (faxrelay_client.models.QueuedSend): the API's checks and codes
        request = outbound_request.parse_queued(
            account=account,
            to=to,
            document=document,
            idempotency_key=idempotency_key or task_id,
            callback_url=callback_url,
            metadata=metadata,
        )
    except accept.SendError as exc:
        raise SendRefused(f"{exc.status} {exc.code}: {exc.message}") from None
    try:
        accepted = accept.accept_send(runtime, request)
    except accept.SendError as exc:
        if not exc.transient:
            raise SendRefused(f"{exc.status} {exc.code}: {exc.message}") from None
        raise SendDeferred(str(exc)) from exc
    except Exception as exc:
        if not (down := storage_down(exc)):
            raise
        raise SendDeferred(f"{down} is unavailable: {type(exc).__name__}: {exc}") from exc
    return accepted.record.id


def retry_delay(runtime: Runtime, attempt: int, rule: RetryRule = QUEUED_SEND) -> float | None:
    """Seconds to wait after the ``attempt``-th failed attempt (1-based), or None when the rule's
    attempts have run out (the send then fails with ``rule.on_exhausted``)."""
    if rule.max_attempts is not None and attempt >= rule.max_attempts:
        return None
    return rule.backoff.delay(attempt) * runtime.settings.retry_scale
