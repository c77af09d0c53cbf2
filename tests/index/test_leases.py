"""``Leases`` on SQLite and PostgreSQL: take, renew, contend, expire, release, and races."""

from __future__ import annotations

import asyncio

import pytest

from ghacache.index import EntryIndex, Leases, open_index

JOB = "eviction"


@pytest.fixture
def leases(index: EntryIndex) -> Leases:
    return Leases(index.db)


async def test_acquire_a_free_lease(leases: Leases) -> None:
    assert await leases.holder(JOB, now=100) is None
    assert await leases.acquire(JOB, "a", ttl_s=10, now=100)
    assert await leases.holder(JOB, now=100) == "a"
    assert await leases.holder(JOB, now=109.9) == "a"
    assert await leases.holder(JOB, now=110) is None  # expires_at is not > now


async def test_the_holder_renews(leases: Leases) -> None:
    assert await leases.acquire(JOB, "a", ttl_s=10, now=100)
    assert await leases.acquire(JOB, "a", ttl_s=10, now=105)
    assert await leases.holder(JOB, now=112) == "a"  # now until 115
    assert await leases.acquire(JOB, "a", ttl_s=10, now=130)  # even once expired
    assert await leases.holder(JOB, now=139) == "a"


async def test_another_holder_waits_until_expiry(leases: Leases) -> None:
    assert await leases.acquire(JOB, "a", ttl_s=10, now=100)
    assert not await leases.acquire(JOB, "b", ttl_s=10, now=105)
    assert not await leases.acquire(JOB, "b", ttl_s=10, now=109.999)
    assert await leases.holder(JOB, now=109) == "a"
    assert await leases.acquire(JOB, "b", ttl_s=10, now=110)  # a's lease ran out: taken over
    assert await leases.holder(JOB, now=110) == "b"
    assert not await leases.acquire(JOB, "a", ttl_s=10, now=111)


async def test_release(leases: Leases) -> None:
    assert await leases.acquire(JOB, "a", ttl_s=10, now=100)
    await leases.release(JOB, "b")  # not b's: a no-op
    assert await leases.holder(JOB, now=101) == "a"
    await leases.release(JOB, "a")
    assert await leases.holder(JOB, now=101) is None
    assert await leases.acquire(JOB, "b", ttl_s=10, now=101)
    await leases.release("never-taken", "a")


async def test_leases_are_independent_by_name(leases: Leases) -> None:
    assert await leases.acquire("eviction", "a", ttl_s=10, now=100)
    assert await leases.acquire("reconcile", "b", ttl_s=10, now=100)
    assert await leases.holder("eviction", now=100) == "a"
    assert await leases.holder("reconcile", now=100) == "b"


@pytest.mark.parametrize("ttl_s", [0, -1.0])
async def test_ttl_must_be_positive(leases: Leases, ttl_s: float) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await leases.acquire(JOB, "a", ttl_s=ttl_s, now=100)


@pytest.mark.parametrize("held_until", [None, 150.0], ids=["free", "expired"])
async def test_exactly_one_of_many_replicas_wins(
    index_url: str, index: EntryIndex, held_until: float | None
) -> None:
    if held_until is not None:
        assert await Leases(index.db).acquire(JOB, "dead", ttl_s=held_until - 100, now=100)
    replicas = [await open_index(index_url) for _ in range(6)]
    try:
        won = await asyncio.gather(
            *(
                Leases(r.db).acquire(JOB, f"replica-{i}", ttl_s=30, now=200)
                for i, r in enumerate(replicas)
            )
        )
        assert sum(won) == 1
        assert await Leases(index.db).holder(JOB, now=200) == f"replica-{won.index(True)}"
    finally:
        for r in replicas:
            await r.close()


async def test_held_lists_every_lease_expired_ones_too(leases: Leases) -> None:
    assert await leases.held() == []
    assert await leases.acquire("b-job", "r1", ttl_s=10, now=0)
    assert await leases.acquire("a-job", "r2", ttl_s=10, now=0)
    assert await leases.held() == [("a-job", "r2"), ("b-job", "r1")]
    await leases.release("a-job", "r2")
    assert await leases.held() == [("b-job", "r1")]  # expired (now=100) but still recorded
    assert await leases.holder("b-job", now=100) is None
