"""Head-of-line blocking: how long a send waits when a burst of large received faxes is archiving.

``python -m bench.headofline [--sends 200] [--rate 10] [--large 500] [--large-mb 8]
[--latency 0.5] [--bandwidth 4MB/s] [--layout split|single] [--burst 300]``

Starts SeaweedFS, the sandbox (its own process) and the whole system with the deployed worker
processes at their default settings (``tests.workers.DeployedSystem``, the settings' own delays),
all on loopback. The sandbox's network model makes every provider call take ``--latency`` seconds
and move ``--bandwidth`` bytes a second, so a large fax holds an archive slot for seconds.

1. idle: ``--sends`` faxes are handed in through ``POST /v1/faxes`` (CallerIP account ``ci``, a
   one-page PDF), ``--rate`` a second, on an otherwise idle system;
2. loaded: ``--large`` PrimeVox faxes of ``--large-mb`` MB are announced by their webhooks at
   once, and while they are archiving the same number of sends is handed in at the same rate.

Per send: *due → submitted* = from the record's creation (``created_at``: the moment it was due)
to its history entry ``submitted`` (the provider answered the submit). Prints median, p90, p99 and
max for both, the ratio loaded/idle of the p99 (target <= 2), and how many large faxes were still
not archived when the last send was submitted (the load was still there; 0 would make the loaded
figure meaningless). ``--layout single`` runs one worker process over every queue instead of the
split into worker and archiver (``config.workers``), for comparison.

3. capacity (``--burst``, 300; 0 skips it): that many sends handed in while the workers are
   stopped, then the workers started: sends a second one worker process submits, and its CPU per
   send (the sizing in README.md).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO

import httpx
import redis

from bench.archive import (
    MB,
    announce,
    cpu_line,
    cpu_snapshot,
    create_faxes,
    describe_ours,
    isolate_environment,
    set_network,
    timed,
    wait_archived,
    webhook_bodies,
)
from bench.common import (
    HOST,
    cpu_seconds,
    median,
    percentile,
    sandbox_process,
    stop_all,
    workdir,
)
from config.embedded import ManagedProcess, SeaweedPorts, free_port, start_seaweed
from sandbox.network import parse_rate
from sandbox.pdf import make_pdf
from tests.workers import PRODUCTION_DELAYS, DeployedSystem
from worker.domain import parse_iso
from worker.store import keys

BUCKET = "faxrelay-bench-hol"
TARGET = 2.0
SEND_ACCOUNT = "ci"
DESTINATION = "5552220000"


def hand_in(system: DeployedSystem, count: int, rate: float) -> dict[str, float]:
    """``count`` sends through the API, ``rate`` a second (each on time, not after the last one
    answered); returns the fax ids with the moment each 202 arrived."""
    document = {"base64": base64.b64encode(make_pdf(1, label="bench.headofline")).decode()}
    body = {"account": SEND_ACCOUNT, "to": DESTINATION, "document": document}
    ids: list[str] = [""] * count
    answered: list[float] = [0.0] * count
    started = time.monotonic()
    with system.api() as api, ThreadPoolExecutor(8) as pool:

        def post(i: int) -> None:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            answer = api.post("/v1/faxes", json=body)
            if answer.status_code != 202:
                raise RuntimeError(f"POST /v1/faxes answered {answer.status_code}: {answer.text}")
            ids[i] = str(answer.json()["id"])
            answered[i] = time.time()

        list(pool.map(post, range(count)))
    return dict(zip(ids, answered, strict=True))


@dataclass
class Send:
    created: float  # the record's created_at: when the send was due
    answered: float  # the API's 202 arrived (the document is in S3, the record in Redis)
    provider: float  # the sandbox took the job (its handler ran, after the network's latency)
    submitted: float  # the record's history entry "submitted"

    @property
    def wait(self) -> float:
        return self.submitted - self.created


def due_to_submitted(
    system: DeployedSystem, handed: dict[str, float], sandbox_url: str, timeout: float
) -> list[Send]:
    """Each send's moments (``Send``), once every one has been submitted."""
    store = system.store()
    found: dict[str, tuple[float, float, str]] = {}
    deadline = time.monotonic() + timeout
    while len(found) < len(handed):
        for fax_id in handed:
            record = None if fax_id in found else store.find(fax_id)
            if record is None:
                continue
            entry = next((h for h in record.history if h["state"] == "submitted"), None)
            if entry is None and record.final:
                raise RuntimeError(f"send {fax_id} ended {record.state} ({record.reason})")
            if entry is not None:
                created, submitted = parse_iso(record.created_at), parse_iso(entry["at"])
                assert created is not None and submitted is not None
                job = record.provider_ids.get("job_id", "")
                found[fax_id] = (created.timestamp(), submitted.timestamp(), job)
        if len(found) < len(handed):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(handed) - len(found)} sends not submitted in {timeout} s")
            time.sleep(0.2)
    store.redis.close()
    jobs = httpx.get(f"{sandbox_url}/_sandbox/jobs", params={"provider": "callerip"}, timeout=60)
    taken = {j["id"]: float(j["submitted_at"]) for j in jobs.json()}
    return [
        Send(created, handed[fax_id], taken.get(job, submitted), submitted)
        for fax_id, (created, submitted, job) in found.items()
    ]


