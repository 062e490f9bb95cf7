"""Replaying a logged webhook: the stored request as this app's own route would receive it, for
the dashboard's and the operator API's replay (no network round trip, no token leaving the
server). The route logs it again as a new entry.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.types import Message, Receive

from worker.store import rawlog


def replay_scope(entry: rawlog.LogEntry, token: str, original: Request, via: str) -> dict[str, Any]:
    """The stored request as an ASGI scope for its webhook route: as the provider sent it, with
    the account's token (which the log never keeps), marked ``X-Faxrelay-Replay: {via}``."""
    keep = {
        k: v
        for k, v in entry.headers.items()
        if k in ("content-type", "user-agent") or k.startswith("x-")
    }
    keep["content-length"] = str(len(entry.body))
    keep["x-faxrelay-replay"] = via
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "POST",
        "scheme": original.url.scheme,
        "server": original.scope.get("server"),
        "client": original.scope.get("client"),
        "root_path": "",
        "path": entry.path,
        "raw_path": entry.path.encode(),
        "query_string": urlencode({"token": token}).encode(),
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in keep.items()],
        "path_params": {"account": entry.account},
        "app": original.scope.get("app"),
    }


def body_receiver(body: bytes) -> Receive:
    """An ASGI ``receive`` that gives ``body`` in one message, then a disconnect."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive
