"""The fault windows of "nothing lost, nothing sent twice", each provoked for real, in process:
the steps run against real Valkey, SeaweedFS and the sandbox over HTTP; a fault is a process
killed at a chosen line (``tests/crashpoint.py``), a reply lost on the wire
(``tests/faultproxy.py``), or two workers interleaved at a chosen line (``pause_after``).

The queue-driven send and the 503s, which need the Celery worker and the web app, are in
``test_fault_windows_e2e.py``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import CodeType, FrameType
from typing import Any
from urllib.parse import urlparse

import pytest

from config.settings import Settings
from sandbox import primevox as sb_primevox
from sandbox import ucx as sb_ucx
from sandbox import voipms as sb_voipms
from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.faultproxy import fault_proxy
from tests.sandbox_server import RunningSandbox
from tests.system import SUBSCRIBER_SECRET, wait_for
from worker.domain import Direction, FaxRecord, parse_iso, utcnow
from worker.pipeline import inbound, sweeper
from worker.pipeline.outbound import accept, actions, follow
from worker.pipeline.retention import dedup_expiry
from worker.pipeline.steps import save_step
from worker.providers.base import CONTENT_ID_PREFIX, InboundFax, content_id
from worker.retry import INTERRUPTED
from worker.runtime import Runtime
from worker.store import keys
from worker.store.records import FaxStore

Sent = list[tuple[str, str, list[str]]]
ROOT = Path(__file__).resolve().parent.parent


def settings_for(
    redis_url: str, s3_server: str, sandbox: RunningSandbox, **overrides: Any
) -> Settings:
    """The settings of a worker on the sandbox's UCX (deleting after archive), voip.ms and
    PrimeVox accounts; ``values_json`` gives them as JSON, for a worker in a child process."""
    accounts = {
        "ucx": {
            "provider": "ucx",
            "base_url": sandbox.base_url("ucx"),
            "client_id": sb_ucx.CLIENT_ID,
            "client_secret": sb_ucx.CLIENT_SECRET,
            "fax_id": sb_ucx.FAX_ID,
            "reconcile_interval": 0,
            "delete_after_archive": True,
        },
        "vm": {
            "provider": "voipms",
            "base_url": sandbox.base_url("voipms"),
            "api_username": sb_voipms.API_USERNAME,
            "api_password": sb_voipms.API_PASSWORD,
            "from_number": sb_voipms.FAX_NUMBER,
            "reconcile_interval": 0,
        },
        "pv": {
            "provider": "primevox",
            "base_url": sandbox.base_url("primevox"),
            "auth": sb_primevox.VALID_AUTH,
            "container_id": sb_primevox.VALID_CONTAINER,
            "box_id": sb_primevox.VALID_BOX,
        },
    }
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "s3_endpoint_url": s3_server,
        "s3_bucket": BUCKET,
        "s3_prefix": f"t-{uuid.uuid4().hex[:8]}/",
        "retry_scale": 0.01,
        "accounts": accounts,
        "subscribers": ({"url": "http://127.0.0.1:9/events", "secret": SUBSCRIBER_SECRET},),
        **overrides,
    }
    settings = Settings(**values)
    _VALUES[id(settings)] = json.dumps(values)
    return settings


_VALUES: dict[int, str] = {}  # the settings as made, secrets in clear, for a child process


def values_json(settings: Settings) -> str:
    return _VALUES[id(settings)]


def runtime_for(settings: Settings) -> tuple[Runtime, Sent]:
    """A worker's runtime; the wake-ups it publishes are kept, not run."""
    sent: Sent = []
    return Runtime(settings, lambda task, queue, args: sent.append((task, queue, args))), sent


