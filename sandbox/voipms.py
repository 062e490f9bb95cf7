"""Sandbox stand-in for the voip.ms REST API, the fax methods faxrelay calls (from
``provider-docs/voipms.txt``): ``sendFaxMessage``, ``getFaxMessages``, ``getFaxMessagePDF``,
``deleteFaxMessage``, ``getFaxNumbersInfo`` and ``getFaxFolders``. Any other method answers
``invalid_method``.

One endpoint, ``/api/v1/rest.php`` (under ``/voipms``), GET with a query string or POST
urlencoded; parameters ``api_username``, ``api_password``, ``method`` plus the method's own.
Every answer is HTTP 200 with JSON whose ``status`` is ``success`` or an error code.

What the docs leave open, decided here:
- dates (``getFaxMessages``) are written in UTC, ``YYYY-MM-DD HH:MM:SS``; a range's
  ``to - from`` may be at most 92 days;
- an outgoing fax is listed in ``SENT`` from the moment it is accepted, its ``status`` moving
  ``QUEUED`` → ``SENDING`` → ``SUCCESS`` or ``FAILED`` (the reason in ``msg``: ``BUSY``,
  ``NO ANSWER``, ``INVALID NUMBER``);
- error codes for cases the docs name no code for: ``missing_method``, ``invalid_method``,
  ``invalid_did``, ``invalid_email``;
- the url_callback body: fields ``id``, ``from``, ``to``, ``date``, ``pages`` and a file part
  ``pdf`` (multipart), or the same fields urlencoded with the PDF in base64.
"""

from __future__ import annotations

import base64
import binascii
import re
import urllib.parse
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.core import NOT_PDF, Job, Sandbox, StoredFax, faulty_body

NAME = "voipms"
PATH = "/api/v1/rest.php"

API_USERNAME = "sandbox@faxrelay.test"
API_PASSWORD = "sandbox-voipms-password"
FAX_NUMBER = "5551234567"  # the account's first fax number: a valid from_number
OTHER_FAX_NUMBER = "5557654321"
MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_RANGE_DAYS = 92
FAX_PRICE = 0.0100  # per page
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"

_NANP = re.compile(r"^[2-9]\d{2}[2-9]\d{6}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")

# Final word and msg of an outgoing fax per sandbox outcome.
OUTCOMES: dict[str, tuple[str, str]] = {
    "success": ("SUCCESS", ""),
    "failed": ("FAILED", "FAX TRANSMISSION FAILED"),
    "busy": ("FAILED", "BUSY"),
    "no_answer": ("FAILED", "NO ANSWER"),
    "bad_number": ("FAILED", "INVALID NUMBER"),
}


class _Fail(Exception):
    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


@dataclass
class VoipMsState:
    """The account's configuration beyond faxes (numbers, folders, balance)."""

    numbers: list[dict[str, str]] = field(default_factory=list)
    folders: list[dict[str, str]] = field(default_factory=list)
    balance: float = 100.0
    next_id: int = 5000

    def new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)


def _fresh_state() -> VoipMsState:
    st = VoipMsState()
    for did, city, state in (
        (FAX_NUMBER, "HALF MOON BAY", "CA"),
        (OTHER_FAX_NUMBER, "ALABASTER", "AL"),
    ):
        st.numbers.append(
            {
                "id": st.new_id(),
                "did": did,
                "description": f"United States, {state}, {city}",
                "state": state,
                "city": city,
                "country": "United States",
                "email_enabled": "0",
                "email": "",
                "url_enabled": "0",
                "url": "",
                "retry": "0",
                "attach_file": "0",
            }
        )
    for name in ("INBOX", "SENT", "TRASH"):
        st.folders.append({"id": st.new_id(), "name": name})
    return st


_STATES: weakref.WeakKeyDictionary[Sandbox, VoipMsState] = weakref.WeakKeyDictionary()


def state(sb: Sandbox) -> VoipMsState:
    """The voip.ms account state of this sandbox (numbers, folders, …)."""
    if sb not in _STATES:
        _STATES[sb] = _fresh_state()
    return _STATES[sb]


def reset_state(sb: Sandbox) -> VoipMsState:
    _STATES[sb] = _fresh_state()
    return _STATES[sb]


# --- helpers ----------------------------------------------------------------------------------
def _stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime(DATE_FORMAT)


