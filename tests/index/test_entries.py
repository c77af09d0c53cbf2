"""``EntryIndex`` on SQLite and PostgreSQL: reservations, parts, commits and GitHub's lookup."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from ghacache.errors import EntryExists
from ghacache.index import Entry, EntryIndex, EntryState, open_index
from ghacache.index.catalog import Catalog
from ghacache.index.schema import MIGRATIONS, migrate
from ghacache.protocol.keys import Candidate, pick

REPO = "octo/repo"
MAIN = "refs/heads/main"
PR = "refs/pull/707/merge"
VERSION = "3ad75f27293d65a135214b8c82b296080f911dc107e52f1e7ec871a2eda46e69"


def url(path: Path) -> str:
    return f"sqlite:///{path}"


async def reserve(
    index: EntryIndex,
    key: str,
    *,
    now: float = 100.0,
    repo: str = REPO,
    scope: str = MAIN,
    version: str = VERSION,
    stale_before: float = 0.0,
    declared_size: int | None = None,
) -> tuple[Entry, Entry | None]:
    return await index.reserve(
        repo=repo,
        scope=scope,
        key=key,
        version=version,
        declared_size=declared_size,
        upload=f"up-{key}-{now}",
        now=now,
        stale_before=stale_before,
    )


async def save(
    index: EntryIndex,
    key: str,
    *,
    at: float,
    repo: str = REPO,
    scope: str = MAIN,
    version: str = VERSION,
    size: int = 10,
) -> Entry:
    """Reserve and commit an entry; ``at`` is its commit (creation) time."""
    entry, _ = await reserve(index, key, now=at - 1, repo=repo, scope=scope, version=version)
    committed = await index.commit(entry.id, size=size, blob=f"blob-{entry.id}", now=at)
    assert committed is not None
    return committed


async def find(
    index: EntryIndex,
    keys: list[str],
    *,
    scopes: list[str] | None = None,
    repo: str = REPO,
    version: str = VERSION,
) -> str | None:
    hit = await index.lookup(
        repo=repo, scopes=[MAIN] if scopes is None else scopes, keys=keys, version=version
    )
    return None if hit is None else hit.key


# -- open and migrate -------------------------------------------------------------------------------


async def test_open_creates_the_database_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "index.sqlite"
    idx = await open_index(url(path))
    try:
        assert path.is_file()
        rows = await idx.db.fetch_all("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    finally:
        await idx.close()


async def test_migrations_are_idempotent(index_url: str) -> None:
    first = await open_index(index_url)
    try:
        entry = await save(first, "kept", at=50)
    finally:
        await first.close()

    second = await open_index(index_url)  # migrates again: must be a no-op
    try:
        assert await migrate(second.db) == len(MIGRATIONS)  # and a third time
        rows = await second.db.fetch_all("SELECT version FROM schema_migrations")
        assert sorted(r[0] for r in rows) == list(range(1, len(MIGRATIONS) + 1))
        assert await second.get(entry.id) == entry
        assert await find(second, ["kept"]) == "kept"
    finally:
        await second.close()


@pytest.mark.parametrize(
    "bad",
    ["mysql://localhost/db", "file:///tmp/x", "/tmp/x.sqlite", "postgresql+psycopg://localhost/db"],
)
async def test_open_index_rejects_other_urls(bad: str) -> None:
    with pytest.raises(ValueError, match="use sqlite:///path or postgresql://"):
        await open_index(bad)


async def test_open_index_error_hides_the_password() -> None:
    with pytest.raises(ValueError, match="unsupported") as info:
        await open_index("mysql://user:s3cret@localhost/db")
    assert "s3cret" not in str(info.value)
    assert "mysql://user:***@localhost/db" in str(info.value)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("postgresql://localhost/db?pool_max=0", "pool_max >= 1"),
        ("postgresql://localhost/db?pool_min=5&pool_max=2", "pool_min <= pool_max"),
        ("postgresql://localhost/db?pool_max=many", "bad database URL pool option"),
        ("postgres://localhost/db?pool_timeout=-1", "pool_timeout > 0"),
        ("postgresql://localhost/db?pool_size=3", "unknown database URL option"),
    ],
)
async def test_open_index_rejects_bad_pool_options(bad: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await open_index(bad)


# -- reserve --------------------------------------------------------------------------------------------


async def test_reserve(index: EntryIndex) -> None:
    entry, replaced = await reserve(index, "k", now=123.5, declared_size=2048)
    assert replaced is None
    assert entry.id > 0
    assert (entry.repo, entry.scope, entry.key, entry.version) == (REPO, MAIN, "k", VERSION)
    assert entry.state is EntryState.RESERVED
    assert not entry.committed
    assert (entry.size, entry.declared_size, entry.blob) == (None, 2048, None)
    assert entry.upload == "up-k-123.5"
    assert entry.created_at == entry.updated_at == entry.last_accessed_at == 123.5
    assert await index.get(entry.id) == entry


async def test_get_unknown_entry(index: EntryIndex) -> None:
    assert await index.get(12345) is None


async def test_second_live_reservation_conflicts(index: EntryIndex) -> None:
    first, _ = await reserve(index, "k", now=100)
    with pytest.raises(EntryExists) as info:
        await reserve(index, "k", now=101, stale_before=50)
    assert info.value.status == 409
    assert "already exists" in info.value.message
    assert await index.get(first.id) == first


async def test_reservation_idle_exactly_at_the_cutoff_is_still_live(index: EntryIndex) -> None:
    await reserve(index, "k", now=100)
    with pytest.raises(EntryExists):
        await reserve(index, "k", now=200, stale_before=100)


@pytest.mark.parametrize(
    ("repo", "scope", "version", "key"),
    [
        pytest.param("octo/other", MAIN, VERSION, "k", id="repository"),
        pytest.param(REPO, PR, VERSION, "k", id="scope"),
        pytest.param(REPO, MAIN, "v2", "k", id="version"),
        pytest.param(REPO, MAIN, VERSION, "k2", id="key"),
        pytest.param(REPO, MAIN, VERSION, "K", id="key case"),
    ],
)
async def test_identity_is_repo_scope_version_and_key(
    index: EntryIndex, repo: str, scope: str, version: str, key: str
) -> None:
    first, _ = await reserve(index, "k")
    second, replaced = await reserve(index, key, repo=repo, scope=scope, version=version)
    assert replaced is None
    assert second.id != first.id
    assert await index.get(first.id) == first


async def test_stale_reservation_is_replaced(index: EntryIndex) -> None:
    old, _ = await reserve(index, "k", now=100, declared_size=5)
    assert await index.add_part(old.id, "p1", 5, now=100)
    new, replaced = await reserve(index, "k", now=1000, stale_before=500)
    assert replaced == old
    assert new.id != old.id
    assert new.upload != old.upload
    assert new.created_at == 1000
    assert await index.get(old.id) is None
    assert await index.parts(old.id) == {}  # the old reservation's parts went with it
    assert await index.find_pending(repo=REPO, scope=MAIN, key="k", version=VERSION) == new


async def test_an_uploaded_but_unfinalized_entry_can_go_stale(index: EntryIndex) -> None:
    old, _ = await reserve(index, "k", now=100)
    assert await index.mark_uploaded(old.id, 10, now=200)
    with pytest.raises(EntryExists):
        await reserve(index, "k", now=1000, stale_before=200)
    _, replaced = await reserve(index, "k", now=1000, stale_before=201)
    assert replaced is not None
    assert replaced.state is EntryState.UPLOADED


async def test_activity_keeps_a_reservation_alive(index: EntryIndex) -> None:
    entry, _ = await reserve(index, "k", now=100)
    assert await index.add_part(entry.id, "p1", 1, now=600)
    with pytest.raises(EntryExists):
        await reserve(index, "k", now=1000, stale_before=500)


async def test_committed_entry_is_never_replaced(index: EntryIndex) -> None:
    committed = await save(index, "k", at=100)
    with pytest.raises(EntryExists):
        await reserve(index, "k", now=1e9, stale_before=1e9)
    assert await index.get(committed.id) == committed


async def test_concurrent_reservations_one_wins(index: EntryIndex) -> None:
    results = await asyncio.gather(
        *(reserve(index, "race", now=100 + i) for i in range(8)), return_exceptions=True
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert len(losers) == 7
    assert all(isinstance(e, EntryExists) for e in losers)


# -- parts, upload, commit --------------------------------------------------------------------------------


async def test_parts(index: EntryIndex) -> None:
    entry, _ = await reserve(index, "k")
    assert await index.parts(entry.id) == {}
    assert await index.add_part(entry.id, "o00000000000000000010", 6, now=101)
    assert await index.add_part(entry.id, "o00000000000000000000", 10, now=102)
    assert await index.add_part(entry.id, "o00000000000000000010", 7, now=103)  # replaced
    assert await index.parts(entry.id) == {
        "o00000000000000000000": 10,
        "o00000000000000000010": 7,
    }
    updated = await index.get(entry.id)
    assert updated is not None
    assert updated.updated_at == 103
    assert updated.created_at == 100


async def test_add_part_on_committed_or_unknown_entry_returns_false(index: EntryIndex) -> None:
    committed = await save(index, "k", at=100)
    assert not await index.add_part(committed.id, "late", 1, now=200)
    assert await index.parts(committed.id) == {}
    assert not await index.add_part(999_999, "p", 1, now=200)
    assert await index.parts(999_999) == {}


async def test_mark_uploaded(index: EntryIndex) -> None:
    entry, _ = await reserve(index, "k")
    assert await index.mark_uploaded(entry.id, 4096, now=150)
    uploaded = await index.get(entry.id)
    assert uploaded is not None
    assert uploaded.state is EntryState.UPLOADED
    assert (uploaded.size, uploaded.updated_at) == (4096, 150)
    assert await find(index, ["k"]) is None  # uploaded is not yet visible
    assert await index.find_pending(repo=REPO, scope=MAIN, key="k", version=VERSION) == uploaded


async def test_mark_uploaded_on_committed_returns_false(index: EntryIndex) -> None:
    committed = await save(index, "k", at=100, size=3)
    assert not await index.mark_uploaded(committed.id, 999, now=200)
    assert await index.get(committed.id) == committed


async def test_commit_makes_the_entry_visible(index: EntryIndex) -> None:
    entry, _ = await reserve(index, "k", now=100)
    await index.add_part(entry.id, "blob", 42, now=110)
    assert await find(index, ["k"]) is None
    committed = await index.commit(entry.id, size=42, blob="1-abcdef", now=120)
    assert committed is not None
    assert committed.state is EntryState.COMMITTED and committed.committed
    assert (committed.size, committed.blob) == (42, "1-abcdef")
    assert committed.created_at == committed.updated_at == committed.last_accessed_at == 120
    assert await index.parts(entry.id) == {}
    hit = await index.lookup(repo=REPO, scopes=[MAIN], keys=["k"], version=VERSION)
    assert hit == committed
    assert await index.find_pending(repo=REPO, scope=MAIN, key="k", version=VERSION) is None


async def test_commit_twice_or_unknown_returns_none(index: EntryIndex) -> None:
    committed = await save(index, "k", at=100)
    assert await index.commit(committed.id, size=99, blob="other", now=200) is None
    assert await index.get(committed.id) == committed
    assert await index.commit(424242, size=1, blob="b", now=200) is None


# -- lookup ---------------------------------------------------------------------------------------------


async def test_lookup_exact_and_prefix(index: EntryIndex) -> None:
    await save(index, "npm-linux-abc", at=100)
    await save(index, "npm-linux-def", at=200)
    assert await find(index, ["npm-linux-abc"]) == "npm-linux-abc"
    assert await find(index, ["npm-linux-"]) == "npm-linux-def"
    assert await find(index, ["npm-"]) == "npm-linux-def"
    assert await find(index, ["npm-linux-x"]) is None
    assert await find(index, ["NPM-"]) is None  # case-sensitive
    assert await find(index, ["npm-linux-abcd"]) is None  # longer than every key


async def test_lookup_exact_beats_newer_prefix(index: EntryIndex) -> None:
    await save(index, "k", at=100)
    await save(index, "k-newer", at=200)
    assert await find(index, ["k"]) == "k"


async def test_lookup_prefix_is_newest_created_not_newest_id(index: EntryIndex) -> None:
    first = await save(index, "k-a", at=300)  # lower id, newer
    second = await save(index, "k-b", at=200)
    assert first.id < second.id
    assert await find(index, ["k-"]) == "k-a"


async def test_lookup_prefix_tie_broken_by_entry_id(index: EntryIndex) -> None:
    await save(index, "k-b", at=100)
    later = await save(index, "k-a", at=100)
    hit = await index.lookup(repo=REPO, scopes=[MAIN], keys=["k-"], version=VERSION)
    assert hit is not None and hit.id == later.id


async def test_lookup_creation_time_is_the_commit_time(index: EntryIndex) -> None:
    # Reserved first but committed last: it is the newest.
    slow, _ = await reserve(index, "k-slow", now=10)
    await save(index, "k-fast", at=50)
    await index.commit(slow.id, size=1, blob="b", now=90)
    assert await find(index, ["k-"]) == "k-slow"


async def test_lookup_restore_keys_in_order(index: EntryIndex) -> None:
    await save(index, "restore-a-1", at=300)
    await save(index, "restore-b-1", at=100)
    assert await find(index, ["primary", "restore-b-", "restore-a-"]) == "restore-b-1"
    assert await find(index, ["primary", "restore-a-", "restore-b-"]) == "restore-a-1"
    assert await find(index, ["primary", "nothing-"]) is None


async def test_lookup_respects_repository(index: EntryIndex) -> None:
    await save(index, "k", at=100, repo="octo/other")
    assert await find(index, ["k"]) is None
    assert await find(index, ["k"], repo="octo/other") == "k"


async def test_lookup_respects_version(index: EntryIndex) -> None:
    await save(index, "k-old", at=100, version="v1")
    await save(index, "k-new", at=200, version="v2")
    assert await find(index, ["k-"], version="v1") == "k-old"
    assert await find(index, ["k-"], version="v2") == "k-new"
    assert await find(index, ["k-"], version="v") is None  # versions are not prefixes


async def test_lookup_scope_order(index: EntryIndex) -> None:
    await save(index, "k", at=100, scope=MAIN)
    await save(index, "k-pr", at=50, scope=PR)
    # The PR scope is searched first: its prefix match beats main's exact match.
    assert await find(index, ["k"], scopes=[PR, MAIN]) == "k-pr"
    assert await find(index, ["k"], scopes=[MAIN, PR]) == "k"
    # A scope the token cannot read is never searched.
    assert await find(index, ["k-pr"], scopes=[MAIN]) is None
    # Falls through to the next scope on a miss.
    assert await find(index, ["k"], scopes=["refs/heads/other", MAIN]) == "k"


async def test_lookup_returns_the_scope_that_matched(index: EntryIndex) -> None:
    await save(index, "k", at=100, scope=MAIN)
    hit = await index.lookup(repo=REPO, scopes=[PR, MAIN], keys=["k"], version=VERSION)
    assert hit is not None and hit.scope == MAIN


async def test_lookup_ignores_pending_entries(index: EntryIndex) -> None:
    await save(index, "k-committed", at=100)
    pending, _ = await reserve(index, "k-pending", now=500)
    await index.mark_uploaded(pending.id, 1, now=600)
    assert await find(index, ["k-"]) == "k-committed"
    assert await find(index, ["k-pending"]) is None


@pytest.mark.parametrize(("scopes", "keys"), [([], ["k"]), ([MAIN], [])])
async def test_lookup_with_nothing_to_search(
    index: EntryIndex, scopes: list[str], keys: list[str]
) -> None:
    await save(index, "k", at=100)
    assert await index.lookup(repo=REPO, scopes=scopes, keys=keys, version=VERSION) is None


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("buildkit-test-partial-foo", "buildkit-test-partial-foo1"),
        ("buildkit-test-partial-", "buildkit-test-partial-foo1"),
        ("buildkit-test-partial-foo2", "buildkit-test-partial-foo22"),
        ("buildkit-test-partial-foo3", None),
        ("buildkit-test-partial-fo", "buildkit-test-partial-fo"),
    ],
)
async def test_lookup_go_actions_cache_partial_key_order(
    index: EntryIndex, prefix: str, expected: str | None
) -> None:
    # go-actions-cache cache_test.go TestPartialKeyOrder: saved as foo22, fo, foo1.
    for i, suffix in enumerate(["foo22", "fo", "foo1"]):
        await save(index, "buildkit-test-partial-" + suffix, at=100 + i)
    assert await find(index, [prefix]) == expected


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("a%", "a%b"),
        ("a_", "a_b"),
        ("a%b", "a%b"),
        ("a_b", "a_b"),
        ("%", None),
        ("_", None),
        ("a", "axb"),  # the newest of all three
        ("a\\", None),
        ("ax", "axb"),
    ],
)
async def test_lookup_prefix_matches_wildcard_characters_literally(
    index: EntryIndex, prefix: str, expected: str | None
) -> None:
    await save(index, "a%b", at=100)
    await save(index, "a_b", at=200)
    await save(index, "axb", at=300)
    assert await find(index, [prefix]) == expected


@pytest.mark.parametrize(
    ("keys", "prefix", "expected"),
    [
        (["é-1", "f-1"], "é", "é-1"),
        (["k😀", "k"], "k😀", "k😀"),
        (["k😀x"], "k", "k😀x"),
        (["k\U0010fffd"], "k", "k\U0010fffd"),
        (
            ["index-buildkit-1-f921bd05#1", "index-buildkit-1-f921bd05#2"],
            "index-buildkit-1-f921bd05#",
            "index-buildkit-1-f921bd05#2",
        ),
        (["ab"], "a\U0010ffff", None),
    ],
)
async def test_lookup_prefix_with_non_ascii_keys(
    index: EntryIndex, keys: list[str], prefix: str, expected: str | None
) -> None:
    for i, key in enumerate(keys):
        await save(index, key, at=100 + i)
    assert await find(index, [prefix]) == expected


async def test_lookup_ten_keys_over_several_scopes(index: EntryIndex) -> None:
    scopes = [f"refs/heads/s{i}" for i in range(5)]
    keys = [f"miss-{i}-" for i in range(9)] + ["hit-"]
    await save(index, "hit-1", at=100, scope=scopes[3])
    await save(index, "hit-2", at=200, scope=scopes[4])
    assert await find(index, keys, scopes=scopes) == "hit-1"


async def test_lookup_agrees_with_pick_over_every_entry(index: EntryIndex) -> None:
    """Random entries with shared prefixes and equal creation times, random lookups: the
    statement's answer is what ``pick`` chooses from all committed entries."""
    rng = random.Random(7)
    scopes = [MAIN, PR, "refs/heads/dev"]
    versions = [VERSION, "v2"]
    saved: dict[tuple[str, str, str], Entry] = {}
    for _ in range(80):
        key = "".join(rng.choice("ab-") for _ in range(rng.randint(1, 4)))
        ident = (rng.choice(scopes), rng.choice(versions), key)
        if ident not in saved:
            at = float(rng.choice([100, 200, 300, 400]))  # ties: the entry id decides
            saved[ident] = await save(index, key, at=at, scope=ident[0], version=ident[1])
    for _ in range(150):
        version = rng.choice(versions)
        order = rng.sample(scopes, rng.randint(1, 3))
        keys = list(
            dict.fromkeys(
                "".join(rng.choice("ab-") for _ in range(rng.randint(1, 3)))
                for _ in range(rng.randint(1, 4))
            )
        )
        expected = pick(
            (
                Candidate(entry_id=e.id, scope=e.scope, key=e.key, created_at=e.created_at)
                for e in saved.values()
                if e.version == version
            ),
            scopes=order,
            keys=keys,
        )
        hit = await index.lookup(repo=REPO, scopes=order, keys=keys, version=version)
        assert (None if hit is None else hit.id) == (expected and expected.entry_id), (
            order,
            keys,
        )


