"""Polling cost and freshness: faxrelay's poll schedule against a fixed 15 s poller, side by side.

``python -m bench.poll`` answers: with 1,000 outstanding CallerIP jobs that take as long as real
faxes do, how many status requests does each job cost until it is final, and how long after the
job's final state at the sandbox does the follower know it?

Setup (everything on 127.0.0.1; nothing else is ever reached):

- **Durations shaped like real faxes** (``sandbox.timing``, switched on with ``POST
  /_sandbox/timing``): each job waits in the provider's queue (conversion, then a log-normal wait,
  median 20 s), is dialled (10-25 s), then sends every page in 30-60 s (one line speed per job);
  15 % of first attempts (30 % of later ones) find the line busy and go back to the queue for
  1-4 minutes before a redial, 3 % ring out unanswered. The page counts are drawn here (``PAGES``:
  a third of faxes are one page, half are one or two, a few run to 20-30 pages; seeded) and each
  job's document has that many pages; the sandbox reads the count from the document. The sandbox
  draws each plan from (seed, pages, n-th job of that many pages), and both runs send the same
  documents, so both see the same set of plans whatever order the jobs arrive in (checked and
  printed).
- **The sandbox runs as its own uvicorn process**, not in a thread of this process. The baseline
  poller sends several hundred requests a second, and sharing one GIL with the server it
  measures would make the sandbox, not the poller, the limit.
- **A fast sandbox clock** (``--speed``, default 5: 30 sandbox minutes pass in 6 real minutes), set
  once before anything is submitted and never changed, so real time maps linearly onto sandbox time.
  The mapping is read from ``POST /_sandbox/clock`` (its uncertainty, half the round trip times the
  speed, is printed). Every time below is in sandbox seconds.
- **faxrelay** is ``tests.workers.DeployedSystem`` (Valkey, the web app, the worker and the
  archiver of ``config.workers`` at their default concurrency, beat, as real processes) with
  SeaweedFS, and with every faxrelay delay expressed in sandbox time: ``FAXRELAY_RETRY_SCALE =
  1/speed`` (the poll schedule's times, ``worker/pipeline/outbound/schedule.py``, become sandbox
  seconds) and ``FAXRELAY_SWEEP_INTERVAL = 2 s / speed`` (the default sweep of 2 s, in sandbox
  time). ``FAXRELAY_WAKE_GRACE`` (how long a claimed wake-up may sit in a queue before the sweeper
  sends another) and ``FAXRELAY_LEASE_SECONDS`` are margins on faxrelay's own, real-time
  processing, so they keep their defaults in real seconds (``--wake-grace`` changes the first).
  What cannot be scaled is faxrelay's own work: Celery
  dispatch, the worker's tasks and Redis round trips take real milliseconds, which the fast clock
  multiplies by ``speed``. The lag is therefore split into *detect* (from the job's final state to
  the status request that first saw it: set by the poll schedule) and *record* (from that request to
  the record's final history entry: faxrelay's own processing, magnified ``speed`` times); a
  production clock would shrink only the second.
- The faxes go in through ``POST /v1/faxes`` (account ``ci``, a PDF of the job's pages), 8 at a time;
  the accept rate and the rate at which the worker submits them to the sandbox are printed.
- **The baseline** is a fixed poller written here: each job's status is asked every 15 sandbox
  seconds from the moment its submit was answered, until the answer is final, with at most
  ``--concurrency`` requests in flight, against the same sandbox process with a fresh batch of jobs
  submitted (with httpx) straight to the sandbox's CallerIP send call. Status words are read with
  faxrelay's own CallerIP status table. The polls go over a small keep-alive HTTP/1.1 pool on
  asyncio streams rather than httpx: httpx's ``AsyncClient`` managed about 300 requests a second
  here (the sync client about 750), the sandbox serves about 3,000, and 1,000 jobs every 15 sandbox
  seconds at x5 is up to 333 a second; a poller that falls behind would be late and flatter
  faxrelay. A tick that could not be served in time is skipped, not piled up (as a timer would), and
  the lateness of its requests is printed, so a poller that could not keep up would show.
- The two run one after the other (faxrelay first; its processes are stopped before the baseline
  starts, so the baseline has the machine to itself).

Besides the table, both are set against what their schedules alone give for the same plans (no
dispatch delay, no jitter), computed here from the sandbox's plans: the fixed 15 s poller, the
backoff faxrelay used before (CallerIP: 10 s after submit, then doubling to 300 s), and
faxrelay's schedule. The gap between faxrelay's nominal and measured figures is its own
processing (magnified ``speed`` times) and duplicate wake-ups.

Measures, per job, for both: *status requests* = the sandbox's request log entries (operation
``status``) for the job's uuid (the same instrument for both; requests after the final answer are
counted in the total and shown separately); *lag* = (the moment the follower recorded the final state,
converted to sandbox clock) - the job's ``final_at`` at the sandbox. faxrelay's moment is the ``at`` of
the record's history entry for its final state; the baseline's is when its final answer arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import itertools
import json
import math
import os
import random
import shutil
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import httpx
import uvloop

from bench.common import median, percentile, workdir
from config.embedded import ManagedProcess, SeaweedPorts, free_port, start_seaweed, wait_until
from config.queues import POLL_QUEUE, SEND_QUEUE
from sandbox import callerip as sb_callerip
from sandbox.pdf import make_pdf
from tests.workers import PRODUCTION_DELAYS, DeployedSystem
from worker.domain import FaxRecord, parse_iso
from worker.pipeline.outbound import schedule
from worker.providers.base import JobState
from worker.providers.callerip import STATUS
from worker.providers.callerip import CallerIPClient as CallerIP
from worker.retry import Backoff
from worker.store.records import fax_key

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
BUCKET = "faxrelay-bench-poll"
ACCOUNT = "ci"
DESTINATION = "5552220000"
PROVIDER = sb_callerip.PROVIDER
PRODUCTION_SWEEP = float(PRODUCTION_DELAYS["FAXRELAY_SWEEP_INTERVAL"])
PRODUCTION_GRACE = float(PRODUCTION_DELAYS["FAXRELAY_WAKE_GRACE"])
PRODUCTION_LEASE = float(PRODUCTION_DELAYS["FAXRELAY_LEASE_SECONDS"])


# --- the sandbox process and the faxes ----------------------------------------------------

# Pages of a fax and how often each count comes (weights): a third are one page, half one or two,
# the mean is about four and a half, and a few run to 20 or 30 pages.
PAGES = {1: 30, 2: 18, 3: 12, 4: 9, 5: 7, 6: 5, 7: 4, 8: 3, 9: 2, 10: 2, 12: 3, 15: 2, 20: 2, 30: 1}


def draw_pages(seed: int, count: int) -> list[int]:
    """The page count of each job: the same list for both runs."""
    rng = random.Random(seed)
    return rng.choices(list(PAGES), weights=list(PAGES.values()), k=count)


def documents(pages: Sequence[int]) -> dict[int, bytes]:
    """One PDF per page count (the sandbox reads the count from the document)."""
    return {p: make_pdf(p, label="faxrelay bench.poll") for p in sorted(set(pages))}


def set_timing(sandbox_url: str, seed: int) -> None:
    """Fax-shaped CallerIP jobs from now on, with the draw counters back at zero, so the next
    batch of documents gets the same plans as the last one."""
    answer = httpx.post(
        f"{sandbox_url}/_sandbox/timing",
        json={"provider": PROVIDER, "model": "fax", "seed": seed},
        timeout=10,
    )
    answer.raise_for_status()


def start_sandbox(port: int, env: dict[str, str], sink: IO[str]) -> ManagedProcess:
    proc = ManagedProcess(
        "sandbox",
        [sys.executable, "-m", "uvicorn", "--factory", "sandbox.app:create_app",
         "--host", HOST, "--port", str(port), "--loop", "uvloop", "--http", "httptools",
         "--no-access-log", "--log-level", "warning"],
        sink=sink, env=env, cwd=str(ROOT),
    ).start()  # fmt: skip
    url = f"http://{HOST}:{port}/_sandbox/jobs"
    try:
        wait_until(lambda: httpx.get(url, timeout=2).status_code == 200, 30, "sandbox", proc)
    except Exception:
        proc.stop()
        raise
    return proc


# --- clock --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClockMap:
    """Real (``time.time()``) ↔ sandbox clock, valid while the speed stays the same."""

    real: float
    sandbox: float
    speed: float
    error: float  # ± sandbox seconds (half the round trip of the call that read it, sped up)

    def to_sandbox(self, real: float) -> float:
        return self.sandbox + (real - self.real) * self.speed

    def to_real(self, sandbox: float) -> float:
        return self.real + (sandbox - self.sandbox) / self.speed


def set_speed(sandbox_url: str, speed: float, samples: int = 7) -> ClockMap:
    """Set the clock's speed, then read it a few times and keep the tightest reading."""
    best: ClockMap | None = None
    with httpx.Client(timeout=10) as http:
        http.post(f"{sandbox_url}/_sandbox/clock", json={"speed": speed}).raise_for_status()
        for _ in range(samples):
            before = time.time()
            answer = http.post(f"{sandbox_url}/_sandbox/clock", json={})
            after = time.time()
            answer.raise_for_status()
            data = answer.json()
            reading = ClockMap(
                (before + after) / 2,
                float(data["now"]),
                float(data["speed"]),
                (after - before) / 2 * float(data["speed"]),
            )
            if best is None or reading.error < best.error:
                best = reading
    assert best is not None
    return best


