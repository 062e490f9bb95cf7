"""The send/status API: ``/v1/faxes`` (bearer tokens from ``FAXRELAY_API_TOKENS``).

Errors are JSON ``{"error": {"code", "message"}}``. Sending runs the worker's ``accept_send`` in a
thread (it stores the document in S3 with boto3, which blocks).
"""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

import anyio
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Match, Route

from config import tracing
from config.settings import Settings
from faxrelay_client.models import ListFaxes, describe
from webhooks.audit import audit
from webhooks.bodies import BodyTooLarge, capped
from worker.domain import FaxRecord
from worker.outage import storage_down
from worker.pipeline.outbound import request as send_forms
from worker.pipeline.outbound.accept import SendError, SendRequest, accept_send
from worker.pipeline.outbound.actions import cancel_fax
from worker.runtime import Runtime
from worker.store import replicas
from worker.store.keys import idempotency_scope
from worker.store.records import AsyncFaxStore, RecordNotFound

log = logging.getLogger(__name__)


# Seconds a client is asked to wait after a 503 (a store down): about the sweeper's pace of
# recovery, short enough that a caller's retries ride out a restart.
RETRY_AFTER = 5


def error(status: int, code: str, message: str) -> JSONResponse:
    response = JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
    if status == 503:
        response.headers["retry-after"] = str(RETRY_AFTER)
    return response


def unavailable(exc: BaseException) -> JSONResponse | None:
    """503 naming the store that is down, for an exception that says one is; else None."""
    down = storage_down(exc)
    if not down:
        return None
    log.warning("send not accepted: %s unavailable: %s", down, exc)
    return error(503, "storage_unavailable", f"{down} is unavailable; retry later ({exc})")


def bearer_ok(request: Request, settings: Settings) -> bool:
    return token_name(request, settings) is not None


def token_name(request: Request, settings: Settings) -> str | None:
    """The name of the API token the request carries (``name:token`` in FAXRELAY_API_TOKENS),
    or None when it carries none that is accepted."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() != "bearer ":
        return None
    given = header[7:].strip().encode()
    # Compare against every token, always, so timing says nothing about which one matched.
    found = None
    for name, token in settings.api_token_names:
        if hmac.compare_digest(given, token.encode()) and found is None:
            found = name
    return found


async def http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such path 404, a method the path does not take 405): the
    ``{"error": {"code", "message"}}`` body under /v1, plain text elsewhere as before."""
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if not request.url.path.startswith("/v1/"):
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=headers)
    if exc.status_code == 405:  # Starlette names the first route's methods only: name them all
        methods = {
            method
            for route in request.app.router.routes
            if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE
            for method in route.methods or ()
        }
        headers["Allow"] = ", ".join(sorted(methods))
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    message = {
        404: f"no such path: {request.url.path}",
        405: f"{request.method} is not allowed here (allowed: {headers.get('Allow', '')})",
    }.get(exc.status_code, str(exc.detail))
    answer = error(exc.status_code, code, message)
    answer.headers.update(headers)
    return answer


def _public(record: FaxRecord) -> dict[str, Any]:
    return record.public()


