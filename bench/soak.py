"""Soak: does Redis stay flat while faxes keep coming for ever (DESIGN.md principle 9)?

The whole system (Valkey, SeaweedFS, the sandbox, the web app, the deployed workers, beat) with an
accelerated clock (the sandbox's jobs run ``--clock`` times faster, faxrelay's retry delays are the
tests' short ones) and a retention of ``--retention`` seconds (``FAXRELAY_RECORD_RETENTION_SECONDS``;
the providers' dedup windows and the raw log's days the same), in three phases:

1. **faxes**: ``--faxes`` faxes at ``--rate`` a second, ``--outbound`` of them sent through the API
   (CallerIP), the rest received (PrimeVox webhooks whose PDFs the sandbox serves), while a sampler
   reads Redis ``used_memory`` every second. Then it waits until every fax is final and has left
   Redis. Prints Redis bytes per live fax, memory at the start, the peak and the end, and the growth
   per 10,000 faxes after the first retention window (a least-squares slope of memory over faxes
   posted, from the samples taken once the first window has passed).
   Target: growth per 10,000 faxes < 1 % of the peak.
2. **refusals**: ``--refusals`` refused webhooks with ``--refusal-bytes`` bodies (unknown accounts
   and wrong tokens, from four loopback addresses). Target: Redis grows < 10 MB.
3. **scale**: workers and beat stopped (nothing moves), ``/metrics`` and the overview timed (median
   of ``--probes`` requests) with 100 records in Redis, then with ``--scale`` (100,000). The same
   100 are live (50 in the backlog) both times; the rest are final. Target: ratio ~1.

A count of 0 (``--faxes``, ``--refusals``, ``--scale``) skips its phase. The rate must be one the
machine keeps up with: a backlog grows Redis by the faxes waiting (no leak, but the growth the
first phase reports). Prints a table at the end (bench/README.md has the figures measured).
Nothing but 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

import httpx
import redis

from bench.archive import Fax, isolate_environment, webhook_bodies
from bench.common import HOST, cpu_seconds, median, sandbox_process, stop_all, workdir
from config.embedded import ManagedProcess, SeaweedPorts, free_port, start_seaweed
from config.settings import Settings
from sandbox.pdf import make_pdf
from tests.system import API_TOKEN, WEBHOOK_TOKEN
from tests.workers import DeployedSystem
from worker.domain import Direction, FaxRecord, State, new_fax_id, transition
from worker.store import keys
from worker.store.records import FaxStore

BUCKET = "faxrelay-soak"
MB = 1024 * 1024
LIVE_STATES = ("inbound:received", "inbound:fetching", "outbound:queued", "outbound:submitted",
               "outbound:sending", "outbound:unknown")  # fmt: skip
DOWNLOADS = 20  # distinct PDFs at the sandbox: every received fax downloads one of them


@dataclass
class Sample:
    at: float
    used: int
    posted: int
    live: int


@dataclass
class Sampler:
    client: redis.Redis
    posted: Callable[[], int]
    every: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def take(self) -> Sample:
        sample = Sample(
            time.monotonic(),
            int(self.client.info("memory")["used_memory"]),
            self.posted(),
            int(self.client.zcard(keys.INDEX_ALL)),
        )
        self.samples.append(sample)
        return sample

    def run(self) -> None:
        while not self._stop.wait(self.every):
            with contextlib.suppress(redis.RedisError):
                self.take()

    @contextlib.contextmanager
    def running(self) -> Any:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(10)


# --- phase 1: faxes ------------------------------------------------------------------------------


def downloads(sandbox_url: str) -> list[str]:
    """The sandbox's URLs of ``DOWNLOADS`` small received PDFs."""
    urls = []
    with httpx.Client(base_url=sandbox_url, timeout=60) as sandbox:
        for _ in range(DOWNLOADS):
            answer = sandbox.post("/_sandbox/inbound", json={"provider": "primevox", "pages": 1})
            answer.raise_for_status()
            urls.append(answer.json()["download_url"])
    return urls


