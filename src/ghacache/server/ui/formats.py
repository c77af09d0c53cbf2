"""How the dashboard shows numbers and times: binary sizes, UTC clock times, relative ages."""

from __future__ import annotations

from datetime import UTC, datetime

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def human_size(n: int | None) -> str:
    """``1536`` -> ``1.5 KiB``; whole numbers lose their ``.0`` (``10 GiB``)."""
    if n is None:
        return "-"
    value = float(n)
    for unit in _UNITS:
        if abs(value) < 1024 or unit == _UNITS[-1]:
            break
        value /= 1024
    if unit == "B":
        return f"{n} B"
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text} {unit}"


def utc(ts: float) -> str:
    """``2026-11-27 18:00:05`` (UTC, to the second)."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def clock(ts: float) -> str:
    """``18:00`` (UTC): chart axis labels."""
    return datetime.fromtimestamp(ts, UTC).strftime("%H:%M")


def ago(ts: float, now: float) -> str:
    """``just now``, ``42 s ago``, ``12 min ago``, ``3 h ago``, ``2 d ago``."""
    seconds = now - ts
    if seconds < 1:
        return "just now"
    for limit, unit, div in ((60, "s", 1), (3600, "min", 60), (86400, "h", 3600)):
        if seconds < limit:
            return f"{int(seconds // div)} {unit} ago"
    return f"{int(seconds // 86400)} d ago"


def duration(seconds: float) -> str:
    """``604800`` -> ``7 d``; ``5400`` -> ``1.5 h``; ``90`` -> ``1.5 min``."""
    for limit, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= limit:
            return f"{seconds / limit:.1f}".removesuffix(".0") + f" {unit}"
    return f"{seconds:.0f} s"


def percent(fraction: float | None) -> str:
    """``0.667`` -> ``67%``; None (nothing to divide) -> ``-``."""
    return "-" if fraction is None else f"{fraction * 100:.0f}%"
