"""Structured logs: JSON lines (text on a terminal) with the fax and Celery task context, and
secrets never written — in process, and from a real worker handling a real fax."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from config.logging import TASK_ID, configure_logging
from sandbox import primevox as sb_primevox
from sandbox import ucx as sb_ucx
from tests.conftest import BUCKET
from tests.system import API_TOKEN, EVENT_SECRET, WEBHOOK_TOKEN, System, sandbox_fire
from worker.logctx import bind_fax, fax_context

SECRETS = {
    "auth": "pv-auth-key-3c9a71e0",
    "client_secret": "ucx-client-secret-77ab12",
    "api_token": "api-token-5e5e0d11",
    "webhook_token": "hook-token-0af3c2",
}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers = handlers
    root.setLevel(level)


@pytest.fixture
def configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "faxrelay.toml"
    config.write_text(f"""
[accounts.main]
provider = "primevox"
base_url = "https://pbx.example.com"
webhook_token = "{SECRETS["webhook_token"]}"
auth = "{SECRETS["auth"]}"
container_id = "1"
box_id = "2"

[accounts.office]
provider = "ucx"
base_url = "https://ucx.example.com"
client_id = "c"
client_secret = "{SECRETS["client_secret"]}"
fax_id = "2"
""")
    monkeypatch.setenv("FAXRELAY_CONFIG", str(config))
    monkeypatch.setenv("FAXRELAY_API_TOKENS", SECRETS["api_token"])


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_fax_and_task_context(restore_logging: None, configured: None) -> None:
    out = io.StringIO()
    configure_logging("worker", stream=out, json_lines=True)
    log = logging.getLogger("worker.pipeline.inbound")
    token = TASK_ID.set("task-1234")
    try:
        with fax_context("fx_0001"):
            bind_fax(account="main")
            log.info("downloading %s", "fx_0001")
        log.warning("outside")
    finally:
        TASK_ID.reset(token)
    log.warning("no task")
    first, second, third = lines(out)
    assert first["message"] == "downloading fx_0001"
    assert {
        k: first[k] for k in ("level", "logger", "process", "fax_id", "account", "task_id")
    } == {
        "level": "INFO",
        "logger": "worker.pipeline.inbound",
        "process": "worker",
        "fax_id": "fx_0001",
        "account": "main",
        "task_id": "task-1234",
    }
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert "fax_id" not in second and second["task_id"] == "task-1234"
    assert "task_id" not in third


def test_secrets_never_appear(restore_logging: None, configured: None) -> None:
    out = io.StringIO()
    configure_logging("web", stream=out, json_lines=True)
    log = logging.getLogger("worker.providers.primevox")
    log.info("settings secret in a message: %s", SECRETS["client_secret"])
    log.info("GET https://pbx.example.com/api/status.php?auth=anything-else&efaxID=1")
    log.info("webhook /webhooks/main/inbound?token=%s", SECRETS["webhook_token"])
    log.info("headers {'authorization': 'Bearer %s'}", SECRETS["api_token"])
    log.info("Authorization: Basic dXNlcjpwYXNzd29yZA==")
    log.info("voip.ms call api_password=hunter2hunter2&method=getFaxFolders")
    log.info("signing with %s", EVENT_SECRET)
    try:
        raise RuntimeError(f"provider refused auth {SECRETS['auth']}")
    except RuntimeError:
        log.exception("failed")
    text = out.getvalue()
    for secret in [*SECRETS.values(), "anything-else", "dXNlcjpwYXNzd29yZA==", "hunter2hunter2"]:
        assert secret not in text, secret
    assert EVENT_SECRET.removeprefix("whsec_") not in text
    records = lines(out)
    assert records[1]["message"].endswith("auth=[redacted]&efaxID=1")
    assert "[redacted]" in records[-1]["exception"]


def test_text_on_a_terminal(restore_logging: None) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    configure_logging("beat", stream=out)
    with fax_context("fx_0002", account="main", provider="primevox"):
        logging.getLogger("worker.pipeline.sweeper").info("woke %d", 3)
    line = out.getvalue().strip()
    assert not line.startswith("{")
    assert "INFO" in line and "worker.pipeline.sweeper" in line and line.endswith("woke 3")
    assert "[fax_id=fx_0002 account=main provider=primevox]" in line


# --- a real worker --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def system(
    tmp_path_factory: pytest.TempPathFactory, s3_server: str, sandbox_server: Any
) -> Iterator[System]:
    s = System(tmp_path_factory.mktemp("logging"), s3_server, sandbox_server.url, BUCKET).start()
    yield s
    s.stop()


def test_worker_lines_carry_fax_account_and_task_id_and_no_secret(
    system: System, sandbox: Any
) -> None:
    fax = sandbox.control("inbound", provider="primevox")
    sandbox.control(
        "faults", provider="primevox", operation="download", kind="error", status=503, count=1
    )
    answer = sandbox_fire(
        sandbox.url, provider="primevox", kind="inbound", url=system.webhook_url("pv"), id=fax["id"]
    )
    fax_id = answer["headers"]["faxrelay-fax-id"]
    system.wait_state(fax_id, "archived")
    assert system.log_path is not None
    system.log_tail()  # flushes
    text = system.log_path.read_text()
    worker = [
        json.loads(line.removeprefix("[worker] "))
        for line in text.splitlines()
        if line.startswith("[worker] {")
    ]
    assert worker, text[-2000:]
    mine = [r for r in worker if r.get("fax_id") == fax_id]
    retry = next(r for r in mine if "download attempt 1 failed" in r["message"])
    assert retry["account"] == "pv" and retry["provider"] == "primevox"
    assert retry["task_id"] and retry["logger"] == "worker.pipeline.inbound"
    assert retry["level"] == "INFO" and retry["process"] == "worker"
    assert any(line.startswith("[beat] {") for line in text.splitlines())
    for secret in (
        sb_primevox.VALID_AUTH,
        sb_ucx.CLIENT_SECRET,
        WEBHOOK_TOKEN,
        API_TOKEN,
        EVENT_SECRET,
    ):
        assert secret not in text, secret
