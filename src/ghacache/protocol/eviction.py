"""GitHub's eviction policy as a pure function.

Per repository: entries not accessed for longer than the idle expiry go first; then, while
the repository is over its quota, the least recently *accessed* entries go, oldest access
first (ties: older creation, then lower id). A restore counts as an access; creation sets the
first access.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class EvictionReason(enum.StrEnum):
    IDLE = "idle"  # not accessed within the idle expiry
    QUOTA = "quota"  # least recently accessed while over the repository quota
    DELETED = "deleted"  # removed through the management API
    MISSING = "missing"  # its bytes were gone from the store


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Limits for one repository."""

    quota_bytes: int
    idle_expiry_s: float


@dataclass(frozen=True, kw_only=True)
class Usage:
    """One committed entry as the policy sees it."""

    entry_id: int
    size: int
    created_at: float
    last_accessed_at: float


def plan(
    entries: Iterable[Usage], *, policy: Policy, now: float
) -> list[tuple[Usage, EvictionReason]]:
    """Entries of one repository to evict, in eviction order, with the reason for each."""
    ordered = sorted(entries, key=lambda e: (e.last_accessed_at, e.created_at, e.entry_id))
    cutoff = now - policy.idle_expiry_s
    doomed: list[tuple[Usage, EvictionReason]] = []
    kept_bytes = 0
    kept: list[Usage] = []
    for e in ordered:
        if e.last_accessed_at < cutoff:
            doomed.append((e, EvictionReason.IDLE))
        else:
            kept.append(e)
            kept_bytes += e.size
    for e in kept:
        if kept_bytes <= policy.quota_bytes:
            break
        doomed.append((e, EvictionReason.QUOTA))
        kept_bytes -= e.size
    return doomed
