"""The workers' threads pool keeps Celery's time limits (config/pool.py): a task past its soft
limit gets SoftTimeLimitExceeded in its own thread, past its hard limit TimeLimitExceeded, and a
task that finished in time is never interrupted afterwards, whatever its thread runs next.
"""

from __future__ import annotations

import io
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from config.pool import TaskPool
from sandbox.pdf import make_pdf
from worker.io.pdfcheck import check_pdf


@pytest.fixture
def pool() -> Iterator[TaskPool]:
    p = TaskPool(limit=1)  # one thread: the second task runs in the first one's thread
    yield p
    p.on_stop()


def run(
    pool: TaskPool, target: Callable[[], str], soft: float | None = None, hard: float | None = None
) -> tuple[queue.Queue[str], list[tuple[bool, float]]]:
    """Apply ``target`` as Celery's worker does; its result and the timeouts Celery was told of."""
    results: queue.Queue[str] = queue.Queue()
    timeouts: list[tuple[bool, float]] = []
    pool.apply_async(
        target,
        callback=results.put,
        timeout_callback=lambda soft, seconds: timeouts.append((soft, seconds)),
        soft_timeout=soft,
        timeout=hard,
        correlation_id="task-1",
    )
    return results, timeouts


def loop_until(stop: threading.Event) -> None:
    """Python code that runs until told to stop (as a parse or a download's chunk loop does)."""
    while not stop.is_set():
        time.sleep(0.01)


def test_the_soft_limit_raises_in_the_task_and_celery_is_told(pool: TaskPool) -> None:
    never = threading.Event()

    def task() -> str:
        try:
            loop_until(never)
        except SoftTimeLimitExceeded:
            return "interrupted at the soft limit"
        return "ran on"

    results, timeouts = run(pool, task, soft=0.3, hard=30)
    assert results.get(timeout=10) == "interrupted at the soft limit"
    assert timeouts == [(True, 0.3)]


def test_the_hard_limit_raises_again_in_a_task_that_ignored_the_soft_one(pool: TaskPool) -> None:
    never = threading.Event()
    seen: list[str] = []

    def task() -> str:
        while True:
            try:
                loop_until(never)
            except SoftTimeLimitExceeded:
                seen.append("soft")  # a task that carries on regardless
            except TimeLimitExceeded:
                seen.append("hard")
                return "stopped at the hard limit"

    results, _ = run(pool, task, soft=0.2, hard=0.6)
    assert results.get(timeout=10) == "stopped at the hard limit"
    assert seen == ["soft", "hard"]


def test_a_task_that_finished_in_time_is_never_interrupted_later(pool: TaskPool) -> None:
    first, _ = run(pool, lambda: "done early", soft=0.3, hard=0.6)
    assert first.get(timeout=10) == "done early"
    release = threading.Event()
    caught: list[Any] = []

    def next_task() -> str:  # same thread, no limits, runs past the first task's deadlines
        try:
            threading.Timer(1.0, release.set).start()
            loop_until(release)
        except BaseException as exc:
            caught.append(exc)
        return "undisturbed"

    second, timeouts = run(pool, next_task)
    assert second.get(timeout=10) == "undisturbed"
    assert caught == [] and timeouts == []


def test_a_parse_past_its_soft_limit_is_interrupted_and_is_no_verdict_on_the_file(
    pool: TaskPool,
) -> None:
    """A PDF whose parse runs long (a broken cross-reference table makes pypdf scan the whole
    file) is interrupted at the soft limit, and the interruption is not taken for "not a PDF"."""
    broken = io.BytesIO(make_pdf(40, 40_000_000).replace(b"startxref", b"startxrex"))

    def task() -> str:
        try:
            verdict = check_pdf(broken)
        except SoftTimeLimitExceeded:
            return "interrupted"
        return f"verdict: {verdict}"

    results, _ = run(pool, task, soft=0.2, hard=30)
    assert results.get(timeout=60) == "interrupted"
