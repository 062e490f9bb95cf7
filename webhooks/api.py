"""The send/status API: ``/v1/faxes`` (bearer tokens from ``FAXRELAY_API_TOKENS``).

Errors are JSON ``{"error": {"code", "message"}}``. Sending runs the worker's ``accept_send`` in a
thread (it stores the document in S3 with boto3, which blocks).
"""

from __future__ import annotations

import hmac
import json
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from config.settings import Settings
from worker.domain import FaxRecord
from worker.pipeline.outbound.accept import SendError, SendRequest, accept_send
from worker.pipeline.outbound.actions import cancel_fax
from worker.runtime import Runtime
from worker.store.records import AsyncFaxStore, RecordNotFound


def error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def bearer_ok(request: Request, settings: Settings) -> bool:
    header = request.headers.get("authorization", "")
    if header[:7].lower() != "bearer ":
        return False
    given = header[7:].strip().encode()
    # Compare against every token, always, so timing says nothing about which one matched.
    matched = False
    for token in settings.api_token_values:
        matched |= hmac.compare_digest(given, token.encode())
    return matched


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
            accepted = await anyio.to_thread.run_sync(accept_send, self.runtime, send)
        except SendError as exc:
            return error(exc.status, exc.code, exc.message)
        return JSONResponse(_public(accepted.record), status_code=202 if accepted.created else 200)

    async def _parse(self, request: Request, limit: int) -> SendRequest:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/form-data"):
            form = await request.form(max_part_size=self.settings.document_max_bytes + 1)
            upload = form.get("document")
            if upload is None or isinstance(upload, str):
                raise SendError(422, "bad_document", "multipart needs a file part named document")
            data = await upload.read()
            try:
                metadata = json.loads(str(form.get("metadata") or "{}"))
            except json.JSONDecodeError as exc:
                raise SendError(422, "bad_metadata", f"metadata is not JSON: {exc}") from exc
            return SendRequest(
                account=str(form.get("account") or ""),
                to=str(form.get("to") or ""),
                document={},
                file=data,
                callback_url=str(form.get("callback_url") or ""),
                metadata=metadata,
            )
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
        if not isinstance(body, dict):
            raise SendError(422, "bad_json", "body must be a JSON object")
        missing = [k for k in ("account", "to", "document") if not body.get(k)]
        if missing:
            raise SendError(422, "missing_field", f"missing: {', '.join(missing)}")
        if not isinstance(body["document"], dict):
            raise SendError(422, "bad_document", "document must be an object")
        return SendRequest(
            account=str(body["account"]),
            to=str(body["to"]),
            document=body["document"],
            callback_url=str(body.get("callback_url") or ""),
            metadata=body.get("metadata") or {},
        )

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
            limit = min(max(int(q.get("limit", "50")), 1), 500)
        except ValueError:
            return error(422, "bad_limit", "limit must be a number")
        page = await self.store.list(
            direction=q.get("direction") or None,
            account=q.get("account") or None,
            state=q.get("state") or None,
            limit=limit,
            cursor=q.get("cursor") or None,
        )
        return JSONResponse(
            {"items": [_public(r) for r in page.items], "next_cursor": page.next_cursor}
        )

    async def cancel(self, request: Request) -> Response:
        if (refused := self._auth(request)) is not None:
            return refused
        try:
            record = await anyio.to_thread.run_sync(
                cancel_fax, self.runtime, request.path_params["fax_id"]
            )
        except RecordNotFound as exc:
            return error(404, "not_found", str(exc))
        except SendError as exc:
            return error(exc.status, exc.code, exc.message)
        return JSONResponse(_public(record), status_code=202)
