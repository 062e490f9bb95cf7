"""The operator commands, run as a real ``faxrelay`` process against a real system (Valkey,
SeaweedFS, the sandbox, a worker): accounts check, send --wait, faxes list/show/retry/cancel,
backfill, events verify. Exit codes are part of the contract: 0 ok, 1 failed, 2 usage/config.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from sandbox import ucx as sb_ucx
from sandbox.pdf import make_pdf
from tests.conftest import BUCKET
from tests.system import EVENT_SECRET, ROOT, System
from worker.domain import State
from worker.io.archive import s3_client
from worker.pipeline.inbound import inbound_dedup
from worker.providers.base import InboundFax
from worker.store.records import dedup_key

BAD_SECRET = "ucx-wrong-secret-5d1e77"


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

[accounts.ucx-fill]
provider = "ucx"
base_url = "{sandbox_server.url}/ucx"
client_id = "{sb_ucx.CLIENT_ID}"
client_secret = "{sb_ucx.CLIENT_SECRET}"
fax_id = "{sb_ucx.FAX_ID}"
reconcile_interval = 0
"""
    s = System(tmp_path_factory.mktemp("cli"), s3_server, sandbox_server.url, BUCKET, extra).start()
    yield s
    s.stop()


def cli(system: System, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "webhooks.cli", *args],
        capture_output=True, text=True, cwd=ROOT, env=system.env, timeout=timeout, check=False,
    )  # fmt: skip


def rows(output: str) -> dict[str, list[str]]:
    """A printed table by its first column."""
    return {line.split()[0]: line.split() for line in output.splitlines()[1:] if line.strip()}


def pdf_file(tmp_path: Path) -> Path:
    path = tmp_path / f"{uuid.uuid4().hex}.pdf"
    path.write_bytes(make_pdf(2, label=f"cli {uuid.uuid4().hex}"))
    return path


def fast(sandbox: Any, provider: str, seconds: float = 1.0) -> None:
    sandbox.control("duration", provider=provider, seconds=seconds)


# --- accounts check -----------------------------------------------------------------------------


def test_accounts_check_fails_the_bad_secret_and_passes_the_rest(system: System) -> None:
    every = cli(system, "accounts", "check")
    assert every.returncode == 1, every.stdout + every.stderr
    table = rows(every.stdout)
    assert table["ucx-bad"][1:3] == ["ucx", "FAILED"], every.stdout
    for account in ("pv", "ucx", "vn", "vm", "ci"):
        assert table[account][2] == "ok", every.stdout
    assert BAD_SECRET not in every.stdout + every.stderr
    one = cli(system, "accounts", "check", "ucx")
    assert one.returncode == 0, one.stdout + one.stderr
    assert list(rows(one.stdout)) == ["ucx"]
    unknown = cli(system, "accounts", "check", "nobody")
    assert unknown.returncode == 2 and "no account named 'nobody'" in unknown.stderr


# --- send ---------------------------------------------------------------------------------------


def test_send_wait_follows_the_fax_to_delivered(
    system: System, sandbox: Any, tmp_path: Path
) -> None:
    fast(sandbox, "callerip")
    document = pdf_file(tmp_path)
    sent = cli(system, "send", str(document), "--account", "ci", "--to", "+1 555 234 5601",
               "--wait", "--timeout", "60")  # fmt: skip
    assert sent.returncode == 0, sent.stdout + sent.stderr
    fax_id, *timeline = sent.stdout.splitlines()
    assert fax_id.startswith("fx_")
    shown = [line.split()[1] for line in timeline]
    assert shown[0] == "queued" and shown[-1] == "delivered" and "submitted" in shown
    record = system.record(fax_id)
    assert record.state == "delivered" and record.to_number == "5552345601"

    key = f"k-{uuid.uuid4().hex}"
    first = cli(system, "send", str(document), "--account", "ci", "--to", "5552345602",
                "--idempotency-key", key)  # fmt: skip
    again = cli(system, "send", str(document), "--account", "ci", "--to", "5552345602",
                "--idempotency-key", key)  # fmt: skip
    assert first.returncode == again.returncode == 0
    assert first.stdout == again.stdout and "earlier send" in again.stderr
    other = cli(system, "send", str(document), "--account", "ci", "--to", "5552345603",
                "--idempotency-key", key)  # fmt: skip
    assert other.returncode == 1 and "idempotency_conflict" in other.stderr

    bad = cli(system, "send", str(document), "--account", "ci", "--to", "12")
    assert bad.returncode == 2 and "bad_destination" in bad.stderr
    not_pdf = tmp_path / "note.txt"
    not_pdf.write_text("hello")
    refused = cli(system, "send", str(not_pdf), "--account", "ci", "--to", "5552345604")
    assert refused.returncode == 2 and "not_pdf" in refused.stderr
    assert cli(system, "send", str(document), "--to", "5552345604").returncode == 2


