"""What a worker process holds: settings, the store, the archive, one provider client per account,
and the way to wake a record's next step. Built once per process (``get_runtime``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import httpx

from config import queues, tracing
from config.accounts import Account
from config.settings import Settings, get_settings
from worker.domain import Direction, FaxRecord, State
from worker.io.archive import Archive
from worker.io.fetch import guarded_client
from worker.io.filing import filed_record
from worker.pipeline.events import emit
from worker.providers import provider_for
from worker.providers.base import Provider
from worker.store.records import FaxStore

T = TypeVar("T")

# The wake-ups the worker publishes, as (task, queue): config.queues' routes under the names the
# pipelines use.
ARCHIVE_TASK = queues.ARCHIVE_FAX
SUBMIT_TASK = queues.SUBMIT_FAX
POLL_TASK = queues.POLL_FAX
INBOUND_TASK = queues.HANDLE_INBOUND
EVENT_TASK = queues.DELIVER_EVENT
RECONCILE_TASK = queues.RECONCILE_ACCOUNT


def next_step(record: FaxRecord) -> queues.Route | None:
    """The task and queue of a record's next step, by direction and state (none once final,
    unless it still owes clean-up: the archive step does that)."""
    if record.final:
        return ARCHIVE_TASK if record.work.get("owed") else None
    if record.direction == Direction.INBOUND:
        return ARCHIVE_TASK
    if record.state in (State.QUEUED, State.UNKNOWN):
        return SUBMIT_TASK
    return POLL_TASK


Sender = Callable[[str, str, list[str]], None]


@dataclass
class Runtime:
    settings: Settings
    send_task: Sender  # (task name, queue, args): publishes a wake-up
    _providers: dict[str, Provider] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # The worker's pool runs tasks in threads (config/pool.py): the store and the archive are
    # built once per process, under this lock (boto3 builds clients from a session, which is not
    # thread-safe; functools.cached_property takes no lock from Python 3.12 on). The built
    # clients are thread-safe: redis-py's connection pool, boto3's client.
    _build_lock: threading.Lock = field(default_factory=threading.Lock)
    _built: dict[str, Any] = field(default_factory=dict)

    @property
    def store(self) -> FaxStore:
        return self._once("store", self._build_store)

    def _build_store(self) -> FaxStore:
        store = FaxStore.from_settings(self.settings)
        # A record past its retention is read from its copy in S3 (worker.io.filing).
        store.retired = lambda fax_id: filed_record(self.archive, fax_id)
        return store

    @property
    def archive(self) -> Archive:
        return self._once("archive", lambda: Archive.from_settings(self.settings))

    def _once(self, name: str, build: Callable[[], T]) -> T:
        """``build()``'s result, built by the first thread that asks and kept."""
        built = self._built.get(name)
        if built is None:
            with self._build_lock:
                built = self._built.get(name)
                if built is None:
                    built = self._built[name] = build()
        return cast(T, built)

    @property
    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.settings.read_timeout, connect=self.settings.connect_timeout)

    def provider(self, account_name: str) -> Provider:
        """The account's client; its HTTP client only reaches the account's allowed hosts."""
        with self._lock:
            if account_name not in self._providers:
                account = self.settings.account(account_name)
                http = guarded_client(
                    allowed_hosts(account),
                    allow_private=account.allow_private_network,
                    timeout=self.timeout,
                )
                self._providers[account_name] = provider_for(account, http, self.timeout)
            return self._providers[account_name]

    def emit(self, record: FaxRecord, event_type: str) -> None:
        """Record the event's deliveries and wake them now (the sweeper retries them)."""
        for delivery_id in emit(self.store.redis, self.settings, record, event_type):
            self.send_task(EVENT_TASK.task, EVENT_TASK.queue, [delivery_id])

    def wake(self, record: FaxRecord) -> None:
        step = next_step(record)
        if step is not None:
            self.send_task(step.task, step.queue, [record.id])


def allowed_hosts(account: Account) -> list[str]:
    return [account.base_url, *account.download_hosts]


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def get_runtime() -> Runtime:
    """The process's runtime, built by the first task (thread) that asks."""
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                from config.celery_app import app

                def send(task: str, queue: str, args: list[str]) -> None:
                    # A wake-up has no result to wait for; without ignore_result, Celery's Redis
                    # result backend SUBSCRIBEs (and later UNSUBSCRIBEs) a channel per message.
                    # The trace context (FAXRELAY_OTEL) rides in the headers; None when off.
                    app.send_task(
                        task,
                        args=args,
                        queue=queue,
                        ignore_result=True,
                        headers=tracing.carrier(),
                    )

                _runtime = Runtime(get_settings(), send)
    return _runtime
