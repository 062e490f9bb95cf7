"""Chaos soak: faxrelay under sustained faults, checked from outside. Nothing lost, nothing sent twice.

``python -m bench.chaos [--minutes 3] [--seed 7] [--rate 1] [--fast] [--plant-loss] [--keep]``

Starts faxrelay as separate processes, as a deployment runs them (the web app, a ``worker`` and an
``archiver`` process of ``config.workers``, beat) on its own Valkey (AOF ``appendfsync always``)
and SeaweedFS, with the provider sandbox as the five providers, all on free loopback ports
(``bench.chaos_system``). For ``--minutes`` it sends a steady mix of inbound webhooks, faxes only
reconcile finds, HTTP and queue-driven sends and cancels (``bench.chaos_load``) while it SIGKILLs a
worker process every few seconds, beat, the web process and Valkey now and then, stops S3 for a
minute and makes the providers fail, hang, answer late and cut or drip downloads
(``bench.chaos_faults``); a supervisor restarts whatever exits, as systemd or compose would. Then it
stops breaking things, waits (bounded) until nothing moves any more, and checks from outside
(``bench.chaos_check``), printing a table. Exit status 1 on any finding.

Timings are faxrelay's defaults (lease, wake grace, sweep interval), with every retry and poll delay
shortened tenfold (``FAXRELAY_RETRY_SCALE=0.1``) and a 10 s read timeout towards the providers, so
that a run settles in minutes. ``--fast`` uses the end-to-end tests' short lease and retry scale
(0.02) with a 10 s wake grace, as ``make test``'s one-minute version does. ``--plant-loss`` deletes
an acknowledged record and another fax's archived object before the check, which must then report
both as LOST.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.archive import isolate_environment
from bench.chaos_check import CATEGORIES, Report, evaluate, plant_loss
from bench.chaos_faults import Faults, Plan
from bench.chaos_ledger import Ledger, Subscriber
from bench.chaos_load import Endpoints, Load
from bench.chaos_observe import (
    Snapshot,
    api_record,
    api_records,
    busy,
    inbound_objects,
    message_trail,
    outbox,
    queue_depths,
    sandbox_jobs,
    stored_fax_id,
)
from bench.chaos_system import ChaosSystem
from bench.common import percentile
from config.celery_app import app as faxrelay_celery
from config.settings import Settings
from tests.system import API_TOKEN, SUBSCRIBER_SECRET
from worker.io.archive import s3_client

BUCKET = "faxrelay-chaos"
RETRY_SCALE = 0.1
READ_TIMEOUT = 10.0


@dataclass
class Options:
    seconds: float = 180.0
    seed: int = 7
    rate: float = 1.0  # multiplies every action's average rate (bench.chaos_load.RATES)
    fast: bool = False  # the end-to-end tests' timings
    plan: Plan = field(default_factory=Plan)
    plant_loss: bool = False
    concurrency: int | None = None  # threads per worker process (None: config.workers' defaults)


def _default(name: str) -> float:
    value = Settings.model_fields[name].default
    assert isinstance(value, int | float)
    return float(value)


@dataclass
class Timings:
    """What the system runs with, and the bounds of settling that follow from it."""

    lease: float
    wake_grace: float
    sweep: float
    retry_scale: float
    reconcile: int  # the UCX and voip.ms accounts' reconcile_interval
    read_timeout: float
    # Providers whose faxes are held with no webhook at all. Beat sends the reconcile sweep once
    # a minute: a one-minute run cannot wait for it, so ``--fast`` holds faxes at voip.ms only,
    # whose bare callback (the load's last action) makes faxrelay list the account at once.
    held: tuple[str, ...]
    backlog: float  # settling may take this much longer than the timings alone say

    @classmethod
    def for_options(cls, options: Options) -> Timings:
        if options.fast:
            # tests.system's short lease and retry scale, with a longer wake grace and sweep:
            # the tests' 3 s grace lets the sweeper send wake-ups faster than workers being
            # killed every few seconds drain them, and the queues fill with duplicates.
            return cls(6.0, 10.0, 1.0, 0.02, 4, 5.0, ("voipms",), 30.0)
        return cls(
            _default("lease_seconds"),
            _default("wake_grace"),
            _default("sweep_interval"),
            RETRY_SCALE,
            20,
            READ_TIMEOUT,
            ("ucx", "voipms"),
            300.0,
        )

    def env(self) -> dict[str, str]:
        return {
            "FAXRELAY_LEASE_SECONDS": str(self.lease),
            "FAXRELAY_WAKE_GRACE": str(self.wake_grace),
            "FAXRELAY_SWEEP_INTERVAL": str(self.sweep),
            "FAXRELAY_RETRY_SCALE": str(self.retry_scale),
            "FAXRELAY_READ_TIMEOUT": str(self.read_timeout),
            "FAXRELAY_CONNECT_TIMEOUT": "5",
        }

    @property
    def reconcile_wait(self) -> float:
        """The longest a held fax waits for a reconcile to list it."""
        if "ucx" not in self.held:
            return 2.0 * self.reconcile  # the bare callback's reconcile runs at once
        every = faxrelay_celery.conf.beat_schedule.get("reconcile", {}).get("schedule", 60.0)
        return float(every) + self.reconcile

    @property
    def settle_limit(self) -> float:
        """Long enough for a record stranded by the last kill (its lease and a wake grace), a
        reconcile, the retries after the outages, and the backlog the faults left (five
        minutes outside ``--fast``); waiting stops earlier once nothing moves any more."""
        waits = self.lease + self.wake_grace + self.reconcile_wait + 240 * self.retry_scale
        return waits + self.backlog

    @property
    def quiet(self) -> float:
        """Nothing changed for this long (and nothing is on its way): what is missing stays so."""
        return self.reconcile_wait + 4 * self.sweep + self.wake_grace + 5

    def describe(self) -> str:
        return (
            f"lease {self.lease:g} s, wake grace {self.wake_grace:g} s, sweep {self.sweep:g} s, "
            f"retry scale {self.retry_scale:g}, reconcile every {self.reconcile} s, "
            f"provider read timeout {self.read_timeout:g} s"
        )


class Chaos:
    """One soak: ``start``, ``run``, ``settle``, ``check`` (and ``plant_loss``), ``stop``."""

    def __init__(self, options: Options, tmp: Path, out: IO[str]) -> None:
        self.options, self.tmp, self.out = options, tmp, out
        self.timings = Timings.for_options(options)
        self.ledger = Ledger()
        self.system: ChaosSystem | None = None
        self.subscriber: Subscriber | None = None
        self.load_seconds = 0.0
        self.queues_at_end: dict[str, int] = {}
        self.last_jobs: list[dict[str, Any]] = []

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    # --- the run -------------------------------------------------------------------------
    def start(self) -> None:
        started = time.monotonic()
        self.subscriber = Subscriber(SUBSCRIBER_SECRET)
        subscriber = (
            f'\n[[subscribers]]\nurl = "{self.subscriber.url}"\nsecret = "{SUBSCRIBER_SECRET}"\n'
        )
        self.system, self.sandbox_url = ChaosSystem.create(
            self.tmp,
            BUCKET,
            self.tmp / "servers.log",
            extra_config=subscriber,
            env_overrides=self.timings.env(),
            appendfsync="always",
            reconcile_interval=self.timings.reconcile,
            concurrency=self.options.concurrency,
            rng=random.Random(self.options.seed),
        )
        self.system.start()
        self.system.supervise()
        self.s3 = s3_client(self.system.s3_endpoint, timeout=10)
        self.celery = self.system.control_app()
        endpoints = Endpoints(
            self.system.web_url, self.sandbox_url, API_TOKEN, self.system.webhook_url, BUCKET
        )
        self.load = Load(
            endpoints, self.ledger, self.celery, self.s3, rate=self.options.rate,
            seed=self.options.seed, held=self.timings.held,
        )  # fmt: skip
        self.faults = Faults(self.system, self.sandbox_url, self.options.plan, self.options.seed)
        workers = ", ".join(
            k.name if k.module else f"{k.name} x{self.options.concurrency or k.concurrency} threads"
            for k in self.system.kinds
        )
        self.say(
            f"started Valkey (AOF always), SeaweedFS, the sandbox, web, {workers}, beat "
            f"in {time.monotonic() - started:.0f} s; {self.timings.describe()}"
        )

    def run(self) -> None:
        """The load and the faults for ``options.seconds``; then the faults stop and the load's
        retries (providers re-sending unanswered webhooks) run out."""
        assert self.system is not None
        seconds = self.options.seconds
        stop = threading.Event()
        reporter = threading.Thread(target=self._progress, args=(stop,), daemon=True)
        reporter.start()
        started = time.monotonic()
        self.faults.start(seconds)
        try:
            self.load.run(seconds, stop)
        finally:
            self.load_seconds = time.monotonic() - started
            stop.set()
            self.faults.finish()
        self.load.nudge_reconcile()
        self.load.drain(60.0)
        self.load.close()
        self.say(f"load and faults done after {time.monotonic() - started:.0f} s; settling")

    def _progress(self, stop: threading.Event) -> None:
        assert self.system is not None
        started = time.monotonic()
        while not stop.wait(30):
            counts = self.ledger.counts
            self.say(
                f"  {time.monotonic() - started:4.0f} s: webhooks 200 {counts['webhook 200']}, "
                f"sends 2xx {counts['http send 202'] + counts['http send 200']}, queue sends "
                f"{counts['queue send published']}, kills {sum(self.system.kills.values())}, "
                f"restarts {sum(self.system.restarts.values())}"
            )

    def snapshot(self, objects: bool) -> Snapshot:
        """What faxrelay's API, the sandbox, the subscriber (and, with ``objects``, the bucket
        and the system's log) say now."""
        assert self.system is not None and self.subscriber is not None
        records = list(api_records(self.system.web_url, API_TOKEN))
        recorded = {r["sha256"] for r in records if r["direction"] == "outbound"}
        with self.ledger.lock:
            missing = [
                s.task_id
                for s in self.ledger.sends.values()
                if s.task_id and s.accepted_at and s.sha256 not in recorded
            ]
        log = self.system.log_path if objects else None
        redis_url = self.system.redis_url
        trail = message_trail(redis_url, missing, log)
        # A message handed back after the visibility timeout may make its record while the
        # listing above was being read: the task's stored result names it.
        for task_id, said in list(trail.items()):
            fax_id = stored_fax_id(said)
            late = api_record(self.system.web_url, API_TOKEN, fax_id) if fax_id else None
            if late is not None:
                records.append(late)
                del trail[task_id]
        return Snapshot(
            records,
            sandbox_jobs(self.sandbox_url),
            set(self.subscriber.seen),
            inbound_objects(self.s3, BUCKET) if objects else None,
            trail,
            outbox(redis_url) if objects else {},
            queue_depths(redis_url) if objects else {},
        )

    def settle(self) -> float:
        """Wait until every record is final and every owed event came, or until nothing has
        moved for ``Timings.quiet`` seconds (what is missing then stays missing), or at most
        ``Timings.settle_limit``; returns the seconds waited."""
        assert self.system is not None
        started = time.monotonic()
        limit, quiet = self.timings.settle_limit, self.timings.quiet
        last: tuple[int, ...] | None = None
        changed = started
        while time.monotonic() - started < limit:
            with contextlib.suppress(Exception):  # a part still restarting: look again
                if not busy(self.system.web_url, API_TOKEN):
                    snap = self.snapshot(objects=False)
                    report = evaluate(self.ledger, snap, self.faults.s3_window)
                    if report.complete:
                        break
                    now = (len(snap.records), len(snap.events), len(report.findings))
                    if now != last:
                        last, changed = now, time.monotonic()
                    elif time.monotonic() - changed >= quiet:
                        break
            time.sleep(3)
        return time.monotonic() - started

    def check(self) -> Report:
        snap = self.snapshot(objects=True)
        self.queues_at_end = snap.queues
        self.last_jobs = snap.jobs
        return evaluate(self.ledger, snap, self.faults.s3_window)

    def write_books(self, path: Path, report: Report) -> None:
        """The soak's books as JSON, for a post-mortem once the sandbox is gone: every fax the
        providers held, every send (without its document), every job the sandbox took, and
        every finding."""
        with self.ledger.lock:
            books = {
                "inbound": [asdict(f) for f in self.ledger.inbound.values()],
                "sends": [
                    {k: v for k, v in asdict(s).items() if k != "body"}
                    for s in self.ledger.sends.values()
                ],
                "jobs": self.last_jobs,
                "s3_outage": self.faults.s3_window,
                "findings": [asdict(f) for f in report.findings],
            }
        path.write_text(json.dumps(books, indent=1))

    def plant_loss(self) -> list[str]:
        assert self.system is not None
        snap = self.snapshot(objects=False)
        return plant_loss(self.ledger, snap, self.system.redis_url, self.s3, BUCKET)

    def stop(self) -> None:
        if self.system is not None:
            self.system.stop()
        if self.subscriber is not None:
            self.subscriber.close()

    # --- the table -------------------------------------------------------------------------
    def table(self, report: Report, settled: float, planted: Sequence[str] = ()) -> str:
        assert self.system is not None and self.subscriber is not None
        s, counts = self.system, self.ledger.counts
        rows: list[tuple[str, str]] = []

        def listing(counter: Counter[str]) -> str:
            total = sum(counter.values())
            return f"{total}: " + ", ".join(f"{k} {v}" for k, v in sorted(counter.items()))

        rows.append(("kills", listing(s.kills)))
        rows.append(("restarts", listing(s.restarts)))
        rows.append((
            "outage seconds",
            ", ".join(
                f"{part} {s.outage_seconds(part):.1f} ({len(s.windows(part))}x)"
                for part in ("redis", "s3", "web")
            ),
        ))  # fmt: skip
        rows.append(("provider faults", listing(self.faults.injected)))
        other = sum(
            v
            for k, v in counts.items()
            if k.startswith("webhook ") and k not in ("webhook 200", "webhook 503")
        )
        with self.ledger.lock:
            never = sum(1 for f in self.ledger.inbound.values() if f.refusals and not f.acks)
            held = sum(1 for f in self.ledger.inbound.values() if f.how.endswith("no webhook"))
        rows.append((
            "webhooks",
            f"acknowledged {counts['webhook 200']}, 503'd {counts['webhook 503']}, "
            f"other answers or none {other} (faxes never acknowledged: {never})",
        ))  # fmt: skip
        rows.append(
            ("inbound faxes owed", f"{report.owed_faxes} (held for reconcile only: {held})")
        )
        states = ", ".join(f"{k} {v}" for k, v in sorted(report.outbound_states.items()))
        rows.append((
            "sends accepted",
            f"{sum(report.accepted_sends.values())} (http {report.accepted_sends['http']}, queue "
            f"{report.accepted_sends['queue']}); {states} ({report.unknown_sent_once} of the "
            "unknown went out once)",
        ))  # fmt: skip
        for category in CATEGORIES:
            if category == "EVENTS MISSING":
                continue
            rows.append((category, _by_kind(report, category)))
        rows.append((
            "events missing",
            f"{_by_kind(report, 'EVENTS MISSING')} of {report.events_owed} owed, "
            f"{report.events_pending} of them still in faxrelay's outbox "
            f"({self.subscriber.deliveries} deliveries, {self.subscriber.forged} badly signed, "
            f"{self.subscriber.cut_off} cut off by a kill)",
        ))  # fmt: skip
        every = [t for t, _ in report.archive_times]
        outside = [t for t, during in report.archive_times if not during]
        rows.append((
            "time to archive",
            f"p50 {percentile(every, 50):.1f} s, p99 {percentile(every, 99):.1f} s, worst "
            f"{max(every, default=0):.1f} s; worst outside the S3 outage "
            f"{max(outside, default=0):.1f} s",
        ))  # fmt: skip
        slowest = sorted(report.slow_outside, reverse=True)[:3]
        if slowest:
            rows.append((
                "slowest outside it",
                "; ".join(f"{seconds:.1f} s {what}" for seconds, what in slowest),
            ))  # fmt: skip
        waiting = ", ".join(f"{q} {n}" for q, n in self.queues_at_end.items() if n) or "empty"
        rows.append(("settled", f"{settled:.0f} s after the load; broker then: {waiting}"))
        failures = report.failures
        verdict = "OK" if not failures else f"FAILED: {len(failures)} findings"
        rows.append(("verdict", verdict))
        lines = [
            f"chaos soak: {self.load_seconds / 60:.1f} min of load, seed {self.options.seed}, "
            f"rate x{self.options.rate:g}; {self.timings.describe()}",
            *(f"  {label:<20}{value}" for label, value in rows),
        ]
        if planted:
            lines.append(
                f"planted losses: record {planted[0]} deleted, object {planted[1]} deleted"
            )
        if report.findings:
            lines.append("findings:")
            shown: Counter[str] = Counter()
            # By category; within one, what is gone before what is only late or parked.
            order = {category: n for n, category in enumerate(CATEGORIES)}
            ranked = sorted(
                report.findings,
                key=lambda f: (order.get(f.category, 99), f.parked or f.pending),
            )
            for finding in ranked:
                shown[finding.category] += 1
                if shown[finding.category] <= 25:
                    lines.append(f"  {finding.category} ({finding.kind}): {finding.what}")
            for category, n in shown.items():
                if n > 25:
                    lines.append(f"  … and {n - 25} more {category}")
        return "\n".join(lines)


