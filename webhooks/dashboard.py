"""The operators' dashboard: server-rendered HTML (Jinja2 templates in ``webhooks/templates``).

Routes: ``/`` overview, ``/faxes`` list with filters and paging, ``/faxes/{id}`` one fax (timeline,
raw provider fields, archived PDF and a first-page preview, rendered by ``webhooks.preview``),
``POST /faxes/{id}/retry|cancel|replay``, ``/login`` and ``POST /logout``.

Protection: the API tokens (``FAXRELAY_API_TOKENS``). ``/login`` takes a token, compares it in
constant time with every configured token, and sets an HttpOnly, SameSite=Strict session cookie
signed with itsdangerous (key: ``FAXRELAY_DASHBOARD_SECRET``, else derived from the tokens, so
changing the tokens ends every session). The session names a hash of the token it was opened with:
a token removed from the configuration logs its sessions out. ``Authorization: Bearer`` is
accepted as well (scripts). POSTs from a session need the per-session CSRF token in the form, and
an ``Origin`` header, when sent, must be this site. Forms are read under a cap
(``webhooks.bodies.small_form``): nobody has to be logged in to send ``/login`` a body.

Behind a TLS-terminating proxy, "this site" and the cookie's Secure flag come from the scheme the
client used, which the app takes from a trusted proxy's ``X-Forwarded-Proto`` (``webhooks.proxy``,
``FAXRELAY_FORWARDED_ALLOW_IPS``), and the ``Host`` the proxy passes through.

Blocking work (boto3, provider calls, Celery publishing) runs in a thread.

Size: one concept, the dashboard's routes and the queries behind its pages; the HTML is in the
templates.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import anyio
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from config.settings import Settings
from webhooks import charts, stats
from webhooks.api import bearer_ok
from webhooks.bodies import BodyTooLarge, small_form
from webhooks.intake import Answer
from webhooks.preview import Previews
from webhooks.replay import body_receiver, replay_scope
from worker import metrics
from worker.domain import Direction, FaxRecord, State, parse_iso
from worker.io.archive import Archive
from worker.pipeline.outbound.accept import SendError
from worker.pipeline.outbound.actions import cancel_fax, retry_fax
from worker.runtime import Runtime
from worker.store.records import AsyncFaxStore, RecordNotFound

COOKIE = "faxrelay_session"
SESSION_SECONDS = 12 * 3600
PRESIGN_SECONDS = 300
TEMPLATES = Path(__file__).resolve().parent / "templates"

Handler = Callable[[Request], Awaitable[Answer]]


@dataclass(frozen=True)
class Auth:
    via: str  # "session" | "bearer"
    csrf: str = ""


class Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _token_hash(token: str) -> str:
    return hashlib.sha256(b"faxrelay-dashboard-token\0" + token.encode()).hexdigest()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    sign = "-" if seconds < 0 else ""
    s = int(abs(seconds))
    days, rest = divmod(s, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    if minutes:
        return f"{sign}{minutes}m {secs}s"
    return f"{sign}{secs}s"


def _ago(iso_time: str | None) -> str:
    at = parse_iso(iso_time)
    return _duration(time.time() - at.timestamp()) + " ago" if at else ""


def _epoch_text(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(at))


class Dashboard:
    def __init__(
        self,
        settings: Settings,
        store: AsyncFaxStore,
        archive: Archive,
        runtime: Runtime,
        webhook_handlers: Mapping[str, Handler],
    ) -> None:
        self.settings = settings
        self.store = store
        self.archive = archive
        self.runtime = runtime
        self.webhook_handlers = webhook_handlers  # route → handler, for replays in process
        self.templates = Jinja2Templates(directory=str(TEMPLATES))
        self.templates.env.filters["duration"] = _duration
        self.templates.env.filters["ago"] = _ago
        self.templates.env.filters["epoch"] = _epoch_text
        self.templates.env.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True)
        secret = settings.dashboard_secret
        if secret is not None and secret.get_secret_value():
            key = secret.get_secret_value().encode()
        else:
            joined = "\0".join(sorted(settings.api_token_values))
            key = hashlib.sha256(b"faxrelay-dashboard-key\0" + joined.encode()).digest()
        self._key = key
        self._signer = URLSafeTimedSerializer(key, salt="faxrelay-dashboard-session")
        self.previews = Previews(archive)

    def routes(self) -> list[Route]:
        return [
            Route("/", self.overview, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/faxes", self.faxes, methods=["GET"]),
            Route("/faxes/{fax_id}", self.fax, methods=["GET"]),
            Route("/faxes/{fax_id}/pdf", self.pdf, methods=["GET"]),
            Route("/faxes/{fax_id}/preview.png", self.preview, methods=["GET"]),
            Route("/faxes/{fax_id}/retry", self.retry, methods=["POST"]),
            Route("/faxes/{fax_id}/cancel", self.cancel, methods=["POST"]),
            Route("/faxes/{fax_id}/replay", self.replay, methods=["POST"]),
        ]

    # --- authentication ---------------------------------------------------------------------------
    def _token_ok(self, given: str) -> bool:
        matched = False
        for token in self.settings.api_token_values:  # every one, always: constant time
            matched |= hmac.compare_digest(given.encode(), token.encode())
        return matched and bool(given)

    def _session(self, request: Request) -> dict[str, str] | None:
        raw = request.cookies.get(COOKIE)
        if not raw:
            return None
        try:
            data = self._signer.loads(raw, max_age=SESSION_SECONDS)
        except BadSignature:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("tok"), str):
            return None
        matched = False
        for token in self.settings.api_token_values:
            matched |= hmac.compare_digest(str(data["tok"]), _token_hash(token))
        if not matched or not isinstance(data.get("sid"), str):
            return None
        return {"sid": data["sid"], "tok": data["tok"]}

    def _csrf_for(self, sid: str) -> str:
        return hmac.new(self._key, b"csrf\0" + sid.encode(), hashlib.sha256).hexdigest()

    def _auth(self, request: Request) -> Auth:
        """The caller's credentials, or Refused: a browser without a session goes to /login."""
        if request.headers.get("authorization"):
            if bearer_ok(request, self.settings):
                return Auth("bearer")
            raise Refused(self._plain(403, "the bearer token is not accepted"))
        session = self._session(request)
        if session is not None:
            return Auth("session", self._csrf_for(session["sid"]))
        if request.method == "GET":
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return_to = urlencode({"next": target})
            raise Refused(RedirectResponse(f"/login?{return_to}", status_code=303))
        raise Refused(self._plain(401, "log in first"))

    async def _auth_post(self, request: Request) -> tuple[Auth, dict[str, str]]:
        auth = self._auth(request)
        self._check_origin(request)
        try:
            form = await small_form(request)
        except BodyTooLarge as exc:
            raise Refused(self._plain(413, str(exc))) from None
        if auth.via == "session":
            given = str(form.get("csrf") or "")
            if not hmac.compare_digest(given.encode(), auth.csrf.encode()):
                raise Refused(self._plain(403, "missing or wrong CSRF token; reload the page"))
        return auth, form

    def _check_origin(self, request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is None or (origin == "null" and request.headers.get("authorization")):
            return
        here = urlsplit(str(request.base_url))
        there = urlsplit(origin)
        if (there.scheme, there.netloc) != (here.scheme, here.netloc):
            raise Refused(self._plain(403, "cross-site request refused"))

    @staticmethod
    def _plain(status: int, message: str) -> Response:
        return Response(message + "\n", status_code=status, media_type="text/plain")

    def _page(
        self, request: Request, name: str, context: dict[str, Any], status: int = 200
    ) -> HTMLResponse:
        context = {"request": request, "accounts": sorted(self.settings.accounts), **context}
        response = self.templates.TemplateResponse(request, name, context, status_code=status)
        response.headers["cache-control"] = "no-store"
        response.headers["x-frame-options"] = "DENY"
        response.headers["content-security-policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["referrer-policy"] = "same-origin"
        return response

    # --- login ---------------------------------------------------------------------------------------
    async def login_form(self, request: Request) -> Response:
        return self._login_page(request, "", 200)

    def _login_page(self, request: Request, error: str, status: int) -> Response:
        nxt = request.query_params.get("next", "/")
        return self._page(
            request,
            "login.html",
            {
                "error": error,
                "next": nxt if nxt.startswith("/") and not nxt.startswith("//") else "/",
                "no_tokens": not self.settings.api_token_values,
                "auth": None,
            },
            status,
        )

    async def login(self, request: Request) -> Response:
        try:
            self._check_origin(request)
        except Refused as refused:
            return refused.response
        try:
            form = await small_form(request)  # read under a cap: nobody has logged in yet
        except BodyTooLarge as exc:
            return self._plain(413, str(exc))
        token = str(form.get("token") or "").strip()
        if not self._token_ok(token):
            await anyio.sleep(0.2)  # slows guessing a little; the compare is constant time
            return self._login_page(request, "That token is not accepted.", 403)
        nxt = str(form.get("next") or "/")
        if not nxt.startswith("/") or nxt.startswith("//"):
            nxt = "/"
        cookie = self._signer.dumps({"sid": secrets.token_urlsafe(16), "tok": _token_hash(token)})
        response = RedirectResponse(nxt, status_code=303)
        response.set_cookie(
            COOKIE,
            cookie,
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        try:
            await self._auth_post(request)
        except Refused as refused:
            return refused.response
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            COOKIE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    # --- pages -----------------------------------------------------------------------------------------
    async def overview(self, request: Request) -> Response:
        try:
            auth = self._auth(request)
        except Refused as refused:
            return refused.response
        data = await stats.overview(self.store.redis, self.settings)
        shown = await charts.charts(
            self.store.redis, request.query_params.get("span", ""), sorted(self.settings.accounts)
        )
        return self._page(
            request,
            "overview.html",
            {"auth": auth, "o": data, "now": time.time(), "charts": shown, "spans": charts.SPANS},
        )

    async def faxes(self, request: Request) -> Response:
        try:
            auth = self._auth(request)
        except Refused as refused:
            return refused.response
        q = request.query_params
        filters = {k: q.get(k) or "" for k in ("direction", "account", "state")}
        try:
            limit = min(max(int(q.get("limit", "50")), 1), 500)
        except ValueError:
            limit = 50
        page = await self.store.list(
            direction=filters["direction"] or None,
            account=filters["account"] or None,
            state=filters["state"] or None,
            limit=limit,
            cursor=q.get("cursor") or None,
        )
        next_url = None
        if page.next_cursor:  # a short page may have more after it (a bounded scan)
            params = {k: v for k, v in filters.items() if v}
            params.update(limit=str(limit), cursor=page.next_cursor)
            next_url = "/faxes?" + urlencode(params)
        return self._page(
            request,
            "faxes.html",
            {
                "auth": auth,
                "items": page.items,
                "filters": filters,
                "next_url": next_url,
                "first_url": "/faxes?" + urlencode({k: v for k, v in filters.items() if v}),
                "paged": bool(q.get("cursor")),
                "directions": [str(d) for d in Direction],
                "states": [str(s) for s in State],
            },
        )

    async def fax(self, request: Request) -> Response:
        try:
            auth = self._auth(request)
        except Refused as refused:
            return refused.response
        try:
            record = await self.store.get(request.path_params["fax_id"])
        except RecordNotFound:
            return self._page(request, "missing.html", {"auth": auth}, 404)
        entry = await stats.creating_webhook(self.store.redis, record)
        expires = parse_iso(record.expires_at)
        return self._page(
            request,
            "fax.html",
            {
                "auth": auth,
                "r": record,
                "public": record.public(),
                "entry": entry,
                "has_pdf": self._pdf_key(record) is not None,
                "preview": self._preview_key(record) is not None,
                "seconds_left": expires.timestamp() - time.time() if expires else None,
                "can_retry": not record.final,
                "can_cancel": record.direction == Direction.OUTBOUND and not record.final,
                "can_replay": entry is not None and not entry.truncated,
                "notice": request.query_params.get("notice", ""),
                "problem": request.query_params.get("problem", ""),
            },
        )

    # --- the PDF and its preview -----------------------------------------------------------------------
    @staticmethod
    def _pdf_key(record: FaxRecord) -> str | None:
        if record.direction == Direction.INBOUND:
            return record.archive.get("key") or None
        return record.document_key or None

    def _preview_key(self, record: FaxRecord) -> str | None:
        key = self._pdf_key(record)
        if key is None or record.reason == "not_pdf":
            return None  # a quarantined download is not a PDF to render
        return key

    async def _record_or_404(self, request: Request) -> FaxRecord | Response:
        try:
            self._auth(request)
        except Refused as refused:
            return refused.response
        try:
            return await self.store.get(request.path_params["fax_id"])
        except RecordNotFound:
            return self._plain(404, "no such fax")

    async def pdf(self, request: Request) -> Response:
        record = await self._record_or_404(request)
        if isinstance(record, Response):
            return record
        key = self._pdf_key(record)
        if key is None:
            return self._plain(404, "this fax has no stored PDF")
        url = await anyio.to_thread.run_sync(self.archive.presigned_url, key, PRESIGN_SECONDS)
        return RedirectResponse(url, status_code=303)

    async def preview(self, request: Request) -> Response:
        record = await self._record_or_404(request)
        if isinstance(record, Response):
            return record
        key = self._preview_key(record)
        if key is None:
            return self._plain(404, "this fax has no PDF to preview")
        png = self.previews.cached(key, record.sha256)
        if png is None:
            try:
                png = await anyio.to_thread.run_sync(self.previews.render, key, record.sha256)
            except Exception as exc:  # a PDF pdfium cannot read: say so, do not fail the page
                return self._plain(422, f"cannot render a preview: {exc}")
        return Response(
            png, media_type="image/png", headers={"cache-control": "private, max-age=3600"}
        )

    # --- actions ---------------------------------------------------------------------------------------
    def _back(self, fax_id: str, **message: str) -> Response:
        return RedirectResponse(f"/faxes/{fax_id}?{urlencode(message)}", status_code=303)

    async def retry(self, request: Request) -> Response:
        return await self._action(request, "retry", retry_fax, "woken for another try now")

    async def cancel(self, request: Request) -> Response:
        return await self._action(request, "cancel", cancel_fax, "cancelled")

    async def _action(
        self,
        request: Request,
        name: str,
        run: Callable[[Runtime, str], FaxRecord],
        done: str,
    ) -> Response:
        try:
            await self._auth_post(request)
        except Refused as refused:
            return refused.response
        fax_id = request.path_params["fax_id"]
        try:
            record = await anyio.to_thread.run_sync(run, self.runtime, fax_id)
        except RecordNotFound:
            metrics.operator_action(name, "not_found")
            return self._plain(404, "no such fax")
        except SendError as exc:
            metrics.operator_action(name, "refused")
            return self._back(fax_id, problem=f"{name}: {exc.message}")
        metrics.operator_action(name, "ok")
        if name == "retry":
            metrics.retry("operator", str(record.state))
        return self._back(fax_id, notice=f"{name}: {done} (state {record.state})")

    async def replay(self, request: Request) -> Response:
        try:
            await self._auth_post(request)
        except Refused as refused:
            return refused.response
        fax_id = request.path_params["fax_id"]
        try:
            record = await self.store.get(fax_id)
        except RecordNotFound:
            return self._plain(404, "no such fax")
        entry = await stats.creating_webhook(self.store.redis, record)
        if entry is None or entry.truncated:
            metrics.operator_action("replay", "refused")
            return self._back(fax_id, problem="replay: no complete webhook in the raw log")
        account = self.settings.accounts.get(entry.account)
        handler = self.webhook_handlers.get(entry.route)
        if account is None or account.webhook_token is None or handler is None:
            metrics.operator_action("replay", "refused")
            return self._back(
                fax_id, problem=f"replay: account {entry.account!r} takes no webhooks"
            )
        token = account.webhook_token.get_secret_value()
        answer = await handler(
            Request(replay_scope(entry, token, request, "dashboard"), body_receiver(entry.body))
        )
        about = " ".join(f"{k}={v}" for k, v in answer.about.items())
        body = bytes(answer.body).decode(errors="replace")[:300]
        ok = 200 <= answer.status_code < 300
        metrics.operator_action("replay", "ok" if ok else "refused")
        key = "notice" if ok else "problem"
        return self._back(fax_id, **{key: f"replay: {answer.status_code} {about} {body}".strip()})
