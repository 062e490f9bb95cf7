"""The sandbox's shared state: clock, request log, fault book, inbound store, outbound jobs.

The sandbox stands in for the five providers over real HTTP. It is written from the providers'
docs, never from faxrelay's client code, so the two check each other. It stands alone: it imports
nothing from faxrelay's other packages.

Each provider module (``sandbox/primevox.py`` …) exposes ``routes(sb: Sandbox) -> list[BaseRoute]``
mounted under ``/{provider}``, and uses ``sb.intercept(...)`` at the top of each operation so the
request is logged and injected faults apply.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from sandbox.network import Network
from sandbox.pdf import count_pages
from sandbox.timing import FaxTiming, Plan

PROVIDERS = ("primevox", "ucx", "voipnow", "voipms", "callerip")

# Fault kinds the control API accepts.
#   error:     answer ``status`` with ``body`` (default: a 5xx with a short text)
#   hang:      wait ``seconds`` (default 30) before handling the call normally
#   late:      handle the call at once, then hold its answer ``seconds``: the provider did the
#              work (took the job) and the caller, timing out first, never learns it
#   truncate:  (downloads) send only half the file but announce its full length, then close
#   drip:      (downloads) send the whole file, in small pieces spread over ``seconds``
#   not_pdf:   (downloads) send an HTML page instead of the file
#   expired:   (downloads) answer 404 as the provider does once the file is gone
FAULT_KINDS = ("error", "hang", "late", "truncate", "drip", "not_pdf", "expired")
DOWNLOAD_FAULTS = ("truncate", "drip", "not_pdf", "expired")
DRIP_PIECES = 20  # a dripped body arrives in this many pieces, evenly spaced

# Seconds to hold the current request's answer (a ``late`` fault): ``app.HoldAnswers`` puts a
# list here for each request, ``intercept`` appends to it, and the middleware waits before the
# answer's first byte. A list, so the handler's additions are seen whatever context it ran in.
LATE_ANSWER: ContextVar[list[float] | None] = ContextVar("sandbox_late_answer", default=None)


class Clock:
    """Sandbox time: real time, sped up by ``speed`` from the moment it is set."""

    def __init__(self, speed: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._real0 = time.time()
        self._virtual0 = self._real0
        self.speed = speed

    def now(self) -> float:
        with self._lock:
            return self._virtual0 + (time.time() - self._real0) * self.speed

    def set_speed(self, speed: float) -> None:
        with self._lock:
            now = self._virtual0 + (time.time() - self._real0) * self.speed
            self._real0, self._virtual0, self.speed = time.time(), now, speed

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._virtual0 += seconds


@dataclass
class Fault:
    kind: str
    remaining: int = 1
    status: int = 503
    body: str = ""
    seconds: float = 30.0


@dataclass
class LoggedRequest:
    seq: int
    at: float
    provider: str
    operation: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    fields: dict[str, Any]  # form/JSON fields as the handler read them (file parts: name + size)
    status: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "provider": self.provider,
            "operation": self.operation,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "fields": self.fields,
            "status": self.status,
        }


@dataclass
class StoredFax:
    """A received fax the provider holds, or a sent job's document."""

    id: str
    provider: str
    pdf: bytes
    from_number: str = "5551230000"
    to_number: str = "5559870000"
    pages: int = 1
    received_at: float = field(default_factory=time.time)
    expires_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    """An outbound job moving through the provider's states on the sandbox clock.

    ``plan`` is the list of (state word, seconds after submit) the job passes through; the
    provider module that created it reads the current word with ``state_at``.
    """

    id: str
    provider: str
    to_number: str
    submitted_at: float
    plan: list[tuple[str, float]]
    document: bytes = b""
    cancelled_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The document's digest: what tells an outside checker which send a job carries.
    document_sha256: str = ""

    def __post_init__(self) -> None:
        if self.document and not self.document_sha256:
            self.document_sha256 = hashlib.sha256(self.document).hexdigest()

    def state_at(self, now: float) -> str:
        word = self.plan[0][0]
        for state, offset in self.plan:
            if now >= self.submitted_at + offset:
                word = state
        return word

    def final_at(self) -> float:
        return self.submitted_at + self.plan[-1][1]


