"""``faxrelay accounts``: the provider accounts; ``check`` proves each one's credentials with the
provider's cheapest authenticated calls, changing nothing.
"""

from __future__ import annotations

import json
from typing import Any

import click

from webhooks.cli.common import cli_runtime, fail, print_table, require_account


@click.group("accounts")
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

    runtime = cli_runtime(need_redis=False)
    if name is not None:
        require_account(runtime, name)
    names = [name] if name else sorted(runtime.settings.accounts)
    if not names:
        fail("no accounts are configured (see `faxrelay config check`)", 2)
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
        print_table(["ACCOUNT", "PROVIDER", "RESULT", "DETAILS"], rows)
    raise SystemExit(1 if failed else 0)
