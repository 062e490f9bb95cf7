"""Sandbox stand-in for PrimeVox eFax, written from ``provider-docs/primevox.txt`` and its README.

Operations (paths under ``/primevox``; the log's operation name in brackets):

- ``POST /api/fax_send.php`` [send]: parameters case-sensitive and only in an urlencoded body
  (``auth``, ``containerID``, ``boxID``, ``toNumber``, ``fileUrl``). The sandbox really downloads
  ``fileUrl`` (loopback hosts only: the sandbox never connects elsewhere; no redirects) and refuses
  what is not a PDF. Answers ``{"success": "...", "faxID": <number>}``.
- ``GET /api/fax_status.php?auth=&containerID=&efaxID=`` [status]: ``{"status": "<word>"}``.
- ``GET /efax/fax_download.php?efaxID=&key=`` [download]: received fax PDFs (the URL the inbound
  webhook carries); the truncate / not_pdf / expired faults apply; 404 once the fax is past its
  30-day retention or the key is wrong.

Every error is HTTP 200 with ``{"error": "<the documented string>"}`` (the docs: "JSON Syntax,
either an error string or a success string"), checked in the order the docs list them.

Credentials: ``VALID_AUTH``, ``VALID_CONTAINER``, ``VALID_BOX`` (``OTHER_BOX`` is a box outside the
container: "does not exist, or is out of your scope").

Assumptions beyond the docs (the sandbox has to pick something):

- Status words: ``Queued`` → ``Sending`` → final word. Outcomes (``sb.next_outcome``): ``success``
  → ``Sent``, ``failed`` → ``Failed``, ``busy`` → ``Busy``, ``no_answer`` → ``No Answer``,
  ``bad_number`` → ``Failed: Invalid Number``.
- Destinations: ten digits after an optional leading 1; anything else, and NANP area codes
  outside the US (Canada, Caribbean), answer "You cannot fax international destinations."
- A downloaded file not starting with ``%PDF-`` is "The file you want to send is not a PDF"; a
  failed download, or a PDF without ``%%EOF`` (cut short), is "Something is wrong with the file…".
- Webhook field names are not published. ``inbound_webhook`` options: ``variant`` ``default``
  (``containerId``, ``boxId``, ``efaxID``, ``callerIdNum``, ``did``, ``pages``, ``receivedAt``,
  ``fileUrl``), ``alt`` (``ContainerID``, ``UniqueID``, ``CallerID``, ``DNIS``, ``NumPages``,
  ``Timestamp`` as epoch seconds, ``DownloadURL``) or ``bare`` (only ``containerId``, ``caller``
  and ``link_to_document``); ``multipart: true`` sends multipart/form-data instead of urlencoded.
  ``status_webhook`` posts JSON ``{"containerID", "efaxID", "status"}`` (variant ``alt``:
  ``{"containerId", "faxID", "Status"}``); option ``status`` overrides the word.
"""

from __future__ import annotations

import ipaddress
import json
import re
import secrets
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from sandbox.core import Job, LoggedRequest, Sandbox, StoredFax

PROVIDER = "primevox"

VALID_AUTH = "pvx-sandbox-4f7c9e2a1b8d6f3e0a5c7b9d2e4f6a8c"
VALID_CONTAINER = "314159"
VALID_BOX = "4001"
OTHER_BOX = "4999"  # exists, but in another container
RETENTION_SECONDS = 30 * 86400.0

ERR_CONTAINER = "Your Container ID is invalid."
ERR_AUTH = "Your API Auth Key is invalid."
ERR_BOX = "Your UCP Box ID is invalid."
ERR_TO_MISSING = "Destination toNumber is missing."
ERR_NO_FILE_URL = "You must supply a file URL for the eFax server to download."
ERR_NOT_PDF = "The file you want to send is not a PDF"
ERR_DB_CONNECT = "Error connecting to the database. Try again later."
ERR_BOX_SCOPE = "The supplied UCP Box ID either does not exist, or is out of your scope of access."
ERR_INTERNATIONAL = "You cannot fax international destinations."
ERR_FILE = "Something is wrong with the file. It is either not a PDF, or we could not download it."
ERR_DB_COMMIT = "Unknown issue with database query, could not commit fax to database."
ERR_EFAX_ID = "Your supplied eFax ID is invalid."
ERR_DB_STATUS = "Unknown issue with database query, could not retrieve fax status."

