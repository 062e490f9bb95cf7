"""The sandbox's Starlette app: the five providers under ``/{provider}``, the control API under
``/_sandbox``.

Control API (JSON in, JSON out):
    GET  /_sandbox/requests?provider=&operation=   the request log
    POST /_sandbox/faults     {provider, operation, kind, count?, status?, body?, seconds?}
                              kinds: error, hang, late, truncate, drip, not_pdf, expired
                              (``sandbox.core.FAULT_KINDS`` says what each does)
    DELETE /_sandbox/faults   every pending fault cleared (the provider "recovers")
    POST /_sandbox/outcomes   {provider, outcomes: ["busy", "success", …]}  next jobs' endings
    POST /_sandbox/duration   {provider, seconds}  how long jobs take (sandbox clock)
    POST /_sandbox/clock      {speed?, advance?}
    POST /_sandbox/inbound    {provider, pages?, size?, label?, from?, to?, expires_in?,
                               pdf_base64?} → the stored fax (id, sha256, provider fields);
                              ``label`` is written on each page (distinct labels: distinct PDFs)
    POST /_sandbox/fire       {provider, kind: inbound|status, url, id, multipart?}
                              → posts the provider's webhook to ``url``; answers what it got back
                              (``status`` 0 and ``error`` when it got no answer)
    GET  /_sandbox/jobs?provider=                  outbound jobs with their plan and final time,
                              the sha256 of the document each carried, and when it was cancelled
    GET  /_sandbox/network    latency, bandwidth, provider calls in flight now and at the peak
    POST /_sandbox/network    {latency?, bandwidth?}  seconds before each provider call is
                              handled, bytes/s of each call's bodies (``sandbox.network``); also
                              starts a new peak count
    POST /_sandbox/timing     {provider, model: "fax" | "fixed", seed?}  "fax": jobs take as long
                              as real faxes (``sandbox.timing``); "fixed": ``job_duration``
    POST /_sandbox/reset
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
import time
from types import ModuleType
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.core import FAULT_KINDS, LATE_ANSWER, PROVIDERS, Fault, Sandbox, StoredFax
from sandbox.network import NetworkModel
from sandbox.pdf import make_pdf
from sandbox.timing import FaxTiming


def _modules() -> dict[str, ModuleType]:
    return {name: importlib.import_module(f"sandbox.{name}") for name in PROVIDERS}


def _bad(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class HoldAnswers:
    """Holds a request's answer when its handler met a ``late`` fault (``LATE_ANSWER``), until
    the fault's seconds have passed or the faults are cleared."""

    def __init__(self, app: ASGIApp, sandbox: Sandbox) -> None:
        self.app = app
        self.sb = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[float] = []
        token = LATE_ANSWER.set(held)

        async def send_late(message: Message) -> None:
            if message["type"] == "http.response.start" and held:
                # The work is done; the answer comes late. Polled, not an asyncio.Event: the
                # faults may be cleared from another thread (a test holding the Sandbox).
                until, recoveries = time.monotonic() + sum(held), self.sb.recoveries
                while time.monotonic() < until and self.sb.recoveries == recoveries:  # noqa: ASYNC110
                    await asyncio.sleep(min(0.05, until - time.monotonic()))
                held.clear()
            await send(message)

        try:
            await self.app(scope, receive, send_late)
        finally:
            LATE_ANSWER.reset(token)