# --- measuring ----------------------------------------------------------------------------


@dataclass
class JobResult:
    job_id: str
    duration: float  # sandbox seconds from submit to final
    final_at: float  # sandbox clock
    known_at: float | None  # sandbox clock: when the follower recorded the final state
    requests: int = 0  # status requests until (and including) the one that saw the final state
    extra: int = 0  # status requests after that one
    detect_at: float | None = None  # sandbox clock of the request that first saw the final state
    submitted_at: float = 0.0  # sandbox clock
    asked: list[float] = field(default_factory=list)  # sandbox clock of every status request

    @property
    def lag(self) -> float | None:
        return None if self.known_at is None else self.known_at - self.final_at


@dataclass
class PhaseResult:
    name: str
    jobs: list[JobResult]
    real_seconds: float  # from the first submit until every job was known final (or timeout)
    notes: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[JobResult]:
        return [j for j in self.jobs if j.known_at is not None]


def sandbox_view(
    sandbox_url: str, job_ids: set[str]
) -> tuple[dict[str, dict[str, Any]], dict[str, list[float]]]:
    """The phase's jobs and the sandbox times of each job's status requests, from the sandbox."""
    with httpx.Client(timeout=120) as http:
        jobs = http.get(f"{sandbox_url}/_sandbox/jobs", params={"provider": PROVIDER}).json()
        log = http.get(
            f"{sandbox_url}/_sandbox/requests",
            params={"provider": PROVIDER, "operation": "status"},
        ).json()
    by_id = {j["id"]: j for j in jobs if j["id"] in job_ids}
    asked: dict[str, list[float]] = defaultdict(list)
    for entry in log:
        uuid = entry["query"].get("uuid", "")
        if uuid in job_ids:
            asked[uuid].append(float(entry["at"]))
    return by_id, asked


