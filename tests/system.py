"""The whole system for end-to-end tests: its own Redis, the shared SeaweedFS, the sandbox, and the
web app, a Celery worker and beat as real child processes.

Settings shrink every delay (``retry_scale``, a sub-second sweep) so that retries, sweeps and
leases play out in seconds, but the code paths are the production ones.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import redis

from config.embedded import CELERY_FATAL, ManagedProcess, free_port, start_redis, wait_until
from config.queues import WORKER_QUEUES, WORKER_READY_KEY
from sandbox import callerip as sb_callerip
from sandbox import primevox as sb_primevox
from sandbox import ucx as sb_ucx
from sandbox import voipms as sb_voipms
from sandbox import voipnow as sb_voipnow
from worker.domain import FaxRecord
from worker.store.records import FaxStore

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent
WEBHOOK_TOKEN = "test-webhook-token-8c1f"
API_TOKEN = "test-api-token-2b7d"
EVENT_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SUBSCRIBER_SECRET = "whsec_c3Vic2NyaWJlci1zZWNyZXQtZm9yLXRlc3Rz"


def wait_for(check: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def accounts_toml(sandbox_url: str, extra: str = "", reconcile_interval: int = 0) -> str:
    pv, ucx, vn, vm, ci = sb_primevox, sb_ucx, sb_voipnow, sb_voipms, sb_callerip
    return f"""
[accounts.pv]
provider = "primevox"
base_url = "{sandbox_url}/primevox"
webhook_token = "{WEBHOOK_TOKEN}"
auth = "{pv.VALID_AUTH}"
container_id = "{pv.VALID_CONTAINER}"
box_id = "{pv.VALID_BOX}"

[accounts.pv-fallback]
provider = "primevox"
base_url = "{sandbox_url}/primevox"
webhook_token = "{WEBHOOK_TOKEN}"
auth = "{pv.VALID_AUTH}"
container_id = "{pv.VALID_CONTAINER}"
box_id = "{pv.VALID_BOX}"
fallback_account = "ci"

[accounts.ucx]
provider = "ucx"
base_url = "{sandbox_url}/ucx"
webhook_token = "{WEBHOOK_TOKEN}"
client_id = "{ucx.CLIENT_ID}"
client_secret = "{ucx.CLIENT_SECRET}"
fax_id = "{ucx.FAX_ID}"
reconcile_interval = {reconcile_interval}

[accounts.vn]
provider = "voipnow"
base_url = "{sandbox_url}/voipnow"
client_id = "{vn.CLIENT_ID}"
client_secret = "{vn.CLIENT_SECRET}"
extension = "{vn.EXTENSION}"

[accounts.vm]
provider = "voipms"
base_url = "{sandbox_url}/voipms"
webhook_token = "{WEBHOOK_TOKEN}"
api_username = "{vm.API_USERNAME}"
api_password = "{vm.API_PASSWORD}"
from_number = "{vm.FAX_NUMBER}"
reconcile_interval = {reconcile_interval}

