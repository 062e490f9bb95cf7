"""Outbound jobs that take as long as real faxes do, for benchmarks of polling (``bench.poll``).

By default a sandbox job moves through its provider's words over a fixed ``job_duration``. With
``POST /_sandbox/timing {"provider", "model": "fax", "seed"}`` each new job of that provider gets a
plan drawn from how faxes go over the phone line instead:

- the provider converts the document (2 s + 0.5 s a page) and queues it: a wait drawn from a
  log-normal with a median of 20 s (a tenth of jobs wait over a minute, capped at 15 minutes);
- each call attempt: dialling and the handshake take 10-25 s, then every page 30-60 s (one
  line speed per job, drawn uniformly);
- 15 % of first attempts find the line busy (30 % of second ones): the call drops after 15-40 s
  and the job waits 1-4 minutes in the queue before redialling; a third busy line fails the job;
  3 % of attempts ring out unanswered after 45-60 s and fail.

The page count is read from the document the job carries (``pdf.count_pages``). Draws come from
a generator seeded by (seed, pages, n) for the n-th job of that many pages, so two runs that send
the same documents get the same set of plans, whatever order they arrive in. A plan is a list of
(phase, seconds after submit) with phases ``queued``, ``sending``, ``success``, ``failed``; each
provider module maps them to its own words.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass, field

QUEUED, SENDING, SUCCESS, FAILED = "queued", "sending", "success", "failed"
PAGE_SECONDS = (30.0, 60.0)  # one page over the line, slowest and fastest job
DIAL_SECONDS = (10.0, 25.0)  # dialling and the fax handshake
QUEUE_MEDIAN = 20.0  # seconds in the provider's queue before the first call
QUEUE_SIGMA = 1.0  # of the log-normal queue wait
QUEUE_CAP = 900.0
BUSY = (0.15, 0.30)  # chance the line is busy on the first, then on a later attempt
BUSY_CALL = (15.0, 40.0)  # seconds a busy call lasts
REDIAL_WAIT = (60.0, 240.0)  # seconds back in the queue before redialling
ATTEMPTS = 3
NO_ANSWER = 0.03
NO_ANSWER_CALL = (45.0, 60.0)

Plan = list[tuple[str, float]]


@dataclass
class FaxTiming:
    """The fax-shaped plan generator of one provider (see the module's docstring)."""

    seed: int
    _seen: Counter[int] = field(default_factory=Counter)

    def plan(self, pages: int) -> Plan:
        """The next job's plan for a document of ``pages`` pages."""
        pages = max(1, pages)
        self._seen[pages] += 1
        return fax_plan(random.Random(f"{self.seed}:{pages}:{self._seen[pages]}"), pages)


def fax_plan(rng: random.Random, pages: int) -> Plan:
    t = 2.0 + 0.5 * pages
    plan: Plan = [(QUEUED, 0.0)]
    t += min(QUEUE_CAP, rng.lognormvariate(math.log(QUEUE_MEDIAN), QUEUE_SIGMA))
    per_page = rng.uniform(*PAGE_SECONDS)
    for attempt in range(ATTEMPTS):
        plan.append((SENDING, t))
        draw = rng.random()
        if draw < BUSY[0 if attempt == 0 else 1]:
            t += rng.uniform(*BUSY_CALL)
            if attempt == ATTEMPTS - 1:
                break
            plan.append((QUEUED, t))
            t += rng.uniform(*REDIAL_WAIT)
            continue
        if draw > 1.0 - NO_ANSWER:
            t += rng.uniform(*NO_ANSWER_CALL)
            break
        plan.append((SUCCESS, t + rng.uniform(*DIAL_SECONDS) + pages * per_page))
        return plan
    plan.append((FAILED, t))
    return plan