def inbound_bodies(count: int, urls: list[str]) -> list[bytes]:
    """``count`` PrimeVox inbound webhooks, each a new fax id, downloading one of ``urls``:
    built by the sandbox's own ``primevox.inbound_webhook`` (``bench.archive.webhook_bodies``)."""
    run = uuid.uuid4().hex[:8]
    faxes = [Fax(f"soak-{run}-{i}", urls[i % len(urls)], 0, "", 1) for i in range(count)]
    return [body for _, body in webhook_bodies(faxes)]


@dataclass
class Load:
    """Posts faxes at a steady rate from a few threads with kept-alive clients."""

    system: DeployedSystem
    bodies: list[bytes]  # the inbound webhooks, in order
    document: str  # base64 PDF
    outbound_share: float
    posted: int = 0
    refused: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def _http(self) -> httpx.Client:
        http: httpx.Client | None = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = httpx.Client(base_url=self.system.web_url, timeout=60)
        return http

    def one(self, i: int) -> None:
        http = self._http()
        if (i * self.outbound_share) % 1 + self.outbound_share >= 1:  # spread evenly
            answer = http.post(
                "/v1/faxes",
                json={
                    "account": "ci",
                    "to": "+1 555 201 0123",
                    "document": {"base64": self.document},
                },
                headers={"authorization": f"Bearer {API_TOKEN}"},
            )
            ok = answer.status_code == 202
        else:
            answer = http.post(
                f"/webhooks/pv/inbound?token={WEBHOOK_TOKEN}",
                content=self.bodies[i],
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            ok = answer.status_code == 200
        with self._lock:
            self.posted += 1
            self.refused += not ok

    def run(self, count: int, rate: float) -> float:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            futures = []
            for i in range(count):
                due = started + i / rate
                if (wait := due - time.monotonic()) > 0:
                    time.sleep(wait)  # the load's pace (a rate, not a wait for a condition)
                futures.append(pool.submit(self.one, i))
                if len(futures) > 64:  # the system falls behind: the pace follows it
                    futures.pop(0).result()
            for future in futures:
                future.result()
        return time.monotonic() - started


def live_faxes(client: redis.Redis) -> int:
    counts = client.hmget(keys.STATS, list(LIVE_STATES))
    return sum(int(c or 0) for c in counts)


def wait_drained(client: redis.Redis, timeout: float, out: IO[str]) -> bool:
    """Until every fax is final and every record has left Redis."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if live_faxes(client) == 0 and client.zcard(keys.INDEX_ALL) == 0:
            return True
        time.sleep(1.0)
    print(
        f"  not drained after {timeout:.0f} s: {live_faxes(client)} not final, "
        f"{client.zcard(keys.INDEX_ALL)} records in Redis",
        file=out,
    )
    return False


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x (0 for fewer than two distinct x)."""
    if len({x for x, _ in points}) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    num = sum((x - mx) * (y - my) for x, y in points)
    den = sum((x - mx) ** 2 for x, _ in points)
    return num / den


# --- phase 2: refusals ---------------------------------------------------------------------------


def refusal_flood(web_url: str, count: int, size: int) -> tuple[int, int]:
    """``count`` refused webhooks (half to unknown accounts, half with a wrong token), 32 at a
    time from four loopback addresses; returns how many were answered 401 or 404, and how many
    were sent again on a new connection (see ``one``)."""
    body = b"x" * size
    resent = 0

    async def run() -> int:
        clients = [
            httpx.AsyncClient(
                timeout=60, transport=httpx.AsyncHTTPTransport(local_address=f"127.0.0.{n}")
            )
            for n in (2, 3, 4, 5)
        ]
        limit = asyncio.Semaphore(32)

        async def one(i: int) -> bool:
            if i % 2:
                url = f"{web_url}/webhooks/stranger-{i}/inbound"
            else:
                url = f"{web_url}/webhooks/pv/inbound?token=guess-{i}"
            nonlocal resent
            async with limit:
                for attempt in range(3):
                    try:
                        answer = await clients[i % 4].post(url, content=body)
                        break
                    except httpx.TransportError:
                        # The server refuses before reading the body and may close the
                        # connection while the body is still going out: send it again.
                        if attempt == 2:
                            raise
                        resent += 1
            return answer.status_code in (401, 404)

        try:
            results = await asyncio.gather(*(one(i) for i in range(count)))
        finally:
            for client in clients:
                await client.aclose()
        return sum(results)

    return asyncio.run(run()), resent


# --- phase 3: scale ------------------------------------------------------------------------------


def preload(store: FaxStore, count: int, backlog: int) -> None:
    """``count`` records created today through the store (its create script, so the counters
    follow): ``backlog`` received and not archived yet, the rest final (archived, delivered,
    failed)."""
    now = time.time()

    def one(i: int) -> None:
        direction = Direction.INBOUND if i % 3 else Direction.OUTBOUND
        record = FaxRecord.new(
            direction,
            "pv" if direction == Direction.INBOUND else "ci",
            "primevox" if direction == Direction.INBOUND else "callerip",
            fax_id=new_fax_id(now - i * 0.001),
            from_number="5551230000",
            to_number="5559870000",
            pages=1,
            provider_ids={"fax_id": f"pre-{i}"},
            raw={"efaxID": f"pre-{i}", "numPages": "1", "callerIdNum": "5551230000"},
        )
        if i >= backlog:
            if direction == Direction.INBOUND:
                transition(record, State.FETCHING)
                transition(record, State.ARCHIVED)
            else:
                transition(record, State.SUBMITTED)
                transition(record, State.DELIVERED if i % 7 else State.FAILED, reason="busy")
        store.create(record)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, range(count)))


