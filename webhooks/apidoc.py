"""``GET /v1/openapi.json``: the OpenAPI 3.1 description of ``/v1``, generated from the models
that validate the requests (``faxrelay_client.models``).

The operations are listed once below (``OPERATIONS``), with their models and the statuses they
answer; the JSON Schemas come from pydantic (draft 2020-12, which OpenAPI 3.1 uses as is). The
API fuzz test (tests/test_api_fuzz.py) holds every answer to this document.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from config.settings import Settings
from faxrelay_client import models as m
from webhooks.api import error, token_name

Method = Literal["get", "post"]
REF = "#/components/schemas/{model}"
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "The same key (per account, kept at least 24 h) never makes a second fax: a "
    "repeat answers 200 with the same record; the same key with a different request 409.",
    "schema": {"type": "string", "maxLength": m.IDEMPOTENCY_KEY_MAX},
}


@dataclass(frozen=True)
class Operation:
    path: str
    method: Method
    operation_id: str
    summary: str
    answers: dict[int, type[BaseModel] | None]  # status → body model (None: a free JSON object)
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[BaseModel] | None = None
    headers: tuple[dict[str, Any], ...] = ()
    multipart: type[BaseModel] | None = None
    tags: tuple[str, ...] = ("faxes",)
    path_params: tuple[str, ...] = field(default=())


# Every /v1 operation may also answer 401 (no token), 403 (a wrong token) and 503 (Redis or S3
# unreachable, retry later); a request body may answer 413 (over the size limit).
OPERATIONS: tuple[Operation, ...] = (
    Operation("/v1/openapi.json", "get", "getOpenapi", "This document", {200: None}, tags=("meta",)),
    Operation(
        "/v1/faxes", "post", "sendFax", "Send a fax",
        {200: m.Fax, 202: m.Fax, 409: m.Error, 422: m.Error},
        body=m.SendFax, multipart=m.SendFaxUpload, headers=(IDEMPOTENCY_HEADER,),
    ),
    Operation(
        "/v1/faxes", "get", "listFaxes", "Fax records, newest first",
        {200: m.FaxPage, 422: m.Error}, query=m.ListFaxes,
    ),
    Operation(
        "/v1/faxes/{fax_id}", "get", "getFax", "One fax record",
        {200: m.Fax, 404: m.Error}, path_params=("fax_id",),
    ),
    Operation(
        "/v1/faxes/{fax_id}/cancel", "post", "cancelFax",
        "Cancel an outbound fax (409 with why when it can no longer be)",
        {202: m.Fax, 404: m.Error, 409: m.Error}, path_params=("fax_id",),
    ),
    Operation(
        "/v1/faxes/{fax_id}/retry", "post", "retryFax",
        "Wake a record that is not final now; an outbound fax in state unknown is submitted again",
        {202: m.Fax, 404: m.Error, 409: m.Error}, path_params=("fax_id",), tags=("operator",),
    ),
    Operation(
        "/v1/webhooks", "get", "listWebhooks", "The raw webhook log, newest first",
        {200: m.WebhookLogPage, 422: m.Error}, query=m.ListWebhooks, tags=("operator",),
    ),
    Operation(
        "/v1/webhooks/{log_id}", "get", "getWebhook", "One logged webhook request in full",
        {200: m.WebhookLogEntry, 404: m.Error}, path_params=("log_id",), tags=("operator",),
    ),
    Operation(
        "/v1/webhooks/{log_id}/replay", "post", "replayWebhook",
        "Run a logged webhook request through its route again (dedup makes this safe)",
        {200: m.Replay, 404: m.Error, 409: m.Error}, path_params=("log_id",), tags=("operator",),
    ),
    Operation(
        "/v1/backfills", "post", "startBackfill",
        "Archive what the account's provider holds from a time range (UCX, voip.ms)",
        {202: m.Backfill, 422: m.Error}, body=m.StartBackfill, tags=("operator",),
    ),
    Operation(
        "/v1/backfills/{backfill_id}", "get", "getBackfill", "A backfill's progress",
        {200: m.Backfill, 404: m.Error}, path_params=("backfill_id",), tags=("operator",),
    ),
    Operation(
        "/v1/accounts/check", "post", "checkAccounts",
        "Call each account's provider (or one's) with its credentials; changes nothing",
        {200: m.AccountChecks, 422: m.Error}, body=m.CheckAccounts, body_required=False,
        tags=("operator",),
    ),
)  # fmt: skip


def _models() -> list[tuple[type[BaseModel], Literal["validation", "serialization"]]]:
    wanted: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (m.Error, "serialization")
    ]
    for op in OPERATIONS:
        for model in (op.body, op.multipart):
            if model is not None:
                wanted.append((model, "validation"))
        wanted += [(model, "serialization") for model in op.answers.values() if model]
    return list(dict.fromkeys(wanted))


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    out = []
    for name, prop in schema["properties"].items():
        prop = dict(prop)
        variants = [v for v in prop.pop("anyOf", []) if v != {"type": "null"}]
        if len(variants) == 1:
            prop.update(variants[0])  # a query parameter is absent, never null
        prop.pop("title", None)
        if prop.get("default", "") is None:
            del prop["default"]  # null is no value a query parameter can have
        description = prop.pop("description", None)
        parameter: dict[str, Any] = {"name": name, "in": "query", "required": False}
        if description:
            parameter["description"] = description
        parameter["schema"] = prop
        out.append(parameter)
    return out


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


@functools.cache
def openapi() -> dict[str, Any]:
    """The document (built once per process)."""
    refs, defs = models_json_schema(_models(), ref_template=REF)
    error_ref = refs[(m.Error, "serialization")]
    common = {
        "401": {"description": "No bearer token", "content": _json(error_ref)},
        "403": {"description": "The bearer token is not accepted", "content": _json(error_ref)},
        "503": {
            "description": "Redis or S3 is unreachable; retry later (see Retry-After)",
            "content": _json(error_ref),
        },
    }
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        responses: dict[str, Any] = dict(common)
        if op.body is not None or op.multipart is not None:
            responses["413"] = {
                "description": "The request is too large",
                "content": _json(error_ref),
            }
        for status, model in op.answers.items():
            schema = refs[(model, "serialization")] if model else {"type": "object"}
            description = "Refused (see error.code)" if model is m.Error else "OK"
            responses[str(status)] = {"description": description, "content": _json(schema)}
        entry: dict[str, Any] = {
            "operationId": op.operation_id,
            "summary": op.summary,
            "tags": list(op.tags),
            "responses": dict(sorted(responses.items())),
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in op.path_params
        ]
        parameters += list(op.headers)
        if op.query is not None:
            parameters += _query_parameters(op.query)
        if parameters:
            entry["parameters"] = parameters
        if op.body is not None or op.multipart is not None:
            content: dict[str, Any] = {}
            if op.body is not None:
                content.update(_json(refs[(op.body, "validation")]))
            if op.multipart is not None:
                content["multipart/form-data"] = {
                    "schema": refs[(op.multipart, "validation")],
                    "encoding": {"document": {"contentType": "application/pdf"}},
                }
            entry["requestBody"] = {"required": op.body_required, "content": content}
        paths.setdefault(op.path, {})[op.method] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "faxrelay",
            "version": _version(),
            "description": "Send faxes, follow them, and operate faxrelay. Errors are "
            '`{"error": {"code", "message"}}`. Every operation needs `Authorization: Bearer '
            "<token>` (a token of FAXRELAY_API_TOKENS).",
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": defs.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _version() -> str:
    try:
        return metadata.version("faxrelay")
    except metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "0"


def endpoint(settings: Settings) -> Callable[[Request], Awaitable[Response]]:
    """``GET /v1/openapi.json`` (behind the bearer token, as all of /v1)."""

    async def serve(request: Request) -> Response:
        if not request.headers.get("authorization"):
            return error(401, "unauthenticated", "an API bearer token is required")
        if token_name(request, settings) is None:
            return error(403, "forbidden", "the bearer token is not accepted")
        return JSONResponse(openapi())

    return serve


if __name__ == "__main__":  # the copy in docs/openapi.json
    import json
    import sys

    json.dump(openapi(), sys.stdout, indent=2)
    sys.stdout.write("\n")
