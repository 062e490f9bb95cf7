"""Sandbox stand-in for E-MetroTel UCX Virtual Fax, written from ``provider-docs/ucx.txt``.

All eleven methods under ``/restv1/efax/`` (mounted at ``/ucx``): token (HTTP Basic with
CLIENT_ID / CLIENT_SECRET → TOKEN), faxlist, faxusage, filesend (multipart), jobstatus, jobcancel
(PUT JSON), activejobs, recordcount, recordsget, recorddelete (PUT JSON), filedownload.
Fault-injection operation names are the method names in lower case.

Errors as the docs describe them: 401 ``{"result":"Error","message":"Authentication failed"}``
for a missing or wrong token (or Basic credentials), 400 with ``result``/``message`` for missing
or invalid parameters, 404 ``{"result":"Error","message":"Job not found"}`` for an unknown job,
and Starlette's plain 404/405 for unknown paths and methods.

Outbound jobs (``TX<n>``) pass through HylaFAX states over ``sb.job_duration["ucx"]`` seconds:
``Pending`` → ``Active`` ("Dialing", "Sending page …") → ``Done``/``Failed``. Outcomes:

- ``success``: one attempt, Done.
- ``failed``: one attempt, Failed with "No response to MPS repeated 3 tries".
- ``busy``: three attempts with ``Sleeping`` "Busy signal detected" between them, then Failed
  "Busy signal detected" (attempts 3).
- ``no_answer``: two attempts with ``Sleeping`` "No answer from remote" between, then Failed.
- ``bad_number``: one dial, Failed "Invalid dialing command" (HylaFAX does not redial it).
- ``busy_then_success``: busy, Sleeping, redial, Done (attempts 2).
- ``blocked_then_success``: ``Blocked`` (waiting behind another job to the number), then as
  success.

A cancelled job ends ``Failed`` with "Job aborted by request". A job is listed by activejobs TX
until its final state; jobstatus keeps knowing it for another ``job_duration`` seconds (the
HylaFAX done queue) and then answers "Job not found"; from its final state on it is a TX record
(recordsget / recordcount / recorddelete / filedownload serve its document). Records are
returned oldest first, as in the docs' example. Received faxes are stored with
``store_inbound`` as ``RX<n>`` records; a received fax given ``expires_in`` disappears then.
"""

from __future__ import annotations

import base64
import json
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.core import Job, LoggedRequest, Sandbox, StoredFax

CLIENT_ID = "ucx-client-id"
CLIENT_SECRET = "ucx-client-secret"
TOKEN = "1f0ef7d3a547ce0dd5ed5f07ad65bd65"
FAX_ID = "2"

FAXES: list[dict[str, str]] = [
    {"id": "1", "extension": "599", "name": "Sales", "cidnumber": "14695551111",
     "cidname": "EMT Sales"},
    {"id": "2", "extension": "598", "name": "Support", "cidnumber": "14695551112",
     "cidname": "EMT Support"},
]  # fmt: skip
DEVICES = {"1": "ttyIAX1", "2": "ttyIAX2"}
MAX_DIALS = 12

OUTCOMES = (
    "success",
    "failed",
    "busy",
    "no_answer",
    "bad_number",
    "busy_then_success",
    "blocked_then_success",
)


@dataclass(frozen=True)
class Phase:
    """One step of a job: from ``at`` (fraction of the job's duration) on."""

    at: float
    state: str
    text: str = ""
    attempts: int = 0
    sent: int = 0


