"""voip.ms (REST API, fax methods): send, track, receive, archive and delete faxes.

What the provider offers (``provider-docs/voipms.txt`` and the README beside it):

- One endpoint, ``{base}/api/v1/rest.php``, parameters ``api_username``, ``api_password``,
  ``method`` plus the method's own. Every answer is JSON whose ``status`` is ``"success"`` or an
  error code (see ``ERRORS``); ``no_message`` means an empty list.
- ``sendFaxMessage`` (urlencoded POST, the file in base64) answers only ``{"status":"success"}``:
  no fax id. ``SubmitResult.job_id`` is therefore ``''``; the outgoing fax is found again in
  ``getFaxMessages`` folder ``SENT`` by its destination and time (``status``, ``find_submitted``).
- Received faxes: ``getFaxMessages`` folder ``INBOX`` (dates ``YYYY-MM-DD``, ranges of at most 92
  days: longer ranges are split), ``getFaxMessagePDF`` (the PDF in base64 inside JSON),
  ``deleteFaxMessage``; the ``url_callback`` POST on receipt (``parse_inbound_webhook``).
- The numbers, folders, email-to-fax and ordering methods, as plain client methods for operators.

Assumptions beyond the docs (kept in one place so they can be corrected):

- ``getFaxMessages`` ``date`` values carry no zone; they are read in ``DATE_ZONE`` (UTC). Date
  ranges asked for are widened by a day on each side so that a different zone loses nothing.
- A SENT fax is matched to a submit when its destination equals the submit's and its date lies
  between ``MATCH_BEFORE`` before and ``MATCH_AFTER`` after the submit; the closest one wins.
  Until it is listed, the job reads as queued (``UNKNOWN`` after ``NOT_LISTED_GRACE``).
- Only ``SUCCESS`` is a documented status word; the rest of ``STATUS`` is a best guess, and a
  failure's cause is also read from the ``msg`` member (busy, no answer, bad number).
- The ``url_callback`` body is not published: urlencoded, multipart or JSON are accepted, field
  names are matched loosely (``ID_FIELDS`` …), and every field is kept raw.
- Destinations are North American numbers written as the docs write them: ten digits.
- Small calls go as GET with a query string (as the docs' examples do); ``sendFaxMessage`` as a
  urlencoded POST.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import IO, Any, ClassVar

import httpx

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
    NotFoundError,
    OutcomeUnknownError,
    OutgoingDocument,
    Provider,
    ProviderPermanentError,
    ProviderTransientError,
    SubmitResult,
    WebhookError,
    content_id,
)

log = logging.getLogger(__name__)

NAME = "voipms"
PATH = "/api/v1/rest.php"

# --- status table ----------------------------------------------------------------------------
# getFaxMessages ``status`` word (upper case, ``_``/``-`` read as spaces) -> state and cause.
# Only SUCCESS is documented; the others are the words a fax platform commonly uses.
STATUS: dict[str, tuple[JobState, FailureCause | None]] = {
    "SUCCESS": (JobState.DELIVERED, None),
    "SUCCESSFUL": (JobState.DELIVERED, None),
    "SENT": (JobState.DELIVERED, None),
    "DELIVERED": (JobState.DELIVERED, None),
    "COMPLETED": (JobState.DELIVERED, None),
    "OK": (JobState.DELIVERED, None),
    "QUEUED": (JobState.QUEUED, None),
    "PENDING": (JobState.QUEUED, None),
    "WAITING": (JobState.QUEUED, None),
    "SCHEDULED": (JobState.QUEUED, None),
    "SENDING": (JobState.SENDING, None),
    "IN PROGRESS": (JobState.SENDING, None),
    "PROCESSING": (JobState.SENDING, None),
    "DIALING": (JobState.SENDING, None),
    "TRANSMITTING": (JobState.SENDING, None),
    "RETRYING": (JobState.SENDING, None),
    "RETRY": (JobState.SENDING, None),
    "FAILED": (JobState.FAILED, None),
    "FAILURE": (JobState.FAILED, None),
    "FAIL": (JobState.FAILED, None),
    "ERROR": (JobState.FAILED, None),
    "BUSY": (JobState.FAILED, FailureCause.BUSY),
    "NO ANSWER": (JobState.FAILED, FailureCause.NO_ANSWER),
    "NOANSWER": (JobState.FAILED, FailureCause.NO_ANSWER),
    "NO CARRIER": (JobState.FAILED, FailureCause.NO_ANSWER),
    "INVALID NUMBER": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "BAD NUMBER": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "INVALID DESTINATION": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "NOT IN SERVICE": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "CANCELLED": (JobState.CANCELLED, None),
    "CANCELED": (JobState.CANCELLED, None),
}

# A failed fax's ``msg`` (or status word) says why: first match wins.
CAUSE_PATTERNS: tuple[tuple[re.Pattern[str], FailureCause], ...] = (
    (re.compile(r"\bbusy\b", re.I), FailureCause.BUSY),
    (re.compile(r"no[ _-]?answer|not answer|no response|no carrier|timed? ?out", re.I),
     FailureCause.NO_ANSWER),
    (re.compile(
        r"invalid (?:destination|number)|bad number|not in service|disconnected|"
        r"unallocated|not a fax|no fax (?:tone|machine)", re.I),
     FailureCause.BAD_NUMBER),
)  # fmt: skip

# --- error table -----------------------------------------------------------------------------
# voip.ms ``status`` code -> kind. Unknown codes are permanent.
ERRORS: dict[str, ErrorKind] = {
    "invalid_credentials": ErrorKind.AUTH,
    "missing_credentials": ErrorKind.AUTH,
    "ip_not_enabled": ErrorKind.AUTH,
    "api_not_enabled": ErrorKind.AUTH,
    "method_maintenance": ErrorKind.TRANSIENT,
    "limit_reached": ErrorKind.TRANSIENT,
    "sent_fail": ErrorKind.TRANSIENT,  # the provider says it did not send: safe to try again
    "missing_params": ErrorKind.PERMANENT,
    "invalid_to_number": ErrorKind.BAD_DESTINATION,
    "invalid_from_number": ErrorKind.PERMANENT,
    "missing_file": ErrorKind.PERMANENT,
    "invalid_file": ErrorKind.PERMANENT,
    "no_base64file": ErrorKind.PERMANENT,
    "exceeds_file_size": ErrorKind.PERMANENT,
    "non_sufficient_funds": ErrorKind.PERMANENT,  # an operator must top up; fail over meanwhile
    "invalid_fax_id": ErrorKind.PERMANENT,
    "missing_id": ErrorKind.PERMANENT,
    "invalid_id": ErrorKind.PERMANENT,
    "invalid_folder": ErrorKind.PERMANENT,
    "invalid_date": ErrorKind.PERMANENT,
    "invalid_daterange": ErrorKind.PERMANENT,
}
# Codes that mean "nothing found": an empty list, not an error.
EMPTY_CODES = frozenset({"no_message"})
# Words for the codes, quoted in error messages next to the code itself.
ERROR_TEXT: dict[str, str] = {
    "invalid_credentials": "the API username or password is wrong",
    "missing_credentials": "the API username or password is missing",
    "ip_not_enabled": "this machine's IP address is not enabled for the API",
    "api_not_enabled": "the API is not enabled on the voip.ms account",
    "method_maintenance": "the method is under maintenance",
    "limit_reached": "the API rate limit was reached",
    "sent_fail": "voip.ms could not send the fax",
    "invalid_to_number": "the destination number is not valid",
    "invalid_from_number": "from_number is not a fax number of this account",
    "exceeds_file_size": "the document is too large",
    "invalid_file": "the document's format is not accepted",
    "non_sufficient_funds": "the voip.ms account has insufficient funds",
    "invalid_id": "no fax message with this id (deleted, or never existed)",
    "invalid_daterange": "the date range is longer than voip.ms allows",
}
# HTTP statuses after which a submit may or may not have taken effect.
SUBMIT_OUTCOME_UNKNOWN_HTTP = frozenset({500, 502, 504})
# Codes that mean "voip.ms has no such fax": the inbound pipeline treats them like an HTTP 404.
NOT_FOUND_CODES = frozenset({"invalid_id", "invalid_fax_id"})

# --- matching and dates ------------------------------------------------------------------------
DATE_ZONE: tzinfo = UTC
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
MAX_RANGE_DAYS = 92  # getFaxMessages: to - from may not exceed this
MATCH_BEFORE = timedelta(minutes=10)  # clock skew between us and voip.ms
MATCH_AFTER = timedelta(hours=24)  # a SENT fax may be dated when it finished, after retries
NOT_LISTED_GRACE = timedelta(hours=1)  # after this, a fax still not in SENT reads UNKNOWN

# --- webhook field names (compared lower case, without punctuation) -------------------------
ID_FIELDS = ("id", "faxid", "faxmessageid", "messageid", "msgid", "faxmsgid", "uniqueid")
FROM_FIELDS = ("from", "callerid", "fromnumber", "caller", "sender", "cid", "src")
TO_FIELDS = ("to", "destination", "did", "tonumber", "faxnumber", "dst", "number")
PAGES_FIELDS = ("pages", "pagecount", "numpages", "totalpages")
DATE_FIELDS = ("date", "receivedat", "received", "datetime", "timestamp", "time")
PDF_FIELDS = ("pdf", "file", "fax", "attachment", "document", "faxfile", "messagebase64", "base64")

_DESTINATION_JUNK = re.compile(r"[\s\-.()\[\]+]")
_NANP = re.compile(r"^[2-9]\d{2}[2-9]\d{6}$")
_CALLERID = re.compile(r"^\s*(?P<name>.*?)\s*<\s*(?P<number>[^<>]*?)\s*>\s*$")
_PARAM = re.compile(r';\s*([\w.*-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;]*))')

_unknown_words: set[str] = set()


def parse_callerid(value: str) -> tuple[str, str]:
    """``'John Doe <5552341234>'`` -> ``('John Doe', '5552341234')``; a bare number has no name."""
    match = _CALLERID.match(value or "")
    if match:
        name, number = match.group("name").strip().strip('"').strip(), match.group("number")
    else:
        name, number = "", value or ""
    digits = re.sub(r"\D", "", number)
    return name, digits or number.strip()


def _digits(number: str) -> str:
    """A number as ten digits where it is a North American one (leading 1 dropped)."""
    digits = re.sub(r"\D", "", number or "")
    return digits[1:] if len(digits) == 11 and digits.startswith("1") else digits


def _word(value: object) -> str:
    return " ".join(re.sub(r"[_-]", " ", str(value or "")).upper().split())


def _cause_from(text: str) -> FailureCause | None:
    for pattern, cause in CAUSE_PATTERNS:
        if pattern.search(text):
            return cause
    return None


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_date(value: object) -> datetime | None:
    """A voip.ms date (``2016-01-01 00:00:00``, read in DATE_ZONE), ISO 8601 or epoch seconds."""
    text = str(value or "").strip()
    if not text:
        return None
    if re.fullmatch(r"\d{9,11}(\.\d+)?", text):
        return datetime.fromtimestamp(float(text), UTC)
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=DATE_ZONE)
    return parsed.astimezone(UTC)


def _int(value: object) -> int | None:
    """A page count: ASCII digits (``isdigit`` alone also takes ``²``) that fit in a record."""
    text = str(value).strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 6 else None


def _items(data: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    """A documented list member; PHP may also send it as an object keyed "0", "1", …"""
    value = data.get(key)
    if isinstance(value, dict):
        value = list(value.values())
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)]


def date_ranges(start: date, end: date, span: int = MAX_RANGE_DAYS) -> list[tuple[date, date]]:
    """``start``..``end`` (inclusive) cut into ranges whose ``to - from`` stays below ``span``."""
    ranges: list[tuple[date, date]] = []
    step = timedelta(days=span - 1)
    while start <= end:
        stop = min(end, start + step)
        ranges.append((start, stop))
        start = stop + timedelta(days=1)
    return ranges


@dataclass(frozen=True)
class _Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


class VoipMs(Provider):
    """Client for one voip.ms account; every request passes ``timeout=self.timeout``."""

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        track=True,
        cancel=False,
        list_inbound=True,
        delete_inbound=True,
        status_webhook=False,
        inbound_webhook=True,
        find_submitted=True,
    )
    # Tracking is a list call per poll: start after half a minute, back off to ten minutes.
    poll_first: ClassVar[float] = 30.0
    poll_cap: ClassVar[float] = 600.0
    inbound_retention_days: ClassVar[float | None] = None  # kept until deleted
    webhook_ack: ClassVar[str] = "ok"  # url_callback_retry resends until it reads exactly this

    @property
    def url(self) -> str:
        return f"{self.base_url}{PATH}"

    # --- plumbing ---------------------------------------------------------------------------
    def _fields(self, method: str, params: Mapping[str, object]) -> dict[str, str]:
        fields = {
            "api_username": self.account.secret("api_username"),
            "api_password": self.account.secret("api_password"),
            "method": method,
        }
        for key, value in params.items():
            if value is None or value == "":
                continue
            if isinstance(value, bool):
                fields[key] = "1" if value else "0"
            else:
                fields[key] = str(value)
        return fields

    def call(
        self,
        method: str,
        params: Mapping[str, object] | None = None,
        *,
        operation: str = "",
        post: bool = False,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        """Call any voip.ms method; the answer's JSON object once its status is success.

        ``None``/``''`` parameters are left out, booleans go as ``1``/``0``. An answer whose
        status is in ``EMPTY_CODES`` is returned as it is (the caller reads an empty list).
        """
        operation = operation or method
        fields = self._fields(method, params or {})
        request: Callable[[], httpx.Response]
        if post:

            def request() -> httpx.Response:
                return self.http.post(self.url, data=fields, timeout=self.timeout)

        else:

            def request() -> httpx.Response:
                return self.http.get(self.url, params=fields, timeout=self.timeout)

        response = send(self.name, operation, request, idempotent=idempotent)
        return self._answer(operation, response, outcome_unknown=not idempotent)

    def _answer(
        self, operation: str, response: httpx.Response, *, outcome_unknown: bool = False
    ) -> dict[str, Any]:
        """The answer's JSON object, or the error it stands for.

        With ``outcome_unknown`` (a call that is not safe to repeat) an answer that shows the
        request reached voip.ms but says nothing readable raises OutcomeUnknownError.
        """
        try:
            data = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and isinstance(data.get("status"), str):
            code = data["status"].strip()
            if code == "success" or code in EMPTY_CODES:
                return data
            kind = ERRORS.get(code)
            if kind is None:
                kind = ErrorKind.PERMANENT
                if response.status_code >= 400:
                    kind = http_error(self.name, operation, response).kind
            if code in NOT_FOUND_CODES:
                raise NotFoundError(
                    self.name, operation, self._message(code, data), response.status_code
                )
            raise self.error(kind, operation, self._message(code, data), response.status_code)
        code_http = response.status_code
        if outcome_unknown and (code_http < 300 or code_http in SUBMIT_OUTCOME_UNKNOWN_HTTP):
            raise OutcomeUnknownError(
                self.name,
                operation,
                f"unreadable answer, the request may have taken effect: {snippet(response)}",
                code_http,
            )
        if code_http >= 400:
            raise http_error(self.name, operation, response)
        json_object(self.name, operation, response)  # raises for anything but an object
        raise ProviderTransientError(
            self.name, operation, f"answer has no status member: {snippet(response)}", code_http
        )

    @staticmethod
    def _message(code: str, data: Mapping[str, Any]) -> str:
        words = [code]
        if code in ERROR_TEXT:
            words.append(ERROR_TEXT[code])
        for key in ("message", "msg", "error", "description"):
            value = data.get(key)
            if isinstance(value, str) and value.strip():
                words.append(value.strip())
        return ": ".join(words)

    # --- destinations -----------------------------------------------------------------------
    @classmethod
    def normalize_destination(cls, number: str) -> str:
        """Ten digits, as the docs write numbers (``5552341234``); a leading 1 is dropped."""
        cleaned = _DESTINATION_JUNK.sub("", number or "")
        if not cleaned:
            raise BadDestinationError(cls.name, "normalize_destination", "no number given")
        if not cleaned.isdigit():
            raise BadDestinationError(
                cls.name,
                "normalize_destination",
                f"{number!r} holds characters other than digits, +, spaces, dashes, dots "
                "and brackets",
            )
        if len(cleaned) == 11 and cleaned.startswith("1"):
            cleaned = cleaned[1:]
        if len(cleaned) != 10:
            raise BadDestinationError(
                cls.name,
                "normalize_destination",
                f"{number!r} is not a North American number: voip.ms faxes to ten digits "
                "such as 5552341234 (optionally with a leading 1)",
            )
        if not _NANP.match(cleaned):
            raise BadDestinationError(
                cls.name,
                "normalize_destination",
                f"{number!r} is not a valid North American number: area code and exchange "
                "may not start with 0 or 1",
            )
        return cleaned

    # --- outbound ---------------------------------------------------------------------------
    def submit(self, document: OutgoingDocument, to: str) -> SubmitResult:
        """sendFaxMessage. Never retried here: a lost answer raises OutcomeUnknownError."""
        to_number = self.normalize_destination(to)
        from_number = _digits(self.account.secret("from_number"))
        content = document.stream.read()
        params: dict[str, object] = {
            "to_number": to_number,
            "from_name": self.account.secret("from_name") or from_number,
            "from_number": from_number,
            "station_id": self.account.secret("station_id"),
            "file": base64.b64encode(content).decode("ascii"),
        }
        data = self.call("sendFaxMessage", params, operation="submit", post=True, idempotent=False)
        raw = {k: v for k, v in data.items() if k != "file"}
        raw.update({"to_number": to_number, "from_number": from_number, "bytes": len(content)})
        return SubmitResult(job_id="", raw=raw)

    def status(self, job_id: str, to: str = "", submitted_at: datetime | None = None) -> JobStatus:
        """The SENT fax to ``to`` closest to ``submitted_at`` (``job_id`` is '' for voip.ms)."""
        if not to:
            raise ProviderPermanentError(
                self.name, "status", "voip.ms gives no fax id: status needs the destination number"
            )
        destination = self.normalize_destination(to)
        anchor = _utc(submitted_at) if submitted_at is not None else None
        match = self._closest(self._sent_to(destination, anchor, "status"), anchor)
        if match is None:
            late = anchor is not None and datetime.now(UTC) - anchor > NOT_LISTED_GRACE
            return JobStatus(
                state=JobState.UNKNOWN if late else JobState.QUEUED,
                raw_status="",
                detail=f"no fax to {destination} listed in SENT yet",
            )
        return self.sent_fax_status(match)

    def find_submitted(self, to: str, since: datetime) -> SubmitResult | None:
        """The SENT fax to ``to`` dated closest to ``since`` (not before it), or None."""
        destination = self.normalize_destination(to)
        anchor = _utc(since)
        match = self._closest(self._sent_to(destination, anchor, "find_submitted"), anchor)
        if match is None:
            return None
        return SubmitResult(job_id="", raw=dict(match))

    def _sent_to(
        self, destination: str, anchor: datetime | None, operation: str
    ) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        start = (anchor or now) - timedelta(days=1)
        faxes = self.fax_messages(
            "SENT", start.date(), (now + timedelta(days=1)).date(), operation=operation
        )
        found = []
        for fax in faxes:
            if _digits(str(fax.get("destination", ""))) != destination:
                continue
            if anchor is not None:
                when = parse_date(fax.get("date"))
                if when is None or not anchor - MATCH_BEFORE <= when <= anchor + MATCH_AFTER:
                    continue
            found.append(fax)
        return found

    @staticmethod
    def _closest(faxes: list[dict[str, Any]], anchor: datetime | None) -> dict[str, Any] | None:
        if not faxes:
            return None
        epoch = datetime.fromtimestamp(0, UTC)

        def distance(fax: dict[str, Any]) -> float:
            when = parse_date(fax.get("date")) or epoch
            if anchor is None:
                return -when.timestamp()  # newest first
            return abs((when - anchor).total_seconds())

        return min(faxes, key=distance)

    @classmethod
    def sent_fax_status(cls, fax: Mapping[str, Any]) -> JobStatus:
        """A getFaxMessages entry read as a job status (state, cause, pages, the raw fields)."""
        raw_word = str(fax.get("status", "") or "")
        word = _word(raw_word)
        detail = str(fax.get("msg", "") or "").strip()
        known = STATUS.get(word)
        if known is None:
            if word not in _unknown_words:
                _unknown_words.add(word)
                log.warning("voipms: unknown fax status word %r (treated as in progress)", raw_word)
            state, cause = JobState.UNKNOWN, None
        else:
            state, cause = known
        if state is JobState.FAILED and cause is None:
            cause = _cause_from(detail)
        return JobStatus(
            state=state,
            raw_status=raw_word,
            detail=detail,
            cause=cause,
            pages=_int(fax.get("pages")),
            raw=dict(fax),
        )

    # --- inbound ----------------------------------------------------------------------------
    def fax_messages(
        self,
        folder: str = "",
        start: date | None = None,
        end: date | None = None,
        message_id: str = "",
        *,
        operation: str = "getFaxMessages",
    ) -> list[dict[str, Any]]:
        """getFaxMessages over ``start``..``end`` (split into ≤ 92-day calls), oldest first.

        No dates: voip.ms's default (today). ``no_message`` is an empty list.
        """
        if start is None and end is None:
            ranges: list[tuple[date | None, date | None]] = [(None, None)]
        else:
            first = start or end or datetime.now(UTC).date()
            last = end or datetime.now(UTC).date()
            if first > last:
                first, last = last, first
            ranges = list(date_ranges(first, last))
        seen: dict[str, dict[str, Any]] = {}
        anonymous: list[dict[str, Any]] = []
        for range_start, range_end in ranges:
            data = self.call(
                "getFaxMessages",
                {
                    "from": range_start.isoformat() if range_start else None,
                    "to": range_end.isoformat() if range_end else None,
                    "folder": folder,
                    "id": message_id,
                },
                operation=operation,
            )
            for fax in _items(data, "faxes"):
                fax_id = str(fax.get("id", "") or "")
                if fax_id:
                    seen.setdefault(fax_id, fax)
                else:
                    anonymous.append(fax)
        faxes = [*seen.values(), *anonymous]
        epoch = datetime.fromtimestamp(0, UTC)
        faxes.sort(key=lambda fax: parse_date(fax.get("date")) or epoch)
        return faxes

    @staticmethod
    def inbound_fax(fields: Mapping[str, Any]) -> InboundFax:
        """A getFaxMessages entry as an InboundFax (caller's number out of ``callerid``)."""
        _, from_number = parse_callerid(str(fields.get("callerid", "") or ""))
        return InboundFax(
            provider_fax_id=str(fields.get("id", "")),
            from_number=from_number,
            to_number=_digits(str(fields.get("destination", "") or "")),
            pages=_int(fields.get("pages")),
            received_at=parse_date(fields.get("date")),
            raw=dict(fields),
        )

    def list_inbound(self, since: datetime) -> list[InboundFax]:
        """INBOX faxes dated from the day before ``since`` to tomorrow (zone slack)."""
        start = (_utc(since) - timedelta(days=1)).date()
        end = (datetime.now(UTC) + timedelta(days=1)).date()
        faxes = self.fax_messages("INBOX", start, end, operation="list_inbound")
        return [self.inbound_fax(fax) for fax in faxes if str(fax.get("id", "") or "")]

    def download(self, fax: InboundFax, sink: IO[bytes], max_bytes: int) -> int:
        """getFaxMessagePDF: the base64 in the JSON answer, decoded into ``sink``."""
        operation = "download"
        fields = self._fields("getFaxMessagePDF", {"id": fax.provider_fax_id})

        def request() -> httpx.Response:
            outgoing = self.http.build_request("GET", self.url, params=fields, timeout=self.timeout)
            return self.http.send(outgoing, stream=True)

        response = send(self.name, operation, request, idempotent=True)
        # The JSON envelope: base64 is 4/3 of the file, plus room for the other members.
        envelope_limit = (max_bytes + 2) // 3 * 4 + 64 * 1024
        buffer = io.BytesIO()
        try:
            stream_to(self.name, operation, response, buffer, envelope_limit)
        except ProviderPermanentError as exc:  # stream_to's size limit
            raise ProviderPermanentError(
                self.name,
                operation,
                f"fax {fax.provider_fax_id} is over the {max_bytes}-byte limit "
                f"({exc.provider_message})",
                response.status_code,
            ) from exc
        finally:
            response.close()
        read = httpx.Response(
            response.status_code,
            headers={"content-type": response.headers.get("content-type", "")},
            content=buffer.getvalue(),
        )
        data = self._answer(operation, read)
        if data.get("status") in EMPTY_CODES:
            raise ProviderPermanentError(
                self.name,
                operation,
                f"fax {fax.provider_fax_id}: {data['status']}",
                read.status_code,
            )
        encoded = data.get("message_base64")
        if not isinstance(encoded, str) or not encoded.strip():
            raise ProviderTransientError(
                self.name, operation, "answer has no message_base64", read.status_code
            )
        try:
            pdf = base64.b64decode("".join(encoded.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProviderTransientError(
                self.name, operation, f"message_base64 is not valid base64: {exc}", read.status_code
            ) from exc
        if len(pdf) > max_bytes:
            raise ProviderPermanentError(
                self.name,
                operation,
                f"fax {fax.provider_fax_id} is {len(pdf)} bytes, over the {max_bytes}-byte limit",
                read.status_code,
            )
        sink.write(pdf)
        return len(pdf)

    def delete_inbound(self, fax: InboundFax) -> None:
        """deleteFaxMessage. A fax voip.ms no longer knows (``invalid_id``) counts as deleted."""
        try:
            self.call("deleteFaxMessage", {"id": fax.provider_fax_id}, operation="delete_inbound")
        except ProviderPermanentError as exc:
            if not exc.provider_message.startswith("invalid_id"):
                raise
            log.info("voipms: fax %s was already gone when deleted", fax.provider_fax_id)

    # --- operator calls ---------------------------------------------------------------------
    def check(self) -> dict[str, Any]:
        """getFaxNumbersInfo and getFaxFolders: credentials work, from_number is ours."""
        numbers = self.fax_numbers()
        folders = self.fax_folders()
        dids = [_digits(str(n.get("did", ""))) for n in numbers]
        from_number = _digits(self.account.secret("from_number"))
        listed = from_number in dids
        result: dict[str, Any] = {
            "ok": listed,
            "fax_numbers": dids,
            "from_number": from_number,
            "from_number_listed": listed,
            "folders": [str(f.get("name", "")) for f in folders],
        }
        if not listed:
            result["problem"] = f"from_number {from_number} is not a fax number of this account"
        return result

    def fax_numbers(self, did: str = "") -> list[dict[str, Any]]:
        """getFaxNumbersInfo: all the account's fax numbers, or one."""
        return _items(self.call("getFaxNumbersInfo", {"did": _digits(did)}), "numbers")

    def fax_folders(self) -> list[dict[str, Any]]:
        """getFaxFolders."""
        return _items(self.call("getFaxFolders"), "folders")

    def set_fax_folder(self, name: str, folder_id: str = "", *, test: bool = False) -> None:
        """setFaxFolder: create a folder, or rename one (``folder_id``)."""
        self.call(
            "setFaxFolder",
            {"name": name, "id": folder_id, "test": _test(test)},
            idempotent=bool(folder_id) or test,
        )

    def delete_fax_folder(self, folder_id: str, *, test: bool = False) -> None:
        """delFaxFolder."""
        self.call("delFaxFolder", {"id": folder_id, "test": _test(test)})

    def move_fax_message(self, fax_id: str, folder_id: str, *, test: bool = False) -> None:
        """moveFaxMessage."""
        self.call("moveFaxMessage", {"fax_id": fax_id, "folder_id": folder_id, "test": _test(test)})

    def delete_fax_message(self, fax_id: str, *, test: bool = False) -> None:
        """deleteFaxMessage (any folder; errors as voip.ms gives them)."""
        self.call("deleteFaxMessage", {"id": fax_id, "test": _test(test)})

    def fax_message_pdf(self, fax_id: str, max_bytes: int = 200 * 1024 * 1024) -> bytes:
        """getFaxMessagePDF into memory (e.g. a SENT fax's document)."""
        sink = io.BytesIO()
        self.download(InboundFax(provider_fax_id=fax_id), sink, max_bytes)
        return sink.getvalue()

    def mail_fax_message_pdf(self, fax_id: str, email: str) -> str:
        """mailFaxMessagePDF; returns voip.ms's ``message_status``. Not retried."""
        data = self.call("mailFaxMessagePDF", {"id": fax_id, "email": email}, idempotent=False)
        return str(data.get("message_status", ""))

    def set_fax_number_info(
        self,
        did: str,
        *,
        email: str | None = None,
        email_enable: bool | None = None,
        email_attach_file: bool | None = None,
        url_callback: str | None = None,
        url_callback_enable: bool | None = None,
        url_callback_retry: bool | None = None,
        test: bool = False,
    ) -> None:
        """setFaxNumberInfo: e-mail and url_callback settings of a fax number."""
        self.call(
            "setFaxNumberInfo",
            {
                "did": _digits(did),
                "email": email,
                "email_enable": email_enable,
                "email_attach_file": email_attach_file,
                "url_callback": url_callback,
                "url_callback_enable": url_callback_enable,
                "url_callback_retry": url_callback_retry,
                "test": _test(test),
            },
        )

    def set_fax_number_email(
        self,
        did: str,
        email: str | None = None,
        *,
        email_enable: bool | None = None,
        email_attach_file: bool | None = None,
        test: bool = False,
    ) -> None:
        """setFaxNumberEmail."""
        self.call(
            "setFaxNumberEmail",
            {
                "did": _digits(did),
                "email": email,
                "email_enable": email_enable,
                "email_attach_file": email_attach_file,
                "test": _test(test),
            },
        )

    def set_fax_number_url_callback(
        self,
        did: str,
        url_callback: str,
        *,
        enable: bool = True,
        retry: bool = True,
        test: bool = False,
    ) -> None:
        """setFaxNumberURLCallback: point a number's url_callback at faxrelay (retry until ok)."""
        self.call(
            "setFaxNumberURLCallback",
            {
                "did": _digits(did),
                "url_callback": url_callback,
                "url_callback_enable": enable,
                "url_callback_retry": retry,
                "test": _test(test),
            },
        )

    def fax_number_portability(self, did: str) -> bool:
        """getFaxNumbersPortability: can this number be ported to voip.ms?"""
        data = self.call("getFaxNumbersPortability", {"did": _digits(did)})
        return str(data.get("getFaxNumbersPortability", "")).strip().lower() in ("yes", "1", "true")

    def order_fax_number(
        self,
        location: str,
        quantity: int = 1,
        *,
        email: str | None = None,
        email_enable: bool | None = None,
        email_attach_file: bool | None = None,
        url_callback: str | None = None,
        url_callback_enable: bool | None = None,
        url_callback_retry: bool | None = None,
        test: bool = False,
    ) -> list[str]:
        """orderFaxNumber; returns the new numbers. Orders cannot be undone: never retried."""
        data = self.call(
            "orderFaxNumber",
            {
                "location": location,
                "quantity": quantity,
                "email": email,
                "email_enable": email_enable,
                "email_attach_file": email_attach_file,
                "url_callback": url_callback,
                "url_callback_enable": url_callback_enable,
                "url_callback_retry": url_callback_retry,
                "test": _test(test),
            },
            idempotent=test,
        )
        dids = data.get("dids")
        if isinstance(dids, dict):
            dids = list(dids.values())
        return [str(d) for d in dids] if isinstance(dids, list) else []

    def cancel_fax_number(self, number_id: str, *, test: bool = False) -> str:
        """cancelFaxNumber; returns the cancelled number (``deleted_did``)."""
        data = self.call("cancelFaxNumber", {"id": number_id, "test": _test(test)})
        return str(data.get("deleted_did", ""))

    def fax_states(self, state: str = "") -> list[dict[str, Any]]:
        """getFaxStates (USA)."""
        return _items(self.call("getFaxStates", {"state": state}), "states")

    def fax_provinces(self, province: str = "") -> list[dict[str, Any]]:
        """getFaxProvinces (Canada)."""
        return _items(self.call("getFaxProvinces", {"province": province}), "provinces")

    def fax_rate_centers_usa(self, state: str) -> list[dict[str, Any]]:
        """getFaxRateCentersUSA: locations to order numbers from."""
        return _items(self.call("getFaxRateCentersUSA", {"state": state}), "ratecenters")

    def fax_rate_centers_can(self, province: str) -> list[dict[str, Any]]:
        """getFaxRateCentersCAN."""
        return _items(self.call("getFaxRateCentersCAN", {"province": province}), "ratecenters")

    def search_fax_area_code_usa(self, area_code: str) -> list[dict[str, Any]]:
        """searchFaxAreaCodeUSA."""
        data = self.call("searchFaxAreaCodeUSA", {"area_code": area_code})
        return _items(data, "ratecenters")

    def search_fax_area_code_can(self, area_code: str) -> list[dict[str, Any]]:
        """searchFaxAreaCodeCAN."""
        data = self.call("searchFaxAreaCodeCAN", {"area_code": area_code})
        return _items(data, "ratecenters")

    def email_to_fax(self, config_id: str = "") -> list[dict[str, Any]]:
        """getEmailToFax: the "Email to Fax" configurations (all, or one)."""
        return _items(self.call("getEmailToFax", {"id": config_id}), "emailToFax")

    def set_email_to_fax(
        self,
        auth_email: str,
        from_number_id: str,
        security_code: str,
        *,
        enabled: bool = True,
        security_code_enabled: bool = True,
        config_id: str = "",
        test: bool = False,
    ) -> None:
        """setEmailToFax: create (no ``config_id``) or update an "Email to Fax" configuration."""
        self.call(
            "setEmailToFax",
            {
                "id": config_id,
                "enabled": enabled,
                "auth_email": auth_email,
                "from_number_id": from_number_id,
                "security_code_enabled": security_code_enabled,
                "security_code": security_code,
                "test": _test(test),
            },
            idempotent=bool(config_id) or test,
        )

    def delete_email_to_fax(self, config_id: str, *, test: bool = False) -> None:
        """delEmailToFax."""
        self.call("delEmailToFax", {"id": config_id, "test": _test(test)})

    def back_orders(self, backorder_id: str = "") -> list[dict[str, Any]]:
        """getBackOrders: numbers on back order."""
        return _items(self.call("getBackOrders", {"id": backorder_id}), "back_orders")

    # --- webhooks ---------------------------------------------------------------------------
    @classmethod
    def parse_inbound_webhook(cls, headers: dict[str, str], body: bytes) -> InboundEvent:
        """The url_callback POST: urlencoded, multipart or JSON.

        A PDF in the body -> ``InboundEvent.pdf``; an id -> the fax to fetch; neither -> an
        event without a fax (reconcile the account). Every field is kept in ``raw`` (file parts
        as name, content type and size).
        """
        content_type = next(
            (v for k, v in headers.items() if k.lower() == "content-type"), ""
        ).strip()
        media = content_type.split(";", 1)[0].strip().lower()
        text_fields, files = _parse_body(media, content_type, body)
        raw: dict[str, Any] = {}
        for key, value in text_fields:
            # A PDF sent as base64 text would put megabytes into the record (rewritten on every
            # update, sent in every event): kept as its size, as file parts are.
            _keep(raw, key, value if len(value) <= RAW_TEXT_MAX else f"<{len(value)} characters>")
        for part in files:
            _keep(
                raw,
                part.name,
                {
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "size": len(part.data),
                },
            )
        lookup = _Lookup(text_fields)
        pdf = _pick_pdf(files) or _base64_pdf(lookup)
        fax_id = lookup.first(ID_FIELDS)
        if pdf is None and not fax_id:
            return InboundEvent(fax=None, raw=raw)
        if not fax_id:
            assert pdf is not None
            fax_id = content_id(hashlib.sha256(pdf).hexdigest())
        _, from_number = parse_callerid(lookup.first(FROM_FIELDS))
        fax = InboundFax(
            provider_fax_id=fax_id,
            from_number=from_number,
            to_number=_digits(lookup.first(TO_FIELDS)),
            pages=_int(lookup.first(PAGES_FIELDS)),
            received_at=parse_date(lookup.first(DATE_FIELDS)),
            raw=raw,
        )
        return InboundEvent(fax=fax, pdf=pdf, raw=raw)


def _test(flag: bool) -> str | None:
    return "true" if flag else None


# --- webhook body parsing ----------------------------------------------------------------------
class _Lookup:
    """Text fields by loosely spelled name (lower case, punctuation dropped)."""

    def __init__(self, fields: Iterable[tuple[str, str]]) -> None:
        self.values: dict[str, str] = {}
        for key, value in fields:
            self.values.setdefault(re.sub(r"[^a-z0-9]", "", key.lower()), value)

    def first(self, names: Iterable[str]) -> str:
        for name in names:
            value = self.values.get(name, "").strip()
            if value:
                return value
        return ""


RAW_TEXT_MAX = 4096  # longer text fields are kept in ``raw`` as their length only


def _keep(raw: dict[str, Any], key: str, value: Any) -> None:
    if key not in raw:
        raw[key] = value
    elif isinstance(raw[key], list):
        raw[key].append(value)
    else:
        raw[key] = [raw[key], value]


def _params(header: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for match in _PARAM.finditer(";" + header.split(";", 1)[1] if ";" in header else ""):
        raw_key = match.group(1).lower()
        quoted, bare = match.group(2), match.group(3)
        value = re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else (bare or "").strip()
        if raw_key.endswith("*"):  # RFC 5987: charset'language'percent-encoded
            value = urllib.parse.unquote(value.split("'", 2)[-1])
        found.setdefault(raw_key.rstrip("*"), value)
    return found


def _parse_body(
    media: str, content_type: str, body: bytes
) -> tuple[list[tuple[str, str]], list[_Part]]:
    stripped = body.strip()
    if media.startswith("multipart/") or (not media and stripped.startswith(b"--")):
        return _parse_multipart(content_type, body)
    if "json" in media or (media in ("", "text/plain") and stripped.startswith(b"{")):
        return _parse_json(body), []
    return _parse_urlencoded(body), []


def _parse_urlencoded(body: bytes) -> list[tuple[str, str]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookError(f"body is neither multipart nor UTF-8 form data: {exc}") from exc
    if text.strip() and "=" not in text:
        raise WebhookError("body is not form data (no name=value pairs)")
    return urllib.parse.parse_qsl(text.strip(), keep_blank_values=True)


def _parse_json(body: bytes) -> list[tuple[str, str]]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WebhookError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise WebhookError("JSON body is not an object")
    return [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in data.items()]


def _parse_multipart(content_type: str, body: bytes) -> tuple[list[tuple[str, str]], list[_Part]]:
    boundary = _params(content_type).get("boundary", "")
    if not boundary:  # no header: take it from the body's first line
        first = body.lstrip(b"\r\n").split(b"\n", 1)[0].rstrip(b"\r")
        if not first.startswith(b"--") or len(first) < 3:
            raise WebhookError("multipart body without a boundary")
        boundary = first[2:].decode("latin-1")
    delimiter = b"--" + boundary.encode("latin-1")
    sections = body.split(delimiter)
    if len(sections) < 2:
        raise WebhookError("multipart body does not contain its boundary")
    fields: list[tuple[str, str]] = []
    files: list[_Part] = []
    closed = False
    for section in sections[1:]:
        if section.startswith(b"--"):
            closed = True
            break
        section = section.removeprefix(b"\r\n").removeprefix(b"\n")
        section = section.removesuffix(b"\n").removesuffix(b"\r")
        head, sep, data = section.partition(b"\r\n\r\n")
        if not sep:
            head, sep, data = section.partition(b"\n\n")
        if not sep:
            raise WebhookError("multipart part without a header block")
        part_headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").splitlines():
            key, colon, value = line.partition(":")
            if colon:
                part_headers[key.strip().lower()] = value.strip()
        disposition = _params(part_headers.get("content-disposition", ""))
        name = disposition.get("name", "")
        filename = disposition.get("filename")
        part_type = part_headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if filename is not None or (part_type and not part_type.startswith("text/")):
            files.append(_Part(name, filename, part_type, data))
        else:
            fields.append((name, data.decode("utf-8", "replace")))
    if not closed:
        raise WebhookError("multipart body ends without its closing boundary (truncated?)")
    return fields, files


def _pick_pdf(files: list[_Part]) -> bytes | None:
    """The file part that holds the fax: a PDF by its bytes, else by its name or type."""
    candidates = [part for part in files if part.data]
    if not candidates:
        return None

    def rank(part: _Part) -> int:
        key = re.sub(r"[^a-z0-9]", "", part.name.lower())
        score = 0
        if part.data.startswith(b"%PDF"):
            score += 4
        if part.content_type == "application/pdf" or (part.filename or "").lower().endswith(".pdf"):
            score += 2
        if key in PDF_FIELDS:
            score += 1
        return score

    return max(candidates, key=rank).data


def _base64_pdf(lookup: _Lookup) -> bytes | None:
    """A PDF sent as a base64 text field (``+`` may have arrived as a space)."""
    encoded = lookup.first(PDF_FIELDS)
    if len(encoded) < 8:
        return None
    try:
        data = base64.b64decode("".join(encoded.replace(" ", "+").split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(b"%PDF") else None


PROVIDER = VoipMs
