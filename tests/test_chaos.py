"""The chaos soak in brief (``bench.chaos --fast``), and the sandbox faults it injects.

One soak runs for the module: faxrelay as separate processes (web, the worker and archiver
processes, beat, Valkey with AOF always, SeaweedFS, the sandbox) under about 60 s of mixed load
while worker processes, beat, the web process and Valkey are SIGKILLed and restarted, S3 is
stopped for a while and the providers fail, hang, answer late and cut or drip downloads. Each test
reads one line of its verdict. The last one plants a loss and shows that the checks report it.

Each finding category is its own test, so a red run says which promise broke; the soak itself
runs once.
"""

from __future__ import annotations

import hashlib
import io
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bench.chaos import Chaos, Options
from bench.chaos_check import Report, evaluate
from bench.chaos_faults import Plan
from bench.chaos_ledger import Ledger, Send
from bench.chaos_observe import Snapshot
from sandbox import callerip as sb_callerip
from sandbox.pdf import make_pdf
from tests.sandbox_server import RunningSandbox
from tests.system import wait_for

LOAD_SECONDS = 60.0


@pytest.fixture(scope="module")
def soak(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chaos, Report]]:
    options = Options(seconds=LOAD_SECONDS, seed=11, rate=0.8, fast=True, plan=Plan.short())
    out = io.StringIO()
    chaos = Chaos(options, tmp_path_factory.mktemp("chaos"), out)
    try:
        chaos.start()
        chaos.run()
        settled = chaos.settle()
        report = chaos.check()
        table = chaos.table(report, settled)
        print(out.getvalue(), table, sep="\n", file=sys.stderr)  # shown when a test fails
        yield chaos, report
    finally:
        chaos.stop()


def findings(report: Report, category: str, kind: str | None = None) -> list[str]:
    """The failures of ``category`` (a message parked in the broker until the visibility timeout
    is listed by the soak, not failed)."""
    return [f.what for f in report.failures if f.category == category and kind in (None, f.kind)]


def test_the_soak_really_breaks_things(soak: tuple[Chaos, Report]) -> None:
    chaos, report = soak
    assert chaos.system is not None
    kills, restarts = chaos.system.kills, chaos.system.restarts
    assert sum(kills[name] for name in chaos.system.worker_names) >= 5
    assert kills["redis"] >= 1 and kills["web"] >= 1 and kills["beat"] >= 1
    # Every part killed was started again by the supervisor (a wedged worker counts too).
    assert sum(restarts.values()) >= sum(kills.values())
    assert chaos.faults.s3_window is not None
    assert chaos.system.outage_seconds("s3") >= chaos.options.plan.s3_outage
    # Provider faults take turns: on a slow machine fewer come, but several kinds always do.
    assert len(set(chaos.faults.injected) & {"503 burst", "hang", "late", "truncate", "drip"}) >= 3
    assert report.owed_faxes >= 30 and sum(report.accepted_sends.values()) >= 20


def test_every_acknowledged_fax_is_archived_once_with_the_providers_bytes(
    soak: tuple[Chaos, Report],
) -> None:
    _, report = soak
    assert findings(report, "LOST", "inbound") == []
    assert findings(report, "DUPLICATED", "inbound") == []
    assert findings(report, "DUPLICATED", "inbound object") == []


def test_no_acknowledged_fax_is_left_unarchived(soak: tuple[Chaos, Report]) -> None:
    _, report = soak
    assert findings(report, "NOT SETTLED", "inbound") == []


def test_no_fax_goes_out_twice(soak: tuple[Chaos, Report]) -> None:
    _, report = soak
    assert findings(report, "DOUBLE-SENT") == []


def test_every_accepted_http_send_is_one_record_in_a_final_state(
    soak: tuple[Chaos, Report],
) -> None:
    _, report = soak
    for category in ("LOST", "DUPLICATED", "NOT SETTLED"):
        assert findings(report, category, "http send") == []


def test_every_published_send_fax_message_is_one_record(soak: tuple[Chaos, Report]) -> None:
    _, report = soak
    for category in ("LOST", "DUPLICATED", "NOT SETTLED"):
        assert findings(report, category, "queue send") == []


def test_every_send_names_its_own_job(soak: tuple[Chaos, Report]) -> None:
    _, report = soak
    assert findings(report, "WRONG ATTRIBUTION") == []


def test_a_cancelled_fax_is_not_sent(soak: tuple[Chaos, Report]) -> None:
    _, report = soak
    assert findings(report, "SENT AFTER CANCEL") == []


def test_every_owed_event_reaches_the_subscriber(soak: tuple[Chaos, Report]) -> None:
    _, report = soak
    assert findings(report, "EVENTS MISSING") == []


def test_a_planted_loss_is_reported(soak: tuple[Chaos, Report]) -> None:
    """Runs last: it deletes an acknowledged fax's record and another fax's archived object."""
    chaos, _ = soak
    record_id, key = chaos.plant_loss()
    lost = findings(chaos.check(), "LOST", "inbound")
    assert any(record_id in what for what in lost), lost
    assert any(key in what and "missing" in what for what in lost), lost


# --- each check can fail ---------------------------------------------------------------------
def _send_record(fax_id: str, sha: str, state: str, job_id: str = "") -> dict[str, Any]:
    return {
        "id": fax_id, "direction": "outbound", "account": "ucx", "provider": "ucx",
        "state": state, "sha256": sha, "provider_ids": {"job_id": job_id} if job_id else {},
        "history": [],
    }  # fmt: skip


