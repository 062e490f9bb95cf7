"""Inbound archive end to end: the real system against a plain download-and-upload loop, over a
provider that is slow the way real ones are.

``python -m bench.archive [--count 1000] [--latency 0.5] [--bandwidth 4MB/s] [--concurrency 64]
[--seed 7] [--big-mb 200]``

Starts SeaweedFS (``weed mini``), the provider sandbox (its own process) and the whole system with
the deployed worker processes at their default settings (``tests.workers.DeployedSystem``: Redis,
the web app, the worker and the archiver of ``config.workers``, beat), all on free loopback ports,
with the settings' own delays (no shrunken leases). The sandbox's network model
(``sandbox.network``) holds every provider call ``--latency`` seconds and sends each body at
``--bandwidth`` bytes a second, for both sides alike.

1. ``--count`` PrimeVox faxes of mixed sizes (log-uniform 50 KB - 20 MB, fixed seed) are created in the
   sandbox. Baseline: a thread pool of ``--concurrency`` downloads each from the sandbox and
   ``put_object``s it with boto3. Ours: each is announced by the sandbox's webhook to our web app;
   the archiver downloads, checks and archives it (PDF + sidecar); timed until every record is
   ``archived``. The sandbox's peak of downloads in flight is printed for each side.
2. The archiver's memory while it archives one ``--big-mb`` MB PDF (no latency, no bandwidth cap):
   the peak RSS (``VmHWM``, reset first through ``/proc/PID/clear_refs``) of the archiver's
   processes, and their RSS sampled every 20 ms, against the file's size.

``--pool prefork --layout single --ours N`` runs ours the way faxrelay ran before the threads pool
(one worker over every queue, N processes), for a before/after figure in the same conditions.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx
import redis

from bench.common import HOST, base_env, cpu_seconds, sandbox_process, stop_all, workdir
from config.embedded import ManagedProcess, SeaweedPorts, free_port, start_seaweed
from config.workers import ARCHIVER
from sandbox import primevox as sb_primevox
from sandbox.core import Sandbox, StoredFax
from sandbox.network import parse_rate
from tests.system import System
from tests.workers import PRODUCTION_DELAYS, DeployedSystem
from worker.io.archive import s3_client
from worker.store import keys

BUCKET = "faxrelay-bench"
ACCOUNT = "pv"
TARGET_RATIO = 0.5
MB = 1_000_000


@dataclass(frozen=True)
class Fax:
    id: str  # the sandbox's (provider's) fax id
    url: str
    size: int
    sha256: str
    pages: int


def set_network(sandbox_url: str, latency: float, bandwidth: float) -> dict[str, Any]:
    """The sandbox's network model (also starts a new count of calls in flight)."""
    answer = httpx.post(
        f"{sandbox_url}/_sandbox/network",
        json={"latency": latency, "bandwidth": bandwidth},
        timeout=10,
    )
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data


def network(sandbox_url: str) -> dict[str, Any]:
    answer = httpx.get(f"{sandbox_url}/_sandbox/network", timeout=10)
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data


# --- faxes in the sandbox ----------------------------------------------------------------------
def fax_sizes(count: int, seed: int, low: int, high: int) -> list[int]:
    rng = random.Random(seed)
    return [int(math.exp(rng.uniform(math.log(low), math.log(high)))) for _ in range(count)]


def create_faxes(sandbox_url: str, sizes: list[int], seed: int) -> list[Fax]:
    rng = random.Random(seed + 1)
    faxes = []
    with httpx.Client(base_url=sandbox_url, timeout=120) as client:
        for size in sizes:
            pages = rng.randint(1, 12)
            answer = client.post(
                "/_sandbox/inbound", json={"provider": "primevox", "pages": pages, "size": size}
            )
            answer.raise_for_status()
            data = answer.json()
            faxes.append(
                Fax(data["efaxID"], data["download_url"], data["size"], data["sha256"], pages)
            )
    return faxes