def job_results(
    jobs: dict[str, dict[str, Any]], asked: dict[str, list[float]], known: dict[str, float | None]
) -> list[JobResult]:
    out = []
    for job_id, job in jobs.items():
        final_at = float(job["final_at"])
        times = sorted(asked.get(job_id, []))
        seen = [t for t in times if t >= final_at]
        detect_at = seen[0] if seen else None
        until = sum(1 for t in times if detect_at is None or t <= detect_at)
        out.append(
            JobResult(
                job_id=job_id,
                duration=final_at - float(job["submitted_at"]),
                final_at=final_at,
                known_at=known.get(job_id),
                requests=until,
                extra=len(times) - until,
                detect_at=detect_at,
                submitted_at=float(job["submitted_at"]),
                asked=times,
            )
        )
    return out


def plans_of(jobs: dict[str, dict[str, Any]]) -> list[float]:
    return sorted(round(float(j["final_at"]) - float(j["submitted_at"]), 6) for j in jobs.values())


# --- faxrelay -------------------------------------------------------------------------------


def run_faxrelay(
    args: argparse.Namespace,
    tmp: Path,
    sandbox_url: str,
    s3_endpoint: str,
    cmap: ClockMap,
    sink: IO[str],
) -> tuple[PhaseResult, dict[str, dict[str, Any]]]:
    speed = cmap.speed
    system = DeployedSystem(
        tmp / "system",
        s3_endpoint,
        sandbox_url,
        BUCKET,
        env_overrides={
            **PRODUCTION_DELAYS,
            "FAXRELAY_RETRY_SCALE": repr(1.0 / speed),
            "FAXRELAY_SWEEP_INTERVAL": repr(PRODUCTION_SWEEP / speed),
            # faxrelay's own processing runs in real time: its safety margins stay real seconds
            "FAXRELAY_WAKE_GRACE": repr(args.wake_grace),
            "FAXRELAY_LEASE_SECONDS": repr(PRODUCTION_LEASE),
        },
    )
    (tmp / "system").mkdir()
    say("faxrelay: starting Valkey, web app, the worker and the archiver (defaults), beat ...")
    system.start()
    try:
        set_timing(sandbox_url, args.seed)
        return _drive_faxrelay(args, system, sandbox_url, cmap)
    except BaseException:
        say("faxrelay run failed; last lines of the system log:\n" + system.log_tail(40))
        raise
    finally:
        say("faxrelay: stopping its processes ...")
        system.stop()
        if args.log is not None and system.log_path is not None:
            shutil.copy(system.log_path, args.log.with_name(args.log.name + ".system"))


