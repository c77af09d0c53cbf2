"""GitHub's eviction policy as a pure function (``protocol.eviction.plan``) and per-repo policies.

Idle entries (not accessed within the expiry) go first; then, while the repository is over
its quota, the least recently accessed entries go (ties: older creation, then lower id).
"""

from __future__ import annotations

import pytest

from ghacache.protocol.eviction import EvictionReason, Policy, Usage, plan
from ghacache.server.maintenance import PolicyBook

IDLE = EvictionReason.IDLE
QUOTA = EvictionReason.QUOTA
DAY = 86400.0
NOW = 1_000 * DAY
WEEK = Policy(quota_bytes=100, idle_expiry_s=7 * DAY)


def u(entry_id: int, size: int, accessed: float, created: float | None = None) -> Usage:
    """An entry; times are offsets (seconds) before NOW; created defaults to accessed."""
    return Usage(
        entry_id=entry_id,
        size=size,
        created_at=NOW - (accessed if created is None else created),
        last_accessed_at=NOW - accessed,
    )


def ids(planned: list[tuple[Usage, EvictionReason]]) -> list[tuple[int, EvictionReason]]:
    return [(e.entry_id, r) for e, r in planned]


CASES = [
    pytest.param([], WEEK, [], id="empty repository"),
    pytest.param([u(1, 40, 10), u(2, 60, 5)], WEEK, [], id="exact fit keeps everything"),
    pytest.param(
        [u(1, 40, 10), u(2, 61, 5)], WEEK, [(1, QUOTA)], id="one byte over evicts the LRU entry"
    ),
    pytest.param(
        [u(1, 10, 30), u(2, 90, 20), u(3, 50, 10), u(4, 30, 1)],
        WEEK,
        # 180 bytes: the two least recently accessed go (100 left, exactly the quota).
        [(1, QUOTA), (2, QUOTA)],
        id="LRU order until it fits",
    ),
    pytest.param(
        # Entry 1 is the oldest and biggest but was restored most recently: it stays.
        [u(1, 70, accessed=1, created=500), u(2, 20, 30), u(3, 20, 20)],
        WEEK,
        [(2, QUOTA)],
        id="recent access beats older creation and larger size",
    ),
    pytest.param(
        # Input order must not matter.
        [u(4, 30, 1), u(3, 50, 10), u(2, 90, 20), u(1, 10, 30)],
        WEEK,
        [(1, QUOTA), (2, QUOTA)],
        id="input order irrelevant",
    ),
    pytest.param(
        [u(1, 1, 8 * DAY), u(2, 1, 7 * DAY + 1), u(3, 1, 7 * DAY), u(4, 1, 1)],
        WEEK,
        [(1, IDLE), (2, IDLE)],
        id="idle past expiry go; exactly at expiry stays",
    ),
    pytest.param(
        [u(1, 80, 8 * DAY), u(2, 60, 2), u(3, 30, 1)],
        WEEK,
        # Removing the idle entry already brings 170 bytes down to 90: no quota eviction.
        [(1, IDLE)],
        id="idle removal counts toward the quota",
    ),
    pytest.param(
        [u(1, 10, 9 * DAY), u(2, 60, 3), u(3, 50, 2), u(4, 40, 1)],
        WEEK,
        # After the idle entry, 150 bytes remain: the LRU survivor goes for quota.
        [(1, IDLE), (2, QUOTA)],
        id="idle first, then quota",
    ),
    pytest.param(
        # Same access time; entry 2 was created first (30 s ago), then 1, then 3.
        [u(3, 60, 5, created=10), u(1, 60, 5, created=20), u(2, 60, 5, created=30)],
        WEEK,
        [(2, QUOTA), (1, QUOTA)],
        id="access tie: older creation first",
    ),
    pytest.param(
        [u(7, 60, 5), u(2, 60, 5), u(5, 60, 5)],
        WEEK,
        [(2, QUOTA), (5, QUOTA)],
        id="access and creation tie: lower id first",
    ),
    pytest.param(
        [u(1, 10, 3), u(2, 20, 2), u(3, 30, 1)],
        Policy(quota_bytes=0, idle_expiry_s=7 * DAY),
        [(1, QUOTA), (2, QUOTA), (3, QUOTA)],
        id="zero quota evicts everything with bytes",
    ),
    pytest.param(
        [u(1, 0, 3), u(2, 0, 2)],
        Policy(quota_bytes=0, idle_expiry_s=7 * DAY),
        [],
        id="zero quota, empty entries fit",
    ),
    pytest.param(
        [u(1, 500, 3), u(2, 1, 2), u(3, 1, 1)],
        WEEK,
        [(1, QUOTA)],
        id="one huge LRU entry is enough",
    ),
    pytest.param(
        [u(1, 1, 3), u(2, 1, 2), u(3, 500, 1)],
        WEEK,
        # The newest entry alone exceeds the quota: everything goes, the newest last.
        [(1, QUOTA), (2, QUOTA), (3, QUOTA)],
        id="newest entry alone over quota",
    ),
    pytest.param(
        [u(1, 10, 2 * DAY), u(2, 10, 1)],
        Policy(quota_bytes=100, idle_expiry_s=DAY),
        [(1, IDLE)],
        id="short expiry",
    ),
]


