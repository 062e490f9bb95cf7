"""The ``faxrelay`` command. It sits on top of everything (web app, worker, sandbox), so it lives
in the top package of the dependency chain.

Exit codes: 0 success, 1 the operation failed, 2 bad usage or configuration.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NoReturn

import click
import httpx

from config.embedded import (
    CELERY_FATAL,
    ManagedProcess,
    SeaweedPorts,
    StartupError,
    free_port,
    start_redis,
    start_seaweed,
    wait_until,
)
from config.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from worker.domain import FaxRecord
    from worker.providers.base import InboundFax
    from worker.runtime import Runtime

QUEUES = "celery,faxrelay.intake,faxrelay.archive,faxrelay.send,faxrelay.poll,faxrelay.events"


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """faxrelay: a fax relay between fax providers and your own services.

    Exit codes: 0 success, 1 the operation failed, 2 bad usage or configuration.
    """


# --- up -------------------------------------------------------------------------------------


def _sandbox_config(sandbox_url: str, token: str) -> str:
    """A config with one account per provider, pointing at the sandbox."""
    from sandbox.accounts import sandbox_accounts_toml

    return sandbox_accounts_toml(sandbox_url, token)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Web app address.")
@click.option("--port", default=8000, show_default=True, help="Web app port.")
@click.option(
    "--state-dir",
    envvar="FAXRELAY_STATE_DIR",
    default=".faxrelay",
    show_default=True,
    type=click.Path(path_type=Path),
    help="Where embedded Redis and S3 keep their data, and endpoints.json.",
)
@click.option(
    "--appendfsync",
    type=click.Choice(["everysec", "always"]),
    default="everysec",
    show_default=True,
    help="AOF fsync policy of the embedded Redis.",
)
@click.option(
    "--sandbox", "with_sandbox", is_flag=True, help="Add the provider sandbox and a config for it."
)
@click.option("--workers", default=2, show_default=True, help="Worker concurrency.")
def up(
    host: str, port: int, state_dir: Path, appendfsync: str, with_sandbox: bool, workers: int
) -> None:
    """Start the whole system: Redis, S3, the web app, a worker and beat. Ctrl-C stops it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    endpoints_file = state_dir / "endpoints.json"
    endpoints_file.unlink(missing_ok=True)  # it describes a running system only
    env = dict(os.environ)
    env["FAXRELAY_STATE_DIR"] = str(state_dir)
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):  # web and worker processes share /metrics
        from worker.metrics import prepare_multiproc_dir

        env["PROMETHEUS_MULTIPROC_DIR"] = str(prepare_multiproc_dir(state_dir / "metrics"))
    if sys.stdout.isatty():  # children write to our pipes; their lines end up on a terminal
        env.setdefault("FAXRELAY_LOG_FORMAT", "text")
    procs: list[ManagedProcess] = []
    stopping = threading.Event()

    def stop_all(*_: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    try:
        if not env.get("FAXRELAY_REDIS_URL"):
            redis_port = free_port()
            procs.append(start_redis(state_dir / "redis", redis_port, appendfsync=appendfsync))
            env["FAXRELAY_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        if not env.get("FAXRELAY_S3_ENDPOINT_URL"):
            env.setdefault("FAXRELAY_S3_BUCKET", "faxrelay")
            ports = SeaweedPorts.pick()
            procs.append(start_seaweed(state_dir / "s3", ports, env["FAXRELAY_S3_BUCKET"]))
            env["FAXRELAY_S3_ENDPOINT_URL"] = f"http://127.0.0.1:{ports.s3}"
        sandbox_url = ""
        if with_sandbox:
            sandbox_port = free_port()
            sandbox_url = f"http://127.0.0.1:{sandbox_port}"
            procs.append(
                ManagedProcess(
                    "sandbox",
                    [sys.executable, "-m", "uvicorn", "--factory", "sandbox.app:create_app",
                     "--host", "127.0.0.1", "--port", str(sandbox_port), "--log-level", "warning"],
                    env=env,
                ).start()
            )  # fmt: skip
            _wait_http(f"{sandbox_url}/_sandbox/jobs", 30, procs[-1])
            if not env.get("FAXRELAY_CONFIG"):
                token = _state_secret(state_dir / "sandbox-webhook-token")
                config = state_dir / "sandbox.toml"
                config.write_text(_sandbox_config(sandbox_url, token))
                env["FAXRELAY_CONFIG"] = str(config.resolve())
            env.setdefault("FAXRELAY_CALLBACK_HOSTS", "127.0.0.1,localhost")
            if not env.get("FAXRELAY_API_TOKENS"):  # so the dashboard and API can be tried at once
                env["FAXRELAY_API_TOKENS"] = _state_secret(state_dir / "sandbox-api-token")
        _check_config(env)
        web_url = f"http://{host}:{port}"
        factories: dict[str, Callable[[], ManagedProcess]] = {
            "web": lambda: ManagedProcess(
                "web",
                [sys.executable, "-m", "uvicorn", "--factory", "webhooks.app:create_app",
                 "--host", host, "--port", str(port), "--no-access-log"],
                env=env,
            ),
            "worker": lambda: ManagedProcess(
                "worker",
                [sys.executable, "-m", "celery", "-A", "config.celery_app", "worker",
                 "-Q", QUEUES, "--concurrency", str(workers), "-l", "info", "-n", "faxrelay@%h"],
                env=env,
                stop_timeout=30,
                fatal_markers=CELERY_FATAL,
            ),
            "beat": lambda: ManagedProcess(
                "beat",
                [sys.executable, "-m", "celery", "-A", "config.celery_app", "beat", "-l", "info",
                 "-s", str(state_dir / "celerybeat-schedule")],
                env=env,
                fatal_markers=CELERY_FATAL,
            ),
        }  # fmt: skip
        app_procs = {name: make().start() for name, make in factories.items()}
        procs.extend(app_procs.values())
        web, worker = app_procs["web"], app_procs["worker"]
        _wait_http(f"{web_url}/readyz", 60, web)
        _wait_worker(env, worker)
        endpoints = {
            "web_url": web_url,
            "redis_url": env["FAXRELAY_REDIS_URL"],
            "s3_endpoint_url": env["FAXRELAY_S3_ENDPOINT_URL"],
            "s3_bucket": env.get("FAXRELAY_S3_BUCKET", "faxrelay"),
            "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID", "faxrelay"),
            "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY", "faxrelay"),
            "sandbox_url": sandbox_url,
            "config": str(Path(env["FAXRELAY_CONFIG"]).resolve())
            if env.get("FAXRELAY_CONFIG")
            else "",
        }
        endpoints_file.write_text(json.dumps(endpoints, indent=2))
        click.echo(f"faxrelay is up: web {web_url}  (ready: {web_url}/readyz)")
        click.echo(f"  redis {endpoints['redis_url']}  s3 {endpoints['s3_endpoint_url']}")
        if sandbox_url:
            click.echo(f"  sandbox {sandbox_url}  config {endpoints['config']}")
            click.echo(f"  dashboard token: in {state_dir / 'sandbox-api-token'}")
        click.echo(f"  endpoints: {state_dir / 'endpoints.json'}   Ctrl-C stops everything.")
        while not stopping.wait(1.0):
            for proc in procs:
                if proc.alive() and not proc.wedged:
                    continue
                if proc.name not in factories:  # Redis, S3 or the sandbox: nothing works without
                    click.echo(f"{proc.name} exited; stopping everything", err=True)
                    stopping.set()
                    break
                # Like any process supervisor: the app's own processes are restarted.
                click.echo(f"{proc.name} exited or wedged; restarting it", err=True)
                proc.signal(signal.SIGKILL)
                procs[procs.index(proc)] = factories[proc.name]().start()
    except (StartupError, ConfigError) as exc:
        click.echo(f"faxrelay up: {exc}", err=True)
        _stop(procs)
        raise SystemExit(1) from None
    _stop(procs)
    endpoints_file.unlink(missing_ok=True)
    click.echo("faxrelay stopped")


