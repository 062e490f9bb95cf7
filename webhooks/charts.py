"""The overview's charts of the last 24 hours or 7 days, hour by hour: inline SVG made here (no
script, no build step), from the hourly counters the store's scripts keep as records move
(``worker.store.keys``: ``fr:hour:{hour}``), never from the records. One page reads at most
168 small hashes, in one round trip.

- faxes in and out per hour by outcome: the final state each reached in that hour;
- time from receipt to archive per hour, p50 and p99, from the hour's fixed histogram
  (``keys.ARCHIVE_LATENCY_BOUNDS``), so a percentile is read within its bucket;
- provider errors per hour by account: downloads and submits the provider answered with an
  error.

Every bar carries its figures in a ``<title>`` (shown on hover) and in ``data-*`` attributes,
and each chart's legend its totals over the span.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from markupsafe import Markup, escape

from worker.store.keys import ARCHIVE_LATENCY_BOUNDS, hour_stats_key

SPANS = {"24h": 24, "7d": 7 * 24}  # the choices the overview offers, in hours
INBOUND = (("archived", "#2f9e5b"), ("failed", "#d64545"))
OUTBOUND = (
    ("delivered", "#2f9e5b"),
    ("accepted", "#8fd19e"),
    ("cancelled", "#98a2b3"),
    ("failed", "#d64545"),
)
P50, P99 = "#1f5fbf", "#e8833a"
PALETTE = ("#1f5fbf", "#e8833a", "#7a5af8", "#d64545", "#0e9384", "#c11574", "#667085")
# Geometry of every chart, in SVG units about the size of a pixel where the overview shows two
# charts a row (the SVG scales with the page, keeping its proportions and so its text's).
WIDTH, HEIGHT = 560, 150
LEFT, RIGHT, TOP, BOTTOM = 40, 6, 8, 20


@dataclass
class Hours:
    """The hourly counters of a span: ``counts[i]`` is hour ``first + i`` (epoch hours)."""

    first: int
    counts: list[dict[str, int]]

    def total(self, field: str) -> int:
        return sum(c.get(field, 0) for c in self.counts)

    def latency(self, hour: dict[str, int]) -> list[int]:
        return [hour.get(f"lat:{i}", 0) for i in range(len(ARCHIVE_LATENCY_BOUNDS) + 1)]


async def load(client: aioredis.Redis, hours: int, now: float | None = None) -> Hours:
    """The last ``hours`` hours, the current one included."""
    last = int((now if now is not None else time.time()) // 3600)
    first = last - hours + 1
    pipe = client.pipeline(transaction=False)
    for hour in range(first, last + 1):
        pipe.hgetall(hour_stats_key(hour))
    raws: list[dict[Any, Any]] = await pipe.execute()
    counts = [{_text(k): int(v) for k, v in raw.items()} for raw in raws]
    return Hours(first, counts)


def percentile(buckets: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0 < q ≤ 1) of a histogram over ``ARCHIVE_LATENCY_BOUNDS`` (one count
    per bucket, the last for times above the last bound), read linearly within its bucket; the
    last bucket answers its lower bound (it has no upper one). None when it is empty."""
    total = sum(buckets)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    bounds = ARCHIVE_LATENCY_BOUNDS
    for i, count in enumerate(buckets):
        if count and seen + count >= rank:
            if i >= len(bounds):
                return float(bounds[-1])
            lower = float(bounds[i - 1]) if i else 0.0
            return lower + (bounds[i] - lower) * (rank - seen) / count
        seen += count
    return float(bounds[-1])