# --- the baseline: download, upload, nothing else ----------------------------------------------
@dataclass
class Baseline:
    """The plain loop: one pool of ``concurrency`` threads sharing one keep-alive HTTP client and
    one boto3 client (both thread-safe), made once and warmed with the warm-up batch, so the timed
    run pays for transfers only."""

    concurrency: int
    s3_endpoint: str
    http: httpx.Client = field(init=False)
    s3: Any = field(init=False)
    pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        self.http = httpx.Client(timeout=120, limits=limits)
        self.s3 = s3_client(self.s3_endpoint)
        self.pool = ThreadPoolExecutor(self.concurrency)

    def one(self, fax: Fax, prefix: str) -> int:
        answer = self.http.get(fax.url)
        answer.raise_for_status()
        self.s3.put_object(
            Bucket=BUCKET,
            Key=f"{prefix}{fax.id}.pdf",
            Body=answer.content,
            ContentType="application/pdf",
        )
        return len(answer.content)

    def run(self, faxes: list[Fax], prefix: str) -> float:
        started = time.perf_counter()
        sizes = list(self.pool.map(lambda fax: self.one(fax, prefix), faxes))
        elapsed = time.perf_counter() - started
        if sizes != [f.size for f in faxes]:
            raise RuntimeError("baseline: a download came back with the wrong size")
        return elapsed

    def close(self) -> None:
        self.pool.shutdown()
        self.http.close()


# --- ours: webhook → web app → Redis → worker → sandbox → S3 -----------------------------------
def webhook_bodies(faxes: list[Fax]) -> list[tuple[str, bytes]]:
    """Each fax's PrimeVox inbound webhook (content type, body), built by the sandbox's own code.

    The benchmark posts them itself over kept-alive connections: the sandbox's ``/_sandbox/fire``
    opens a new HTTP client per call, which costs more CPU than our web app spends on the webhook
    and would be charged to ours on a 2-core machine.
    """
    sb = Sandbox()
    for fax in faxes:
        sb.inbound["primevox"][fax.id] = StoredFax(
            fax.id,
            "primevox",
            b"",
            pages=fax.pages,
            extra={"download_url": fax.url, "box": sb_primevox.VALID_BOX},
        )
    return [sb_primevox.inbound_webhook(sb, fax.id, "", {}) for fax in faxes]


def announce(system: System, bodies: list[tuple[str, bytes]]) -> list[str]:
    """Post each fax's webhook to our web app; returns our record ids."""
    local = threading.local()
    clients: list[httpx.Client] = []
    lock = threading.Lock()
    url = system.webhook_url(ACCOUNT)

    def post(item: tuple[str, bytes]) -> str:
        http: httpx.Client | None = getattr(local, "http", None)
        if http is None:
            http = local.http = httpx.Client(timeout=60)
            with lock:
                clients.append(http)
        answer = http.post(url, content=item[1], headers={"content-type": item[0]})
        if answer.status_code != 200:
            raise RuntimeError(f"webhook answered {answer.status_code}: {answer.text}")
        return answer.headers["faxrelay-fax-id"]

    try:
        with ThreadPoolExecutor(4) as pool:
            return list(pool.map(post, bodies))
    finally:
        for http in clients:
            http.close()


def wait_archived(client: redis.Redis, ids: list[str], timeout: float) -> float:
    """Poll the state indexes until every id is archived; returns when that was seen."""
    remaining = list(ids)
    deadline = time.monotonic() + timeout
    while remaining:
        archived = client.zmscore(keys.state_index("archived"), remaining)
        remaining = [i for i, score in zip(remaining, archived, strict=True) if score is None]
        if remaining:
            failed = client.zmscore(keys.state_index("failed"), remaining)
            bad = [i for i, score in zip(remaining, failed, strict=True) if score is not None]
            if bad:
                raise RuntimeError(
                    f"{len(bad)} faxes failed, e.g. {client.get(keys.fax_key(bad[0]))!r}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(remaining)} faxes not archived after {timeout:.0f} s")
            time.sleep(0.1)
    return time.perf_counter()


