"""The operator endpoints of /v1 (retry, the raw webhook log, backfill, accounts check), named
tokens in the audit log, the Python client, and the CLI in remote mode: run as a separate
process with only FAXRELAY_URL and FAXRELAY_TOKEN (no configuration, Redis or S3 of its own),
it prints what the local CLI prints and exits with the same codes.

Real processes throughout (uvicorn, a Celery worker and beat, Valkey, SeaweedFS, the sandbox).
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from standardwebhooks import Webhook

from faxrelay_client import Client, Document, FaxrelayError, InvalidEvent, verify_event
from sandbox import ucx as sb_ucx
from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.system import API_TOKEN, EVENT_SECRET, ROOT, System, wait_for
from worker.domain import State
from worker.pipeline.inbound import inbound_dedup
from worker.store.records import dedup_key

OPS_TOKEN = "ops-token-5b0c2e9d41"
BAD_SECRET = "ucx-wrong-secret-77ab"


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, s3_server: str, sandbox_server: Any
) -> Iterator[System]:
    extra = f"""
[accounts.ucx-bad]
provider = "ucx"
base_url = "{sandbox_server.url}/ucx"
client_id = "{sb_ucx.CLIENT_ID}"
client_secret = "{BAD_SECRET}"
fax_id = "{sb_ucx.FAX_ID}"
reconcile_interval = 0
"""
    s = System(
        tmp_path_factory.mktemp("operator"),
        s3_server,
        sandbox_server.url,
        BUCKET,
        extra,
        # A named token and a bare one (named token-2 by its place).
        env_overrides={"FAXRELAY_API_TOKENS": f"ops:{OPS_TOKEN},{API_TOKEN}"},
    ).start()
    yield s
    s.stop()


@pytest.fixture
def client(system: System) -> Iterator[Client]:
    with Client(system.web_url, OPS_TOKEN) as c:
        yield c


def pdf() -> bytes:
    return make_pdf(1, label=f"operator {uuid.uuid4().hex}")


def fast(sandbox: Any, provider: str, seconds: float = 0.5) -> None:
    sandbox.control("duration", provider=provider, seconds=seconds)


def local(system: System, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI next to the system: its configuration, Redis and S3."""
    return subprocess.run(
        [sys.executable, "-m", "webhooks.cli", *args],
        capture_output=True, text=True, cwd=ROOT, env=system.env, timeout=120, check=False,
    )  # fmt: skip


def remote(
    system: System, tmp: Path, *args: str, token: str = OPS_TOKEN
) -> subprocess.CompletedProcess[str]:
    """The CLI elsewhere, with only the API's URL and a token: no FAXRELAY_CONFIG, Redis, S3 or
    provider secrets, and a working directory with no ``.faxrelay`` to find them in."""
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(ROOT),
        "FAXRELAY_URL": system.web_url,
        "FAXRELAY_TOKEN": token,
    }
    return subprocess.run(
        [sys.executable, "-m", "webhooks.cli", *args],
        capture_output=True, text=True, cwd=tmp, env=env, timeout=120, check=False,
    )  # fmt: skip


def same(system: System, tmp: Path, *args: str, expect: int) -> subprocess.CompletedProcess[str]:
    """Run a command both ways: the same exit code (``expect``) and the same output."""
    here, there = local(system, *args), remote(system, tmp, *args)
    assert here.returncode == expect, f"local {args}: {here.stdout}{here.stderr}"
    assert there.returncode == expect, f"remote {args}: {there.stdout}{there.stderr}"
    assert masked(there.stdout) == masked(here.stdout), (args, here.stdout, there.stdout)
    return there


def masked(output: str) -> str:
    """What differs between two runs of a command by nature: the nonce a check call sends."""
    return re.sub(r"faxrelaycheck-[0-9a-f]+", "faxrelaycheck-*", output)


def audit_lines(system: System) -> list[str]:
    return [line for line in system.log_tail(4000).splitlines() if "operator " in line]


# --- tokens and the audit log ---------------------------------------------------------------------


