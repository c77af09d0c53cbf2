"""Geometry of the dashboard's inline SVG charts, computed here so templates only draw.

No charting library: a usage bar is two rectangles, and the hit-rate chart is stacked
columns (hits under misses, scaled to the busiest bucket) with the hit rate as a line on a
0-100% scale. The line is the rate over a trailing window of buckets, since a rate per
bucket swings wildly when buckets hold a handful of lookups. Everything is in SVG user
units; the stylesheet colours the classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ghacache.server.hitrate import Bucket
from ghacache.server.ui.formats import clock, duration, human_size, percent


@dataclass(frozen=True, kw_only=True)
class UsageBar:
    """Used bytes against a quota: ``fill`` of ``width`` is drawn, red when over."""

    width: int
    height: int
    fill: float
    over: bool
    title: str


def usage_bar(used: int, quota: int, *, width: int = 240, height: int = 14) -> UsageBar:
    fraction = used / quota if quota > 0 else 1.0
    return UsageBar(
        width=width,
        height=height,
        fill=round(min(fraction, 1.0) * width, 1),
        over=used > quota,
        title=f"{human_size(used)} of {human_size(quota)} ({percent(fraction)})",
    )


@dataclass(frozen=True, kw_only=True)
class Column:
    """One bucket: a hits rectangle with a misses rectangle on top."""

    x: float
    width: float
    hits_y: float
    hits_h: float
    misses_y: float
    misses_h: float
    title: str


@dataclass(frozen=True, kw_only=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, kw_only=True)
class TimeChart:
    """A plot of ``plot_w`` x ``plot_h`` at (``left``, ``top``) in a ``width`` x ``height`` SVG."""

    width: int
    height: int
    left: int
    top: int
    plot_w: int
    plot_h: int
    columns: list[Column]
    ticks: list[Tick]
    rate_lines: list[str]  # polyline points of each run of buckets with a rate
    rate_dots: list[tuple[float, float]]  # rates with no neighbour to join
    rate_window: str  # e.g. "1 h": what the rate is measured over
    peak: int
    total: Bucket


def hit_rate_chart(
    buckets: Sequence[Bucket],
    *,
    step_s: int,
    tick_every_s: int,
    rate_window: int = 1,
    width: int = 760,
    height: int = 180,
) -> TimeChart:
    """Lay out ``buckets`` (oldest first, ``step_s`` apart) with a time label every ``tick_every_s``.

    The hit-rate line at each bucket covers it and the ``rate_window - 1`` before it.
    """
    left, top, right, bottom = 44, 10, 44, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max((b.lookups for b in buckets), default=0)
    slot = plot_w / max(len(buckets), 1)
    gap = min(1.0, slot / 4)
    columns: list[Column] = []
    ticks: list[Tick] = []
    runs: list[list[tuple[float, float]]] = [[]]  # rate points, split where there is none
    for i, b in enumerate(buckets):
        x = i * slot
        hits_h = plot_h * b.hits / peak if peak else 0.0
        misses_h = plot_h * b.misses / peak if peak else 0.0
        columns.append(
            Column(
                x=round(x + gap / 2, 2),
                width=round(slot - gap, 2),
                hits_y=round(plot_h - hits_h, 2),
                hits_h=round(hits_h, 2),
                misses_y=round(plot_h - hits_h - misses_h, 2),
                misses_h=round(misses_h, 2),
                title=(
                    f"{clock(b.start)}-{clock(b.start + step_s)} UTC: {b.lookups} lookups, "
                    f"{b.hits} hits ({percent(b.hit_rate)})"
                ),
            )
        )
        if int(b.start) % tick_every_s == 0:
            ticks.append(Tick(x=round(x, 2), label=clock(b.start)))
        recent = buckets[max(0, i - rate_window + 1) : i + 1]
        hits, lookups = sum(r.hits for r in recent), sum(r.lookups for r in recent)
        if not lookups:
            runs.append([])
            continue
        runs[-1].append((round(x + slot / 2, 2), round(plot_h * (1 - hits / lookups), 2)))
    total = Bucket(
        start=buckets[0].start if buckets else 0.0,
        hits=sum(b.hits for b in buckets),
        misses=sum(b.misses for b in buckets),
    )
    return TimeChart(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_w=plot_w,
        plot_h=plot_h,
        columns=columns,
        ticks=ticks,
        rate_lines=[" ".join(f"{x},{y}" for x, y in run) for run in runs if len(run) > 1],
        rate_dots=[run[0] for run in runs if len(run) == 1],
        rate_window=duration(step_s * rate_window),
        peak=peak,
        total=total,
    )