def _state_secret(path: Path) -> str:
    """A random token kept in the state directory (made on first use, readable by its owner)."""
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _stop(procs: list[ManagedProcess]) -> None:
    for proc in reversed(procs):
        proc.stop()


def _check_config(env: dict[str, str]) -> None:
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _wait_http(url: str, timeout: float, proc: ManagedProcess) -> None:
    wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, timeout, url, proc)


def _wait_worker(env: dict[str, str], proc: ManagedProcess) -> None:
    import redis

    client = redis.Redis.from_url(env["FAXRELAY_REDIS_URL"])
    # A worker that consumes its queues registers them as kombu bindings.
    wait_until(
        lambda: bool(client.exists("_kombu.binding.faxrelay.archive")), 60, "the worker", proc
    )


# --- sandbox ----------------------------------------------------------------------------------


@main.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8900, show_default=True)
@click.option("--speed", default=1.0, show_default=True, help="Sandbox clock speed.")
def sandbox_cmd(host: str, port: int, speed: float) -> None:
    """Run the provider sandbox (the five providers' APIs, with fault injection)."""
    import uvicorn

    from sandbox.app import create_app
    from sandbox.core import Sandbox

    click.echo(f"sandbox on http://{host}:{port}  (control API: /_sandbox/…)")
    uvicorn.run(create_app(Sandbox(speed=speed)), host=host, port=port, log_level="info")