def test_operator_endpoints_need_a_token_and_log_its_name(
    system: System, client: Client, sandbox: Any
) -> None:
    sandbox.control("duration", provider="callerip", seconds=120)  # it stays in flight
    fax = client.send("ci", "+1 469 555 0108", pdf())
    url = f"{system.web_url}/v1/faxes/{fax.id}/retry"
    assert httpx.post(url).status_code == 401
    assert httpx.post(url, headers={"authorization": "Bearer nope"}).status_code == 403

    woken = client.retry(fax.id)
    assert woken.id == fax.id and woken.history[-1].note == "retry by operator"
    wait_for(
        lambda: any(f"operator retry {fax.id} by token ops: ok" in x for x in audit_lines(system)),
        10, "the audit line naming the ops token",
    )  # fmt: skip
    with Client(system.web_url, API_TOKEN) as bare:
        assert bare.get(fax.id).id == fax.id  # a bare token works as before
        with pytest.raises(FaxrelayError) as missing:
            bare.retry("fx_doesnotexist")
        with pytest.raises(FaxrelayError):
            bare.cancel("fx_doesnotexist")
    assert missing.value.status == 404 and missing.value.code == "not_found"
    for action in ("retry", "cancel"):
        line = f"operator {action} fx_doesnotexist by token token-2: not_found"
        wait_for(
            lambda line=line: any(line in x for x in audit_lines(system)),  # type: ignore[misc]
            10, f"the audit line of the {action} naming the bare token by its place",
        )  # fmt: skip
    assert OPS_TOKEN not in system.log_tail(4000) and API_TOKEN not in system.log_tail(4000)


# --- the raw webhook log ----------------------------------------------------------------------------


def test_webhook_log_list_show_and_replay_a_webhook_refused_for_its_token(
    system: System, client: Client, sandbox: Any
) -> None:
    fax_id = f"op{uuid.uuid4().hex[:10]}"
    body = {"faxid": fax_id, "from": "+15552345678", "url": f"{system.sandbox_url}/nowhere.pdf"}
    refused = httpx.post(
        f"{system.web_url}/webhooks/pv/inbound", params={"token": "rotated"}, data=body
    )
    assert refused.status_code == 401
    page = client.webhooks(account="pv", limit=5)
    entry = next(e for e in page.items if fax_id in client.webhook(e.id).body)
    shown = client.webhook(entry.id)
    assert shown.status == 401 and shown.query == "token=[redacted]"
    assert "rotated" not in json.dumps(shown.model_dump())

    replayed = client.replay(entry.id)
    assert replayed.status == 200 and replayed.about["outcome"] == "accepted", replayed
    record = system.record(replayed.about["fax-id"])
    assert record.provider_ids["fax_id"] == fax_id
    again = client.replay(entry.id)  # dedup: the same record
    assert again.status == 200 and again.about["fax-id"] == record.id
    assert again.about["outcome"] == "duplicate"
    with pytest.raises(FaxrelayError) as missing:
        client.webhook("wh_nope")
    assert missing.value.status == 404


# --- backfill ----------------------------------------------------------------------------------------


def test_backfill_over_the_api_archives_what_the_ucx_holds(
    system: System, client: Client, sandbox: Any
) -> None:
    held = [sandbox.control("inbound", provider="ucx", pages=1) for _ in range(3)]
    since = datetime.now(UTC) - timedelta(days=1)
    job = client.start_backfill("ucx", since)
    assert job.state in ("listing", "running", "done") and job.id.startswith("bf_")
    job = wait_for(lambda: (j := client.backfill(job.id)).state == "done" and j, 60, "the backfill")
    assert job.total >= 3 and job.archived + job.already == job.total and not job.failed
    store = system.store()
    for fax in held:
        ref = store.redis.get(dedup_key(*inbound_dedup("ucx", f"RX{fax['id']}")))
        assert ref is not None, fax
        assert system.record(json.loads(ref)["id"]).state == State.ARCHIVED
    rerun_id = client.start_backfill("ucx", since).id
    rerun = wait_for(
        lambda: (j := client.backfill(rerun_id)).state == "done" and j, 60, "the rerun"
    )
    assert rerun.already == job.total and rerun.archived == 0

    with pytest.raises(FaxrelayError) as cannot:
        client.start_backfill("pv", since)
    assert cannot.value.status == 422 and "cannot be backfilled" in cannot.value.message
    backwards = {"account": "ucx", "since": "2025-02-01", "until": "2025-01-01"}
    answer = httpx.post(
        f"{system.web_url}/v1/backfills", json=backwards,
        headers={"authorization": f"Bearer {OPS_TOKEN}"},
    )  # fmt: skip
    assert answer.status_code == 422 and "until must be after since" in answer.text
    with pytest.raises(FaxrelayError) as refused_here:  # the client checks with the same model
        client.start_backfill("ucx", since, since - timedelta(hours=1))
    assert refused_here.value.status == 422


