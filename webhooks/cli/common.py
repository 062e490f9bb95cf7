"""What the operator commands share: the running system's settings, Redis and worker runtime,
and one way to print a table and to fail.

A command run next to ``faxrelay up`` finds that system's Redis, S3 and configuration in
``{state dir}/endpoints.json``, so nothing has to be exported first; explicit settings win.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from config import connect
from config.settings import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from worker.domain import FaxRecord
    from worker.runtime import Runtime


def cli_settings() -> Settings:
    """The settings, completed from ``{state dir}/endpoints.json`` of a running ``faxrelay up``
    where they name no Redis or S3; exit 2 when they are invalid."""
    if not os.environ.get("FAXRELAY_CONFIG"):
        # The configuration the running system was started with (e.g. the sandbox's).
        state_dir = Path(os.environ.get("FAXRELAY_STATE_DIR", ".faxrelay"))
        running_config = read_endpoints(state_dir).get("config", "")
        if running_config:
            os.environ["FAXRELAY_CONFIG"] = running_config
    try:
        settings = load_settings()
    except ConfigError as exc:
        click.echo(f"configuration is invalid:\n{exc}", err=True)
        raise SystemExit(2) from None
    endpoints = read_endpoints(settings.state_dir)
    update: dict[str, Any] = {}
    if not connect.configured(settings) and endpoints.get("redis_url"):
        update["redis_url"] = endpoints["redis_url"]
    if not settings.s3_endpoint_url and endpoints.get("s3_endpoint_url"):
        update["s3_endpoint_url"] = endpoints["s3_endpoint_url"]
        if "FAXRELAY_S3_BUCKET" not in os.environ and endpoints.get("s3_bucket"):
            update["s3_bucket"] = endpoints["s3_bucket"]
        for key in ("aws_access_key_id", "aws_secret_access_key"):
            if endpoints.get(key):
                os.environ.setdefault(key.upper(), endpoints[key])
    return settings.model_copy(update=update) if update else settings


NO_REDIS = "no Redis: set FAXRELAY_REDIS_URL (or FAXRELAY_REDIS_SENTINELS) or start `faxrelay up`"


def redis_client() -> Any:
    """A Redis client for the running system's Redis (its primary, with Sentinel); exit 2 when
    there is none."""
    settings = cli_settings()
    if not connect.configured(settings):
        click.echo(NO_REDIS, err=True)
        raise SystemExit(2)
    return connect.sync_client(settings)


def cli_runtime(*, need_redis: bool = True) -> Runtime:
    """A worker Runtime for this process: the store, the archive, the accounts' provider
    clients. Wake-ups are written straight onto the worker's queues (as the web app does)."""
    import logging

    from config.logging import configure_logging
    from worker.fastpath.messages import task_message
    from worker.runtime import Runtime

    settings = cli_settings()
    # The worker code run here logs warnings (a failed download, a refused URL): same format.
    configure_logging("cli", level=logging.WARNING)
    if need_redis and not connect.configured(settings):
        click.echo(NO_REDIS, err=True)
        raise SystemExit(2)
    holder: list[Runtime] = []

    def send(task: str, queue: str, args: list[str]) -> None:
        holder[0].store.redis.lpush(queue, task_message(task, queue, args))

    runtime = Runtime(settings, send)
    holder.append(runtime)
    return runtime


def read_endpoints(state_dir: Path) -> dict[str, str]:
    """What a running ``faxrelay up`` wrote about itself (empty when none runs there)."""
    path = state_dir / "endpoints.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell; the last column is left ragged."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]
    for line in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])]
        click.echo("  ".join([*cells, line[-1]]).rstrip())


def fail(message: str, code: int = 1) -> NoReturn:
    """Say why on stderr and exit: 1 the operation failed, 2 bad usage or configuration."""
    click.echo(message, err=True)
    raise SystemExit(code)


def find_record(runtime: Runtime, fax_id: str) -> FaxRecord:
    """The fax record (one past its retention from its copy in S3); exit 1 when there is no
    such fax."""
    from worker.store.records import RecordNotFound

    try:
        return runtime.store.get(fax_id)
    except RecordNotFound:
        fail(f"no fax with id {fax_id}")


def require_account(runtime: Runtime, name: str) -> None:
    """Exit 2, naming the configured accounts, when ``name`` is not one of them."""
    if name not in runtime.settings.accounts:
        known = ", ".join(sorted(runtime.settings.accounts)) or "none"
        fail(f"no account named {name!r} (accounts: {known})", 2)


def history_line(entry: dict[str, Any], indent: str) -> str:
    """One timeline entry as ``faxes show`` and ``send --wait`` print it."""
    line = f"{indent}{entry['at']}  {entry['state']:<10}  {entry.get('note') or ''}"
    return line.rstrip()
