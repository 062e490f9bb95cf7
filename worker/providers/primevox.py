"""PrimeVox eFax (hosted PBX; white-labelled by other resellers, so the base URL is configuration).

What the provider offers (``provider-docs/primevox.txt`` and its README):

- send: ``POST {base}/api/fax_send.php``, urlencoded ``auth``, ``containerID``, ``boxID``,
  ``toNumber``, ``fileUrl``; PrimeVox downloads the PDF from ``fileUrl`` itself (faxrelay hands it a
  presigned S3 URL). Answers ``{"success": …, "faxID": …}`` or ``{"error": "<documented string>"}``.
- status: ``GET {base}/api/fax_status.php?auth=&containerID=&efaxID=`` → ``{"status": …}`` or
  ``{"error": …}``.
- webhooks: inbound fax (urlencoded, carries a download URL; PDFs are kept 30 days) and outgoing
  status (JSON, the status call's answer).
- No cancel, no job list, no inbound list or delete: those stay the base's ``unsupported``
  error, and a submit whose answer was lost cannot be looked up (``find_submitted``).
- Call history (CDR v2, ``/api/call_list.php``) is documented too; faxrelay has no use for it.

Assumptions beyond the docs (kept tolerant, every raw field is kept on the record):

- Status words are not published. ``STATUS`` maps the likely words; a compound word such as
  ``"Failed: Busy"`` is read by its head (``failed``) with the cause from the rest; any other word
  is ``JobState.UNKNOWN`` (still in progress, never final) and logged once.
- Error strings are matched without regard to case, surrounding space or a trailing period. An
  error string we do not know is permanent (README: only the two database errors are transient).
- The inbound webhook's field names are not published: the download URL and the fax id are found
  by lists of likely names (case-insensitive, punctuation ignored), else the one absolute http(s)
  URL in the body, else (for the id) an id found in that URL's query, else one derived from the URL.
  Times without a zone are taken as UTC. JSON and multipart bodies are accepted too.
- The status webhook is read as JSON, or urlencoded if it is not JSON; both ``containerID`` and
  ``containerId`` spellings (and any case) are accepted.
- The download URL is self-contained (no ``auth`` is added to it: the key never goes to a host we
  did not choose).
- A submit answered by something we cannot read (2xx non-JSON, 500, 502, 504) may have queued the
  fax: it raises OutcomeUnknownError, never a retryable error. PHP warnings printed before the JSON
  answer are skipped.
- Destinations: US numbers only (docs: "We do not support faxing outside of the USA"); sent as ten
  digits (the leading 1 is optional per the docs). NANP numbers outside the US (Canada, Caribbean)
  are left for PrimeVox to refuse ("You cannot fax international destinations.").

Size: one concept, one provider (DESIGN principle 5): its client, webhook parsers, status and
error tables stay together so that nothing else knows a PrimeVox field name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Mapping
from datetime import datetime
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

import httpx

from worker.fastpath.forms import parse_form
from worker.providers._http import http_error, json_object, send, snippet, stream_to
from worker.providers.base import (
    BadDestinationError,
    Capabilities,
    ErrorKind,
    FailureCause,
    InboundEvent,
    InboundFax,
    JobState,
    JobStatus,
    OutcomeUnknownError,
    OutgoingDocument,
    Provider,
    ProviderError,
    ProviderPermanentError,
    StatusEvent,
    SubmitResult,
    WebhookError,
    error_for_kind,
)
from worker.providers.fields import (
    FieldRoles,
    UnknownWords,
    flatten,
    header,
    id_text,
    is_url,
    page_count,
    parse_multipart,
    parse_time,
    pick,
    status_word,
    without_formatting,
)

log = logging.getLogger(__name__)

NAME = "primevox"
SEND_PATH = "/api/fax_send.php"
STATUS_PATH = "/api/fax_status.php"

# --- status words -----------------------------------------------------------------------------
# Provider word (lower case, ``_``/``-`` read as spaces) -> (state, cause). README: success/
# sent/delivered -> delivered; fail/error/busy/no answer -> failed; queued/pending/… -> in progress.
STATUS: dict[str, tuple[JobState, FailureCause | None]] = {
    # waiting on the provider's side
    "queued": (JobState.QUEUED, None),
    "queue": (JobState.QUEUED, None),
    "pending": (JobState.QUEUED, None),
    "waiting": (JobState.QUEUED, None),
    "new": (JobState.QUEUED, None),
    "submitted": (JobState.QUEUED, None),
    "accepted": (JobState.QUEUED, None),
    "scheduled": (JobState.QUEUED, None),
    "processing": (JobState.QUEUED, None),
    "converting": (JobState.QUEUED, None),
    "downloading": (JobState.QUEUED, None),
    # on the line
    "sending": (JobState.SENDING, None),
    "in progress": (JobState.SENDING, None),
    "inprogress": (JobState.SENDING, None),
    "dialing": (JobState.SENDING, None),
    "dialling": (JobState.SENDING, None),
    "calling": (JobState.SENDING, None),
    "ringing": (JobState.SENDING, None),
    "connected": (JobState.SENDING, None),
    "transmitting": (JobState.SENDING, None),
    "active": (JobState.SENDING, None),
    "retrying": (JobState.SENDING, None),
    "retry": (JobState.SENDING, None),
    # delivered
    "success": (JobState.DELIVERED, None),
    "successful": (JobState.DELIVERED, None),
    "succeeded": (JobState.DELIVERED, None),
    "sent": (JobState.DELIVERED, None),
    "delivered": (JobState.DELIVERED, None),
    # failed, with the cause where the word says it
    "busy": (JobState.FAILED, FailureCause.BUSY),
    "line busy": (JobState.FAILED, FailureCause.BUSY),
    "no answer": (JobState.FAILED, FailureCause.NO_ANSWER),
    "noanswer": (JobState.FAILED, FailureCause.NO_ANSWER),
    "not answered": (JobState.FAILED, FailureCause.NO_ANSWER),
    "no response": (JobState.FAILED, FailureCause.NO_ANSWER),
    "no fax tone": (JobState.FAILED, FailureCause.NO_ANSWER),
    "no carrier": (JobState.FAILED, FailureCause.NO_ANSWER),
    "invalid number": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "bad number": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "wrong number": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "invalid destination": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "not in service": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "disconnected": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "not a fax": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "fail": (JobState.FAILED, FailureCause.OTHER),
    "failed": (JobState.FAILED, FailureCause.OTHER),
    "failure": (JobState.FAILED, FailureCause.OTHER),
    "undeliverable": (JobState.FAILED, FailureCause.OTHER),
    "rejected": (JobState.FAILED, FailureCause.OTHER),
    "error": (JobState.FAILED, FailureCause.PROVIDER),  # the platform's own failure: fail over
    "cancelled": (JobState.CANCELLED, None),
    "canceled": (JobState.CANCELLED, None),
}

# --- error strings ----------------------------------------------------------------------------
# The documented strings (lower case, no trailing period) -> kind. README: the two database errors
# are transient, every other string is permanent.
ERROR: dict[str, ErrorKind] = {
    "your container id is invalid": ErrorKind.AUTH,
    "your api auth key is invalid": ErrorKind.AUTH,
    "your ucp box id is invalid": ErrorKind.AUTH,
    "the supplied ucp box id either does not exist, or is out of your scope of access": (
        ErrorKind.AUTH
    ),
    "destination tonumber is missing": ErrorKind.BAD_DESTINATION,
    "you cannot fax international destinations": ErrorKind.BAD_DESTINATION,
    "you must supply a file url for the efax server to download": ErrorKind.PERMANENT,
    "the file you want to send is not a pdf": ErrorKind.PERMANENT,
    "something is wrong with the file. it is either not a pdf, or we could not download it": (
        ErrorKind.PERMANENT
    ),
    "your supplied efax id is invalid": ErrorKind.PERMANENT,
    "error connecting to the database. try again later": ErrorKind.TRANSIENT,
    "unknown issue with database query, could not commit fax to database": ErrorKind.TRANSIENT,
    "unknown issue with database query, could not retrieve fax status": ErrorKind.TRANSIENT,
}
# Prefixes that make an error transient whatever follows (README: "Unknown issue with database
# query…" is transient in every operation).
TRANSIENT_PREFIXES = ("error connecting to the database", "unknown issue with database query")

# HTTP statuses on a submit after which the fax may have been queued (the body says nothing).
SUBMIT_OUTCOME_UNKNOWN_HTTP = frozenset({500, 502, 504})

# --- webhook field names (compared as ``fields.field_key`` spells them) ---------------------
DOWNLOAD_URL_NAMES = (
    "url", "fileurl", "downloadurl", "download", "downloadlink", "pdf", "pdfurl", "pdflink",
    "faxurl", "faxpdf", "faxfile", "file", "filelink", "link", "mediaurl", "media",
    "attachment", "attachmenturl", "location", "href", "uri",
)  # fmt: skip
FAX_ID_NAMES = (
    "efaxid", "faxid", "id", "uniqueid", "calluuid", "uuid", "callid", "linkedid", "messageid",
    "msgid", "jobid", "fid",
)  # fmt: skip
JOB_ID_NAMES = ("efaxid", "faxid", "id", "uniqueid", "jobid", "fid", "calluuid", "uuid")
STATUS_NAMES = ("status", "faxstatus", "efaxstatus", "state", "result")
DETAIL_NAMES = ("detail", "details", "message", "reason", "description", "statusmessage", "error")
FROM_NAMES = (
    "from", "fromnumber", "callerid", "calleridnum", "callernumber", "caller", "cid", "cidnum",
    "src", "source", "sender", "ani", "remoteid", "remotenumber",
)  # fmt: skip
TO_NAMES = (
    "to", "tonumber", "did", "dnis", "dest", "destination", "dst", "called", "callednumber",
    "recipient", "faxnumber", "localnumber",
)  # fmt: skip
PAGES_NAMES = ("pages", "numpages", "pagecount", "totalpages", "page", "npages")
TIME_NAMES = (
    "receivedat", "received", "datetime", "date", "time", "timestamp", "created", "createdat",
    "calldate", "start", "receivedtime", "ts",
)  # fmt: skip

UNKNOWN_WORDS = UnknownWords(log, NAME)


def job_status(
    raw_status: str, raw: Mapping[str, Any] | None = None, detail: str = ""
) -> JobStatus:
    """Read a PrimeVox status word (from the status call or the status webhook)."""
    fields = dict(raw or {})
    pages = page_count(pick(fields, PAGES_NAMES))
    word = status_word(raw_status)
    known = STATUS.get(word)
    rest = ""
    if known is None:
        # Compound words: "Failed: Busy", "Failed - No Answer", "Sending (attempt 2)".
        match = re.match(r"^\s*([^:(\[]+?)\s*(?:[:(\[]|\s-\s)\s*(.*?)[)\]]?\s*$", raw_status)
        if match:
            known = STATUS.get(status_word(match.group(1)))
            rest = match.group(2)
    if known is None:
        if word:
            UNKNOWN_WORDS.note(raw_status.strip())
        return JobStatus(JobState.UNKNOWN, raw_status, detail, None, pages=pages, raw=fields)
    state, cause = known
    retried = False
    if rest:
        detail = detail or rest
        if state is JobState.FAILED:
            cause = _cause_from(rest) or cause
            if _RETRYING.search(status_word(rest)):
                # "Busy - will retry": the provider redials; not final yet.
                state, retried = JobState.SENDING, True
    return JobStatus(
        state, raw_status, detail, cause, provider_retried=retried, pages=pages, raw=fields
    )


_CAUSES = (FailureCause.BUSY, FailureCause.NO_ANSWER, FailureCause.BAD_NUMBER)
_RETRYING = re.compile(r"\b(retry|retrying|retries|redial|redialing|redialling|rescheduled)\b")


def _cause_from(text: str) -> FailureCause | None:
    """The failure cause named in the rest of a compound word ("Failed: Busy")."""
    lowered = status_word(text)
    for word, (state, cause) in STATUS.items():
        if state is JobState.FAILED and cause in _CAUSES and re.search(rf"\b{word}\b", lowered):
            return cause
    return None


def error_kind(message: str) -> ErrorKind | None:
    """The kind of a PrimeVox error string, None when it is not one we know."""
    key = " ".join(message.strip().lower().split()).rstrip(".").strip('"').rstrip(".")
    kind = ERROR.get(key)
    if kind is None and key.startswith(TRANSIENT_PREFIXES):
        kind = ErrorKind.TRANSIENT
    return kind


def _error_text(data: Any) -> str | None:
    """The provider's error string in an answer (``{"error": …}`` or a bare known string)."""
    if isinstance(data, str):
        return data if error_kind(data) is not None else None
    if not isinstance(data, dict):
        return None
    value = pick(data, ("error", "errormessage", "err"))
    if value is None or value is False or value == 0:
        return None
    return str(value)


