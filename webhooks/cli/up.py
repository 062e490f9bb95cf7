"""``faxrelay up`` and ``faxrelay sandbox``: run the whole system (or only the provider sandbox) on
one machine, with embedded Redis and S3 where the settings name none.

``up`` supervises its processes: the web app, the worker, the archiver and the acceptor
(``config.workers``) and beat are restarted when they exit or wedge; when Redis, S3 or the sandbox
exits, everything stops.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import httpx

from config import connect
from config.embedded import (
    CELERY_FATAL,
    ManagedProcess,
    SeaweedPorts,
    StartupError,
    free_port,
    start_redis,
    start_seaweed,
    wait_until,
    write_private,
)
from config.settings import ConfigError, Settings, load_settings
from config.workers import ACCEPTOR, ARCHIVER, KINDS, WORKER, WorkerKind, worker_argv


def _sandbox_config(sandbox_url: str, token: str) -> str:
    """A config with one account per provider, pointing at the sandbox."""
    from sandbox.accounts import sandbox_accounts_toml

    return sandbox_accounts_toml(sandbox_url, token)


@click.command()
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
    type=click.Choice(["always", "everysec"]),
    default="always",
    show_default=True,
    help="AOF fsync policy of the embedded Redis: always (a 2xx means on disk) or everysec "
    "(faster; a host crash may lose the last second).",
)
@click.option(
    "--sandbox", "with_sandbox", is_flag=True, help="Add the provider sandbox and a config for it."
)
@click.option(
    "--concurrency",
    default=WORKER.concurrency,
    show_default=True,
    help="Threads of the worker (sends, polls, events, sweeps).",
)
@click.option(
    "--archive-concurrency",
    default=ARCHIVER.concurrency,
    show_default=True,
    help="Threads of the archiver (received faxes' downloads and uploads).",
)
def up(
    host: str,
    port: int,
    state_dir: Path,
    appendfsync: str,
    with_sandbox: bool,
    concurrency: int,
    archive_concurrency: int,
) -> None:
    """Start the whole system: Redis, S3, the web app, the worker, the archiver and the acceptor,
    and beat. Ctrl-C stops it."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # (a new one: its owner's only)
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
        if not env.get("FAXRELAY_REDIS_URL") and not env.get("FAXRELAY_REDIS_SENTINELS"):
            redis_port = free_port()
            # A password, even on loopback: any local user or a browser's page could talk to it.
            password = _state_secret(state_dir / "redis-password")
            procs.append(
                start_redis(
                    state_dir / "redis", redis_port, appendfsync=appendfsync, password=password
                )
            )
            env["FAXRELAY_REDIS_URL"] = f"redis://:{password}@127.0.0.1:{redis_port}/0"
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
                write_private(config, _sandbox_config(sandbox_url, token))
                env["FAXRELAY_CONFIG"] = str(config.resolve())
            env.setdefault("FAXRELAY_CALLBACK_HOSTS", "127.0.0.1,localhost")
            if not env.get("FAXRELAY_API_TOKENS"):  # so the dashboard and API can be tried at once
                env["FAXRELAY_API_TOKENS"] = _state_secret(state_dir / "sandbox-api-token")
        settings = _check_config(env)
        web_url = f"http://{host}:{port}"
        factories: dict[str, Callable[[], ManagedProcess]] = {
            "web": lambda: ManagedProcess(
                "web",
                [sys.executable, "-m", "uvicorn", "--factory", "webhooks.app:create_app",
                 "--host", host, "--port", str(port), "--no-access-log",
                 "--no-proxy-headers"],  # the app applies FAXRELAY_FORWARDED_ALLOW_IPS itself
                env=env,
            ),
            # config/workers.py: the archiver's slots are for received faxes only, so a burst
            # of large ones never holds up a send or a poll.
            "worker": lambda: _worker(WORKER, concurrency, env),
            "archiver": lambda: _worker(ARCHIVER, archive_concurrency, env),
            # worker.acceptor, not a Celery worker: restarted under the same node name
            # (acceptor@%h), it takes back the message it held when it died.
            "acceptor": lambda: _worker(ACCEPTOR, ACCEPTOR.concurrency, env),
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
        _wait_http(f"{web_url}/readyz", 60, app_procs["web"])
        for kind in KINDS:
            _wait_worker(settings, kind, app_procs[kind.name])
        endpoints = {
            "web_url": web_url,
            "redis_url": env.get("FAXRELAY_REDIS_URL", ""),  # empty with Sentinel
            "s3_endpoint_url": env["FAXRELAY_S3_ENDPOINT_URL"],
            "s3_bucket": env.get("FAXRELAY_S3_BUCKET", "faxrelay"),
            "aws_access_key_id": env.get("AWS_ACCESS_KEY_ID", "faxrelay"),
            "aws_secret_access_key": env.get("AWS_SECRET_ACCESS_KEY", "faxrelay"),
            "sandbox_url": sandbox_url,
            "config": str(Path(env["FAXRELAY_CONFIG"]).resolve())
            if env.get("FAXRELAY_CONFIG")
            else "",
        }
        write_private(endpoints_file, json.dumps(endpoints, indent=2))  # S3 keys, Redis password
        click.echo(f"faxrelay is up: web {web_url}  (ready: {web_url}/readyz)")
        click.echo(f"  redis {connect.describe(settings)}  s3 {endpoints['s3_endpoint_url']}")
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
        write_private(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


def _stop(procs: list[ManagedProcess]) -> None:
    for proc in reversed(procs):
        proc.stop()


def _check_config(env: dict[str, str]) -> Settings:
    """The settings the children will read from ``env``; ConfigError when they are invalid."""
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        return load_settings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _wait_http(url: str, timeout: float, proc: ManagedProcess) -> None:
    wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, timeout, url, proc)


def _worker(kind: WorkerKind, concurrency: int, env: dict[str, str]) -> ManagedProcess:
    return ManagedProcess(
        kind.name,
        worker_argv(kind, f"{kind.name}@%h", concurrency=concurrency),
        env=env,
        stop_timeout=30,
        fatal_markers=CELERY_FATAL,
    )


def _wait_worker(settings: Settings, kind: WorkerKind, proc: ManagedProcess) -> None:
    client = connect.sync_client(settings)
    wait_until(lambda: bool(client.exists(kind.ready_key)), 60, f"the {kind.name}", proc)


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8900, show_default=True)
@click.option("--speed", default=1.0, show_default=True, help="Sandbox clock speed.")
@click.option(
    "--latency", default=0.0, show_default=True, help="Seconds before each provider call answers."
)
@click.option(
    "--bandwidth",
    default="0",
    show_default=True,
    help="Each provider call's bytes per second, e.g. 4MB/s (0: unlimited).",
)
def sandbox_cmd(host: str, port: int, speed: float, latency: float, bandwidth: str) -> None:
    """Run the provider sandbox (the five providers' APIs, with fault injection)."""
    import uvicorn

    from sandbox.app import create_app
    from sandbox.core import Sandbox
    from sandbox.network import parse_rate

    try:
        rate = parse_rate(bandwidth)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--bandwidth") from None
    sb = Sandbox(speed=speed)
    sb.network.set(latency, rate)
    click.echo(f"sandbox on http://{host}:{port}  (control API: /_sandbox/…)")
    uvicorn.run(create_app(sb), host=host, port=port, log_level="info")