def short(seconds: float) -> str:
    """A duration in a few characters: 0.8 s, 14 s, 2.5 min, 1.2 h, 3.0 d."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


# --- drawing ---------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _hour_label(hour: int) -> str:
    return time.strftime("%Y-%m-%d %H:00", time.gmtime(hour * 3600))


def _nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten that is at least ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power: int = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


class _Frame:
    """The plot area of one chart over ``n`` hours, and the SVG drawn into it."""

    def __init__(self, hours: Hours, chart_id: str, label: str) -> None:
        self.hours = hours
        self.n = len(hours.counts)
        self.plot_w = WIDTH - LEFT - RIGHT
        self.plot_h = HEIGHT - TOP - BOTTOM
        self.col = self.plot_w / self.n
        self.parts: list[str] = [
            f'<svg id="{chart_id}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">'
        ]

    def x(self, i: int) -> float:
        return LEFT + i * self.col

    def grid(self, ticks: Sequence[tuple[float, str]]) -> None:
        """Horizontal lines at the plot heights ``ticks`` (0 bottom … 1 top) with their labels."""
        for at, text in ticks:
            y = TOP + self.plot_h * (1 - at)
            self.parts.append(
                f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="#e4e7ec" stroke-width="1"/>'
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
                f'fill="#667085">{escape(text)}</text>'
            )

    def hour_ticks(self) -> None:
        """Hour labels under the columns: every 3 hours over a day, each midnight over a week."""
        every = 3 if self.n <= 24 else 24
        for i in range(self.n):
            hour = self.hours.first + i
            if hour % every:
                continue
            moment = time.gmtime(hour * 3600)
            text = time.strftime("%H:00" if every < 24 else "%a %d", moment)
            x = self.x(i)
            self.parts.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM + 4}" '
                f'stroke="#f2f4f7" stroke-width="1"/>'
            )
            if x + 40 < WIDTH - RIGHT:  # a label that would run off the right edge is left out
                self.parts.append(
                    f'<text x="{x + 3:.1f}" y="{HEIGHT - 6}" font-size="11" fill="#667085">'
                    f"{text}</text>"
                )

    def empty(self, text: str) -> None:
        self.parts.append(
            f'<text x="{LEFT + self.plot_w / 2:.0f}" y="{TOP + self.plot_h / 2:.0f}" '
            f'text-anchor="middle" font-size="13" fill="#98a2b3">{escape(text)}</text>'
        )

    def done(self) -> Markup:
        self.parts.append("</svg>")
        return Markup("".join(self.parts))  # noqa: S704 - every value in it is escaped or a number


@dataclass
class Chart:
    """One chart: its SVG and its legend (name, colour, figure), for the template."""

    svg: Markup
    legend: list[tuple[str, str, str]]


def stacked(
    hours: Hours,
    series: Sequence[tuple[str, str]],
    chart_id: str,
    label: str,
    field: str = "{}",
) -> Chart:
    """Bars per hour, one segment per series (``field`` names its counter from the series
    name), with the span's total per series in the legend."""
    frame = _Frame(hours, chart_id, label)
    totals = [hours.total(field.format(name)) for name, _ in series]
    peak = max((sum(c.get(field.format(n), 0) for n, _ in series) for c in hours.counts), default=0)
    top = _nice_ceiling(peak)
    frame.grid([(0, "0"), *([(0.5, str(top // 2))] if top % 2 == 0 else []), (1, str(top))])
    frame.hour_ticks()
    gap = 1 if frame.col > 4 else 0
    for i, counts in enumerate(hours.counts):
        values = [counts.get(field.format(name), 0) for name, _ in series]
        if not any(values):
            continue
        hour = hours.first + i
        x = frame.x(i) + gap / 2
        data = " ".join(
            f'data-{escape(name)}="{v}"' for (name, _), v in zip(series, values, strict=True)
        )
        about = " · ".join(f"{name} {v}" for (name, _), v in zip(series, values, strict=True) if v)
        frame.parts.append(
            f'<g class="bar" data-hour="{_hour_label(hour)}" {data}>'
            f"<title>{_hour_label(hour)} UTC: {escape(about)}</title>"
        )
        base = 0
        for (_, colour), value in zip(series, values, strict=True):
            if not value:
                continue
            y = TOP + frame.plot_h * (1 - (base + value) / top)
            h = frame.plot_h * value / top
            frame.parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(frame.col - gap, 1):.1f}" '
                f'height="{h:.1f}" fill="{colour}"/>'
            )
            base += value
        frame.parts.append("</g>")
    if not any(totals):
        frame.empty("none in this span")
    legend = [
        (name, colour, str(total)) for (name, colour), total in zip(series, totals, strict=True)
    ]
    return Chart(frame.done(), legend)


def latency(hours: Hours, chart_id: str = "chart-latency") -> Chart:
    """Receipt to archive per hour: p50 and p99 on a log scale, joined by a line."""
    frame = _Frame(hours, chart_id, "time from receipt to archive, p50 and p99 per hour")
    low, high = 0.1, float(ARCHIVE_LATENCY_BOUNDS[-1])

    def at(seconds: float) -> float:  # plot height 0…1 of a duration
        clipped = min(max(seconds, low), high)
        return math.log10(clipped / low) / math.log10(high / low)

    frame.grid(
        [(at(s), text) for s, text in ((1, "1 s"), (60, "1 min"), (3600, "1 h"), (86400, "1 d"))]
    )
    frame.hour_ticks()
    merged = [0] * (len(ARCHIVE_LATENCY_BOUNDS) + 1)
    for i, counts in enumerate(hours.counts):
        buckets = hours.latency(counts)
        merged = [a + b for a, b in zip(merged, buckets, strict=True)]
        p50, p99 = percentile(buckets, 0.5), percentile(buckets, 0.99)
        if p50 is None or p99 is None:
            continue
        hour = hours.first + i
        cx = frame.x(i) + frame.col / 2
        y50 = TOP + frame.plot_h * (1 - at(p50))
        y99 = TOP + frame.plot_h * (1 - at(p99))
        r = min(3.5, max(frame.col / 3, 1.5))
        frame.parts.append(
            f'<g class="point" data-hour="{_hour_label(hour)}" data-archived="{sum(buckets)}" '
            f'data-p50="{p50:.1f}" data-p99="{p99:.1f}">'
            f"<title>{_hour_label(hour)} UTC: {sum(buckets)} archived · p50 {short(p50)} · "
            f"p99 {short(p99)}</title>"
            f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y50:.1f}" y2="{y99:.1f}" stroke="#98a2b3" '
            f'stroke-width="1"/>'
            f'<circle cx="{cx:.1f}" cy="{y99:.1f}" r="{r:.1f}" fill="{P99}"/>'
            f'<circle cx="{cx:.1f}" cy="{y50:.1f}" r="{r:.1f}" fill="{P50}"/></g>'
        )
    p50, p99 = percentile(merged, 0.5), percentile(merged, 0.99)
    if p50 is None or p99 is None:
        frame.empty("nothing archived in this span")
        return Chart(frame.done(), [("p50", P50, "—"), ("p99", P99, "—")])
    return Chart(frame.done(), [("p50", P50, short(p50)), ("p99", P99, short(p99))])


def errors(hours: Hours, accounts: Sequence[str]) -> Chart:
    """Provider errors per hour, a segment per account (those with errors in the span)."""
    erring = [a for a in accounts if hours.total(f"err:{a}")]
    series = [(name, PALETTE[i % len(PALETTE)]) for i, name in enumerate(erring)]
    chart = stacked(hours, series, "chart-errors", "provider errors per hour", "err:{}")
    if not series:
        chart.legend = [("none", "#98a2b3", "0")]
    return chart


@dataclass
class Charts:
    span: str  # a key of SPANS
    inbound: Chart
    outbound: Chart
    latency: Chart
    errors: Chart


async def charts(
    client: aioredis.Redis, span: str, accounts: Sequence[str], now: float | None = None
) -> Charts:
    """The overview's four charts over ``span`` (``24h`` or ``7d``; anything else: ``24h``)."""
    span = span if span in SPANS else "24h"
    hours = await load(client, SPANS[span], now)
    return Charts(
        span=span,
        inbound=stacked(
            hours, INBOUND, "chart-inbound", "received faxes per hour by outcome", "inbound:{}"
        ),
        outbound=stacked(
            hours, OUTBOUND, "chart-outbound", "sent faxes per hour by outcome", "outbound:{}"
        ),
        latency=latency(hours),
        errors=errors(hours, accounts),
    )
