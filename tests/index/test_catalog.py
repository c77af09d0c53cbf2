"""``Catalog`` on SQLite and PostgreSQL: listing, usage, eviction and its record."""

from __future__ import annotations

import pytest

from ghacache.index import EntryIndex
from ghacache.index.catalog import Catalog, RepoUsage
from ghacache.protocol.eviction import EvictionReason, Usage
from tests.index.test_entries import PR, REPO, VERSION, reserve, save

OTHER = "octo/other"


@pytest.fixture
def catalog(index: EntryIndex) -> Catalog:
    return Catalog(index.db)


async def test_list_entries_filters_sorts_and_pages(index: EntryIndex, catalog: Catalog) -> None:
    a = await save(index, "npm-a", at=100, size=30)
    b = await save(index, "npm-b", at=200, size=10, scope=PR)
    c = await save(index, "pip-c", at=300, size=20)
    await save(index, "npm-x", at=400, repo=OTHER)
    await reserve(index, "npm-pending", now=500)
    await index.touch(a.id, now=1000)

    total, listed = await catalog.list_entries(repo=REPO)
    assert total == 3
    assert [e.key for e in listed] == ["npm-a", "pip-c", "npm-b"]  # last access, newest first
    total, listed = await catalog.list_entries(repo=REPO, sort="size_in_bytes", descending=False)
    assert [e.id for e in listed] == [b.id, c.id, a.id]
    total, listed = await catalog.list_entries(repo=REPO, key_prefix="npm-", sort="created_at")
    assert (total, [e.key for e in listed]) == (2, ["npm-b", "npm-a"])
    total, listed = await catalog.list_entries(repo=REPO, ref=PR)
    assert (total, [e.key for e in listed]) == (1, ["npm-b"])
    total, listed = await catalog.list_entries(repo=REPO, sort="created_at", limit=1, offset=1)
    assert (total, [e.key for e in listed]) == (3, ["npm-b"])
    assert await catalog.list_entries(repo="nobody/none") == (0, [])


async def test_find(index: EntryIndex, catalog: Catalog) -> None:
    first = await save(index, "k", at=100)
    second = await save(index, "k", at=200, version="v2", scope=PR)
    await save(index, "k-longer", at=300)
    assert await catalog.find(repo=REPO, key="k") == [first, second]
    assert await catalog.find(repo=REPO, key="k", ref=PR) == [second]
    assert await catalog.find(repo=REPO, key="K") == []


async def test_usage_and_usages_of(index: EntryIndex, catalog: Catalog) -> None:
    a = await save(index, "a", at=100, size=5)
    b = await save(index, "b", at=200, size=7)
    await save(index, "c", at=300, size=11, repo=OTHER)
    await reserve(index, "pending", now=50)
    assert await catalog.usage() == [  # ordered by repository
        RepoUsage(repo=OTHER, size=11, count=1, oldest_access=300.0),
        RepoUsage(repo=REPO, size=12, count=2, oldest_access=100.0),
    ]
    assert await catalog.usage(REPO) == [
        RepoUsage(repo=REPO, size=12, count=2, oldest_access=100.0)
    ]
    assert sorted(await catalog.usages_of(REPO), key=lambda u: u.entry_id) == [
        Usage(entry_id=a.id, size=5, created_at=100.0, last_accessed_at=100.0),
        Usage(entry_id=b.id, size=7, created_at=200.0, last_accessed_at=200.0),
    ]


async def test_remove_records_evictions(index: EntryIndex, catalog: Catalog) -> None:
    a = await save(index, "a", at=100, size=5)
    b = await save(index, "b", at=200, size=7)
    kept = await save(index, "kept", at=300, size=9)
    pending, _ = await reserve(index, "pending", now=50)

    removed = await catalog.remove([a.id, b.id, pending.id], EvictionReason.QUOTA, now=1000)
    assert sorted(e.id for e in removed) == [a.id, b.id]
    assert await index.get(a.id) is None
    assert await index.get(pending.id) is not None  # only committed entries are removed
    total, record = await catalog.evictions()
    assert total == 2
    assert {(e.entry_id, e.key, e.size, e.reason, e.evicted_at) for e in record} == {
        (a.id, "a", 5, EvictionReason.QUOTA, 1000.0),
        (b.id, "b", 7, EvictionReason.QUOTA, 1000.0),
    }
    assert await catalog.eviction_counts() == {(REPO, "quota"): (2, 12)}

    await index.touch(kept.id, now=2000)  # restored after the sweep planned
    assert (
        await catalog.remove([kept.id], EvictionReason.IDLE, now=3000, accessed_before=1500) == []
    )
    assert await index.get(kept.id) is not None


async def test_evictions_filter_and_page(index: EntryIndex, catalog: Catalog) -> None:
    ours = [await save(index, f"k{i}", at=100 + i) for i in range(3)]
    theirs = await save(index, "x", at=100, repo=OTHER)
    for i, entry in enumerate(ours):
        await catalog.remove([entry.id], EvictionReason.IDLE, now=1000 + i)
    await catalog.remove([theirs.id], EvictionReason.DELETED, now=500)
    total, page = await catalog.evictions(repo=REPO, limit=2, offset=1)
    assert total == 3
    assert [e.key for e in page] == ["k1", "k0"]  # newest first
    total, everything = await catalog.evictions()
    assert total == 4 and everything[-1].repo == OTHER


async def test_blob_queries_and_replace_blob(index: EntryIndex, catalog: Catalog) -> None:
    blob = await save(index, "buildkit-blob-1-sha256:aa", at=100)
    await save(index, "buildkit-blob-1-sha256:bb", at=100, scope=PR)
    await save(index, "buildkit-blob-1-sha256:cc", at=100, version="other")
    old = await save(index, "index-build-1-f00#1", at=100)
    new = await save(index, "index-build-1-f00#2", at=200)
    pr = await save(index, "index-build-1-f00#1", at=150, scope=PR)
    assert await catalog.buildkit_blobs(REPO, VERSION) == {"sha256:aa", "sha256:bb"}
    newest = await catalog.newest_buildkit_indexes(REPO, VERSION)
    assert sorted(e.id for e in newest) == sorted([new.id, pr.id])
    assert old.blob is not None and blob.blob is not None
    assert await catalog.replace_blob(old.id, old_blob=old.blob, new_blob="merged", size=3)
    assert not await catalog.replace_blob(old.id, old_blob=old.blob, new_blob="again", size=4)
    replaced = await index.get(old.id)
    assert replaced is not None and (replaced.blob, replaced.size) == ("merged", 3)
    assert (await catalog.committed_blob_map())[blob.id] == blob.blob
