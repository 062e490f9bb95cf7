"""Sandbox stand-in for 4PSA VoipNow UnifiedAPI, written from voipnow.txt and the docs README.

Operations (paths below the mount ``/voipnow``):
- ``POST /oauth/token.php`` (operation ``token``): urlencoded ``grant_type=client_credentials``,
  ``client_id``, ``client_secret`` (or the client as HTTP Basic) -> ``{"access_token",
  "token_type": "Bearer", "expires_in"}``. Errors in OAuth's form (RFC 6749 5.2):
  400 ``invalid_request`` / ``unsupported_grant_type``, 401 ``invalid_client``.
- ``POST /uapi/faxes/{userId}/{extension}`` (operation ``send``): ``Authorization: Bearer``,
  multipart with ``files`` (one or more documents) and ``request`` (JSON ``{"recipients": [...]}``)
  -> 200 ``{"id", "uid"}``. Errors ``{"error": {"code", "message"}}``: 401 ``access_denied``;
  400 ``user_invalid``, ``extension_invalid``, ``fx_recipients_invalid``, ``fx_file_invalid``,
  ``fx_max_files_reached``; 500 ``internal_server_error`` only by fault injection.

Tokens expire after ``token_lifetime(sb)`` seconds of sandbox clock (``set_token_lifetime``).
VoipNow has no status call: a sent fax is kept as a ``Job`` only for the request log.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import weakref
from dataclasses import dataclass, field
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.core import Job, Sandbox

PROVIDER = "voipnow"

CLIENT_ID = "voipnow-sandbox-app"
CLIENT_SECRET = "voipnow-sandbox-secret"
USER_ID = "17"  # a User-Id the sandbox knows, besides @me, @viewer and @owner
EXTENSION = "0003*210"  # the extension the sandbox's user owns (the docs' example)
OTHER_EXTENSIONS = ("0003*211",)
DEFAULT_TOKEN_LIFETIME = 3600.0
MAX_FILES = 5
MAX_RECIPIENTS = 10
ALLOWED_TYPES = ("pdf", "jpg", "jpeg", "tif", "tiff", "txt")
RECIPIENT = re.compile(r"^[0-9*]{1,32}$")


@dataclass
class _State:
    lifetime: float = DEFAULT_TOKEN_LIFETIME
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expiry (sandbox clock)


_states: weakref.WeakKeyDictionary[Sandbox, _State] = weakref.WeakKeyDictionary()


def _state(sb: Sandbox) -> _State:
    state = _states.get(sb)
    if state is None:
        state = _states[sb] = _State()
    return state


def set_token_lifetime(sb: Sandbox, seconds: float) -> None:
    """Tokens issued from now on last ``seconds`` of sandbox clock."""
    _state(sb).lifetime = seconds


def token_lifetime(sb: Sandbox) -> float:
    return _state(sb).lifetime


def _oauth_error(code: str, description: str, status: int) -> JSONResponse:
    return JSONResponse({"error": code, "error_description": description}, status_code=status)


def _error(code: str, message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _file_type_ok(upload: UploadFile, content: bytes) -> bool:
    name = (upload.filename or "").rsplit("/", 1)[-1]
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in ALLOWED_TYPES or not content:
        return False
    if suffix == "pdf":
        return content.startswith(b"%PDF-")
    if suffix in ("jpg", "jpeg"):
        return content.startswith(b"\xff\xd8\xff")
    if suffix in ("tif", "tiff"):
        return content[:4] in (b"II*\x00", b"MM\x00*")
    try:
        content.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def routes(sb: Sandbox) -> list[BaseRoute]:
    state = _state(sb)

    async def token(request: Request) -> Response:
        form = await request.form()
        fields: dict[str, Any] = {k: str(v) for k, v in form.items()}
        client_id, client_secret = fields.get("client_id", ""), fields.get("client_secret", "")
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                decoded = base64.b64decode(auth[6:]).decode()
                client_id, _, client_secret = decoded.partition(":")
            except (ValueError, UnicodeDecodeError):
                pass
        entry, fault = await sb.intercept(PROVIDER, "token", request, fields)
        if fault is not None:
            return fault
        grant = fields.get("grant_type", "")
        if not grant:
            answer: Response = _oauth_error("invalid_request", "grant_type is required", 400)
        elif grant != "client_credentials":
            answer = _oauth_error(
                "unsupported_grant_type", f"grant type {grant!r} is not supported", 400
            )
        elif not client_id or not client_secret:
            answer = _oauth_error(
                "invalid_request", "client_id and client_secret are required", 400
            )
        elif client_id != CLIENT_ID or not secrets.compare_digest(
            client_secret.encode(), CLIENT_SECRET.encode()
        ):
            answer = _oauth_error("invalid_client", "Client authentication failed", 401)
        else:
            value = secrets.token_hex(20)
            with sb.lock:
                state.tokens[value] = sb.clock.now() + state.lifetime
            answer = JSONResponse(
                {
                    "access_token": value,
                    "token_type": "Bearer",
                    "expires_in": int(state.lifetime),
                    "scope": None,
                }
            )
        return sb.answered(entry, answer)

    async def send_fax(request: Request) -> Response:
        user_id = request.path_params["user_id"]
        extension = request.path_params["extension"]
        form = await request.form()
        uploads: list[tuple[UploadFile, bytes]] = []
        for item in form.getlist("files"):
            if isinstance(item, UploadFile):
                uploads.append((item, await item.read()))
        raw_request = form.get("request")
        request_text = raw_request if isinstance(raw_request, str) else None
        if isinstance(raw_request, UploadFile):
            request_text = (await raw_request.read()).decode("utf-8", "replace")
        fields: dict[str, Any] = {
            "user_id": user_id,
            "extension": extension,
            "files": [{"name": u.filename, "size": len(c)} for u, c in uploads],
            "request": request_text,
        }
        entry, fault = await sb.intercept(PROVIDER, "send", request, fields)
        if fault is not None:
            return fault
        return sb.answered(entry, _send(user_id, extension, request, uploads, request_text))

    def _send(
        user_id: str,
        extension: str,
        request: Request,
        uploads: list[tuple[UploadFile, bytes]],
        request_text: str | None,
    ) -> Response:
        auth = request.headers.get("authorization", "")
        value = auth[7:].strip() if auth.lower().startswith("bearer ") else auth.strip()
        with sb.lock:
            expiry = state.tokens.get(value)
        if not value or expiry is None:
            return _error("access_denied", "Invalid or missing access token", 401)
        if sb.clock.now() >= expiry:
            return _error("access_denied", "The access token expired", 401)
        if user_id not in ("@me", "@viewer", "@owner", USER_ID):
            return _error("user_invalid", f"User {user_id!r} does not exist")
        if extension == "@self" or extension not in (EXTENSION, *OTHER_EXTENSIONS):
            return _error("extension_invalid", f"Extension {extension!r} is invalid")
        try:
            payload = json.loads(request_text) if request_text is not None else None
        except json.JSONDecodeError:
            payload = None
        recipients = payload.get("recipients") if isinstance(payload, dict) else None
        if (
            not isinstance(recipients, list)
            or not recipients
            or len(recipients) > MAX_RECIPIENTS
            or not all(isinstance(r, str) and RECIPIENT.match(r) for r in recipients)
        ):
            return _error(
                "fx_recipients_invalid",
                "Value supplied in the Recipients parameter is missing or invalid",
            )
        if not uploads:
            return _error("fx_file_invalid", "No file to be sent as fax")
        if len(uploads) > MAX_FILES:
            return _error(
                "fx_max_files_reached",
                f"Failed to send the fax: at most {MAX_FILES} files can be sent",
            )
        for upload, content in uploads:
            if not _file_type_ok(upload, content):
                return _error(
                    "fx_file_invalid",
                    f"File {upload.filename!r} is invalid. Allowed file types are: "
                    "jpg, tif, pdf and txt.",
                )
        fax_id = sb.new_id()
        uid = secrets.token_hex(16)
        now = sb.clock.now()
        with sb.lock:
            sb.jobs[PROVIDER][str(fax_id)] = Job(
                id=str(fax_id),
                provider=PROVIDER,
                to_number=",".join(recipients),
                submitted_at=now,
                plan=[("accepted", 0.0)],
                document=uploads[0][1],
                extra={
                    "uid": uid,
                    "user_id": user_id,
                    "extension": extension,
                    "recipients": recipients,
                    "outcome": sb.next_outcome(PROVIDER),
                },
            )
        return JSONResponse({"id": fax_id, "uid": uid})

    return [
        Route("/oauth/token.php", token, methods=["POST"]),
        Route("/uapi/faxes/{user_id}/{extension}", send_fax, methods=["POST"]),
    ]
