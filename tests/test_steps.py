"""The archive step run in-process against real parts (Valkey, SeaweedFS, the sandbox over HTTP):
two workers on one record, an unforeseen failure, a wake-up from the sweeper."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import pytest

from config.settings import Settings
from sandbox import ucx as sb_ucx
from tests.conftest import BUCKET
from tests.sandbox_server import RunningSandbox
from tests.system import SUBSCRIBER_SECRET, wait_for
from worker.domain import FaxRecord, iso_at
from worker.pipeline import inbound
from worker.pipeline.events import DELIVERY_PREFIX
from worker.pipeline.outbound.accept import SendError
from worker.pipeline.outbound.actions import retry_fax
from worker.providers.base import InboundFax
from worker.runtime import ARCHIVE_TASK, EVENT_TASK, Runtime
from worker.store.records import dedup_key

Sent = list[tuple[str, str, list[str]]]


def make_runtime(
    redis_url: str,
    s3_server: str,
    sandbox: RunningSandbox,
    *,
    bucket: str = BUCKET,
    delete_after_archive: bool = False,
) -> tuple[Runtime, Sent]:
    """A worker's runtime on the UCX sandbox; the wake-ups it sends are kept, not run."""
    account = {
        "provider": "ucx",
        "base_url": sandbox.base_url("ucx"),
        "client_id": sb_ucx.CLIENT_ID,
        "client_secret": sb_ucx.CLIENT_SECRET,
        "fax_id": sb_ucx.FAX_ID,
        "reconcile_interval": 0,
        "delete_after_archive": delete_after_archive,
    }
    settings = Settings(
        redis_url=redis_url,
        s3_endpoint_url=s3_server,
        s3_bucket=bucket,
        s3_prefix=f"t-{uuid.uuid4().hex[:8]}/",
        retry_scale=0.01,
        accounts={"ucx": account},
        subscribers=({"url": "http://127.0.0.1:9/events", "secret": SUBSCRIBER_SECRET},),
    )
    sent: Sent = []
    return Runtime(settings, lambda task, queue, args: sent.append((task, queue, args))), sent


def received_fax(runtime: Runtime, sandbox: RunningSandbox) -> str:
    """A fax at UCX that the account's reconciliation recorded; its record's id."""
    sandbox.control("inbound", provider="ucx", pages=2)
    [fax_id] = inbound.reconcile(runtime, "ucx")
    return fax_id


def events(runtime: Runtime, sent: Sent, fax_id: str) -> list[dict[str, Any]]:
    """The events emitted about the fax, in order."""
    out = []
    for task, _, args in sent:
        raw = runtime.store.redis.get(DELIVERY_PREFIX + args[0]) if task == EVENT_TASK[0] else None
        if raw is not None and json.loads(raw)["fax_id"] == fax_id:
            out.append(json.loads(json.loads(raw)["body"]))
    return out


def set_fields(runtime: Runtime, fax_id: str, **work: Any) -> FaxRecord:
    def mutate(record: FaxRecord) -> None:
        record.expires_at = work.pop("expires_at", record.expires_at)
        record.work.update(work)

    return runtime.store.update(fax_id, mutate)[0]


