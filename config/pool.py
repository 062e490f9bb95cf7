"""The workers' pool: Celery's threads pool, keeping Celery's time limits.

Why threads: a worker's tasks spend their time waiting on providers, S3 and Redis through blocking
clients (httpx, boto3, redis-py), which release the GIL while they wait, so one process keeps tens
of downloads, uploads and provider calls in flight. Prefork holds a whole process (about 70 MB)
per transfer; gevent would monkey-patch every client, and a CPU-bound step (a PDF parse) would
stall every greenlet, there being no preemption; an asyncio runner would mean new clients for
everything. The clients are shared safely between threads: one httpx client per provider account
(its connection pool is thread-safe; token caches take a lock), one boto3 S3 client per process
(clients are thread-safe, sessions are not: ``worker.runtime`` builds it once, under a lock),
redis-py's connection pool, prometheus_client's values (locked), the id pool (locked).

Celery's threads pool ignores time limits: prefork enforces them from the parent process
(SIGUSR1 raises ``SoftTimeLimitExceeded`` in the child, SIGKILL ends it at the hard limit).
This pool keeps the soft limit: at the deadline it raises ``SoftTimeLimitExceeded`` in the task's
thread (CPython's ``PyThreadState_SetAsyncExc``: delivered at the thread's next Python
instruction, so a Python loop such as a parse or a slow download's chunk loop is interrupted; a
blocking socket call returns first, at its own timeout) and tells Celery, which logs it, as
prefork's parent does. A thread cannot be killed: at the hard limit the exception is raised again
and the thread's stack is logged at ERROR, and the task keeps its slot and its unacknowledged
message until it returns (the record's lease stops being renewed after ``MAX_HOLD_SECONDS``, so
the sweeper can hand the fax to another worker meanwhile).

A killed worker process loses all its threads at once; ``acks_late`` keeps their messages in
Redis (kombu hands them back after the visibility timeout) and the records' short leases let the
sweeper wake the faxes again within seconds, as after a killed prefork child. A message that was
being taken off its list at that moment is lost (kombu records it as unacknowledged only after
taking it): harmless for wake-ups, which the sweeper re-sends, and the reason the public queue of
queue-driven sends is consumed by no Celery worker but by ``worker.acceptor`` (``config.workers``).
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from celery.concurrency import thread
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

log = logging.getLogger(__name__)

TimeoutCallback = Callable[[bool, float], None]


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Schedule ``exc`` in the thread (``None``: clear one scheduled and not yet raised)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


class _Running:
    """A task running in a pool thread, as the watchdog sees it."""

    def __init__(self, name: str, on_timeout: TimeoutCallback | None) -> None:
        self.name = name
        # Celery's request's callback; dropped once the task is done, so the watchdog's pending
        # deadlines hold nothing of a finished task but this small object.
        self.on_timeout = on_timeout
        self.lock = threading.Lock()
        self.thread_id: int | None = None
        self.done = False
        self.raised = False

    def start(self) -> None:
        with self.lock:
            self.thread_id = threading.get_ident()

    def interrupt(self, exc: type[BaseException]) -> bool:
        """Raise ``exc`` in the task's thread unless it has finished; False if it had."""
        with self.lock:
            if self.done or self.thread_id is None:
                return False
            _raise_in(self.thread_id, exc)
            self.raised = True
            return True

    def finish(self) -> None:
        """The task returned: no exception may reach the pool's own code after this."""
        while True:
            try:
                with self.lock:
                    self.done = True
                    self.on_timeout = None
                    if self.raised and self.thread_id is not None:
                        _raise_in(self.thread_id, None)
                return
            except (SoftTimeLimitExceeded, TimeLimitExceeded):
                continue  # raised here, between the task's end and the lock: go on clearing

    def stack(self) -> str:
        frame = sys._current_frames().get(self.thread_id or 0)
        return "".join(traceback.format_stack(frame)) if frame is not None else "(finished)"


class _Watchdog:
    """One thread that fires every running task's deadlines, earliest first."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def at(self, when: float, action: Callable[[], None]) -> None:
        with self._cond:
            heapq.heappush(self._heap, (when, next(self._seq), action))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="faxrelay-time-limits", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._cond.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                _, _, action = heapq.heappop(self._heap)
            try:
                action()
            except Exception:  # a deadline must never stop the watchdog
                log.exception("time limit handling failed")


class TaskPool(thread.TaskPool):
    """Celery's threads pool with soft and hard time limits (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watchdog = _Watchdog()

    def on_apply(
        self,
        target: Callable[..., Any],
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
        callback: Callable[..., Any] | None = None,
        accept_callback: Callable[..., Any] | None = None,
        **options: Any,
    ) -> Any:
        soft: float | None = options.get("soft_timeout")
        hard: float | None = options.get("timeout")
        if not soft and not hard:
            return super().on_apply(target, args, kwargs, callback, accept_callback)
        running = _Running(str(options.get("correlation_id", "")), options.get("timeout_callback"))
        started = time.monotonic()
        if soft:
            self._watchdog.at(started + soft, lambda: self._soft(running, soft))
        if hard:
            self._watchdog.at(started + hard, lambda: self._hard(running, hard))

        def limited(*a: Any, **kw: Any) -> Any:
            running.start()
            try:
                return target(*a, **kw)
            finally:
                running.finish()

        return super().on_apply(limited, args, kwargs, callback, accept_callback)

    @staticmethod
    def _soft(running: _Running, seconds: float) -> None:
        on_timeout = running.on_timeout
        if running.interrupt(SoftTimeLimitExceeded) and on_timeout is not None:
            on_timeout(True, seconds)  # Celery logs "Soft time limit (…s) exceeded for …"

    @staticmethod
    def _hard(running: _Running, seconds: float) -> None:
        if running.interrupt(TimeLimitExceeded):
            log.error(
                "task %s is past its hard time limit (%.0f s); a thread cannot be killed, so it "
                "keeps its slot until it returns. Its stack:\n%s",
                running.name,
                seconds,
                running.stack(),
            )