def probe(web_url: str, web_pid: int, path: str, count: int) -> tuple[float, float]:
    """Median seconds of ``count`` GETs of ``path`` (after one unmeasured), and the web
    process's CPU seconds per GET (steadier than wall time on a shared machine)."""
    times = []
    with httpx.Client(
        base_url=web_url, timeout=120, headers={"authorization": f"Bearer {API_TOKEN}"}
    ) as web:
        web.get(path).raise_for_status()
        cpu = cpu_seconds(web_pid)
        for _ in range(count):
            started = time.perf_counter()
            web.get(path).raise_for_status()
            times.append(time.perf_counter() - started)
        cpu = cpu_seconds(web_pid) - cpu
    return median(times), cpu / count


def scale_phase(
    system: DeployedSystem, sizes: list[int], probes: int, out: IO[str]
) -> list[tuple[int, dict[str, tuple[float, float]]]]:
    """/metrics and the overview timed with each number of records in Redis (the same 100 live,
    50 of them in the backlog, the rest final); workers and beat stopped so nothing moves."""
    for name in ("beat", "worker", "archiver"):
        proc = system.procs.pop(name, None)
        if proc is not None:
            proc.stop()
    store = system.store()
    web_pid = system.procs["web"].pid
    results = []
    have = 0
    for size in sizes:
        if size < have:
            store.redis.flushdb()
            have = 0
        if have == 0:
            preload(store, min(size, 100), backlog=50)
            have = min(size, 100)
        preload(store, size - have, backlog=0)
        have = size
        timings = {path: probe(system.web_url, web_pid, path, probes) for path in ("/metrics", "/")}
        print(
            f"  {size} records: /metrics {timings['/metrics'][0] * 1000:.1f} ms, "
            f"overview {timings['/'][0] * 1000:.1f} ms",
            file=out,
            flush=True,
        )
        results.append((size, timings))
    store.redis.close()
    return results


# --- the run ---------------------------------------------------------------------------------------


Rows = list[tuple[str, str]]