def pending(client: redis.Redis, ids: list[str]) -> int:
    scores = client.zmscore(keys.state_index("archived"), ids)
    return sum(score is None for score in scores)


def line(name: str, sends: list[Send]) -> str:
    waits = [s.wait for s in sends]
    parts = (
        ("API (S3 put, Redis)", [s.answered - s.created for s in sends]),
        ("then to the provider (queue, S3 get, network)", [s.provider - s.answered for s in sends]),
        ("then recorded", [s.submitted - s.provider for s in sends]),
    )
    return (
        f"{name}: due -> submitted median {median(waits):.3f} s, p90 {percentile(waits, 90):.3f}, "
        f"p99 {percentile(waits, 99):.3f}, max {max(waits):.3f} ({len(waits)} sends)\n"
        + "\n".join(
            f"    {label}: median {median(v):.3f}, p99 {percentile(v, 99):.3f}"
            for label, v in parts
        )
    )


def capacity(system: DeployedSystem, sandbox_url: str, count: int, out: IO[str]) -> None:
    """Sends a second one worker process submits: ``count`` sends handed in while the workers
    are stopped (their wake-ups wait in the queue), then the workers started again, timed from the
    first submit to the last, so neither the API's rate nor a hand-in schedule sets the figure
    (the sizing in README.md uses it). The worker's CPU is sampled meanwhile (its start-up, before
    the first submit, is not counted)."""
    system.stop_workers()
    handed = hand_in(system, count, rate=1e9)
    samples: list[tuple[float, float]] = []  # (time, the new worker's CPU seconds)
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.05):
            proc = system.procs.get("worker")  # the split's worker, or the single one
            if proc is not None:
                samples.append((time.time(), cpu_seconds(proc.pid)))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        system.start_worker()
        sends = due_to_submitted(system, handed, sandbox_url, 600)
    finally:
        stop.set()
        sampler.join()
    first = min(s.submitted for s in sends)
    last = max(s.submitted for s in sends)

    def cpu_at(moment: float) -> float:
        return next((cpu for at, cpu in samples if at >= moment), samples[-1][1])

    span = max(last - first, 1e-9)
    print(
        f"capacity: {count} queued sends, submitted by one worker process "
        f"({describe_ours(system)}) in {span:.1f} s from the first submit to the last: "
        f"{(count - 1) / span:.1f} sends/s; worker CPU "
        f"{1000 * (cpu_at(last) - cpu_at(first)) / (count - 1):.1f} ms per send",
        file=out,
        flush=True,
    )