def _drive_faxrelay(
    args: argparse.Namespace, system: DeployedSystem, sandbox_url: str, cmap: ClockMap
) -> tuple[PhaseResult, dict[str, dict[str, Any]]]:
    pages = draw_pages(args.seed, args.jobs)
    encoded = {p: base64.b64encode(pdf).decode() for p, pdf in documents(pages).items()}
    notes: list[str] = []

    with system.api() as api:

        def submit(i: int) -> str:
            document = {"base64": encoded[pages[i]]}
            body = {"account": ACCOUNT, "to": DESTINATION, "document": document}
            answer = api.post("/v1/faxes", json=body)
            if answer.status_code != 202:
                raise RuntimeError(f"POST /v1/faxes answered {answer.status_code}: {answer.text}")
            return str(answer.json()["id"])

        say(f"faxrelay: submitting {args.jobs} faxes through POST /v1/faxes, 8 at a time ...")
        started = time.time()
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(submit, range(args.jobs)))
        accepted = time.time() - started
    notes.append(
        f"POST /v1/faxes: {args.jobs} accepted in {accepted:.1f} s real "
        f"({args.jobs / accepted:.0f}/s)"
    )
    say(notes[-1])

    store = system.store()
    known: dict[str, float | None] = dict.fromkeys(ids)
    job_of: dict[str, str] = {}
    # The longest plan the model gives (the queue's cap, three attempts, the most pages at the
    # slowest pace), and the backoff's cap twice over.
    horizon = 900 + 3 * 280 + max(pages) * 60 + 2 * CallerIP.poll_cap
    deadline = time.time() + accepted + horizon / cmap.speed + 60
    next_report = time.time() + 10
    open_ids = set(ids)
    deepest: dict[str, int] = {}
    endings: Counter[str] = Counter()  # records that did not end delivered (the model fails some)
    while open_ids and time.time() < deadline:
        batch = sorted(open_ids)
        raws = store.redis.mget([fax_key(fax_id) for fax_id in batch])
        for fax_id, raw in zip(batch, raws, strict=True):
            record = FaxRecord.from_json(json.loads(raw)) if raw else None
            if record is None or not record.final:
                continue
            open_ids.discard(fax_id)
            job_of[fax_id] = record.provider_ids.get("job_id", "")
            entry = next(h for h in record.history if h["state"] == str(record.state))
            at = parse_iso(entry["at"])
            assert at is not None
            known[fax_id] = at.timestamp()
            if record.state != "delivered":
                endings[f"{record.state} ({record.reason})"] += 1
        depth = {q: int(store.redis.llen(q)) for q in (SEND_QUEUE, POLL_QUEUE)}
        for queue, n in depth.items():
            deepest[queue] = max(deepest.get(queue, 0), n)
        if time.time() >= next_report:
            next_report += 15
            say(
                f"faxrelay: {len(ids) - len(open_ids)}/{len(ids)} records final after "
                f"{time.time() - started:.0f} s real; queued messages: "
                + ", ".join(f"{q} {n}" for q, n in depth.items())
            )
        time.sleep(1.0)
    elapsed = time.time() - started
    if endings:
        notes.append(
            "records not delivered (the plans end some jobs Failed): "
            + ", ".join(f"{n} {what}" for what, n in endings.most_common())
        )
    notes.append(
        "deepest queues seen (sampled each second): "
        + ", ".join(f"{q} {n}" for q, n in deepest.items())
    )
    if open_ids:
        notes.append(f"{len(open_ids)} records still not final after {elapsed:.0f} s real")
        for fax_id in open_ids:
            record = store.find(fax_id)
            if record is not None:
                job_of[fax_id] = record.provider_ids.get("job_id", "")
    store.redis.close()

    jobs, asked = sandbox_view(sandbox_url, {j for j in job_of.values() if j})
    submitted = sorted(float(j["submitted_at"]) for j in jobs.values())
    if submitted:
        span = cmap.to_real(submitted[-1]) - started
        notes.append(
            f"the worker submitted {len(submitted)} jobs to the sandbox within {span:.1f} s real "
            f"of the first POST ({len(submitted) / span:.0f}/s)"
        )
    by_job = {
        job_of[f]: (None if t is None else cmap.to_sandbox(t))
        for f, t in known.items()
        if f in job_of
    }
    return PhaseResult("faxrelay", job_results(jobs, asked, by_job), elapsed, notes), jobs


# --- the fixed poller -----------------------------------------------------------------------


