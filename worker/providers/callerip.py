"""CallerIP (Rinble / FaxHound) fax API: send a PDF, poll its status.

What the provider offers (callerip.txt and the docs README):
- send, ``POST {base}/api/fax/send`` as multipart: ``token`` (the fax line's token), ``number``
  (10 digits), ``file`` (a PDF), ``sendCover=N`` and the empty cover fields the docs' example
  sends (``coverFrom``, ``coverTo``, ``coverSubject``, ``coverMessage``) -> ``{"uuid", "status"}``;
- status, ``GET {base}/api/fax/status?token=&uuid=`` -> ``{"status"}``, one of Loading,
  Converting, Pending, Sending (in progress), Success, Failed (final).

There is no list, cancel, inbound or webhook call: a submit whose answer was lost cannot be
looked up (``find_submitted`` is off), and a fax is followed by polling.

Assumptions beyond the docs:
- The error format is not published. An answer is read as an error when its HTTP status is not
  2xx, or when its JSON object carries an ``error``/``errors``/``message`` member instead of the
  documented fields. The kind comes from the HTTP status (``ERROR``, read by ``error_kind``),
  except that a refusal whose text speaks of the token is ``ErrorKind.AUTH`` (the token is the
  only credential). The raw body is always quoted in the error's message.
- Status words (``STATUS``) are matched without regard to case; an unknown word is
  ``JobState.UNKNOWN`` (in progress, never final), kept raw and logged once.
- CallerIP gives no reason for a failure: ``Failed`` has cause ``FailureCause.OTHER``, with any
  reason-like member of the answer as the detail.
- ``check()`` asks the status of a made-up uuid. 401/403, or a refusal that speaks of the token,
  means the token was refused (``ProviderAuthError``); 404 or a 2xx means the token was accepted
  (the service went on to look for the fax); any other 4xx is reported as "unclear" with the
  provider's answer; 5xx and transport failures raise as usual.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any, ClassVar

import httpx

from worker.providers._http import json_dict, json_object, send, snippet
from worker.providers.base import (
    BadDestinationError,
    Capabilities,
    ErrorKind,
    FailureCause,
    JobState,
    JobStatus,
    OutcomeUnknownError,
    OutgoingDocument,
    Provider,
    ProviderError,
    SubmitResult,
    error_for_kind,
    kind_for_http_status,
)
from worker.providers.fields import UnknownWords, status_word, text, without_formatting

log = logging.getLogger(__name__)

NAME = "callerip"

# Provider status word (lower case) -> state.
STATUS: dict[str, JobState] = {
    "loading": JobState.QUEUED,
    "converting": JobState.QUEUED,
    "pending": JobState.QUEUED,
    "sending": JobState.SENDING,
    "success": JobState.DELIVERED,
    "failed": JobState.FAILED,
}

# HTTP status -> kind (the error format is unpublished). Others: kind_for_http_status.
ERROR: dict[int, ErrorKind] = {
    400: ErrorKind.PERMANENT,  # missing or invalid parameter
    401: ErrorKind.AUTH,  # token refused
    403: ErrorKind.AUTH,
    404: ErrorKind.PERMANENT,  # no such fax (status)
    408: ErrorKind.TRANSIENT,
    413: ErrorKind.PERMANENT,  # file too large
    415: ErrorKind.PERMANENT,  # not a PDF
    422: ErrorKind.PERMANENT,
    429: ErrorKind.TRANSIENT,
    500: ErrorKind.TRANSIENT,
    502: ErrorKind.TRANSIENT,
    503: ErrorKind.TRANSIENT,
    504: ErrorKind.TRANSIENT,
}
# Words in a refusal's text that make it a credentials problem.
AUTH_WORDS = ("token", "unauthori", "forbidden")
# JSON members that carry an error's text, in the order they are looked for.
ERROR_MEMBERS = ("error", "errors", "message", "msg", "detail")
# JSON members of a status answer that may say why a fax failed.
DETAIL_MEMBERS = ("reason", "error", "message", "detail", "description")

CHECK_UUID = "00000000-0000-4000-8000-faxrelaycheck"  # a uuid no fax ever has

UNKNOWN_WORDS = UnknownWords(log, NAME)


def job_status(word: str, data: dict[str, Any]) -> JobStatus:
    """A status answer read as a job status; ``word`` is its (non-blank) ``status``."""
    word = word.strip()
    state = STATUS.get(status_word(word))
    if state is None:
        UNKNOWN_WORDS.note(word)
        state = JobState.UNKNOWN
    detail = ""
    cause = None
    if state is JobState.FAILED:
        cause = FailureCause.OTHER
        for member in DETAIL_MEMBERS:
            if data.get(member) not in (None, ""):
                detail = text(data[member])
                break
        detail = detail or "CallerIP gives no reason for a failed fax"
    return JobStatus(state=state, raw_status=word, detail=detail, cause=cause, raw=data)


def _error_text(data: dict[str, Any]) -> str | None:
    """The provider's error words, when the object carries an error member."""
    for member in ERROR_MEMBERS:
        value = data.get(member)
        if value not in (None, "", [], {}):
            return text(value)
    return None