def _require(p: dict[str, str], *names: str, code: str = "missing_params") -> None:
    for name in names:
        if not p.get(name, "").strip():
            raise _Fail(code)


def _testing(p: dict[str, str]) -> bool:
    return p.get("test", "").strip().lower() in ("1", "true", "yes")


def _pages(document: bytes) -> int:
    if document.startswith(b"%PDF"):
        return max(1, len(re.findall(rb"/Type\s*/Page(?![s\w])", document)))
    return 1


def _file_format(data: bytes) -> str | None:
    if data.startswith(b"%PDF"):
        return "pdf"
    if data.startswith((b"II*\x00", b"MM\x00*")):
        return "tif"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "txt" if text and all(c.isprintable() or c in "\r\n\t\f" for c in text) else None


def _decode_file(value: str) -> bytes:
    return base64.b64decode("".join(value.split()), validate=True)


def _callerid(fax: StoredFax) -> str:
    name = str(fax.extra.get("caller_name", "") or "")
    return f"{name} <{fax.from_number}>" if name else fax.from_number


def _inbox_entry(fax: StoredFax) -> dict[str, str]:
    return {
        "id": fax.id,
        "folder": str(fax.extra.get("folder", "INBOX")),
        "date": _stamp(fax.received_at),
        "callerid": _callerid(fax),
        "stationid": fax.from_number,
        "destination": fax.to_number,
        "description": "INBOUND FAX",
        "pages": str(fax.pages),
        "duration": f"{fax.pages // 2}:{(fax.pages * 38) % 60:02d}",
        "status": "SUCCESS",
        "rate": "0.000",
        "total": "0.000",
        "msg": "",
    }


def _sent_entry(job: Job, now: float) -> dict[str, str]:
    word = job.state_at(now)
    final = now >= job.final_at()
    pages = int(job.extra.get("pages", 1))
    seconds = int(job.plan[-1][1]) if final else 0
    return {
        "id": job.id,
        "folder": str(job.extra.get("folder", "SENT")),
        "date": _stamp(job.submitted_at),
        "callerid": str(job.extra.get("from_number", "")),
        "stationid": str(job.extra.get("station_id", "") or job.extra.get("from_number", "")),
        "destination": job.to_number,
        "description": "OUTBOUND FAX",
        "pages": str(pages),
        "duration": f"{seconds // 60}:{seconds % 60:02d}",
        "status": word,
        "rate": f"{FAX_PRICE:.4f}",
        "total": f"{FAX_PRICE * pages:.4f}" if final else "0.0000",
        "msg": str(job.extra.get("final_msg", "")) if final else "",
    }


def _plan(outcome: str, duration: float) -> tuple[list[tuple[str, float]], str]:
    steps: list[tuple[str, float]] = [("QUEUED", 0.0), ("SENDING", duration * 0.25)]
    if "_then_" in outcome:  # e.g. busy_then_success: voip.ms redials within the job
        last = outcome.rpartition("_then_")[2]
        steps.append(("RETRYING", duration * 0.5))
        word, msg = OUTCOMES.get(last, ("FAILED", last.upper()))
        return [*steps, (word, duration)], msg or ""
    word, msg = OUTCOMES.get(outcome, ("FAILED", outcome.upper()))
    return [*steps, (word, duration)], msg


def _find_fax(sb: Sandbox, fax_id: str) -> StoredFax | Job | None:
    now = sb.clock.now()
    fax = sb.inbound[NAME].get(fax_id)
    if fax is not None and (fax.expires_at is None or fax.expires_at > now):
        return fax
    return sb.jobs[NAME].get(fax_id)


def _number(st: VoipMsState, did: str) -> dict[str, str]:
    for number in st.numbers:
        if number["did"] == did:
            return number
    raise _Fail("invalid_did")


def _day(value: str | None, default: date) -> date:
    if value is None or value == "":
        return default
    if not _DAY.match(value):
        raise _Fail("invalid_date")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise _Fail("invalid_date") from None