@dataclass
class Followed:
    job_id: str
    base: float  # sandbox clock when its submit was answered
    known_real: float | None = None
    late: list[float] = field(default_factory=list)  # sandbox seconds after each tick
    skipped: int = 0
    errors: int = 0


class KeepAlivePool:
    """``size`` keep-alive HTTP/1.1 connections for the fixed poller's GETs.

    The status polls do not go through httpx: on this machine httpx's ``AsyncClient`` managed about
    300 requests a second (its sync client about 750) against a sandbox that serves about 3,000,
    while a 15 s poller over 1,000 jobs at x20 needs up to 1,333 a second. A poller that cannot keep
    up would be late and make the baseline look worse than a 15 s poller is; this one keeps up.
    """

    def __init__(self, host: str, port: int, size: int) -> None:
        self.host, self.port, self.size = host, port, size
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )

    async def open(self) -> None:
        for _ in range(self.size):
            self.idle.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def close(self) -> None:
        while not self.idle.empty():
            _, writer = self.idle.get_nowait()
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    @contextlib.asynccontextmanager
    async def connection(
        self,
    ) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        """A connection for one request; one that failed is replaced by a fresh one."""
        reader, writer = await self.idle.get()
        try:
            yield reader, writer
        except BaseException:
            writer.close()
            reader, writer = await asyncio.open_connection(self.host, self.port)
            raise
        finally:
            self.idle.put_nowait((reader, writer))

    @staticmethod
    async def request(
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes = b"",
    ) -> tuple[int, bytes]:
        """One request on a kept-alive connection; the answer's status and body."""
        reader, writer = conn
        lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        head = (await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")
        status = int(head[0].split(b" ", 2)[1])
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await reader.readexactly(length)


async def _fixed_poller(
    args: argparse.Namespace, sandbox_url: str, cmap: ClockMap
) -> tuple[list[Followed], float]:
    host_port = sandbox_url.split("//", 1)[1]
    token = sb_callerip.VALID_TOKEN
    interval = args.interval
    pool = KeepAlivePool(HOST, int(host_port.rsplit(":", 1)[1]), args.concurrency)
    plain = {"Host": host_port, "Accept": "application/json"}
    # One send request per page count (the same documents as faxrelay's): built once by httpx,
    # sent over the pool.
    pages = draw_pages(args.seed, args.jobs)
    sends: dict[int, tuple[dict[str, str], bytes]] = {}
    for count, pdf in documents(pages).items():
        send = httpx.Request(
            "POST",
            f"{sandbox_url}/callerip/api/fax/send",
            data={"token": token, "number": DESTINATION, "sendCover": "N"},
            files={"file": ("fax.pdf", pdf, "application/pdf")},
        )
        sends[count] = ({**plain, "Content-Type": send.headers["content-type"]}, send.read())

    async def follow(job: Followed) -> None:
        target = "/callerip/api/fax/status?" + urlencode({"token": token, "uuid": job.job_id})
        due = job.base + interval
        while True:
            await asyncio.sleep(max(0.0, cmap.to_real(due) - time.time()))
            answer: tuple[int, bytes] | None = None
            with contextlib.suppress(OSError, ValueError, asyncio.IncompleteReadError):
                async with pool.connection() as conn:
                    job.late.append(cmap.to_sandbox(time.time()) - due)
                    answer = await pool.request(conn, "GET", target, plain)
            got = time.time()
            if answer is not None and answer[0] == 200:
                word = str(json.loads(answer[1]).get("status", "")).strip().lower()
                if STATUS.get(word, JobState.UNKNOWN).final:
                    job.known_real = got
                    return
            else:
                job.errors += 1
            due += interval
            now = cmap.to_sandbox(time.time())
            if due < now:  # a timer skips the ticks it missed rather than firing them all
                missed = math.floor((now - due) / interval) + 1
                job.skipped += missed
                due += missed * interval

    async def submit_and_follow(count: int) -> Followed:
        headers, send_body = sends[count]
        async with pool.connection() as conn:
            status, body = await pool.request(
                conn, "POST", "/callerip/api/fax/send", headers, send_body
            )
        if status != 200:
            raise RuntimeError(f"sandbox send answered {status}: {body[:200]!r}")
        job = Followed(str(json.loads(body)["uuid"]), cmap.to_sandbox(time.time()))
        following.append(asyncio.create_task(follow(job)))
        return job

    following: list[asyncio.Task[None]] = []
    await pool.open()
    try:
        started = time.time()
        followed = await asyncio.gather(*(submit_and_follow(count) for count in pages))
        say(
            f"fixed poller: {args.jobs} jobs submitted to the sandbox in "
            f"{time.time() - started:.1f} s real (each followed from its own submit); polling "
            f"every {interval:g} sandbox s ..."
        )
        await asyncio.gather(*following)
    finally:
        await pool.close()
    return list(followed), time.time() - started


def run_fixed(
    args: argparse.Namespace, sandbox_url: str, cmap: ClockMap
) -> tuple[PhaseResult, dict[str, dict[str, Any]]]:
    set_timing(sandbox_url, args.seed)  # the same plans again, for the same documents
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        followed, elapsed = runner.run(_fixed_poller(args, sandbox_url, cmap))
    jobs, asked = sandbox_view(sandbox_url, {f.job_id for f in followed})
    known = {
        f.job_id: (None if f.known_real is None else cmap.to_sandbox(f.known_real))
        for f in followed
    }
    late = [x for f in followed for x in f.late]
    notes = [
        f"poll lateness behind its 15 s tick (sandbox s): median {median(late):.2f}, "
        f"p90 {percentile(late, 90):.2f}, max {max(late, default=0.0):.2f}; "
        f"ticks skipped {sum(f.skipped for f in followed)}, "
        f"errors {sum(f.errors for f in followed)}"
    ]
    name = f"fixed {args.interval:g} s"
    return PhaseResult(name, job_results(jobs, asked, known), elapsed, notes), jobs


# --- report -------------------------------------------------------------------------------


Policy = Callable[[list[tuple[JobState, float]], int], list[float]]


def job_states(plan: Sequence[Sequence[Any]]) -> list[tuple[JobState, float]]:
    """A sandbox plan (CallerIP words, seconds after submit) as faxrelay reads the words."""
    return [(STATUS.get(str(word).lower(), JobState.UNKNOWN), float(at)) for word, at in plan]


def state_at(states: list[tuple[JobState, float]], t: float) -> JobState:
    found = states[0][0]
    for state, at in states:
        if t >= at:
            found = state
    return found


def asks(
    states: list[tuple[JobState, float]], first: float, after: Callable[..., float]
) -> list[float]:
    """The poll times (s after submit) of a policy up to the one that sees the final state:
    ``after(t, state, seen)`` is the gap after a poll at ``t`` that saw ``state``."""
    times, t, seen = [], first, []
    while True:
        times.append(t)
        state = state_at(states, t)
        if state.final or len(times) > 10_000:
            return times
        seen.append((t, state))
        t += after(t, state, seen)


def fixed_policy(states: list[tuple[JobState, float]], pages: int) -> list[float]:
    return asks(states, 15.0, lambda t, state, seen: 15.0)


def backoff_policy(states: list[tuple[JobState, float]], pages: int) -> list[float]:
    """faxrelay's CallerIP polls before ``schedule``: 10 s, then doubling to 300 s (no jitter)."""
    backoff = Backoff(first=CallerIP.poll_first, cap=CallerIP.poll_cap, jitter=0.0)
    return asks(states, CallerIP.poll_first, lambda t, state, seen: backoff.delay(len(seen)))


def schedule_policy(states: list[tuple[JobState, float]], pages: int) -> list[float]:
    """faxrelay's ``schedule`` with no delay of its own (the rules follow.py applies)."""

    def after(t: float, state: JobState, seen: list[tuple[float, JobState]]) -> float:
        queued = max((at for at, s in seen if s == JobState.QUEUED), default=None)
        sending = min(
            (at for at, s in seen if s == JobState.SENDING and (queued is None or at > queued)),
            default=None,
        )
        job = schedule.Job(0.0, pages, queued, sending, seen[-2][0] if len(seen) > 1 else None)
        return schedule.next_poll(
            state, t, job, poll_first=CallerIP.poll_first, poll_cap=CallerIP.poll_cap, scale=1.0
        )

    return asks(states, schedule.first_poll(pages, 1.0), after)


def first_poll_notes(
    phase: PhaseResult, jobs: dict[str, dict[str, Any]], pages_of: dict[str, int], speed: float
) -> list[str]:
    """How late faxrelay's first status request ran behind its schedule (``first_poll``): any
    delay is faxrelay's own dispatch (the sweeper, the queues, a busy worker), magnified."""
    late = []
    for job in phase.jobs:
        pages = pages_of.get(jobs.get(job.job_id, {}).get("document_sha256", ""), 1)
        if job.asked:
            late.append(job.asked[0] - job.submitted_at - schedule.first_poll(pages, 1.0))
    return [
        f"first status request behind its due time (schedule.first_poll): median "
        f"{median(late):.1f} / p90 {percentile(late, 90):.1f} / max {max(late, default=0.0):.1f} "
        f"sandbox s (= {median(late) / speed:.2f} / {percentile(late, 90) / speed:.2f} / "
        f"{max(late, default=0.0) / speed:.2f} real s)"
    ]


def model_notes(jobs: dict[str, dict[str, Any]], pages_of: dict[str, int]) -> list[str]:
    """The plans both runs met, and what each policy gives for them with no delay of its own."""
    plans = [(job_states(j["plan"]), pages_of.get(j["document_sha256"], 1)) for j in jobs.values()]
    durations = [states[-1][1] for states, _ in plans]
    redialled = sum(
        1
        for states, _ in plans
        if sum(1 for a, b in itertools.pairwise(states) if b[0] == JobState.SENDING) > 1
    )
    pages = [p for _, p in plans]
    lines = [
        f"the plans: {len(plans)} jobs, pages mean {mean([float(p) for p in pages]):.1f} (median "
        f"{median([float(p) for p in pages]):.0f}, max {max(pages)}); submit -> final median "
        f"{median(durations):.0f} / p90 {percentile(durations, 90):.0f} / max "
        f"{max(durations):.0f} sandbox s; {redialled} went back to the queue for a redial",
        "each policy on these plans with no delay of its own (requests per job median / mean; "
        "lag median / p90, sandbox s):",
    ]
    for name, policy in (
        ("fixed 15 s", fixed_policy),
        ("faxrelay's old backoff (10 s doubling to 300 s)", backoff_policy),
        ("faxrelay's schedule (worker/pipeline/outbound/schedule.py)", schedule_policy),
    ):
        reqs, lags = [], []
        for states, count in plans:
            times = policy(states, count)
            reqs.append(float(len(times)))
            lags.append(times[-1] - states[-1][1])
        lines.append(
            f"  {name}: {median(reqs):.1f} / {mean(reqs):.2f}; {median(lags):.1f} / "
            f"{percentile(lags, 90):.1f}"
        )
    return lines


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values)) if values else 0.0


