"""Lookup hits and misses over the last day, for the dashboard's hit-rate charts.

Kept in memory, per process: a restart starts an empty history, and each replica shows the
lookups it served. Memory is bounded: per-minute buckets for the whole server (at most one
day of them) and hourly buckets per repository for at most ``max_repos`` repositories (the
one looked up least recently is forgotten first).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

MINUTE_S = 60
HOUR_S = 3600
DAY_S = 86400
DEFAULT_MAX_REPOS = 1000


@dataclass(frozen=True, kw_only=True)
class Bucket:
    """Lookups in ``[start, start + step)``."""

    start: float
    hits: int
    misses: int

    @property
    def lookups(self) -> int:
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float | None:
        """Hits per lookup (0 to 1), or None without lookups."""
        return self.hits / self.lookups if self.lookups else None


class _Series:
    """Counts per slot (``int(t // step)``), oldest first, at most ``limit`` slots."""

    def __init__(self, step_s: int, limit: int) -> None:
        self.step_s = step_s
        self.slots: deque[list[int]] = deque(maxlen=limit)  # [slot, hits, misses]

    def add(self, t: float, hit: bool) -> None:
        slot = int(t // self.step_s)
        counts = next((c for c in reversed(self.slots) if c[0] == slot), None)
        if counts is None:
            if self.slots and slot < self.slots[-1][0]:
                return  # the clock went back past the newest slot: too rare to place
            counts = [slot, 0, 0]
            self.slots.append(counts)
        counts[1 if hit else 2] += 1

    def buckets(self, start_slot: int, count: int, per: int) -> list[Bucket]:
        """``count`` buckets of ``per`` slots each from ``start_slot``, zero-filled."""
        sums = [[0, 0] for _ in range(count)]
        for slot, hits, misses in self.slots:
            i = (slot - start_slot) // per
            if 0 <= i < count:
                sums[i][0] += hits
                sums[i][1] += misses
        return [
            Bucket(start=(start_slot + i * per) * self.step_s, hits=h, misses=m)
            for i, (h, m) in enumerate(sums)
        ]


class HitRateHistory:
    """Counts of lookup hits and misses; feed it with ``record`` (``CacheService.on_lookup``)."""

    def __init__(self, *, now: Callable[[], float], max_repos: int = DEFAULT_MAX_REPOS) -> None:
        self.now = now
        self.max_repos = max_repos
        self._server = _Series(MINUTE_S, DAY_S // MINUTE_S)
        self._repos: OrderedDict[str, _Series] = OrderedDict()

    def record(self, repo: str, hit: bool) -> None:
        """Count one lookup of ``repo`` (a hit if it returned an entry)."""
        t = self.now()
        self._server.add(t, hit)
        series = self._repos.get(repo)
        if series is None:
            series = self._repos[repo] = _Series(HOUR_S, DAY_S // HOUR_S)
            if len(self._repos) > self.max_repos:
                self._repos.popitem(last=False)
        else:
            self._repos.move_to_end(repo)
        series.add(t, hit)

    def repos(self) -> list[str]:
        """Repositories with lookups in the last day (among those still tracked)."""
        return [r for r in self._repos if self.totals(r).lookups]

    def timeline(self, *, span_s: int = DAY_S, step_s: int = 10 * MINUTE_S) -> list[Bucket]:
        """The whole server's lookups over the last ``span_s``, in ``step_s`` buckets, oldest first.

        Raises:
            ValueError: ``step_s`` is not a whole number of minutes dividing ``span_s``.
        """
        if step_s <= 0 or step_s % MINUTE_S or span_s % step_s or span_s > DAY_S:
            raise ValueError(f"step {step_s}s must be whole minutes dividing a span <= 1 day")
        return _window(self._server, self.now(), span_s // step_s, step_s // MINUTE_S)

    def repo_timeline(self, repo: str) -> list[Bucket]:
        """One repository's lookups over the last day, hourly, oldest first."""
        series = self._repos.get(repo) or _Series(HOUR_S, 1)
        return _window(series, self.now(), DAY_S // HOUR_S, 1)

    def totals(self, repo: str | None = None) -> Bucket:
        """Lookups over the last day (of one repository, or the whole server)."""
        buckets = self.repo_timeline(repo) if repo is not None else self.timeline()
        return _total(buckets, self.now() - DAY_S)


def _window(series: _Series, now: float, count: int, per: int) -> list[Bucket]:
    # Buckets align to their step (10-minute buckets start at :00, :10…); the newest one
    # holds "now", so the chart's right edge is the present.
    newest_bucket = int(now // series.step_s) // per
    start_slot = (newest_bucket - count + 1) * per
    return series.buckets(start_slot, count, per)


def _total(buckets: Iterable[Bucket], start: float) -> Bucket:
    hits = misses = 0
    for b in buckets:
        hits += b.hits
        misses += b.misses
    return Bucket(start=start, hits=hits, misses=misses)
