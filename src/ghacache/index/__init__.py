"""Entry metadata in SQL: SQLite (WAL) by default."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ghacache.index.database import Database, SqliteDatabase
from ghacache.index.entries import Entry, EntryIndex, EntryState
from ghacache.index.schema import migrate

__all__ = ["Database", "Entry", "EntryIndex", "EntryState", "open_index"]


async def open_index(url: str) -> EntryIndex:
    """Open (and migrate) the index at ``sqlite:///path``.

    Raises:
        ValueError: an unsupported URL.
    """
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        raise ValueError(f"unsupported database URL {url!r} (use sqlite:///path)")
    path = Path(parts.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    db = await SqliteDatabase.open(path)
    await migrate(db)
    return EntryIndex(db)
