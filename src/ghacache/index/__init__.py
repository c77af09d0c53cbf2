"""Entry metadata in SQL: SQLite (WAL) by default, PostgreSQL for several replicas."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ghacache.index.database import Database, SqliteDatabase
from ghacache.index.entries import Entry, EntryIndex, EntryState
from ghacache.index.leases import Leases
from ghacache.index.schema import migrate

__all__ = ["Database", "Entry", "EntryIndex", "EntryState", "Leases", "open_index"]

_URL_FORMS = "sqlite:///path or postgresql://user@host:port/dbname"


async def open_index(url: str) -> EntryIndex:
    """Open (and migrate) the index at ``sqlite:///path`` or ``postgresql://…``.

    ``postgres://`` is accepted too; PostgreSQL pool options are described in
    ``ghacache.index.postgres.parse_url``.

    Raises:
        ValueError: an unsupported or malformed URL.
        MetadataError: the database cannot be opened or migrated.
    """
    db = await _open_database(url)
    try:
        await migrate(db)
    except BaseException:
        await db.close()
        raise
    return EntryIndex(db)


async def _open_database(url: str) -> Database:
    scheme = urlsplit(url).scheme
    if scheme == "sqlite":
        path = Path(urlsplit(url).path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return await SqliteDatabase.open(path)
    if scheme in ("postgresql", "postgres"):
        # Imported here so SQLite-only deployments never load psycopg.
        from ghacache.index.postgres import PostgresDatabase

        return await PostgresDatabase.open(url)
    raise ValueError(f"unsupported database URL {_redacted(url)!r} (use {_URL_FORMS})")


def _redacted(url: str) -> str:
    """The URL without a password, fit for an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
