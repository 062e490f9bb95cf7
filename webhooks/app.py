"""The web app: provider webhooks, the send/status API, health, metrics and the dashboard.

``create_app()`` reads settings once; run it with ``uvicorn --factory webhooks.app:create_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from config import connect, tracing
from config.logging import configure_logging
from config.settings import Settings, get_settings
from webhooks import apidoc, stats
from webhooks.api import FaxApi, http_error
from webhooks.dashboard import Dashboard
from webhooks.intake import IntakeContext, WebhookEndpoint, WebhookRoutes
from webhooks.operator_api import OperatorApi
from webhooks.proxy import trusting_proxies
from worker import metrics
from worker.io.archive import Archive
from worker.io.filing import filed_record
from worker.runtime import get_runtime
from worker.store import replicas
from worker.store.records import AsyncFaxStore

log = logging.getLogger(__name__)

# What Starlette's router would match for the two webhook routes (``{account}`` is ``[^/]+``).
WEBHOOK_PATH = re.compile(r"/webhooks/([^/]+)/(inbound|status)")


class FaxrelayApp(Starlette):
    """Starlette, with the provider webhooks dispatched ahead of its middleware and router.

    The webhook routes take nearly all the traffic, and on them Starlette's error and exception
    middleware (a Request and two closures per call) and the route scan cost a tenth of the whole
    webhook. The routes stay in the router as well, which answers every other method and path.

    Ahead of everything, X-Forwarded-* from trusted proxies (``webhooks.proxy``), so webhooks and
    every other route see the real client and scheme.
    """

    def __init__(
        self,
        *,
        webhooks: dict[str, WebhookEndpoint],
        forwarded_allow_ips: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.webhooks = webhooks
        self._entry = trusting_proxies(self._dispatch, forwarded_allow_ips)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            match = WEBHOOK_PATH.fullmatch(scope["path"])
            if match is not None:
                scope["app"] = self
                scope["path_params"] = {"account": match[1]}
                await self.webhooks[match[2]](scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def prepare_bucket(archive: Archive) -> None:
    """Create the archive bucket if it is missing (with Object Lock when retention is configured)
    and check it suits the archive controls. In the background: webhooks are answered meanwhile,
    and a failure is logged (``/readyz`` reports S3 until it is fixed)."""
    try:
        await anyio.to_thread.run_sync(archive.ensure_bucket)
    except Exception as exc:  # S3 down or refusing: say so; the workers retry their uploads
        log.error("archive bucket %s is not usable: %s", archive.bucket, exc)


async def flush_metrics_every(seconds: float) -> None:
    """Writes the webhook metrics counted in process (see ``metrics.webhook``) to /metrics."""
    while True:
        await asyncio.sleep(seconds)
        metrics.flush_webhooks()


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    configure_logging("web")
    tracing.setup(settings.otel, "web")  # FAXRELAY_OTEL: off by default, and then free
    # The configured Redis or Sentinel primary (config.connect). A connection that died with a
    # restart or a failover is retried on a fresh one (every write here is idempotent: records
    # are deduplicated), so the first webhook after a restart is not a 503.
    client = connect.async_client(settings)
    archive = Archive.from_settings(settings)
    store = AsyncFaxStore(
        client,
        # A record past its retention is answered from its copy in S3 (worker.io.filing).
        retired=lambda fax_id: filed_record(archive, fax_id),
        min_replicas=settings.redis_min_replicas,
        wait_timeout=settings.redis_wait_timeout,
    )
    runtime = get_runtime()
    intake = WebhookRoutes(IntakeContext(settings, store, archive, runtime))
    api = FaxApi(settings, store, runtime)
    webhooks = {"inbound": intake.inbound, "status": intake.status}
    dashboard = Dashboard(settings, store, archive, runtime, webhooks)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        checks: dict[str, str] = {}
        try:
            await client.ping()
            checks["redis"] = "ok"
            if settings.redis_min_replicas:  # without them no webhook can be acknowledged
                checks["replicas"] = await replicas.readiness(client, settings)
        except Exception as exc:  # any failure means not ready; say which
            checks["redis"] = f"error: {exc}"
        try:
            await anyio.to_thread.run_sync(archive.ping)
            checks["s3"] = "ok"
        except Exception as exc:
            checks["s3"] = f"error: {exc}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": checks},
            status_code=200 if ready else 503,
        )

    metrics_token = (
        settings.metrics_token.get_secret_value().encode() if settings.metrics_token else b""
    )

    async def metrics_view(request: Request) -> Response:
        if metrics_token:  # the webhook port faces the internet; the scrape may need a token
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if not (
                scheme.lower() == "bearer"
                and hmac.compare_digest(given.strip().encode(), metrics_token)
            ):
                return Response(
                    "/metrics needs the metrics bearer token\n",
                    status_code=401,
                    media_type="text/plain",
                    headers={"www-authenticate": 'Bearer realm="metrics"'},
                )
        metrics.flush_webhooks()
        try:
            snapshot = await stats.snapshot(client, settings)
        except Exception:  # Redis down: the process's own metrics still answer
            snapshot = metrics.Snapshot()
        body = await anyio.to_thread.run_sync(metrics.render, snapshot)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Everything loaded so far (boto3, Celery, pydantic…) lives for the whole process: keep it
        # out of the collector's way, so full collections stay short and do not show up as
        # latency spikes on the webhook path.
        gc.freeze()
        flusher = asyncio.create_task(flush_metrics_every(metrics.FLUSH_SECONDS))
        bucket = asyncio.create_task(prepare_bucket(archive))
        yield
        flusher.cancel()
        bucket.cancel()
        metrics.flush_webhooks()
        await store.aclose()  # the group commit's own connection, then the client's

    endpoints = {route: WebhookEndpoint(intake, route) for route in ("inbound", "status")}
    routes = [
        Route("/webhooks/{account}/inbound", endpoints["inbound"], methods=["POST"]),
        Route("/webhooks/{account}/status", endpoints["status"], methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_view, methods=["GET"]),
        Route("/v1/faxes", api.create, methods=["POST"]),
        Route("/v1/faxes", api.list, methods=["GET"]),
        Route("/v1/faxes/{fax_id}", api.get, methods=["GET"]),
        Route("/v1/faxes/{fax_id}/cancel", api.cancel, methods=["POST"]),
        Route("/v1/openapi.json", apidoc.endpoint(settings), methods=["GET"]),
        *OperatorApi(settings, runtime, intake).routes(),
        *dashboard.routes(),
    ]
    return FaxrelayApp(
        webhooks=endpoints,
        exception_handlers={HTTPException: http_error},  # JSON errors under /v1 (404, 405)
        forwarded_allow_ips=settings.forwarded_allow_ips,
        routes=routes,
        lifespan=lifespan,
    )