def _phases(outcome: str, pages: int) -> list[Phase]:
    def attempt(start: float, n: int, sent_first: bool = True) -> list[Phase]:
        out = [Phase(start, "Active", "Dialing", n, 0)]
        if sent_first:
            out.append(Phase(start + 0.05, "Active", f"Sending page 1/{pages}", n, 0))
        return out

    busy = "Busy signal detected"
    if outcome == "failed":
        return [
            Phase(0.0, "Pending"),
            *attempt(0.2, 1),
            Phase(1.0, "Failed", "No response to MPS repeated 3 tries", 1, 0),
        ]
    if outcome == "busy":
        return [
            Phase(0.0, "Pending"),
            Phase(0.1, "Active", "Dialing", 1),
            Phase(0.15, "Sleeping", busy, 1),
            Phase(0.45, "Active", "Dialing", 2),
            Phase(0.5, "Sleeping", busy, 2),
            Phase(0.8, "Active", "Dialing", 3),
            Phase(1.0, "Failed", busy, 3),
        ]
    if outcome == "no_answer":
        text = "No answer from remote"
        return [
            Phase(0.0, "Pending"),
            Phase(0.1, "Active", "Dialing", 1),
            Phase(0.3, "Sleeping", text, 1),
            Phase(0.7, "Active", "Dialing", 2),
            Phase(1.0, "Failed", text, 2),
        ]
    if outcome == "bad_number":
        return [
            Phase(0.0, "Pending"),
            Phase(0.3, "Active", "Dialing", 1),
            Phase(1.0, "Failed", "Invalid dialing command", 1),
        ]
    if outcome == "busy_then_success":
        return [
            Phase(0.0, "Pending"),
            Phase(0.1, "Active", "Dialing", 1),
            Phase(0.15, "Sleeping", busy, 1),
            *attempt(0.5, 2),
            Phase(1.0, "Done", "", 2, pages),
        ]
    if outcome == "blocked_then_success":
        return [
            Phase(0.0, "Blocked", "Blocked by concurrent jobs"),
            *attempt(0.4, 1),
            Phase(1.0, "Done", "", 1, pages),
        ]
    return [Phase(0.0, "Pending"), *attempt(0.2, 1), Phase(1.0, "Done", "", 1, pages)]


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"result": "Error", "message": message}, status_code=status)


def _auth_failed() -> JSONResponse:
    return _error("Authentication failed", 401)


def _bearer_ok(request: Request) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and token.strip() == TOKEN


def _basic_ok(request: Request) -> bool:
    header = request.headers.get("authorization", "")
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(encoded.strip()).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return user == CLIENT_ID and password == CLIENT_SECRET


def _count_pages(pdf: bytes) -> int:
    return max(1, len(re.findall(rb"/Type\s*/Page(?!s)", pdf)))


