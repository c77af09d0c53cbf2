"""The one timestamp format both v1 (``creationTime``) and the management API use."""

from __future__ import annotations

import math
from datetime import UTC, datetime


def iso(ts: float) -> str:
    """E.g. 2026-11-27T18:00:00.000Z, truncated to milliseconds.

    Seconds and milliseconds come from one truncation: ``fromtimestamp`` alone rounds to
    microseconds, which would carry x.9999995 into the next second next to ``.999``.
    """
    seconds = math.floor(ts)
    millis = min(999, int((ts - seconds) * 1000))
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis:03d}Z"
