"""What every provider module offers, and the types it speaks in.

A provider module (``primevox.py``, ``ucx.py``, …) holds everything about one provider: its client,
its webhook parsers, its status table and its error table. Nothing outside it knows the provider's
field names, status words or error strings. Modules import neither Starlette nor Celery. Every
module spells them alike: the client ``<Provider>Client`` (registered as ``PROVIDER``), ``NAME``,
the tables ``STATUS`` and ``ERROR``, and ``UNKNOWN_WORDS`` where it reads status words. What
is not provider knowledge is shared: field-level parsing in ``fields``, HTTP plumbing in ``_http``.

Errors::

    ProviderError                 provider, operation, http_status, provider_message, kind
    ├── ProviderTransientError    try again later (5xx, database busy, rate limit, timeout before send)
    ├── ProviderAuthError         credentials refused; an operator must fix the account
    ├── ProviderPermanentError    the provider refused the request; retrying will not help
    │   ├── BadDestinationError   the number is wrong for this provider (never retried, never redialled)
    │   └── NotFoundError         the provider does not have it (a received fax gone or not yet there)
    └── OutcomeUnknownError       the request left but no answer came back: it may have taken effect

``ErrorKind`` is the same classification as data: each module maps its error strings, codes and
HTTP statuses to a kind in a table, and ``error_for_kind`` picks the exception class.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any, ClassVar

import httpx

from config.accounts import Account

DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=10.0)


class ErrorKind(enum.StrEnum):
    TRANSIENT = "transient"
    PERMANENT = "permanent"
    AUTH = "auth"
    BAD_DESTINATION = "bad_destination"


class ProviderError(Exception):
    """A provider call failed; says which provider, which call, and what the provider said."""

    kind: ClassVar[ErrorKind] = ErrorKind.PERMANENT

    def __init__(
        self,
        provider: str,
        operation: str,
        provider_message: str,
        http_status: int | None = None,
    ) -> None:
        self.provider = provider
        self.operation = operation
        self.provider_message = provider_message
        self.http_status = http_status
        status = f" (HTTP {http_status})" if http_status is not None else ""
        super().__init__(f"{provider} {operation} failed{status}: {provider_message}")


class ProviderTransientError(ProviderError):
    kind = ErrorKind.TRANSIENT


class ProviderAuthError(ProviderError):
    kind = ErrorKind.AUTH


class ProviderPermanentError(ProviderError):
    kind = ErrorKind.PERMANENT


class BadDestinationError(ProviderPermanentError):
    kind = ErrorKind.BAD_DESTINATION


class NotFoundError(ProviderPermanentError):
    """The provider does not know the fax or file (it expired, was deleted, or is not there yet)."""


class OutcomeUnknownError(ProviderError):
    """The request was sent and its answer was lost (timeout, dropped connection)."""

    kind = ErrorKind.TRANSIENT


ERROR_CLASSES: dict[ErrorKind, type[ProviderError]] = {
    ErrorKind.TRANSIENT: ProviderTransientError,
    ErrorKind.PERMANENT: ProviderPermanentError,
    ErrorKind.AUTH: ProviderAuthError,
    ErrorKind.BAD_DESTINATION: BadDestinationError,
}


def error_for_kind(
    kind: ErrorKind, provider: str, operation: str, message: str, http_status: int | None = None
) -> ProviderError:
    return ERROR_CLASSES[kind](provider, operation, message, http_status)


def kind_for_http_status(status: int) -> ErrorKind:
    """The default reading of an HTTP status when the body says nothing we know."""
    if status in (401, 403):
        return ErrorKind.AUTH
    if status in (408, 425, 429) or status >= 500:
        return ErrorKind.TRANSIENT
    return ErrorKind.PERMANENT


class JobState(enum.StrEnum):
    """A provider job's state, normalised. UNKNOWN is treated as still in progress."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ACCEPTED = "accepted"  # handed over; the provider offers no tracking (VoipNow)
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        return self in (JobState.DELIVERED, JobState.FAILED, JobState.CANCELLED, JobState.ACCEPTED)


class FailureCause(enum.StrEnum):
    """Why a job failed, where the provider says; decides redial and failover."""

    BUSY = "busy"  # redial later
    NO_ANSWER = "no_answer"  # redial later
    BAD_NUMBER = "bad_number"  # never redial
    PROVIDER = "provider"  # the provider's own failure: fail over
    OTHER = "other"


@dataclass(frozen=True)
class JobStatus:
    state: JobState
    raw_status: str  # the provider's own word(s)
    detail: str = ""  # the provider's words on why, where it gives them
    cause: FailureCause | None = None
    provider_retried: bool = False  # the provider already redialled (UCX/HylaFAX does)
    pages: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SubmitResult:
    job_id: str  # the provider's job reference ('' where it returns none: voip.ms)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutgoingDocument:
    """What submit needs: a PDF to stream, and a URL where the provider fetches by URL."""

    filename: str
    stream: IO[bytes]
    size: int
    content_type: str = "application/pdf"
    url: str = ""  # a presigned URL (PrimeVox downloads the file itself)
    # Unique to this submit, for a provider that returns no job id but lists something the
    # sender chose (voip.ms: the station id), so that its outcome is matched to this send alone.
    reference: str = ""


