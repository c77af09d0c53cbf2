"""Per-repository limit on cache-entry creations, like GitHub's (200 uploads/min/repo).

A sliding one-minute window per repository, in this process's memory: with several replicas
each enforces its own share. Over the limit, ``RateLimited`` carries the seconds until the
oldest creation in the window leaves it (the ``Retry-After`` value).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

from ghacache.errors import RateLimited

WINDOW_S = 60.0


class CreationRateLimiter:
    """Allows ``per_minute`` creations per repository in any 60-second window; 0 = off."""

    def __init__(
        self,
        per_minute: int,
        *,
        now: Callable[[], float],
        on_limited: Callable[[str], object] | None = None,
    ) -> None:
        self.per_minute = per_minute
        self._now = now
        self._on_limited = on_limited  # told the repository of every refusal (metrics)
        self._events: dict[str, deque[float]] = {}

    def acquire(self, repo: str) -> None:
        """Count one creation for ``repo``.

        Raises:
            RateLimited: the repository already made ``per_minute`` creations in the window.
        """
        if self.per_minute <= 0:
            return
        now = self._now()
        events = self._events.setdefault(repo, deque())
        while events and events[0] <= now - WINDOW_S:
            events.popleft()
        if len(events) >= self.per_minute:
            retry_after = max(1, math.ceil(events[0] + WINDOW_S - now))
            if self._on_limited is not None:
                self._on_limited(repo)
            raise RateLimited(
                f"rate limit exceeded: {self.per_minute} cache entries per minute for {repo}; "
                f"retry in {retry_after} s",
                retry_after_s=retry_after,
            )
        events.append(now)
        if len(self._events) > 10_000:  # forget idle repositories; memory stays bounded
            for name in [r for r, ev in self._events.items() if not ev or ev[-1] <= now - WINDOW_S]:
                del self._events[name]
