"""4PSA VoipNow UnifiedAPI: send a fax, nothing more.

What the provider offers (voipnow.txt and the docs README):
- an OAuth 2 token, ``POST {base}/oauth/token.php`` with
  ``grant_type=client_credentials&client_id=&client_secret=`` (urlencoded) -> ``access_token``;
- send, ``POST {base}/uapi/faxes/{user_id}/{extension}`` as multipart: the document in the part
  ``files`` and a part ``request`` holding JSON ``{"recipients": [...]}``; success is HTTP 200
  ``{"id": ..., "uid": "<hex>"}``; errors are ``{"error": {"code", "message"}}``.

There is no status, list, cancel or inbound call, and no webhook: a VoipNow fax can be followed
only to "accepted by the provider" (``JobState.ACCEPTED``, which is final).

Assumptions beyond the docs:
- The token answer may carry ``expires_in`` as a number or a numeric string; without it the
  token is assumed to last one hour (the README says 1-2 hours). It is renewed shortly before it
  expires (a tenth of its lifetime, at most 60 s early) and whenever a call answers 401.
- The token endpoint's errors are read in either shape: the UnifiedAPI's
  ``{"error": {"code", "message"}}`` or OAuth's ``{"error": "...", "error_description": "..."}``.
- ``user_invalid`` and ``extension_invalid`` mean the account's ``user_id``/``extension`` are
  wrong: every fax of the account would fail the same way, so they are ``ErrorKind.AUTH`` (an
  operator must fix the account), not a failure of this one fax.
- ``internal_server_error`` is transient whether it comes with HTTP 400 (voipnow.txt) or 500
  (the README).
- HTTP 204 ("there are no faxes to be sent") means nothing was sent: a permanent error.
- Recipients may be phone numbers or extension numbers (``0003*210``): digits and ``*``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx

from config.accounts import Account
from worker.providers._http import http_error, json_dict, json_object, send, snippet
from worker.providers.base import (
    BadDestinationError,
    Capabilities,
    ErrorKind,
    JobState,
    JobStatus,
    OutcomeUnknownError,
    OutgoingDocument,
    Provider,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    SubmitResult,
    error_for_kind,
    kind_for_http_status,
)
from worker.providers.fields import without_formatting

log = logging.getLogger(__name__)

NAME = "voipnow"

# VoipNow has no status call; the one state a submitted fax reaches.
STATUS: dict[str, JobState] = {"accepted": JobState.ACCEPTED}

# Error codes (UnifiedAPI and OAuth token endpoint) -> kind. Anything else: by HTTP status.
ERROR: dict[str, ErrorKind] = {
    "fx_recipients_invalid": ErrorKind.BAD_DESTINATION,
    "fx_file_invalid": ErrorKind.PERMANENT,
    "fx_max_files_reached": ErrorKind.PERMANENT,
    "user_invalid": ErrorKind.AUTH,
    "extension_invalid": ErrorKind.AUTH,
    "access_denied": ErrorKind.AUTH,
    "internal_server_error": ErrorKind.TRANSIENT,
    # OAuth 2 (RFC 6749 section 5.2) answers of the token endpoint
    "invalid_client": ErrorKind.AUTH,
    "unauthorized_client": ErrorKind.AUTH,
    "invalid_grant": ErrorKind.AUTH,
    "invalid_request": ErrorKind.PERMANENT,
    "unsupported_grant_type": ErrorKind.PERMANENT,
    "invalid_scope": ErrorKind.PERMANENT,
    "temporarily_unavailable": ErrorKind.TRANSIENT,
    "server_error": ErrorKind.TRANSIENT,
}

DEFAULT_TOKEN_LIFETIME = 3600.0  # seconds, when the token answer names none
MAX_RENEW_MARGIN = 60.0  # renew at most this many seconds before expiry
MAX_DESTINATION_LENGTH = 32


@dataclass(frozen=True)
class _Token:
    value: str
    lifetime: float
    renew_at: float  # on the client's clock


def _error_member(data: dict[str, Any]) -> tuple[str, str] | None:
    """(code, message) from either error shape; None when the body holds no error member."""
    error = data.get("error")
    if isinstance(error, dict):
        code = str(error.get("code") or "")
        message = str(error.get("message") or "")
        return code, message
    if isinstance(error, str) and error:
        return error, str(data.get("error_description") or "")
    return None


def _describe(code: str, message: str) -> str:
    return f"{code}: {message}" if message else code or "(error without a code)"


def _read_error(operation: str, response: httpx.Response) -> ProviderError:
    """The error for a non-2xx answer: by the provider's code, else by the HTTP status."""
    data = json_dict(response)
    member = _error_member(data) if data is not None else None
    if member is None:
        return http_error(NAME, operation, response)
    code, message = member
    kind = ERROR.get(code, kind_for_http_status(response.status_code))
    text = f"{code}: {message}" if message else code or snippet(response)
    return error_for_kind(kind, NAME, operation, text, response.status_code)


