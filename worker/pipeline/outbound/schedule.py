"""When to ask a provider about a fax job next: at the moments its state is likely to change.

A fax's time at the provider has a known shape: it waits in the provider's queue (converted,
then queued for a line), then the call is dialled and every page takes 30-60 s on the line; a busy
line sends it back to the queue for a redial. So a job of ``p`` pages that started sending cannot
be through before ``p`` pages at the fastest pace, and will be through by ``p`` pages at the
slowest. Polling by that, from what the provider said (queued or sending, and when each was first
seen) and the pages of the document, costs a few requests a job, where a fixed interval or a
backoff blind to the fax either asks all along the way or learns of the end late
(``python -m bench.poll`` measures both against a fixed 15 s poller).

The rules (``RULES``; every figure is multiplied by ``retry_scale``):

- first poll, after the submit: ``first + first_per_page * pages`` — about the earliest a fax of
  that length is through (conversion, the queue, dialling, the pages at a fast pace);
- still queued: again after ``queued_recheck``;
- first seen sending at ``t_s``, last seen queued at ``t_q`` (else the submit): the end lies in
  ``[t_q + dial[0] + page[0] * p, t_s + dial[1] + page[1] * p]``; ask ``window_offset`` after its
  start, then every ``window_step`` (so the end is known within about half a step);
- past that window (a slower line, a redial the provider did not show as queued), or a state
  that says nothing (an unknown word, a failed status call): back off, doubling the last gap
  from the provider's ``poll_first`` to its ``poll_cap``.

The record keeps ``work["queued_seen_at"]`` and ``work["sending_seen_at"]`` (moments before the
current submit are ignored, so a redial starts afresh).
"""

from __future__ import annotations

from dataclasses import dataclass

from worker.providers.base import JobState


@dataclass(frozen=True)
class PollRules:
    first: float = 45.0
    first_per_page: float = 25.0
    queued_recheck: float = 90.0
    page: tuple[float, float] = (30.0, 60.0)  # seconds a page takes on the line
    dial: tuple[float, float] = (10.0, 25.0)  # seconds to dial and shake hands
    window_offset: float = 45.0
    window_step: float = 45.0
    min_gap: float = 5.0  # never ask again sooner than this


RULES = PollRules()


@dataclass(frozen=True)
class Job:
    """What the record knows of the job (epoch seconds)."""

    submitted_at: float
    pages: int
    queued_seen_at: float | None = None  # the latest poll that saw it queued
    sending_seen_at: float | None = None  # the first poll that saw its current attempt sending
    last_poll_at: float | None = None  # the poll before this one


def first_poll(pages: int | None, scale: float, rules: PollRules = RULES) -> float:
    """Seconds from the submit to the first status poll."""
    return (rules.first + rules.first_per_page * max(1, pages or 1)) * scale


def next_poll(
    state: JobState,
    now: float,
    job: Job,
    *,
    poll_first: float,
    poll_cap: float,
    scale: float,
    rules: PollRules = RULES,
) -> float:
    """Seconds from ``now`` (a poll that saw ``state``, not final) to the next poll."""
    pages = max(1, job.pages)
    if state == JobState.QUEUED:
        return rules.queued_recheck * scale
    if state == JobState.SENDING and job.sending_seen_at is not None:
        start = job.queued_seen_at if job.queued_seen_at is not None else job.submitted_at
        low = start + (rules.dial[0] + rules.page[0] * pages) * scale
        high = job.sending_seen_at + (rules.dial[1] + rules.page[1] * pages) * scale
        step = rules.window_step * scale
        at = low + rules.window_offset * scale
        earliest = now + rules.min_gap * scale
        if at < earliest:
            at += step * -(-(earliest - at) // step)  # the first step of the grid after it
        if at < high + step:
            return at - now
    gap = now - job.last_poll_at if job.last_poll_at is not None else poll_first * scale
    return min(poll_cap * scale, max(poll_first * scale, 2 * gap))