# --- accounts check -----------------------------------------------------------------------------------


def test_accounts_check_over_the_api_masks_secrets(system: System, client: Client) -> None:
    results = {r.account: r for r in client.check_accounts().items}
    assert not results["ucx-bad"].ok and results["ucx"].ok and results["pv"].ok
    assert BAD_SECRET not in json.dumps([r.model_dump() for r in results.values()])
    one = client.check_accounts("ucx").items
    assert [r.account for r in one] == ["ucx"]
    with pytest.raises(FaxrelayError) as unknown:
        client.check_accounts("nope")
    assert unknown.value.status == 422 and "no account named 'nope'" in unknown.value.message


# --- the Python client ---------------------------------------------------------------------------------


def test_the_client_sends_waits_lists_cancels_and_verifies(
    system: System, client: Client, sandbox: Any
) -> None:
    fast(sandbox, "ucx")
    key = f"client-{uuid.uuid4().hex}"
    letter = pdf()
    fax = client.send("ucx", "+1 469 555 0108", letter, idempotency_key=key, metadata={"a": 1})
    assert fax.state == "queued" and fax.metadata == {"a": 1}
    document = Document(base64=base64.b64encode(letter).decode())
    repeat = client.send_detailed("ucx", "+1 469 555 0108", document, idempotency_key=key,
                                  metadata={"a": 1})  # fmt: skip
    assert repeat.created is False and repeat.fax.id == fax.id  # the same request, as JSON
    seen: list[str] = []
    done = client.wait(fax.id, timeout=60, on_change=lambda f: seen.append(f.state))
    assert done.state == "delivered" and seen[-1] == "delivered"
    listed = client.list(account="ucx", idempotency_key=key)
    assert [f.id for f in listed.items] == [fax.id]
    assert fax.id in [f.id for f in client.iterate(account="ucx", state="delivered")]
    with pytest.raises(FaxrelayError) as final:
        client.cancel(fax.id)
    assert final.value.status == 409 and final.value.code == "not_cancellable"

    # An event as faxrelay signs it (here by the reference library), checked by the client.
    body = json.dumps({"type": "fax.delivered", "timestamp": done.updated_at,
                       "data": done.model_dump(mode="json", by_alias=True)}).encode()  # fmt: skip
    now = datetime.now(UTC)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(EVENT_SECRET).sign("msg_1", now, body.decode()),
    }
    event = verify_event(EVENT_SECRET, headers, body)
    assert event.type == "fax.delivered" and event.data.id == fax.id
    with pytest.raises(InvalidEvent, match="does not match"):
        verify_event(EVENT_SECRET, headers, body.replace(b"delivered", b"failed", 1))
    old = now - timedelta(hours=1)
    stale = {**headers, "webhook-timestamp": str(int(old.timestamp())),
             "webhook-signature": Webhook(EVENT_SECRET).sign("msg_1", old, body.decode())}  # fmt: skip
    with pytest.raises(InvalidEvent, match="off"):
        verify_event(EVENT_SECRET, stale, body)


# --- the remote CLI ----------------------------------------------------------------------------------------


