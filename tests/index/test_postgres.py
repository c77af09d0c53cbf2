"""PostgreSQL specifics: placeholders, URL options, errors, and replicas racing on one database.

"Replicas" are separate ``PostgresDatabase`` instances, each with its own pool, so every
race below is a race between server sessions, as between server processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import psycopg
import pytest

from ghacache.errors import EntryExists, MetadataError
from ghacache.index import Entry, EntryIndex, EntryState, open_index
from ghacache.index.postgres import PoolOptions, PostgresDatabase, parse_url, to_pyformat
from ghacache.index.schema import MIGRATIONS, migrate

REPO = "octo/repo"
MAIN = "refs/heads/main"
VERSION = "v1"
REPLICAS = 4


@pytest.fixture
async def db(postgres_url: str) -> AsyncIterator[PostgresDatabase]:
    database = await PostgresDatabase.open(postgres_url)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
async def replicas(postgres_url: str) -> AsyncIterator[list[EntryIndex]]:
    opened = [await open_index(f"{postgres_url}?pool_max=3") for _ in range(REPLICAS)]
    try:
        yield opened
    finally:
        for idx in opened:
            await idx.close()


async def reserve(
    index: EntryIndex, key: str, *, now: float, stale_before: float = 0.0, upload: str = "up"
) -> tuple[Entry, Entry | None]:
    return await index.reserve(
        repo=REPO,
        scope=MAIN,
        key=key,
        version=VERSION,
        declared_size=None,
        upload=upload,
        now=now,
        stale_before=stale_before,
    )


async def wait_for_lock_waiters(url: str, count: int = 1, timeout_s: float = 10.0) -> None:
    """Return once ``count`` sessions of this database wait on a lock (a bounded poll)."""
    deadline = time.monotonic() + timeout_s
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            cur = await conn.execute(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            row = await cur.fetchone()
            if row is not None and row[0] >= count:
                return
            assert time.monotonic() < deadline, f"no {count} lock waiter(s) after {timeout_s}s"
            await asyncio.sleep(0.01)


async def in_transaction(
    db: PostgresDatabase, *statements: str, then_raise: Exception | None = None
) -> None:
    async with db.transaction() as tx:
        for statement in statements:
            await tx.execute(statement)
        if then_raise is not None:
            raise then_raise


# -- placeholders and URLs ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("SELECT 1", "SELECT 1"),
        ("SELECT ?", "SELECT %s"),
        ("WHERE a = ? AND b IN (?, ?)", "WHERE a = %s AND b IN (%s, %s)"),
        ("SELECT '50%', ?", "SELECT '50%%', %s"),
        ("SELECT 'a%sb', '%%'", "SELECT 'a%%sb', '%%%%'"),
    ],
)
def test_to_pyformat(sql: str, expected: str) -> None:
    assert to_pyformat(sql) == expected


def test_to_pyformat_translates_each_statement_once() -> None:
    assert to_pyformat("SELECT ? -- cached") is to_pyformat("SELECT ? -- cached")


async def test_percent_literals_reach_the_server_unchanged(db: PostgresDatabase) -> None:
    row = await db.fetch_one("SELECT ?, '50%', 'a%sb', '%%'", ("x",))
    assert row == ("x", "50%", "a%sb", "%%")
    assert await db.fetch_one("SELECT '100%'") == ("100%",)  # no parameters at all
    await db.execute("CREATE TABLE t (v TEXT)")
    assert await db.execute("INSERT INTO t (v) VALUES ('5%'), (?)", ("6%",)) == 2
    async with db.transaction() as tx:
        assert await tx.fetch_all("SELECT v FROM t WHERE v LIKE '%\\%' ORDER BY v") == [
            ("5%",),
            ("6%",),
        ]


@pytest.mark.parametrize(
    ("url", "conninfo", "options"),
    [
        ("postgres://h/db", "postgres://h/db", PoolOptions()),
        (
            "postgresql://u@h:5432/db?pool_max=4&sslmode=disable&pool_min=2&pool_timeout=3",
            "postgresql://u@h:5432/db?sslmode=disable",
            PoolOptions(min_size=2, max_size=4, timeout_s=3.0),
        ),
        ("postgresql://h/db?pool_min=0", "postgresql://h/db", PoolOptions(min_size=0)),
    ],
)
def test_parse_url_strips_pool_options(url: str, conninfo: str, options: PoolOptions) -> None:
    assert parse_url(url) == (conninfo, options)


# -- errors -----------------------------------------------------------------------------------------------


async def test_errors_become_metadata_errors(db: PostgresDatabase) -> None:
    with pytest.raises(MetadataError, match="database error"):
        await db.fetch_all("SELECT * FROM missing")
    await db.execute("CREATE TABLE t (v INTEGER PRIMARY KEY)")
    await db.execute("INSERT INTO t (v) VALUES (1)")
    with pytest.raises(MetadataError, match="duplicate key"):
        await in_transaction(db, "INSERT INTO t (v) VALUES (2)", "INSERT INTO t (v) VALUES (1)")
    assert await db.fetch_all("SELECT v FROM t") == [(1,)]  # rolled back, pool still usable


async def test_transaction_rolls_back_on_any_exception(db: PostgresDatabase) -> None:
    await db.execute("CREATE TABLE t (v INTEGER)")
    with pytest.raises(RuntimeError, match="boom"):
        await in_transaction(db, "INSERT INTO t (v) VALUES (1)", then_raise=RuntimeError("boom"))
    assert await db.fetch_all("SELECT v FROM t") == []


async def test_unreachable_server_is_a_metadata_error() -> None:
    with pytest.raises(MetadataError):
        await PostgresDatabase.open("postgresql://postgres@127.0.0.1:1/none?pool_timeout=0.5")


async def test_closed_database_is_a_metadata_error(postgres_url: str) -> None:
    database = await PostgresDatabase.open(postgres_url)
    await database.close()
    with pytest.raises(MetadataError):
        await database.fetch_one("SELECT 1")


# -- replicas ---------------------------------------------------------------------------------------------


async def test_write_transactions_serialise_across_replicas(postgres_url: str) -> None:
    a = await PostgresDatabase.open(postgres_url)
    b = await PostgresDatabase.open(postgres_url)
    order: list[str] = []

    async def second() -> None:
        async with b.transaction():
            order.append("b")

    try:
        async with a.transaction():
            task = asyncio.create_task(second())
            await wait_for_lock_waiters(postgres_url)
            assert await b.fetch_one("SELECT 1") == (1,)  # plain statements do not wait
            order.append("a")
        await task
        assert order == ["a", "b"]
    finally:
        await a.close()
        await b.close()


async def test_concurrent_migrations_from_fresh_connections(postgres_url: str) -> None:
    dbs = [await PostgresDatabase.open(postgres_url) for _ in range(3)]
    try:
        versions = await asyncio.gather(*(migrate(d) for d in dbs))
        assert versions == [len(MIGRATIONS)] * 3
        rows = await dbs[0].fetch_all("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    finally:
        for d in dbs:
            await d.close()


async def test_replicas_racing_to_save_one_key_make_one_entry(replicas: list[EntryIndex]) -> None:
    async def save(i: int) -> Entry | None:
        index = replicas[i % REPLICAS]
        entry, _ = await reserve(index, "race", now=100, upload=f"up-{i}")
        return await index.commit(entry.id, size=1, blob=f"blob-{i}", now=101)

    results = await asyncio.gather(*(save(i) for i in range(24)), return_exceptions=True)
    winners = [r for r in results if isinstance(r, Entry)]
    assert len(winners) == 1
    assert all(isinstance(r, EntryExists) for r in results if r is not winners[0])
    rows = await replicas[0].db.fetch_all("SELECT id, state FROM entries WHERE key = ?", ("race",))
    assert rows == [(winners[0].id, EntryState.COMMITTED)]
    hit = await replicas[1].lookup(repo=REPO, scopes=[MAIN], keys=["race"], version=VERSION)
    assert hit == winners[0]


async def test_replicas_racing_to_replace_a_stale_reservation(replicas: list[EntryIndex]) -> None:
    stale, _ = await reserve(replicas[0], "k", now=100)
    results = await asyncio.gather(
        *(reserve(replicas[i % REPLICAS], "k", now=1000, stale_before=500) for i in range(12)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, tuple)]
    assert len(winners) == 1
    assert winners[0][1] == stale
    assert sum(isinstance(r, EntryExists) for r in results) == 11
    rows = await replicas[0].db.fetch_all("SELECT id FROM entries")
    assert rows == [(winners[0][0].id,)]


async def test_reserve_keeps_a_reservation_revived_after_it_looked(postgres_url: str) -> None:
    # mark_uploaded is a plain UPDATE: it does not wait for the write lock, only for row locks.
    index = await open_index(postgres_url)
    try:
        old, _ = await reserve(index, "k", now=100)
        async with await psycopg.AsyncConnection.connect(postgres_url) as other:
            await other.execute(
                "UPDATE entries SET state = %s, size = 1, updated_at = 900 WHERE id = %s",
                (EntryState.UPLOADED, old.id),
            )
            racing = asyncio.create_task(reserve(index, "k", now=1000, stale_before=500))
            await wait_for_lock_waiters(postgres_url)  # it saw the stale row, now waits on it
            await other.commit()
        with pytest.raises(EntryExists):
            await racing
        revived = await index.get(old.id)
        assert revived is not None and revived.state is EntryState.UPLOADED
    finally:
        await index.close()
