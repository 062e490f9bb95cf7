"""Remote mode: ``FAXRELAY_URL`` and ``FAXRELAY_TOKEN`` (or ``faxrelay --url … --token …``) make
the operator commands work over the ``/v1`` API of a deployment, with only an API token: no
Redis, S3 or provider secrets on the operator's machine. Without them the commands work locally
(next to ``faxrelay up``, or with the deployment's settings), as before.

Each command prints the same thing and exits with the same code either way; this module holds
what the remote side of every command shares: the client, and refusals turned into exit codes
(1 the operation failed, 2 bad usage or configuration, as everywhere).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import click

from webhooks.cli.common import fail

if TYPE_CHECKING:
    from faxrelay_client import Client, FaxrelayError


@dataclass(frozen=True)
class Target:
    """Where the commands go: ``url`` empty means locally."""

    url: str = ""
    token: str = ""


def remote_client() -> Client | None:
    """The API client when remote mode is on (exit 2 when it lacks its token), else None."""
    context = click.get_current_context(silent=True)
    target = context.find_root().obj if context is not None else None
    if not isinstance(target, Target) or not target.url:
        return None
    if not target.token:
        fail("remote mode needs an API token: FAXRELAY_TOKEN or --token (with FAXRELAY_URL)", 2)
    from faxrelay_client import Client

    return Client(target.url, target.token)


@contextmanager
def refusals(*, conflict: int = 1, refused: int = 2, not_found: str = "") -> Iterator[None]:
    """FaxrelayError as the local command would end: unreachable or a token not accepted 2;
    404 ``not_found`` (exit 1) when given; 409 ``conflict``; other refusals ``refused``."""
    from faxrelay_client import FaxrelayError

    try:
        yield
    except FaxrelayError as exc:
        fail(*_ending(exc, conflict, refused, not_found))


def _ending(exc: FaxrelayError, conflict: int, refused: int, not_found: str) -> tuple[str, int]:
    if exc.status == 0:
        return f"faxrelay is unreachable: {exc.message}", 2
    if exc.status in (401, 403):
        return f"the API refused the token ({exc.status} {exc.code}): {exc.message}", 2
    if exc.status == 404 and not_found:
        return not_found, 1
    if exc.status == 409:
        return exc.message, conflict
    if exc.status >= 500:
        return f"faxrelay answered {exc.status} {exc.code}: {exc.message}", 1
    return exc.message, refused
