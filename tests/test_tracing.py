"""Tracing (FAXRELAY_OTEL, config/tracing.py): one trace from the webhook through the hand-built
Celery message to the archive step and the event delivery, and from ``POST /v1/faxes`` to the
provider submit; and nothing of OpenTelemetry loaded when it is off.

Two ways in: in process, the SDK's in-memory exporter sees a span opened around a hand-built
message and the span of the task a real Celery worker (in a thread, on the real Redis broker)
runs from it; end to end, the web app and the worker as processes export over OTLP/HTTP (the
production exporter, set up by the standard OTEL_* variables) to a loopback collector here.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from config import tracing
from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.system import ROOT, SUBSCRIBER_SECRET, System, sandbox_fire, wait_for
from worker.fastpath.messages import task_message
from worker.store.records import dedup_key

# --- off: free ------------------------------------------------------------------------------


def test_off_by_default_nothing_of_opentelemetry_is_imported(redis_url: str) -> None:
    """The web app, the worker's tasks and a hand-built wake-up, with FAXRELAY_OTEL unset, load
    no OpenTelemetry module beyond those redis-py loads itself (its metrics hooks import the
    SDK's metrics part when it is installed; none of tracing)."""
    code = """
import sys
import redis
theirs = set(sys.modules)
from config.settings import Settings
from config import tracing
from webhooks.app import create_app
import worker.tasks
from worker.fastpath.messages import task_message
create_app(Settings(redis_url=sys.argv[1]))
message = task_message("faxrelay.handle_inbound", "q", ["fx_1"], headers=tracing.carrier())
assert "traceparent" not in message, message
print(tracing.on, sorted(m for m in set(sys.modules) - theirs if "opentelemetry" in m))
"""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", code, redis_url],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "False []"


# --- in process: the in-memory exporter, a real Celery worker ----------------------------------


@pytest.fixture
def memory() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert tracing.setup(True, "worker", exporter=exporter)
    yield exporter
    tracing.shutdown()


def test_the_hand_built_message_carries_the_trace_to_the_task(
    redis_url: str, memory: InMemorySpanExporter
) -> None:
    app = Celery("tracing-test", broker=redis_url, backend=None)
    app.conf.update(worker_hijack_root_logger=False, task_ignore_result=True)
    seen: list[str | None] = []

    @app.task(name="tracing.probe")
    def probe(value: str) -> None:
        seen.append(getattr(probe.request, "traceparent", None))

    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING"):
        with tracing.span("webhook inbound") as webhook:
            assert webhook is not None
            message = task_message("tracing.probe", "celery", ["x"], headers=tracing.carrier())
        redis.Redis.from_url(redis_url).lpush("celery", message)
        wait_for(lambda: seen, 30, "the probe task to run")
        task_span = wait_for(
            lambda: [s for s in memory.get_finished_spans() if s.name == "celery tracing.probe"],
            10,
            "the task's span",
        )[0]

    ctx = webhook.get_span_context()
    assert seen[0] is not None
    assert seen[0].split("-")[1:3] == [f"{ctx.trace_id:032x}", f"{ctx.span_id:016x}"]
    assert task_span.context.trace_id == ctx.trace_id
    assert task_span.parent is not None and task_span.parent.span_id == ctx.span_id
    assert json.loads(message)["headers"]["task"] == "tracing.probe"  # the envelope still whole


# --- end to end: the processes export over OTLP to a collector here -----------------------------


@dataclass
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    service: str
    process: str
    attributes: dict[str, str]


class Collector:
    """A loopback OTLP/HTTP endpoint (``POST /v1/traces``, protobuf) that keeps every span, and a
    loopback event subscriber (``POST /events``)."""

    def __init__(self) -> None:
        spans: list[Span] = []
        events: list[bytes] = []
        lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.path == "/v1/traces":
                    if self.headers.get("content-encoding") == "gzip":
                        body = gzip.decompress(body)
                    request = ExportTraceServiceRequest.FromString(body)
                    with lock:
                        spans.extend(_spans(request))
                else:
                    events.append(body)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.spans, self.events, self.lock = spans, events, lock
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def trace(self, trace_id: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def close(self) -> None:
        self.server.shutdown()


def _spans(request: ExportTraceServiceRequest) -> Iterator[Span]:
    for resource_spans in request.resource_spans:
        attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                yield Span(
                    s.name,
                    s.trace_id.hex(),
                    s.span_id.hex(),
                    s.parent_span_id.hex(),
                    attributes.get("service.name", ""),
                    attributes.get("faxrelay.process", ""),
                    {a.key: a.value.string_value for a in s.attributes},
                )


@pytest.fixture(scope="module")
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.close()


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory,
    s3_server: str,
    sandbox_server: Any,
    collector: Collector,
) -> Iterator[System]:
    subscriber = (
        f'[[subscribers]]\nurl = "{collector.url}/events"\nsecret = "{SUBSCRIBER_SECRET}"\n'
        'types = ["fax.archived"]\n'
    )
    s = System(
        tmp_path_factory.mktemp("tracing"),
        s3_server,
        sandbox_server.url,
        BUCKET,
        extra_config=subscriber,
        env_overrides={
            "FAXRELAY_OTEL": "1",
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_SERVICE_NAME": "faxrelay-under-test",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within a tenth of a second
        },
    ).start()
    yield s
    s.stop()


def _trace_of(collector: Collector, first: str, fax_id: str) -> str:
    """The trace of the web app's span named ``first`` for ``fax_id`` (it may be exported after
    the workers' spans: each process exports on its own)."""

    def found() -> list[Span]:
        with collector.lock:
            return [
                s
                for s in collector.spans
                if s.name == first and s.attributes.get("faxrelay.fax_id") == fax_id
            ]

    return wait_for(found, 30, f"the {first!r} span of {fax_id}")[0].trace_id


def _trace_holding(collector: Collector, trace_id: str, *names: str) -> list[Span]:
    """The trace's spans, once it holds a span of each name in ``names``."""

    def whole() -> list[Span] | None:
        spans = collector.trace(trace_id)
        return spans if set(names) <= {s.name for s in spans} else None

    return wait_for(whole, 30, f"spans {names} in trace {trace_id}")


def _chain(spans: list[Span], *names: str) -> list[Span]:
    """The spans named ``names``, each the child of the one before; fails naming what is missing."""
    by_name = {s.name: s for s in spans}
    missing = [n for n in names if n not in by_name]
    assert not missing, f"missing {missing} in {[(s.name, s.process) for s in spans]}"
    chain = [by_name[n] for n in names]
    for parent, child in itertools.pairwise(chain):
        assert child.parent_id == parent.span_id, (parent, child)
    return chain


def test_one_trace_from_the_webhook_to_the_archive_and_the_event(
    system: System, sandbox: Any, collector: Collector
) -> None:
    fax = dict(sandbox.control("inbound", provider="primevox"))
    answer = sandbox_fire(
        sandbox.url, provider="primevox", kind="inbound", url=system.webhook_url("pv"), id=fax["id"]
    )
    assert answer["status"] == 200, answer
    ref = system.store().redis.get(dedup_key("in:pv", fax["id"]))
    assert ref is not None
    fax_id = json.loads(ref)["id"]
    system.wait_state(fax_id, "archived")
    wait_for(lambda: collector.events, 30, "the fax.archived event")

    trace_id = _trace_of(collector, "webhook inbound", fax_id)
    chain = ("webhook inbound", "celery faxrelay.handle_inbound", "archive", "provider download")
    spans = _trace_holding(collector, trace_id, "celery faxrelay.deliver_event", *chain)
    webhook, task, archive, _ = _chain(spans, *chain)
    assert (webhook.process, task.process) == ("web", "worker")
    assert {s.service for s in spans} == {"faxrelay-under-test"}
    deliveries = [s for s in spans if s.name == "celery faxrelay.deliver_event"]
    # Woken by the archive step's save (the event is written with the move to archived).
    assert deliveries and all(d.parent_id == archive.span_id for d in deliveries), deliveries


def test_one_trace_from_the_api_to_the_provider_submit(
    system: System, sandbox: Any, collector: Collector
) -> None:
    pdf = make_pdf(1, 0, label=f"tracing {uuid.uuid4().hex}")
    with system.api() as api:
        answer = api.post(
            "/v1/faxes",
            json={
                "account": "ci",
                "to": "5552010123",
                "document": {"base64": base64.b64encode(pdf).decode()},
            },
        )
    assert answer.status_code == 202, answer.text
    fax_id = answer.json()["id"]
    system.wait_state(fax_id, "submitted", "sending", "delivered", timeout=60)

    trace_id = _trace_of(collector, "POST /v1/faxes", fax_id)
    chain = ("POST /v1/faxes", "celery faxrelay.submit_fax", "provider submit")
    request, task, submit = _chain(_trace_holding(collector, trace_id, *chain), *chain)
    assert (request.process, task.process, submit.process) == ("web", "worker", "worker")
    assert submit.attributes["faxrelay.account"] == "ci"