def _utc(ts: float, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return time.strftime(fmt, time.gmtime(ts))


def _job_number(job_id: str) -> str:
    return re.sub(r"^(TX|RX)", "", job_id)


class Ucx:
    """The UCX's state views over ``sb`` (jobs in sb.jobs["ucx"], received in sb.inbound)."""

    def __init__(self, sb: Sandbox) -> None:
        self.sb = sb

    # --- job views ---------------------------------------------------------------
    def phase(self, job: Job, now: float) -> Phase:
        phases: list[Phase] = job.extra["phases"]
        duration: float = job.extra["duration"]
        current = phases[0]
        for p in phases:
            if now >= job.submitted_at + p.at * duration:
                current = p
        return current

    def is_final(self, job: Job, now: float) -> bool:
        return self.phase(job, now).state in ("Done", "Failed")

    def in_queue(self, job: Job, now: float) -> bool:
        """Known to jobstatus: until the done queue is cleaned, job_duration after the end."""
        return not job.extra.get("deleted") and now < job.final_at() + job.extra["duration"]

    def tx_jobs(self) -> list[Job]:
        return [j for j in self.sb.jobs["ucx"].values() if not j.extra.get("deleted")]

    def rx_faxes(self, now: float) -> list[StoredFax]:
        return [f for f in self.sb.inbound["ucx"].values() if _kept(f, now)]

    def job_fields(self, job: Job, now: float) -> dict[str, Any]:
        p = self.phase(job, now)
        fax_id = str(job.extra["fax_id"])
        next_try = now if p.state != "Sleeping" else now + 60
        return {
            "jobid": job.id,
            "time": int(job.submitted_at),
            "time_to_send": _utc(next_try, "%H:%M"),
            "destination": job.to_number,
            "state": p.state,
            "sent_pages": str(p.sent),
            "total_pages": str(job.extra["pages"]),
            "ndials": str(p.attempts),
            "totdials": str(p.attempts),
            "maxdials": str(MAX_DIALS),
            "attempts": str(p.attempts),
            "max_attempts": str(MAX_DIALS),
            "max_retries": str(MAX_DIALS),
            "duration": str(int(max(0.0, min(now, job.final_at()) - job.submitted_at))),
            "status_text": p.text,
            "requestor": "API",
            "modem": DEVICES.get(fax_id, "ttyIAX0"),
        }

    def tx_record(self, job: Job, now: float) -> dict[str, Any]:
        fields = self.job_fields(job, now)
        fax = next((f for f in FAXES if f["id"] == job.extra["fax_id"]), FAXES[0])
        return {
            "jobid": job.id,
            "time": fields["time"],
            "phone_number": job.to_number,
            "cid_name": fax["cidname"],
            "station_id": "",
            "state": fields["state"],
            "sent_pages": fields["sent_pages"],
            "total_pages": fields["total_pages"],
            "attempts": fields["attempts"],
            "duration": fields["duration"],
            "status_text": fields["status_text"],
            "requestor": "API",
            "modem": fields["modem"],
        }

    def tx_records(self, now: float) -> list[dict[str, Any]]:
        jobs = sorted(
            (j for j in self.tx_jobs() if self.is_final(j, now)),
            key=lambda j: (j.submitted_at, int(_job_number(j.id))),
        )
        return [self.tx_record(j, now) for j in jobs]

    def rx_records(self, now: float) -> list[dict[str, Any]]:
        faxes = sorted(self.rx_faxes(now), key=lambda f: (f.received_at, int(f.id)))
        return [rx_record(f) for f in faxes]


def _kept(fax: StoredFax, now: float) -> bool:
    return fax.expires_at is None or now < fax.expires_at


def rx_record(fax: StoredFax) -> dict[str, Any]:
    return {
        "jobid": f"RX{fax.id}",
        "time": int(fax.received_at),
        "phone_number": fax.from_number,
        "cid_name": fax.from_number,
        "station_id": str(fax.extra.get("station_id", "Support")),
        "state": "Done",
        "sent_pages": str(fax.pages),
        "total_pages": str(fax.pages),
        "attempts": "0",
        "duration": "18",
        "status_text": "",
        "requestor": "",
        "modem": DEVICES[FAX_ID],
    }


def store_inbound(sb: Sandbox, fax: StoredFax, base: str) -> dict[str, object]:
    """Store a received fax; returns its RecordsGet RX record."""
    with sb.lock:
        sb.inbound["ucx"][f"RX{fax.id}"] = fax
    return dict(rx_record(fax))


def routes(sb: Sandbox) -> list[BaseRoute]:
    ucx = Ucx(sb)

    def done(entry: LoggedRequest, response: Response) -> Response:
        return sb.answered(entry, response)

    async def put_fields(request: Request) -> dict[str, Any] | None:
        try:
            data = json.loads(await request.body() or b"null")
        except (ValueError, UnicodeDecodeError):
            return None
        return data if isinstance(data, dict) else None

    def kind_param(request: Request) -> str | None:
        kind = request.query_params.get("type", "")
        return kind if kind in ("TX", "RX") else None

    async def token(request: Request) -> Response:
        entry, fault = await sb.intercept("ucx", "token", request)
        if fault is not None:
            return fault
        if not _basic_ok(request):
            return done(entry, _auth_failed())
        return done(entry, JSONResponse({"result": "Success", "token": TOKEN}))

    async def faxlist(request: Request) -> Response:
        entry, fault = await sb.intercept("ucx", "faxlist", request)
        if fault is not None:
            return fault
        if not _bearer_ok(request):
            return done(entry, _auth_failed())
        return done(entry, JSONResponse({"result": "Success", "count": len(FAXES), "faxes": FAXES}))

    async def faxusage(request: Request) -> Response:
        entry, fault = await sb.intercept("ucx", "faxusage", request)
        if fault is not None:
            return fault
        if not _bearer_ok(request):
            return done(entry, _auth_failed())
        wanted = request.query_params.get("fax_id")
        if wanted is not None and wanted not in DEVICES:
            return done(entry, _error("Invalid fax ID", 400))
        now = sb.clock.now()
        faxes = []
        for fax in FAXES:
            if wanted and fax["id"] != wanted:
                continue
            count = sum(
                1
                for j in ucx.tx_jobs()
                if j.extra["fax_id"] == fax["id"] and not ucx.is_final(j, now)
            )
            state = "Sending" if count else "Running and idle"
            faxes.append({"id": fax["id"], "state": state, "jobCount": count})
        return done(entry, JSONResponse({"result": "Success", "count": len(FAXES), "faxes": faxes}))

    async def filesend(request: Request) -> Response:
        try:
            form = await request.form()
        except Exception:  # an unparseable body: logged, then refused below
            form = None
        fields: dict[str, Any] = {}
        upload: UploadFile | None = None
        if form is not None:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    upload = value if key == "attachment" else upload
                    fields[key] = {"filename": value.filename, "size": value.size}
                else:
                    fields[key] = value
        entry, fault = await sb.intercept("ucx", "filesend", request, fields)
        if fault is not None:
            return fault
        if not _bearer_ok(request):
            return done(entry, _auth_failed())
        if form is None:
            return done(entry, _error("Invalid request: multipart form data expected", 400))
        for name in ("fax_id", "destination"):
            if not str(fields.get(name, "")).strip():
                return done(entry, _error(f"Missing required parameter: {name}", 400))
        if upload is None:
            return done(entry, _error("Missing required parameter: attachment", 400))
        fax_id = str(fields["fax_id"]).strip()
        if fax_id not in DEVICES:
            return done(entry, _error("Invalid fax ID", 400))
        destination = str(fields["destination"]).strip()
        if not re.fullmatch(r"[0-9]{2,24}", destination):
            return done(entry, _error("Invalid destination", 400))
        document = await upload.read()
        if not document:
            return done(entry, _error("Invalid attachment: empty file", 400))
        outcome = sb.next_outcome("ucx")
        pages = _count_pages(document)
        duration = sb.job_duration["ucx"]
        phases = _phases(outcome, pages)
        job_id = f"TX{sb.new_id()}"
        job = Job(
            id=job_id,
            provider="ucx",
            to_number=destination,
            submitted_at=sb.clock.now(),
            plan=[(p.state, p.at * duration) for p in phases],
            document=document,
            extra={
                "phases": phases,
                "duration": duration,
                "pages": pages,
                "fax_id": fax_id,
                "outcome": outcome,
                "filename": upload.filename or "document",
            },
        )
        with sb.lock:
            sb.jobs["ucx"][job_id] = job
        body = {
            "result": "Success",
            "device": DEVICES[fax_id],
            "destination": destination,
            "job_id": job_id,
        }
        return done(entry, JSONResponse(body))

    async def jobstatus(request: Request) -> Response:
        entry, fault = await sb.intercept("ucx", "jobstatus", request)
        if fault is not None:
            return fault
        if not _bearer_ok(request):
            return done(entry, _auth_failed())
        job_id = request.query_params.get("job_id", "").strip()
        if not job_id:
            return done(entry, _error("Missing required parameter: job_id", 400))
        now = sb.clock.now()
        job = sb.jobs["ucx"].get(job_id)
        if job is None or not ucx.in_queue(job, now):
            return done(entry, _error("Job not found", 404))
        f = ucx.job_fields(job, now)
        status = {
            "time": _utc(job.submitted_at),
            "destination": f["destination"],
            "state": f["state"],
            "sent_pages": f["sent_pages"],
            "total_pages": f["total_pages"],
            "attempts": f["attempts"],
            "max_retries": f["max_retries"],
            "time_to_send": f["time_to_send"],
            "duration": f["duration"],
            "status_text": f["status_text"],
        }
        return done(entry, JSONResponse({"result": "Success", "status": status}))

    async def jobcancel(request: Request) -> Response:
        data = await put_fields(request)
        entry, fault = await sb.intercept("ucx", "jobcancel", request, data or {})
        if fault is not None:
            return fault
        if not _bearer_ok(request):
            return done(entry, _auth_failed())
        if data is None:
            return done(entry, _error("Invalid request: JSON data expected", 400))
        job_id = str(data.get("job_id") or "").strip()
        if not job_id:
            return done(entry, _error("Missing required parameter: job_id", 400))
        if job_id.startswith("RX"):
            return done(entry, _error("Receive jobs cannot be cancelled", 400))
        now = sb.clock.now()
        with sb.lock:
            job = sb.jobs["ucx"].get(job_id)
            if job is None or not ucx.in_queue(job, now):
                return done(entry, _error("Job not found", 404))
            number = _job_number(job_id)
            if ucx.is_final(job, now):
                message = f"Job {number} not removed: job already done"
                return done(entry, _error(message, 400))
            current = ucx.phase(job, now)
            offset = now - job.submitted_at
            duration: float = job.extra["duration"]
            kept = [p for p in job.extra["phases"] if p.at * duration <= offset]
            end = Phase(offset / duration if duration else 0.0, "Failed",
                        "Job aborted by request", current.attempts, current.sent)  # fmt: skip
            job.extra["phases"] = [*kept, end]
            job.plan = [(p.state, p.at * duration) for p in job.extra["phases"]]
            job.cancelled_at = now
        return done(entry, JSONResponse({"result": "Success", "status": f"Job {number} removed."}))

    async def activejobs(request: Request) -> Response:
        entry, fault = await sb.intercept("ucx", "activejobs", request)
        if fault is not None:
            return fault
        if not _bearer_ok(request):
            return done(entry, _auth_failed())
        kind = kind_param(request)
        if kind is None:
            return done(entry, _error("Invalid or missing parameter: type (TX or RX)", 400))
        now = sb.clock.now()
        jobs = []
        if kind == "TX":
            active = (j for j in ucx.tx_jobs() if not ucx.is_final(j, now))
            jobs = [ucx.job_fields(j, now) for j in sorted(active, key=lambda j: j.submitted_at)]
        body = {"result": "Success", "count": len(jobs), "list": jobs}
        return done(entry, JSONResponse(body))

    def records(kind: str) -> list[dict[str, Any]]:
        now = sb.clock.now()
        return ucx.tx_records(now) if kind == "TX" else ucx.rx_records(now)

    async def recordcount(request: Request) -> Response:
        entry, fault = await sb.intercept("ucx", "recordcount", request)
        if fault is not None:
            return fault
        if not _bearer_ok(request):
            return done(entry, _auth_failed())
        kind = kind_param(request)
        if kind is None:
            return done(entry, _error("Invalid or missing parameter: type (TX or RX)", 400))
        return done(entry, JSONResponse({"result": "Success", "count": len(records(kind))}))

    async def recordsget(request: Request) -> Response:
        entry, fault = await sb.intercept("ucx", "recordsget", request)
        if fault is not None:
            return fault
        if not _bearer_ok(request):
            return done(entry, _auth_failed())
        kind = kind_param(request)
        if kind is None:
            return done(entry, _error("Invalid or missing parameter: type (TX or RX)", 400))
        items = records(kind)
        limit_text = request.query_params.get("limit")
        if limit_text is not None:
            offset_text = request.query_params.get("offset", "0")
            if not limit_text.isdigit() or not offset_text.isdigit():
                return done(entry, _error("Invalid parameter: limit and offset are numbers", 400))
            offset = int(offset_text)
            items = items[offset : offset + int(limit_text)]
        body = {"result": "Success", "count": len(items), "records": items}
        return done(entry, JSONResponse(body))

    async def recorddelete(request: Request) -> Response:
        data = await put_fields(request)
        entry, fault = await sb.intercept("ucx", "recorddelete", request, data or {})
        if fault is not None:
            return fault
        if not _bearer_ok(request):
            return done(entry, _auth_failed())
        if data is None:
            return done(entry, _error("Invalid request: JSON data expected", 400))
        job_id = str(data.get("job_id") or "").strip()
        if not job_id:
            return done(entry, _error("Missing required parameter: job_id", 400))
        now = sb.clock.now()
        with sb.lock:
            if job_id.startswith("RX"):
                fax = sb.inbound["ucx"].get(job_id)
                if fax is None or not _kept(fax, now):
                    return done(entry, _error("Job not found", 404))
                del sb.inbound["ucx"][job_id]
            else:
                job = sb.jobs["ucx"].get(job_id)
                if job is None or job.extra.get("deleted") or not ucx.is_final(job, now):
                    return done(entry, _error("Job not found", 404))
                job.extra["deleted"] = True
        return done(entry, JSONResponse({"result": "Success", "status": f"ID {job_id} deleted"}))

    async def filedownload(request: Request) -> Response:
        entry, fault = await sb.intercept("ucx", "filedownload", request)
        if fault is not None:
            return fault
        if not _bearer_ok(request):
            return done(entry, _auth_failed())
        job_id = request.query_params.get("job_id", "").strip()
        if not job_id:
            return done(entry, _error("Missing required parameter: job_id", 400))
        now = sb.clock.now()
        pdf: bytes | None = None
        if job_id.startswith("RX"):
            fax = sb.inbound["ucx"].get(job_id)
            if fax is not None and _kept(fax, now):
                pdf = fax.pdf
        else:
            job = sb.jobs["ucx"].get(job_id)
            if job is not None and not job.extra.get("deleted"):
                pdf = job.document
        if pdf is None:
            return done(entry, _error("Job not found", 404))
        body = sb.download_body("ucx", "filedownload", pdf)
        if isinstance(body, Response):
            return done(entry, body)
        headers = {"content-disposition": f'attachment; filename="{job_id}.pdf"'}
        return done(entry, Response(body, media_type="application/pdf", headers=headers))

    base = "/restv1/efax"
    return [
        Route(f"{base}/token", token, methods=["GET"]),
        Route(f"{base}/faxlist", faxlist, methods=["GET"]),
        Route(f"{base}/faxusage", faxusage, methods=["GET"]),
        Route(f"{base}/filesend", filesend, methods=["POST"]),
        Route(f"{base}/jobstatus", jobstatus, methods=["GET"]),
        Route(f"{base}/jobcancel", jobcancel, methods=["PUT"]),
        Route(f"{base}/activejobs", activejobs, methods=["GET"]),
        Route(f"{base}/recordcount", recordcount, methods=["GET"]),
        Route(f"{base}/recordsget", recordsget, methods=["GET"]),
        Route(f"{base}/recorddelete", recorddelete, methods=["PUT"]),
        Route(f"{base}/filedownload", filedownload, methods=["GET"]),
    ]