def report(a: PhaseResult, b: PhaseResult) -> None:
    def rows(p: PhaseResult) -> dict[str, float]:
        done = p.done
        reqs = [float(j.requests) for j in done]
        lag = [j.lag for j in done if j.lag is not None]
        return {
            "requests median": median(reqs),
            "requests p90": percentile(reqs, 90),
            "requests mean": mean(reqs),
            "requests total": float(sum(j.requests + j.extra for j in p.jobs)),
            "lag median": median(lag),
            "lag p90": percentile(lag, 90),
            "lag max": max(lag, default=0.0),
        }

    ra, rb = rows(a), rows(b)
    width = max(len(a.name), len(b.name), 10) + 2
    print()
    print(f"{'':34}{a.name:>{width}}{b.name:>{width}}{'ratio':>10}")
    for section, keys in (
        ("status requests per job", ("median", "p90", "mean", "total")),
        ("lag, sandbox seconds", ("median", "p90", "max")),
    ):
        print(section)
        prefix = "requests" if section.startswith("status") else "lag"
        for key in keys:
            x, y = ra[f"{prefix} {key}"], rb[f"{prefix} {key}"]
            ratio = f"{x / y:.2f}x" if y else "-"
            fmt = ".0f" if key == "total" else ".1f"
            print(f"  {key:32}{x:>{width}{fmt}}{y:>{width}{fmt}}{ratio:>10}")
    print()
    for p in (a, b):
        done = p.done
        detect = [j.detect_at - j.final_at for j in done if j.detect_at is not None]
        record = [
            j.known_at - j.detect_at
            for j in done
            if j.detect_at is not None and j.known_at is not None
        ]
        extra = sum(j.extra for j in p.jobs)
        print(
            f"{p.name}: {len(done)}/{len(p.jobs)} jobs known final in {p.real_seconds:.0f} s real; "
            f"lag = detect (final at sandbox -> request that saw it) median "
            f"{median(detect):.1f} / p90 {percentile(detect, 90):.1f} / max "
            f"{max(detect, default=0.0):.1f}  + record (that request -> follower's record) "
            f"median {median(record):.1f} / p90 {percentile(record, 90):.1f} / max "
            f"{max(record, default=0.0):.1f}; status requests after the final answer: {extra}"
        )
        for note in p.notes:
            print(f"  {note}")