def run_ours(system: System, faxes: list[Fax], timeout: float) -> tuple[float, list[str]]:
    bodies = webhook_bodies(faxes)
    client = redis.Redis.from_url(system.redis_url)
    started = time.perf_counter()
    ids = announce(system, bodies)
    done = wait_archived(client, ids, timeout)
    client.close()
    return done - started, ids


def verify_ours(system: System, ids: list[str], faxes: list[Fax]) -> int:
    """Archived records whose sha256 and S3 object size match the sandbox's file; returns bad ones."""
    store = system.store()
    s3 = s3_client(system.s3_endpoint)
    bad = 0
    for fax_id, fax in zip(ids, faxes, strict=True):
        record = store.get(fax_id)
        head = s3.head_object(Bucket=record.archive["bucket"], Key=record.archive["key"])
        if record.sha256 != fax.sha256 or head["ContentLength"] != fax.size:
            bad += 1
    store.redis.close()
    return bad


# --- memory ------------------------------------------------------------------------------------
def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Sampler:
    pids: list[int]
    interval: float = 0.02
    peak_tree_kb: int = 0
    peak_kb: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for pid in self.pids:
                rss = status_kb(pid, "VmRSS")
                total += rss
                self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), rss)
            self.peak_tree_kb = max(self.peak_tree_kb, total)
            time.sleep(self.interval)

    @contextlib.contextmanager
    def running(self) -> Iterator[Sampler]:
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(5)


def measure_big(system: DeployedSystem, sandbox_url: str, size: int, out: IO[str]) -> None:
    print(
        f"memory: a fresh archiver with one thread, warmed by one 1 MB fax, archives one "
        f"{size / MB:.0f} MB fax (no latency, no bandwidth cap)",
        file=out,
        flush=True,
    )
    set_network(sandbox_url, 0.0, 0.0)
    faxes = create_faxes(sandbox_url, [size], seed=99)
    system.stop_workers()
    system.concurrency = {**system.concurrency, ARCHIVER.name: 1, "worker": 1}
    system.start_worker()
    run_ours(system, create_faxes(sandbox_url, [MB], seed=98), timeout=120)
    archiver = system.procs[ARCHIVER.name if system.layout == "split" else "worker"].pid
    tree = [archiver, *children_of(archiver)]  # prefork's pool processes; none with threads
    resettable = all(reset_peak(pid) for pid in tree)
    before = {pid: status_kb(pid, "VmRSS") for pid in tree}
    with Sampler(tree).running() as sampler:
        elapsed, ids = run_ours(system, faxes, timeout=600)
    hwm = {pid: status_kb(pid, "VmHWM") for pid in tree}
    bad = verify_ours(system, ids, faxes)
    # The process that did the work is the one whose RSS rose the most.
    busiest = max(tree, key=lambda p: max(hwm[p], sampler.peak_kb.get(p, 0)) - before[p])
    peak = (
        max(hwm[busiest], sampler.peak_kb.get(busiest, 0))
        if resettable
        else sampler.peak_kb.get(busiest, 0)
    )
    added = peak - before[busiest]
    tree_before = sum(before.values())
    print(
        f"memory: archived {size / MB:.0f} MB in {elapsed:.1f} s ({size / MB / elapsed:.1f} MB/s); "
        f"{'sha256 and size verified' if bad == 0 else 'VERIFICATION FAILED'}",
        file=out,
    )
    mib = size / 2**20
    print(
        f"memory: archiver process peak RSS {peak / 1024:.0f} MiB "
        f"({'VmHWM after a reset' if resettable else 'sampled every 20 ms'}; "
        f"{before[busiest] / 1024:.0f} MiB before, +{added / 1024:.0f} MiB while archiving) vs the "
        f"file's {mib:.0f} MiB: peak/file {peak / 1024 / mib:.2f}, added/file {added / 1024 / mib:.2f}",
        file=out,
    )
    print(
        f"memory: whole archiver tree ({len(tree)} processes, sampled every 20 ms): peak "
        f"{sampler.peak_tree_kb / 1024:.0f} MiB, {tree_before / 1024:.0f} MiB before "
        f"(+{(sampler.peak_tree_kb - tree_before) / 1024:.0f} MiB)",
        file=out,
    )