# --- methods ----------------------------------------------------------------------------------
def send_fax_message(sb: Sandbox, st: VoipMsState, p: dict[str, str]) -> dict[str, Any]:
    _require(p, "to_number", "from_name", "from_number")
    if not p.get("file", "").strip():
        raise _Fail("missing_file")
    try:
        document = _decode_file(p["file"])
    except (binascii.Error, ValueError):
        raise _Fail("no_base64file") from None
    if len(document) > MAX_FILE_BYTES:
        raise _Fail("exceeds_file_size")
    if _file_format(document) is None:
        raise _Fail("invalid_file")
    if not _NANP.match(p["to_number"]):
        raise _Fail("invalid_to_number")
    if p["from_number"] not in {n["did"] for n in st.numbers}:
        raise _Fail("invalid_from_number")
    pages = _pages(document)
    if st.balance < FAX_PRICE * pages:
        raise _Fail("non_sufficient_funds")
    if p.get("send_email_enabled") == "1" and not _EMAIL.match(p.get("send_email", "")):
        raise _Fail("invalid_email")
    if _testing(p):
        return {"status": "success"}
    plan, msg = _plan(sb.next_outcome(NAME), sb.job_duration[NAME])
    job = Job(
        id=str(sb.new_id()),
        provider=NAME,
        to_number=p["to_number"],
        submitted_at=sb.clock.now(),
        plan=plan,
        document=document,
        extra={
            "folder": "SENT",
            "from_number": p["from_number"],
            "from_name": p["from_name"],
            "station_id": p.get("station_id", ""),
            "pages": pages,
            "final_msg": msg,
        },
    )
    with sb.lock:
        sb.jobs[NAME][job.id] = job
        st.balance -= FAX_PRICE * pages
    return {"status": "success"}


def get_fax_messages(sb: Sandbox, st: VoipMsState, p: dict[str, str]) -> dict[str, Any]:
    now = sb.clock.now()
    today = datetime.fromtimestamp(now, UTC).date()
    folder = (p.get("folder") or "ALL").strip().upper()
    if folder != "ALL" and folder not in {f["name"].upper() for f in st.folders}:
        raise _Fail("invalid_folder")
    start, end = _day(p.get("from"), today), _day(p.get("to"), today)
    if start > end or (end - start).days > MAX_RANGE_DAYS:
        raise _Fail("invalid_daterange")
    entries = [
        _inbox_entry(fax)
        for fax in list(sb.inbound[NAME].values())
        if fax.expires_at is None or fax.expires_at > now
    ]
    entries += [_sent_entry(job, now) for job in list(sb.jobs[NAME].values())]
    wanted = p.get("id", "").strip()
    out = []
    for entry in entries:
        if wanted:
            if entry["id"] != wanted:
                continue
        elif not start <= date.fromisoformat(entry["date"][:10]) <= end:
            continue
        if folder != "ALL" and entry["folder"].upper() != folder:
            continue
        out.append(entry)
    if not out:
        return {"status": "no_message"}
    out.sort(key=lambda e: (e["date"], int(e["id"])), reverse=True)
    return {"status": "success", "faxes": out}


def get_fax_message_pdf(
    sb: Sandbox, st: VoipMsState, p: dict[str, str]
) -> dict[str, Any] | Response:
    _require(p, "id", code="missing_id")
    fax = _find_fax(sb, p["id"])
    if fax is None:
        raise _Fail("invalid_id")
    pdf = fax.pdf if isinstance(fax, StoredFax) else fax.document
    fault = sb.download_fault(NAME, "getFaxMessagePDF")
    if fault is not None and fault.kind == "expired":  # voip.ms no longer knows the message
        raise _Fail("invalid_id")
    if fault is not None and fault.kind == "not_pdf":
        pdf = NOT_PDF
    answer = {"status": "success", "message_base64": base64.b64encode(pdf).decode("ascii")}
    if fault is None or fault.kind == "not_pdf":
        return answer
    # truncate or drip: the whole JSON answer, cut short or sent slowly
    return faulty_body(fault, bytes(JSONResponse(answer).body), "application/json")


def delete_fax_message(sb: Sandbox, st: VoipMsState, p: dict[str, str]) -> dict[str, Any]:
    _require(p, "id", code="missing_id")
    if _find_fax(sb, p["id"]) is None:
        raise _Fail("invalid_id")
    if not _testing(p):
        with sb.lock:
            sb.inbound[NAME].pop(p["id"], None)
            sb.jobs[NAME].pop(p["id"], None)
    return {"status": "success"}


def get_fax_folders(sb: Sandbox, st: VoipMsState, p: dict[str, str]) -> dict[str, Any]:
    return {"status": "success", "folders": [dict(f) for f in st.folders]}


