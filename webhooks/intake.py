"""Provider webhook routes: ``POST /webhooks/{account}/inbound`` and ``/webhooks/{account}/status``.

Checked in the contract's order: 404 unknown account → 401 token → 413 body over the limit (read
no further) → 422 unparseable → 503 Redis down → 200 once durable. The 200 is sent only after the
record (created with dedup) and the Celery message that wakes the worker are written by one Redis
script, with the raw log entry in the same round trip (and, with FAXRELAY_REDIS_MIN_REPLICAS, once
that many replicas have it: ``worker.store.replicas``; else 503). Every request, refused ones too,
is logged, within the raw log's caps (``worker.store.rawlog``): a request refused before its sender proved
anything (unknown account, no such route, wrong token) only up to ``webhook_refusals_per_minute``
per account and per client address, and one to an unknown account without its body (none is read).

Size: one concept, the webhook route in the contract's order of checks; its fast paths stay in
one place so that bench/ingest measures what is here.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import anyio
import orjson
from botocore.exceptions import BotoCoreError, ClientError
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from config import tracing
from config.accounts import Account
from config.queues import HANDLE_INBOUND, POLL_FAX, RECONCILE_ACCOUNT
from config.settings import Settings
from webhooks.bodies import BodyTooLarge, ClientLeft, read_capped, read_prefix
from worker import metrics
from worker.domain import FaxRecord
from worker.fastpath.forms import query_value
from worker.fastpath.messages import task_message
from worker.io.archive import Archive
from worker.pipeline.inbound import new_inbound
from worker.pipeline.outbound.follow import next_poll_after_webhook, status_update
from worker.pipeline.outbound.submit import job_dedup
from worker.providers import provider_class
from worker.providers.base import InboundEvent, WebhookError
from worker.runtime import Runtime
from worker.store import keys, rawlog, replicas, scripts
from worker.store.records import AsyncFaxStore, RecordNotFound, dedup_key

log = logging.getLogger(__name__)


@dataclass
class IntakeContext:
    settings: Settings
    store: AsyncFaxStore
    archive: Archive
    runtime: Runtime  # for building records the way the worker does (no I/O through it here)


def token_matches(query: str, headers: dict[str, str], account: Account) -> bool:
    """``?token=`` or the HTTP Basic password, compared in constant time."""
    if account.webhook_token is None:
        return False
    expected = account.webhook_token.get_secret_value().encode()
    given = query_value(query, "token")
    if not given:
        header = headers.get("authorization", "")
        if header[:6].lower() == "basic ":
            try:
                given = base64.b64decode(header[6:]).decode().partition(":")[2]
            except ValueError:  # not base64, not ASCII, not UTF-8: no password given
                given = ""
    return hmac.compare_digest(given.encode(), expected)


def decoded_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    """The ASGI scope's headers as text (names are already lower case; the last of a repeated
    name wins). Decoded in one call: HTTP allows no line break inside a header."""
    if not raw:
        return {}
    names, values = zip(*raw, strict=True)
    text = b"\n".join(names + values).decode("latin-1").split("\n")
    return dict(zip(text[: len(raw)], text[len(raw) :], strict=True))


class Answer:
    """A webhook route's answer, sent as a Starlette Response would send it.

    A 2xx answer has no body (voip.ms's ``ok`` aside): what happened travels in ``Faxrelay-*``
    headers (``Faxrelay-Outcome``, and ``Faxrelay-Fax-Id`` / ``Faxrelay-State`` when a record is
    involved). With a body, the server writes the head and the body separately: two packets and
    two system calls per webhook instead of one, which costs a fifth of the whole webhook.
    Refusals keep their JSON body with the reason.
    """

    __slots__ = ("body", "headers", "status_code")

    def __init__(
        self, status_code: int, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
    ) -> None:
        self.status_code = status_code
        self.body = body
        self.headers = [(b"content-length", b"%d" % len(body)), *(headers or ())]

    @property
    def about(self) -> dict[str, str]:
        """The ``Faxrelay-*`` headers, without the prefix (``outcome``, ``fax-id``, ``state``)."""
        return {k[9:].decode(): v.decode() for k, v in self.headers if k.startswith(b"faxrelay-")}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.headers}
        )
        await send({"type": "http.response.body", "body": self.body})


def _json(data: dict[str, Any], status: int) -> Answer:
    return Answer(status, orjson.dumps(data), [(b"content-type", b"application/json")])


def _error(status: int, code: str, message: str) -> Answer:
    return _json({"error": {"code": code, "message": message}}, status)


# The refusals as /metrics counts them, by HTTP status (the contract's order: 404 → 401 → 413 → 422).
REFUSALS = {404: "unknown_account", 401: "bad_token", 413: "too_large", 422: "unparseable"}


class WebhookEndpoint:
    """One webhook route as a plain ASGI app.

    ``FaxrelayApp`` calls it directly for ``POST /webhooks/{account}/{route}`` (with the path
    parameters Starlette's router would give), so it answers its own failures with a 500. No
    Request is built: on the busiest route that costs as much as the webhook's log entry.
    """

    def __init__(self, routes: WebhookRoutes, route: str) -> None:
        self.routes = routes
        self.route = route

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self.routes.answer(scope, receive, self.route)
        except Exception:
            # Called ahead of Starlette's error middleware (see FaxrelayApp): answer as it would.
            log.exception("webhook %s %s failed", scope["method"], scope["path"])
            response = _error(500, "internal_error", "internal error; retry later")
        await response(scope, receive, send)


class WebhookRoutes:
    def __init__(self, ctx: IntakeContext) -> None:
        self.ctx = ctx

    async def inbound(self, request: Request) -> Answer:
        """For a request built in process (the dashboard's replay)."""
        return await self.answer(request.scope, request.receive, "inbound")

    async def status(self, request: Request) -> Answer:
        return await self.answer(request.scope, request.receive, "status")

    async def answer(self, scope: Scope, receive: Receive, route: str) -> Answer:
        """The answer, counted in /metrics by account and outcome with its latency."""
        started = time.perf_counter()
        name = scope["path_params"]["account"]
        client = scope.get("client")
        address = str(client[0]) if client else ""
        headers = decoded_headers(scope["headers"])
        query = scope["query_string"].decode("latin-1")
        entry = rawlog.LogEntry.capture(
            account=name,
            route=route,
            method=scope["method"],
            path=scope["path"],
            query=query,
            headers=headers,
        )
        try:
            if tracing.on:  # FAXRELAY_OTEL: the fax's trace starts here (config.tracing)
                with tracing.span(f"webhook {route}", {"faxrelay.account": name}):
                    response = await self._handle(
                        receive, route, name, query, headers, entry, address
                    )
            else:
                response = await self._handle(receive, route, name, query, headers, entry, address)
        except Exception:
            # A bug, or an input nobody foresaw: still answered, and kept in the raw log so that
            # it can be replayed once fixed (PrimeVox cannot list faxes: the log is all there is).
            log.exception("webhook %s %s failed", scope["method"], scope["path"])
            response = await self._refuse(
                entry, _error(500, "internal_error", "internal error; retry later"), "error"
            )
        if name not in self.ctx.settings.accounts:
            name = "(unknown)"  # the path is the caller's: keep label values bounded
        outcome = entry.outcome
        if outcome in ("", "refused"):
            outcome = REFUSALS.get(response.status_code, f"http_{response.status_code}")
        metrics.webhook(name, route, outcome, time.perf_counter() - started)
        return response

    async def _handle(
        self,
        receive: Receive,
        route: str,
        name: str,
        query: str,
        headers: dict[str, str],
        entry: rawlog.LogEntry,
        address: str,
    ) -> Answer:
        settings = self.ctx.settings
        account = settings.accounts.get(name)
        if account is None:
            return await self._refuse_stranger(
                receive, entry, address, _error(404, "unknown_account", "no such account")
            )
        cls = provider_class(account.provider)
        if route == "status" and not cls.capabilities.status_webhook:
            return await self._refuse_stranger(
                receive,
                entry,
                address,
                _error(404, "no_status_webhook", f"{account.provider} sends no status webhook"),
            )
        if not token_matches(query, headers, account):
            return await self._refuse_stranger(
                receive,
                entry,
                address,
                _error(401, "bad_token", "webhook token missing or wrong"),
                keep_body=True,
            )
        try:
            body = await read_capped(headers, receive, settings.webhook_max_bytes)
        except BodyTooLarge as refused:
            too_large = _error(413, "too_large", f"body over {settings.webhook_max_bytes} bytes")
            if not refused.partial:  # refused by its declared length: nothing read yet
                return await self._refuse_unread(receive, entry, too_large)
            entry.keep_body(refused.partial, settings.webhook_log_body_bytes)
            entry.truncated = True  # it went on: never replayable
            return await self._refuse(entry, too_large)
        except ClientLeft as left:  # gone before the body was in: logged, answered to nobody
            entry.keep_body(left.partial, settings.webhook_log_body_bytes)
            entry.truncated = True
            return await self._refuse(
                entry,
                _error(499, "client_disconnected", "the client left mid-body"),
                outcome="disconnected",
            )
        entry.keep_body(body, settings.webhook_log_body_bytes)
        try:
            if route == "inbound":
                return await self._inbound(account, cls.webhook_ack, headers, body, entry)
            return await self._status(account, headers, body, entry)
        except WebhookError as exc:
            return await self._refuse(entry, _error(422, "unparseable", str(exc)))
        except (RedisError, OSError, BotoCoreError, ClientError) as exc:
            log.error("webhook for %s not recorded: storage unavailable: %s", name, exc)
            # Logged if Redis is up (S3 was the one down); answered 503 either way.
            return await self._refuse(
                entry,
                _error(503, "unavailable", "storage unavailable; retry later"),
                "storage_down",
            )

    async def _refuse_stranger(
        self,
        receive: Receive,
        entry: rawlog.LogEntry,
        address: str,
        response: Answer,
        *,
        keep_body: bool = False,
    ) -> Answer:
        """Refused before the sender proved anything: logged (in a refused bucket, with small
        caps) only within the refusal rate limits, and otherwise only counted. ``keep_body``
        (a known account's wrong token): the log gets the body up to its cap, so that a webhook
        refused for a rotated token can be replayed once it is fixed; else no body is read."""
        settings = self.ctx.settings
        entry.status = response.status_code  # the bucket depends on it
        code = REFUSALS.get(response.status_code, "refused")
        try:
            allowed = await rawlog.refusal_allowed(
                self.ctx.store.redis,
                rawlog.bucket_of(entry, settings),
                address,
                settings.webhook_refusals_per_minute,
            )
        except (RedisError, OSError) as exc:
            log.error("raw webhook log unavailable: %s", exc)
            allowed = False
        if not allowed:
            metrics.refusal_unlogged(code)
            return response
        if keep_body:
            return await self._refuse_unread(receive, entry, response)
        entry.keep_little()
        return await self._refuse(entry, response)

    async def _refuse_unread(
        self, receive: Receive, entry: rawlog.LogEntry, response: Answer
    ) -> Answer:
        """Refused before its body was read: the log still gets the body (up to its cap), so a
        webhook refused for a configuration mistake (a rotated token) can be replayed once fixed."""
        cap = self.ctx.settings.webhook_log_body_bytes
        body, whole = await read_prefix(receive, cap)
        entry.keep_body(body, cap)
        entry.truncated = entry.truncated or not whole
        return await self._refuse(entry, response)

    async def _refuse(
        self, entry: rawlog.LogEntry, response: Answer, outcome: str = "refused"
    ) -> Answer:
        entry.status, entry.outcome = response.status_code, outcome
        entry.detail = bytes(response.body).decode(errors="replace")[:500]
        try:
            await rawlog.write(self.ctx.store.redis, entry, self.ctx.settings)
        except (RedisError, OSError) as exc:
            log.error("raw webhook log unavailable: %s", exc)
        return response

    async def _inbound(
        self,
        account: Account,
        ack: str,
        headers: dict[str, str],
        body: bytes,
        entry: rawlog.LogEntry,
    ) -> Answer:
        event = provider_class(account.provider).parse_inbound_webhook(headers, body)
        settings = self.ctx.settings
        entry.status, entry.outcome = 200, "accepted"
        if event.fax is None:
            # The webhook names no fax: list the account's faxes now instead.
            entry.outcome = "reconcile"
            message = task_message(*RECONCILE_ACCOUNT, [account.name], headers=tracing.carrier())
            # FAXRELAY_REDIS_MIN_REPLICAS: the 200 waits until the replicas have the writes.
            epoch = await replicas.epoch(self.ctx.store.redis, settings)
            pipe = self.ctx.store.redis.pipeline(transaction=True)
            rawlog.add_to_pipeline(pipe, entry, settings)
            pipe.lpush(RECONCILE_ACCOUNT.queue, message)
            await pipe.execute()
            await replicas.confirm(self.ctx.store.redis, settings, epoch)
            return self._ack(ack, "reconcile")
        # The worker's own record and dedup key; stored here, with its wake-up and log entry.
        record, dedup = new_inbound(self.ctx.runtime, account.name, event.fax)
        if event.pdf is not None:
            await self._stage_pdf(record, event)
        entry.fax_id = record.id
        if tracing.on:
            tracing.annotate({"faxrelay.fax_id": record.id})
        try:
            created = await self.ctx.store.create(
                record,
                dedup=dedup,
                queue=HANDLE_INBOUND.queue,
                # The trace context rides in the message's headers (None when tracing is off).
                message=task_message(*HANDLE_INBOUND, [record.id], headers=tracing.carrier()),
                log=rawlog.side_log(entry, settings),
            )
        except Exception:
            if event.pdf is not None:  # no record holds the staged copy: the retry stages anew
                await self._unstage(record)
            raise
        if not created.created:
            entry.outcome = "duplicate"  # the script logged it so; this copy feeds the metrics
            if event.pdf is not None:  # the first delivery's record has its own staged copy
                await self._unstage(record)
        return self._ack(ack, entry.outcome, created.record)

    async def _stage_pdf(self, record: FaxRecord, event: InboundEvent) -> None:
        """The webhook carried the PDF itself: keep it in S3 before answering."""
        assert event.pdf is not None
        key = self.ctx.archive.key_for("staging", record)
        pdf = event.pdf

        def upload() -> None:

            self.ctx.archive.put_file(key, io.BytesIO(pdf))

        await anyio.to_thread.run_sync(upload)
        record.work["staged_key"] = key

    async def _unstage(self, record: FaxRecord) -> None:
        key = str(record.work.get("staged_key", ""))
        archive = self.ctx.archive

        def delete() -> None:
            archive.client.delete_object(Bucket=archive.bucket, Key=key)

        try:
            await anyio.to_thread.run_sync(delete)
        except (BotoCoreError, ClientError) as exc:  # an orphan in staging/, not a loss
            log.warning("staged copy %s of a duplicate webhook not deleted: %s", key, exc)

    async def _status(
        self, account: Account, headers: dict[str, str], body: bytes, entry: rawlog.LogEntry
    ) -> Answer:
        event = provider_class(account.provider).parse_status_webhook(headers, body)
        settings = self.ctx.settings
        entry.status, entry.outcome = 200, "accepted"
        # FAXRELAY_REDIS_MIN_REPLICAS: the 200 waits until the replicas have the writes.
        epoch = await replicas.epoch(self.ctx.store.redis, settings)
        scope, key = job_dedup(account.name, event.job_id)
        # The job's record, or (earlier than the worker claimed the job id, or not ours) the body
        # kept for the submit step: one script, so the claim cannot fall between check and keep.
        pending = keys.pending_status_key(account.name, event.job_id)
        ref = await self.ctx.store.redis.eval(
            scripts.STASH_STATUS, 2, dedup_key(scope, key), pending, body, keys.PENDING_STATUS_TTL
        )
        if ref is None:
            entry.outcome = "pending"
            await rawlog.write(self.ctx.store.redis, entry, settings)
            await replicas.confirm(self.ctx.store.redis, settings, epoch)
            return self._ack("", "pending")

        fax_id = json.loads(ref)["id"]
        next_poll = next_poll_after_webhook(account.provider, self.ctx.settings.retry_scale)
        entry.fax_id = fax_id
        now = time.time()
        try:
            record, wake = await self.ctx.store.update(
                fax_id,
                lambda r: status_update(r, event.status, now, "status webhook", next_poll),
            )
        except RecordNotFound:
            entry.outcome = "unknown_fax"
            await rawlog.write(self.ctx.store.redis, entry, settings)
            await replicas.confirm(self.ctx.store.redis, settings, epoch)
            return self._ack("", "unknown_fax")
        pipe = self.ctx.store.redis.pipeline(transaction=False)
        rawlog.add_to_pipeline(pipe, entry, settings)
        if wake:
            pipe.lpush(POLL_FAX.queue, task_message(*POLL_FAX, [fax_id], headers=tracing.carrier()))
        await pipe.execute()
        await replicas.confirm(self.ctx.store.redis, settings, epoch)
        return self._ack("", "accepted", record)

    @staticmethod
    def _ack(ack: str, outcome: str, record: FaxRecord | None = None) -> Answer:
        """200, with the provider's expected body (``ack``; usually none) and what happened."""
        headers = [(b"faxrelay-outcome", outcome.encode())]
        if record is not None:
            headers += (
                (b"faxrelay-fax-id", record.id.encode()),
                (b"faxrelay-state", record.state.encode()),
            )
        if ack:
            headers.append((b"content-type", b"text/plain; charset=utf-8"))
        return Answer(200, ack.encode(), headers)
