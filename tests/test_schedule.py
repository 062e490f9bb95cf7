"""The poll schedule (worker/pipeline/outbound/schedule.py) and the sandbox's fax-shaped job
timings it is measured against (sandbox/timing.py): pure rules, no servers."""

from __future__ import annotations

import random

from sandbox.timing import FAILED, QUEUED, SENDING, SUCCESS, FaxTiming, fax_plan
from worker.pipeline.outbound.schedule import RULES, Job, first_poll, next_poll
from worker.providers.base import JobState

BACKOFF = {"poll_first": 10.0, "poll_cap": 300.0, "scale": 1.0}


def test_the_first_poll_waits_longer_for_longer_faxes() -> None:
    assert first_poll(1, 1.0) == 70.0
    assert first_poll(10, 1.0) == 295.0
    assert first_poll(None, 1.0) == first_poll(1, 1.0)
    assert first_poll(4, 0.1) == first_poll(4, 1.0) * 0.1  # retry_scale shrinks it (tests)


def test_a_queued_job_is_asked_again_after_the_recheck() -> None:
    job = Job(submitted_at=0.0, pages=3, queued_seen_at=70.0)
    assert next_poll(JobState.QUEUED, 70.0, job, **BACKOFF) == RULES.queued_recheck


def test_a_sending_job_is_asked_when_its_pages_can_be_through_then_every_step() -> None:
    # Queued at 70 s, sending at 160 s: 5 pages end between 70 + 10 + 150 = 230 s and
    # 160 + 25 + 300 = 485 s; polls from 230 + 45 s, every 45 s.
    job = Job(0.0, 5, queued_seen_at=70.0, sending_seen_at=160.0, last_poll_at=70.0)
    assert next_poll(JobState.SENDING, 160.0, job, **BACKOFF) == 275.0 - 160.0
    later = Job(0.0, 5, queued_seen_at=70.0, sending_seen_at=160.0, last_poll_at=160.0)
    assert next_poll(JobState.SENDING, 275.0, later, **BACKOFF) == 45.0
    # A poll off the grid (a late wake-up) goes back onto it, never sooner than the minimum gap.
    assert next_poll(JobState.SENDING, 318.0, later, **BACKOFF) == 365.0 - 318.0
    assert next_poll(JobState.SENDING, 363.0, later, **BACKOFF) == 410.0 - 363.0


def test_past_its_window_or_with_nothing_to_go_on_it_backs_off_to_the_cap() -> None:
    job = Job(0.0, 1, queued_seen_at=70.0, sending_seen_at=100.0, last_poll_at=560.0)
    assert next_poll(JobState.SENDING, 600.0, job, **BACKOFF) == 80.0  # twice the last gap
    stale = Job(0.0, 1, last_poll_at=0.0)
    assert next_poll(JobState.UNKNOWN, 5000.0, stale, **BACKOFF) == 300.0
    assert next_poll(JobState.UNKNOWN, 12.0, Job(0.0, 1, last_poll_at=10.0), **BACKOFF) == 10.0


def test_fax_plans_are_shaped_like_faxes_and_the_same_for_the_same_documents() -> None:
    rng = random.Random(3)
    for pages in (1, 2, 5, 12, 30):
        for _ in range(200):
            plan = fax_plan(rng, pages)
            phases = [phase for phase, _ in plan]
            times = [at for _, at in plan]
            assert phases[0] == QUEUED and phases[-1] in (SUCCESS, FAILED)
            assert times == sorted(times)
            if phases[-1] == SUCCESS:
                sending = max(at for phase, at in plan if phase == SENDING)
                assert 10 + 30 * pages <= times[-1] - sending <= 25 + 60 * pages
    one, two = FaxTiming(7), FaxTiming(7)
    first = [one.plan(p) for p in (1, 3, 1, 2, 3)]
    second = [two.plan(p) for p in (3, 1, 3, 2, 1)]  # another order, the same documents
    assert sorted(map(str, first)) == sorted(map(str, second))