# --- config ------------------------------------------------------------------------------------


@main.group("config")
def config_group() -> None:
    """Configuration."""


@config_group.command("check")
def config_check() -> None:
    """Load and validate the configuration; say what is wrong."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        click.echo(f"configuration is invalid:\n{exc}", err=True)
        raise SystemExit(2) from None
    click.echo(f"configuration is valid: {len(settings.accounts)} account(s)")
    for name, account in settings.accounts.items():
        click.echo(f"  {name}: {account.provider} at {account.base_url}")


# --- webhooks ---------------------------------------------------------------------------------


def _settings() -> Settings:
    """The settings, completed from ``{state dir}/endpoints.json`` of a running ``faxrelay up``
    where they name no Redis or S3; exit 2 when they are invalid."""
    if not os.environ.get("FAXRELAY_CONFIG"):
        # The configuration the running system was started with (e.g. the sandbox's).
        state_dir = Path(os.environ.get("FAXRELAY_STATE_DIR", ".faxrelay"))
        running_config = _endpoints(state_dir).get("config", "")
        if running_config:
            os.environ["FAXRELAY_CONFIG"] = running_config
    try:
        settings = load_settings()
    except ConfigError as exc:
        click.echo(f"configuration is invalid:\n{exc}", err=True)
        raise SystemExit(2) from None
    endpoints = _endpoints(settings.state_dir)
    update: dict[str, Any] = {}
    if not settings.redis_url and endpoints.get("redis_url"):
        update["redis_url"] = endpoints["redis_url"]
    if not settings.s3_endpoint_url and endpoints.get("s3_endpoint_url"):
        update["s3_endpoint_url"] = endpoints["s3_endpoint_url"]
        if "FAXRELAY_S3_BUCKET" not in os.environ and endpoints.get("s3_bucket"):
            update["s3_bucket"] = endpoints["s3_bucket"]
        for key in ("aws_access_key_id", "aws_secret_access_key"):
            if endpoints.get(key):
                os.environ.setdefault(key.upper(), endpoints[key])
    return settings.model_copy(update=update) if update else settings


def _redis() -> Any:
    import redis

    url = _settings().redis_url
    if not url:
        click.echo("no Redis: set FAXRELAY_REDIS_URL or start `faxrelay up`", err=True)
        raise SystemExit(2)
    return redis.Redis.from_url(url)


def _runtime(*, need_redis: bool = True) -> Runtime:
    """A worker Runtime for this process: the store, the archive, the accounts' provider
    clients. Wake-ups are written straight onto the worker's queues (as the web app does)."""
    import logging

    from config.logging import configure_logging
    from worker.fastpath.messages import task_message
    from worker.runtime import Runtime

    settings = _settings()
    # The worker code run here logs warnings (a failed download, a refused URL): same format.
    configure_logging("cli", level=logging.WARNING)
    if need_redis and not settings.redis_url:
        click.echo("no Redis: set FAXRELAY_REDIS_URL or start `faxrelay up`", err=True)
        raise SystemExit(2)
    holder: list[Runtime] = []

    def send(task: str, queue: str, args: list[str]) -> None:
        holder[0].store.redis.lpush(queue, task_message(task, queue, args))

    runtime = Runtime(settings, send)
    holder.append(runtime)
    return runtime


def _endpoints(state_dir: Path) -> dict[str, str]:
    path = state_dir / "endpoints.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


@main.group("webhooks")
def webhooks_group() -> None:
    """The raw webhook log."""


@webhooks_group.command("list")
@click.option("--limit", default=20, show_default=True)
@click.option("--account", default=None)
def webhooks_list(limit: int, account: str | None) -> None:
    """Recent webhook requests, newest first."""
    from worker.store.rawlog import list_entries

    for e in list_entries(_redis(), limit, account):
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at))
        click.echo(
            f"{e.id}  {at}Z  {e.account:<12} {e.route:<8} {e.status}  {e.outcome:<10} {e.fax_id}"
        )


