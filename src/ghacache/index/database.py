"""A minimal async SQL seam, so the index is written once for every database.

SQL uses ``?`` placeholders and the portable subset SQLite and PostgreSQL share
(``ON CONFLICT``, ``RETURNING``). Each backend translates placeholders and errors.
PostgreSQL lives in ``postgres.py``.

SQLite runs on one dedicated thread with one connection (WAL mode), so the event loop never
blocks on disk and no request opens a connection. An ``asyncio.Lock`` keeps statements of
concurrent coroutines out of each other's transactions.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ghacache.errors import MetadataError

Row = tuple[Any, ...]
Params = Sequence[object]
T = TypeVar("T")


class Executor(Protocol):
    """Statements usable inside and outside a transaction."""

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]: ...

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None: ...

    async def execute(self, sql: str, params: Params = ()) -> int: ...


class Database(Executor, Protocol):
    """A connection (pool) with transactions."""

    dialect: str

    def transaction(self) -> Any:
        """An async context manager yielding an ``Executor`` inside one transaction.

        Write transactions are serialised across every process sharing the database, and
        each statement in one sees everything committed before it began (read-then-write
        logic such as "no live row, so insert" relies on it).
        """
        ...

    async def close(self) -> None: ...


class SqliteDatabase:
    """SQLite in WAL mode on a single worker thread."""

    dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ghacache-sqlite")
        self._lock = asyncio.Lock()
        self._conn: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteDatabase:
        db = cls(path)
        await db._call(db._connect)
        return db

    def _connect(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=10000")
        self._conn = conn

    async def _call(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn)
        except sqlite3.Error as exc:
            raise MetadataError(f"database error: {exc}") from exc

    def _cur(self) -> sqlite3.Connection:
        if self._conn is None:
            raise MetadataError("database is closed")
        return self._conn

    async def _fetch_all(self, sql: str, params: Params) -> list[Row]:
        return await self._call(lambda: self._cur().execute(sql, tuple(params)).fetchall())

    async def _execute(self, sql: str, params: Params) -> int:
        return await self._call(lambda: self._cur().execute(sql, tuple(params)).rowcount)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        async with self._lock:
            return await self._fetch_all(sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        async with self._lock:
            return await self._execute(sql, params)

    async def executescript(self, script: str) -> None:
        async with self._lock:
            await self._call(lambda: self._cur().executescript(script))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTx]:
        async with self._lock:
            await self._execute("BEGIN IMMEDIATE", ())
            try:
                yield _SqliteTx(self)
            except BaseException:
                await self._execute("ROLLBACK", ())
                raise
            await self._execute("COMMIT", ())

    async def close(self) -> None:
        async with self._lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await self._call(conn.close)
        self._pool.shutdown(wait=True)


class _SqliteTx:
    """Statements inside a transaction; the database lock is already held."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._db._fetch_all(sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._db._fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._db._execute(sql, params)
