"""The chaos soak's books, kept outside faxrelay: what the providers and callers were told
(every fax acknowledged, every send accepted) and what the event subscriber received.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError


@dataclass
class InboundFax:
    """A fax the sandbox holds: owed to the archive once acknowledged, or once a listing
    provider holds it (reconcile finds it whatever happened to its webhook)."""

    provider: str
    account: str
    sandbox_id: str
    sha256: str
    size: int
    how: str
    created_at: float
    options: dict[str, Any] = field(default_factory=dict)
    acks: list[tuple[float, str]] = field(default_factory=list)  # (when, record id or "")
    refusals: int = 0

    @property
    def owed(self) -> bool:
        return bool(self.acks) or self.provider in ("ucx", "voipms")


@dataclass
class Send:
    """One fax a caller wants sent (its document is unique to it)."""

    kind: str  # "http" or "queue"
    account: str
    sha256: str
    key: str
    body: dict[str, Any]
    accepted_at: float | None = None
    record_ids: list[str] = field(default_factory=list)  # ids the API answered with
    statuses: list[int] = field(default_factory=list)
    cancel: str = ""  # "", "cancelled" (202), "refused" (409), "error"
    task_id: str = ""  # queue-driven: the message's task id (the same on every publish)


@dataclass
class Ledger:
    inbound: dict[str, InboundFax] = field(default_factory=dict)
    sends: dict[str, Send] = field(default_factory=dict)  # by document sha256
    counts: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1


class Subscriber:
    """A loopback event receiver: checks each event's signature, keeps (fax id, type) pairs."""

    def __init__(self, secret: str) -> None:
        self.seen: set[tuple[str, str]] = set()
        self.deliveries = 0
        self.forged = 0
        self.cut_off = 0  # the sender died mid-request: fewer bytes than its Content-Length
        lock = threading.Lock()
        verifier = Webhook(secret)
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    with lock:
                        owner.cut_off += 1
                    return
                try:
                    event = verifier.verify(body, dict(self.headers.items()))
                except WebhookVerificationError:
                    with lock:
                        owner.forged += 1
                    self.send_response(400)
                else:
                    with lock:
                        owner.deliveries += 1
                        owner.seen.add((str(event["data"]["id"]), str(event["type"])))
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
