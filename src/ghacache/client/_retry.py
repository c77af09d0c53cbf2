"""Retries: capped exponential back-off with jitter, under one deadline per request.

What is retried: 429 (waiting what ``Retry-After`` asks, in seconds or as an HTTP date), 5xx
other than 501/505/507, and transport failures (refused, reset, dropped mid-body, idle socket).
Everything else fails at once. The state lives in each call: a throttled request waits on its
own, so one throttled client never stalls another (go-actions-cache's process-global back-off
pool stalls every build in the daemon).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from ghacache.client._config import RetrySettings
from ghacache.errors import (
    ClientError,
    DeadlineExceeded,
    InvalidResponse,
    RemoteRateLimited,
    ServerError,
    TransportError,
)

log = logging.getLogger("ghacache.client")

T = TypeVar("T")

# Not implemented, HTTP version not supported, and 507 Insufficient Storage: the server's
# disk is full, and sending the same bytes again at once cannot help.
_NOT_RETRIED_5XX = frozenset({501, 505, 507})


class Deadline:
    """A point in monotonic time after which no new attempt starts."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self.seconds = seconds
        self.at = clock() + seconds

    def remaining(self) -> float:
        return max(0.0, self.at - self._clock())

    def expired(self) -> bool:
        return self.remaining() <= 0.0


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delta-seconds or an HTTP date).

    Returns:
        The delay (never negative), or None if the header is absent or unreadable.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(0.0, when.timestamp() - current)


def is_retryable(exc: ClientError) -> bool:
    """True for 429, most 5xx and transport failures (but not a passed deadline)."""
    if isinstance(exc, DeadlineExceeded):
        return False
    if isinstance(exc, TransportError):
        return True
    if isinstance(exc, RemoteRateLimited):
        return True
    if isinstance(exc, ServerError) and not isinstance(exc, InvalidResponse):
        return 500 <= exc.status < 600 and exc.status not in _NOT_RETRIED_5XX
    return False


def backoff_s(attempt: int, settings: RetrySettings, rng: Callable[[], float]) -> float:
    """Equal-jitter back-off before attempt ``attempt + 1``: half fixed, half random."""
    ceiling = min(settings.max_delay_s, settings.base_delay_s * 2.0 ** (attempt - 1))
    return ceiling / 2 + rng() * ceiling / 2


async def with_retries(
    attempt: Callable[[Deadline], Awaitable[T]],
    settings: RetrySettings,
    *,
    what: str,
    rng: Callable[[], float] = random.random,
) -> T:
    """Run ``attempt`` until it succeeds, fails for good, or the deadline passes.

    ``attempt`` gets the request's deadline so it can bound its own I/O.

    Returns:
        What the first successful attempt returned.

    Raises:
        DeadlineExceeded: the deadline passed, or a ``Retry-After`` points past it.
        RemoteRateLimited: still throttled after ``max_attempts``.
        ClientError: the last error when it is not retryable or attempts ran out.
    """
    deadline = Deadline(settings.timeout_s)
    last: ClientError | None = None
    for n in range(1, settings.max_attempts + 1):
        try:
            return await attempt(deadline)
        except DeadlineExceeded as exc:
            if last is None:
                raise
            # Cut short mid-attempt: the earlier attempts' failure is what the caller needs.
            raise DeadlineExceeded(f"{exc} after {n} attempt(s); last error: {last}") from exc
        except ClientError as exc:
            if not is_retryable(exc) or n == settings.max_attempts:
                raise
            last = exc
            delay = backoff_s(n, settings, rng)
            if isinstance(exc, RemoteRateLimited) and exc.retry_after_s > 0:
                delay = float(exc.retry_after_s)  # the server knows best when to come back
            if delay >= deadline.remaining():
                raise DeadlineExceeded(
                    f"{what}: gave up after {n} attempt(s): the next retry (in {delay:.1f} s) "
                    f"would pass the {settings.timeout_s:g} s deadline; last error: {exc}"
                ) from exc
            log.info("%s failed (%s); retry %d in %.1f s", what, exc, n, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


def deadline_error(
    what: str, deadline: Deadline, cause: BaseException | None = None
) -> ClientError:
    """The error for an attempt cut short by the deadline or by an idle socket."""
    if deadline.expired():
        return DeadlineExceeded(f"{what}: the {deadline.seconds:g} s deadline passed")
    return TransportError(f"{what}: the connection went idle ({cause or 'timeout'})")


def ceil_s(seconds: float | None) -> int:
    return 0 if seconds is None else math.ceil(seconds)