@webhooks_group.command("show")
@click.argument("log_id")
def webhooks_show(log_id: str) -> None:
    """One webhook request in full (secrets redacted)."""
    from worker.store.rawlog import get_entry

    entry = get_entry(_redis(), log_id)
    if entry is None:
        click.echo(f"no webhook log entry {log_id}", err=True)
        raise SystemExit(1)
    data = {k: v for k, v in entry.__dict__.items() if k != "body_b64"}
    data["body"] = entry.body.decode(errors="replace")
    click.echo(json.dumps(data, indent=2))


@webhooks_group.command("replay")
@click.argument("log_id")
@click.option("--url", default=None, help="faxrelay's web URL (default: from endpoints.json).")
def webhooks_replay(log_id: str, url: str | None) -> None:
    """Send a stored webhook request to faxrelay again (dedup makes this safe)."""
    from worker.store.rawlog import get_entry

    settings = _settings()  # the running system's configuration, as _redis() uses
    entry = get_entry(_redis(), log_id)
    if entry is None:
        click.echo(f"no webhook log entry {log_id}", err=True)
        raise SystemExit(1)
    if entry.truncated:
        click.echo(
            "the stored body is incomplete (truncated or cut short); it cannot be replayed",
            err=True,
        )
        raise SystemExit(1)
    account = settings.accounts.get(entry.account)
    if account is None or account.webhook_token is None:
        click.echo(f"account {entry.account!r} has no webhook_token configured", err=True)
        raise SystemExit(1)
    base = url or _endpoints(settings.state_dir).get("web_url", "http://127.0.0.1:8000")
    headers = {
        k: v
        for k, v in entry.headers.items()
        if k in ("content-type", "user-agent") or k.startswith("x-")
    }
    answer = httpx.post(
        f"{base}{entry.path}",
        params={"token": account.webhook_token.get_secret_value()},
        content=entry.body,
        headers=headers,
        timeout=30,
    )
    about = " ".join(
        f"{k[9:]}={v}" for k, v in answer.headers.items() if k.lower().startswith("faxrelay-")
    )  # what happened (2xx answers carry it in Faxrelay-* headers)
    click.echo(" ".join(x for x in (str(answer.status_code), about, answer.text[:500]) if x))
    raise SystemExit(0 if answer.status_code < 300 else 1)


# --- operator commands: shared helpers ----------------------------------------------------------