def long_jobs_breakdown(p: PhaseResult) -> None:
    """Requests and lag by job duration: short faxes, long ones and those with redials."""
    edges = (0.0, 120.0, 300.0, 600.0, 1200.0, math.inf)
    bands = tuple(itertools.pairwise(edges))
    cells = []
    for lo, hi in bands:
        sel = [
            j for j in p.done if lo <= j.duration < hi or (hi == bands[-1][1] and j.duration >= hi)
        ]
        lag = [j.lag for j in sel if j.lag is not None]
        cells.append(
            f"{lo:.0f}-{hi:g} s: n={len(sel)} req {mean([float(j.requests) for j in sel]):.1f} "
            f"lag med {median(lag):.0f}"
        )
    print(f"  {p.name} by job duration: " + "; ".join(cells))


# --- main -------------------------------------------------------------------------------------


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def scrub_environment() -> None:
    """Children inherit this environment: no FAXRELAY_* from the caller, no proxies, and no AWS
    credentials at all. SeaweedFS turns S3 auth on when it sees AWS keys in its environment; without
    them it accepts anyone, and faxrelay's S3 client uses a placeholder pair (worker/archive.py)."""
    for name in list(os.environ):
        if name.startswith("FAXRELAY_") or name.lower().endswith("_proxy"):
            del os.environ[name]
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_SECURITY_TOKEN",
    ):
        os.environ.pop(name, None)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = f"{HOST},localhost"
    os.environ["PYTHONPATH"] = str(ROOT)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.poll", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--jobs", type=int, default=1000)
    # x5: faxrelay's own real-time work (dispatch, tasks) is magnified five times, not more; at x10
    # on a busy 2-core machine its first polls ran seconds late and the lag doubled.
    parser.add_argument("--speed", type=float, default=5.0, help="sandbox clock speed")
    parser.add_argument("--interval", type=float, default=15.0, help="baseline poll interval")
    parser.add_argument("--concurrency", type=int, default=16, help="baseline requests in flight")
    parser.add_argument("--seed", type=int, default=20240601)
    parser.add_argument(
        "--wake-grace",
        type=float,
        default=PRODUCTION_GRACE,
        help="FAXRELAY_WAKE_GRACE, real seconds (tests/system.py uses 3)",
    )
    parser.add_argument(
        "--log",
        type=Path,
        help="keep the child processes' output here (faxrelay's own in LOG.system)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    scrub_environment()
    began = time.time()
    with workdir("faxrelay-bench-poll-") as tmp:
        log_path = args.log or tmp / "children.log"
        with open(log_path, "a") as sink:
            env = dict(os.environ)
            procs: list[ManagedProcess] = []
            try:
                say("starting the sandbox (own process) and SeaweedFS ...")
                port = free_port()
                procs.append(start_sandbox(port, env, sink))
                sandbox_url = f"http://{HOST}:{port}"
                ports = SeaweedPorts.pick()
                procs.append(start_seaweed(tmp / "s3", ports, BUCKET, sink=sink))
                s3_endpoint = f"http://{HOST}:{ports.s3}"
                cmap = set_speed(sandbox_url, args.speed)
                say(
                    f"sandbox clock x{cmap.speed:g} (mapping uncertainty ±{cmap.error:.3f} "
                    f"sandbox s); {args.jobs} jobs per run, fax-shaped durations "
                    f"(sandbox.timing), seed {args.seed}"
                )
                fax, fax_jobs = run_faxrelay(args, tmp, sandbox_url, s3_endpoint, cmap, sink)
                say("fixed poller: starting ...")
                fixed, fixed_jobs = run_fixed(args, sandbox_url, cmap)
            finally:
                for proc in reversed(procs):
                    with contextlib.suppress(Exception):
                        proc.stop()
    same = plans_of(fax_jobs) == plans_of(fixed_jobs)
    pages_of = {
        hashlib.sha256(pdf).hexdigest(): count
        for count, pdf in documents(draw_pages(args.seed, args.jobs)).items()
    }
    print()
    print(
        f"bench.poll: {args.jobs} CallerIP jobs per run, fax-shaped durations (sandbox.timing; "
        f"seed {args.seed}; identical set of plans in both runs: {'yes' if same else 'NO'}), "
        f"sandbox clock x{args.speed:g}; faxrelay FAXRELAY_RETRY_SCALE={1 / args.speed:.4g}, "
        f"FAXRELAY_SWEEP_INTERVAL={PRODUCTION_SWEEP / args.speed:.4g} s real "
        f"(= {PRODUCTION_SWEEP:g} sandbox s), FAXRELAY_WAKE_GRACE={args.wake_grace:g} s real; "
        f"baseline every {args.interval:g} s, {args.concurrency} in flight"
    )
    for line in model_notes(fax_jobs, pages_of):
        print(line)
    fax.notes.extend(first_poll_notes(fax, fax_jobs, pages_of, args.speed))
    report(fax, fixed)
    for phase in (fax, fixed):
        long_jobs_breakdown(phase)
    print(f"\nwhole run: {time.time() - began:.0f} s real")
    return 0


if __name__ == "__main__":
    sys.exit(main())
