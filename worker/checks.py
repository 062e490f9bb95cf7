"""``faxrelay accounts check`` and ``POST /v1/accounts/check``: call each account's provider with
its credentials (its cheapest authenticated calls; nothing is sent or changed) and say ok or why
not, with every secret of the configuration masked in what the provider answered.
"""

from __future__ import annotations

import json
from typing import Any

from config.logging import Redactor, secret_values, settings_secrets
from faxrelay_client.models import AccountCheck
from worker.providers.base import ProviderError
from worker.runtime import Runtime


def check_accounts(runtime: Runtime, names: list[str]) -> list[AccountCheck]:
    """One result per account, in the order given; an account that raises is a failed row."""
    secrets = [*settings_secrets(runtime.settings), *secret_values()]  # and the AWS key
    redact = Redactor(secrets, patterns=False)  # patterns off: "token=accepted" is no secret
    results = []
    for name in names:
        provider = runtime.settings.accounts[name].provider
        try:
            answer = runtime.provider(name).check()
        except ProviderError as exc:
            ok, details, answer = False, str(exc), {"error": str(exc)}
        except Exception as exc:  # a bug or a broken network: still one row per account
            ok, details = False, f"{type(exc).__name__}: {exc}"
            answer = {"error": details}
        else:
            ok = answer.get("ok", True) is not False
            details = summary(answer)
        masked = json.loads(redact(json.dumps(answer, default=str)))
        results.append(AccountCheck(
            account=name, provider=provider, ok=ok, details=redact(details), answer=masked
        ))  # fmt: skip
    return results


def summary(result: dict[str, Any]) -> str:
    """A provider's answer in one line: its problem, then each field (lists and objects by size)."""
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