def test_send_wait_exits_1_when_the_fax_fails(system: System, sandbox: Any, tmp_path: Path) -> None:
    fast(sandbox, "callerip")
    sandbox.control("faults", provider="callerip", operation="send", kind="error", status=400,
                    body="invalid fax number")  # fmt: skip
    failed = cli(system, "send", str(pdf_file(tmp_path)), "--account", "ci", "--to", "5552345605",
                 "--wait", "--timeout", "60")  # fmt: skip
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert failed.stdout.splitlines()[-1].split()[1] == "failed"
    assert "ended failed" in failed.stderr


# --- faxes ---------------------------------------------------------------------------------------


def test_faxes_list_show_and_cancel(system: System, sandbox: Any, tmp_path: Path) -> None:
    fast(sandbox, "ucx", seconds=120)
    sent = cli(system, "send", str(pdf_file(tmp_path)), "--account", "ucx", "--to", "14695550111")
    assert sent.returncode == 0, sent.stderr
    fax_id = sent.stdout.strip()
    system.wait_state(fax_id, "submitted")

    cancelled = cli(system, "faxes", "cancel", fax_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"{fax_id}: cancelled"
    assert system.record(fax_id).state == "cancelled"
    again = cli(system, "faxes", "cancel", fax_id)
    assert again.returncode == 1 and "already cancelled" in again.stderr

    listed = cli(system, "faxes", "list", "--account", "ucx", "--direction", "outbound")
    assert listed.returncode == 0
    assert rows(listed.stdout)[fax_id][1:4] == ["out", "ucx", "cancelled"]
    by_state = cli(system, "faxes", "list", "--state", "cancelled", "--json")
    assert fax_id in [item["id"] for item in json.loads(by_state.stdout)["items"]]
    paged = cli(system, "faxes", "list", "--limit", "1")
    assert paged.returncode == 0 and "next cursor: " in paged.stdout
    cursor = paged.stdout.split("next cursor: ")[1].strip()
    second = cli(system, "faxes", "list", "--limit", "1", "--cursor", cursor, "--json")
    assert json.loads(second.stdout)["items"][0]["id"] < cursor
    assert cli(system, "faxes", "list", "--state", "bogus").returncode == 2

    shown = cli(system, "faxes", "show", fax_id)
    assert shown.returncode == 0
    assert shown.stdout.startswith(f"{fax_id}  outbound  ucx (ucx)  cancelled")
    timeline = shown.stdout.split("timeline:")[1].split()
    assert [s for s in ("queued", "submitted", "cancelled") if s in timeline] == [
        "queued", "submitted", "cancelled",
    ]  # fmt: skip
    as_json = json.loads(cli(system, "faxes", "show", fax_id, "--json").stdout)
    assert as_json["id"] == fax_id and as_json["to"] == "14695550111"
    missing = cli(system, "faxes", "show", "fx_nothing")
    assert missing.returncode == 1 and "no fax with id" in missing.stderr


def test_faxes_retry_wakes_an_inbound_record_now(system: System, sandbox: Any) -> None:
    from worker.pipeline.inbound import new_inbound
    from worker.runtime import Runtime

    held = sandbox.control("inbound", provider="ucx", pages=1)
    runtime = Runtime(system_settings(system), lambda *_: None)
    fax = InboundFax(provider_fax_id=f"RX{held['id']}", pages=1, received_at=datetime.now(UTC))
    record, dedup = new_inbound(runtime, "ucx", fax)
    record.due_at = time.time() + 3600  # nothing would wake it for an hour
    record.work["not_before"] = record.due_at  # and a wake-up before then would be ignored
    system.store().create(record, dedup=dedup)

    woken = cli(system, "faxes", "retry", record.id)
    assert woken.returncode == 0, woken.stderr
    done = system.wait_state(record.id, "archived", timeout=30)
    assert any(h["note"] == "retry by operator" for h in done.history)
    final = cli(system, "faxes", "retry", record.id)
    assert final.returncode == 1 and "already archived" in final.stderr


def system_settings(system: System) -> Any:
    from config.settings import Settings

    return Settings(
        redis_url=system.redis_url,
        s3_endpoint_url=system.s3_endpoint,
        s3_bucket=BUCKET,
        accounts={
            "ucx": {
                "provider": "ucx",
                "base_url": f"{system.sandbox_url}/ucx",
                "client_id": sb_ucx.CLIENT_ID,
                "client_secret": sb_ucx.CLIENT_SECRET,
                "fax_id": sb_ucx.FAX_ID,
            }
        },
    )


# --- backfill ---------------------------------------------------------------------------------------


def test_backfill_archives_what_the_ucx_holds_and_a_rerun_skips_it(
    system: System, sandbox: Any
) -> None:
    held = [sandbox.control("inbound", provider="ucx", pages=i + 1) for i in range(3)]
    today = datetime.now(UTC).date()
    since, until = str(today - timedelta(days=1)), str(today + timedelta(days=1))
    first = cli(system, "backfill", "--account", "ucx-fill", "--since", since, "--until", until)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "ucx-fill: 3 received fax(es)" in first.stdout
    assert "archived:         3" in first.stdout and "already archived: 0" in first.stdout
    s3 = s3_client(system.s3_endpoint)
    for fax in held:
        ref = system.store().redis.get(dedup_key(*inbound_dedup("ucx-fill", f"RX{fax['id']}")))
        assert ref is not None
        record = system.record(json.loads(ref)["id"])
        assert record.state == State.ARCHIVED and record.sha256 == fax["sha256"]
        head = s3.head_object(Bucket=BUCKET, Key=record.archive["key"])
        assert head["Metadata"]["sha256"] == fax["sha256"]

    rerun = cli(system, "backfill", "--account", "ucx-fill", "--since", since)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "archived:         0" in rerun.stdout and "already archived: 3" in rerun.stdout

    broken = sandbox.control("inbound", provider="ucx")
    sandbox.control("faults", provider="ucx", operation="filedownload", kind="not_pdf")
    third = cli(system, "backfill", "--account", "ucx-fill", "--since", since)
    assert third.returncode == 1, third.stdout + third.stderr
    assert "already archived: 3" in third.stdout and "failed:           1" in third.stdout
    assert f"RX{broken['id']} (fx_" in third.stdout and "not_pdf" in third.stdout

    later = cli(
        system, "backfill", "--account", "ucx-fill", "--since", str(today + timedelta(days=2))
    )
    assert later.returncode == 0 and "0 received fax(es)" in later.stdout


def test_backfill_refuses_providers_that_cannot_list(system: System) -> None:
    refused = cli(system, "backfill", "--account", "pv", "--since", "2025-01-01")
    assert refused.returncode == 2
    assert "primevox has no call that lists received faxes" in refused.stderr
    bad_date = cli(system, "backfill", "--account", "ucx", "--since", "last tuesday")
    assert bad_date.returncode == 2 and "is not a date" in bad_date.stderr


# --- events verify ---------------------------------------------------------------------------


def signed(body: bytes, secret: str = EVENT_SECRET, at: datetime | None = None) -> list[str]:
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign("msg_cli1", at, body.decode())
    return ["-H", "webhook-id: msg_cli1", "-H", f"webhook-timestamp: {int(at.timestamp())}",
            "-H", f"webhook-signature: {signature}"]  # fmt: skip


def verify(*args: str) -> subprocess.CompletedProcess[str]:
    """``faxrelay events verify`` in process (it needs no system); the configured secret is
    the default of ``--secret``."""
    from click.testing import CliRunner

    from webhooks.cli import main

    env = {"FAXRELAY_EVENT_SECRET": EVENT_SECRET}
    result = CliRunner().invoke(main, ["events", "verify", *args], env=env)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def test_events_verify_ok_forged_stale_and_saved_request(tmp_path: Path) -> None:
    body = json.dumps({"type": "fax.archived", "timestamp": "x",
                       "data": {"id": "fx_1", "state": "archived"}}).encode()  # fmt: skip
    path = tmp_path / "body.json"
    path.write_bytes(body)
    ok = verify("--secret", EVENT_SECRET, "--body", str(path), *signed(body))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: signature valid") and "fax.archived for fx_1" in ok.stdout

    forged = tmp_path / "forged.json"
    forged.write_bytes(body.replace(b"fx_1", b"fx_2"))
    bad = verify("--secret", EVENT_SECRET, "--body", str(forged), *signed(body))
    assert bad.returncode == 1 and "does not match" in bad.stderr
    other = "whsec_b3RoZXItc2VjcmV0LWZvci10ZXN0cw=="
    wrong = verify("--secret", other, "--body", str(path), *signed(body))
    assert wrong.returncode == 1

    old = signed(body, at=datetime.now(UTC) - timedelta(hours=1))
    stale = verify("--secret", EVENT_SECRET, "--body", str(path), *old)
    assert stale.returncode == 1 and "old" in stale.stderr
    lenient = verify("--secret", EVENT_SECRET, "--body", str(path), "--tolerance", "0", *old)
    assert lenient.returncode == 0

    headers = [f"{old[i + 1]}" for i in range(0, len(old), 2)]
    saved = tmp_path / "request.http"
    saved.write_bytes(
        b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        + "".join(f"{h}\r\n" for h in headers).encode()
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )
    # The secret comes from the configuration when --secret is not given.
    from_request = verify("--request", str(saved), "--tolerance", "0")
    assert from_request.returncode == 0, from_request.stderr
    missing = verify("--secret", EVENT_SECRET, "--body", str(path))
    assert missing.returncode == 1 and "missing header" in missing.stderr
    not_secret = verify("--secret", "whsec_!!", "--body", str(path), *signed(body))
    assert not_secret.returncode == 2


def test_every_command_has_help() -> None:
    from click.testing import CliRunner

    from webhooks.cli import main

    commands = [["accounts", "check"], ["send"], ["faxes", "list"], ["faxes", "show"],
                ["faxes", "retry"], ["faxes", "cancel"], ["backfill"], ["events", "verify"]]  # fmt: skip
    for command in commands:
        result = CliRunner().invoke(main, [*command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, command
    assert CliRunner().invoke(main, ["faxes", "list", "--limit", "x"]).exit_code == 2
