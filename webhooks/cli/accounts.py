"""``faxrelay accounts``: the provider accounts; ``check`` proves each one's credentials with the
provider's cheapest authenticated calls, changing nothing (``worker.checks``, which
``POST /v1/accounts/check`` runs too).
"""

from __future__ import annotations

import json

import click

from webhooks.cli.common import cli_runtime, fail, print_table, require_account
from webhooks.cli.remote import refusals, remote_client


@click.group("accounts")
def accounts_group() -> None:
    """Provider accounts."""


@accounts_group.command("check")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print every provider's full answer as JSON.")
def accounts_check(name: str | None, as_json: bool) -> None:
    """Call each account's provider with its credentials (or only NAME's); exit 1 if any fails.

    Each provider's cheapest authenticated calls are used; nothing is sent or changed.
    """
    if (client := remote_client()) is not None:
        with refusals():
            results = client.check_accounts(name).items
    else:
        from worker.checks import check_accounts

        runtime = cli_runtime(need_redis=False)
        if name is not None:
            require_account(runtime, name)
        names = [name] if name else sorted(runtime.settings.accounts)
        if not names:
            fail("no accounts are configured (see `faxrelay config check`)", 2)
        results = check_accounts(runtime, names)
    if as_json:
        answers = {r.account: r.answer for r in results}
        click.echo(json.dumps(answers, indent=2, default=str))
    else:
        rows = [
            [r.account, r.provider, "ok" if r.ok else "FAILED", r.details[:160]] for r in results
        ]
        print_table(["ACCOUNT", "PROVIDER", "RESULT", "DETAILS"], rows)
    raise SystemExit(1 if any(not r.ok for r in results) else 0)