# -- access times, listing, expiry ---------------------------------------------------------------------


async def test_touch_moves_last_access_forward_only(index: EntryIndex) -> None:
    entry = await save(index, "k", at=100)
    await index.touch(entry.id, now=500)
    touched = await index.get(entry.id)
    assert touched is not None
    assert touched.last_accessed_at == 500
    assert (touched.created_at, touched.updated_at) == (100, 100)
    await index.touch(entry.id, now=300)  # an older clock reading never moves it back
    again = await index.get(entry.id)
    assert again is not None and again.last_accessed_at == 500


async def test_lookup_with_touch_at_records_the_access_of_a_hit(index: EntryIndex) -> None:
    entry = await save(index, "k-1", at=100)
    other = await save(index, "other", at=100)
    hit = await index.lookup(
        repo=REPO, scopes=[MAIN], keys=["k-2", "k-"], version=VERSION, touch_at=500
    )
    assert hit is not None and hit.id == entry.id
    assert hit.last_accessed_at == 100  # the entry as it was read
    touched = await index.get(entry.id)
    assert touched is not None and touched.last_accessed_at == 500
    untouched = await index.get(other.id)
    assert untouched is not None and untouched.last_accessed_at == 100
    # A miss writes nothing; an older clock reading never moves an access back.
    assert (
        await index.lookup(repo=REPO, scopes=[MAIN], keys=["x"], version=VERSION, touch_at=900)
        is None
    )
    await index.lookup(repo=REPO, scopes=[MAIN], keys=["k-1"], version=VERSION, touch_at=300)
    again = await index.get(entry.id)
    assert again is not None and again.last_accessed_at == 500


