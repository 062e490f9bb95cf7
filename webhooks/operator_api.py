"""The operator endpoints of ``/v1``: what the CLI does, for an operator who has only an API token.

- ``POST /v1/faxes/{id}/retry``         wake a record now (``faxes retry``)
- ``GET  /v1/webhooks``, ``/v1/webhooks/{id}``, ``POST /v1/webhooks/{id}/replay``
                                        the raw webhook log (``webhooks list|show|replay``)
- ``POST /v1/backfills``, ``GET /v1/backfills/{id}``
                                        a backfill run by the workers, and its progress
- ``POST /v1/accounts/check``           call the providers with the accounts' credentials

(``POST /v1/faxes/{id}/cancel`` is in ``webhooks.api``.) Every one needs a bearer token; every
action that changes something or calls a provider is written to the log with the name of the
token that asked (``name:token`` in FAXRELAY_API_TOKENS) and counted in
``faxrelay_operator_actions_total``. Blocking work (the sync Redis client, provider calls) runs
in a thread.
"""

from __future__ import annotations

import base64
import json
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from config.settings import Settings
from faxrelay_client import models as m
from webhooks.api import error, token_name
from webhooks.audit import audit
from webhooks.intake import WebhookRoutes
from webhooks.replay import body_receiver, replay_scope
from worker import metrics
from worker.checks import check_accounts
from worker.pipeline import backfill
from worker.pipeline.outbound.accept import SendError
from worker.pipeline.outbound.actions import retry_fax
from worker.runtime import Runtime
from worker.store import rawlog
from worker.store.records import RecordNotFound

M = TypeVar("M", bound=BaseModel)
BODY_LIMIT = 64 * 1024  # the operator requests are small JSON objects


class Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _answer(model: BaseModel, status: int = 200) -> JSONResponse:
    return JSONResponse(model.model_dump(mode="json", by_alias=True), status_code=status)