def test_an_unforeseen_failure_retries_until_the_providers_copy_expires(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    # A bucket that is not there: S3 answers AccessDenied to the upload, an error no rule names.
    runtime, sent = make_runtime(redis_url, s3_server, sandbox, bucket=f"gone-{uuid.uuid4().hex}")
    fax_id = received_fax(runtime, sandbox)
    set_fields(runtime, fax_id, expires_at=iso_at(time.time() + 3600))

    inbound.archive_fax(runtime, fax_id)

    record = runtime.store.get(fax_id)
    assert record.state == "fetching"
    assert record.attempts == {"download": 1, "unexpected": 1}
    assert "(AccessDenied)" in record.work["last_error"]
    assert record.history[-1]["note"] == f"retry: {record.work['last_error']}"
    scheduled = runtime.store.redis.zscore("fr:due", fax_id)
    assert scheduled is not None and time.time() < scheduled < time.time() + 3600

    # The retries run out with the provider's copy: the record fails as expired, not for ever.
    set_fields(runtime, fax_id, expires_at=iso_at(time.time() - 1), not_before=0)
    inbound.archive_fax(runtime, fax_id)

    record = runtime.store.get(fax_id)
    assert (record.state, record.reason) == ("failed", "expired")
    assert "AccessDenied" in record.reason_detail
    assert runtime.store.redis.zscore("fr:due", fax_id) is None
    types = [e["type"] for e in events(runtime, sent, fax_id)]
    assert types == ["fax.received", "fax.archive_at_risk", "fax.failed"]  # an hour was left


def test_a_second_worker_that_finishes_last_changes_nothing(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    """Two workers on one record, as when a lease lapsed mid-download: the first one's download
    hangs while the second archives the fax; then the first gets the file and archives it too."""
    runtime, sent = make_runtime(redis_url, s3_server, sandbox)
    fax_id = received_fax(runtime, sandbox)
    sandbox.control("faults", provider="ucx", operation="filedownload", kind="hang", seconds=2)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(inbound._archive, runtime, fax_id)  # the step, without its lease
        wait_for(lambda: sandbox.requests("ucx", "filedownload"), 10, "the slow download")
        inbound._archive(runtime, fax_id)
        archived = runtime.store.get(fax_id)
        assert archived.state == "archived"
        slow.result(30)

    assert len(sandbox.requests("ucx", "filedownload")) == 2  # both did download it
    assert runtime.store.get(fax_id).version == archived.version  # the slower saved nothing
    types = [e["type"] for e in events(runtime, sent, fax_id)]
    assert types == ["fax.received", "fax.archived"]


def test_a_second_worker_that_finds_the_fax_deleted_leaves_the_archived_record_alone(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    runtime, sent = make_runtime(redis_url, s3_server, sandbox, delete_after_archive=True)
    fax_id = received_fax(runtime, sandbox)
    sandbox.control("faults", provider="ucx", operation="filedownload", kind="hang", seconds=2)
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(inbound._archive, runtime, fax_id)
        wait_for(lambda: sandbox.requests("ucx", "filedownload"), 10, "the slow download")
        inbound._archive(runtime, fax_id)  # archives the fax and deletes the provider's copy
        archived = runtime.store.get(fax_id)
        slow.result(30)  # its download: 404, the fax is gone from UCX

    assert [r["status"] for r in sandbox.requests("ucx", "filedownload")] == [404, 200]
    record = runtime.store.get(fax_id)
    assert record.state == "archived"
    assert record.version == archived.version and record.history == archived.history
    assert runtime.store.redis.zscore("fr:due", fax_id) is None  # not woken again
    assert len(sandbox.requests("ucx", "recorddelete")) == 1
    types = [e["type"] for e in events(runtime, sent, fax_id)]
    assert types == ["fax.received", "fax.archived"]


def test_a_record_woken_by_the_sweeper_is_announced_once_and_first(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    runtime, sent = make_runtime(redis_url, s3_server, sandbox)
    fax_id = received_fax(runtime, sandbox)  # its handle_inbound message is held back

    inbound.archive_fax(runtime, fax_id)  # what the sweeper's wake-up runs
    inbound.handle_inbound(runtime, fax_id)  # the held-back message, late

    announced = events(runtime, sent, fax_id)
    assert [e["type"] for e in announced] == ["fax.received", "fax.archived"]
    assert announced[0]["data"]["state"] == "received"


def test_create_inbound_records_a_fax_once_under_the_intakes_dedup_key(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    """Webhook intake, reconcile and backfill share one record-and-dedup rule."""
    runtime, sent = make_runtime(redis_url, s3_server, sandbox)
    fax = InboundFax(provider_fax_id="RX-shared", pages=1, received_at=datetime.now(UTC))

    record, dedup = inbound.new_inbound(runtime, "ucx", fax)
    assert dedup == dedup_key(*inbound.inbound_dedup("ucx", "RX-shared"))
    assert record.state == "received" and record.provider_ids == {"fax_id": "RX-shared"}

    first = inbound.create_inbound(runtime, "ucx", fax)
    again = inbound.create_inbound(runtime, "ucx", fax)
    assert first.created and not again.created
    assert again.record.id == first.record.id
    assert runtime.store.lookup(*inbound.inbound_dedup("ucx", "RX-shared")) == first.record
    assert sent == []  # no wake-up: its caller decides


def test_operator_retry_wakes_an_inbound_record_now_and_refuses_a_final_one(
    redis_url: str, s3_server: str, sandbox: RunningSandbox
) -> None:
    runtime, sent = make_runtime(redis_url, s3_server, sandbox)
    fax_id = received_fax(runtime, sandbox)
    later = time.time() + 3600
    set_fields(runtime, fax_id, not_before=later)
    sent.clear()

    record = retry_fax(runtime, fax_id)

    assert "not_before" not in record.work
    assert record.due_at is not None and record.due_at <= time.time()
    assert record.history[-1]["note"] == "retry by operator"
    assert sent == [(ARCHIVE_TASK[0], ARCHIVE_TASK[1], [fax_id])]
    inbound.archive_fax(runtime, fax_id)
    assert runtime.store.get(fax_id).state == "archived"
    with pytest.raises(SendError) as refused:
        retry_fax(runtime, fax_id)
    assert (refused.value.status, refused.value.code) == (409, "final")
