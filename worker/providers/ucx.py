"""E-MetroTel UCX Virtual Fax ("UCX Fax API for 3rd Party Clients").

What the provider offers (all eleven documented methods, under ``{base_url}/restv1/efax/``):

==============  =====  ====================================================================
method          verb   used by
==============  =====  ====================================================================
token           GET    ``token()``; cached, renewed once on a 401 (HTTP Basic: id/secret)
faxlist         GET    ``faxlist()``, ``check()``
faxusage        GET    ``faxusage()``, ``check()``
filesend        POST   ``submit()`` (multipart: fax_id, destination, attachment)
jobstatus       GET    ``status()``, ``jobstatus()``
jobcancel       PUT    ``cancel()``
activejobs      GET    ``status()`` fallback, ``find_submitted()``, ``activejobs()``
recordcount     GET    ``recordcount()``; sizes the record walk
recordsget      GET    ``status()`` fallback, ``find_submitted()``, ``list_inbound()``
recorddelete    PUT    ``delete_inbound()``, ``recorddelete()``
filedownload    GET    ``download()`` (streamed into the sink)
==============  =====  ====================================================================

UCX sends no webhooks: outbound jobs are polled, received faxes are found by listing
(``recordsget`` type RX) on the account's reconcile interval.

Assumptions beyond the docs (each kept tolerant; raw fields are always kept):

- Job states are HylaFAX's (``STATUS``: Pending, Suspended, Blocked, Ready, Sleeping, Active,
  Done, Failed; ``Waiting``/``Running`` accepted as synonyms). Any other word is ``UNKNOWN``
  (still in progress), logged once. Why a job failed is read from ``status_text`` (``CAUSE``,
  in HylaFAX's wording: "Busy signal detected", "No answer from remote", …); "Job aborted by
  request" is a cancel.
- HylaFAX redials busy and unanswered numbers itself; ``provider_retried`` is set when
  ``attempts`` (or ``totdials``) is above 1, so faxrelay does not redial on top of it.
- Once a job leaves the HylaFAX queue, ``jobstatus`` no longer knows it (a 404 or an error
  saying "not found", or an empty ``status``); its outcome is then looked up in ``activejobs``
  TX and in ``recordsget`` TX. A job found nowhere is ``UNKNOWN``.
- ``recordsget`` returns records oldest first (as the doc's example shows), so the newest are
  read first by walking pages backwards from ``recordcount``; the walk stops at a page wholly
  older than the time asked for.
- ``time`` is a Unix timestamp in list answers and ``YYYY-MM-DD HH:MM:SS`` (UTC) in
  ``jobstatus``; both are read. ``find_submitted`` allows ``CLOCK_SKEW`` seconds of difference
  between the UCX's clock and ours and picks the earliest matching job.
- The destination is the dialing string the UCX dials: formatting (``+``, spaces, dashes, dots,
  brackets) is removed and nothing is added, so give the digits the PBX dials (for example
  ``1NXXNXXXXXX`` in North America, ``011…`` abroad).
- The API cannot tell which virtual fax received an RX record: ``list_inbound`` lists every
  received fax on the UCX (point one account per UCX at inbound faxes). Failed receptions with
  no pages are skipped (there is no file to fetch). Received faxes are kept until deleted.
- Error messages other than "Authentication failed" and "Job not found" are not published;
  the ``ERROR`` table reads a few likely ones and otherwise goes by the HTTP status
  (``ERROR_STATUS``).
- A submit whose answer is unreadable (a 2xx that is not JSON, a 500/502/504 page, or a
  "Success" without ``job_id``) may have queued a job: it raises OutcomeUnknownError.

Size: one concept, one provider (DESIGN principle 5): its client, token cache, webhook parsers,
status and error tables stay together so that nothing else knows a UCX field name.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import IO, Any, ClassVar

import httpx

from config.accounts import Account
from worker.providers._http import http_error, json_dict, json_object, send, snippet, stream_to
from worker.providers.base import (
    BadDestinationError,
    Capabilities,
    ErrorKind,
    FailureCause,
    InboundFax,
    JobState,
    JobStatus,
    OutcomeUnknownError,
    OutgoingDocument,
    Provider,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    SubmitResult,
    kind_for_http_status,
)
from worker.providers.fields import (
    UnknownWords,
    digits,
    page_count,
    parse_time,
    status_word,
    text,
    whole_number,
    without_formatting,
)

log = logging.getLogger(__name__)

NAME = "ucx"
API_PATH = "/restv1/efax"
PAGE_SIZE = 200  # records per recordsget call
PAGE_SLACK = 20  # extra records asked on the newest page, for records added meanwhile
MAX_PAGES = 50  # a record walk reads at most this many pages
CLOCK_SKEW = 60.0  # seconds allowed between the UCX's clock and ours (find_submitted)

# HylaFAX job state word (lower case) -> JobState.
STATUS: dict[str, JobState] = {
    "pending": JobState.QUEUED,  # waiting for its time to send
    "suspended": JobState.QUEUED,  # held by an operator, not being processed
    "blocked": JobState.QUEUED,  # waiting behind other jobs to the same number
    "ready": JobState.QUEUED,  # ready, waiting for a modem
    "waiting": JobState.QUEUED,
    "sleeping": JobState.SENDING,  # between tries (busy, no answer): HylaFAX will redial
    "active": JobState.SENDING,
    "running": JobState.SENDING,
    "done": JobState.DELIVERED,
    "failed": JobState.FAILED,
}

# status_text fragments (lower case) -> why a job failed; first match wins.
CAUSE: tuple[tuple[str, FailureCause], ...] = (
    ("busy", FailureCause.BUSY),
    ("no answer", FailureCause.NO_ANSWER),
    ("ringback", FailureCause.NO_ANSWER),
    ("no carrier", FailureCause.NO_ANSWER),
    ("invalid dialing", FailureCause.BAD_NUMBER),
    ("invalid phone number", FailureCause.BAD_NUMBER),
    ("invalid destination", FailureCause.BAD_NUMBER),
    ("not in service", FailureCause.BAD_NUMBER),
    ("unallocated", FailureCause.BAD_NUMBER),
    ("no local dialtone", FailureCause.PROVIDER),
    ("modem", FailureCause.PROVIDER),
    ("unknown problem dialing", FailureCause.PROVIDER),
)

# status_text fragments that mean a failed job was cancelled (HylaFAX: "Job aborted by request").
CANCELLED_TEXTS = ("aborted by request", "removed", "cancelled", "canceled")

# Error message fragments (lower case) -> kind; first match wins.
ERROR: tuple[tuple[str, ErrorKind], ...] = (
    ("authentication failed", ErrorKind.AUTH),
    ("unauthorized", ErrorKind.AUTH),
    ("license", ErrorKind.AUTH),  # API licence missing or expired
    ("invalid destination", ErrorKind.BAD_DESTINATION),
    ("invalid phone number", ErrorKind.BAD_DESTINATION),
    ("job not found", ErrorKind.PERMANENT),
    ("invalid fax", ErrorKind.PERMANENT),
    ("try again", ErrorKind.TRANSIENT),
)

# HTTP status -> kind, where the body names nothing in ERROR (documented: 400, 401,
# 404, 500; the others are what proxies in front of a UCX answer).
ERROR_STATUS: dict[int, ErrorKind] = {
    400: ErrorKind.PERMANENT,
    401: ErrorKind.AUTH,
    403: ErrorKind.AUTH,
    404: ErrorKind.PERMANENT,
    500: ErrorKind.TRANSIENT,
    502: ErrorKind.TRANSIENT,
    503: ErrorKind.TRANSIENT,
    504: ErrorKind.TRANSIENT,
}

# A submit answered with one of these and no readable JSON may still have queued the job.
SUBMIT_OUTCOME_UNKNOWN_HTTP = frozenset({500, 502, 504})

_DIGITS = re.compile(r"^[0-9]{3,20}$")
_JOB_PREFIX = re.compile(r"^(TX|RX)")

UNKNOWN_WORDS = UnknownWords(log, NAME)


def error_kind(message: str, http_status: int) -> ErrorKind:
    """The kind of a UCX error from its message, else from its HTTP status."""
    lowered = message.lower()
    for fragment, kind in ERROR:
        if fragment in lowered:
            return kind
    if http_status in ERROR_STATUS:
        return ERROR_STATUS[http_status]
    if http_status >= 400:
        return kind_for_http_status(http_status)
    return ErrorKind.PERMANENT  # a 2xx whose result is an error we do not know


def failure_cause(status_text: str) -> FailureCause:
    lowered = status_text.lower()
    for fragment, cause in CAUSE:
        if fragment in lowered:
            return cause
    return FailureCause.OTHER


def job_state(word: str) -> JobState:
    """The JobState of a HylaFAX state word; UNKNOWN (logged once per word) when not known."""
    state = STATUS.get(status_word(word))
    if state is not None:
        return state
    UNKNOWN_WORDS.note(word)
    return JobState.UNKNOWN


def _same_job(a: object, b: str) -> bool:
    """Job ids compare with or without HylaFAX's TX/RX prefix ('TX82' and '82')."""
    left, right = str(a or "").strip().upper(), b.strip().upper()
    if not left or not right:
        return False
    if left == right:
        return True
    bare_left, bare_right = _JOB_PREFIX.sub("", left), _JOB_PREFIX.sub("", right)
    one_is_bare = bare_left == left or bare_right == right
    return one_is_bare and bare_left == bare_right