def run(args: argparse.Namespace, out: IO[str]) -> int:
    isolate_environment()
    procs: list[ManagedProcess] = []
    system: DeployedSystem | None = None
    bandwidth = parse_rate(args.bandwidth)
    with workdir("faxrelay-bench-hol-") as tmp, open(tmp / "servers.log", "a") as log:
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
                env_overrides=PRODUCTION_DELAYS,
                layout=args.layout,
            )
            timed("started SeaweedFS, sandbox, Redis, web, workers, beat", out, system.start)
            set_network(sandbox_url, args.latency, bandwidth)
            print(
                f"head-of-line: {args.sends} sends at {args.rate:g}/s, idle and then while "
                f"{args.large} faxes of {args.large_mb} MB archive; provider latency "
                f"{args.latency:g} s per call, {bandwidth / MB:g} MB/s per connection; "
                f"{describe_ours(system)}",
                file=out,
                flush=True,
            )
            # Warm-up (not timed): every thread's first call, S3, the sandbox's clients.
            warm = create_faxes(sandbox_url, [MB] * 8, seed=5)
            announce(system, webhook_bodies(warm))
            due_to_submitted(system, hand_in(system, 16, args.rate), sandbox_url, 120)
            parts = {"sandbox": procs[1].pid, "SeaweedFS": procs[0].pid}
            parts.update({name: proc.pid for name, proc in system.procs.items()})

            cpu0 = cpu_snapshot(parts)
            began = time.perf_counter()
            idle = due_to_submitted(
                system, hand_in(system, args.sends, args.rate), sandbox_url, 300
            )
            cpu1 = cpu_snapshot(parts)
            print(line("idle  ", idle), file=out, flush=True)
            print(f"  cpu s: {cpu_line(cpu0, cpu1, time.perf_counter() - began)}", file=out)

            large = timed(
                f"created {args.large} faxes of {args.large_mb} MB in the sandbox", out,
                lambda: create_faxes(sandbox_url, [args.large_mb * MB] * args.large, seed=11),
            )  # fmt: skip
            client = redis.Redis.from_url(system.redis_url)
            cpu2 = cpu_snapshot(parts)
            began = time.perf_counter()
            archive_ids: list[str] = []
            announcing = threading.Thread(
                target=lambda: archive_ids.extend(announce(system, webhook_bodies(large)))
            )
            announcing.start()
            send_ids = hand_in(system, args.sends, args.rate)
            announcing.join()
            loaded = due_to_submitted(system, send_ids, sandbox_url, 600)
            left = pending(client, archive_ids)
            cpu3 = cpu_snapshot(parts)
            print(line("loaded", loaded), file=out, flush=True)
            print(f"  cpu s: {cpu_line(cpu2, cpu3, time.perf_counter() - began)}", file=out)
            print(
                f"  large faxes not archived yet when every send had been submitted: "
                f"{left}/{len(archive_ids)}"
                + ("" if left else "  (the load was over: the loaded figure means little)"),
                file=out,
                flush=True,
            )
            p99 = [percentile([s.wait for s in sends], 99) for sends in (idle, loaded)]
            medians = [median([s.wait for s in sends]) for sends in (idle, loaded)]
            ratio = p99[1] / p99[0]
            print(
                f"ratio loaded/idle p99: {ratio:.2f} (median {medians[1] / medians[0]:.2f})"
                f"  (target <= {TARGET:g}: {'met' if ratio <= TARGET else 'NOT met'})",
                file=out,
                flush=True,
            )
            timed(
                "waiting for the large faxes to be archived", out,
                lambda: wait_archived(client, archive_ids, 1800),
            )  # fmt: skip
            client.close()
            if args.burst:
                capacity(system, sandbox_url, args.burst, out)
            return 0
        finally:
            if system is not None and hasattr(system, "_log"):
                with contextlib.suppress(Exception):
                    system.stop()
            stop_all(procs)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sends", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="sends handed in per second")
    parser.add_argument("--large", type=int, default=500)
    parser.add_argument("--large-mb", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.5)
    parser.add_argument("--bandwidth", default="4MB/s")
    parser.add_argument("--layout", choices=("split", "single"), default="split")
    parser.add_argument(
        "--burst", type=int, default=300, help="sends for the capacity figure; 0 skips it"
    )
    sys.exit(run(parser.parse_args(), sys.stdout))


if __name__ == "__main__":
    main()