[accounts.ci]
provider = "callerip"
base_url = "{sandbox_url}/callerip"
token = "{ci.VALID_TOKEN}"
{extra}
"""


@dataclass
class System:
    tmp: Path
    s3_endpoint: str
    sandbox_url: str
    bucket: str
    extra_config: str = ""
    env_overrides: dict[str, str] = field(default_factory=dict)
    redis_port: int = 0
    web_port: int = 0
    procs: dict[str, ManagedProcess] = field(default_factory=dict)
    log_path: Path | None = None
    appendfsync: str = "everysec"  # Redis's AOF policy
    reconcile_interval: int = 0  # of the UCX and voip.ms accounts (0: no list sweeps)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> System:
        self.log_path = self.tmp / "system.log"
        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        try:
            return self._start()
        except BaseException:
            self.stop()  # a part that did not come up must not leave the others running
            raise

    def _start(self) -> System:
        self.redis_port = free_port()
        self.web_port = free_port()
        self.start_redis()
        config = self.tmp / "faxrelay.toml"
        config.write_text(
            accounts_toml(self.sandbox_url, self.extra_config, self.reconcile_interval)
        )
        self.env = {
            **os.environ,
            "FAXRELAY_CONFIG": str(config),
            "FAXRELAY_REDIS_URL": self.redis_url,
            "FAXRELAY_S3_ENDPOINT_URL": self.s3_endpoint,
            "FAXRELAY_S3_BUCKET": self.bucket,
            "FAXRELAY_API_TOKENS": API_TOKEN,
            "FAXRELAY_EVENT_SECRET": EVENT_SECRET,
            "FAXRELAY_CALLBACK_HOSTS": "127.0.0.1",
            "FAXRELAY_DOCUMENT_HOSTS": "127.0.0.1",
            "FAXRELAY_RETRY_SCALE": "0.02",
            "FAXRELAY_SWEEP_INTERVAL": "0.5",
            "FAXRELAY_WAKE_GRACE": "3",
            "FAXRELAY_LEASE_SECONDS": "6",
            "FAXRELAY_REDIAL_DELAY": "50",  # times retry_scale: 1 s
            "PYTHONPATH": str(ROOT),
            **self.env_overrides,
        }
        self.start_web()
        self.start_worker()
        self.start_beat()
        return self

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start_redis(self) -> None:
        self.procs["redis"] = start_redis(
            self.tmp / "redis", self.redis_port, appendfsync=self.appendfsync, sink=self._log
        )

    def stop_redis(self) -> None:
        self.procs.pop("redis").stop()

    def start_web(self) -> None:
        proc = ManagedProcess(
            "web",
            [sys.executable, "-m", "uvicorn", "--factory", "webhooks.app:create_app",
             "--host", "127.0.0.1", "--port", str(self.web_port), "--no-access-log"],
            sink=self._log, env=self.env, cwd=str(ROOT),
        ).start()  # fmt: skip
        self.procs["web"] = proc
        wait_until(
            lambda: httpx.get(f"{self.web_url}/healthz", timeout=2).status_code == 200,
            30, "web app", proc,
        )  # fmt: skip

    def start_worker(self) -> None:
        client = redis.Redis.from_url(self.redis_url)
        client.delete(WORKER_READY_KEY)
        proc = ManagedProcess(
            "worker",
            [sys.executable, "-m", "celery", "-A", "config.celery_app", "worker",
             "-Q", WORKER_QUEUES, "--concurrency", "3", "-l", "info",
             "-n", f"test{time.monotonic_ns()}@%h",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            sink=self._log, env=self.env, cwd=str(ROOT), stop_timeout=20,
            fatal_markers=CELERY_FATAL,
        ).start()  # fmt: skip
        self.procs["worker"] = proc
        wait_until(lambda: bool(client.exists(WORKER_READY_KEY)), 60, "worker", proc)

    def ensure_worker(self) -> bool:
        """Start the worker again if it exited, as a process supervisor would (``faxrelay up``,
        systemd, compose's restart policy). Returns True when it had to."""
        proc = self.procs.get("worker")
        if proc is not None and proc.alive() and not proc.wedged:
            return False
        self._log.write("[test] worker exited or wedged; starting it again\n")
        if proc is not None:
            self.kill_worker()
        self.start_worker()
        return True

    def worker_consumes(self) -> bool:
        """The worker answers a Celery ping (it reconnected and consumes again)."""
        from config.celery_app import app

        app.conf.broker_url = self.redis_url
        try:
            return bool(app.control.ping(timeout=0.5))
        except Exception:
            return False

    def kill_worker(self) -> None:
        """SIGKILL the worker and its pool children at once (as a crash would)."""
        proc = self.procs.pop("worker")
        proc.signal(signal.SIGKILL)
        assert proc.process is not None
        proc.process.wait(10)

    def start_beat(self) -> None:
        self.procs["beat"] = ManagedProcess(
            "beat",
            [sys.executable, "-m", "celery", "-A", "config.celery_app", "beat", "-l", "info",
             "-s", str(self.tmp / f"beat-{time.monotonic_ns()}")],
            sink=self._log, env=self.env, cwd=str(ROOT),
        ).start()  # fmt: skip

    def stop(self) -> None:
        for name in ("beat", "worker", "web", "redis"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                proc.stop()
        if not self._log.closed:
            self._log.close()

    # --- helpers ---------------------------------------------------------------------------
    def store(self) -> FaxStore:
        return FaxStore.from_url(self.redis_url)

    def record(self, fax_id: str) -> FaxRecord:
        return self.store().get(fax_id)

    def wait_state(self, fax_id: str, *states: str, timeout: float = 30.0) -> FaxRecord:
        store = self.store()

        def reached() -> FaxRecord | None:
            record = store.find(fax_id)
            return record if record is not None and record.state in states else None

        try:
            return wait_for(reached, timeout, f"fax {fax_id} to reach {states}")
        except AssertionError:
            record = store.find(fax_id)
            raise AssertionError(
                f"fax {fax_id} did not reach {states}; it is "
                f"{record.public() if record else 'missing'}\n{self.log_tail()}"
            ) from None

    def log_tail(self, lines: int = 60) -> str:
        assert self.log_path is not None
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def webhook_url(self, account: str, route: str = "inbound", token: str = WEBHOOK_TOKEN) -> str:
        return f"{self.web_url}/webhooks/{account}/{route}?token={token}"

    def api(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.web_url, headers={"authorization": f"Bearer {API_TOKEN}"}, timeout=60
        )


def sandbox_fire(sandbox_url: str, **payload: Any) -> dict[str, Any]:
    answer = httpx.post(f"{sandbox_url}/_sandbox/fire", json=payload, timeout=60)
    answer.raise_for_status()
    data: dict[str, Any] = answer.json()
    return data