class Sandbox:
    """All state of one sandbox server."""

    def __init__(self, speed: float = 1.0, seed: int | None = None) -> None:
        self.clock = Clock(speed)
        self.random = random.Random(seed)
        self.log: deque[LoggedRequest] = deque(maxlen=100_000)
        self.faults: dict[tuple[str, str], list[Fault]] = {}
        self.recoveries = 0  # counts clear_faults(): a held (``late``) answer waits for no more
        self.inbound: dict[str, dict[str, StoredFax]] = {p: {} for p in PROVIDERS}
        self.jobs: dict[str, dict[str, Job]] = {p: {} for p in PROVIDERS}
        # Outcome of the next jobs per provider: "success", "busy", "no_answer", "failed",
        # "busy_then_success" …; consumed one per submit, default "success".
        self.job_outcomes: dict[str, deque[str]] = {p: deque() for p in PROVIDERS}
        # Seconds (sandbox clock) a job takes from submit to its final state.
        self.job_duration: dict[str, float] = dict.fromkeys(PROVIDERS, 4.0)
        # Providers whose jobs take as long as real faxes instead (``sandbox.timing``).
        self.timing: dict[str, FaxTiming] = {}
        # Latency and bandwidth of every provider call (``sandbox.network``).
        self.network = Network()
        self._seq = itertools.count(1)
        self._ids = itertools.count(1000)
        self.lock = threading.Lock()

    # --- ids ------------------------------------------------------------------
    def new_id(self) -> int:
        return next(self._ids)

    # --- faults ---------------------------------------------------------------
    def add_fault(self, provider: str, operation: str, fault: Fault) -> None:
        self.faults.setdefault((provider, operation), []).append(fault)

    def clear_faults(self) -> None:
        """The provider recovers: no pending fault, and answers held late go out now."""
        self.faults.clear()
        self.recoveries += 1

    def take_fault(self, provider: str, operation: str, kinds: tuple[str, ...]) -> Fault | None:
        """The next pending fault of one of ``kinds`` for this operation, used up by one call."""
        queue = self.faults.get((provider, operation), [])
        for fault in queue:
            if fault.kind in kinds and fault.remaining > 0:
                fault.remaining -= 1
                if fault.remaining == 0:
                    queue.remove(fault)
                return fault
        return None

    def fax_plan(self, provider: str, document: bytes) -> Plan | None:
        """A fax-shaped plan for a new job carrying ``document`` (phases of ``sandbox.timing``),
        or None when the provider's jobs take the fixed ``job_duration``."""
        timing = self.timing.get(provider)
        if timing is None:
            return None
        with self.lock:
            return timing.plan(count_pages(document))

    def next_outcome(self, provider: str) -> str:
        queue = self.job_outcomes[provider]
        return queue.popleft() if queue else "success"

    # --- request log and interception ------------------------------------------
    async def intercept(
        self,
        provider: str,
        operation: str,
        request: Request,
        fields: dict[str, Any] | None = None,
    ) -> tuple[LoggedRequest, Response | None]:
        """Log the call and apply an ``error``, ``hang`` or ``late`` fault.

        Returns the log entry (set its ``status`` via ``answered``) and, when a fault answers
        instead of the handler, that response.
        """
        entry = LoggedRequest(
            seq=next(self._seq),
            at=self.clock.now(),
            provider=provider,
            operation=operation,
            method=request.method,
            path=request.url.path,
            query=dict(request.query_params),
            headers={k.lower(): v for k, v in request.headers.items()},
            fields=fields or {},
        )
        self.log.append(entry)
        late = self.take_fault(provider, operation, ("late",))
        held = LATE_ANSWER.get()
        if late is not None and held is not None:
            held.append(late.seconds)
        hang = self.take_fault(provider, operation, ("hang",))
        if hang is not None:
            await asyncio.sleep(hang.seconds)
        error = self.take_fault(provider, operation, ("error",))
        if error is not None:
            entry.status = error.status
            body = (
                error.body
                or f"<html><body><h1>{error.status} Service Unavailable</h1></body></html>"
            )
            return entry, Response(body, status_code=error.status, media_type="text/html")
        return entry, None

    def answered(self, entry: LoggedRequest, response: Response) -> Response:
        entry.status = response.status_code
        return response

    def requests(
        self, provider: str | None = None, operation: str | None = None
    ) -> list[LoggedRequest]:
        return [
            r
            for r in list(self.log)
            if (provider is None or r.provider == provider)
            and (operation is None or r.operation == operation)
        ]

    # --- download body faults ----------------------------------------------------
    def download_fault(self, provider: str, operation: str) -> Fault | None:
        """The next pending fault of a download's body (truncate, drip, not_pdf, expired)."""
        return self.take_fault(provider, operation, DOWNLOAD_FAULTS)

    def download_body(self, provider: str, operation: str, pdf: bytes) -> Response | bytes:
        """The bytes a download should send, or the response a fault gives instead."""
        fault = self.download_fault(provider, operation)
        if fault is None:
            return pdf
        if fault.kind == "expired":
            return Response("Not Found", status_code=404, media_type="text/plain")
        if fault.kind == "not_pdf":
            return NOT_PDF
        return faulty_body(fault, pdf, "application/pdf")

    # --- state for tests ---------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self.log.clear()
            self.clear_faults()
            for p in PROVIDERS:
                self.inbound[p].clear()
                self.jobs[p].clear()
                self.job_outcomes[p].clear()
                self.job_duration[p] = 4.0
            self.timing.clear()
            self.network.reset()
            self.clock = Clock(1.0)  # real time again, whatever a test did to the clock


NOT_PDF = b"<html><body>Your session has expired. Please log in.</body></html>"


def faulty_body(fault: Fault, whole: bytes, media_type: str) -> Response:
    """``whole`` as a ``truncate`` or ``drip`` fault sends it, announcing its full length."""
    headers = {"content-length": str(len(whole))}
    if fault.kind == "drip":
        return StreamingResponse(
            _drip(whole, fault.seconds), media_type=media_type, headers=headers
        )
    # truncate: half of it; the server closes the connection when the answer ends short
    return Response(whole[: len(whole) // 2], media_type=media_type, headers=headers)


async def _drip(whole: bytes, seconds: float) -> AsyncIterator[bytes]:
    piece = max(1, -(-len(whole) // DRIP_PIECES))
    for start in range(0, len(whole), piece):
        if start:
            await asyncio.sleep(seconds / DRIP_PIECES)
        yield whole[start : start + piece]