def fax_phase(
    system: DeployedSystem, sandbox_url: str, args: argparse.Namespace, out: IO[str]
) -> tuple[Rows, bool]:
    client = redis.Redis.from_url(system.redis_url)
    urls = downloads(sandbox_url)
    document = base64.b64encode(make_pdf(1, 0, label="soak")).decode()
    load = Load(system, inbound_bodies(args.faxes, urls), document, args.outbound)
    sampler = Sampler(client, lambda: load.posted)
    start = sampler.take()
    print(
        f"soak: {args.faxes} faxes at {args.rate:g}/s ({args.outbound:.0%} outbound), "
        f"retention {args.retention:g} s, sandbox clock x{args.clock:g}",
        file=out,
        flush=True,
    )
    started = time.monotonic()
    with sampler.running():
        spent = load.run(args.faxes, args.rate)
        print(
            f"  posted {load.posted} in {spent:.0f} s ({load.posted / spent:.1f}/s), "
            f"{load.refused} refused",
            file=out,
            flush=True,
        )
        drained = wait_drained(client, args.retention * 3 + 300, out)
        print(f"  drained: {drained} at {time.monotonic() - started:.0f} s", file=out)
    end = sampler.take()
    client.close()
    samples = sampler.samples
    peak = max(samples, key=lambda s: s.used)
    # The first window, the time a fax takes to be final, and filing's lag (a sweep).
    window_end = samples[0].at + 1.5 * args.retention + 30
    steady = [s for s in samples if s.at >= window_end and s.posted < load.posted]
    growth = slope([(float(s.posted), float(s.used)) for s in steady]) * 10_000
    busy = [s for s in samples if s.live >= 200]
    per_fax = median([(s.used - start.used) / s.live for s in busy]) if busy else 0.0
    print(f"  growth {growth / MB:+.2f} MB per 10,000 faxes", file=out, flush=True)
    rows = [
        ("faxes posted (refused)", f"{load.posted} ({load.refused}) in {spent:.0f} s"),
        ("Redis used_memory at the start", f"{start.used / MB:.1f} MB"),
        ("peak", f"{peak.used / MB:.1f} MB ({peak.live} records in Redis)"),
        ("end (every fax final and gone)" if drained else "end (NOT drained)",
         f"{end.used / MB:.1f} MB ({end.live} records in Redis)"),
        ("Redis bytes per live fax", f"{per_fax:.0f} B"),
        (
            "growth per 10,000 faxes after the first window",
            f"{growth / MB:+.2f} MB = {100 * growth / peak.used:+.2f} % of the peak "
            f"({len(steady)} samples; target < 1 %)",
        ),
    ]  # fmt: skip
    return rows, drained and growth < 0.01 * peak.used


def refusal_phase(
    system: DeployedSystem, args: argparse.Namespace, out: IO[str]
) -> tuple[Rows, bool]:
    client = redis.Redis.from_url(system.redis_url)
    before = int(client.info("memory")["used_memory"])
    started = time.monotonic()
    answered, resent = refusal_flood(system.web_url, args.refusals, args.refusal_bytes)
    added = int(client.info("memory")["used_memory"]) - before
    client.close()
    spent = time.monotonic() - started
    print(
        f"  {args.refusals} refusals ({answered} answered 401/404, {resent} sent again) in "
        f"{spent:.0f} s, Redis {added / MB:+.2f} MB",
        file=out,
        flush=True,
    )
    rows = [
        (
            f"{args.refusals} refused webhooks of {args.refusal_bytes} B",
            f"{answered} answered 401/404 in {spent:.0f} s ({resent} sent again); Redis "
            f"{added / MB:+.2f} MB (target < 10 MB)",
        )
    ]
    return rows, answered == args.refusals and added < 10 * MB


