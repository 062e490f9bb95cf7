"""voip.ms (REST API, fax methods): send, track, receive, archive and delete faxes.

What the provider offers (``provider-docs/voipms.txt`` and the README beside it):

- One endpoint, ``{base}/api/v1/rest.php``, parameters ``api_username``, ``api_password``,
  ``method`` plus the method's own. Every answer is JSON whose ``status`` is ``"success"`` or an
  error code (see ``ERROR``); ``no_message`` means an empty list.
- ``sendFaxMessage`` (urlencoded POST, the file in base64) answers only ``{"status":"success"}``:
  no fax id. Where the account sets no ``station_id``, each submit sends the send's reference
  (``OutgoingDocument.reference``, unique to the submit) as its station id, and that reference is
  the ``job_id``: ``SENT`` lists it back (``stationid``), so ``status`` and
  ``submitted_candidates`` find this send's fax and no other. With a fixed station id the
  ``job_id`` is ``''`` and the fax is found by its destination and time, which another fax to the
  same number can match.
- Received faxes: ``getFaxMessages`` folder ``INBOX`` (dates ``YYYY-MM-DD``, ranges of at most 92
  days: longer ranges are split), ``getFaxMessagePDF`` (the PDF in base64 inside JSON),
  ``deleteFaxMessage``; the ``url_callback`` POST on receipt (``parse_inbound_webhook``).
- ``getFaxNumbersInfo`` and ``getFaxFolders`` prove the credentials (``check``). The other
  documented methods (folders, moving and mailing messages, number settings and ordering,
  email-to-fax) manage the account; faxrelay does not use them.

Assumptions beyond the docs (kept in one place so they can be corrected):

- ``getFaxMessages`` ``date`` values carry no zone; they are read in ``DATE_ZONE`` (UTC). Date
  ranges asked for are widened by a day on each side so that a different zone loses nothing.
- ``getFaxMessages`` lists a SENT fax's ``stationid`` as the ``station_id`` it was sent with.
- Without a reference, a SENT fax is matched to a submit when its destination equals the
  submit's and its date lies between ``MATCH_BEFORE`` before and ``MATCH_AFTER`` after the
  submit; the closest one wins.
  Until it is listed, the job reads as queued (``UNKNOWN`` after ``NOT_LISTED_GRACE``).
- Only ``SUCCESS`` is a documented status word; the rest of ``STATUS`` is a best guess, and a
  failure's cause is also read from the ``msg`` member (busy, no answer, bad number: ``CAUSE``).
- The ``url_callback`` body is not published: urlencoded, multipart or JSON are accepted, field
  names are matched loosely (``ID_FIELDS`` …), and every field is kept raw.
- Destinations are North American numbers written as the docs write them: ten digits.
- Small calls go as GET with a query string (as the docs' examples do); ``sendFaxMessage`` as a
  urlencoded POST.

Size: one concept, one provider (DESIGN principle 5): its client, webhook parsers, status and
error tables stay together so that nothing else knows a voip.ms field name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import IO, Any, ClassVar

import httpx

from worker.fastpath.forms import parse_form
from worker.providers._http import http_error, json_dict, json_object, send, snippet, stream_to
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
from worker.providers.fields import (
    Part,
    UnknownWords,
    digits,
    field_key,
    header,
    keyed,
    page_count,
    parse_multipart,
    parse_time,
    pick_keyed,
    status_word,
    without_formatting,
)

log = logging.getLogger(__name__)

NAME = "voipms"
PATH = "/api/v1/rest.php"

# --- status table ----------------------------------------------------------------------------
# getFaxMessages ``status`` word (as ``fields.status_word`` spells it) -> state and cause.
# Only SUCCESS is documented; the others are the words a fax platform commonly uses.
STATUS: dict[str, tuple[JobState, FailureCause | None]] = {
    "success": (JobState.DELIVERED, None),
    "successful": (JobState.DELIVERED, None),
    "sent": (JobState.DELIVERED, None),
    "delivered": (JobState.DELIVERED, None),
    "completed": (JobState.DELIVERED, None),
    "ok": (JobState.DELIVERED, None),
    "queued": (JobState.QUEUED, None),
    "pending": (JobState.QUEUED, None),
    "waiting": (JobState.QUEUED, None),
    "scheduled": (JobState.QUEUED, None),
    "sending": (JobState.SENDING, None),
    "in progress": (JobState.SENDING, None),
    "processing": (JobState.SENDING, None),
    "dialing": (JobState.SENDING, None),
    "transmitting": (JobState.SENDING, None),
    "retrying": (JobState.SENDING, None),
    "retry": (JobState.SENDING, None),
    "failed": (JobState.FAILED, None),
    "failure": (JobState.FAILED, None),
    "fail": (JobState.FAILED, None),
    "error": (JobState.FAILED, None),
    "busy": (JobState.FAILED, FailureCause.BUSY),
    "no answer": (JobState.FAILED, FailureCause.NO_ANSWER),
    "noanswer": (JobState.FAILED, FailureCause.NO_ANSWER),
    "no carrier": (JobState.FAILED, FailureCause.NO_ANSWER),
    "invalid number": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "bad number": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "invalid destination": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "not in service": (JobState.FAILED, FailureCause.BAD_NUMBER),
    "cancelled": (JobState.CANCELLED, None),
    "canceled": (JobState.CANCELLED, None),
}

# A failed fax's ``msg`` (or status word) says why: first match wins.
CAUSE: tuple[tuple[re.Pattern[str], FailureCause], ...] = (
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
ERROR: dict[str, ErrorKind] = {
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

# --- webhook field names (compared as ``fields.field_key`` spells them) ---------------------
ID_FIELDS = ("id", "faxid", "faxmessageid", "messageid", "msgid", "faxmsgid", "uniqueid")
FROM_FIELDS = ("from", "callerid", "fromnumber", "caller", "sender", "cid", "src")
TO_FIELDS = ("to", "destination", "did", "tonumber", "faxnumber", "dst", "number")
PAGES_FIELDS = ("pages", "pagecount", "numpages", "totalpages")
DATE_FIELDS = ("date", "receivedat", "received", "datetime", "timestamp", "time")
PDF_FIELDS = ("pdf", "file", "fax", "attachment", "document", "faxfile", "messagebase64", "base64")

_NANP = re.compile(r"^[2-9]\d{2}[2-9]\d{6}$")
_CALLERID = re.compile(r"^\s*(?P<name>.*?)\s*<\s*(?P<number>[^<>]*?)\s*>\s*$")

UNKNOWN_WORDS = UnknownWords(log, NAME)


def parse_callerid(value: str) -> tuple[str, str]:
    """``'John Doe <5552341234>'`` -> ``('John Doe', '5552341234')``; a bare number has no name."""
    match = _CALLERID.match(value or "")
    if match:
        name, number = match.group("name").strip().strip('"').strip(), match.group("number")
    else:
        name, number = "", value or ""
    return name, digits(number) or number.strip()


def _ten_digits(number: str) -> str:
    """A number as ten digits where it is a North American one (leading 1 dropped)."""
    found = digits(number)
    return found[1:] if len(found) == 11 and found.startswith("1") else found


def _cause_from(text: str) -> FailureCause | None:
    for pattern, cause in CAUSE:
        if pattern.search(text):
            return cause
    return None


def _tag(fax: Mapping[str, Any]) -> str:
    """The station id a SENT fax lists (where faxrelay put the send's reference)."""
    return str(fax.get("stationid") or "").strip()


def job_status(fax: Mapping[str, Any]) -> JobStatus:
    """A getFaxMessages entry read as a job status (state, cause, pages, the raw fields)."""
    raw_word = str(fax.get("status", "") or "")
    detail = str(fax.get("msg", "") or "").strip()
    known = STATUS.get(status_word(raw_word))
    if known is None:
        UNKNOWN_WORDS.note(raw_word)
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
        pages=page_count(fax.get("pages")),
        raw=dict(fax),
    )


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def parse_date(value: object) -> datetime | None:
    """A voip.ms date (``2016-01-01 00:00:00``, read in DATE_ZONE), ISO 8601 or epoch seconds."""
    return parse_time(value, DATE_ZONE)


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