# --- webhook bodies ------------------------------------------------------------------------------
def _form_fields(body: bytes) -> dict[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("latin-1")
    return dict(parse_form(text))


def _multipart_fields(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes | None]:
    """Fields of a multipart/form-data body (a file as its name and size), and the first PDF
    file part's bytes if any."""
    fields: dict[str, Any] = {}
    pdf: bytes | None = None
    for part in parse_multipart(content_type, body):
        if part.name is None:
            continue
        if part.is_file:
            fields[part.name] = f"<file {part.filename}, {len(part.data)} bytes>"
            if pdf is None and part.data.startswith(b"%PDF"):
                pdf = part.data
        else:
            fields[part.name] = part.text()
    return fields, pdf


def _json_fields(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _body_fields(
    headers: dict[str, str], body: bytes, prefer_json: bool
) -> tuple[dict[str, Any], bytes | None]:
    content_type = header(headers, "content-type")
    if not body.strip():
        raise WebhookError("empty body")
    if content_type.lower().startswith("multipart/"):
        return _multipart_fields(content_type, body)
    looks_json = "json" in content_type.lower() or body.lstrip()[:1] in (b"{", b"[")
    if looks_json or prefer_json:
        data = _json_fields(body)
        if data is not None:
            return data, None
        if looks_json:
            raise WebhookError(f"body is not a JSON object: {body[:120]!r}")
    fields = _form_fields(body)
    if not fields:
        raise WebhookError(f"body has no fields: {body[:120]!r}")
    return fields, None


def _download_url(named: Any, fields: Mapping[str, Any]) -> str:
    """The named download URL (``named``, as ``INBOUND_FIELDS`` picked it), else the one absolute
    URL among the fields, else the one of several that mentions a PDF."""
    if named is not None:
        return str(named).strip()
    urls = sorted({str(v).strip() for v in fields.values() if is_url(v)})
    if len(urls) == 1:
        return urls[0]
    pdf_urls = [u for u in urls if "pdf" in u.lower()]
    if len(pdf_urls) == 1:
        return pdf_urls[0]
    if urls:
        raise WebhookError(f"several URLs and none named as the download: {', '.join(urls)}")
    return ""


def _derived_id(url: str) -> str:
    query = {k: v for k, v in parse_qs(urlsplit(url).query).items() if v and v[0]}
    found = pick(query, FAX_ID_NAMES)
    if found is not None:
        return id_text(found)
    return "url-" + hashlib.sha256(url.encode()).hexdigest()[:32]


# The inbound webhook's fields by role (see "Assumptions" above).
INBOUND_FIELDS = FieldRoles(
    {
        "download": DOWNLOAD_URL_NAMES,
        "fax_id": FAX_ID_NAMES,
        "from": FROM_NAMES,
        "to": TO_NAMES,
        "pages": PAGES_NAMES,
        "time": TIME_NAMES,
    },
    accept={"download": is_url},
)


class PrimeVoxClient(Provider):
    """PrimeVox eFax: send by URL, status by id, webhooks for inbound faxes and status changes."""

    name = NAME
    capabilities = Capabilities(
        track=True,
        cancel=False,
        list_inbound=False,
        delete_inbound=False,
        status_webhook=True,
        inbound_webhook=True,
        find_submitted=False,
    )
    # Status webhooks carry most changes; polling is the safety net.
    poll_first = 30.0
    poll_cap = 900.0
    inbound_retention_days = 30

    # --- plumbing ---------------------------------------------------------------------------
    def _credentials(self) -> dict[str, str]:
        return {
            "auth": self.account.secret("auth"),
            "containerID": self.account.secret("container_id"),
        }

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _error(self, operation: str, message: str, http_status: int) -> ProviderError:
        kind = error_kind(message)
        if kind is None:
            kind = ErrorKind.TRANSIENT if http_status >= 500 else ErrorKind.PERMANENT
        return error_for_kind(kind, self.name, operation, message, http_status)

    @staticmethod
    def _decode(response: httpx.Response) -> Any:
        """The answer's JSON, skipping PHP notices printed before it; None when there is none."""
        text = response.text
        try:
            return json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError):
            pass
        if len(text) > 64 * 1024:
            return None
        decoder = json.JSONDecoder()
        for match in re.finditer(r"\{", text):
            try:
                value, end = decoder.raw_decode(text, match.start())
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict) and not text[end:].strip():
                return value
        return None

    def _answer(self, operation: str, response: httpx.Response) -> dict[str, Any]:
        """The answer as a JSON object; the mapped error for ``{"error": …}`` or a bare string."""
        data = self._decode(response)
        message = _error_text(data)
        if message is not None:
            raise self._error(operation, message, response.status_code)
        if response.status_code >= 400:
            raise http_error(self.name, operation, response)
        if isinstance(data, dict):
            return data
        return json_object(self.name, operation, response)  # raises, naming the body

    # --- destinations -----------------------------------------------------------------------
    @classmethod
    def normalize_destination(cls, number: str) -> str:
        """Ten US digits (the docs: American numbers only, the leading 1 optional)."""
        original = number
        text = number.strip()
        international = text.startswith("+") and not text.lstrip("+ ").startswith("1")
        digits = without_formatting(text)
        if not digits:
            raise BadDestinationError(cls.name, "normalize_destination", "the number is empty")
        if not digits.isdigit():
            raise BadDestinationError(
                cls.name,
                "normalize_destination",
                f"{original!r} is not a phone number (only digits, +, spaces, dashes, dots and "
                "brackets are allowed)",
            )
        if international or digits.startswith("011") or (len(digits) > 10 and digits[0] != "1"):
            raise BadDestinationError(
                cls.name,
                "normalize_destination",
                f"{original!r} is an international number; PrimeVox faxes only to US numbers",
            )
        if len(digits) == 11 and digits[0] == "1":
            digits = digits[1:]
        if len(digits) != 10:
            raise BadDestinationError(
                cls.name,
                "normalize_destination",
                f"{original!r} is not a US number: expected 10 digits (optionally after a 1), "
                f"got {len(digits)}",
            )
        if digits[0] in "01" or digits[3] in "01":
            raise BadDestinationError(
                cls.name,
                "normalize_destination",
                f"{original!r} is not a valid US number: area code and exchange cannot start "
                "with 0 or 1",
            )
        return digits

    # --- outbound ---------------------------------------------------------------------------
    def submit(self, document: OutgoingDocument, to: str) -> SubmitResult:
        """Queue a fax; PrimeVox downloads ``document.url`` itself. Never retried here."""
        operation = "submit"
        number = self.normalize_destination(to)
        if not is_url(document.url):
            raise ProviderPermanentError(
                self.name,
                operation,
                "PrimeVox fetches the document by URL and this document has no http(s) URL",
            )
        form = {
            **self._credentials(),
            "boxID": self.account.secret("box_id"),
            "toNumber": number,
            "fileUrl": document.url,
        }
        response = send(
            self.name,
            operation,
            lambda: self.http.post(self._url(SEND_PATH), data=form, timeout=self.timeout),
            idempotent=False,
        )
        data = self._decode(response)
        error = _error_text(data)
        if error is not None:
            raise self._error(operation, error, response.status_code)
        if not isinstance(data, dict):
            if response.status_code < 300 or response.status_code in SUBMIT_OUTCOME_UNKNOWN_HTTP:
                raise OutcomeUnknownError(
                    self.name,
                    operation,
                    f"unreadable answer; the fax may have been queued: {snippet(response)}",
                    response.status_code,
                )
            raise http_error(self.name, operation, response)
        if response.status_code >= 400:
            raise http_error(self.name, operation, response)
        job_id = pick(flatten(data), ("faxid", "efaxid", "id", "uniqueid", "jobid"))
        if job_id is None or id_text(job_id) == "":
            raise OutcomeUnknownError(
                self.name,
                operation,
                f"answer names no faxID, the fax may have been queued: {snippet(response)}",
                response.status_code,
            )
        return SubmitResult(id_text(job_id), raw=data)

    def status(self, job_id: str, to: str = "", submitted_at: datetime | None = None) -> JobStatus:
        operation = "status"
        params = {**self._credentials(), "efaxID": job_id}
        response = send(
            self.name,
            operation,
            lambda: self.http.get(self._url(STATUS_PATH), params=params, timeout=self.timeout),
            idempotent=True,
        )
        data = self._answer(operation, response)
        value = pick(flatten(data), STATUS_NAMES)
        if value is None:
            raise error_for_kind(
                ErrorKind.TRANSIENT,
                self.name,
                operation,
                f"answer has neither status nor error: {snippet(response)}",
                response.status_code,
            )
        detail = pick(data, DETAIL_NAMES[:-1])
        return job_status(str(value), data, "" if detail is None else str(detail))

    # --- inbound ----------------------------------------------------------------------------
    def download(self, fax: InboundFax, sink: IO[bytes], max_bytes: int) -> int:
        """Stream the received PDF from the webhook's download URL into ``sink``."""
        operation = "download"
        if not fax.download_url:
            raise ProviderPermanentError(self.name, operation, "the fax has no download URL")
        with contextlib.ExitStack() as stack:
            response = send(
                self.name,
                operation,
                lambda: stack.enter_context(
                    self.http.stream("GET", fax.download_url, timeout=self.timeout)
                ),
                idempotent=True,
            )
            if response.status_code in (404, 410):
                response.read()
                raise ProviderPermanentError(
                    self.name,
                    operation,
                    "the file is gone (PrimeVox keeps received faxes 30 days): "
                    f"{snippet(response)}",
                    response.status_code,
                )
            if response.status_code >= 400:
                response.read()
                raise http_error(self.name, operation, response)
            written = stream_to(self.name, operation, response, sink, max_bytes)
        return written

    # --- operator calls -----------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        """Ask the status of fax id 0: "Your supplied eFax ID is invalid." proves the auth key and
        container id were accepted (the docs list those checks first). Sends nothing; the box id
        can only be checked by a send."""
        operation = "check"
        params = {**self._credentials(), "efaxID": "0"}
        response = send(
            self.name,
            operation,
            lambda: self.http.get(self._url(STATUS_PATH), params=params, timeout=self.timeout),
            idempotent=True,
        )
        try:
            data: Any = self._answer(operation, response)
        except ProviderPermanentError as exc:
            if status_word(exc.provider_message).rstrip(".") != "your supplied efax id is invalid":
                raise
            data = exc.provider_message
        return {
            "credentials": "ok",
            "container_id": self.account.secret("container_id"),
            "box_id": "not checked (only a send checks it)",
            "answer": data,
        }

    # --- webhooks -----------------------------------------------------------------------------
    @classmethod
    def parse_inbound_webhook(cls, headers: dict[str, str], body: bytes) -> InboundEvent:
        """The inbound-fax webhook (urlencoded; JSON and multipart accepted too)."""
        fields, pdf = _body_fields(headers, body, prefer_json=False)
        flat = flatten(fields)
        picked = INBOUND_FIELDS.pick(flat)
        url = _download_url(picked.get("download"), flat)
        if not url and pdf is None:
            raise WebhookError(
                "inbound webhook has no download URL (fields: " + ", ".join(sorted(fields)) + ")"
            )
        fax_id = picked.get("fax_id")
        if fax_id is not None and id_text(fax_id):
            provider_fax_id = id_text(fax_id)
        elif url:
            provider_fax_id = _derived_id(url)
        else:
            provider_fax_id = "pdf-" + hashlib.sha256(pdf or b"").hexdigest()[:32]
        from_number = picked.get("from")
        to_number = picked.get("to")
        fax = InboundFax(
            provider_fax_id=provider_fax_id,
            from_number="" if from_number is None else str(from_number).strip(),
            to_number="" if to_number is None else str(to_number).strip(),
            pages=page_count(picked.get("pages")),
            received_at=parse_time(picked.get("time")),
            download_url=url,
            raw=fields,
        )
        return InboundEvent(fax=fax, pdf=pdf, raw=fields)

    @classmethod
    def parse_status_webhook(cls, headers: dict[str, str], body: bytes) -> StatusEvent:
        """The outgoing-status webhook (JSON, the status call's answer plus the fax's id)."""
        fields, _ = _body_fields(headers, body, prefer_json=True)
        flat = flatten(fields)
        job_id = pick(flat, JOB_ID_NAMES)
        if job_id is None or not id_text(job_id):
            raise WebhookError(
                "status webhook names no fax id (fields: " + ", ".join(sorted(fields)) + ")"
            )
        value = pick(flat, STATUS_NAMES)
        error = _error_text(flat)
        detail = pick(flat, DETAIL_NAMES)
        if value is None:
            if error is None:
                raise WebhookError(
                    "status webhook has no status (fields: " + ", ".join(sorted(fields)) + ")"
                )
            # An error answer relayed as an event: not a fax state; keep it, stay in progress.
            status = JobStatus(JobState.UNKNOWN, str(error), str(error), raw=fields)
        else:
            status = job_status(str(value), fields, "" if detail is None else str(detail))
        return StatusEvent(job_id=id_text(job_id), status=status, raw=fields)


PROVIDER = PrimeVoxClient

__all__ = [
    "ERROR",
    "PROVIDER",
    "STATUS",
    "PrimeVoxClient",
    "error_kind",
    "job_status",
]