def error_kind(words: str, http_status: int) -> ErrorKind:
    """The kind of a refusal: by the HTTP status (``ERROR``), auth when it speaks of the token."""
    lowered = words.lower()
    if http_status < 500 and any(word in lowered for word in AUTH_WORDS):
        return ErrorKind.AUTH
    if 200 <= http_status < 300:
        return ErrorKind.PERMANENT  # a 2xx that names an error: the provider refused
    return ERROR.get(http_status, kind_for_http_status(http_status))


def _refusal(operation: str, response: httpx.Response) -> ProviderError:
    """The error for a non-2xx answer, or a 2xx whose JSON names an error; quotes the body."""
    data = json_dict(response)
    words = _error_text(data) if data is not None else None
    body = snippet(response)
    message = f"{words} (answer: {body})" if words else body
    return error_for_kind(
        error_kind(words or body, response.status_code),
        NAME,
        operation,
        message,
        response.status_code,
    )


class CallerIPClient(Provider):
    """A CallerIP fax line: ``token``."""

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        track=True,
        cancel=False,
        list_inbound=False,
        delete_inbound=False,
        status_webhook=False,
        inbound_webhook=False,
        find_submitted=False,
    )
    poll_first: ClassVar[float] = 10.0
    poll_cap: ClassVar[float] = 300.0

    # --- destinations -----------------------------------------------------------
    @classmethod
    def normalize_destination(cls, number: str) -> str:
        """Exactly 10 digits (a North American number); ``1`` + 10 digits loses its ``1``."""
        cleaned = without_formatting(number)
        if not (cleaned.isascii() and cleaned.isdigit()):
            raise BadDestinationError(
                NAME,
                "normalize_destination",
                f"{number!r} is not a phone number: CallerIP takes 10 digits "
                "(+, spaces, dashes, dots and brackets are removed)",
            )
        if len(cleaned) == 11 and cleaned.startswith("1"):
            cleaned = cleaned[1:]
        if len(cleaned) != 10:
            raise BadDestinationError(
                NAME,
                "normalize_destination",
                f"{number!r} has {len(cleaned)} digits: CallerIP takes exactly 10 "
                "(a North American number, optionally written with a leading 1)",
            )
        return cleaned

    # --- outbound ---------------------------------------------------------------
    def submit(self, document: OutgoingDocument, to: str) -> SubmitResult:
        operation = "send"
        number = self.normalize_destination(to)
        response = send(
            NAME,
            operation,
            lambda: self.http.post(
                f"{self.base_url}/api/fax/send",
                data={
                    "token": self.account.secret("token"),
                    "number": number,
                    "sendCover": "N",
                    "coverFrom": "",
                    "coverTo": "",
                    "coverSubject": "",
                    "coverMessage": "",
                },
                files={"file": (document.filename, document.stream, document.content_type)},
                headers={"Accept": "application/json"},
                timeout=self.timeout,
            ),
            idempotent=False,
        )
        if not response.is_success:
            raise _refusal(operation, response)
        try:
            data = json_object(NAME, operation, response)
        except ProviderError as exc:
            # A 2xx we cannot read: the fax may well have been taken. Never resubmit blindly.
            raise OutcomeUnknownError(
                NAME, operation, exc.provider_message, response.status_code
            ) from exc
        job_id = data.get("uuid")
        if not isinstance(job_id, str) or not job_id:
            if _error_text(data) is not None:
                raise _refusal(operation, response)
            raise OutcomeUnknownError(
                NAME, operation, f"answer has no uuid: {snippet(response)}", response.status_code
            )
        return SubmitResult(job_id=job_id, raw=data)

    def _status_call(self, operation: str, job_id: str) -> httpx.Response:
        return send(
            NAME,
            operation,
            lambda: self.http.get(
                f"{self.base_url}/api/fax/status",
                params={"token": self.account.secret("token"), "uuid": job_id},
                headers={"Accept": "application/json"},
                timeout=self.timeout,
            ),
            idempotent=True,
        )

    def status(self, job_id: str, to: str = "", submitted_at: datetime | None = None) -> JobStatus:
        operation = "status"
        response = self._status_call(operation, job_id)
        if not response.is_success:
            raise _refusal(operation, response)
        data = json_object(NAME, operation, response)
        word = data.get("status")
        if not isinstance(word, str) or not word.strip():
            if _error_text(data) is not None:
                raise _refusal(operation, response)
            raise self.error(
                ErrorKind.TRANSIENT,
                operation,
                f"answer has no status: {snippet(response)}",
                response.status_code,
            )
        return job_status(word, data)

    # --- operator checks --------------------------------------------------------
    def check(self) -> dict[str, Any]:
        """Ask the status of a made-up uuid and read whether the token was accepted."""
        operation = "check"
        probe = f"{CHECK_UUID}-{uuid.uuid4().hex[:8]}"
        response = self._status_call(operation, probe)
        how = f"status of made-up uuid {probe} answered HTTP {response.status_code}"
        answer = snippet(response)
        if response.status_code == 404:
            # The service looked for the fax, which it does only for an accepted token.
            return {"token": "accepted", "how": how, "answer": answer}
        error = _refusal(operation, response)
        if error.kind is ErrorKind.AUTH:
            raise error
        if response.is_success:
            return {"token": "accepted", "how": how, "answer": answer}
        if error.kind is ErrorKind.TRANSIENT:
            raise error
        return {"token": "unclear", "how": how, "answer": answer}


PROVIDER = CallerIPClient