def _table(headers: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell; the last column is left ragged."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        click.echo("  ".join([*cells, line[-1]]).rstrip())


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(message, err=True)
    raise SystemExit(code)


def _record(runtime: Runtime, fax_id: str) -> FaxRecord:
    record = runtime.store.find(fax_id)
    if record is None:
        _fail(f"no fax with id {fax_id}")
    return record


def _account(runtime: Runtime, name: str) -> None:
    if name not in runtime.settings.accounts:
        known = ", ".join(sorted(runtime.settings.accounts)) or "none"
        _fail(f"no account named {name!r} (accounts: {known})", 2)


# --- accounts ----------------------------------------------------------------------------------


@main.group("accounts")
def accounts_group() -> None:
    """Provider accounts."""


def _check_details(result: dict[str, Any]) -> str:
    parts = [str(result["problem"])] if result.get("problem") else []
    for key, value in result.items():
        if key in ("ok", "problem"):
            continue
        if isinstance(value, list | tuple):
            parts.append(f"{key}=[{len(value)}]")
        elif isinstance(value, dict):
            parts.append(f"{key}={{{len(value)}}}")
        else:
            parts.append(f"{key}={value}")
    return ", ".join(parts)


@accounts_group.command("check")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print every provider's full answer as JSON.")
def accounts_check(name: str | None, as_json: bool) -> None:
    """Call each account's provider with its credentials (or only NAME's); exit 1 if any fails.

    Each provider's cheapest authenticated calls are used; nothing is sent or changed.
    """
    from config.logging import Redactor, secret_values
    from worker.providers.base import ProviderError

    runtime = _runtime(need_redis=False)
    if name is not None:
        _account(runtime, name)
    names = [name] if name else sorted(runtime.settings.accounts)
    if not names:
        _fail("no accounts are configured (see `faxrelay config check`)", 2)
    redact = Redactor(secret_values(), patterns=False)  # "token=accepted" is no secret
    rows, answers, failed = [], {}, 0
    for account in names:
        provider = runtime.settings.accounts[account].provider
        try:
            result = runtime.provider(account).check()
        except ProviderError as exc:
            ok, details, answers[account] = False, str(exc), {"error": str(exc)}
        except Exception as exc:  # a bug or a broken network: still one row per account
            ok, details = False, f"{type(exc).__name__}: {exc}"
            answers[account] = {"error": details}
        else:
            ok = result.get("ok", True) is not False
            details, answers[account] = _check_details(result), result
        failed += not ok
        details = redact(details)
        rows.append([account, provider, "ok" if ok else "FAILED", details[:160]])
    if as_json:
        click.echo(redact(json.dumps(answers, indent=2, default=str)))
    else:
        _table(["ACCOUNT", "PROVIDER", "RESULT", "DETAILS"], rows)
    raise SystemExit(1 if failed else 0)


# --- send --------------------------------------------------------------------------------------

GOOD_ENDS = ("delivered", "accepted")


def _history_line(entry: dict[str, Any], indent: str) -> str:
    line = f"{indent}{entry['at']}  {entry['state']:<10}  {entry.get('note') or ''}"
    return line.rstrip()


def _follow(runtime: Runtime, fax_id: str, timeout: float) -> FaxRecord:
    """Print each history entry as it appears, until the fax is final or needs an operator."""
    deadline = time.monotonic() + timeout if timeout else None
    shown, delay = 0, 0.1
    while True:
        record = runtime.store.get(fax_id)
        for entry in record.history[shown:]:
            click.echo(_history_line(entry, "  "))
        shown = len(record.history)
        if record.final or record.state == "unknown":
            return record
        if deadline is not None and time.monotonic() > deadline:
            _fail(f"{fax_id} is still {record.state} after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


@main.command("send")
@click.argument("file", type=click.File("rb"))
@click.option("--account", required=True, help="The account to send through.")
@click.option("--to", "to", required=True, help="Destination number (+, spaces, dashes allowed).")
@click.option("--wait", is_flag=True, help="Show each state change until the fax is final.")
@click.option(
    "--timeout", default=0.0, help="With --wait: give up after this many seconds (0: never)."
)
@click.option("--idempotency-key", default="", help="The same key never sends twice (per account).")
@click.option("--callback-url", default="", help="Where this fax's signed events go.")
@click.option("--metadata", default="", help="A JSON object kept with the record.")
def send_cmd(
    file: IO[bytes],
    account: str,
    to: str,
    wait: bool,
    timeout: float,
    idempotency_key: str,
    callback_url: str,
    metadata: str,
) -> None:
    """Send the PDF FILE ('-' for stdin) and print the fax id.

    Exit 0 when queued (with --wait: delivered, or accepted where the provider offers no
    tracking); 1 when it ends failed, cancelled or unknown, or the send conflicts with an earlier
    one of the same idempotency key; 2 when the request is refused (account, number, document).
    """
    from worker.pipeline.outbound import SendError, SendRequest, accept_send

    runtime = _runtime()
    _account(runtime, account)
    try:
        meta = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--metadata") from None
    request = SendRequest(
        account=account,
        to=to,
        document={},
        idempotency_key=idempotency_key,
        callback_url=callback_url,
        metadata=meta,
        file=file.read(),
    )
    try:
        accepted = accept_send(runtime, request)
    except SendError as exc:
        _fail(f"send refused: {exc.code}: {exc.message}", 1 if exc.status == 409 else 2)
    record = accepted.record
    click.echo(record.id)
    if not accepted.created:
        click.echo(f"(an earlier send with this idempotency key; it is {record.state})", err=True)
    if not wait:
        return
    record = _follow(runtime, record.id, timeout)
    if record.state in GOOD_ENDS:
        return
    reason = f": {record.reason} ({record.reason_detail})" if record.reason else ""
    _fail(f"{record.id} ended {record.state}{reason}")


# --- faxes -------------------------------------------------------------------------------------


@main.group("faxes")
def faxes_group() -> None:
    """Fax records: list, show, retry, cancel."""


STATES = [
    "received", "fetching", "archived", "queued", "submitted", "sending", "delivered",
    "cancelled", "accepted", "unknown", "failed",
]  # fmt: skip


@faxes_group.command("list")
@click.option("--direction", type=click.Choice(["inbound", "outbound"]), default=None)
@click.option("--account", default=None)
@click.option("--state", type=click.Choice(STATES), default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
@click.option("--cursor", default=None, help="The 'next cursor' a previous page printed.")
@click.option("--json", "as_json", is_flag=True, help='{"items": [...], "next_cursor"} as the API.')
def faxes_list(
    direction: str | None,
    account: str | None,
    state: str | None,
    limit: int,
    cursor: str | None,
    as_json: bool,
) -> None:
    """Fax records, newest first."""
    runtime = _runtime()
    page = runtime.store.list(
        direction=direction, account=account, state=state, limit=limit, cursor=cursor
    )
    if as_json:
        items = [r.public() for r in page.items]
        click.echo(json.dumps({"items": items, "next_cursor": page.next_cursor}, indent=2))
        return
    rows = [
        [
            r.id, r.direction[:3], r.account, r.state, r.reason or "-",
            r.from_number or "-", r.to_number or "-", str(r.pages or "-"), r.created_at[:19],
        ]
        for r in page.items
    ]  # fmt: skip
    _table(["ID", "DIR", "ACCOUNT", "STATE", "REASON", "FROM", "TO", "PAGES", "CREATED"], rows)
    if page.next_cursor and len(page.items) == limit:
        click.echo(f"next cursor: {page.next_cursor}")


@faxes_group.command("show")
@click.argument("fax_id")
@click.option("--json", "as_json", is_flag=True, help="The record as the API shows it.")
def faxes_show(fax_id: str, as_json: bool) -> None:
    """One record: its fields, why it failed, and its timeline."""
    record = _record(_runtime(), fax_id)
    if as_json:
        click.echo(json.dumps(record.public(), indent=2))
        return
    line = f"{record.id}  {record.direction}  {record.account} ({record.provider})  {record.state}"
    click.echo(line)
    if record.reason:
        click.echo(f"  reason:    {record.reason}: {record.reason_detail}")
    fields = [
        ("from", record.from_number), ("to", record.to_number),
        ("pages", "" if record.pages is None else str(record.pages)), ("sha256", record.sha256),
        ("provider", " ".join(f"{k}={v}" for k, v in record.provider_ids.items() if v)),
        ("archive", f"s3://{record.archive['bucket']}/{record.archive['key']}"
         if record.archive else ""),
        ("document", record.document_key), ("callback", record.callback_url),
        ("metadata", json.dumps(record.metadata) if record.metadata else ""),
        ("attempts", " ".join(f"{k}={v}" for k, v in record.attempts.items())),
        ("created", record.created_at), ("updated", record.updated_at),
        ("expires", record.expires_at or ""),
        ("last error", str(record.work.get("last_error", ""))),
    ]  # fmt: skip
    for name, value in fields:
        if value:
            click.echo(f"  {name + ':':<10} {value}")
    click.echo("  timeline:")
    for entry in record.history:
        click.echo(_history_line(entry, "    "))


class _Final(Exception):
    pass


@faxes_group.command("retry")
@click.argument("fax_id")
def faxes_retry(fax_id: str) -> None:
    """Wake a record now: an overdue or retrying one, or an outbound fax whose submit outcome is
    unknown (it is submitted again: check at the provider first). Exit 1 if it is final."""
    from worker.domain import Direction, iso, utcnow
    from worker.pipeline.outbound import SendError, retry_fax

    runtime = _runtime()
    record = _record(runtime, fax_id)
    if record.direction == Direction.OUTBOUND:
        try:
            record = retry_fax(runtime, fax_id)
        except SendError as exc:
            _fail(f"cannot retry {fax_id}: {exc.message}")
    else:

        def mutate(r: FaxRecord) -> None:
            if r.final:
                raise _Final(str(r.state))
            r.history.append(
                {"state": str(r.state), "at": iso(utcnow()), "note": "retry by operator"}
            )
            r.due_at = time.time()
            r.work.pop("not_before", None)  # its backoff is over: the operator says now

        try:
            record, _ = runtime.store.update(fax_id, mutate)
        except _Final as exc:
            _fail(f"cannot retry {fax_id}: the fax is already {exc}")
        runtime.wake(record)
    click.echo(f"{fax_id}: woken ({record.state})")


@faxes_group.command("cancel")
@click.argument("fax_id")
def faxes_cancel(fax_id: str) -> None:
    """Cancel an outbound fax: before submit anywhere, after it where the provider can.
    Exit 1 with the reason when it can no longer be cancelled."""
    from worker.pipeline.outbound import SendError, cancel_fax

    runtime = _runtime()
    _record(runtime, fax_id)
    try:
        record = cancel_fax(runtime, fax_id)
    except SendError as exc:
        _fail(f"cannot cancel {fax_id}: {exc.message}")
    click.echo(f"{fax_id}: {record.state}")


# --- backfill ----------------------------------------------------------------------------------


if TYPE_CHECKING:
    _DateParam = click.ParamType[datetime]
else:
    _DateParam = click.ParamType  # generic only in newer click


class _When(_DateParam):
    """A date (YYYY-MM-DD) or an ISO 8601 time; UTC unless it names a zone."""

    name = "DATE"

    def __init__(self, end: bool = False) -> None:
        self.end = end  # a date alone means the end of that day

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        from datetime import UTC, date, datetime, timedelta

        if isinstance(value, datetime):
            return value
        text = str(value).strip()
        try:
            if len(text) == 10:
                day = date.fromisoformat(text)
                moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
                return moment + timedelta(days=1) if self.end else moment
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            self.fail(f"{text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time", param, ctx)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class _Tally:
    archived: int = 0
    already: int = 0
    pending: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    queued: int = 0

    def report(self) -> None:
        click.echo(f"archived:         {self.archived}")
        click.echo(f"already archived: {self.already}")
        if self.queued:
            click.echo(f"queued for the worker: {self.queued}")
        if self.pending:
            click.echo(f"not yet archived (the worker retries them): {len(self.pending)}")
            for line in self.pending:
                click.echo(f"  {line}")
        click.echo(f"failed:           {len(self.failed)}")
        for line in self.failed:
            click.echo(f"  {line}")


def _backfill_one(
    runtime: Runtime, account: str, fax: InboundFax, wake: bool, tally: _Tally
) -> None:
    from worker.domain import State
    from worker.pipeline.inbound import handle_inbound, inbound_dedup, new_inbound_record
    from worker.runtime import INBOUND_TASK
    from worker.store.records import dedup_key

    scope, key = inbound_dedup(account, fax.provider_fax_id)
    created = runtime.store.create(
        new_inbound_record(runtime, account, fax), dedup=dedup_key(scope, key)
    )
    record = created.record
    label = f"{fax.provider_fax_id} ({record.id})"
    if not created.created and record.final:
        if record.state == State.ARCHIVED:
            tally.already += 1
        else:
            tally.failed.append(f"{label}: {record.reason}: {record.reason_detail} (earlier)")
        return
    if wake:
        runtime.send_task(INBOUND_TASK[0], INBOUND_TASK[1], [record.id])
        tally.queued += 1
        return
    handle_inbound(runtime, record.id)  # announces fax.received once, then archives
    record = runtime.store.get(record.id)
    if record.state == State.ARCHIVED:
        tally.archived += 1
    elif record.state == State.FAILED:
        tally.failed.append(f"{label}: {record.reason}: {record.reason_detail}")
    else:
        why = record.work.get("last_error") or "a worker holds it"
        tally.pending.append(f"{label}: {record.state}: {why}")


@main.command("backfill")
@click.option("--account", required=True, help="An account whose provider lists received faxes.")
@click.option("--since", required=True, type=_When(), help="From (YYYY-MM-DD or ISO time, UTC).")
@click.option("--until", type=_When(end=True), default=None, help="Up to (a date: its end).")
@click.option("--wake", is_flag=True, help="Leave the archiving to the worker (no waiting).")
def backfill(account: str, since: datetime, until: datetime | None, wake: bool) -> None:
    """Archive every fax the provider holds from that range that faxrelay has not archived.

    New ones are recorded (deduplicated exactly as webhooks and reconciliation are) and archived
    here, one by one; known ones are skipped. Safe to interrupt and to run again. Exit 1 if any
    fax failed; 2 if the account's provider cannot list received faxes.
    """
    from worker.providers.base import ProviderError

    runtime = _runtime()
    _account(runtime, account)
    if until is not None and until <= since:
        _fail("--until must be after --since", 2)
    provider = runtime.provider(account)
    if not provider.capabilities.list_inbound:
        _fail(
            f"account {account!r} ({provider.name}): {provider.name} has no call that lists "
            "received faxes, so it cannot be backfilled; its faxes arrive by webhook only",
            2,
        )
    try:
        listed = provider.list_inbound(since)
    except ProviderError as exc:
        _fail(f"listing received faxes failed: {exc}")
    faxes = [
        fax
        for fax in listed
        if fax.provider_fax_id
        and (fax.received_at is None or fax.received_at >= since)
        and (until is None or fax.received_at is None or fax.received_at < until)
    ]
    span = f"since {since.isoformat()}" + (f" until {until.isoformat()}" if until else "")
    click.echo(f"{account}: {len(faxes)} received fax(es) {span}")
    tally = _Tally()
    done = 0
    try:
        with click.progressbar(faxes, label="archiving", file=sys.stderr, show_pos=True) as bar:
            for fax in bar:
                _backfill_one(runtime, account, fax, wake, tally)
                done += 1
    except KeyboardInterrupt:
        click.echo(f"\ninterrupted after {done} of {len(faxes)}; run it again to go on", err=True)
        tally.report()
        raise SystemExit(1) from None
    tally.report()
    raise SystemExit(1 if tally.failed else 0)


# --- events ------------------------------------------------------------------------------------


@main.group("events")
def events_group() -> None:
    """faxrelay's signed events (Standard Webhooks)."""


REQUEST_LINE = re.compile(rb"^[A-Z]+ \S+ HTTP/\d")


def _parse_request(raw: bytes) -> tuple[dict[str, str], bytes]:
    """A saved HTTP request: an optional request line, headers, a blank line, the body."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition(b"\n\n")
    lines = head.decode("latin-1").splitlines()
    if lines and REQUEST_LINE.match(lines[0].encode("latin-1")):
        lines = lines[1:]
    headers = _headers(lines)
    length = headers.get("content-length")
    if length and length.isdigit():
        body = body[: int(length)]
    if "chunked" in headers.get("transfer-encoding", ""):
        _fail("the saved request is chunked: save the decoded body with --body instead", 2)
    return headers, body


def _headers(lines: list[str] | tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for line in lines:
        if not line.strip():
            continue
        name, sep, value = line.partition(":")
        if not sep:
            _fail(f"not a header (want 'name: value'): {line!r}", 2)
        headers[name.strip().lower()] = value.strip()
    return headers


@events_group.command("verify")
@click.option("--secret", default=None, help="whsec_…; default: FAXRELAY_EVENT_SECRET's value.")
@click.option(
    "--body", "body_file", type=click.File("rb"), default=None, help="The body ('-': stdin)."
)
@click.option("--header", "-H", "header_lines", multiple=True, help="'name: value' (repeat).")
@click.option(
    "--request",
    "request_file",
    type=click.File("rb"),
    default=None,
    help="A saved HTTP request (headers, blank line, body) instead of --body/--header.",
)
@click.option("--tolerance", default=300.0, show_default=True,
              help="Largest age of webhook-timestamp in seconds; 0: do not check it.")  # fmt: skip
def events_verify(
    secret: str | None,
    body_file: IO[bytes] | None,
    header_lines: tuple[str, ...],
    request_file: IO[bytes] | None,
    tolerance: float,
) -> None:
    """Check an event's Standard Webhooks signature: prints ok, or why not (exit 1)."""
    import hmac

    from config.settings import webhook_secret_key
    from worker.pipeline.events import sign

    if request_file is not None:
        if body_file is not None:
            _fail("give --request or --body, not both", 2)
        headers, body = _parse_request(request_file.read())
        headers.update(_headers(header_lines))
    else:
        if body_file is None:
            _fail("give the body (--body FILE) and its headers (--header), or --request FILE", 2)
        headers, body = _headers(header_lines), body_file.read()
    if secret is None:
        configured = _settings().event_secret
        if configured is None:
            _fail("give --secret whsec_… (FAXRELAY_EVENT_SECRET is not set)", 2)
        secret = configured.get_secret_value()
    missing = [
        h for h in ("webhook-id", "webhook-timestamp", "webhook-signature") if h not in headers
    ]
    if missing:
        _fail(f"not verified: missing header(s) {', '.join(missing)}")
    try:
        timestamp = int(headers["webhook-timestamp"])
    except ValueError:
        _fail(f"not verified: webhook-timestamp {headers['webhook-timestamp']!r} is not a number")
    try:
        webhook_secret_key(secret)  # the forms faxrelay signs with: whsec_ + base64, or bare base64
    except ValueError:
        _fail("the secret is not a whsec_ secret (whsec_ followed by base64)", 2)
    expected = sign(secret, headers["webhook-id"], timestamp, body).split(",", 1)[1]
    given = [
        s.split(",", 1)[1] for s in headers["webhook-signature"].split() if s.startswith("v1,")
    ]
    if not any(hmac.compare_digest(expected, sig) for sig in given):
        _fail("not verified: the signature does not match (forged, altered, or another secret)")
    age = time.time() - timestamp
    if tolerance and abs(age) > tolerance:
        _fail(
            f"not verified: the signature matches, but webhook-timestamp is {age:.0f} s "
            f"{'old' if age > 0 else 'in the future'} (tolerance {tolerance:.0f} s): a replay or "
            "a stale saved request (--tolerance 0 skips this check)"
        )
    what = ""
    try:
        event = json.loads(body)
        data = event.get("data") or {}
        what = f": {event.get('type')} for {data.get('id')} ({data.get('state')})"
    except (ValueError, AttributeError):
        pass
    click.echo(f"ok: signature valid, webhook-id {headers['webhook-id']}{what}")


if __name__ == "__main__":
    main()
