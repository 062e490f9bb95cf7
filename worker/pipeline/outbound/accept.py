"""Accepting a send: the one entry for the HTTP API, the Celery ``send_fax`` task and the CLI.

``accept_send`` validates the request (account, destination by the provider module, callback
host, metadata), reads the document (base64, an S3 key, a URL under the document host rules, or
an upload), checks that it is a PDF, stores it under ``outbound/`` and creates the ``queued``
record with the idempotency key, then wakes the submit step. A repeat of an earlier request (same
key, same content) answers with the earlier record; the same key with a different request is a
conflict.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from worker.domain import Direction, FaxRecord
from worker.io.fetch import URLRefused, guarded_client, host_of, normalise_hosts
from worker.io.pdfcheck import check_pdf
from worker.outage import storage_down
from worker.providers import provider_class
from worker.providers.base import BadDestinationError
from worker.runtime import SUBMIT_TASK, Runtime
from worker.store import keys
from worker.store.records import dedup_key


class SendError(Exception):
    """A send request that cannot be accepted, or an operator action that cannot be done now;
    ``status`` is the HTTP status the API answers. ``transient``: the same request may succeed
    later (a dependency is down: 503); the queue-driven send retries those."""

    def __init__(self, status: int, code: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.transient = transient


@dataclass
class SendRequest:
    account: str
    to: str
    document: dict[str, Any]  # {"base64"} | {"s3_key"} | {"url"}
    idempotency_key: str = ""
    callback_url: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    file: bytes | None = None  # multipart upload


@dataclass(frozen=True)
class Accepted:
    record: FaxRecord
    created: bool  # False: the idempotency key named an earlier, identical request


def accept_send(runtime: Runtime, req: SendRequest) -> Accepted:
    """Validate, store the document, create the record (or find the idempotent one)."""
    settings = runtime.settings
    account = settings.accounts.get(req.account)
    if account is None:
        raise SendError(422, "unknown_account", f"no account named {req.account!r}")
    try:
        to = provider_class(account.provider).normalize_destination(req.to)
    except BadDestinationError as exc:
        raise SendError(422, "bad_destination", exc.provider_message) from exc
    _check_callback(runtime, req.callback_url)
    if not isinstance(req.metadata, dict):
        raise SendError(422, "bad_metadata", "metadata must be a JSON object")
    scope = keys.idempotency_scope(account.name)
    if req.idempotency_key and len(req.idempotency_key) > 255:
        raise SendError(422, "bad_idempotency_key", "Idempotency-Key is longer than 255 characters")
    data = _document_bytes(runtime, req)
    checked = check_pdf(io.BytesIO(data))
    if not checked.ok:
        raise SendError(422, "not_pdf", f"document: {checked.problem}")
    sha = hashlib.sha256(data).hexdigest()
    print_ = fingerprint(account.name, to, sha, req.callback_url, req.metadata)
    if req.idempotency_key:
        existing = runtime.store.lookup(scope, req.idempotency_key)
        if existing is not None:
            return _idempotent(runtime, scope, req.idempotency_key, existing, print_)
    record = FaxRecord.new(
        Direction.OUTBOUND,
        account.name,
        account.provider,
        to_number=to,
        from_number=account.from_number or "",
        pages=checked.pages,
        sha256=sha,
        callback_url=req.callback_url,
        metadata=req.metadata,
        idempotency_key=req.idempotency_key,
    )
    stored = runtime.archive.put_file(
        runtime.archive.key_for("outbound", record),
        io.BytesIO(data),
        sha256=sha,
        size=len(data),
        fresh=True,  # the new record's id names it
    )
    record.document_key = stored.key
    record.due_at = time.time() + settings.wake_grace
    created = runtime.store.create(
        record,
        dedup=dedup_key(scope, req.idempotency_key) if req.idempotency_key else "",
        dedup_ttl=settings.idempotency_ttl,
        fingerprint=print_,
    )
    if not created.created:  # lost a race with an identical request
        # (A retried create of this very record answers "created": the script knows its id, so
        # the document deleted here is never the one the record uses.)
        if created.record.document_key != stored.key:
            runtime.archive.client.delete_object(Bucket=runtime.archive.bucket, Key=stored.key)
        return _idempotent(runtime, scope, req.idempotency_key, created.record, print_)
    runtime.send_task(SUBMIT_TASK[0], SUBMIT_TASK[1], [record.id])
    return Accepted(record, True)


def fingerprint(account: str, to: str, sha256: str, callback_url: str, metadata: Any) -> str:
    """What makes two sends the same request: a repeated Idempotency-Key must carry the same."""
    canonical = json.dumps([account, to, sha256, callback_url, metadata], sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _idempotent(runtime: Runtime, scope: str, key: str, record: FaxRecord, print_: str) -> Accepted:
    raw = runtime.store.redis.get(dedup_key(scope, key))
    stored_print = json.loads(raw)["fingerprint"] if raw else ""
    if stored_print and stored_print != print_:
        raise SendError(
            409, "idempotency_conflict", "this Idempotency-Key was used with a different request"
        )
    return Accepted(record, False)


def _document_bytes(runtime: Runtime, req: SendRequest) -> bytes:
    limit = runtime.settings.document_max_bytes
    doc = req.document or {}
    if req.file is not None:
        data = req.file
    elif "base64" in doc:
        try:
            data = base64.b64decode(str(doc["base64"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SendError(422, "bad_document", f"document.base64 is not base64: {exc}") from exc
    elif "s3_key" in doc:
        try:
            with tempfile.SpooledTemporaryFile() as spool:
                runtime.archive.download_to(str(doc["s3_key"]), spool)
                spool.seek(0)
                data = spool.read(limit + 1)
        except Exception as exc:  # botocore raises several kinds; the message says which
            if storage_down(exc):
                raise SendError(
                    503,
                    "storage_unavailable",
                    f"S3 is unavailable: document.s3_key cannot be read now: {exc}",
                    transient=True,
                ) from exc
            raise SendError(422, "bad_document", f"document.s3_key cannot be read: {exc}") from exc
    elif "url" in doc:
        data = _fetch_document(runtime, str(doc["url"]))
    else:
        raise SendError(422, "bad_document", "document needs one of base64, s3_key or url")
    if len(data) > limit:
        raise SendError(413, "too_large", f"document over {limit} bytes")
    if not data:
        raise SendError(422, "bad_document", "document is empty")
    return data


def _fetch_document(runtime: Runtime, url: str) -> bytes:
    settings = runtime.settings
    if not url.startswith("https://") and not _is_literal_allowed(url, settings.document_hosts):
        raise SendError(422, "bad_document", "document.url must be https")
    limit = settings.document_max_bytes
    try:
        with (
            guarded_client(settings.document_hosts, timeout=runtime.timeout) as http,
            http.stream("GET", url) as answer,
        ):
            if answer.status_code in _URL_TRANSIENT_STATUSES:
                raise SendError(
                    503,
                    "document_unavailable",
                    f"document.url answered HTTP {answer.status_code}; retry later",
                    transient=True,
                )
            if answer.status_code != 200:
                raise SendError(
                    422, "bad_document", f"document.url answered HTTP {answer.status_code}"
                )
            chunks, size = [], 0
            for chunk in answer.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise SendError(413, "too_large", f"document over {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
    except URLRefused as exc:
        raise SendError(422, "url_refused", exc.reason) from exc
    except (httpx.TransportError, httpx.TimeoutException) as exc:  # its server is down for now
        raise SendError(
            503,
            "document_unavailable",
            f"document.url could not be fetched now: {type(exc).__name__}: {exc}",
            transient=True,
        ) from exc
    except httpx.HTTPError as exc:
        raise SendError(422, "bad_document", f"document.url could not be fetched: {exc}") from exc


# Answers of a document URL's server that say "not now".
_URL_TRANSIENT_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def _is_literal_allowed(url: str, hosts: tuple[str, ...]) -> bool:
    """Plain http is allowed only to hosts the configuration names (e.g. a local test server)."""
    return host_of(url) in normalise_hosts(hosts)


def _check_callback(runtime: Runtime, url: str) -> None:
    if not url:
        return
    if runtime.settings.event_secret is None:
        raise SendError(422, "no_event_secret", "callback_url needs FAXRELAY_EVENT_SECRET set")
    if not url.startswith(("https://", "http://")):
        raise SendError(422, "bad_callback", "callback_url must be an http(s) URL")
    if host_of(url) not in normalise_hosts(runtime.settings.callback_hosts):
        raise SendError(
            422, "callback_refused", f"callback_url host {host_of(url)!r} is not an allowed host"
        )
