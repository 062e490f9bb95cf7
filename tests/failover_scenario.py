"""Webhooks and sends streaming through a Redis Sentinel failover: the scenario that
``tests/test_failover.py`` checks and ``bench/failover.py`` measures.

faxrelay's web app, worker and beat run against a ``SentinelCluster`` (``tests.sentinel``). Two
threads play a provider and an API client: one announces sandbox faxes by webhook, the other sends
faxes with an ``Idempotency-Key``; each retries a request until it is acknowledged (200 / 202), as
providers and careful clients do. When enough are acknowledged the primary is SIGKILLed; the
sentinels promote the replica; the killed node is started again as a supervisor would, and the
streams go on until enough are acknowledged after the kill. Then every acknowledged webhook must
have its record (and reach ``archived``) and every acknowledged send its record (and be submitted
to the provider exactly once); ``Outcome`` says how many did not.
"""

from __future__ import annotations

import base64
import itertools
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from sandbox.pdf import make_pdf
from tests.sentinel import Node, SentinelCluster
from tests.system import API_TOKEN, System, sandbox_fire, wait_for
from worker.domain import FaxRecord
from worker.store.records import FaxStore

# Sends go to CallerIP (the "ci" account of tests.system), to a destination of their own each, so
# the sandbox's submits tell how often each one was submitted.
SEND_ACCOUNT = "ci"
SUBMITTED = ("submitted", "sending", "delivered")


@dataclass
class SentinelSystem(System):
    """tests.system's System against a SentinelCluster instead of its own Redis."""

    cluster: SentinelCluster | None = None

    def start_redis(self) -> None:
        pass  # the cluster runs already; the settings name its sentinels (env_overrides)

    @property
    def redis_url(self) -> str:
        """The primary the sentinels name now (for the test's own look-ups)."""
        assert self.cluster is not None
        return self.cluster.url()


@dataclass
class Acked:
    key: str  # the provider's fax id (webhooks) or the destination (sends)
    fax_id: str
    at: float  # time.monotonic() of the acknowledgement


@dataclass
class Streams:
    """The provider and the API client, each in its own thread, until ``stop``."""

    system: System
    pace: float = 0.05  # seconds between new requests of one stream
    webhook_threads: int = 1  # providers announcing faxes at once
    webhooks: list[Acked] = field(default_factory=list)
    sends: list[Acked] = field(default_factory=list)
    answers: Counter[str] = field(default_factory=Counter)  # "webhook 503", "send error" …
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Streams:
        for target in (*[self._webhooks] * self.webhook_threads, self._sends):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)
        return self

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(60)

    def acked_since(self, moment: float) -> int:
        return sum(1 for a in (*self.webhooks, *self.sends) if a.at > moment)

    def longest_stall(self, since: float) -> float:
        """The longest time from ``since`` on without an acknowledgement."""
        times = sorted(a.at for a in (*self.webhooks, *self.sends) if a.at > since)
        edges = [since, *times]
        return max((b - a for a, b in itertools.pairwise(edges)), default=0.0)

    def _webhooks(self) -> None:
        sandbox = self.system.sandbox_url
        while not self.stop.is_set():
            created = httpx.post(
                f"{sandbox}/_sandbox/inbound", json={"provider": "primevox"}, timeout=30
            )
            created.raise_for_status()
            fax = created.json()
            while not self.stop.is_set():  # a provider retries until it gets its 200
                answer = sandbox_fire(
                    sandbox,
                    provider="primevox",
                    kind="inbound",
                    url=self.system.webhook_url("pv"),
                    id=fax["id"],
                )
                self.answers[f"webhook {answer['status'] or 'error'}"] += 1
                if answer["status"] == 200:
                    fax_id = answer["headers"]["faxrelay-fax-id"]
                    self.webhooks.append(Acked(fax["id"], fax_id, time.monotonic()))
                    break
                time.sleep(0.2)
            time.sleep(self.pace)

    def _sends(self) -> None:
        with httpx.Client(
            base_url=self.system.web_url,
            headers={"authorization": f"Bearer {API_TOKEN}"},
            timeout=30,
        ) as api:
            n = 0
            while not self.stop.is_set():
                n += 1
                to = f"469555{n:04d}"
                key = uuid.uuid4().hex
                document = base64.b64encode(make_pdf(1, 0, label=f"failover {key}")).decode()
                body = {"account": SEND_ACCOUNT, "to": to, "document": {"base64": document}}
                while not self.stop.is_set():  # the same key on every retry: one fax
                    try:
                        answer = api.post("/v1/faxes", json=body, headers={"idempotency-key": key})
                    except httpx.HTTPError:
                        self.answers["send error"] += 1
                        time.sleep(0.2)
                        continue
                    self.answers[f"send {answer.status_code}"] += 1
                    if answer.status_code in (200, 202):
                        self.sends.append(Acked(to, answer.json()["id"], time.monotonic()))
                        break
                    time.sleep(0.2)
                time.sleep(self.pace * 4)