class FaxApi:
    def __init__(self, settings: Settings, store: AsyncFaxStore, runtime: Runtime) -> None:
        self.settings = settings
        self.store = store
        self.runtime = runtime

    def _auth(self, request: Request) -> JSONResponse | None:
        if not request.headers.get("authorization"):
            return error(401, "unauthenticated", "an API bearer token is required")
        if not bearer_ok(request, self.settings):
            return error(403, "forbidden", "the bearer token is not accepted")
        return None

    async def create(self, request: Request) -> Response:
        if tracing.on:  # FAXRELAY_OTEL: the send's trace starts here (config.tracing)
            with tracing.span("POST /v1/faxes"):
                return await self._create(request)
        return await self._create(request)

    async def _create(self, request: Request) -> Response:
        if (refused := self._auth(request)) is not None:
            return refused
        limit = self.settings.document_max_bytes * 4 // 3 + 64 * 1024
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return error(413, "too_large", f"request over {limit} bytes")
        try:
            send = await self._parse(request, limit)
        except SendError as exc:
            return error(exc.status, exc.code, exc.message)
        send.idempotency_key = request.headers.get("idempotency-key", "")
        try:
            # FAXRELAY_REDIS_MIN_REPLICAS: the primary before the writes, for _unreplicated.
            epoch = await replicas.epoch(self.store.redis, self.settings)
            accepted = await anyio.to_thread.run_sync(accept_send, self.runtime, send)
        except SendError as exc:
            return error(exc.status, exc.code, exc.message)
        except Exception as exc:
            if (answer := unavailable(exc)) is not None:
                return answer
            raise
        if tracing.on:
            tracing.annotate({"faxrelay.fax_id": accepted.record.id})
        if (unconfirmed := await self._unreplicated(epoch)) is not None:
            return unconfirmed
        return JSONResponse(_public(accepted.record), status_code=202 if accepted.created else 200)

    async def _unreplicated(self, epoch: str) -> JSONResponse | None:
        """None once the writes made since ``epoch`` are on FAXRELAY_REDIS_MIN_REPLICAS replicas
        (at once when none are required); a 503 when they are not in time, the primary changed,
        or Redis went away meanwhile. A retry with the same Idempotency-Key finds the record and
        answers it once confirmed."""
        try:
            await replicas.confirm(self.store.redis, self.settings, epoch)
        except replicas.NotReplicated as exc:
            log.warning("not acknowledged: %s", exc)
            return error(503, "not_replicated", f"not yet on the replicas; retry later ({exc})")
        except Exception as exc:
            if (answer := unavailable(exc)) is not None:
                return answer
            raise
        return None

    async def _parse(self, request: Request, limit: int) -> SendRequest:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            # Streamed: the parser spools the file part to a temporary file as it arrives, and
            # the body stops at ``limit`` bytes (a chunked one too) instead of being read whole.
            try:
                form = await capped(request, limit).form(
                    max_files=1, max_part_size=self.settings.document_max_bytes + 1
                )
            except BodyTooLarge as exc:
                raise SendError(413, "too_large", str(exc)) from None
            except HTTPException as exc:  # Starlette's 400 for a body python-multipart cannot parse
                raise SendError(422, "bad_multipart", f"multipart body: {exc.detail}") from None
            upload = form.get("document")
            if upload is None or isinstance(upload, str):
                raise SendError(422, "bad_document", "multipart needs a file part named document")
            if upload.size is not None and upload.size > self.settings.document_max_bytes:
                limit_text = f"document over {self.settings.document_max_bytes} bytes"
                raise SendError(413, "too_large", limit_text)
            data = await upload.read()
            try:
                metadata = json.loads(str(form.get("metadata") or "{}"))
            except json.JSONDecodeError as exc:
                raise SendError(422, "bad_metadata", f"metadata is not JSON: {exc}") from exc
            fields = {k: form.get(k) for k in ("account", "to", "callback_url") if k in form}
            return send_forms.parse_upload({**fields, "metadata": metadata}, data)
        # Read with the cap: a chunked body declares no length.
        raw = bytearray()
        async for chunk in request.stream():
            raw += chunk
            if len(raw) > limit:
                raise SendError(413, "too_large", f"request over {limit} bytes")
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SendError(422, "bad_json", f"body is not JSON: {exc}") from exc
        return send_forms.parse_json(body)  # the /v1 model: names the field that is wrong

    async def get(self, request: Request) -> Response:
        if (refused := self._auth(request)) is not None:
            return refused
        try:
            record = await self.store.get(request.path_params["fax_id"])
        except RecordNotFound as exc:
            return error(404, "not_found", str(exc))
        return JSONResponse(_public(record))

    async def list(self, request: Request) -> Response:
        if (refused := self._auth(request)) is not None:
            return refused
        q = request.query_params
        try:
            query = ListFaxes.model_validate(dict(q))
        except ValidationError as exc:
            problem = describe(exc)
            return error(422, problem.code, problem.message)
        if query.idempotency_key:
            return await self._by_idempotency_key(query)
        page = await self.store.list(
            direction=query.direction,
            account=query.account,
            state=query.state,
            limit=query.limit,
            cursor=query.cursor,
        )
        return JSONResponse(
            {"items": [_public(r) for r in page.items], "next_cursor": page.next_cursor}
        )

    async def _by_idempotency_key(self, query: ListFaxes) -> Response:
        """The send made under the key (one per account, the key's scope): a direct look-up of
        each account's key, never a scan; ``account``, ``direction`` and ``state`` filter it."""
        assert query.idempotency_key
        names = [query.account] if query.account else sorted(self.settings.accounts)
        items = []
        for name in names:
            record = await self.store.lookup(idempotency_scope(name), query.idempotency_key)
            if record is None:
                continue
            if query.direction and record.direction != query.direction:
                continue
            if query.state and record.state != query.state:
                continue
            items.append(_public(record))
        return JSONResponse({"items": items, "next_cursor": None})

    async def cancel(self, request: Request) -> Response:
        if (refused := self._auth(request)) is not None:
            return refused
        who, fax_id = token_name(request, self.settings) or "", request.path_params["fax_id"]
        epoch = await replicas.epoch(self.store.redis, self.settings)  # for _unreplicated
        try:
            record = await anyio.to_thread.run_sync(cancel_fax, self.runtime, fax_id)
        except RecordNotFound as exc:
            audit(who, "cancel", fax_id, "not_found")
            return error(404, "not_found", str(exc))
        except SendError as exc:
            audit(who, "cancel", fax_id, "refused", exc.message)
            return error(exc.status, exc.code, exc.message)
        audit(who, "cancel", fax_id, "ok", str(record.state))
        if (unconfirmed := await self._unreplicated(epoch)) is not None:
            return unconfirmed
        return JSONResponse(_public(record), status_code=202)