async def test_list_committed(index: EntryIndex) -> None:
    await save(index, "k", at=100, scope=MAIN)
    await save(index, "k", at=200, scope=PR)
    await save(index, "k", at=300, scope="refs/heads/unreadable")
    await save(index, "k-longer", at=400, scope=MAIN)
    await reserve(index, "k", scope="refs/heads/pending")
    listed = await index.list_committed(repo=REPO, scopes=[MAIN, PR, "refs/heads/pending"], key="k")
    assert [(e.scope, e.created_at) for e in listed] == [(PR, 200), (MAIN, 100)]
    assert await index.list_committed(repo=REPO, scopes=[], key="k") == []
    assert await index.list_committed(repo="octo/other", scopes=[MAIN], key="k") == []


async def test_stale_reservations_and_delete_pending(index: EntryIndex) -> None:
    old, _ = await reserve(index, "old", now=100)
    busy, _ = await reserve(index, "busy", now=100)
    await index.add_part(busy.id, "p", 1, now=900)
    fresh, _ = await reserve(index, "fresh", now=800)
    uploaded, _ = await reserve(index, "uploaded", now=100)
    await index.mark_uploaded(uploaded.id, 5, now=150)
    committed = await save(index, "committed", at=100)

    stale = await index.stale_reservations(before=500)
    assert sorted(e.key for e in stale) == ["old", "uploaded"]
    assert {e.key for e in await index.stale_reservations(before=100)} == set()

    assert await index.delete_pending(old.id, before=500)
    assert await index.get(old.id) is None
    assert not await index.delete_pending(old.id, before=500)  # already gone
    assert not await index.delete_pending(fresh.id, before=500)  # still live
    assert not await index.delete_pending(committed.id, before=1e9)  # never committed ones
    assert await index.get(fresh.id) is not None
    assert await index.get(committed.id) == committed


async def test_delete_pending_loses_to_activity_after_the_scan(index: EntryIndex) -> None:
    entry, _ = await reserve(index, "k", now=100)
    assert [e.id for e in await index.stale_reservations(before=500)] == [entry.id]
    await index.add_part(entry.id, "p", 1, now=600)  # the upload resumed meanwhile
    assert not await index.delete_pending(entry.id, before=500)
    assert await index.parts(entry.id) == {"p": 1}


async def test_pending_uploads_and_committed_blobs(index: EntryIndex) -> None:
    a, _ = await reserve(index, "a", now=100)
    b, _ = await reserve(index, "b", now=100)
    await index.mark_uploaded(b.id, 1, now=101)
    c = await save(index, "c", at=100)
    assert await index.pending_uploads() == {a.upload, b.upload}
    assert await Catalog(index.db).committed_blob_map() == {c.id: c.blob}
