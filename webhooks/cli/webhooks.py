"""``faxrelay webhooks``: the raw webhook log (every provider request as received, secrets
redacted), to see what a provider sent and to replay a request once a problem is fixed.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import httpx

from webhooks.cli.common import cli_settings, read_endpoints, redis_client
from webhooks.cli.remote import refusals, remote_client


@click.group("webhooks")
def webhooks_group() -> None:
    """The raw webhook log."""


@webhooks_group.command("list")
@click.option("--limit", default=20, show_default=True)
@click.option("--account", default=None)
def webhooks_list(limit: int, account: str | None) -> None:
    """Recent webhook requests, newest first."""
    from worker.store.rawlog import list_entries

    if (client := remote_client()) is not None:
        with refusals():
            entries: list[Any] = client.webhooks(limit=limit, account=account).items
    else:
        entries = list_entries(redis_client(), limit, account)
    for e in entries:
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at))
        click.echo(
            f"{e.id}  {at}Z  {e.account:<12} {e.route:<8} {e.status}  {e.outcome:<10} {e.fax_id}"
        )


@webhooks_group.command("show")
@click.argument("log_id")
def webhooks_show(log_id: str) -> None:
    """One webhook request in full (secrets redacted)."""
    from worker.store.rawlog import get_entry

    if (client := remote_client()) is not None:
        with refusals(not_found=f"no webhook log entry {log_id}"):
            shown = client.webhook(log_id)
        data = shown.model_dump(mode="json", exclude={"body_b64"})
        click.echo(json.dumps(data, indent=2))
        return
    entry = get_entry(redis_client(), log_id)
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

    if (client := remote_client()) is not None:  # the server replays it through its route
        with refusals(conflict=1, not_found=f"no webhook log entry {log_id}"):
            replayed = client.replay(log_id)
        about = " ".join(f"{k}={v}" for k, v in replayed.about.items())
        click.echo(" ".join(x for x in (str(replayed.status), about, replayed.body) if x))
        raise SystemExit(0 if replayed.status < 300 else 1)
    settings = cli_settings()  # the running system's configuration, as redis_client() uses
    entry = get_entry(redis_client(), log_id)
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
    base = url or read_endpoints(settings.state_dir).get("web_url", "http://127.0.0.1:8000")
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
