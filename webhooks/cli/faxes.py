"""``faxrelay faxes``: the operator's view of fax records (list, show) and the two things an
operator does to one (retry, cancel).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from webhooks.cli.common import cli_runtime, fail, find_record, history_line, print_table
from webhooks.cli.remote import refusals, remote_client

if TYPE_CHECKING:
    pass


@click.group("faxes")
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
    from faxrelay_client.models import Fax, FaxPage

    if (client := remote_client()) is not None:
        with refusals():
            page = client.list(
                direction=direction,  # type: ignore[arg-type]  # click.Choice checked it
                account=account,
                state=state,  # type: ignore[arg-type]
                limit=limit,
                cursor=cursor,
            )
    else:
        runtime = cli_runtime()
        found = runtime.store.list(
            direction=direction, account=account, state=state, limit=limit, cursor=cursor
        )
        items = [Fax.model_validate(r.public()) for r in found.items]
        page = FaxPage(items=items, next_cursor=found.next_cursor)
    if as_json:
        click.echo(json.dumps(page.model_dump(mode="json", by_alias=True), indent=2))
        return
    rows = [
        [
            r.id, r.direction[:3], r.account, r.state, r.reason or "-",
            r.from_number or "-", r.to_number or "-", str(r.pages or "-"), r.created_at[:19],
        ]
        for r in page.items
    ]  # fmt: skip
    print_table(["ID", "DIR", "ACCOUNT", "STATE", "REASON", "FROM", "TO", "PAGES", "CREATED"], rows)
    if page.next_cursor:  # a short page may have more after it (a bounded scan)
        click.echo(f"next cursor: {page.next_cursor}")


@faxes_group.command("show")
@click.argument("fax_id")
@click.option("--json", "as_json", is_flag=True, help="The record as the API shows it.")
def faxes_show(fax_id: str, as_json: bool) -> None:
    """One record: its fields, why it failed, and its timeline."""
    from faxrelay_client.models import Fax

    last_error = ""  # the step's own data: local mode only (the API shows the public record)
    if (client := remote_client()) is not None:
        with refusals(not_found=f"no fax with id {fax_id}"):
            record = client.get(fax_id)
    else:
        local = find_record(cli_runtime(), fax_id)
        record, last_error = (
            Fax.model_validate(local.public()),
            str(local.work.get("last_error", "")),
        )
    if as_json:
        click.echo(json.dumps(record.model_dump(mode="json", by_alias=True), indent=2))
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
        ("last error", last_error),
    ]  # fmt: skip
    for name, value in fields:
        if value:
            click.echo(f"  {name + ':':<10} {value}")
    click.echo("  timeline:")
    for entry in record.history:
        click.echo(history_line(entry.model_dump(), "    "))


@faxes_group.command("retry")
@click.argument("fax_id")
def faxes_retry(fax_id: str) -> None:
    """Wake a record now: an overdue or retrying one, or an outbound fax whose submit outcome is
    unknown (it is submitted again: check at the provider first). Exit 1 if it is final."""
    from faxrelay_client import FaxrelayError
    from worker.pipeline.outbound.accept import SendError
    from worker.pipeline.outbound.actions import retry_fax

    if (client := remote_client()) is not None:
        with refusals(not_found=f"no fax with id {fax_id}"):
            try:
                state = client.retry(fax_id).state
            except FaxrelayError as exc:
                if exc.status != 409:
                    raise
                fail(f"cannot retry {fax_id}: {exc.message}")
        click.echo(f"{fax_id}: woken ({state})")
        return
    runtime = cli_runtime()
    find_record(runtime, fax_id)
    try:
        record = retry_fax(runtime, fax_id)
    except SendError as exc:
        fail(f"cannot retry {fax_id}: {exc.message}")
    click.echo(f"{fax_id}: woken ({record.state})")


@faxes_group.command("cancel")
@click.argument("fax_id")
def faxes_cancel(fax_id: str) -> None:
    """Cancel an outbound fax: before submit anywhere, after it where the provider can.
    Exit 1 with the reason when it can no longer be cancelled."""
    from faxrelay_client import FaxrelayError
    from worker.pipeline.outbound.accept import SendError
    from worker.pipeline.outbound.actions import cancel_fax

    if (client := remote_client()) is not None:
        with refusals(not_found=f"no fax with id {fax_id}"):
            try:
                state = client.cancel(fax_id).state
            except FaxrelayError as exc:
                if exc.status != 409:
                    raise
                fail(f"cannot cancel {fax_id}: {exc.message}")
        click.echo(f"{fax_id}: {state}")
        return
    runtime = cli_runtime()
    find_record(runtime, fax_id)
    try:
        record = cancel_fax(runtime, fax_id)
    except SendError as exc:
        fail(f"cannot cancel {fax_id}: {exc.message}")
    click.echo(f"{fax_id}: {record.state}")