def job_status(item: dict[str, Any]) -> JobStatus:
    """A JobStatus from a jobstatus ``status`` object, an activejobs job or a TX record."""
    word = str(item.get("state") or "").strip()
    status_text = str(item.get("status_text") or "").strip()
    state = job_state(word)
    cause: FailureCause | None = None
    if state is JobState.FAILED:
        if any(fragment in status_text.lower() for fragment in CANCELLED_TEXTS):
            state = JobState.CANCELLED
        else:
            cause = failure_cause(status_text)
    tries = max(
        whole_number(item.get("attempts")) or 0,
        whole_number(item.get("totdials")) or 0,
    )
    return JobStatus(
        state=state,
        raw_status=word,
        detail=status_text,
        cause=cause,
        provider_retried=tries > 1,
        pages=page_count(item.get("sent_pages")),
        raw=dict(item),
    )


class UcxClient(Provider):
    """A client for one UCX system and one of its virtual faxes (``fax_id``)."""

    name: ClassVar[str] = NAME
    capabilities: ClassVar[Capabilities] = Capabilities(
        track=True,
        cancel=True,
        list_inbound=True,
        delete_inbound=True,
        status_webhook=False,
        inbound_webhook=False,
        find_submitted=True,
    )
    poll_first: ClassVar[float] = 20.0  # HylaFAX jobs take a minute or more
    poll_cap: ClassVar[float] = 600.0
    inbound_retention_days: ClassVar[float | None] = None  # kept until recorddelete

    def __init__(
        self,
        account: Account,
        http: httpx.Client,
        timeout: httpx.Timeout | None = None,
    ) -> None:
        super().__init__(account, http, timeout)
        self._token: str | None = None
        self._token_lock = threading.Lock()

    # --- destinations -----------------------------------------------------------
    @classmethod
    def normalize_destination(cls, number: str) -> str:
        """The dialing string: digits only, as the docs show (``14695550101``)."""
        stripped = without_formatting(number)
        if not stripped:
            raise BadDestinationError(cls.name, "normalize", "the destination number is empty")
        if not stripped.isdigit():
            raise BadDestinationError(
                cls.name,
                "normalize",
                f"{number!r} is not a phone number: UCX dials digits only "
                "(allowed formatting: + spaces - . ( ) [ ])",
            )
        if not _DIGITS.match(stripped):
            raise BadDestinationError(
                cls.name,
                "normalize",
                f"{number!r} has {len(stripped)} digits; a UCX dialing string has 3 to 20",
            )
        return stripped

    # --- tokens -----------------------------------------------------------------
    def token(self) -> str:
        """The bearer token (fetched once, then cached)."""
        with self._token_lock:
            if self._token is None:
                self._token = self._fetch_token()
            return self._token

    def _renew(self, stale: str) -> str:
        """A fresh token, unless another thread already replaced ``stale``."""
        with self._token_lock:
            if self._token is None or self._token == stale:
                self._token = None
                self._token = self._fetch_token()
            return self._token

    def _fetch_token(self) -> str:
        operation = "token"
        auth = (self.account.secret("client_id"), self.account.secret("client_secret"))
        response = send(
            self.name,
            operation,
            lambda: self.http.get(
                self._url(operation),
                auth=auth,
                headers={"Accept": "application/json"},
                timeout=self.timeout,
            ),
            idempotent=True,
        )
        data = self._answer(operation, response)
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise self.error(
                ErrorKind.PERMANENT, operation, "answer holds no token", response.status_code
            )
        return token

    # --- plumbing ----------------------------------------------------------------
    def _url(self, method: str) -> str:
        return f"{self.base_url}{API_PATH}/{method}"

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _refused(self, response: httpx.Response) -> bool:
        """Did the UCX refuse the token (HTTP 401, or an 'Authentication failed' answer)?"""
        if response.status_code == 401:
            return True
        data = json_dict(response)
        if data is None or str(data.get("result", "")).lower() == "success":
            return False
        message = text(data.get("message") or data.get("status"))
        return bool(message) and error_kind(message, response.status_code) is ErrorKind.AUTH

    def _answer(self, operation: str, response: httpx.Response) -> dict[str, Any]:
        """The JSON answer of a successful call; the provider's error otherwise."""
        data = json_dict(response)
        status = response.status_code
        if data is not None:
            result = str(data.get("result", "")).strip().lower()
            if result == "success" and status < 300:
                return data
            if result or "message" in data:
                message = text(data.get("message") or data.get("status")) or str(data.get("result"))
                raise self.error(error_kind(message, status), operation, message, status)
        if status >= 300:
            raise http_error(self.name, operation, response)
        json_object(self.name, operation, response)  # raises for an answer that is not JSON
        raise self.error(
            ErrorKind.TRANSIENT,
            operation,
            f"answer has no result: {snippet(response)}",
            status,
        )

    def _call(
        self,
        operation: str,
        request: Callable[[str], httpx.Response],
        *,
        idempotent: bool = True,
        before_retry: Callable[[], None] | None = None,
    ) -> httpx.Response:
        """Send ``request(token)``; on a refused token fetch a new one and send once more."""
        token = self.token()
        response = send(self.name, operation, lambda: request(token), idempotent=idempotent)
        if not self._refused(response):
            return response
        if before_retry is not None:
            before_retry()
        fresh = self._renew(token)
        return send(self.name, operation, lambda: request(fresh), idempotent=idempotent)

    def _get(self, operation: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        def request(token: str) -> httpx.Response:
            return self.http.get(
                self._url(operation),
                params=params,
                headers=self._headers(token),
                timeout=self.timeout,
            )

        return self._answer(operation, self._call(operation, request))

    def _put(self, operation: str, body: dict[str, str]) -> dict[str, Any]:
        def request(token: str) -> httpx.Response:
            return self.http.put(
                self._url(operation),
                json=body,
                headers={**self._headers(token), "Content-Type": "application/json"},
                timeout=self.timeout,
            )

        return self._answer(operation, self._call(operation, request))

    # --- outbound ---------------------------------------------------------------
    def submit(self, document: OutgoingDocument, to: str) -> SubmitResult:
        """FileSend: one document to one number from the account's virtual fax."""
        operation = "filesend"
        destination = self.normalize_destination(to)
        fax_id = self.account.secret("fax_id")
        stream = document.stream
        start = stream.tell() if stream.seekable() else None

        def request(token: str) -> httpx.Response:
            return self.http.post(
                self._url(operation),
                data={"fax_id": fax_id, "destination": destination},
                files={"attachment": (document.filename, stream, document.content_type)},
                headers=self._headers(token),
                timeout=self.timeout,
            )

        def rewind() -> None:
            if start is None:  # nothing was accepted: drop the token, let the caller try again
                with self._token_lock:
                    self._token = None
                raise self.error(
                    ErrorKind.TRANSIENT,
                    operation,
                    "token refused and the document cannot be re-read for a retry",
                    401,
                )
            stream.seek(start)

        response = self._call(operation, request, idempotent=False, before_retry=rewind)
        status = response.status_code
        data = json_dict(response)
        if data is None and (200 <= status < 300 or status in SUBMIT_OUTCOME_UNKNOWN_HTTP):
            raise OutcomeUnknownError(
                self.name,
                operation,
                f"unreadable answer; the job may have been queued: {snippet(response)}",
                status,
            )
        data = self._answer(operation, response)
        job_id = str(data.get("job_id") or "").strip()
        if not job_id:
            raise OutcomeUnknownError(
                self.name, operation, f"accepted without a job_id: {snippet(response)}", status
            )
        return SubmitResult(job_id=job_id, raw=data)

    def jobstatus(self, job_id: str) -> dict[str, Any] | None:
        """JobStatus's ``status`` object; None once the job has left the HylaFAX queue."""
        try:
            data = self._get("jobstatus", {"job_id": job_id})
        except ProviderPermanentError as exc:
            if _not_found(exc):
                return None
            raise
        status = data.get("status")
        if isinstance(status, list) and len(status) == 1 and isinstance(status[0], dict):
            status = status[0]
        if not isinstance(status, dict) or not status:
            return None
        return status

    def status(self, job_id: str, to: str = "", submitted_at: datetime | None = None) -> JobStatus:
        """jobstatus while the job is queued; afterwards activejobs TX, then recordsget TX."""
        item = self.jobstatus(job_id)
        if item is not None:
            return job_status(item)
        for job in self.activejobs("TX"):
            if _same_job(job.get("jobid"), job_id):
                return job_status(job)
        since = submitted_at.timestamp() - CLOCK_SKEW if submitted_at else None
        for record in self._walk_records("TX", since):
            if _same_job(record.get("jobid"), job_id):
                return job_status(record)
        return JobStatus(
            state=JobState.UNKNOWN,
            raw_status="",
            detail=f"job {job_id} is not in jobstatus, activejobs or recordsget TX",
        )

    def find_submitted(self, to: str, since: datetime) -> SubmitResult | None:
        """The earliest job to ``to`` at or after ``since`` (activejobs TX, recordsget TX)."""
        found = self.submitted_candidates(to, since)
        return found[0] if found else None

    def submitted_candidates(
        self, to: str, since: datetime, reference: str = ""
    ) -> list[SubmitResult]:
        """Every job to ``to`` at or after ``since`` (activejobs TX, recordsget TX), earliest
        first. UCX lists nothing the sender chose (``reference`` is not used): the job id is
        what tells two sends apart."""
        target = self.normalize_destination(to)
        cutoff = since.timestamp() - CLOCK_SKEW
        found: dict[str, tuple[float, dict[str, Any]]] = {}

        def consider(item: dict[str, Any], number_field: str) -> None:
            job_id = str(item.get("jobid") or "").strip()
            if not job_id or job_id in found or digits(item.get(number_field)) != target:
                return
            when = parse_time(item.get("time"))
            if when is not None and when.timestamp() < cutoff:
                return
            found[job_id] = (when.timestamp() if when else float("inf"), item)

        for job in self.activejobs("TX"):
            consider(job, "destination")
        for record in self._walk_records("TX", cutoff):
            consider(record, "phone_number")
        ordered = sorted(found.items(), key=lambda pair: pair[1][0])
        return [SubmitResult(job_id=job_id, raw=item) for job_id, (_, item) in ordered]

    def cancel(self, job_id: str) -> None:
        """JobCancel; ProviderPermanentError when the job can no longer be cancelled."""
        data = self._put("jobcancel", {"job_id": job_id})
        words = text(data.get("status")).lower()
        if "not removed" in words or "cannot" in words or "failed" in words:
            raise self.error(ErrorKind.PERMANENT, "jobcancel", text(data.get("status")), 200)

    # --- inbound ----------------------------------------------------------------
    def download(self, fax: InboundFax, sink: IO[bytes], max_bytes: int) -> int:
        """FileDownload, streamed into ``sink``."""
        operation = "filedownload"
        params = {"job_id": fax.provider_fax_id}
        token = self.token()
        for attempt in (1, 2):
            request = self.http.build_request(
                "GET",
                self._url(operation),
                params=params,
                headers=self._headers(token),
                timeout=self.timeout,
            )
            response = send(
                self.name, operation, partial(self.http.send, request, stream=True), idempotent=True
            )
            try:
                content_type = response.headers.get("content-type", "").lower()
                if response.status_code >= 300 or "json" in content_type:
                    self._read(operation, response)
                    if attempt == 1 and self._refused(response):
                        token = self._renew(token)
                        continue
                    self._answer(operation, response)
                    raise self.error(
                        ErrorKind.PERMANENT,
                        operation,
                        f"answered JSON instead of a file: {snippet(response)}",
                        response.status_code,
                    )
                return stream_to(self.name, operation, response, sink, max_bytes)
            finally:
                response.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def list_inbound(self, since: datetime) -> list[InboundFax]:
        """Received faxes (recordsget RX) at or after ``since``, newest first."""
        cutoff = float(math.floor(since.timestamp()))  # UCX times are whole seconds
        faxes: list[InboundFax] = []
        seen: set[str] = set()
        for record in self._walk_records("RX", cutoff):
            job_id = str(record.get("jobid") or "").strip()
            if not job_id or job_id in seen:
                continue
            seen.add(job_id)
            received = parse_time(record.get("time"))
            if received is not None and received.timestamp() < cutoff:
                continue
            pages = page_count(record.get("sent_pages"))
            if job_state(str(record.get("state") or "")) is JobState.FAILED and not pages:
                continue  # a failed reception: no file
            faxes.append(
                InboundFax(
                    provider_fax_id=job_id,
                    from_number=str(record.get("phone_number") or ""),
                    to_number="",
                    pages=pages,
                    received_at=received,
                    raw=dict(record),
                )
            )
        return faxes

    def delete_inbound(self, fax: InboundFax) -> None:
        """RecordDelete; a record already gone counts as deleted."""
        try:
            self.recorddelete(fax.provider_fax_id)
        except ProviderPermanentError as exc:
            if not _not_found(exc):
                raise

    # --- the other documented calls -----------------------------------------------
    def faxlist(self) -> list[dict[str, Any]]:
        """FaxList: the virtual faxes (id, extension, name, cidnumber, cidname)."""
        return _items("faxlist", self._get("faxlist"), "faxes")

    def faxusage(self, fax_id: str | None = None) -> list[dict[str, Any]]:
        """FaxUsage: id, state, jobCount of one virtual fax or of all."""
        params = {"fax_id": fax_id} if fax_id else None
        return _items("faxusage", self._get("faxusage", params), "faxes")

    def activejobs(self, kind: str = "TX") -> list[dict[str, Any]]:
        """ActiveJobs: jobs in progress, ``TX`` (sent through this API) or ``RX``."""
        return _items("activejobs", self._get("activejobs", {"type": kind}), "list")

    def recordcount(self, kind: str = "TX") -> int:
        """RecordCount: completed jobs stored, ``TX`` (sent through this API) or ``RX``."""
        data = self._get("recordcount", {"type": kind})
        count = whole_number(data.get("count"))
        if count is None:
            raise self.error(
                ErrorKind.TRANSIENT, "recordcount", f"count is not a number: {data.get('count')!r}"
            )
        return count

    def recordsget(
        self, kind: str = "TX", limit: int | None = None, offset: int | None = None
    ) -> list[dict[str, Any]]:
        """RecordsGet: completed jobs, oldest first; ``offset`` only counts with ``limit``."""
        params = {"type": kind}
        if limit is not None:
            params["limit"] = str(limit)
            if offset is not None:
                params["offset"] = str(offset)
        return _items("recordsget", self._get("recordsget", params), "records")

    def recorddelete(self, job_id: str) -> str:
        """RecordDelete: the record and its file; returns the UCX's words."""
        return text(self._put("recorddelete", {"job_id": job_id}).get("status"))

    def check(self) -> dict[str, Any]:
        """Token, FaxList and FaxUsage; fails when the account's fax_id is not a virtual fax."""
        faxes = self.faxlist()
        fax_id = self.account.secret("fax_id")
        if not any(str(fax.get("id")) == fax_id for fax in faxes):
            known = ", ".join(f"{f.get('id')} ({f.get('name')})" for f in faxes) or "none"
            raise self.error(
                ErrorKind.PERMANENT,
                "faxlist",
                f"fax_id {fax_id} is not one of the UCX's virtual faxes: {known}",
            )
        usage = self.faxusage(fax_id)
        return {"token": "ok", "fax_id": fax_id, "faxes": faxes, "usage": usage}

    def _read(self, operation: str, response: httpx.Response) -> None:
        try:
            response.read()
        except httpx.TransportError as exc:
            raise ProviderTransientError(
                self.name, operation, f"answer broke off: {exc}", response.status_code
            ) from exc

    # --- record walk -------------------------------------------------------------
    def _walk_records(self, kind: str, since: float | None) -> Iterator[dict[str, Any]]:
        """Completed records, newest first, page by page from the end.

        Stops after a page whose records are all older than ``since`` (records are stored
        oldest first), or after MAX_PAGES pages.
        """
        count = self.recordcount(kind)
        end = count
        pages = 0
        while end > 0 and pages < MAX_PAGES:
            offset = max(0, end - PAGE_SIZE)
            limit = end - offset + (PAGE_SLACK if pages == 0 else 0)
            records = self.recordsget(kind, limit=limit, offset=offset)
            pages += 1
            yield from reversed(records)
            if not records:
                return
            if since is not None and all(_older(r, since) for r in records):
                return
            end = offset


def _older(record: dict[str, Any], since: float) -> bool:
    when = parse_time(record.get("time"))
    return when is not None and when.timestamp() < since


def _items(operation: str, data: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The list under ``key`` (missing: empty); an error when it is not a list."""
    items = data.get(key)
    if items is None:
        return []
    if not isinstance(items, list):
        raise ProviderTransientError(NAME, operation, f"{key} is not a list: {str(items)[:200]}")
    return [item for item in items if isinstance(item, dict)]


def _not_found(exc: ProviderError) -> bool:
    return exc.http_status == 404 or "not found" in exc.provider_message.lower()


PROVIDER = UcxClient