class VoipMsClient(Provider):
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
    def _fields(self, method: str, params: Mapping[str, str | None]) -> dict[str, str]:
        fields = {
            "api_username": self.account.secret("api_username"),
            "api_password": self.account.secret("api_password"),
            "method": method,
        }
        fields.update({key: value for key, value in params.items() if value})
        return fields

    def call(
        self,
        method: str,
        params: Mapping[str, str | None] | None = None,
        *,
        operation: str = "",
        post: bool = False,
        idempotent: bool = True,
    ) -> dict[str, Any]:
        """Call any voip.ms method; the answer's JSON object once its status is success.

        ``None``/``''`` parameters are left out. An answer whose
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
        data = json_dict(response)
        if data is not None and isinstance(data.get("status"), str):
            code = data["status"].strip()
            if code == "success" or code in EMPTY_CODES:
                return data
            kind = ERROR.get(code)
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
        cleaned = without_formatting(number)
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
        from_number = _ten_digits(self.account.secret("from_number"))
        content = document.stream.read()
        params: dict[str, str | None] = {
            "to_number": to_number,
            "from_name": self.account.secret("from_name") or from_number,
            "from_number": from_number,
            "station_id": self.account.secret("station_id") or document.reference or None,
            "file": base64.b64encode(content).decode("ascii"),
        }
        data = self.call("sendFaxMessage", params, operation="submit", post=True, idempotent=False)
        raw = {k: v for k, v in data.items() if k != "file"}
        raw.update({"to_number": to_number, "from_number": from_number, "bytes": len(content)})
        # voip.ms answers no id. Where the account sets no station id, the send's reference goes
        # as its station id and stands in for the job id: SENT lists it, so the outcome is this
        # send's alone. A fixed station id leaves only the destination and time to match by.
        tagged = not self.account.secret("station_id") and document.reference
        return SubmitResult(job_id=document.reference if tagged else "", raw=raw)

    def status(self, job_id: str, to: str = "", submitted_at: datetime | None = None) -> JobStatus:
        """The SENT fax whose station id is ``job_id`` (the reference ``submit`` sent as its
        station id); with no ``job_id``, the SENT fax to ``to`` closest to ``submitted_at``."""
        if job_id and to:
            destination = self.normalize_destination(to)
            anchor = _utc(submitted_at) if submitted_at is not None else None
            tagged = [f for f in self._sent_to(destination, anchor, "status") if _tag(f) == job_id]
            match = self._closest(tagged, anchor)
            if match is not None:
                return job_status(match)
            late = anchor is not None and datetime.now(UTC) - anchor > NOT_LISTED_GRACE
            return JobStatus(
                state=JobState.UNKNOWN if late else JobState.QUEUED,
                raw_status="",
                detail=f"no fax with station id {job_id} listed in SENT yet",
            )
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
        return job_status(match)

    def find_submitted(self, to: str, since: datetime) -> SubmitResult | None:
        """The SENT fax to ``to`` dated closest to ``since`` (not before it), or None."""
        destination = self.normalize_destination(to)
        anchor = _utc(since)
        match = self._closest(self._sent_to(destination, anchor, "find_submitted"), anchor)
        if match is None:
            return None
        return SubmitResult(job_id="", raw=dict(match))

    def submitted_candidates(
        self, to: str, since: datetime, reference: str = ""
    ) -> list[SubmitResult]:
        """The SENT faxes that may be a submit to ``to`` since ``since`` whose answer was lost:
        with a ``reference`` (sent as the station id), those that carry it; without one, every
        fax to ``to`` in the window, closest first (which only a single one can settle)."""
        destination = self.normalize_destination(to)
        anchor = _utc(since)
        sent = self._sent_to(destination, anchor, "find_submitted")
        if reference:
            return [
                SubmitResult(job_id=reference, raw=dict(f)) for f in sent if _tag(f) == reference
            ]
        sent.sort(
            key=lambda f: abs(((parse_date(f.get("date")) or anchor) - anchor).total_seconds())
        )
        return [SubmitResult(job_id="", raw=dict(f)) for f in sent]

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
            if _ten_digits(str(fax.get("destination", ""))) != destination:
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

    # --- inbound ----------------------------------------------------------------------------
    def fax_messages(
        self, folder: str, start: date, end: date, *, operation: str = "getFaxMessages"
    ) -> list[dict[str, Any]]:
        """getFaxMessages of ``folder`` over ``start``..``end`` (split into ≤ 92-day calls),
        oldest first. ``no_message`` is an empty list."""
        seen: dict[str, dict[str, Any]] = {}
        anonymous: list[dict[str, Any]] = []
        for range_start, range_end in date_ranges(min(start, end), max(start, end)):
            data = self.call(
                "getFaxMessages",
                {
                    "from": range_start.isoformat(),
                    "to": range_end.isoformat(),
                    "folder": folder,
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
            to_number=_ten_digits(str(fields.get("destination", "") or "")),
            pages=page_count(fields.get("pages")),
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

    # --- operator checks (faxrelay accounts check) -------------------------------------------
    def check(self) -> dict[str, Any]:
        """getFaxNumbersInfo and getFaxFolders: credentials work, from_number is ours."""
        numbers = self.fax_numbers()
        folders = self.fax_folders()
        dids = [_ten_digits(str(n.get("did", ""))) for n in numbers]
        from_number = _ten_digits(self.account.secret("from_number"))
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

    def fax_numbers(self) -> list[dict[str, Any]]:
        """getFaxNumbersInfo: the account's fax numbers."""
        return _items(self.call("getFaxNumbersInfo"), "numbers")

    def fax_folders(self) -> list[dict[str, Any]]:
        """getFaxFolders."""
        return _items(self.call("getFaxFolders"), "folders")

    # --- webhooks ---------------------------------------------------------------------------
    @classmethod
    def parse_inbound_webhook(cls, headers: dict[str, str], body: bytes) -> InboundEvent:
        """The url_callback POST: urlencoded, multipart or JSON.

        A PDF in the body -> ``InboundEvent.pdf``; an id -> the fax to fetch; neither -> an
        event without a fax (reconcile the account). Every field is kept in ``raw`` (file parts
        as name, content type and size).
        """
        text_fields, files = _parse_body(header(headers, "content-type").strip(), body)
        raw: dict[str, Any] = {}
        for key, value in text_fields:
            # A PDF sent as base64 text would put megabytes into the record (rewritten on every
            # update, sent in every event): kept as its size, as file parts are.
            _keep(raw, key, value if len(value) <= RAW_TEXT_MAX else f"<{len(value)} characters>")
        for part in files:
            _keep(
                raw,
                part.name or "",
                {
                    "filename": part.filename,
                    "content_type": part.content_type,
                    "size": len(part.data),
                },
            )
        by_key = keyed((key, value.strip()) for key, value in text_fields)
        pdf = _pick_pdf(files) or _base64_pdf(by_key)
        fax_id = _first(by_key, ID_FIELDS)
        if pdf is None and not fax_id:
            return InboundEvent(fax=None, raw=raw)
        if not fax_id:
            assert pdf is not None
            fax_id = content_id(hashlib.sha256(pdf).hexdigest())
        _, from_number = parse_callerid(_first(by_key, FROM_FIELDS))
        fax = InboundFax(
            provider_fax_id=fax_id,
            from_number=from_number,
            to_number=_ten_digits(_first(by_key, TO_FIELDS)),
            pages=page_count(_first(by_key, PAGES_FIELDS)),
            received_at=parse_date(_first(by_key, DATE_FIELDS)),
            raw=raw,
        )
        return InboundEvent(fax=fax, pdf=pdf, raw=raw)