# The provider fax id of a fax known only by its PDF (a callback that carries the file and no id):
# this prefix and the PDF's sha256 hex digest (or its first 40+ digits). The archive step uses it to
# see that the same fax, later listed under the provider's own id, is already archived.
CONTENT_ID_PREFIX = "sha256-"


def content_id(pdf_sha256: str) -> str:
    return CONTENT_ID_PREFIX + pdf_sha256[:40]


def is_content_id_of(provider_fax_id: str, pdf_sha256: str) -> bool:
    digest = provider_fax_id.removeprefix(CONTENT_ID_PREFIX)
    return digest != provider_fax_id and len(digest) >= 16 and pdf_sha256.startswith(digest)


# InboundFax and InboundEvent are made on every inbound webhook, so they are plain dataclasses:
# a frozen one's __init__ costs twice as much (nothing changes them after parsing).
@dataclass
class InboundFax:
    """A received fax the provider holds (from a webhook or a list call)."""

    provider_fax_id: str
    from_number: str = ""
    to_number: str = ""
    pages: int | None = None
    received_at: datetime | None = None
    download_url: str = ""  # where the provider gives one (PrimeVox)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class InboundEvent:
    """A parsed inbound-fax webhook."""

    fax: InboundFax | None  # None: the webhook named no fax; reconcile the account instead
    pdf: bytes | None = None  # the PDF itself, where the webhook carried it (voip.ms)
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StatusEvent:
    """A parsed outgoing-status webhook."""

    job_id: str
    status: JobStatus
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookError(Exception):
    """A webhook body that cannot be understood (answered 422)."""

    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class Capabilities:
    track: bool  # has a status call
    cancel: bool
    list_inbound: bool
    delete_inbound: bool
    status_webhook: bool
    inbound_webhook: bool
    find_submitted: bool  # can look up a submit whose answer was lost


class Provider:
    """Base of the provider clients. One instance per account; share it across threads."""

    name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    # Per-provider poll backoff defaults (seconds): first delay, cap.
    poll_first: ClassVar[float] = 15.0
    poll_cap: ClassVar[float] = 600.0
    # How long the provider keeps a received fax (None: until deleted).
    inbound_retention_days: ClassVar[float | None] = None
    # The body the provider expects in answer to its webhooks (voip.ms retries until it reads "ok").
    webhook_ack: ClassVar[str] = ""

    def __init__(
        self, account: Account, http: httpx.Client, timeout: httpx.Timeout | None = None
    ) -> None:
        self.account = account
        self.http = http
        self.base_url = account.base_url
        # Passed on every request: a provider that stops answering must not hold a worker.
        self.timeout = timeout or DEFAULT_TIMEOUT

    # --- errors ---------------------------------------------------------------
    def error(
        self, kind: ErrorKind, operation: str, message: str, http_status: int | None = None
    ) -> ProviderError:
        return error_for_kind(kind, self.name, operation, message, http_status)

    def unsupported(self, operation: str) -> ProviderPermanentError:
        return ProviderPermanentError(self.name, operation, "the provider has no such operation")

    # --- destinations -----------------------------------------------------------
    @classmethod
    def normalize_destination(cls, number: str) -> str:
        """The number in the form the provider's docs show; BadDestinationError if it cannot be."""
        raise NotImplementedError

    # --- outbound ---------------------------------------------------------------
    def submit(self, document: OutgoingDocument, to: str) -> SubmitResult:
        raise NotImplementedError

    def status(self, job_id: str, to: str = "", submitted_at: datetime | None = None) -> JobStatus:
        raise self.unsupported("status")

    def find_submitted(self, to: str, since: datetime) -> SubmitResult | None:
        """Find a job submitted to ``to`` since ``since`` (for a submit whose answer was lost)."""
        raise self.unsupported("find_submitted")

    def submitted_candidates(
        self, to: str, since: datetime, reference: str = ""
    ) -> list[SubmitResult]:
        """Every job that may be the submit to ``to`` since ``since`` whose answer was lost
        (``reference``: what that submit carried as ``OutgoingDocument.reference``). The caller
        takes one only when it is the only candidate no other send owns."""
        raise self.unsupported("submitted_candidates")

    def cancel(self, job_id: str) -> None:
        raise self.unsupported("cancel")

    # --- inbound ----------------------------------------------------------------
    def download(self, fax: InboundFax, sink: IO[bytes], max_bytes: int) -> int:
        """Write the received PDF's bytes to ``sink``; return how many were written."""
        raise self.unsupported("download")

    def list_inbound(self, since: datetime) -> list[InboundFax]:
        raise self.unsupported("list_inbound")

    def delete_inbound(self, fax: InboundFax) -> None:
        raise self.unsupported("delete_inbound")

    # --- webhooks (pure: no I/O) -----------------------------------------------
    @classmethod
    def parse_inbound_webhook(cls, headers: dict[str, str], body: bytes) -> InboundEvent:
        raise WebhookError(f"{cls.name} sends no inbound-fax webhook")

    @classmethod
    def parse_status_webhook(cls, headers: dict[str, str], body: bytes) -> StatusEvent:
        raise WebhookError(f"{cls.name} sends no status webhook")

    # --- operator checks (faxrelay accounts check) -----------------------------
    def check(self) -> dict[str, Any]:
        """Call the cheapest authenticated operations; return what they said."""
        raise NotImplementedError
