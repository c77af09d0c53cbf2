"""``SqliteDatabase``: the read connection, group commit of single statements, checkpoints."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ghacache.errors import MetadataError
from ghacache.index.database import Followup, Row, SqliteDatabase


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqliteDatabase]:
    database = await SqliteDatabase.open(tmp_path / "t.sqlite")
    await database.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
    try:
        yield database
    finally:
        await database.close()


async def test_a_read_sees_every_write_that_returned_before_it(db: SqliteDatabase) -> None:
    async def writer(k: int) -> None:
        await db.execute("INSERT INTO t (k, v) VALUES (?, 0)", (k,))
        for v in range(1, 6):
            await db.execute("UPDATE t SET v = ? WHERE k = ?", (v, k))
            assert await db.fetch_one("SELECT v FROM t WHERE k = ?", (k,)) == (v,)

    await asyncio.gather(*(writer(k) for k in range(20)))
    assert await db.fetch_all("SELECT COUNT(*), SUM(v) FROM t") == [(20, 100)]


async def test_reads_do_not_wait_for_an_open_transaction(db: SqliteDatabase) -> None:
    await db.execute("INSERT INTO t (k, v) VALUES (1, 1)")
    async with db.transaction() as tx:
        await tx.execute("UPDATE t SET v = 2 WHERE k = 1")
        # Served by the read connection: the committed value, not the transaction's.
        assert await asyncio.wait_for(db.fetch_one("SELECT v FROM t WHERE k = 1"), 5) == (1,)
        assert await tx.fetch_one("SELECT v FROM t WHERE k = 1") == (2,)
    assert await db.fetch_one("SELECT v FROM t WHERE k = 1") == (2,)


async def test_writes_with_returning_go_to_the_writer(db: SqliteDatabase) -> None:
    rows = await db.fetch_all("INSERT INTO t (k, v) VALUES (7, 70) RETURNING k, v")
    assert rows == [(7, 70)]
    assert await db.fetch_all("DELETE FROM t WHERE k = 7 RETURNING v") == [(70,)]
    assert await db.fetch_all("SELECT * FROM t") == []


async def test_a_failing_statement_fails_only_its_caller(db: SqliteDatabase) -> None:
    await db.execute("INSERT INTO t (k, v) VALUES (1, 1)")
    # Concurrent single statements are committed together; one breaks a constraint.
    results = await asyncio.gather(
        db.execute("INSERT INTO t (k, v) VALUES (2, 2)"),
        db.execute("INSERT INTO t (k, v) VALUES (1, 9)"),
        db.execute("UPDATE t SET v = v + 10 WHERE k = 2"),
        db.execute("INSERT INTO t (k, v) VALUES (3, NULL)"),
        db.execute("INSERT INTO t (k, v) VALUES (4, 4)"),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 1 and results[4] == 1
    for failed in (results[1], results[3]):
        assert isinstance(failed, MetadataError) and "constraint" in str(failed)
    assert await db.fetch_all("SELECT k, v FROM t ORDER BY k") == [(1, 1), (2, 12), (4, 4)]


async def test_fetch_then_execute_runs_the_followup_of_each_query(db: SqliteDatabase) -> None:
    await db.execute("INSERT INTO t (k, v) VALUES (1, 1), (2, 2)")

    def bump(rows: list[Row]) -> Followup:
        return ("UPDATE t SET v = v + 10 WHERE k = ?", (rows[0][0],)) if rows else None

    def clash(rows: list[Row]) -> Followup:
        return ("INSERT INTO t (k, v) VALUES (?, 0)", (rows[0][0],))  # k exists: fails

    # Concurrent, so they are committed together; the failing one fails only its caller.
    results = await asyncio.gather(
        db.fetch_then_execute("SELECT k FROM t WHERE k = ?", (1,), bump),
        db.fetch_then_execute("SELECT k FROM t WHERE k = ?", (9,), bump),
        db.fetch_then_execute("SELECT k FROM t WHERE k = ?", (2,), clash),
        db.fetch_then_execute("SELECT k FROM t WHERE k = ?", (2,), bump),
        return_exceptions=True,
    )
    assert results[0] == [(1,)] and results[1] == [] and results[3] == [(2,)]
    assert isinstance(results[2], MetadataError)
    assert await db.fetch_all("SELECT k, v FROM t ORDER BY k") == [(1, 11), (2, 12)]


async def test_statements_queue_behind_a_transaction_in_order(db: SqliteDatabase) -> None:
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO t (k, v) VALUES (1, 1)")
        later = [
            asyncio.ensure_future(db.execute("UPDATE t SET v = v * 10 + ? WHERE k = 1", (i,)))
            for i in range(2, 6)
        ]
        await asyncio.sleep(0.01)
        assert not any(f.done() for f in later)  # the writer is ours until the commit
    assert await asyncio.gather(*later) == [1, 1, 1, 1]
    assert await db.fetch_one("SELECT v FROM t WHERE k = 1") == (12345,)


def logged_pages(path: Path) -> int:
    """Pages in the write-ahead log since it last started afresh."""
    with sqlite3.connect(path) as conn:
        return int(conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])


async def test_checkpoints_between_bursts_keep_the_log_small(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    db = await SqliteDatabase.open(path, checkpoint_after_writes=100)
    try:
        await db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        for burst in range(20):  # 2 pages a row: 4,000 pages in all
            await asyncio.gather(
                *(
                    db.execute("INSERT INTO t (k, v) VALUES (?, zeroblob(5000))", (k,))
                    for k in range(burst * 100, burst * 100 + 100)
                )
            )
            await asyncio.sleep(0.03)
        # SQLite's own automatic checkpoint is off on the writer; ours caught up in the
        # pauses, so the log started afresh instead of growing by every page.
        assert logged_pages(path) < 2000
    finally:
        await db.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM t").fetchone() == (2000,)


async def test_writes_without_pauses_make_the_writer_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "t.sqlite"
    db = await SqliteDatabase.open(path, checkpoint_after_writes=100, checkpoint_force_pages=1000)
    try:
        await db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)")
        for k in range(6000):  # back to back: over 3 pages each, 18,000 or more in all
            await db.execute("INSERT INTO t (k, v) VALUES (?, zeroblob(5000))", (k,))
        # The log started afresh along the way (how often depends on how fast checkpoints
        # run next to the writes, which a loaded machine slows down).
        assert logged_pages(path) < 9000
    finally:
        await db.close()


async def test_closed_database_refuses_statements(tmp_path: Path) -> None:
    db = await SqliteDatabase.open(tmp_path / "t.sqlite")
    await db.close()
    with pytest.raises(MetadataError, match="closed"):
        await db.fetch_all("SELECT 1")
    with pytest.raises(MetadataError, match="closed"):
        await db.execute("CREATE TABLE x (a)")