# --- webhook body parsing ----------------------------------------------------------------------
RAW_TEXT_MAX = 4096  # longer text fields are kept in ``raw`` as their length only


def _first(by_key: Mapping[str, str], names: Iterable[str]) -> str:
    """The first non-blank text field among ``names`` ('' when there is none)."""
    return str(pick_keyed(by_key, names) or "")


def _keep(raw: dict[str, Any], key: str, value: Any) -> None:
    if key not in raw:
        raw[key] = value
    elif isinstance(raw[key], list):
        raw[key].append(value)
    else:
        raw[key] = [raw[key], value]


def _parse_body(content_type: str, body: bytes) -> tuple[list[tuple[str, str]], list[Part]]:
    """The body's text fields (name, value) in order, and its file parts."""
    media = content_type.split(";", 1)[0].strip().lower()
    stripped = body.strip()
    if media.startswith("multipart/") or (not media and stripped.startswith(b"--")):
        fields: list[tuple[str, str]] = []
        files: list[Part] = []
        for part in parse_multipart(content_type, body):
            if part.is_file:
                files.append(part)
            else:
                fields.append((part.name or "", part.text()))
        return fields, files
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
    return [
        (name, value)
        for name, values in parse_form(text.strip()).items()
        for value in (values if isinstance(values, list) else [values])
    ]


def _parse_json(body: bytes) -> list[tuple[str, str]]:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WebhookError(f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise WebhookError("JSON body is not an object")
    return [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in data.items()]


def _pick_pdf(files: list[Part]) -> bytes | None:
    """The file part that holds the fax: a PDF by its bytes, else by its name or type."""
    candidates = [part for part in files if part.data]
    if not candidates:
        return None

    def rank(part: Part) -> int:
        score = 0
        if part.data.startswith(b"%PDF"):
            score += 4
        if part.content_type == "application/pdf" or (part.filename or "").lower().endswith(".pdf"):
            score += 2
        if field_key(part.name or "") in PDF_FIELDS:
            score += 1
        return score

    return max(candidates, key=rank).data


def _base64_pdf(by_key: Mapping[str, str]) -> bytes | None:
    """A PDF sent as a base64 text field (``+`` may have arrived as a space)."""
    encoded = _first(by_key, PDF_FIELDS)
    if len(encoded) < 8:
        return None
    try:
        data = base64.b64decode("".join(encoded.replace(" ", "+").split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(b"%PDF") else None


PROVIDER = VoipMsClient