class VoipNowClient(Provider):
    """A VoipNow account: ``client_id``, ``client_secret``, ``user_id`` (default ``@me``),
    ``extension`` (the sending extension, such as ``0003*210``)."""

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        track=False,
        cancel=False,
        list_inbound=False,
        delete_inbound=False,
        status_webhook=False,
        inbound_webhook=False,
        find_submitted=False,
    )
    # Nothing to poll (status() answers ACCEPTED, final, at once); kept at sane values so a
    # caller that polls anyway does not spin.
    poll_first: ClassVar[float] = 15.0
    poll_cap: ClassVar[float] = 600.0

    def __init__(
        self, account: Account, http: httpx.Client, timeout: httpx.Timeout | None = None
    ) -> None:
        super().__init__(account, http, timeout)
        # The clock the token cache runs on (tests replace it).
        self.clock: Callable[[], float] = time.monotonic
        self._lock = threading.Lock()
        self._token: _Token | None = None

    # --- destinations -----------------------------------------------------------
    @classmethod
    def normalize_destination(cls, number: str) -> str:
        """Digits, or an extension number such as ``0003*210`` (VoipNow takes both)."""
        cleaned = without_formatting(number)
        if not cleaned:
            raise BadDestinationError(NAME, "normalize_destination", "the number is empty")
        if not all(ch.isascii() and (ch.isdigit() or ch == "*") for ch in cleaned):
            raise BadDestinationError(
                NAME,
                "normalize_destination",
                f"{number!r} is not a phone or extension number: only digits and '*' "
                "(after removing +, spaces, dashes, dots and brackets) are allowed",
            )
        if not any(ch.isdigit() for ch in cleaned) or len(cleaned) > MAX_DESTINATION_LENGTH:
            raise BadDestinationError(
                NAME,
                "normalize_destination",
                f"{number!r} is not a phone or extension number "
                f"(1 to {MAX_DESTINATION_LENGTH} digits)",
            )
        return cleaned

    # --- token ------------------------------------------------------------------
    def _fetch_token(self) -> _Token:
        operation = "token"
        started = self.clock()
        response = send(
            NAME,
            operation,
            lambda: self.http.post(
                f"{self.base_url}/oauth/token.php",
                data={
                    "grant_type": "client_credentials",
                    "client_id": self.account.secret("client_id"),
                    "client_secret": self.account.secret("client_secret"),
                },
                headers={"Accept": "application/json"},
                timeout=self.timeout,
            ),
            idempotent=True,
        )
        if response.status_code >= 400:
            raise _read_error(operation, response)
        data = json_object(NAME, operation, response)
        member = _error_member(data)
        if member is not None:
            code, message = member
            kind = ERROR.get(code, ErrorKind.AUTH)
            raise self.error(kind, operation, _describe(code, message), response.status_code)
        value = data.get("access_token")
        if not isinstance(value, str) or not value:
            raise ProviderTransientError(
                NAME,
                operation,
                f"answer has no access_token: {snippet(response)}",
                response.status_code,
            )
        lifetime = DEFAULT_TOKEN_LIFETIME
        raw_lifetime = data.get("expires_in")
        try:
            if raw_lifetime is not None and float(raw_lifetime) > 0:
                lifetime = float(raw_lifetime)
        except (TypeError, ValueError):
            log.warning("voipnow token answer has an unreadable expires_in: %r", raw_lifetime)
        margin = min(MAX_RENEW_MARGIN, lifetime / 10)
        return _Token(value, lifetime, started + lifetime - margin)

    def _current_token(self) -> str:
        with self._lock:
            token = self._token
            if token is None or self.clock() >= token.renew_at:
                token = self._token = self._fetch_token()
            return token.value

    def _drop_token(self, value: str) -> None:
        """Forget a token the provider refused (unless another thread already replaced it)."""
        with self._lock:
            if self._token is not None and self._token.value == value:
                self._token = None

    # --- outbound ---------------------------------------------------------------
    def submit(self, document: OutgoingDocument, to: str) -> SubmitResult:
        operation = "send"
        recipient = self.normalize_destination(to)
        user_id = self.account.secret("user_id") or "@me"
        extension = self.account.secret("extension")
        url = f"{self.base_url}/uapi/faxes/{quote(user_id, safe='@')}/{quote(extension, safe='*')}"
        request_part = json.dumps({"recipients": [recipient]})
        stream = document.stream
        start = stream.tell() if stream.seekable() else None

        def post(token: str) -> httpx.Response:
            return self.http.post(
                url,
                files={
                    "files": (document.filename, stream, document.content_type),
                },
                data={"request": request_part},
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                timeout=self.timeout,
            )

        token = self._current_token()
        response = send(NAME, operation, lambda: post(token), idempotent=False)
        if response.status_code == 401:
            # The provider refused the token (expired early, revoked): nothing was sent.
            self._drop_token(token)
            if start is None:
                raise ProviderTransientError(
                    NAME,
                    operation,
                    "token refused and the document stream cannot be rewound; submit again",
                    401,
                )
            stream.seek(start)
            token = self._current_token()
            response = send(NAME, operation, lambda: post(token), idempotent=False)
        return self._read_submit(operation, response)

    def _read_submit(self, operation: str, response: httpx.Response) -> SubmitResult:
        if response.status_code == 204:
            raise ProviderPermanentError(
                NAME, operation, "HTTP 204: there are no faxes to be sent (nothing was sent)", 204
            )
        if response.status_code >= 300:
            raise _read_error(operation, response)
        try:
            data = json_object(NAME, operation, response)
        except ProviderError as exc:
            # A 2xx we cannot read: the fax may well have been taken. Never resubmit blindly.
            raise OutcomeUnknownError(
                NAME, operation, exc.provider_message, response.status_code
            ) from exc
        member = _error_member(data)
        if member is not None:
            code, message = member
            kind = ERROR.get(code, ErrorKind.PERMANENT)
            raise self.error(kind, operation, _describe(code, message), response.status_code)
        fax_id = data.get("id")
        if fax_id is None or fax_id == "":
            raise OutcomeUnknownError(
                NAME,
                operation,
                f"answer has no fax id: {snippet(response)}",
                response.status_code,
            )
        return SubmitResult(job_id=str(fax_id), raw=data)

    def status(self, job_id: str, to: str = "", submitted_at: datetime | None = None) -> JobStatus:
        """VoipNow has no status call: a submitted fax is as far as it can be followed."""
        return JobStatus(
            state=STATUS["accepted"],
            raw_status="accepted",
            detail="VoipNow offers no status call; the fax was accepted by the provider",
        )

    # --- operator checks --------------------------------------------------------
    def check(self) -> dict[str, Any]:
        """Obtain a fresh token: proves the base URL, client id and secret."""
        with self._lock:
            token = self._token = self._fetch_token()
        return {
            "token": "obtained",
            "token_lifetime_seconds": token.lifetime,
            "user_id": self.account.secret("user_id") or "@me",
            "extension": self.account.secret("extension"),
        }


PROVIDER = VoipNowClient