def test_remote_cli_prints_and_exits_as_the_local_one(
    system: System, client: Client, sandbox: Any, tmp_path: Path
) -> None:
    fast(sandbox, "ucx")
    done = client.wait(client.send("ucx", "+1 469 555 0108", pdf()).id, timeout=60)
    same(system, tmp_path, "faxes", "show", done.id, expect=0)
    same(system, tmp_path, "faxes", "show", "--json", done.id, expect=0)
    same(system, tmp_path, "faxes", "list", "--account", "ucx", "--limit", "3", expect=0)
    same(system, tmp_path, "faxes", "show", "fx_doesnotexist", expect=1)
    same(system, tmp_path, "faxes", "retry", done.id, expect=1)
    same(system, tmp_path, "faxes", "cancel", done.id, expect=1)
    checked = same(system, tmp_path, "accounts", "check", expect=1)  # ucx-bad fails
    assert re.search(r"^ucx-bad\s+ucx\s+FAILED", checked.stdout, re.M)
    same(system, tmp_path, "accounts", "check", "ucx", "--json", expect=0)
    same(system, tmp_path, "accounts", "check", "nope", expect=2)

    # The raw webhook log: a webhook refused for a wrong token, shown and replayed both ways.
    httpx.post(
        f"{system.web_url}/webhooks/vm/inbound", params={"token": "old"},
        data={"id": f"R{uuid.uuid4().hex[:8]}"},
    )  # fmt: skip
    listed = same(system, tmp_path, "webhooks", "list", "--account", "vm", "--limit", "3", expect=0)
    log_id = listed.stdout.split()[0]
    same(system, tmp_path, "webhooks", "show", log_id, expect=0)
    first = remote(system, tmp_path, "webhooks", "replay", log_id)
    assert first.returncode == 0 and first.stdout.startswith("200 outcome=accepted"), first
    again_local, again_remote = (
        local(system, "webhooks", "replay", log_id, "--url", system.web_url),
        remote(system, tmp_path, "webhooks", "replay", log_id),
    )
    assert again_local.returncode == again_remote.returncode == 0
    # 200 outcome=duplicate, the same record (whose state may have moved on in between)
    assert re.sub(r"state=\w+", "", again_local.stdout) == re.sub(
        r"state=\w+", "", again_remote.stdout
    )
    same(system, tmp_path, "webhooks", "show", "wh_nope", expect=1)

    # send --wait: the same lines (each state change) but for the fax's id and times.
    letter = tmp_path / "letter.pdf"
    letter.write_bytes(pdf())
    send = ("send", str(letter), "--account", "ucx", "--to", "+1 469 555 0108", "--wait")
    sends = [local(system, *send), remote(system, tmp_path, *send)]
    shapes = [re.sub(r"fx_\w+|\d+", "N", s.stdout) for s in sends]
    assert [s.returncode for s in sends] == [0, 0] and shapes[0] == shapes[1], shapes
    assert "delivered" in shapes[0]
    bad = ("send", str(letter), "--account", "ucx", "--to", "12")
    refused = [local(system, *bad), remote(system, tmp_path, *bad)]
    assert [r.returncode for r in refused] == [2, 2]
    assert refused[0].stderr == refused[1].stderr

    # backfill: the same report (run locally first, so that both find the same faxes archived).
    for _ in range(2):
        sandbox.control("inbound", provider="ucx", pages=1)
    today = datetime.now(UTC).date()
    args = ("backfill", "--account", "ucx", "--since", str(today - timedelta(days=1)))
    first_run = local(system, *args)
    assert first_run.returncode == 0, first_run.stdout + first_run.stderr
    again = same(system, tmp_path, *args, expect=0)
    assert "archived:         0" in again.stdout
    same(system, tmp_path, "backfill", "--account", "pv", "--since", "2025-01-01", expect=2)

    # Without a token, or with a wrong one: a configuration problem (2), said plainly.
    no_token = remote(system, tmp_path, "faxes", "list", token="")
    assert no_token.returncode == 2 and "FAXRELAY_TOKEN" in no_token.stderr
    wrong = remote(system, tmp_path, "faxes", "list", token="nope")
    assert wrong.returncode == 2 and "refused the token" in wrong.stderr
