"""``faxrelay backfill``: archive the received faxes a provider still holds from a time range,
for the faxes whose webhooks never arrived or that predate faxrelay.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from webhooks.cli.common import cli_runtime, fail, require_account
from webhooks.cli.remote import refusals, remote_client

if TYPE_CHECKING:
    from faxrelay_client import Client
    from worker.providers.base import InboundFax
    from worker.runtime import Runtime

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
    from worker.pipeline.inbound import create_inbound, handle_inbound
    from worker.runtime import INBOUND_TASK

    created = create_inbound(runtime, account, fax)
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


@click.command("backfill")
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

    if (client := remote_client()) is not None:
        _backfill_remote(client, account, since, until, wake)
        return
    runtime = cli_runtime()
    require_account(runtime, account)
    if until is not None and until <= since:
        fail("--until must be after --since", 2)
    provider = runtime.provider(account)
    if not provider.capabilities.list_inbound:
        fail(
            f"account {account!r} ({provider.name}): {provider.name} has no call that lists "
            "received faxes, so it cannot be backfilled; its faxes arrive by webhook only",
            2,
        )
    try:
        listed = provider.list_inbound(since)
    except ProviderError as exc:
        fail(f"listing received faxes failed: {exc}")
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


def _backfill_remote(
    client: Client, account: str, since: datetime, until: datetime | None, wake: bool
) -> None:
    """``POST /v1/backfills``, then its progress until every fax is archived, failed or waits
    for a retry (the workers archive them); the same lines and exit codes as locally."""
    import time

    if until is not None and until <= since:
        fail("--until must be after --since", 2)
    with refusals():
        job = client.start_backfill(account, since, until, wake=wake)
        while job.state == "listing":
            time.sleep(0.2)
            job = client.backfill(job.id)
    if job.state == "failed":
        fail(job.error)
    span = f"since {since.isoformat()}" + (f" until {until.isoformat()}" if until else "")
    click.echo(f"{account}: {job.total} received fax(es) {span}")
    try:
        with click.progressbar(
            length=job.total, label="archiving", file=sys.stderr, show_pos=True
        ) as bar:
            shown, delay = 0, 0.2
            while True:
                bar.update(job.settled - shown)
                shown = job.settled
                if job.state != "running":
                    break
                time.sleep(delay)
                delay = min(delay * 1.5, 2.0)
                with refusals():
                    job = client.backfill(job.id)
    except KeyboardInterrupt:
        click.echo(
            f"\ninterrupted after {job.settled} of {job.total}; the workers go on with backfill "
            f"{job.id}",
            err=True,
        )
        raise SystemExit(1) from None
    tally = _Tally(
        archived=job.archived, already=job.already, pending=job.pending, failed=job.failed,
        queued=job.queued,
    )  # fmt: skip
    tally.report()
    raise SystemExit(1 if tally.failed else 0)