def _job(job_id: str, sha: str, cancelled_at: float | None = None) -> dict[str, Any]:
    return {
        "id": job_id, "provider": "ucx", "document_sha256": sha, "cancelled_at": cancelled_at,
        "to": "5552010100", "submitted_at": 1.0, "extra": {},
    }  # fmt: skip


def test_each_promise_the_soak_checks_is_reported_when_broken() -> None:
    """The verdict on hand-made books: a document sent twice, a record naming another fax's
    job, a fax sent after its cancel was acknowledged, an event that never came, a send with
    two records, and an accepted send with none."""
    ledger = Ledger()
    shas = {name: hashlib.sha256(name.encode()).hexdigest() for name in "abcdef"}
    for sha in shas.values():
        ledger.sends[sha] = Send("http", "ucx", sha, "", {}, accepted_at=1.0, record_ids=[])
    ledger.sends[shas["c"]].cancel = "cancelled"
    records = [
        _send_record("fx_a", shas["a"], "delivered", "TX1"),
        _send_record("fx_b", shas["b"], "delivered", "TX1"),  # names a's job
        _send_record("fx_c", shas["c"], "cancelled"),
        _send_record("fx_d", shas["d"], "cancelled"),
        _send_record("fx_e1", shas["e"], "cancelled"),
        _send_record("fx_e2", shas["e"], "cancelled"),
    ]
    jobs = [_job("TX1", shas["a"]), _job("TX2", shas["a"]), _job("TX3", shas["c"])]
    events = {(r["id"], "fax.cancelled") for r in records} | {("fx_a", "fax.submitted")}
    report = evaluate(ledger, Snapshot(records, jobs, events))
    assert len(findings(report, "DOUBLE-SENT")) == 1  # a went out as TX1 and TX2
    assert [w for w in findings(report, "WRONG ATTRIBUTION") if "fx_b" in w]
    assert [w for w in findings(report, "SENT AFTER CANCEL") if "TX3" in w]
    missing = {tuple(w.split()[0:3:2]) for w in findings(report, "EVENTS MISSING")}
    assert missing == {
        ("fax.delivered", "fx_a"), ("fax.delivered", "fx_b"), ("fax.submitted", "fx_b"),
    }  # fmt: skip
    assert [w for w in findings(report, "DUPLICATED") if "fx_e1" in w and "fx_e2" in w]
    assert [w for w in findings(report, "LOST") if shas["f"][:12] in w]


# --- the sandbox's faults ---------------------------------------------------------------------
def _callerip_send(sandbox: RunningSandbox, pdf: bytes) -> httpx.Response:
    return httpx.post(
        f"{sandbox.url}/callerip/api/fax/send",
        data={"token": sb_callerip.VALID_TOKEN, "number": "5552010100", "sendCover": "N"},
        files={"file": ("doc.pdf", pdf, "application/pdf")},
        timeout=60,
    )


def test_a_late_answer_comes_after_the_provider_took_the_job(sandbox: RunningSandbox) -> None:
    pdf = make_pdf(label="late answer")
    sandbox.control("faults", provider="callerip", operation="send", kind="late", seconds=600)
    answers: list[httpx.Response] = []
    caller = threading.Thread(target=lambda: answers.append(_callerip_send(sandbox, pdf)))
    caller.start()

    def taken() -> list[Any]:
        jobs = httpx.get(f"{sandbox.url}/_sandbox/jobs", params={"provider": "callerip"}).json()
        return [j for j in jobs if j["document_sha256"] == hashlib.sha256(pdf).hexdigest()]

    assert len(wait_for(taken, 10, "the job")) == 1
    assert answers == []  # the job exists; its answer is held (for 600 s)
    httpx.delete(f"{sandbox.url}/_sandbox/faults").raise_for_status()  # the provider recovers
    caller.join(30)
    assert answers[0].status_code == 200 and answers[0].json()["uuid"] == taken()[0]["id"]


def test_a_dripped_download_arrives_whole_in_many_pieces(sandbox: RunningSandbox) -> None:
    fax = sandbox.control("inbound", provider="primevox", size=50_000, label="drip")
    assert isinstance(fax, dict)
    sandbox.control("faults", provider="primevox", operation="download", kind="drip", seconds=1)
    pieces, body = 0, b""
    with httpx.stream("GET", fax["download_url"], timeout=30) as answer:
        for chunk in answer.iter_raw():
            pieces, body = pieces + 1, body + chunk
    assert pieces > 1
    assert hashlib.sha256(body).hexdigest() == fax["sha256"]


def test_distinct_labels_make_distinct_pdfs_and_jobs_name_their_document(
    sandbox: RunningSandbox,
) -> None:
    one = sandbox.control("inbound", provider="primevox", label="one")
    two = sandbox.control("inbound", provider="primevox", label="two")
    assert isinstance(one, dict) and isinstance(two, dict)
    assert one["sha256"] != two["sha256"]
    pdf = make_pdf(label="a document")
    assert _callerip_send(sandbox, pdf).status_code == 200
    (job,) = httpx.get(f"{sandbox.url}/_sandbox/jobs").json()
    assert job["document_sha256"] == hashlib.sha256(pdf).hexdigest()
    assert job["document_size"] == len(pdf) and job["cancelled_at"] is None


def test_fire_says_so_when_the_webhook_got_no_answer(sandbox: RunningSandbox) -> None:
    fax = sandbox.control("inbound", provider="primevox")
    assert isinstance(fax, dict)
    answer = sandbox.control(
        "fire", provider="primevox", kind="inbound", id=fax["id"], url="http://127.0.0.1:9/x"
    )
    assert isinstance(answer, dict)
    assert answer["status"] == 0 and "ConnectError" in answer["error"]
