"""The chaos soak's faults, each on its own clock while the load runs.

- a worker process SIGKILLed (a pool child or a main process) every few seconds;
- beat and the web process SIGKILLed now and then;
- Redis SIGKILLed several times (the supervisor starts it again on its AOF);
- S3 stopped once, for a minute (or a third of a short run), then started again;
- provider faults through the sandbox's ``/_sandbox/faults``: 503 bursts on any operation, hangs
  past faxrelay's read timeout, late answers to submits (the job is taken, the answer lost),
  truncated and slowly dripped downloads.

Gaps are uniform in each ``(low, high)`` range, seeded. The supervisor (``chaos_system``) does
every restart; this module only breaks things.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from bench.chaos_system import ChaosSystem

# The sandbox's operation names (``sandbox/<provider>.py``) by what they do.
SUBMIT_OPS = {
    "primevox": "send",
    "ucx": "filesend",
    "voipnow": "send",
    "voipms": "sendFaxMessage",
    "callerip": "send",
}
STATUS_OPS = {
    "primevox": "status",
    "ucx": "jobstatus",
    "voipms": "getFaxMessages",
    "callerip": "status",
}
DOWNLOAD_OPS = {"primevox": "download", "ucx": "filedownload", "voipms": "getFaxMessagePDF"}
OTHER_OPS = {"ucx": "recordsget", "voipnow": "token"}
EVERY_OP = [
    (provider, op)
    for table in (SUBMIT_OPS, STATUS_OPS, DOWNLOAD_OPS, OTHER_OPS)
    for provider, op in table.items()
]


@dataclass(frozen=True)
class Plan:
    """How often each fault comes (seconds between two, uniform in the range)."""

    worker_kill: tuple[float, float] = (3.0, 8.0)  # ~110 in 10 minutes
    beat_kill: tuple[float, float] = (40.0, 80.0)
    web_kill: tuple[float, float] = (45.0, 90.0)
    redis_kill: tuple[float, float] = (35.0, 60.0)
    provider_fault: tuple[float, float] = (4.0, 10.0)
    s3_outage_at: float = 0.4  # share of the run after which S3 stops
    s3_outage: float = 60.0  # seconds S3 stays down
    hang_seconds: float = 15.0  # longer than faxrelay's read timeout in the soak
    drip_seconds: float = 20.0

    @classmethod
    def short(cls) -> Plan:
        """For a run of about a minute (``make test``): every kind of fault at least once."""
        return cls(
            worker_kill=(4.0, 7.0),
            beat_kill=(15.0, 25.0),
            web_kill=(15.0, 25.0),
            redis_kill=(10.0, 16.0),
            provider_fault=(2.0, 4.0),
            s3_outage_at=0.3,
            s3_outage=12.0,
            hang_seconds=8.0,
            drip_seconds=8.0,
        )


@dataclass
class Faults:
    system: ChaosSystem
    sandbox_url: str
    plan: Plan
    seed: int = 7
    injected: Counter[str] = field(default_factory=Counter)
    s3_window: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed + 1)
        # Provider faults take turns (in a shuffled order): a short run meets every kind.
        kinds = ["503 burst", "503 burst", "hang", "late", "truncate", "drip"]
        self.rng.shuffle(kinds)
        self.kinds = itertools.cycle(kinds)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self, seconds: float) -> None:
        """Start every clock; ``seconds`` is the length of the run (for the S3 outage)."""
        p = self.plan
        self._every(p.worker_kill, self.system.kill_worker)
        self._every(p.beat_kill, lambda: self.system.kill("beat"))
        self._every(p.web_kill, lambda: self.system.kill("web"))
        self._every(p.redis_kill, lambda: self.system.kill("redis"))
        self._every(p.provider_fault, self.provider_fault)
        outage = threading.Thread(target=self._s3_outage, args=(seconds,), daemon=True)
        outage.start()
        self.threads.append(outage)

    def finish(self) -> None:
        """Stop breaking things: the clocks stop, S3 is up again, the providers recover."""
        self.stop.set()
        for thread in self.threads:
            thread.join(self.plan.s3_outage + 120)
        httpx.delete(f"{self.sandbox_url}/_sandbox/faults", timeout=30).raise_for_status()

    def _every(self, gap: tuple[float, float], action: Callable[[], None]) -> None:
        def loop() -> None:
            while not self.stop.wait(self._uniform(gap)):
                try:
                    action()
                except Exception as exc:  # a fault that could not be injected is counted
                    self.injected[f"not injected: {type(exc).__name__}"] += 1

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _uniform(self, span: tuple[float, float]) -> float:
        with self.lock:
            return self.rng.uniform(*span)

    def _s3_outage(self, seconds: float) -> None:
        if self.stop.wait(seconds * self.plan.s3_outage_at):
            return
        started = time.time()
        self.system.stop_s3()  # SeaweedFS takes a few seconds to stop: part of the outage
        time.sleep(max(0.0, started + self.plan.s3_outage - time.time()))  # runs its full length
        self.system.start_s3()
        self.s3_window = (started, time.time())

    def provider_fault(self) -> None:
        p = self.plan
        with self.lock:
            kind = next(self.kinds)
            if kind == "503 burst":
                provider, op = self.rng.choice(EVERY_OP)
                fault = {"kind": "error", "status": 503, "count": self.rng.randint(5, 20)}
            elif kind == "hang":
                table = self.rng.choice([SUBMIT_OPS, STATUS_OPS, DOWNLOAD_OPS])
                provider = self.rng.choice(list(table))
                op = table[provider]
                fault = {"kind": "hang", "seconds": p.hang_seconds, "count": self.rng.randint(1, 2)}
            elif kind == "late":
                provider = self.rng.choice(list(SUBMIT_OPS))
                op = SUBMIT_OPS[provider]
                fault = {"kind": "late", "seconds": p.hang_seconds, "count": 1}
            else:
                provider = self.rng.choice(list(DOWNLOAD_OPS))
                op = DOWNLOAD_OPS[provider]
                count = self.rng.randint(1, 4) if kind == "truncate" else 1
                fault = {"kind": kind, "seconds": p.drip_seconds, "count": count}
        httpx.post(
            f"{self.sandbox_url}/_sandbox/faults",
            json={"provider": provider, "operation": op, **fault},
            timeout=10,
        ).raise_for_status()
        self.injected[kind] += 1
        self.system.note(f"provider fault: {kind} on {provider} {op} {fault}")