def get_fax_numbers_info(sb: Sandbox, st: VoipMsState, p: dict[str, str]) -> dict[str, Any]:
    if p.get("did"):
        return {"status": "success", "numbers": [dict(_number(st, p["did"]))]}
    return {"status": "success", "numbers": [dict(n) for n in st.numbers]}


Handler = Callable[[Sandbox, VoipMsState, dict[str, str]], dict[str, Any] | Response]

METHODS: dict[str, Handler] = {
    "deleteFaxMessage": delete_fax_message,
    "getFaxFolders": get_fax_folders,
    "getFaxMessagePDF": get_fax_message_pdf,
    "getFaxMessages": get_fax_messages,
    "getFaxNumbersInfo": get_fax_numbers_info,
    "sendFaxMessage": send_fax_message,
}


def _loggable(p: dict[str, str]) -> dict[str, Any]:
    fields: dict[str, Any] = dict(p)
    if "api_password" in fields:
        fields["api_password"] = "***"
    if "file" in fields:
        try:
            fields["file"] = f"<{len(_decode_file(p['file']))} bytes>"
        except (binascii.Error, ValueError):
            fields["file"] = f"<not base64: {len(p['file'])} characters>"
    return fields


def routes(sb: Sandbox) -> list[BaseRoute]:
    async def rest(request: Request) -> Response:
        params: dict[str, str] = dict(request.query_params)
        if request.method == "POST":
            content_type = request.headers.get("content-type", "")
            if content_type.startswith("multipart/form-data"):
                form = await request.form()
                params.update({k: v for k, v in form.items() if isinstance(v, str)})
            else:
                text = (await request.body()).decode("utf-8", "replace")
                params.update(urllib.parse.parse_qsl(text, keep_blank_values=True))
        method = params.get("method", "")
        entry, fault = await sb.intercept(NAME, method or "rest.php", request, _loggable(params))
        if fault is not None:
            return fault
        try:
            if not params.get("api_username") or not params.get("api_password"):
                raise _Fail("missing_credentials")
            if params["api_username"] != API_USERNAME or params["api_password"] != API_PASSWORD:
                raise _Fail("invalid_credentials")
            if not method:
                raise _Fail("missing_method")
            handler = METHODS.get(method)
            if handler is None:
                raise _Fail("invalid_method")
            answer = handler(sb, state(sb), params)
        except _Fail as failure:
            answer = {"status": failure.code}
        if isinstance(answer, Response):
            return sb.answered(entry, answer)
        return sb.answered(entry, JSONResponse(answer))

    return [Route(PATH, rest, methods=["GET", "POST"])]


# --- received faxes and the url_callback ----------------------------------------------------------
def store_inbound(sb: Sandbox, fax: StoredFax, base: str) -> dict[str, object]:
    """Keep a received fax in INBOX; the fields getFaxMessages lists for it."""
    fax.extra.setdefault("folder", "INBOX")
    with sb.lock:
        sb.inbound[NAME][fax.id] = fax
    return dict(_inbox_entry(fax))


def inbound_webhook(
    sb: Sandbox, fax_id: str, base: str, options: dict[str, Any]
) -> tuple[str, bytes]:
    """The url_callback POST for a received fax.

    Options: ``multipart`` (default True), ``with_pdf`` (default True; urlencoded bodies carry
    it in base64), ``with_id`` (default True; False leaves only from/to: reconcile).
    """
    fax = sb.inbound[NAME][fax_id]  # KeyError: no such fax
    fields: list[tuple[str, str]] = []
    if options.get("with_id", True):
        fields.append(("id", fax.id))
    fields += [
        ("from", _callerid(fax)),
        ("to", fax.to_number),
        ("date", _stamp(fax.received_at)),
        ("pages", str(fax.pages)),
    ]
    with_pdf = bool(options.get("with_pdf", True))
    if not options.get("multipart", True):
        if with_pdf:
            fields.append(("pdf", base64.b64encode(fax.pdf).decode("ascii")))
        return "application/x-www-form-urlencoded", urllib.parse.urlencode(fields).encode()
    boundary = f"voipms-{uuid.uuid4().hex}"
    out = bytearray()
    for name, value in fields:
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    if with_pdf:
        out += (
            f'--{boundary}\r\nContent-Disposition: form-data; name="pdf"; '
            f'filename="fax-{fax.id}.pdf"\r\nContent-Type: application/pdf\r\n\r\n'
        ).encode()
        out += fax.pdf + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(out)