def create_app(sb: Sandbox | None = None) -> Starlette:
    sb = sb or Sandbox()
    modules = _modules()

    async def requests(request: Request) -> JSONResponse:
        entries = sb.requests(
            request.query_params.get("provider"), request.query_params.get("operation")
        )
        return JSONResponse([e.as_json() for e in entries])

    async def faults(request: Request) -> JSONResponse:
        data = await request.json()
        if data.get("provider") not in PROVIDERS:
            return _bad(f"provider must be one of {PROVIDERS}")
        if data.get("kind") not in FAULT_KINDS:
            return _bad(f"kind must be one of {FAULT_KINDS}")
        fault = Fault(
            kind=data["kind"],
            remaining=int(data.get("count", 1)),
            status=int(data.get("status", 503)),
            body=str(data.get("body", "")),
            seconds=float(data.get("seconds", 30.0)),
        )
        sb.add_fault(data["provider"], str(data.get("operation", "")), fault)
        return JSONResponse({"ok": True})

    async def clear_faults(request: Request) -> JSONResponse:
        sb.clear_faults()
        return JSONResponse({"ok": True})

    async def outcomes(request: Request) -> JSONResponse:
        data = await request.json()
        if data.get("provider") not in PROVIDERS:
            return _bad(f"provider must be one of {PROVIDERS}")
        sb.job_outcomes[data["provider"]].extend(str(o) for o in data.get("outcomes", []))
        return JSONResponse({"ok": True})

    async def duration(request: Request) -> JSONResponse:
        data = await request.json()
        if data.get("provider") not in PROVIDERS:
            return _bad(f"provider must be one of {PROVIDERS}")
        sb.job_duration[data["provider"]] = float(data["seconds"])
        return JSONResponse({"ok": True})

    async def clock(request: Request) -> JSONResponse:
        data = await request.json()
        if "speed" in data:
            sb.clock.set_speed(float(data["speed"]))
        if "advance" in data:
            sb.clock.advance(float(data["advance"]))
        return JSONResponse({"now": sb.clock.now(), "speed": sb.clock.speed})

    async def inbound(request: Request) -> JSONResponse:
        data = await request.json()
        provider = data.get("provider")
        if provider not in PROVIDERS or not hasattr(modules[provider], "store_inbound"):
            return _bad("provider must be one that receives faxes: primevox, ucx, voipms")
        if "pdf_base64" in data:
            pdf = base64.b64decode(data["pdf_base64"])
        else:
            label = str(data.get("label") or "faxrelay sandbox")
            pdf = make_pdf(int(data.get("pages", 1)), int(data.get("size", 0)), label)
        now = sb.clock.now()
        fax = StoredFax(
            id=str(sb.new_id()),
            provider=provider,
            pdf=pdf,
            from_number=str(data.get("from", "5551230000")),
            to_number=str(data.get("to", "5559870000")),
            pages=int(data.get("pages", 1)),
            received_at=now,
            expires_at=now + float(data["expires_in"]) if "expires_in" in data else None,
        )
        fields = modules[provider].store_inbound(sb, fax, str(request.base_url).rstrip("/"))
        return JSONResponse(
            {"id": fax.id, "sha256": hashlib.sha256(pdf).hexdigest(), "size": len(pdf), **fields}
        )

    async def fire(request: Request) -> JSONResponse:
        data = await request.json()
        provider, kind, url = data.get("provider"), data.get("kind"), data.get("url", "")
        builder = getattr(modules.get(str(provider)), f"{kind}_webhook", None)
        if builder is None:
            return _bad(f"{provider} sends no {kind} webhook")
        try:
            content_type, body = builder(
                sb, str(data["id"]), str(request.base_url).rstrip("/"), data
            )
        except KeyError as exc:
            return _bad(f"no such fax or job: {exc}", 404)
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                answer = await client.post(
                    url, content=body, headers={"content-type": content_type}
                )
        except httpx.HTTPError as exc:  # the receiver is down or went away: say so, as data
            return JSONResponse({"status": 0, "body": "", "headers": {}, "error": repr(exc)})
        about = {k: v for k, v in answer.headers.items() if k.lower().startswith("faxrelay-")}
        return JSONResponse({"status": answer.status_code, "body": answer.text, "headers": about})

    async def jobs(request: Request) -> JSONResponse:
        provider = request.query_params.get("provider")
        out: list[dict[str, Any]] = []
        now = sb.clock.now()
        for name in PROVIDERS:
            if provider and name != provider:
                continue
            for job in list(sb.jobs[name].values()):
                out.append(
                    {
                        "id": job.id,
                        "provider": name,
                        "to": job.to_number,
                        "state": job.state_at(now),
                        "submitted_at": job.submitted_at,
                        "final_at": job.final_at(),
                        "plan": job.plan,
                        "document_sha256": job.document_sha256,
                        "document_size": len(job.document),
                        "cancelled_at": job.cancelled_at,
                        "extra": {k: repr(v) for k, v in job.extra.items()},
                    }
                )
        return JSONResponse(out)

    async def network(request: Request) -> JSONResponse:
        if request.method == "POST":
            data = await request.json()
            try:
                latency = float(data["latency"]) if "latency" in data else None
                bandwidth = float(data["bandwidth"]) if "bandwidth" in data else None
            except (TypeError, ValueError):
                return _bad("latency (seconds) and bandwidth (bytes/s) are numbers")
            sb.network.set(latency, bandwidth)
        return JSONResponse(sb.network.as_json())

    async def timing(request: Request) -> JSONResponse:
        data = await request.json()
        provider = data.get("provider")
        if provider != "callerip":
            return _bad("fax-shaped timings are modelled for callerip")
        if data.get("model") == "fax":
            sb.timing[provider] = FaxTiming(int(data.get("seed", 0)))
        elif data.get("model") == "fixed":
            sb.timing.pop(provider, None)
        else:
            return _bad('model must be "fax" or "fixed"')
        return JSONResponse({"ok": True})

    async def reset(request: Request) -> JSONResponse:
        sb.reset()
        return JSONResponse({"ok": True})

    routes: list[Any] = [
        Route("/_sandbox/requests", requests),
        Route("/_sandbox/faults", faults, methods=["POST"]),
        Route("/_sandbox/faults", clear_faults, methods=["DELETE"]),
        Route("/_sandbox/outcomes", outcomes, methods=["POST"]),
        Route("/_sandbox/duration", duration, methods=["POST"]),
        Route("/_sandbox/clock", clock, methods=["POST"]),
        Route("/_sandbox/inbound", inbound, methods=["POST"]),
        Route("/_sandbox/fire", fire, methods=["POST"]),
        Route("/_sandbox/jobs", jobs),
        Route("/_sandbox/network", network, methods=["GET", "POST"]),
        Route("/_sandbox/timing", timing, methods=["POST"]),
        Route("/_sandbox/reset", reset, methods=["POST"]),
    ]
    for name, module in modules.items():
        routes.append(Mount(f"/{name}", routes=module.routes(sb)))
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(NetworkModel, network=sb.network),
            Middleware(HoldAnswers, sandbox=sb),
        ],
    )
    app.state.sandbox = sb
    return app