@dataclass
class Outcome:
    min_replicas: int
    webhooks: int = 0  # acknowledged
    sends: int = 0
    lost_webhooks: list[str] = field(default_factory=list)  # acknowledged, no record after
    lost_sends: list[str] = field(default_factory=list)
    not_archived: list[str] = field(default_factory=list)
    not_submitted: list[str] = field(default_factory=list)
    submitted_twice: list[str] = field(default_factory=list)
    failover_s: float = 0.0  # SIGKILL → the sentinels name the new primary
    failovers: int = 0  # more than one: the sentinels failed over again (a busy new primary)
    stall_s: float = 0.0  # the longest time without an acknowledgement, from the SIGKILL on
    worker_restarts: int = 0  # by the supervisor (a worker that exited or wedged)
    stuck: list[str] = field(default_factory=list)  # a few of those not archived / submitted
    refused_not_replicated: bool = False  # an API send got 503 not_replicated meanwhile
    answers: Counter[str] = field(default_factory=Counter)

    @property
    def lost(self) -> int:
        return len(self.lost_webhooks) + len(self.lost_sends)

    def summary(self) -> str:
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(self.answers.items()))
        return (
            f"MIN_REPLICAS={self.min_replicas}: acknowledged {self.webhooks} webhooks and "
            f"{self.sends} sends; lost {len(self.lost_webhooks)} webhooks and "
            f"{len(self.lost_sends)} sends; not archived {len(self.not_archived)}, not submitted "
            f"{len(self.not_submitted)}, submitted twice {len(self.submitted_twice)}; failover "
            f"{self.failover_s:.1f} s ({self.failovers} in all), no acknowledgement for {self.stall_s:.1f} s at most after "
            f"the kill; worker restarts {self.worker_restarts}; answers: {answers}"
            + (f"; stuck: {'; '.join(self.stuck)}" if self.stuck else "")
        )


def run(
    system: SentinelSystem,
    cluster: SentinelCluster,
    *,
    before: int,
    after: int,
    restart_as_replica: bool,
    settle: float = 60.0,
    webhook_threads: int = 1,
    log: IO[str] | None = None,
) -> Outcome:
    """Stream, kill the primary once ``before`` webhooks are acknowledged, start it again after
    the failover, stream until ``after`` more are acknowledged, then check every one."""
    outcome = Outcome(int(system.env_overrides.get("FAXRELAY_REDIS_MIN_REPLICAS", "0")))
    started = time.monotonic()

    def phase(what: str) -> None:
        if log is not None:
            log.write(f"[failover] {time.monotonic() - started:6.1f} s  {what}\n")

    streams = Streams(system, webhook_threads=webhook_threads).start()
    try:
        # Generous bounds: a loaded machine announces a webhook a second or slower.
        wait_for(lambda: len(streams.webhooks) >= before, 60 + 2 * before, f"{before} webhooks")
        old = cluster.primary()
        phase(f"{before} webhooks acknowledged; SIGKILL {old.name}")
        killed_at = time.monotonic()
        cluster.kill(old)
        new = cluster.wait_failover(old.port, 30)
        outcome.failover_s = time.monotonic() - killed_at
        phase(f"failover: the sentinels name {new.name}")
        if outcome.min_replicas:
            # The new primary has no replica yet: nothing can be acknowledged.
            outcome.refused_not_replicated = _refused_not_replicated(system)
            phase(f"a send refused 503 not_replicated: {outcome.refused_not_replicated}")
        _restart(cluster, old, new, as_replica=restart_as_replica)
        phase(f"{old.name} started again")
        cluster.wait_settled(60)
        outcome.failovers = cluster.failovers()
        phase("the primary has a replica online")
        wait_for(lambda: streams.acked_since(killed_at) >= after, 90 + 2 * after, f"{after} acks")
        outcome.stall_s = streams.longest_stall(killed_at)
        phase(f"{after} acknowledged after the kill")
    finally:
        streams.join()
    outcome.webhooks, outcome.sends = len(streams.webhooks), len(streams.sends)
    outcome.answers = streams.answers
    _check(system, streams, outcome, settle)
    phase("checked")
    if log is not None:
        log.write(f"[failover] {outcome.summary()}\n")
    return outcome


