"""Sandbox stand-in for CallerIP's fax API, written from callerip.txt and the docs README.

Operations (paths below the mount ``/callerip``):
- ``POST /api/fax/send`` (operation ``send``): multipart ``token``, ``number`` (10 digits),
  ``file`` (a PDF), ``sendCover`` (``N``; ``Y`` also takes ``coverFrom``, ``coverTo``,
  ``coverSubject``, ``coverMessage``) -> ``{"uuid", "status": "Loading"}``.
- ``GET /api/fax/status?token=&uuid=`` (operation ``status``) -> ``{"status"}``.

CallerIP publishes no error format. This stand-in answers ``{"error": "<words>"}`` with 401 for
a missing or unknown token, 400 for a missing or invalid parameter (a number that is not 10
digits, a file that is not a PDF) and 404 for a uuid it does not know under that token.

A job passes through Loading, Converting, Pending, Sending and ends Success or Failed over
``sb.job_duration["callerip"]`` seconds of sandbox clock; its ending comes from
``sb.next_outcome`` (every outcome but ``success`` ends Failed: CallerIP gives no reason); with
``sandbox.timing``'s fax-shaped model on, the plan and its ending come from that model.
"""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.core import Job, Sandbox
from sandbox.timing import FAILED, QUEUED, SENDING, SUCCESS, Plan

PROVIDER = "callerip"

VALID_TOKEN = "callerip-sandbox-line-token"
OTHER_TOKEN = "callerip-sandbox-other-line"  # a second fax line: sees only its own faxes
TOKENS = (VALID_TOKEN, OTHER_TOKEN)
NUMBER = re.compile(r"^[0-9]{10}$")
# Share of the job's duration at which each state begins.
PLAN = (("Loading", 0.0), ("Converting", 0.15), ("Pending", 0.35), ("Sending", 0.55))


# sandbox.timing's phases in CallerIP's words; a job's first wait in the queue is spelled out.
WORDS = {QUEUED: "Pending", SENDING: "Sending", SUCCESS: "Success", FAILED: "Failed"}
FIRST_WAIT = (("Loading", 0.0), ("Converting", 1.0), ("Pending", 2.0))


def _words(plan: Plan) -> list[tuple[str, float]]:
    words = [(WORDS[phase], at) for phase, at in plan[1:]]
    return [*FIRST_WAIT, *words]


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _token_ok(value: str) -> bool:
    return any(secrets.compare_digest(value.encode(), known.encode()) for known in TOKENS)


def routes(sb: Sandbox) -> list[BaseRoute]:
    async def send_fax(request: Request) -> Response:
        form = await request.form()
        fields: dict[str, Any] = {}
        upload: UploadFile | None = None
        content = b""
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                data = await value.read()
                fields[key] = {"name": value.filename, "size": len(data)}
                if key == "file":
                    upload, content = value, data
            else:
                fields[key] = value
        entry, fault = await sb.intercept(PROVIDER, "send", request, fields)
        if fault is not None:
            return fault
        return sb.answered(entry, _send(fields, upload, content))

    def _send(fields: dict[str, Any], upload: UploadFile | None, content: bytes) -> Response:
        token = fields.get("token")
        if not isinstance(token, str) or not token:
            return _error("Missing token", 401)
        if not _token_ok(token):
            return _error("Invalid token", 401)
        number = fields.get("number")
        if not isinstance(number, str) or not number:
            return _error("Missing parameter: number", 400)
        if not NUMBER.match(number):
            return _error(f"Invalid number {number!r}: a fax number has 10 digits", 400)
        if upload is None:
            return _error("Missing parameter: file", 400)
        if not content.startswith(b"%PDF-"):
            return _error("Invalid file: only PDF documents can be sent", 400)
        cover = fields.get("sendCover")
        if cover not in ("N", "Y"):
            return _error("Missing or invalid parameter: sendCover (Y or N)", 400)
        if cover == "Y" and not (fields.get("coverTo") and fields.get("coverFrom")):
            return _error("A cover page needs coverFrom and coverTo", 400)
        outcome = sb.next_outcome(PROVIDER)
        shaped = sb.fax_plan(PROVIDER, content)
        if shaped is not None:  # timings like a real fax's (sandbox.timing)
            plan = _words(shaped)
            outcome = "success" if plan[-1][0] == "Success" else "failed"
        else:
            duration = sb.job_duration[PROVIDER]
            plan = [(word, share * duration) for word, share in PLAN]
            plan.append(("Success" if outcome == "success" else "Failed", duration))
        job_id = str(uuid.UUID(int=sb.random.getrandbits(128), version=4))
        with sb.lock:
            sb.jobs[PROVIDER][job_id] = Job(
                id=job_id,
                provider=PROVIDER,
                to_number=number,
                submitted_at=sb.clock.now(),
                plan=plan,
                document=content,
                extra={"token": token, "outcome": outcome, "cover": cover},
            )
        return JSONResponse({"uuid": job_id, "status": plan[0][0]})

    async def fax_status(request: Request) -> Response:
        fields: dict[str, Any] = dict(request.query_params)
        entry, fault = await sb.intercept(PROVIDER, "status", request, fields)
        if fault is not None:
            return fault
        token = fields.get("token", "")
        job_id = fields.get("uuid", "")
        if not token:
            answer = _error("Missing token", 401)
        elif not _token_ok(token):
            answer = _error("Invalid token", 401)
        elif not job_id:
            answer = _error("Missing parameter: uuid", 400)
        else:
            with sb.lock:
                job = sb.jobs[PROVIDER].get(job_id)
            if job is None or job.extra.get("token") != token:
                answer = _error("Fax not found", 404)
            else:
                answer = JSONResponse({"status": job.state_at(sb.clock.now())})
        return sb.answered(entry, answer)

    return [
        Route("/api/fax/send", send_fax, methods=["POST"]),
        Route("/api/fax/status", fax_status, methods=["GET"]),
    ]
