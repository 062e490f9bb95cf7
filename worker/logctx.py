"""The fax a piece of code works on, for the logs: ``with fax_context(record): ...``.

Every log line written inside carries ``fax_id``, ``account`` and ``provider`` (see
``config/logging.py``). Contexts nest; leaving one restores the outer one. Inside a context,
``bind_fax(record)`` adds what was not known when it was entered (a task starts with an id and
learns the account once it has read the record).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from config.logging import FAX_CONTEXT
from worker.domain import FaxRecord


def _fields(
    what: FaxRecord | str | None, account: str | None, provider: str | None
) -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(what, FaxRecord):
        out = {"fax_id": what.id, "account": what.account, "provider": what.provider}
    elif what:
        out["fax_id"] = what
    if account:
        out["account"] = account
    if provider:
        out["provider"] = provider
    return out


@contextlib.contextmanager
def fax_context(
    what: FaxRecord | str | None = None,
    *,
    account: str | None = None,
    provider: str | None = None,
) -> Iterator[None]:
    """Log lines inside carry the record's (or the fax id's) fields."""
    outer = FAX_CONTEXT.get() or {}
    token = FAX_CONTEXT.set({**outer, **_fields(what, account, provider)})
    try:
        yield
    finally:
        FAX_CONTEXT.reset(token)


def bind_fax(what: FaxRecord | str | None = None, *, account: str | None = None) -> None:
    """Add to the current context (a no-op outside one: nothing would reset it)."""
    current = FAX_CONTEXT.get()
    if current is not None:
        FAX_CONTEXT.set({**current, **_fields(what, account, None)})
