"""``faxrelay send``: send a PDF from the command line, through the same acceptance as the HTTP
API (``accept_send``), and optionally follow it until it is final.
"""

from __future__ import annotations

import json
import time
from typing import IO, TYPE_CHECKING

import click

from webhooks.cli.common import cli_runtime, fail, history_line, require_account

if TYPE_CHECKING:
    from worker.domain import FaxRecord
    from worker.runtime import Runtime

GOOD_ENDS = ("delivered", "accepted")


def _follow(runtime: Runtime, fax_id: str, timeout: float) -> FaxRecord:
    """Print each history entry as it appears, until the fax is final or needs an operator."""
    deadline = time.monotonic() + timeout if timeout else None
    shown, delay = 0, 0.1
    while True:
        record = runtime.store.get(fax_id)
        for entry in record.history[shown:]:
            click.echo(history_line(entry, "  "))
        shown = len(record.history)
        if record.final or record.state == "unknown":
            return record
        if deadline is not None and time.monotonic() > deadline:
            fail(f"{fax_id} is still {record.state} after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)


@click.command("send")
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
    from worker.pipeline.outbound.accept import SendError, SendRequest, accept_send

    runtime = cli_runtime()
    require_account(runtime, account)
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
        fail(f"send refused: {exc.code}: {exc.message}", 1 if exc.status == 409 else 2)
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
    fail(f"{record.id} ended {record.state}{reason}")