def _by_kind(report: Report, category: str) -> str:
    kinds = Counter(f.kind for f in report.findings if f.category == category)
    total = sum(kinds.values())
    if not total:
        return "0"
    parked = sum(1 for f in report.findings if f.category == category and f.parked)
    return (
        f"{total} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items()))
        + (
            f"; {parked} of them parked in the broker until the visibility timeout, not failures"
            if parked
            else ""
        )
        + ")"
    )


def soak(options: Options, out: IO[str], keep: bool = False) -> int:
    """One whole soak; returns the exit status (1 on any finding)."""
    tmp = Path(tempfile.mkdtemp(prefix="faxrelay-chaos-"))
    chaos = Chaos(options, tmp, out)
    try:
        chaos.start()
        chaos.run()
        settled = chaos.settle()
        planted = chaos.plant_loss() if options.plant_loss else []
        report = chaos.check()
        print(chaos.table(report, settled, planted), file=out, flush=True)
        if keep:
            chaos.write_books(tmp / "chaos-books.json", report)
        return 1 if report.failures else 0
    finally:
        chaos.stop()
        if keep:
            print(
                f"logs and data kept in {tmp} (system/system.log, servers.log, chaos-books.json; "
                "system/redis holds Valkey's AOF)",
                file=out,
            )
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="minutes of load (default 3)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--rate", type=float, default=1.0, help="multiplies the load's rates")
    parser.add_argument("--fast", action="store_true", help="the end-to-end tests' timings")
    parser.add_argument(
        "--plant-loss", action="store_true", help="delete a record and an object; must FAIL"
    )
    parser.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    args = parser.parse_args()
    isolate_environment()
    seconds = args.minutes * 60
    options = Options(
        seconds=seconds,
        seed=args.seed,
        rate=args.rate,
        fast=args.fast,
        plan=Plan.short() if seconds < 150 else Plan(),
        plant_loss=args.plant_loss,
    )
    sys.exit(soak(options, sys.stdout, keep=args.keep))


if __name__ == "__main__":
    main()