FINAL_WORDS = {
    "success": "Sent",
    "failed": "Failed",
    "busy": "Busy",
    "no_answer": "No Answer",
    "bad_number": "Failed: Invalid Number",
}

# NANP area codes outside the US (Canada and the Caribbean): "international" to PrimeVox.
_NON_US = (
    "204 226 236 249 250 263 289 306 343 354 365 367 368 382 403 416 418 428 431 437 438 450 "
    "460 468 474 506 514 519 548 579 581 584 587 604 613 639 647 672 683 705 709 742 753 778 "
    "780 782 807 819 825 867 873 879 902 905 942 "
    "242 246 264 268 284 345 441 473 649 658 664 721 758 767 784 809 829 849 868 869 876"
)
NON_US_AREA_CODES = frozenset(_NON_US.split())


def _json(payload: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(payload, status_code=status)


def _error(message: str) -> JSONResponse:
    return _json({"error": message})


def _credentials_error(params: dict[str, str]) -> str | None:
    container = params.get("containerID", "")
    if not re.fullmatch(r"\d{6}", container) or container != VALID_CONTAINER:
        return ERR_CONTAINER
    if params.get("auth", "") != VALID_AUTH:
        return ERR_AUTH
    return None


def _us_number(raw: str) -> str | None:
    digits = re.sub(r"[\s\-.()+]", "", raw)
    if not digits.isdigit():
        return None
    if len(digits) == 11 and digits.startswith("1"):
        digits = digits[1:]
    if len(digits) != 10 or digits[:3] in NON_US_AREA_CODES:
        return None
    return digits


def _loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _fetch(url: str) -> bytes | None:
    """Download the file to send, as PrimeVox's eFax server does; None when it cannot."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not _loopback(parts.hostname):
        return None
    try:
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False) as client:
            answer = await client.get(url)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    return answer.content


def _plan(sb: Sandbox, outcome: str) -> list[tuple[str, float]]:
    duration = sb.job_duration[PROVIDER]
    final = FINAL_WORDS.get(outcome, FINAL_WORDS["failed"])
    return [("Queued", 0.0), ("Sending", duration * 0.3), (final, duration)]


def routes(sb: Sandbox) -> list[BaseRoute]:
    async def fax_send(request: Request) -> Response:
        content_type = request.headers.get("content-type", "")
        params: dict[str, str] = {}
        if content_type.lower().startswith("application/x-www-form-urlencoded"):
            form = await request.form()
            params = {k: v for k, v in form.items() if isinstance(v, str)}
        entry, fault = await sb.intercept(PROVIDER, "send", request, dict(params))
        if fault is not None:
            return fault
        return sb.answered(entry, await _send(entry, params))

    async def _send(entry: LoggedRequest, params: dict[str, str]) -> Response:
        problem = _credentials_error(params)
        if problem:
            return _error(problem)
        box = params.get("boxID", "")
        if not box.isdigit():
            return _error(ERR_BOX)
        if not params.get("toNumber", "").strip():
            return _error(ERR_TO_MISSING)
        file_url = params.get("fileUrl", "").strip()
        if not file_url:
            return _error(ERR_NO_FILE_URL)
        if box != VALID_BOX:
            return _error(ERR_BOX_SCOPE)
        number = _us_number(params["toNumber"])
        if number is None:
            return _error(ERR_INTERNATIONAL)
        content = await _fetch(file_url)
        if content is None:
            return _error(ERR_FILE)
        if not content.startswith(b"%PDF-"):
            return _error(ERR_NOT_PDF)
        if b"%%EOF" not in content[-1024:]:
            return _error(ERR_FILE)
        outcome = sb.next_outcome(PROVIDER)
        job = Job(
            id=str(sb.new_id()),
            provider=PROVIDER,
            to_number=number,
            submitted_at=sb.clock.now(),
            plan=_plan(sb, outcome),
            document=content,
            extra={"container": VALID_CONTAINER, "box": box, "file_url": file_url},
        )
        with sb.lock:
            sb.jobs[PROVIDER][job.id] = job
        return _json({"success": "Fax has been queued for sending.", "faxID": int(job.id)})

    async def fax_status(request: Request) -> Response:
        params = dict(request.query_params)
        entry, fault = await sb.intercept(PROVIDER, "status", request, params)
        if fault is not None:
            return fault
        problem = _credentials_error(params)
        if problem:
            return sb.answered(entry, _error(problem))
        job = sb.jobs[PROVIDER].get(params.get("efaxID", "").strip())
        if job is None or job.extra.get("container") != params["containerID"]:
            return sb.answered(entry, _error(ERR_EFAX_ID))
        return sb.answered(entry, _json({"status": job.state_at(sb.clock.now())}))

    async def download(request: Request) -> Response:
        params = dict(request.query_params)
        entry, fault = await sb.intercept(PROVIDER, "download", request, params)
        if fault is not None:
            return fault
        fax = sb.inbound[PROVIDER].get(params.get("efaxID", ""))
        gone = Response("Not Found", status_code=404, media_type="text/plain")
        if fax is None or not secrets.compare_digest(
            params.get("key", ""), str(fax.extra.get("key", ""))
        ):
            return sb.answered(entry, gone)
        if fax.expires_at is not None and sb.clock.now() >= fax.expires_at:
            return sb.answered(entry, gone)
        body = sb.download_body(PROVIDER, "download", fax.pdf)
        if isinstance(body, Response):
            return sb.answered(entry, body)
        media_type = "application/pdf" if body is fax.pdf else "text/html"
        return sb.answered(entry, Response(body, media_type=media_type))

    return [
        Route("/api/fax_send.php", fax_send, methods=["POST"]),
        Route("/api/fax_status.php", fax_status, methods=["GET"]),
        Route("/efax/fax_download.php", download, methods=["GET"]),
    ]


def store_inbound(sb: Sandbox, fax: StoredFax, base: str) -> dict[str, object]:
    """Hold a received fax for 30 days; its download URL is what the inbound webhook carries."""
    if fax.expires_at is None:
        fax.expires_at = fax.received_at + RETENTION_SECONDS
    key = secrets.token_urlsafe(16)
    url = f"{base}/{PROVIDER}/efax/fax_download.php?" + urlencode({"efaxID": fax.id, "key": key})
    fax.extra.update(key=key, download_url=url, box=VALID_BOX)
    with sb.lock:
        sb.inbound[PROVIDER][fax.id] = fax
    return {"download_url": url, "efaxID": fax.id}


def _multipart(fields: dict[str, str]) -> tuple[str, bytes]:
    boundary = "----primevox" + secrets.token_hex(8)
    out = bytearray()
    for name, value in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value.encode() + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return f"multipart/form-data; boundary={boundary}", bytes(out)


def inbound_webhook(
    sb: Sandbox, fax_id: str, base: str, options: dict[str, Any]
) -> tuple[str, bytes]:
    """The incoming-fax webhook: urlencoded fields with the download URL (names assumed)."""
    fax = sb.inbound[PROVIDER][fax_id]
    url = str(fax.extra["download_url"])
    received = datetime.fromtimestamp(fax.received_at, tz=UTC)
    variant = str(options.get("variant", "default"))
    fields: dict[str, str]
    if variant == "alt":
        fields = {
            "ContainerID": VALID_CONTAINER,
            "UniqueID": fax.id,
            "CallerID": f"Sender <{fax.from_number}>",
            "DNIS": fax.to_number,
            "NumPages": str(fax.pages),
            "Timestamp": str(int(fax.received_at)),
            "DownloadURL": url,
        }
    elif variant == "bare":
        fields = {
            "containerId": VALID_CONTAINER,
            "caller": fax.from_number,
            "link_to_document": url,
        }
    else:
        fields = {
            "containerId": VALID_CONTAINER,
            "boxId": str(fax.extra.get("box", VALID_BOX)),
            "efaxID": fax.id,
            "callerIdNum": fax.from_number,
            "did": fax.to_number,
            "pages": str(fax.pages),
            "receivedAt": received.strftime("%Y-%m-%d %H:%M:%S"),
            "fileUrl": url,
        }
    if options.get("multipart"):
        return _multipart(fields)
    return "application/x-www-form-urlencoded", urlencode(fields).encode()


def status_webhook(
    sb: Sandbox, job_id: str, base: str, options: dict[str, Any]
) -> tuple[str, bytes]:
    """The outgoing-status webhook: JSON with the status call's answer (names assumed)."""
    job = sb.jobs[PROVIDER][job_id]
    word = str(options.get("status") or job.state_at(sb.clock.now()))
    payload: dict[str, Any]
    if options.get("variant") == "alt":
        payload = {"containerId": VALID_CONTAINER, "faxID": job.id, "Status": word}
    else:
        payload = {"containerID": VALID_CONTAINER, "efaxID": int(job.id), "status": word}
    return "application/json", json.dumps(payload).encode()