class OperatorApi:
    def __init__(self, settings: Settings, runtime: Runtime, intake: WebhookRoutes) -> None:
        self.settings = settings
        self.runtime = runtime
        self.intake = intake

    def routes(self) -> list[Route]:
        return [
            Route("/v1/faxes/{fax_id}/retry", self.retry, methods=["POST"]),
            Route("/v1/webhooks", self.webhooks, methods=["GET"]),
            Route("/v1/webhooks/{log_id}", self.webhook, methods=["GET"]),
            Route("/v1/webhooks/{log_id}/replay", self.replay, methods=["POST"]),
            Route("/v1/backfills", self.start_backfill, methods=["POST"]),
            Route("/v1/backfills/{backfill_id}", self.backfill, methods=["GET"]),
            Route("/v1/accounts/check", self.check_accounts, methods=["POST"]),
        ]

    # --- the shared parts ---------------------------------------------------------------------
    def _who(self, request: Request) -> str:
        """The token's name; Refused (401, 403) without an accepted one."""
        if not request.headers.get("authorization"):
            raise Refused(error(401, "unauthenticated", "an API bearer token is required"))
        name = token_name(request, self.settings)
        if name is None:
            raise Refused(error(403, "forbidden", "the bearer token is not accepted"))
        return name

    @staticmethod
    def _audit(who: str, action: str, target: str, outcome: str, detail: str = "") -> None:
        audit(who, action, target, outcome, detail)

    @staticmethod
    def _query(request: Request, model: type[M]) -> M:
        try:
            return model.model_validate(dict(request.query_params))
        except ValidationError as exc:
            problem = m.describe(exc)
            raise Refused(error(422, problem.code, problem.message)) from None

    @staticmethod
    async def _body(request: Request, model: type[M], *, optional: bool = False) -> M:
        raw = bytearray()
        async for chunk in request.stream():  # read with the cap: a chunked body says no length
            raw += chunk
            if len(raw) > BODY_LIMIT:
                raise Refused(error(413, "too_large", f"request over {BODY_LIMIT} bytes"))
        if not raw.strip() and optional:
            return model()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise Refused(error(422, "bad_json", f"body is not JSON: {exc}")) from None
        if not isinstance(data, dict):
            raise Refused(error(422, "bad_json", "body must be a JSON object"))
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problem = m.describe(exc)
            raise Refused(error(422, problem.code, problem.message)) from None

    # --- faxes ----------------------------------------------------------------------------------
    async def retry(self, request: Request) -> Response:
        try:
            who = self._who(request)
        except Refused as refused:
            return refused.response
        fax_id = request.path_params["fax_id"]
        try:
            record = await anyio.to_thread.run_sync(retry_fax, self.runtime, fax_id)
        except RecordNotFound:
            self._audit(who, "retry", fax_id, "not_found")
            return error(404, "not_found", f"no fax with id {fax_id}")
        except SendError as exc:
            self._audit(who, "retry", fax_id, "refused", exc.message)
            return error(exc.status, exc.code, exc.message)
        self._audit(who, "retry", fax_id, "ok", str(record.state))
        metrics.retry("operator", str(record.state))
        return JSONResponse(record.public(), status_code=202)

    # --- the raw webhook log --------------------------------------------------------------------
    async def webhooks(self, request: Request) -> Response:
        try:
            self._who(request)
            query = self._query(request, m.ListWebhooks)
        except Refused as refused:
            return refused.response
        entries = await anyio.to_thread.run_sync(
            rawlog.list_entries, self.runtime.store.redis, query.limit, query.account
        )
        return _answer(m.WebhookLogPage(items=[_entry(e, body=False) for e in entries]))

    async def webhook(self, request: Request) -> Response:
        try:
            self._who(request)
        except Refused as refused:
            return refused.response
        log_id = request.path_params["log_id"]
        entry = await anyio.to_thread.run_sync(rawlog.get_entry, self.runtime.store.redis, log_id)
        if entry is None:
            return error(404, "not_found", f"no webhook log entry {log_id}")
        return _answer(_entry(entry, body=True))

    async def replay(self, request: Request) -> Response:
        """The stored request through its route's handler in this process (no network round
        trip, no token leaving the server); the route logs it again as a new entry."""
        try:
            who = self._who(request)
        except Refused as refused:
            return refused.response
        log_id = request.path_params["log_id"]
        entry = await anyio.to_thread.run_sync(rawlog.get_entry, self.runtime.store.redis, log_id)
        if entry is None:
            self._audit(who, "replay", log_id, "not_found")
            return error(404, "not_found", f"no webhook log entry {log_id}")
        if entry.truncated:
            self._audit(who, "replay", log_id, "refused", "incomplete body")
            return error(
                409, "not_replayable",
                "the stored body is incomplete (truncated or cut short); it cannot be replayed",
            )  # fmt: skip
        account = self.settings.accounts.get(entry.account)
        if account is None or account.webhook_token is None or entry.route not in _ROUTES:
            self._audit(who, "replay", log_id, "refused", "no webhook token")
            return error(
                409, "not_replayable", f"account {entry.account!r} has no webhook_token configured"
            )
        answer = await self.intake.answer(
            replay_scope(entry, account.webhook_token.get_secret_value(), request, "api"),
            body_receiver(entry.body),
            entry.route,
        )
        body = bytes(answer.body).decode(errors="replace")[:500]
        outcome = "ok" if answer.status_code < 300 else "refused"
        self._audit(who, "replay", log_id, outcome, f"HTTP {answer.status_code}")
        return _answer(m.Replay(status=answer.status_code, about=answer.about, body=body))

    # --- backfill -------------------------------------------------------------------------------
    async def start_backfill(self, request: Request) -> Response:
        try:
            who = self._who(request)
            spec = await self._body(request, m.StartBackfill)
        except Refused as refused:
            return refused.response
        try:
            job = await anyio.to_thread.run_sync(
                backfill.start, self.runtime, spec.account, spec.since, spec.until, spec.wake
            )
        except backfill.BackfillRefused as exc:
            self._audit(who, "backfill", spec.account, "refused", str(exc))
            return error(422, "cannot_backfill", str(exc))
        self._audit(who, "backfill", spec.account, "ok", f"{job.id} since {job.since}")
        return _answer(job, 202)

    async def backfill(self, request: Request) -> Response:
        try:
            self._who(request)
        except Refused as refused:
            return refused.response
        job_id = request.path_params["backfill_id"]
        job = await anyio.to_thread.run_sync(backfill.progress, self.runtime.store.redis, job_id)
        if job is None:
            return error(404, "not_found", f"no backfill {job_id} (they are kept a week)")
        return _answer(job)

    # --- accounts -------------------------------------------------------------------------------
    async def check_accounts(self, request: Request) -> Response:
        try:
            who = self._who(request)
            which = await self._body(request, m.CheckAccounts, optional=True)
        except Refused as refused:
            return refused.response
        accounts = self.settings.accounts
        if which.account is not None and which.account not in accounts:
            known = ", ".join(sorted(accounts)) or "none"
            return error(
                422, "unknown_account", f"no account named {which.account!r} (accounts: {known})"
            )
        names = [which.account] if which.account is not None else sorted(accounts)
        if not names:
            return error(422, "no_accounts", "no accounts are configured")
        results = await anyio.to_thread.run_sync(check_accounts, self.runtime, names)
        failed = [r.account for r in results if not r.ok]
        outcome = "failed" if failed else "ok"
        self._audit(who, "accounts_check", ",".join(names), outcome, ",".join(failed))
        return _answer(m.AccountChecks(items=results))


_ROUTES = ("inbound", "status")


def _entry(entry: rawlog.LogEntry, *, body: bool) -> m.WebhookLogEntry:
    data: dict[str, Any] = {k: v for k, v in entry.__dict__.items() if k != "body_b64"}
    if body:
        data["body"] = entry.body.decode(errors="replace")
        data["body_b64"] = base64.b64encode(entry.body).decode()
    return m.WebhookLogEntry.model_validate(data)
