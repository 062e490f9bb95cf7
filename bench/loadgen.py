"""A small HTTP/1.1 load generator for when wrk is not installed: ``python -m bench.loadgen``.

One process, uvloop, ``--connections`` keep-alive connections, each sending one POST at a time (the
next as soon as the answer is in, as wrk does). The body is a template whose ``__ID__`` is replaced by
a fresh id for every request. Prints one JSON line: requests, 200s, other statuses, duration and
latency percentiles (ms); with ``--ids-out`` the ``Faxrelay-Fax-Id`` header of each 200 answer is
written there, one a line, so the caller can check that every acknowledged webhook was recorded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit

import uvloop

from bench.common import percentile

FAX_ID_HEADER = re.compile(rb"\r\nfaxrelay-fax-id: *([^\r]+)")


@dataclass
class Totals:
    latencies_ns: list[int] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    duplicates: int = 0
    ids: list[bytes] = field(default_factory=list)
    errors: int = 0


class Connection(asyncio.Protocol):
    """Sends a request, parses the answer (Content-Length framing), sends the next."""

    def __init__(self, gen: LoadGen) -> None:
        self.gen = gen
        self.buf = bytearray()
        self.sent_at = 0
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.send()

    def send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter_ns()
        self.transport.write(self.gen.next_request())

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            length = 0
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop >= 0 else len(head)])
            if len(self.buf) < end + 4 + length:
                return
            status = int(head[9:12])
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            self.gen.completed(time.perf_counter_ns() - self.sent_at, status, head, body)
            if self.gen.running():
                self.send()
            else:
                self.finish()
                return

    def finish(self) -> None:
        if self.transport is not None:
            self.transport.close()
        if not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            self.gen.totals.errors += 1
        if not self.done.done():
            self.done.set_result(None)


class LoadGen:
    def __init__(self, url: str, template: str, prefix: str, collect_ids: bool) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.head = (
            f"POST {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: "
        ).encode()
        self.template = template
        self.prefix = prefix
        self.counter = 0
        self.collect_ids = collect_ids
        self.totals = Totals()
        self.deadline = 0.0

    def next_request(self) -> bytes:
        self.counter += 1
        body = self.template.replace("__ID__", f"{self.prefix}{self.counter:09d}").encode()
        return self.head + str(len(body)).encode() + b"\r\n\r\n" + body

    def running(self) -> bool:
        return time.monotonic() < self.deadline

    def completed(self, latency_ns: int, status: int, head: bytes, body: bytes) -> None:
        """One answer; ``head`` is its status line and headers, lower case."""
        totals = self.totals
        totals.latencies_ns.append(latency_ns)
        totals.statuses[status] = totals.statuses.get(status, 0) + 1
        if status == 200 and self.collect_ids:
            found = FAX_ID_HEADER.search(head)
            if found:
                totals.ids.append(found.group(1))
            if b"\r\nfaxrelay-outcome: duplicate" in head:
                totals.duplicates += 1

    async def run(self, connections: int, duration: float) -> float:
        loop = asyncio.get_running_loop()
        self.deadline = time.monotonic() + duration
        started = time.perf_counter()
        conns = []
        for _ in range(connections):
            _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port)
            conns.append(conn)
        await asyncio.wait_for(asyncio.gather(*(c.done for c in conns)), duration + 30)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--template", required=True, help="body; __ID__ becomes a fresh id")
    parser.add_argument("--prefix", default="9")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--ids-out", default="")
    args = parser.parse_args()
    if urlsplit(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("bench.loadgen only targets loopback")
    gen = LoadGen(args.url, args.template, args.prefix, bool(args.ids_out))
    elapsed = uvloop.run(gen.run(args.connections, args.duration))
    totals = gen.totals
    if args.ids_out:
        with open(args.ids_out, "wb") as out:
            out.write(b"".join(i + b"\n" for i in totals.ids))
    lat_ms = [n / 1e6 for n in totals.latencies_ns]
    print(
        json.dumps(
            {
                "requests": len(lat_ms),
                "ok": totals.statuses.get(200, 0),
                "statuses": {str(k): v for k, v in sorted(totals.statuses.items())},
                "duplicates": totals.duplicates,
                "errors": totals.errors,
                "duration_s": elapsed,
                "p50_ms": percentile(lat_ms, 50),
                "p99_ms": percentile(lat_ms, 99),
                "max_ms": max(lat_ms, default=0.0),
            }
        )
    )


if __name__ == "__main__":
    main()