@pytest.fixture
def rt(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> Iterator[tuple[Runtime, Sent, Settings]]:
    settings = settings_for(redis_url, s3_server, sandbox)
    runtime, sent = runtime_for(settings)
    yield runtime, sent, settings


def pdf() -> bytes:
    return make_pdf(1, label=f"fault windows {uuid.uuid4().hex}")


def send(runtime: Runtime, account: str, to: str, key: str = "") -> FaxRecord:
    request = accept.SendRequest(
        account=account,
        to=to,
        document={"base64": base64.b64encode(pdf()).decode()},
        idempotency_key=key,
    )
    return accept.accept_send(runtime, request).record


def event_types(runtime: Runtime, fax_id: str) -> list[str]:
    """The events recorded for the fax (their deliveries in Redis), oldest first."""
    found = []
    for key in runtime.store.redis.scan_iter(f"{keys.DELIVERY_PREFIX}*"):
        entry = json.loads(runtime.store.redis.get(key) or "{}")
        if entry.get("fax_id") == fax_id:
            body = json.loads(entry["body"])
            found.append((body["timestamp"], body["type"]))
    return [t for _, t in sorted(found)]


def notes(record: FaxRecord) -> str:
    return "\n".join(str(h.get("note", "")) for h in record.history)


# --- interleaving two workers at a chosen line ------------------------------------------------


@contextmanager
def pause_after(code: CodeType) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Threads started inside stop when a call of ``code`` returns, until ``go`` is set:
    ``(paused, go)``. Lets a test put a second worker's write between a read and a write."""
    paused, go = threading.Event(), threading.Event()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code is code and event == "return" and not paused.is_set():
            paused.set()
            go.wait(30)
        return tracer if frame.f_code is code else None

    def global_tracer(frame: FrameType, event: str, arg: Any) -> Any:
        return tracer if frame.f_code is code else None

    threading.settrace(global_tracer)
    try:
        yield paused, go
    finally:
        threading.settrace(None)
        go.set()


# --- 1. events and owed clean-up are one write with the move ------------------------------------

CRASH_AFTER_SAVE = """
import os, sys, threading
from config.settings import Settings
from worker.runtime import Runtime
from worker.store.records import FaxStore
from worker.pipeline import inbound

import json
settings = Settings(**json.loads(sys.argv[1]))
runtime = Runtime(settings, lambda *a: None)
target = sys.argv[3]

def tracer(frame, event, arg):
    # The process dies the moment the record's move to the target state is written: nothing
    # after that write runs (as a SIGKILL or an OOM kill there would have it).
    if event == "return" and frame.f_code is FaxStore.update.__code__:
        if arg is not None and str(arg[0].state) == target:
            os._exit(9)
    return tracer

sys.settrace(lambda f, e, a: tracer if f.f_code is FaxStore.update.__code__ else None)
threading.settrace(lambda f, e, a: None)
inbound.archive_fax(runtime, sys.argv[2])
os._exit(0)
"""


def run_until_crash(settings: Settings, fax_id: str, state: str) -> int:
    """Archive ``fax_id`` in a worker process that dies right after it writes ``state``."""
    done = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_SAVE, values_json(settings), fax_id, state],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    return done.returncode


