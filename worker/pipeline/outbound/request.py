"""A send request in any of its forms (JSON, multipart, the Celery task's keyword arguments, the
CLI's options) validated by the one model of the ``/v1`` contract (``faxrelay_client.models``)
and turned into what ``accept.accept_send`` takes.

The models check the shape (fields present, of the right kind); ``accept_send`` checks the rest
(the account exists, the number suits its provider, the callback host is allowed, the document is
a PDF), so the HTTP API, the task and the CLI refuse the same requests with the same codes.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from faxrelay_client.models import QueuedSend, SendFax, SendFields, describe
from worker.pipeline.outbound.accept import SendError, SendRequest


def refusal(exc: ValidationError) -> SendError:
    """A validation failure as the 422 the API answers (its code names the kind, its message
    the field)."""
    problem = describe(exc)
    return SendError(422, problem.code, problem.message)


def from_fields(
    fields: SendFields, *, idempotency_key: str = "", file: bytes | None = None
) -> SendRequest:
    """A validated send (``SendFax`` with its document, or ``SendFields`` and an upload)."""
    document = fields.document.model_dump(exclude_none=True) if isinstance(fields, SendFax) else {}
    return SendRequest(
        account=fields.account,
        to=fields.to,
        document=document,
        idempotency_key=idempotency_key,
        callback_url=fields.callback_url,
        metadata=fields.metadata,
        file=file,
    )


def parse_json(body: Any, *, idempotency_key: str = "") -> SendRequest:
    """``POST /v1/faxes`` with a JSON body; SendError(422) says which field is wrong."""
    if not isinstance(body, dict):
        raise SendError(422, "bad_json", "body must be a JSON object")
    try:
        send = SendFax.model_validate(body)
    except ValidationError as exc:
        raise refusal(exc) from None
    return from_fields(send, idempotency_key=idempotency_key)


def parse_upload(fields: dict[str, Any], file: bytes, *, idempotency_key: str = "") -> SendRequest:
    """A send whose document is an upload (multipart, the CLI): the other fields validated."""
    try:
        send = SendFields.model_validate(fields)
    except ValidationError as exc:
        raise refusal(exc) from None
    return from_fields(send, idempotency_key=idempotency_key, file=file)


def parse_queued(**kwargs: Any) -> SendRequest:
    """The ``faxrelay.send_fax`` task's keyword arguments; SendError(422) when they are wrong."""
    try:
        send = QueuedSend.model_validate(kwargs)
    except ValidationError as exc:
        raise refusal(exc) from None
    return from_fields(send, idempotency_key=send.idempotency_key)
