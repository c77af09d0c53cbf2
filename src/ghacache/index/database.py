"""A minimal async SQL seam, so the index is written once for every database.

SQL uses ``?`` placeholders and the portable subset SQLite and PostgreSQL share
(``ON CONFLICT``, ``RETURNING``). Each backend translates placeholders and errors.
PostgreSQL lives in ``postgres.py``.

SQLite runs on three dedicated threads, each with its own connection (WAL mode), so the
event loop never blocks on disk and no request opens a connection:

- the writer runs transactions, every statement that is not a plain ``SELECT``, and
  ``fetch_then_execute`` (a lookup and its access-time update). An ``asyncio.Lock`` keeps
  statements of concurrent coroutines out of each other's transactions. Single statements
  outside a transaction that queue up while the writer is busy run together, in order, in
  one transaction (group commit): each caller resumes only after the commit, but a burst of
  restores costs one hand-off to the thread and one commit instead of one each.
- the reader runs the other ``SELECT`` statements (management listings, usage, the
  sweep's scans), concurrently with the writer: WAL readers never wait for it, so a long
  scan never holds up restores. Each statement sees everything committed before it
  started, so a read issued after a write has returned sees that write. Queries arriving
  while a batch runs go together in the next batch.
- the third copies the write-ahead log back into the database (a passive checkpoint) after
  ``CHECKPOINT_AFTER_WRITES`` statements or ``CHECKPOINT_INTERVAL_S``. SQLite would otherwise
  do it inside a commit every 1,000 pages, stalling the writer, and every caller waiting for
  it, for tens of milliseconds. The log starts afresh only when a write begins after a
  checkpoint has caught up; should writes never pause long enough for that, the writer
  checkpoints itself once the log passes ``CHECKPOINT_FORCE_PAGES``.

Why lookups go to the writer rather than the reader: a hit's access-time update has to go
there anyway, and one hand-off instead of two is what counts when threads share the GIL on
two cores. The writer's page cache also stays warm, while the reader's is dropped whenever
another connection commits.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from ghacache.errors import MetadataError, MetadataFull

log = logging.getLogger("ghacache.index")

# About SQLite's own automatic checkpoint (1,000 pages) at three pages per access-time update.
CHECKPOINT_AFTER_WRITES = 300
CHECKPOINT_INTERVAL_S = 1.0
CHECKPOINT_PASSES = 8
CHECKPOINT_FORCE_PAGES = 16384  # 64 MiB of 4 KiB pages
# Reads through a memory map instead of a read() per page: a lookup in a 10^6-entry index
# (500 MB) costs a third less. Address space, not memory: the pages are the OS's file cache.
# Writes still go through the log, so a full disk is an error, never a fault.
MMAP_BYTES = 1 << 30

Row = tuple[Any, ...]
Params = Sequence[object]
Followup = tuple[str, Params] | None  # a statement to run after a query, or nothing
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

    async def fetch_then_execute(
        self, sql: str, params: Params, then: Callable[[list[Row]], Followup]
    ) -> list[Row]:
        """Run a query, then the statement ``then`` makes of its rows (if any); return the rows.

        One unit of work where the backend can make it one (SQLite: a single hand-off to the
        writer, inside its group commit); else two statements, and another writer may come
        between them. ``then`` must be quick and pure: it may run on a database thread, and
        more than once. On SQLite, a follow-up the disk has no room for is skipped.
        """
        ...

    async def close(self) -> None: ...


def _is_read(sql: str) -> bool:
    """A plain query the read connection may run (a write with ``RETURNING`` is not one)."""
    return sql.lstrip()[:6].upper() == "SELECT"


def _primary_code(exc: sqlite3.Error) -> int:
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF  # extended codes keep it in the low byte


def _is_full(exc: sqlite3.Error) -> bool:
    return _primary_code(exc) == sqlite3.SQLITE_FULL


def _metadata_error(exc: sqlite3.Error) -> MetadataError:
    if _is_full(exc):
        return MetadataFull(f"no space left for the index database ({exc})")
    return MetadataError(f"database error: {exc}")


def _translated(exc: BaseException) -> BaseException:
    if isinstance(exc, sqlite3.Error):
        return _metadata_error(exc)
    return exc


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():  # the caller was cancelled meanwhile
        return
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(_translated(value))


Statement = tuple[str, tuple[object, ...], bool]  # sql, parameters, fetch rows (else rowcount)
# A statement, or a short function of the connection (fetch_then_execute).
Work = Statement | Callable[[sqlite3.Connection], Any]
Outcome = tuple[bool, Any]  # (True, rows or rowcount) or (False, exception)


def _run(conn: sqlite3.Connection, work: Work) -> Any:
    if callable(work):
        return work(conn)
    sql, params, rows = work
    cursor = conn.execute(sql, params)
    return cursor.fetchall() if rows else cursor.rowcount


def _each(conn: sqlite3.Connection, statements: Sequence[Work]) -> list[Outcome]:
    """Run statements one by one (autocommit), each with its own outcome."""
    outcomes: list[Outcome] = []
    for statement in statements:
        try:
            outcomes.append((True, _run(conn, statement)))
        except Exception as exc:
            outcomes.append((False, exc))
    return outcomes


def _group_commit(conn: sqlite3.Connection, statements: Sequence[Work]) -> list[Outcome]:
    """Run statements in order in one transaction; if one fails, one by one instead.

    Either way each statement sees the ones before it, exactly as in autocommit mode; the
    fallback gives a failing statement its own error without failing the others.
    """
    if len(statements) == 1:
        return _each(conn, statements)
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.Error as exc:
        return [(False, exc)] * len(statements)
    try:
        results = [_run(conn, statement) for statement in statements]
        conn.execute("COMMIT")
    except Exception:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        return _each(conn, statements)
    return [(True, result) for result in results]


class _Reader:
    """The read connection's thread. Queries arriving while a batch runs form the next batch."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ghacache-sqlite-read")
        self._queue: list[tuple[Statement, asyncio.Future[Any]]] = []
        self._busy = False
        self.conn: sqlite3.Connection | None = None

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the thread (opening and closing the connection)."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn)

    async def fetch_all(self, sql: str, params: tuple[object, ...]) -> list[Row]:
        fut: asyncio.Future[list[Row]] = asyncio.get_running_loop().create_future()
        self._queue.append(((sql, params, True), fut))
        if not self._busy:
            self._next_batch()
        return await fut

    def _next_batch(self) -> None:
        batch = [(st, fut) for st, fut in self._queue if not fut.cancelled()]
        self._queue = []
        self._busy = bool(batch)
        if not batch:
            return
        if self.conn is None:
            for _, fut in batch:
                fut.set_exception(MetadataError("database is closed"))
            self._busy = False
            return
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._pool, _each, self.conn, [st for st, _ in batch])
        done.add_done_callback(lambda d: self._finish(batch, d))

    def _finish(
        self, batch: list[tuple[Statement, asyncio.Future[Any]]], done: asyncio.Future[Any]
    ) -> None:
        exc = None if done.cancelled() else done.exception()
        if done.cancelled() or exc is not None:
            outcomes: list[Outcome] = [(False, exc or MetadataError("query cancelled"))] * len(
                batch
            )
        else:
            outcomes = done.result()
        for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
            _settle(fut, ok, value)
        self._next_batch()

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True)


