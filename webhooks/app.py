"""The web app: provider webhooks, the send/status API, health, metrics and the dashboard.

``create_app()`` reads settings once; run it with ``uvicorn --factory webhooks.app:create_app``.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator

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

from config.logging import configure_logging
from config.settings import Settings, get_settings
from worker import metrics
from worker.archive import Archive
from worker.runtime import get_runtime
from worker.store import AsyncFaxStore

from . import stats
from .api import FaxApi
from .dashboard import Dashboard
from .intake import IntakeContext, WebhookEndpoint, WebhookRoutes


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
        yield
        await client.aclose()

    routes = [
        # The webhooks first: the router tries routes in order, and they take the most traffic.
        Route("/webhooks/{account}/inbound", WebhookEndpoint(intake, "inbound"), methods=["POST"]),
        Route("/webhooks/{account}/status", WebhookEndpoint(intake, "status"), methods=["POST"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_view, methods=["GET"]),
        Route("/v1/faxes", api.create, methods=["POST"]),
        Route("/v1/faxes", api.list, methods=["GET"]),
        Route("/v1/faxes/{fax_id}", api.get, methods=["GET"]),
        Route("/v1/faxes/{fax_id}/cancel", api.cancel, methods=["POST"]),
        *dashboard.routes(),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