@pytest.mark.parametrize(("entries", "policy", "expected"), CASES)
def test_plan(
    entries: list[Usage], policy: Policy, expected: list[tuple[int, EvictionReason]]
) -> None:
    assert ids(plan(entries, policy=policy, now=NOW)) == expected


def test_plan_returns_the_given_usages_and_never_repeats() -> None:
    entries = [u(i, 30, 100 - i) for i in range(10)]
    planned = plan(iter(entries), policy=WEEK, now=NOW)  # any iterable, even one-shot
    assert [e for e, _ in planned] == entries[:7]
    assert len({e.entry_id for e, _ in planned}) == len(planned)
    kept = sum(e.size for e in entries) - sum(e.size for e, _ in planned)
    assert kept <= WEEK.quota_bytes
    # Minimal: keeping the last evicted entry too would break the quota.
    assert kept + planned[-1][0].size > WEEK.quota_bytes


def test_plan_does_not_depend_on_time_for_quota() -> None:
    entries = [u(1, 60, 5), u(2, 60, 4)]
    assert ids(plan(entries, policy=WEEK, now=NOW)) == [(1, QUOTA)]
    # Much later both are idle; idleness wins over quota as the reason.
    assert ids(plan(entries, policy=WEEK, now=NOW + 30 * DAY)) == [(1, IDLE), (2, IDLE)]


def test_reason_values_are_stable_strings() -> None:
    # Recorded in the index and shown by the API: these strings are an interface.
    assert [str(r) for r in EvictionReason] == ["idle", "quota", "deleted", "missing"]


def test_policy_book_overrides() -> None:
    big = Policy(quota_bytes=1_000, idle_expiry_s=30 * DAY)
    book = PolicyBook(default=WEEK, overrides={"octo/big": big})
    assert book.for_repo("octo/big") is big
    assert book.for_repo("octo/repo") is WEEK
    assert book.for_repo("octo/big2") is WEEK  # exact names only
    entries = [u(1, 300, 10 * DAY), u(2, 300, 2), u(3, 300, 1)]
    assert ids(plan(entries, policy=book.for_repo("octo/repo"), now=NOW)) == [
        (1, IDLE),
        (2, QUOTA),
        (3, QUOTA),
    ]
    assert ids(plan(entries, policy=book.for_repo("octo/big"), now=NOW)) == []


def test_policy_book_default_has_no_overrides() -> None:
    book = PolicyBook(default=WEEK)
    assert book.for_repo("any/repo") is WEEK
