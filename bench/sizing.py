"""Sizing figures per fax: the Redis memory a finished fax keeps, and the S3 requests it made.

``python -m bench.sizing [--inbound 300] [--outbound 100]``

Starts the whole system (``tests.system.System``: its own Redis, the web app, a worker, beat) with
SeaweedFS and the provider sandbox; faxrelay reaches S3 through a loopback relay that counts the
requests by method. ``--inbound`` PrimeVox faxes are announced by the sandbox's webhook and
archived; then ``--outbound`` faxes are sent over the API to CallerIP and delivered. Redis's
``used_memory`` is read before and after each batch (once the work is done), and the keys are
counted by kind: the difference per fax is what a fax costs while it is in Redis (record, indexes,
dedup key, raw webhook log entry, event outbox and statistics), for the sizing in the README.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO

import httpx
import redis

from bench.common import HOST, base_env, sandbox_process, stop_all, workdir
from config.embedded import ManagedProcess, SeaweedPorts, free_port, start_seaweed
from sandbox.pdf import make_pdf
from tests.system import API_TOKEN, System, sandbox_fire, wait_for
from worker.store import keys

BUCKET = "faxrelay-bench-sizing"


def used(client: redis.Redis) -> int:
    client.memory_purge()
    return int(client.info("memory")["used_memory"])


def kinds(client: redis.Redis) -> Counter[str]:
    """Keys by kind: the prefix up to the first variable part."""
    found: Counter[str] = Counter()
    for key in client.scan_iter(count=1000):
        text = key.decode(errors="replace")
        parts = text.split(":")
        found[":".join(parts[:2]) if text.startswith(keys.PREFIX) else parts[0]] += 1
    return found


def settled(client: redis.Redis, ids: list[str], states: tuple[str, ...]) -> bool:
    for start in range(0, len(ids), 500):
        for raw in client.mget([keys.fax_key(i) for i in ids[start : start + 500]]):
            if raw is None or not any(f'"state":"{s}"'.encode() in raw for s in states):
                return False
    return True


def inbound(system: System, count: int) -> list[str]:
    def one(n: int) -> str:
        fax = httpx.post(
            f"{system.sandbox_url}/_sandbox/inbound",
            json={"provider": "primevox", "pages": 2},
            timeout=60,
        ).json()
        answer = sandbox_fire(
            system.sandbox_url,
            provider="primevox",
            kind="inbound",
            url=system.webhook_url("pv"),
            id=fax["id"],
        )
        return str(answer["headers"]["faxrelay-fax-id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def outbound(system: System, count: int) -> list[str]:
    def one(n: int) -> str:
        document = base64.b64encode(make_pdf(1, 0, label=f"memory {n} {time.time()}")).decode()
        with httpx.Client(
            base_url=system.web_url, headers={"authorization": f"Bearer {API_TOKEN}"}, timeout=60
        ) as api:
            answer = api.post(
                "/v1/faxes",
                json={"account": "ci", "to": f"469555{n:04d}", "document": {"base64": document}},
            )
        answer.raise_for_status()
        return str(answer.json()["id"])

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, range(count)))


def measure(
    label: str, system: System, client: redis.Redis, work: list[str], states: tuple[str, ...]
) -> tuple[int, Counter[str]]:
    wait_for(lambda: settled(client, work, states), 600, f"{label} to reach {states}")
    time.sleep(3)  # the events' deliveries and the sweeper's last wake-ups drain
    return used(client), kinds(client)


class S3Counter:
    """A loopback HTTP relay to the S3 endpoint that counts requests by method."""

    def __init__(self, upstream_port: int) -> None:
        counts: Counter[str] = Counter()
        self.counts = counts
        lock = threading.Lock()

        class Relay(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _relay(self) -> None:
                body = self._body()
                with lock:
                    counts[self.command] += 1
                upstream = http.client.HTTPConnection(HOST, upstream_port, timeout=120)
                try:
                    skip = ("host", "transfer-encoding", "content-length")
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                    headers["Host"] = self.headers.get("host", "")
                    if body is not None:
                        headers["Content-Length"] = str(len(body))
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self.send_response(answer.status)
                    for name, value in answer.getheaders():
                        if name.lower() not in ("transfer-encoding", "connection"):
                            self.send_header(name, value)
                    if answer.getheader("content-length") is None:
                        self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    upstream.close()

            def _body(self) -> bytes | None:
                """The request's body, read whole (HTTP chunks joined)."""
                if self.headers.get("transfer-encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                length = int(self.headers.get("content-length") or 0)
                return self.rfile.read(length) if length else None

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((HOST, 0), Relay)
        self.url = f"http://{HOST}:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self) -> Counter[str]:
        taken = Counter(self.counts)
        self.counts.clear()
        return taken

    def close(self) -> None:
        self.server.shutdown()


def run(args: argparse.Namespace, out: IO[str]) -> int:
    env = base_env()
    for name in [n for n in os.environ if n not in env]:
        del os.environ[name]
    os.environ.update(env)
    procs: list[ManagedProcess] = []
    with workdir("faxrelay-bench-sizing-") as tmp, open(tmp / "servers.log", "a") as log:
        system: System | None = None
        try:
            ports = SeaweedPorts.pick()
            procs.append(start_seaweed(tmp / "s3", ports, BUCKET, sink=log))
            sandbox_port = free_port()
            procs.append(sandbox_process(sandbox_port, sink=log))
            sandbox_url = f"http://{HOST}:{sandbox_port}"
            httpx.post(
                f"{sandbox_url}/_sandbox/duration",
                json={"provider": "callerip", "seconds": 1.0},
                timeout=30,
            ).raise_for_status()
            (tmp / "system").mkdir()
            s3 = S3Counter(ports.s3)
            system = System(tmp / "system", s3.url, sandbox_url, BUCKET)
            system.start()
            client = redis.Redis.from_url(system.redis_url)
            time.sleep(3)
            base, base_kinds = used(client), kinds(client)
            s3.take()
            ids = inbound(system, args.inbound)
            after_in, in_kinds = measure("inbound", system, client, ids, ("archived",))
            s3_in = s3.take()
            sent = outbound(system, args.outbound)
            after_out, out_kinds = measure("outbound", system, client, sent, ("delivered",))
            s3_out = s3.take()
            client.close()
        finally:
            if system is not None:
                system.stop()
            stop_all(procs)
    per_in = (after_in - base) / args.inbound
    per_out = (after_out - after_in) / args.outbound
    print(
        f"redis memory: {args.inbound} received faxes archived, {args.outbound} sent faxes "
        "delivered (records in their final state, within the retention window)",
        file=out,
    )
    print(f"  per received fax: {per_in:,.0f} bytes (used_memory delta)", file=out)
    print(f"  per sent fax:     {per_out:,.0f} bytes", file=out)
    for label, counted, n in (("received", s3_in, args.inbound), ("sent", s3_out, args.outbound)):
        print(
            f"  S3 requests per {label} fax: {sum(counted.values()) / n:.2f} ("
            + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counted.items()))
            + ")",
            file=out,
        )
    for label, before, after, n in (
        ("received", base_kinds, in_kinds, args.inbound),
        ("sent", in_kinds, out_kinds, args.outbound),
    ):
        added = {k: after[k] - before[k] for k in after if after[k] != before[k]}
        print(
            f"  keys added per {label} fax: "
            + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(added.items())),
            file=out,
        )
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inbound", type=int, default=300)
    parser.add_argument("--outbound", type=int, default=100)
    args = parser.parse_args()
    sys.exit(run(args, sys.stdout))


if __name__ == "__main__":
    main()