def scale_rows(system: DeployedSystem, args: argparse.Namespace, out: IO[str]) -> tuple[Rows, bool]:
    system.store().redis.flushdb()
    sizes = [100, args.scale // 10, args.scale, 100]  # the last: the first again (noise)
    scaled = scale_phase(system, sizes, args.probes, out)
    small = {p: min(t[p] for size, t in scaled if size == 100) for p in ("/metrics", "/")}
    rows = []
    for size, timings in scaled[1:3]:
        for path, label in (("/metrics", "/metrics"), ("/", "overview")):
            (wall, cpu), (wall0, cpu0) = timings[path], small[path]
            rows.append(
                (
                    f"{label}: 100 records vs {size}",
                    f"{wall0 * 1000:.1f} ms vs {wall * 1000:.1f} ms (ratio {wall / wall0:.2f}); "
                    f"web CPU {cpu0 * 1000:.1f} vs {cpu * 1000:.1f} ms (ratio {cpu / cpu0:.2f})",
                )
            )
    big = scaled[2][1]
    return rows, all(big[p][1] < 1.5 * small[p][1] + 0.002 for p in ("/metrics", "/"))


def run(args: argparse.Namespace, out: IO[str]) -> int:
    isolate_environment()
    procs: list[ManagedProcess] = []
    system: DeployedSystem | None = None
    rows: Rows = []
    ok = True
    with workdir("faxrelay-bench-soak-") as tmp, open(tmp / "servers.log", "a") as log:
        try:
            ports = SeaweedPorts.pick()
            procs.append(start_seaweed(tmp / "s3", ports, BUCKET, sink=log))
            sandbox_port = free_port()
            procs.append(sandbox_process(sandbox_port, sink=log))
            sandbox_url = f"http://{HOST}:{sandbox_port}"
            (tmp / "system").mkdir()
            system = DeployedSystem(
                tmp / "system",
                f"http://{HOST}:{ports.s3}",
                sandbox_url,
                BUCKET,
                env_overrides={
                    "FAXRELAY_RECORD_RETENTION_SECONDS": str(args.retention),
                    # The providers' dedup windows (PrimeVox: 31 days) on the same clock.
                    "FAXRELAY_DEDUP_WINDOW_SECONDS": str(args.retention),
                    "FAXRELAY_WEBHOOK_LOG_DAYS": repr(args.retention / 86400),
                    "FAXRELAY_SWEEP_INTERVAL": "1",
                    # The production lease and wake grace: the tests' short ones make the
                    # sweeper wake again, and again, every fax still queued behind a burst.
                    "FAXRELAY_LEASE_SECONDS": repr(Settings.model_fields["lease_seconds"].default),
                    "FAXRELAY_WAKE_GRACE": repr(Settings.model_fields["wake_grace"].default),
                },
            )
            system.start()
            httpx.post(f"{sandbox_url}/_sandbox/clock", json={"speed": args.clock}, timeout=30)
            phases: list[tuple[int, Callable[[], tuple[Rows, bool]]]] = [
                (args.faxes, lambda: fax_phase(system, sandbox_url, args, out)),
                (args.refusals, lambda: refusal_phase(system, args, out)),
                (args.scale, lambda: scale_rows(system, args, out)),
            ]
            for count, phase in phases:  # a count of 0 skips the phase
                if count:
                    phase_rows, phase_ok = phase()
                    rows += phase_rows
                    ok &= phase_ok
        finally:
            if system is not None and hasattr(system, "_log"):
                with contextlib.suppress(Exception):
                    system.stop()
            stop_all(procs)
    width = max(len(k) for k, _ in rows) if rows else 0
    print("\n| measure | value |\n|---|---|", file=out)
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |", file=out)
    print(f"\ntargets {'met' if ok else 'NOT met'}", file=out, flush=True)
    return 0 if ok else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faxes", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=8.0, help="faxes posted a second")
    parser.add_argument("--outbound", type=float, default=0.3, help="share sent through the API")
    parser.add_argument("--retention", type=float, default=30.0, help="seconds")
    parser.add_argument("--clock", type=float, default=20.0, help="the sandbox clock's speed")
    parser.add_argument("--refusals", type=int, default=20_000)
    parser.add_argument("--refusal-bytes", type=int, default=64 * 1024)
    parser.add_argument("--scale", type=int, default=100_000, help="records for the scale phase")
    parser.add_argument("--probes", type=int, default=20)
    args = parser.parse_args()
    # A SIGTERM (a timeout's) stops what was started, as Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(run(args, sys.stdout))


if __name__ == "__main__":
    main()