# --- where the CPU went -------------------------------------------------------------------------
def cpu_snapshot(parts: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each part's process and its children, and of this process."""
    snap = {"bench (this process)": time.process_time()}
    for name, pid in parts.items():
        snap[name] = sum(cpu_seconds(p) for p in [pid, *children_of(pid)])
    return snap


def cpu_line(before: dict[str, float], after: dict[str, float], wall: float) -> str:
    spent = sorted(((after[k] - before[k], k) for k in before), reverse=True)
    total = sum(s for s, _ in spent)
    cores = os.cpu_count() or 1
    parts = ", ".join(f"{k} {s:.1f}" for s, k in spent if s >= 0.05)
    return f"{parts} (total {total:.1f} CPU s in {wall:.1f} s on {cores} cores)"


# --- main ---------------------------------------------------------------------------------------
def isolate_environment() -> None:
    """This process and its children: placeholder S3 keys, no proxies, no FAXRELAY_* leaking in."""
    env = base_env()
    for name in list(os.environ):
        if name not in env:
            del os.environ[name]
    os.environ.update(env)


def timed(label: str, out: IO[str], step: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    result = step()
    print(f"  {label}: {time.perf_counter() - started:.1f} s", file=out, flush=True)
    return result


def describe_ours(system: DeployedSystem) -> str:
    forced = "processes" in system.worker_args
    return ", ".join(
        f"{kind.name} x{system.concurrency.get(kind.name, kind.concurrency)} "
        f"({'prefork' if kind.prefork or forced else 'threads'})"
        for kind in system.kinds()
    )


def run(args: argparse.Namespace, out: IO[str]) -> int:
    isolate_environment()
    procs: list[ManagedProcess] = []
    system: DeployedSystem | None = None
    bandwidth = parse_rate(args.bandwidth)
    with workdir("faxrelay-bench-archive-") as tmp, open(tmp / "servers.log", "a") as log:
        try:
            ports = SeaweedPorts.pick()
            procs.append(start_seaweed(tmp / "s3", ports, BUCKET, sink=log))
            s3_endpoint = f"http://{HOST}:{ports.s3}"
            sandbox_port = free_port()
            procs.append(sandbox_process(sandbox_port, sink=log))
            sandbox_url = f"http://{HOST}:{sandbox_port}"
            (tmp / "system").mkdir()
            overrides = {"worker": args.ours, ARCHIVER.name: args.ours} if args.ours else {}
            system = DeployedSystem(
                tmp / "system",
                s3_endpoint,
                sandbox_url,
                BUCKET,
                env_overrides=PRODUCTION_DELAYS,
                layout=args.layout,
                concurrency=overrides,
                worker_args=("-P", "processes") if args.pool == "prefork" else (),
            )
            timed("started SeaweedFS, sandbox, Redis, web, workers, beat", out, system.start)
            sizes = fax_sizes(args.count, args.seed, args.min_kb * 1000, args.max_mb * MB)
            faxes = timed(
                f"created {args.count} faxes in the sandbox", out,
                lambda: create_faxes(sandbox_url, sizes, args.seed),
            )  # fmt: skip
            warm = create_faxes(
                sandbox_url, [1 * MB] * min(64, 2 * args.concurrency), args.seed + 2
            )
            total = sum(f.size for f in faxes)
            print(
                f"archive: {len(faxes)} faxes, {total / MB:.0f} MB (sizes {min(sizes) / 1000:.0f} KB"
                f" - {max(sizes) / MB:.1f} MB, median {sorted(sizes)[len(sizes) // 2] / MB:.2f} MB,"
                f" seed {args.seed}); provider latency {args.latency:g} s per call, bandwidth "
                f"{bandwidth / MB:g} MB/s per connection; baseline concurrency {args.concurrency}, "
                f"ours {describe_ours(system)}",
                file=out,
                flush=True,
            )
            set_network(sandbox_url, args.latency, bandwidth)
            # Warm-up (not timed): connection pools, the threads on both sides, S3 volumes.
            baseline = Baseline(args.concurrency, s3_endpoint)
            baseline.run(warm, "warm/")
            run_ours(system, warm, timeout=300)
            parts = {
                "sandbox": procs[1].pid,
                "SeaweedFS": procs[0].pid,
                **{name: proc.pid for name, proc in system.procs.items()},
            }
            cpu_before = cpu_snapshot(parts)
            set_network(sandbox_url, args.latency, bandwidth)
            base_s = baseline.run(faxes, "baseline/")
            baseline.close()
            base_peak = network(sandbox_url)["peak"]
            cpu_base = cpu_snapshot(parts)
            print(
                f"baseline (thread pool: sandbox GET -> boto3 put_object, shared clients): {base_s:.1f} s  "
                f"{len(faxes) / base_s:.2f} faxes/s  {total / MB / base_s:.1f} MB/s  "
                f"(peak downloads in flight {base_peak})",
                file=out,
                flush=True,
            )
            set_network(sandbox_url, args.latency, bandwidth)
            ours_s, ids = run_ours(system, faxes, timeout=3600)
            ours_peak = network(sandbox_url)["peak"]
            cpu_ours = cpu_snapshot(parts)
            print(
                f"ours (webhook -> web -> Redis -> {describe_ours(system)} -> S3, PDF check, "
                f"sidecar): {ours_s:.1f} s  {len(faxes) / ours_s:.2f} faxes/s  "
                f"{total / MB / ours_s:.1f} MB/s  (peak downloads in flight {ours_peak})",
                file=out,
                flush=True,
            )
            ratio = base_s / ours_s
            print(
                f"ratio ours/baseline (throughput): {ratio:.2f}  (target >= {TARGET_RATIO}: "
                f"{'met' if ratio >= TARGET_RATIO else 'NOT met'})",
                file=out,
                flush=True,
            )
            print(f"cpu s, baseline: {cpu_line(cpu_before, cpu_base, base_s)}", file=out)
            print(f"cpu s, ours    : {cpu_line(cpu_base, cpu_ours, ours_s)}", file=out)
            bad = verify_ours(system, ids, faxes)
            print(
                f"check: {len(ids) - bad}/{len(ids)} archived with the sandbox's sha256 and size",
                file=out,
                flush=True,
            )
            if args.big_mb > 0:
                measure_big(system, sandbox_url, args.big_mb * MB, out)
            return 0 if bad == 0 else 1
        finally:
            if system is not None and hasattr(system, "_log"):
                with contextlib.suppress(Exception):
                    system.stop()
            stop_all(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--latency", type=float, default=0.5, help="seconds per provider call")
    parser.add_argument(
        "--bandwidth", default="4MB/s", help="per connection, e.g. 4MB/s; 0: unlimited"
    )
    parser.add_argument("--concurrency", type=int, default=64, help="the baseline's threads")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--min-kb", type=int, default=50)
    parser.add_argument("--max-mb", type=int, default=20)
    parser.add_argument("--big-mb", type=int, default=200, help="0 skips the memory measurement")
    parser.add_argument("--layout", choices=("split", "single"), default="split")
    parser.add_argument("--pool", choices=("threads", "prefork"), default="threads")
    parser.add_argument(
        "--ours", type=int, default=0, help="threads (processes) per worker; 0: the defaults"
    )
    args = parser.parse_args()
    sys.exit(run(args, sys.stdout))


if __name__ == "__main__":
    main()