def test_a_worker_killed_right_after_archiving_loses_neither_the_event_nor_the_clean_up(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    settings = settings_for(redis_url, s3_server, sandbox, lease_seconds=1.0)
    runtime, sent = runtime_for(settings)
    sandbox.control("inbound", provider="ucx", pages=1)
    [fax_id] = inbound.reconcile(runtime, "ucx")

    assert run_until_crash(settings, fax_id, "archived") == 9
    record = runtime.store.get(fax_id)
    assert record.state == "archived"
    # The archived event was written by the same script as the move.
    assert event_types(runtime, fax_id) == ["fax.received", "fax.archived"]
    # The provider-side delete it owes (delete_after_archive) is in the record, and due.
    assert record.work.get("owed") == ["provider_delete"]
    assert not sandbox.requests("ucx", "recorddelete")

    # The dead worker's lease lapses; the sweeper wakes the record for what it owes.
    wait_for(lambda: not runtime.store.redis.exists(keys.lease_key(fax_id)), 10, "the lease")
    runtime.store.redis.zadd(keys.DUE, {fax_id: 0})  # due now rather than after wake_grace
    sent.clear()
    sweeper.sweep(runtime)
    [(task, _, _)] = [s for s in sent if s[2] == [fax_id]]
    assert task == "faxrelay.archive_fax"
    inbound.archive_fax(runtime, fax_id)
    assert len(sandbox.requests("ucx", "recorddelete")) == 1
    done = runtime.store.get(fax_id)
    assert "owed" not in done.work and done.due_at is None


def test_a_failed_provider_delete_is_retried_until_done(
    rt: tuple[Runtime, Sent, Settings], sandbox: RunningSandbox
) -> None:
    runtime, _, _ = rt
    sandbox.control("inbound", provider="ucx", pages=1)
    [fax_id] = inbound.reconcile(runtime, "ucx")
    sandbox.control("faults", provider="ucx", operation="recorddelete", kind="error", status=503)
    inbound.archive_fax(runtime, fax_id)

    record = runtime.store.get(fax_id)
    assert record.state == "archived" and record.work.get("owed") == ["provider_delete"]
    assert record.due_at is not None  # final, yet due: the clean-up is retried
    runtime.store.redis.zadd(keys.DUE, {fax_id: 0})
    sweeper.sweep(runtime)
    inbound.archive_fax(runtime, fax_id)
    assert [r["status"] for r in sandbox.requests("ucx", "recorddelete")] == [503, 200]
    assert "owed" not in runtime.store.get(fax_id).work


def test_a_staged_pdf_that_is_not_a_pdf_is_removed_when_the_fax_fails(
    rt: tuple[Runtime, Sent, Settings],
) -> None:
    runtime, _, _ = rt
    fax = InboundFax(provider_fax_id=f"cb-{uuid.uuid4().hex[:8]}", from_number="5552340000")
    record, dedup = inbound.new_inbound(runtime, "vm", fax)
    staged = runtime.archive.key_for("staging", record)
    runtime.archive.put_file(staged, io.BytesIO(b"<html>not a fax</html>"))
    record.work["staged_key"] = staged
    runtime.store.create(record, dedup=dedup)

    inbound.archive_fax(runtime, record.id)

    failed = runtime.store.get(record.id)
    assert (failed.state, failed.reason) == ("failed", "not_pdf")
    assert failed.archive["key"].startswith(f"{runtime.archive.prefix}quarantine/")
    listed = runtime.archive.client.list_objects_v2(Bucket=runtime.archive.bucket, Prefix=staged)
    assert listed.get("KeyCount", 0) == 0, "the staged copy is still there"


# --- 4. a lost submit never takes another send's job --------------------------------------------


def lost_submit(runtime: Runtime, fax_id: str) -> None:
    """What a worker killed mid-submit leaves: the attempt recorded, its answer not."""
    save_step(runtime, fax_id, None, work={"submit_started": time.time() - 1, "reference": "x"})


def test_a_lost_ucx_submit_does_not_adopt_the_job_of_another_fax(
    rt: tuple[Runtime, Sent, Settings], sandbox: RunningSandbox
) -> None:
    runtime, _, _ = rt
    sandbox.control("duration", provider="ucx", seconds=120)
    other = send(runtime, "ucx", "14695550161")
    follow.submit_fax(runtime, other.id)
    owned = runtime.store.get(other.id).provider_ids["job_id"]

    mine = send(runtime, "ucx", "14695550161")  # the same number, its request never arrived
    lost_submit(runtime, mine.id)
    follow.submit_fax(runtime, mine.id)

    record = runtime.store.get(mine.id)
    assert record.state == "unknown" and record.reason == "submit_outcome_unknown"
    assert record.provider_ids.get("job_id", "") != owned
    assert "owned by other faxes" in record.reason_detail
    assert len(sandbox.requests("ucx", "filesend")) == 1
    assert runtime.store.get(other.id).provider_ids["job_id"] == owned


def test_a_lost_ucx_submit_adopts_its_own_job_when_it_is_the_only_unowned_one(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    runtime, _ = runtime_for(settings_for(redis_url, s3_server, sandbox))
    impatient, _ = runtime_for(settings_for(redis_url, s3_server, sandbox, read_timeout=0.5))
    sandbox.control("duration", provider="ucx", seconds=120)
    other = send(runtime, "ucx", "14695550162")
    follow.submit_fax(runtime, other.id)  # another fax's job to the same number, owned
    # This one's answer is lost (the sandbox answers too late: the request did arrive).
    sandbox.control("faults", provider="ucx", operation="filesend", kind="late", seconds=2)
    mine = send(runtime, "ucx", "14695550162")
    follow.submit_fax(impatient, mine.id)

    record = runtime.store.get(mine.id)
    assert record.state == "submitted", record.public()
    jobs = {runtime.store.get(other.id).provider_ids["job_id"], record.provider_ids["job_id"]}
    assert len(jobs) == 2 and len(sandbox.requests("ucx", "filesend")) == 2
    assert "answer was lost" in notes(record)


def test_a_lost_ucx_submit_does_not_adopt_a_job_that_another_lost_submit_may_own(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    """Two sends to one number, both answers lost: UCX lists nothing that tells their jobs apart,
    so the one job listed cannot be given to either (the chaos soak's wrong attribution)."""
    runtime, _ = runtime_for(settings_for(redis_url, s3_server, sandbox))
    impatient, _ = runtime_for(settings_for(redis_url, s3_server, sandbox, read_timeout=0.5))
    sandbox.control("duration", provider="ucx", seconds=120)
    # The other send's request arrives but its answer comes too late, and its own look-up
    # fails for now: it holds no job, and its job is listed unowned.
    sandbox.control("faults", provider="ucx", operation="filesend", kind="late", seconds=2)
    sandbox.control("faults", provider="ucx", operation="activejobs", kind="error", status=503)
    other = send(runtime, "ucx", "14695550163")
    follow.submit_fax(impatient, other.id)
    assert not runtime.store.get(other.id).provider_ids.get("job_id")
    assert len(sandbox.requests("ucx", "filesend")) == 1

    mine = send(runtime, "ucx", "14695550163")  # the same number, its request never arrived
    lost_submit(runtime, mine.id)
    follow.submit_fax(runtime, mine.id)

    record = runtime.store.get(mine.id)
    assert record.state == "unknown" and not record.provider_ids.get("job_id"), record.public()
    assert other.id in record.reason_detail and "tells their jobs apart" in record.reason_detail


def test_a_voipms_send_is_matched_by_its_own_reference_never_by_the_number(
    rt: tuple[Runtime, Sent, Settings], sandbox: RunningSandbox
) -> None:
    runtime, _, _ = rt
    sandbox.control("duration", provider="voipms", seconds=0.2)
    other = send(runtime, "vm", "5552345671")
    follow.submit_fax(runtime, other.id)
    submitted = runtime.store.get(other.id)
    [sent_fax] = sandbox.requests("voipms", "sendFaxMessage")
    assert submitted.provider_ids["job_id"] == sent_fax["fields"]["station_id"]
    wait_for(lambda: poll_until_final(runtime, other.id) == "delivered", 20, "delivered")

    # A second send to the same number whose request never reached voip.ms.
    mine = send(runtime, "vm", "5552345671")
    lost_submit(runtime, mine.id)
    follow.submit_fax(runtime, mine.id)
    record = runtime.store.get(mine.id)
    assert record.state == "unknown", record.public()
    assert len(sandbox.requests("voipms", "sendFaxMessage")) == 1


def poll_until_final(runtime: Runtime, fax_id: str) -> str:
    save_step(runtime, fax_id, None, due_at=time.time(), drop_work=("not_before",))
    follow.poll_fax(runtime, fax_id)
    return str(runtime.store.get(fax_id).state)


# --- 5. a retried create never deletes what its record needs ------------------------------------


def test_a_create_whose_answer_was_lost_keeps_its_document(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    port = urlparse(redis_url).port
    assert port is not None
    with fault_proxy(port) as proxy:
        settings = settings_for(f"redis://{proxy.url_host}/0", s3_server, sandbox)
        runtime, sent = runtime_for(settings)
        send(runtime, "pv", "5552345672", key=f"warm-{uuid.uuid4().hex}")  # scripts loaded
        proxy.cut_answer_to(b"EVALSHA")  # the create runs in Redis; its answer is lost
        record = send(runtime, "pv", "5552345673", key=f"k-{uuid.uuid4().hex}")
        assert proxy.cuts == 1  # the client sent the script again, on a new connection
    store = FaxStore.from_url(redis_url)
    stored = store.get(record.id)
    assert stored.document_key == record.document_key
    head = runtime.archive.client.head_object(Bucket=BUCKET, Key=record.document_key)
    assert head["ContentLength"] > 0  # the record's document is still there
    assert [s for s in sent if s[2] == [record.id]]  # and its submit was woken (202, created)


def test_the_create_script_answers_created_to_a_rerun_of_the_same_record(store: FaxStore) -> None:
    record = FaxRecord.new(Direction.OUTBOUND, "a", "ucx")
    first = store.create(record, dedup="fr:key:idem:a:k1", fingerprint="f")
    again = store.create(record, dedup="fr:key:idem:a:k1", fingerprint="f")
    assert first.created and again.created and again.record.id == record.id
    other = FaxRecord.new(record.direction, "a", "ucx")
    duplicate = store.create(other, dedup="fr:key:idem:a:k1", fingerprint="f")
    assert not duplicate.created and duplicate.record.id == record.id


# --- 6. cancel racing submit; the submit lease; interrupted steps -------------------------------


def test_a_cancel_between_the_submits_read_and_its_write_stops_the_submit(
    rt: tuple[Runtime, Sent, Settings], sandbox: RunningSandbox
) -> None:
    runtime, _, _ = rt
    fax = send(runtime, "pv", "5552345674")
    with pause_after(FaxStore.find.__code__) as (paused, go), ThreadPoolExecutor(1) as pool:
        submitting = pool.submit(follow.submit_fax, runtime, fax.id)
        assert paused.wait(10)  # the submit step has read the queued record
        threading.settrace(None)
        cancelled = actions.cancel_fax(runtime, fax.id)
        go.set()
        submitting.result(30)
    assert cancelled.state == "cancelled"
    assert runtime.store.get(fax.id).state == "cancelled"
    assert not sandbox.requests("primevox", "send"), "a cancelled fax was transmitted"
    assert event_types(runtime, fax.id) == ["fax.cancelled"]


def test_a_long_submit_keeps_its_lease_so_no_second_worker_resolves_it(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    settings = settings_for(redis_url, s3_server, sandbox, lease_seconds=1.0)
    runtime, _ = runtime_for(settings)
    sandbox.control("faults", provider="primevox", operation="send", kind="hang", seconds=4)
    fax = send(runtime, "pv", "5552345675")
    with ThreadPoolExecutor(1) as pool:
        first = pool.submit(follow.submit_fax, runtime, fax.id)
        wait_for(lambda: sandbox.requests("primevox", "send"), 10, "the submit to arrive")
        # Twice the lease passes while the submit hangs; then the sweeper's wake-up comes.
        time.sleep(2 * settings.lease_seconds)
        follow.submit_fax(runtime, fax.id)
        first.result(30)
    record = runtime.store.get(fax.id)
    assert record.state == "submitted", record.public()
    assert "unknown" not in [h["state"] for h in record.history]
    assert len(sandbox.requests("primevox", "send")) == 1


KILL_DURING_DOWNLOAD = """
import sys
from config.settings import Settings
from worker.runtime import Runtime
from worker.pipeline import inbound
import json
runtime = Runtime(Settings(**json.loads(sys.argv[1])), lambda *a: None)
inbound.archive_fax(runtime, sys.argv[2])
"""


def test_a_step_killed_again_and_again_ends_failed_not_woken_for_ever(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    """A download that never ends: each run is killed (as a hard time limit kills the pool
    child); after ``retry.INTERRUPTED``'s runs the fax fails with a reason."""
    settings = settings_for(redis_url, s3_server, sandbox, lease_seconds=0.5)
    runtime, _ = runtime_for(settings)
    sandbox.control("inbound", provider="ucx", pages=1)
    [fax_id] = inbound.reconcile(runtime, "ucx")
    assert INTERRUPTED.max_attempts is not None
    for run in range(INTERRUPTED.max_attempts):
        sandbox.control("faults", provider="ucx", operation="filedownload", kind="hang", seconds=60)
        worker = subprocess.Popen(
            [sys.executable, "-c", KILL_DURING_DOWNLOAD, values_json(settings), fax_id],
            cwd=ROOT,
        )
        try:
            wait_for(
                lambda n=run: len(sandbox.requests("ucx", "filedownload")) > n,  # type: ignore[misc]
                30,
                "the download to start",
            )
        finally:
            worker.kill()
            worker.wait(10)
        wait_for(lambda: not runtime.store.redis.exists(keys.lease_key(fax_id)), 10, "lease")
    inbound.archive_fax(runtime, fax_id)
    record = runtime.store.get(fax_id)
    assert (record.state, record.reason) == ("failed", "time_limit"), record.public()
    assert f"{INTERRUPTED.max_attempts} times in a row" in record.reason_detail
    assert record.due_at is None


@contextmanager
def soft_time_limit(seconds: float) -> Iterator[None]:
    """Celery's soft time limit as the pool child gets it: a signal whose handler raises
    ``SoftTimeLimitExceeded`` in the task's (main) thread after ``seconds``."""
    from celery.exceptions import SoftTimeLimitExceeded

    def expire(signum: int, frame: FrameType | None) -> None:
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_a_download_over_its_soft_time_limit_retries_then_fails_with_a_reason(
    rt: tuple[Runtime, Sent, Settings], sandbox: RunningSandbox
) -> None:
    runtime, _, _ = rt
    sandbox.control("inbound", provider="ucx", pages=1)
    [fax_id] = inbound.reconcile(runtime, "ucx")
    assert INTERRUPTED.max_attempts is not None
    for run in range(INTERRUPTED.max_attempts):
        sandbox.control("faults", provider="ucx", operation="filedownload", kind="hang", seconds=30)
        wait_for(
            lambda: not runtime.store.get(fax_id).scheduled_later(time.time()), 10, "retry due"
        )
        with soft_time_limit(0.5):
            inbound.archive_fax(runtime, fax_id)
        record = runtime.store.get(fax_id)
        if run + 1 < INTERRUPTED.max_attempts:
            assert record.state == "fetching" and record.attempts["time_limit"] == run + 1
            assert "time limit" in record.work["last_error"]
    assert (record.state, record.reason) == ("failed", "time_limit"), record.public()
    assert event_types(runtime, fax_id)[-1] == "fax.failed"


def test_a_submit_over_its_soft_time_limit_is_a_lost_submit_never_a_resend(
    rt: tuple[Runtime, Sent, Settings], sandbox: RunningSandbox
) -> None:
    runtime, _, _ = rt
    sandbox.control("faults", provider="primevox", operation="send", kind="hang", seconds=30)
    fax = send(runtime, "pv", "5552345676")
    with soft_time_limit(1.0):
        follow.submit_fax(runtime, fax.id)
    record = runtime.store.get(fax.id)
    assert (record.state, record.reason) == ("unknown", "submit_outcome_unknown")
    assert "time limit" in record.reason_detail
    follow.submit_fax(runtime, fax.id)  # another wake-up: still never sent twice
    assert len(sandbox.requests("primevox", "send")) == 1


def test_a_fax_is_not_called_a_duplicate_of_one_that_is_not_archived_yet(
    rt: tuple[Runtime, Sent, Settings], sandbox: RunningSandbox
) -> None:
    """voip.ms tells of one fax twice: a callback with the PDF and no id (a record known by its
    content) and its listing under voip.ms's id. While the first holds the PDF but has not
    archived it, the second must wait, not end as its duplicate (the first may yet fail)."""
    runtime, _, _ = rt
    listed = sandbox.control("inbound", provider="voipms", pages=1)
    assert isinstance(listed, dict)
    by_id = inbound.create_inbound(runtime, "vm", InboundFax(provider_fax_id=str(listed["id"])))
    spool = io.BytesIO()
    runtime.provider("vm").download(inbound.inbound_fax_of(by_id.record), spool, 10**7)
    pdf_bytes = spool.getvalue()
    digest = hashlib.sha256(pdf_bytes).hexdigest()
    callback, dedup = inbound.new_inbound(
        runtime, "vm", InboundFax(provider_fax_id=content_id(digest))
    )
    staged = runtime.archive.key_for("staging", callback)
    runtime.archive.put_file(staged, io.BytesIO(pdf_bytes))
    callback.work["staged_key"] = staged
    runtime.store.create(callback, dedup=dedup)

    owner = inbound._content_owner.__code__
    with pause_after(owner) as (paused, go), ThreadPoolExecutor(1) as pool:
        first = pool.submit(inbound.archive_fax, runtime, callback.id)
        assert paused.wait(20)  # it holds the PDF's content, not archived yet
        threading.settrace(None)
        inbound.archive_fax(runtime, by_id.record.id)
        waiting = runtime.store.get(by_id.record.id)
        assert waiting.state == "fetching", waiting.public()
        assert "holds the same PDF" in waiting.work["last_error"]
        go.set()
        first.result(30)
    assert runtime.store.get(callback.id).state == "archived"
    wait_for(lambda: not runtime.store.get(by_id.record.id).scheduled_later(time.time()), 10, "due")
    inbound.archive_fax(runtime, by_id.record.id)
    ended = runtime.store.get(by_id.record.id)
    assert (ended.state, ended.reason) == ("failed", "duplicate")
    assert callback.id in ended.reason_detail


def test_every_task_has_time_limits_and_the_broker_outlasts_them() -> None:
    from config import celery_app
    from worker import tasks

    assert tasks.send_fax.ignore_result is False
    visibility = celery_app.app.conf.broker_transport_options["visibility_timeout"]
    for name, task in celery_app.app.tasks.items():
        if not name.startswith("faxrelay."):
            continue
        soft = task.soft_time_limit or celery_app.app.conf.task_soft_time_limit
        hard = task.time_limit or celery_app.app.conf.task_time_limit
        assert soft and hard and soft < hard < visibility, name
        if name != "faxrelay.send_fax":
            assert task.ignore_result is not False or celery_app.app.conf.task_ignore_result
    assert visibility <= 30 * 60  # minutes, not hours: a dead worker's message comes back


def test_a_webhook_whose_record_cannot_be_written_leaves_no_staged_copy(
    redis_url: str,
    s3_server: str,
    sandbox: RunningSandbox,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """voip.ms's callback carries the PDF: it is staged in S3 before the record is written. If
    Redis is down then, the webhook is answered 503 (voip.ms sends it again) and its staged copy
    goes: no record will ever own it."""
    import anyio
    import httpx

    from config.settings import get_settings
    from sandbox import voipms as sb_voipms_module
    from webhooks.app import create_app
    from worker import runtime as runtime_module

    port = urlparse(redis_url).port
    assert port is not None
    listed = sandbox.control("inbound", provider="voipms", pages=1)
    assert isinstance(listed, dict)
    content_type, body = sb_voipms_module.inbound_webhook(
        sandbox.sb, str(listed["id"]), sandbox.url, {}
    )
    token = "fault-window-token"
    prefix = f"t-{uuid.uuid4().hex[:8]}/"
    config = tmp_path / "faxrelay.toml"
    config.write_text(
        f'[accounts.vm]\nprovider = "voipms"\nbase_url = "{sandbox.base_url("voipms")}"\n'
        f'webhook_token = "{token}"\napi_username = "{sb_voipms.API_USERNAME}"\n'
        f'api_password = "{sb_voipms.API_PASSWORD}"\nfrom_number = "{sb_voipms.FAX_NUMBER}"\n'
    )
    with fault_proxy(port) as proxy:
        # The web process's settings, as it reads them (environment and config file).
        for name, value in {
            "FAXRELAY_CONFIG": str(config),
            "FAXRELAY_REDIS_URL": f"redis://{proxy.url_host}/0",
            "FAXRELAY_S3_ENDPOINT_URL": s3_server,
            "FAXRELAY_S3_BUCKET": BUCKET,
            "FAXRELAY_S3_PREFIX": prefix,
        }.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        monkeypatch.setattr(runtime_module, "_runtime", None)  # built from those settings
        try:
            app = create_app()
            proxy.set_down(True)

            async def post() -> httpx.Response:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://fr") as c:
                    return await c.post(
                        f"/webhooks/vm/inbound?token={token}",
                        content=body,
                        headers={"content-type": content_type},
                    )

            answer = anyio.run(post)
        finally:
            get_settings.cache_clear()
    assert answer.status_code == 503, answer.text
    archive = runtime_module.Runtime(
        settings_for(redis_url, s3_server, sandbox, s3_prefix=prefix), lambda *a: None
    ).archive
    staged = archive.client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}staging/")
    assert staged.get("KeyCount", 0) == 0, staged.get("Contents")


def test_the_content_claim_of_a_fax_that_never_archives_has_a_lifetime(
    rt: tuple[Runtime, Sent, Settings],
) -> None:
    """A received fax whose upload keeps failing until the provider's copy expires ends
    ``expired`` with no sha256, by which retention would find its content claim: so the claim
    carries its expiry from the moment it is made (every key has a lifetime)."""
    runtime, _, settings = rt
    created = inbound.create_inbound(
        runtime, "pv", InboundFax(provider_fax_id=uuid.uuid4().hex, received_at=utcnow())
    )
    record = created.record
    assert record.expires_at  # PrimeVox keeps a received fax 30 days
    digest = hashlib.sha256(pdf()).hexdigest()
    assert inbound._content_owner(runtime, record, digest) is None  # the claim is this record's
    claim = keys.dedup_key(*inbound.inbound_dedup("pv", f"{CONTENT_ID_PREFIX}{digest}"))
    expires = parse_iso(record.expires_at)
    assert expires is not None
    expected = int(dedup_expiry(settings, record, expires.timestamp()))
    assert runtime.store.redis.expiretime(claim) == expected
    # It outlives the record, which leaves Redis this long after it fails at the copy's expiry.
    assert expected >= int(expires.timestamp() + settings.retention_seconds)