class SqliteDatabase:
    """SQLite in WAL mode on writer, reader and checkpoint threads (see the module docstring)."""

    dialect = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        checkpoint_after_writes: int = CHECKPOINT_AFTER_WRITES,
        checkpoint_force_pages: int = CHECKPOINT_FORCE_PAGES,
    ) -> None:
        self.path = path
        self.checkpoint_after_writes = checkpoint_after_writes
        self.checkpoint_force_pages = checkpoint_force_pages
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ghacache-sqlite")
        self._lock = asyncio.Lock()
        self._conn: sqlite3.Connection | None = None
        self._reader = _Reader()
        # Single statements waiting for the writer, and the task committing them.
        self._writes: list[tuple[Work, asyncio.Future[Any]]] = []
        self._flusher: asyncio.Task[None] | None = None
        # Background checkpoints: their thread and connection, the one running, and the
        # writes committed since the last one started.
        self._checkpoints = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="ghacache-sqlite-checkpoint"
        )
        self._checkpoint_conn: sqlite3.Connection | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._uncheckpointed = 0
        self._checkpointed_at = time.monotonic()
        self._closing = False

    @classmethod
    async def open(cls, path: Path, **options: int) -> SqliteDatabase:
        """Open (creating) the database; ``options`` are the checkpoint thresholds."""
        db = cls(path, **options)
        try:
            await db._call(db._connect)
            await db._call_reader(db._connect_reader)
            loop = asyncio.get_running_loop()
            db._checkpoint_conn = await loop.run_in_executor(
                db._checkpoints, db._connect_checkpoints
            )
        except sqlite3.Error as exc:
            await db.close()
            raise _metadata_error(exc) from exc
        except BaseException:
            await db.close()
            raise
        return db

    def _open_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout=10000")
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        return conn

    def _connect(self) -> None:
        conn = self._open_connection()
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        # Checkpoints run on their own thread (see _wrote), never inside a commit.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn = conn

    def _connect_checkpoints(self) -> sqlite3.Connection:
        conn = self._open_connection()
        # Read the header now: until it has, the connection does not know the database is in
        # WAL mode, and its first checkpoint would do nothing.
        conn.execute("PRAGMA journal_mode").fetchall()
        return conn

    def _connect_reader(self) -> None:
        conn = self._open_connection()
        conn.execute("PRAGMA query_only=ON")
        self._reader.conn = conn

    async def _call(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._pool, fn)
        except sqlite3.Error as exc:
            raise _metadata_error(exc) from exc

    async def _call_reader(self, fn: Callable[[], T]) -> T:
        try:
            return await self._reader.call(fn)
        except sqlite3.Error as exc:
            raise _metadata_error(exc) from exc

    def _cur(self) -> sqlite3.Connection:
        if self._conn is None:
            raise MetadataError("database is closed")
        return self._conn

    async def _fetch_all(self, sql: str, params: Params) -> list[Row]:
        return await self._call(lambda: self._cur().execute(sql, tuple(params)).fetchall())

    async def _execute(self, sql: str, params: Params) -> int:
        return await self._call(lambda: self._cur().execute(sql, tuple(params)).rowcount)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        if _is_read(sql):
            return await self._reader.fetch_all(sql, tuple(params))
        rows: list[Row] = await self._write((sql, tuple(params), True))
        return rows

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        count: int = await self._write((sql, tuple(params), False))
        return count

    async def fetch_then_execute(
        self, sql: str, params: Params, then: Callable[[list[Row]], Followup]
    ) -> list[Row]:
        args = tuple(params)

        def work(conn: sqlite3.Connection) -> list[Row]:
            rows = conn.execute(sql, args).fetchall()
            followup = then(rows)
            if followup is not None:
                try:
                    conn.execute(followup[0], tuple(followup[1]))
                except sqlite3.Error as exc:
                    # A full disk must not stop reads: the rows stand without the follow-up
                    # (a lookup without its access-time update).
                    if not _is_full(exc):
                        raise
                    log.warning("skipped a follow-up write to %s: %s", self.path, exc)
            return rows

        rows: list[Row] = await self._write(work)
        return rows

    async def _write(self, statement: Work) -> Any:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._writes.append((statement, fut))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_writes())
        return await fut

    async def _flush_writes(self) -> None:
        """Commit queued statements a batch at a time, each batch between transactions."""
        batch: list[tuple[Work, asyncio.Future[Any]]] = []
        try:
            while self._writes:
                async with self._lock:
                    batch = [(st, fut) for st, fut in self._writes if not fut.cancelled()]
                    self._writes = []
                    if not batch:
                        continue
                    statements = [st for st, _ in batch]
                    try:
                        conn = self._cur()
                        outcomes = await self._call(partial(_group_commit, conn, statements))
                    except Exception as exc:
                        outcomes = [(False, exc)] * len(batch)
                for (_, fut), (ok, value) in zip(batch, outcomes, strict=True):
                    _settle(fut, ok, value)
                batch = []
                self._wrote(len(outcomes))
        except asyncio.CancelledError:
            for _, fut in [*batch, *self._writes]:
                fut.cancel()
            self._writes = []
            raise
        finally:
            self._flusher = None

    def _wrote(self, statements: int) -> None:
        """Count committed writes; start a background checkpoint when it is time."""
        self._uncheckpointed += statements
        if self._checkpoint is not None or self._checkpoint_conn is None or self._closing:
            return
        now = time.monotonic()
        if (
            self._uncheckpointed < self.checkpoint_after_writes
            and now - self._checkpointed_at < CHECKPOINT_INTERVAL_S
        ):
            return
        self._uncheckpointed = 0
        self._checkpointed_at = now
        self._checkpoint = asyncio.create_task(self._run_checkpoint(self._checkpoint_conn))

    async def _run_checkpoint(self, conn: sqlite3.Connection) -> None:
        loop = asyncio.get_running_loop()
        try:
            force = self.checkpoint_force_pages
            pages = await loop.run_in_executor(self._checkpoints, _checkpoint, conn, force)
            if pages > force:
                # Writes never paused for long enough: hold them off until the log has been
                # copied, so the next one starts it afresh.
                async with self._lock:
                    await self._call(partial(_checkpoint, self._cur(), sys.maxsize))
        except Exception as exc:
            log.warning("checkpoint of %s failed: %s", self.path, exc)
        finally:
            self._checkpoint = None

    async def executescript(self, script: str) -> None:
        async with self._lock:
            await self._call(lambda: self._cur().executescript(script))
            self._wrote(1)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_SqliteTx]:
        async with self._lock:
            await self._execute("BEGIN IMMEDIATE", ())
            tx = _SqliteTx(self)
            try:
                yield tx
            except BaseException:
                await self._execute("ROLLBACK", ())
                raise
            await self._execute("COMMIT", ())
            self._wrote(tx.statements)

    async def close(self) -> None:
        self._closing = True  # no new background checkpoint
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        if self._checkpoint is not None:
            await asyncio.shield(self._checkpoint)
        async with self._lock:
            if self._checkpoint_conn is not None:
                ckpt, self._checkpoint_conn = self._checkpoint_conn, None
                await asyncio.get_running_loop().run_in_executor(self._checkpoints, ckpt.close)
            if self._reader.conn is not None:
                rconn, self._reader.conn = self._reader.conn, None
                await self._call_reader(rconn.close)
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await self._call(conn.close)
        self._pool.shutdown(wait=True)
        self._reader.shutdown()
        self._checkpoints.shutdown(wait=True)


def _checkpoint(conn: sqlite3.Connection, give_up_above: int) -> int:
    """Copy the log into the database until it has caught up with the writer.

    PASSIVE copies what it can without waiting for, or blocking, readers and writers. It
    copies the log as it was when it started, so further passes copy what was written
    meanwhile, until one finds nothing new, or the log has grown past ``give_up_above``
    pages (the writer outpaces us).

    Returns:
        The pages in the log after the last pass.
    """
    logged = previous = -1
    for _ in range(CHECKPOINT_PASSES):
        busy, logged, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
        if busy or logged == previous or logged > give_up_above:
            break
        previous = logged
    return int(logged)


class _SqliteTx:
    """Statements inside a transaction; the database lock is already held."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        self.statements = 0

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        self.statements += 1
        return await self._db._fetch_all(sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        self.statements += 1
        return await self._db._execute(sql, params)
