"""``faxrelay send``: send a PDF from the command line, through the same acceptance as the HTTP
API (``accept_send``, after the same /v1 model), and optionally follow it until it is final;
in remote mode, through the API itself.
"""

from __future__ import annotations

import json
import time
from typing import IO, TYPE_CHECKING, Any

import click

from webhooks.cli.common import cli_runtime, fail, history_line, require_account
from webhooks.cli.remote import refusals, remote_client

if TYPE_CHECKING:
    from collections.abc import Callable

    from faxrelay_client import Client, Fax, Sent

GOOD_ENDS = ("delivered", "accepted")


def _follow(fetch: Callable[[str], Fax], fax_id: str, timeout: float) -> Fax:
    """Print each history entry as it appears, until the fax is final or needs an operator."""
    deadline = time.monotonic() + timeout if timeout else None
    shown, delay = 0, 0.1
    while True:
        record = fetch(fax_id)
        for entry in record.history[shown:]:
            click.echo(history_line(entry.model_dump(), "  "))
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
    from faxrelay_client import Fax, Sent
    from worker.pipeline.outbound.accept import SendError, accept_send
    from worker.pipeline.outbound.request import parse_upload

    client = remote_client()
    runtime = None if client is not None else cli_runtime()
    if runtime is not None:
        require_account(runtime, account)
    try:
        meta = json.loads(metadata) if metadata else {}
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="--metadata") from None
    if client is not None:
        sent = _send_remote(client, file.read(), account, to, callback_url, meta, idempotency_key)
        fetch: Callable[[str], Fax] = client.get
    else:
        assert runtime is not None
        fields = {"account": account, "to": to, "callback_url": callback_url, "metadata": meta}
        try:  # the /v1 model, as POST /v1/faxes with an upload
            request = parse_upload(fields, file.read(), idempotency_key=idempotency_key)
            accepted = accept_send(runtime, request)
        except SendError as exc:
            fail(f"send refused: {exc.code}: {exc.message}", 1 if exc.status == 409 else 2)
        sent = Sent(Fax.model_validate(accepted.record.public()), accepted.created)
        store = runtime.store
        fetch = lambda fax_id: Fax.model_validate(store.get(fax_id).public())  # noqa: E731
    record = sent.fax
    click.echo(record.id)
    if not sent.created:
        click.echo(f"(an earlier send with this idempotency key; it is {record.state})", err=True)
    if not wait:
        return
    with refusals():
        record = _follow(fetch, record.id, timeout)
    if record.state in GOOD_ENDS:
        return
    reason = f": {record.reason} ({record.reason_detail})" if record.reason else ""
    fail(f"{record.id} ended {record.state}{reason}")


def _send_remote(
    client: Client,
    data: bytes,
    account: str,
    to: str,
    callback_url: str,
    metadata: dict[str, Any],
    idempotency_key: str,
) -> Sent:
    """POST /v1/faxes with the file; its refusals end the command as the local ones do."""
    from faxrelay_client import FaxrelayError

    with refusals():
        try:
            return client.send_detailed(
                account, to, data, callback_url=callback_url, metadata=metadata,
                idempotency_key=idempotency_key,
            )  # fmt: skip
        except FaxrelayError as exc:
            if exc.status in (0, 401, 403) or exc.status >= 500:
                raise
            fail(f"send refused: {exc.code}: {exc.message}", 1 if exc.status == 409 else 2)