def _refused_not_replicated(system: System) -> bool:
    """A send made now is refused 503 not_replicated (once the web app sees the new primary)."""
    body = {
        "account": SEND_ACCOUNT,
        "to": "4695559999",
        "document": {"base64": base64.b64encode(make_pdf(1, 0, label="probe")).decode()},
    }
    key = uuid.uuid4().hex

    def refused() -> bool:
        with system.api() as api:
            answer = api.post("/v1/faxes", json=body, headers={"idempotency-key": key})
        code = answer.json().get("error", {}).get("code") if answer.status_code == 503 else ""
        return code == "not_replicated"

    try:
        return wait_for(refused, 20, "a 503 not_replicated")
    except AssertionError:
        return False


def _restart(cluster: SentinelCluster, old: Node, new: Node, *, as_replica: bool) -> None:
    """Start the killed node again: as it was (a primary, with its own data; the sentinels make
    it a replica of the new one), or straight as the new primary's replica."""
    old.replica_of = new.port if as_replica else 0
    cluster.start_node(old)


def _check(system: System, streams: Streams, outcome: Outcome, settle: float) -> None:
    store = FaxStore.from_url(system.redis_url)
    try:
        for acked in streams.webhooks:
            if store.find(acked.fax_id) is None:
                outcome.lost_webhooks.append(acked.fax_id)
        for acked in streams.sends:
            if store.find(acked.fax_id) is None:
                outcome.lost_sends.append(acked.fax_id)
        lost = set(outcome.lost_webhooks) | set(outcome.lost_sends)
        deadline = time.monotonic() + settle

        def pending() -> list[Acked]:
            left = []
            for acked in streams.webhooks:
                record = store.find(acked.fax_id)
                if acked.fax_id not in lost and not _has(record, ("archived",)):
                    left.append(acked)
            for acked in streams.sends:
                record = store.find(acked.fax_id)
                if acked.fax_id not in lost and not _has(record, SUBMITTED):
                    left.append(acked)
            return left

        left = pending()
        while left and time.monotonic() < deadline:
            time.sleep(0.5)
            # As a supervisor (compose, systemd, faxrelay up) restarts a worker that exited or
            # wedged on a lost broker connection (config.embedded.CELERY_FATAL).
            outcome.worker_restarts += system.ensure_worker()
            left = pending()
        webhook_ids = {a.fax_id for a in streams.webhooks}
        for acked in left:
            kind = outcome.not_archived if acked.fax_id in webhook_ids else outcome.not_submitted
            kind.append(acked.fax_id)
        for acked in left[:3]:
            record = store.find(acked.fax_id)
            last = record.history[-1] if record is not None and record.history else {}
            state = record.state if record is not None else "gone"
            outcome.stuck.append(f"{acked.fax_id} {state} {last.get('note', '')}")
        submits = Counter(
            r["fields"].get("number")
            for r in httpx.get(
                f"{system.sandbox_url}/_sandbox/requests",
                params={"provider": "callerip", "operation": "send"},
                timeout=30,
            ).json()
        )
        for acked in streams.sends:
            if submits[acked.key] > 1:
                outcome.submitted_twice.append(acked.fax_id)
    finally:
        store.redis.close()


def _has(record: FaxRecord | None, states: tuple[str, ...]) -> bool:
    return record is not None and record.state in states


def start_system(
    tmp: Path,
    cluster: SentinelCluster,
    *,
    s3_endpoint: str,
    sandbox_url: str,
    bucket: str,
    min_replicas: int,
    extra_env: dict[str, Any] | None = None,
) -> SentinelSystem:
    tmp.mkdir(parents=True, exist_ok=True)
    env = {**cluster.settings_env(min_replicas), **(extra_env or {})}
    system = SentinelSystem(
        tmp, s3_endpoint, sandbox_url, bucket, env_overrides=env, cluster=cluster
    )
    system.start()
    return system
