"""PostgreSQL for the index, so several server processes (replicas) can share one index.

The index's SQL is written once with ``?`` placeholders (see ``database.py``); each statement
is translated to psycopg's ``%s`` once and cached. Plain statements run in autocommit mode
on any pooled connection, so lookups and single-statement updates stay concurrent; row
locks and PostgreSQL's re-check of ``WHERE`` on a row changed meanwhile keep them correct.

Why one global lock for write transactions: SQLite's ``BEGIN IMMEDIATE`` serialises every
writer, and the read-then-write transactions in ``entries.py`` and ``catalog.py`` (reserve:
"no live row, so insert"; migrations: "version N, so apply N+1") rely on that. Under
READ COMMITTED, two replicas could both see "no row" and race. Taking one transaction-scoped
advisory lock first gives the same guarantee on every replica, and each later statement
sees everything committed before the lock was granted. The cost: write transactions
(reserve, add_part, commit, eviction batches, migrations) run one at a time across all
replicas. They are short, single-row or batched, so that is far below the request rate a
cache needs; a per-repository lock would not cover eviction batches spanning repositories
or the statements keyed only by entry id.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg_pool import AsyncConnectionPool

from ghacache.errors import MetadataError
from ghacache.index.database import Followup, Params, Row

# "ghacache" in ASCII: a fixed key, unlikely to collide with another application's lock.
WRITE_LOCK_KEY = 0x6768616361636865
DEFAULT_POOL_MIN = 1
DEFAULT_POOL_MAX = 10
DEFAULT_POOL_TIMEOUT_S = 30.0
SCHEMES = ("postgresql", "postgres")


@functools.lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """Translate ``?`` placeholders to psycopg's ``%s``.

    A literal ``%`` is doubled first so psycopg keeps it. ``?`` must not appear inside a
    string literal (the index's SQL never does).
    """
    return sql.replace("%", "%%").replace("?", "%s")


@dataclass(frozen=True, kw_only=True)
class PoolOptions:
    """Our own URL query options; libpq never sees them."""

    min_size: int = DEFAULT_POOL_MIN
    max_size: int = DEFAULT_POOL_MAX
    timeout_s: float = DEFAULT_POOL_TIMEOUT_S


def parse_url(url: str) -> tuple[str, PoolOptions]:
    """Split a ``postgresql://`` URL into a libpq conninfo and our pool options.

    ``pool_min``, ``pool_max`` and ``pool_timeout`` (seconds waiting for a free connection)
    are removed from the query; every other parameter (``sslmode``, ...) is kept.

    Raises:
        ValueError: another scheme, or a malformed pool option.
    """
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"not a PostgreSQL URL (scheme {parts.scheme!r})")
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k.startswith("pool_")}
    rest = [(k, v) for k, v in query if not k.startswith("pool_")]
    conninfo = urlunsplit(parts._replace(query=urlencode(rest)))
    return conninfo, _pool_options(ours)


def _pool_options(raw: dict[str, str]) -> PoolOptions:
    unknown = set(raw) - {"pool_min", "pool_max", "pool_timeout"}
    if unknown:
        raise ValueError(f"unknown database URL option(s): {', '.join(sorted(unknown))}")
    try:
        max_size = int(raw.get("pool_max", DEFAULT_POOL_MAX))
        min_size = int(raw.get("pool_min", DEFAULT_POOL_MIN))
        timeout_s = float(raw.get("pool_timeout", DEFAULT_POOL_TIMEOUT_S))
    except ValueError as exc:
        raise ValueError(f"bad database URL pool option: {exc}") from exc
    if not 0 <= min_size <= max_size or max_size < 1 or timeout_s <= 0:
        raise ValueError(
            "database URL needs 0 <= pool_min <= pool_max, pool_max >= 1 and pool_timeout > 0"
        )
    return PoolOptions(min_size=min_size, max_size=max_size, timeout_s=timeout_s)


@contextmanager
def _translated_errors() -> Iterator[None]:
    """Callers see ``MetadataError``, never psycopg's exceptions (pool timeouts included)."""
    try:
        yield
    except psycopg.Error as exc:
        raise MetadataError(f"database error: {exc}") from exc


async def _run(
    conn: psycopg.AsyncConnection[Row], sql: str, params: Params
) -> psycopg.AsyncCursor[Row]:
    # Always a tuple: with params=None psycopg would send a doubled "%%" verbatim.
    return await conn.execute(to_pyformat(sql), tuple(params))


async def _fetch_all(conn: psycopg.AsyncConnection[Row], sql: str, params: Params) -> list[Row]:
    return await (await _run(conn, sql, params)).fetchall()


async def _execute(conn: psycopg.AsyncConnection[Row], sql: str, params: Params) -> int:
    return (await _run(conn, sql, params)).rowcount


class PostgresDatabase:
    """A pool of autocommit connections; ``transaction()`` serialises writers (see above)."""

    dialect = "postgresql"

    def __init__(self, pool: AsyncConnectionPool[psycopg.AsyncConnection[Row]]) -> None:
        self._pool = pool

    @classmethod
    async def open(cls, url: str) -> PostgresDatabase:
        """Connect to ``postgresql://…[?pool_min=1&pool_max=10&pool_timeout=30]``.

        Raises:
            ValueError: a malformed URL.
            MetadataError: the server cannot be reached.
        """
        conninfo, options = parse_url(url)
        pool: AsyncConnectionPool[psycopg.AsyncConnection[Row]] = AsyncConnectionPool(
            conninfo,
            min_size=options.min_size,
            max_size=options.max_size,
            timeout=options.timeout_s,
            kwargs={"autocommit": True},
            name="ghacache-index",
            open=False,
        )
        try:
            with _translated_errors():
                await pool.open(wait=True, timeout=options.timeout_s)
        except BaseException:
            await pool.close()
            raise
        return cls(pool)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        with _translated_errors():
            async with self._pool.connection() as conn:
                return await _fetch_all(conn, sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        with _translated_errors():
            async with self._pool.connection() as conn:
                return await _execute(conn, sql, params)

    async def fetch_then_execute(
        self, sql: str, params: Params, then: Callable[[list[Row]], Followup]
    ) -> list[Row]:
        """The query, then its follow-up, on one pooled connection (two statements)."""
        with _translated_errors():
            async with self._pool.connection() as conn:
                rows = await _fetch_all(conn, sql, params)
                followup = then(rows)
                if followup is not None:
                    await _execute(conn, *followup)
                return rows

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_PostgresTx]:
        """One transaction holding the global write lock until it commits or rolls back."""
        with _translated_errors():
            async with self._pool.connection() as conn, conn.transaction():
                await _execute(conn, "SELECT pg_advisory_xact_lock(?)", (WRITE_LOCK_KEY,))
                yield _PostgresTx(conn)

    async def close(self) -> None:
        await self._pool.close()


class _PostgresTx:
    """Statements on the transaction's connection."""

    def __init__(self, conn: psycopg.AsyncConnection[Row]) -> None:
        self._conn = conn

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        with _translated_errors():
            return await _fetch_all(self._conn, sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self.fetch_all(sql, params)
        return rows[0] if rows else None

    async def execute(self, sql: str, params: Params = ()) -> int:
        with _translated_errors():
            return await _execute(self._conn, sql, params)
