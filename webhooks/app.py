"""The web app: provider webhooks, the send/status API, health, metrics and the dashboard.

``create_app()`` reads settings once; run it with ``uvicorn --factory webhooks.app:create_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
from collections.abc import AsyncIterator
from typing import Any

import anyio
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from config.logging import configure_logging
from config.settings import Settings, get_settings
from webhooks import stats
from webhooks.api import FaxApi
from webhooks.dashboard import Dashboard
from webhooks.intake import IntakeContext, WebhookEndpoint, WebhookRoutes
from worker import metrics
from worker.io.archive import Archive
from worker.runtime import get_runtime
from worker.store.records import AsyncFaxStore

# What Starlette's router would match for the two webhook routes (``{account}`` is ``[^/]+``).
WEBHOOK_PATH = re.compile(r"/webhooks/([^/]+)/(inbound|status)")


class FaxrelayApp(Starlette):
    """Starlette, with the provider webhooks dispatched ahead of its middleware and router.

    The webhook routes take nearly all the traffic, and on them Starlette's error and exception
    middleware (a Request and two closures per call) and the route scan cost a tenth of the whole
    webhook. The routes stay in the router as well, which answers every other method and path.
    """

    def __init__(self, *, webhooks: dict[str, WebhookEndpoint], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.webhooks = webhooks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            match = WEBHOOK_PATH.fullmatch(scope["path"])
            if match is not None:
                scope["app"] = self
                scope["path_params"] = {"account": match[1]}
                await self.webhooks[match[2]](scope, receive, send)
                return
        await super().__call__(scope, receive, send)


async def flush_metrics_every(seconds: float) -> None:
    """Writes the webhook metrics counted in process (see ``metrics.webhook``) to /metrics."""
    while True:
        await asyncio.sleep(seconds)
        metrics.flush_webhooks()


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    configure_logging("web")
    # A connection that died with a Redis restart is retried on a fresh one (every write here is
    # idempotent: records are deduplicated), so the first webhook after a restart is not a 503.
    client = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=5,
        socket_connect_timeout=2,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    store = AsyncFaxStore(client)
    archive = Archive.from_settings(settings)
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

    async def metrics_view(request: Request) -> Response:
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
        yield
        flusher.cancel()
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
        *dashboard.routes(),
    ]
    return FaxrelayApp(webhooks=endpoints, routes=routes, lifespan=lifespan)
