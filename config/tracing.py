"""Optional OpenTelemetry tracing (``FAXRELAY_OTEL=1``, the ``faxrelay[otel]`` extra).

One trace follows a fax across processes: the webhook (or ``POST /v1/faxes``) in the web app,
the Celery message it writes, each task that message wakes, and the messages those tasks
publish in turn (the archive step, event deliveries, the submit and its provider call). The
context travels in the message headers as W3C ``traceparent`` / ``tracestate``: ``carrier()``
gives them to the hand-built messages of the webhook path (``worker.fastpath.messages``) and
to Celery's publisher (``worker.runtime``); a Celery task arrives with them on
``task.request``, where the ``task_prerun`` hook reads them.

The exporter is the SDK's, set by the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``,
the default: OTLP over HTTP to ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``; ``console``; ``none``), ``OTEL_SERVICE_NAME`` (default
``faxrelay``), ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_BSP_*``.

Off (the default) it costs nothing: opentelemetry is never imported, ``on`` is False, and the
callers on the webhook path test ``on`` (or get None from ``carrier()``) before anything else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from contextvars import Token

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

# True once ``setup`` has installed a tracer; read on every webhook, so a plain module global.
on = False
HEADERS = ("traceparent", "tracestate")  # the W3C trace context, as message headers
_tracer: Tracer | None = None
_provider: TracerProvider | None = None
# Celery task id -> its span and the context token to detach when it ends.
_running: dict[str, tuple[Span, Token[Context]]] = {}
_running_lock = threading.Lock()
Attributes = Mapping[str, str | int]


def setup(enabled: bool, process: str, exporter: SpanExporter | None = None) -> bool:
    """Install tracing for this process (``web`` or ``worker``) when ``enabled``; returns ``on``.

    ``exporter``: spans go there as they end (tests pass the SDK's in-memory exporter); without
    one the exporter the ``OTEL_*`` variables name, batched. A worker also gets its Celery hooks.
    """
    global on, _tracer, _provider
    if not enabled:
        return on
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    except ImportError:
        log.error("FAXRELAY_OTEL is set but opentelemetry is not installed: faxrelay[otel]")
        return on
    attributes: dict[str, str] = {"faxrelay.process": process}
    if not os.environ.get("OTEL_SERVICE_NAME"):  # else the SDK's resource detection names it
        attributes["service.name"] = "faxrelay"
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        configured = _configured_exporter()
        if configured is not None:
            provider.add_span_processor(BatchSpanProcessor(configured))
        # Other instrumentation in the process (if any) reports to the same provider.
        trace.set_tracer_provider(provider)
    if _provider is not None:
        _provider.shutdown()
    _provider = provider
    _tracer = provider.get_tracer("faxrelay")
    if process == "worker":
        _connect_celery()
    on = True
    return on


def _configured_exporter() -> SpanExporter | None:
    """The exporter ``OTEL_TRACES_EXPORTER`` names (the first of a list): otlp, console, none."""
    name = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")[0].strip().lower()
    if name == "none":
        return None
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        log.warning("OTEL_TRACES_EXPORTER=%s is not supported; using otlp", name)
    # Reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT … itself.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def shutdown() -> None:
    """Export what is still batched and stop (tests; a process exit does it by itself)."""
    global on, _tracer, _provider
    if _provider is not None:
        _provider.shutdown()
    on, _tracer, _provider = False, None, None


@contextlib.contextmanager
def span(name: str, attributes: Attributes | None = None) -> Iterator[Span | None]:
    """A span around the block, the current one's child (None, and nothing done, when off)."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, attributes=attributes) as current:
        yield current


def annotate(attributes: Attributes) -> None:
    """Attributes on the current span (e.g. the fax id once known)."""
    if _tracer is None:
        return
    from opentelemetry import trace

    trace.get_current_span().set_attributes(attributes)


def carrier() -> dict[str, str] | None:
    """The current trace context as message headers (``traceparent``…), or None when off."""
    if _tracer is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    headers: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(headers)
    return headers or None


# --- Celery: a span per task, the child of the context its message carried ---------------------


def _connect_celery() -> None:
    from celery import signals

    # weak=False: the handlers are module functions, but say so (Celery's default is weak refs).
    signals.task_prerun.connect(_task_started, weak=False, dispatch_uid="faxrelay-trace-start")
    signals.task_postrun.connect(_task_finished, weak=False, dispatch_uid="faxrelay-trace-end")


def _task_started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if _tracer is None or task_id is None or task is None:
        return
    from opentelemetry import context, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    request = getattr(task, "request", None)
    headers = {name: value for name in HEADERS if (value := getattr(request, name, None))}
    parent = TraceContextTextMapPropagator().extract(headers)
    started = _tracer.start_span(
        f"celery {task.name}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={"celery.task_id": task_id, "celery.task_name": str(task.name)},
    )
    token = context.attach(trace.set_span_in_context(started))
    with _running_lock:
        _running[task_id] = (started, token)


def _task_finished(task_id: str | None = None, state: str | None = None, **_: Any) -> None:
    if task_id is None:
        return
    with _running_lock:
        running = _running.pop(task_id, None)
    if running is None:
        return
    from opentelemetry import context
    from opentelemetry.trace import Status, StatusCode

    started, token = running
    if state and state not in ("SUCCESS", "RETRY"):
        started.set_status(Status(StatusCode.ERROR, state))
    started.end()
    with contextlib.suppress(ValueError):  # attached in another context (not expected)
        context.detach(token)
