"""Entry metadata: reservations, staged parts, committed entries and access times.

An entry row is created by a reservation (state RESERVED), may record an assembled upload
(UPLOADED, v2 after Put Blob/Put Block List), and becomes visible to lookups only when
COMMITTED. The unique (repo, scope, version, key) constraint makes one of two concurrent
reservations win.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from ghacache.crashpoints import crash_point
from ghacache.errors import EntryExists, MetadataError
from ghacache.index.database import Database, Followup, Row
from ghacache.protocol.keys import prefix_upper_bound


def key_prefix_condition(prefix: str) -> tuple[str, list[object]]:
    """SQL (and parameters) selecting keys that start with ``prefix`` as an index range."""
    upper = prefix_upper_bound(prefix)
    if upper is None:
        return "key >= ?", [prefix]
    return "key >= ? AND key < ?", [prefix, upper]


@functools.lru_cache(maxsize=256)
def _lookup_sql(scopes: int, bounded: tuple[bool, ...]) -> str:
    """The lookup statement for ``scopes`` scopes and keys with (or without) an upper bound.

    One subquery per (scope, key), in ``pick``'s order (scopes, then keys), each finding
    the exact match if there is one, else the newest entry with the key as prefix.
    ``pick``'s answer is the first of them that finds one: ``COALESCE``'s. It evaluates its
    arguments only until one is not null, so an exact hit in the first scope costs one
    index probe, and the statement returns at most one row.
    """
    finds: list[str] = []
    for _ in range(scopes):
        for has_upper in bounded:
            condition = "key >= ? AND key < ?" if has_upper else "key >= ?"
            finds.append(
                "(SELECT id FROM entries WHERE repo = ? AND scope = ? AND version = ? "
                f"AND state = ? AND {condition} "
                "ORDER BY key = ? DESC, created_at DESC, id DESC LIMIT 1)"
            )
    first = finds[0] if len(finds) == 1 else f"COALESCE({', '.join(finds)})"  # SQLite: 2+ args
    return f"SELECT {_COLUMNS} FROM entries WHERE id = {first}"


class EntryState(enum.IntEnum):
    RESERVED = 0
    UPLOADED = 1
    COMMITTED = 2


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One cache entry or reservation."""

    id: int
    repo: str
    scope: str
    key: str
    version: str
    state: EntryState
    size: int | None
    declared_size: int | None
    upload: str
    blob: str | None
    created_at: float
    updated_at: float
    last_accessed_at: float

    @property
    def committed(self) -> bool:
        return self.state is EntryState.COMMITTED


_COLUMNS = (
    "id, repo, scope, key, version, state, size, declared_size, upload, blob, "
    "created_at, updated_at, last_accessed_at"
)


def _entry(row: Row) -> Entry:
    return Entry(
        id=int(row[0]),
        repo=str(row[1]),
        scope=str(row[2]),
        key=str(row[3]),
        version=str(row[4]),
        state=EntryState(int(row[5])),
        size=None if row[6] is None else int(row[6]),
        declared_size=None if row[7] is None else int(row[7]),
        upload=str(row[8]),
        blob=None if row[9] is None else str(row[9]),
        created_at=float(row[10]),
        updated_at=float(row[11]),
        last_accessed_at=float(row[12]),
    )


_TOUCH = "UPDATE entries SET last_accessed_at = ? WHERE id = ? AND last_accessed_at < ?"


class EntryIndex:
    """Entry operations over any ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def close(self) -> None:
        await self.db.close()

    async def get(self, entry_id: int) -> Entry | None:
        row = await self.db.fetch_one(f"SELECT {_COLUMNS} FROM entries WHERE id = ?", (entry_id,))
        return _entry(row) if row else None

    async def reserve(
        self,
        *,
        repo: str,
        scope: str,
        key: str,
        version: str,
        declared_size: int | None,
        upload: str,
        now: float,
        stale_before: float,
    ) -> tuple[Entry, Entry | None]:
        """Create a reservation.

        An existing reservation idle since before ``stale_before`` is abandoned and replaced.

        Returns:
            The new reservation, and the abandoned one it replaced (whose upload must be
            discarded), if any.

        Raises:
            EntryExists: a committed entry or a live reservation has this identity.
        """
        async with self.db.transaction() as tx:
            replaced = None
            existing = await tx.fetch_one(
                f"SELECT {_COLUMNS} FROM entries WHERE repo = ? AND scope = ? AND version = ? "
                "AND key = ?",
                (repo, scope, version, key),
            )
            if existing is not None:
                old = _entry(existing)
                # The DELETE checks staleness again: on PostgreSQL a plain UPDATE outside any
                # transaction (mark_uploaded) may have revived the row since the SELECT.
                live = old.committed or old.updated_at >= stale_before
                if live or not await tx.execute(
                    "DELETE FROM entries WHERE id = ? AND state < ? AND updated_at < ?",
                    (old.id, EntryState.COMMITTED, stale_before),
                ):
                    raise EntryExists(
                        "cache entry with the same key, version, and scope already exists"
                    )
                replaced = old
            row = await tx.fetch_one(
                "INSERT INTO entries (repo, scope, key, version, state, declared_size, upload, "
                "created_at, updated_at, last_accessed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                f"RETURNING {_COLUMNS}",
                (
                    repo,
                    scope,
                    key,
                    version,
                    EntryState.RESERVED,
                    declared_size,
                    upload,
                    now,
                    now,
                    now,
                ),
            )
            if row is None:
                raise MetadataError("reservation insert returned no row")
            return _entry(row), replaced

    async def find_pending(self, *, repo: str, scope: str, key: str, version: str) -> Entry | None:
        """The uncommitted reservation with this identity, if any."""
        row = await self.db.fetch_one(
            f"SELECT {_COLUMNS} FROM entries WHERE repo = ? AND scope = ? AND version = ? "
            "AND key = ? AND state < ?",
            (repo, scope, version, key, EntryState.COMMITTED),
        )
        return _entry(row) if row else None

    async def add_part(self, entry_id: int, name: str, size: int, now: float) -> bool:
        """Record a staged part (replacing one of the same name) on a pending entry.

        Returns False if the entry is no longer pending (committed or abandoned).
        """
        async with self.db.transaction() as tx:
            touched = await tx.execute(
                "UPDATE entries SET updated_at = ? WHERE id = ? AND state < ?",
                (now, entry_id, EntryState.COMMITTED),
            )
            if not touched:
                return False
            await tx.execute(
                "INSERT INTO parts (entry_id, name, size) VALUES (?, ?, ?) "
                "ON CONFLICT (entry_id, name) DO UPDATE SET size = excluded.size",
                (entry_id, name, size),
            )
            return True

    async def part_totals(self, entry_id: int, name: str) -> tuple[int, int, int | None]:
        """(staged parts, their total bytes, the size of part ``name`` if staged)."""
        row = await self.db.fetch_one(
            "SELECT COUNT(*), COALESCE(SUM(size), 0), MAX(CASE WHEN name = ? THEN size END) "
            "FROM parts WHERE entry_id = ?",
            (name, entry_id),
        )
        assert row is not None  # an aggregate always has a row
        return int(row[0]), int(row[1]), None if row[2] is None else int(row[2])

    async def parts(self, entry_id: int) -> dict[str, int]:
        rows = await self.db.fetch_all(
            "SELECT name, size FROM parts WHERE entry_id = ? ORDER BY name", (entry_id,)
        )
        return {str(r[0]): int(r[1]) for r in rows}

    async def mark_uploaded(self, entry_id: int, size: int, now: float) -> bool:
        """Record that the upload's blob is assembled (v2); False if no longer pending."""
        n = await self.db.execute(
            "UPDATE entries SET state = ?, size = ?, updated_at = ? WHERE id = ? AND state < ?",
            (EntryState.UPLOADED, size, now, entry_id, EntryState.COMMITTED),
        )
        return n > 0

    async def commit(self, entry_id: int, *, size: int, blob: str, now: float) -> Entry | None:
        """Make a pending entry visible; None if it was no longer pending."""
        async with self.db.transaction() as tx:
            row = await tx.fetch_one(
                "UPDATE entries SET state = ?, size = ?, blob = ?, created_at = ?, updated_at = ?, "
                f"last_accessed_at = ? WHERE id = ? AND state < ? RETURNING {_COLUMNS}",
                (EntryState.COMMITTED, size, blob, now, now, now, entry_id, EntryState.COMMITTED),
            )
            if row is None:
                return None
            crash_point("commit.in_transaction")
            await tx.execute("DELETE FROM parts WHERE entry_id = ?", (entry_id,))
            return _entry(row)

    async def lookup(
        self,
        *,
        repo: str,
        scopes: Sequence[str],
        keys: Sequence[str],
        version: str,
        touch_at: float | None = None,
    ) -> Entry | None:
        """GitHub's lookup (see ``protocol.keys.pick``) in one statement.

        One subquery per (scope, key) range-scans the unique ``(repo, scope, version, key)``
        index for keys starting with ``key`` and keeps one entry: the exact match if there
        is one, else the newest. That is all ``pick`` needs, since the newest prefix match
        only counts when there is no exact one; the first subquery with an entry wins.

        With ``touch_at``, a hit also records an access at that time (as ``touch`` does), in
        the same unit of work (``Database.fetch_then_execute``). The entry returned is as
        read, before that update.
        """
        if not scopes or not keys:
            return None
        bounds = [(key, prefix_upper_bound(key)) for key in keys]
        params: list[object] = []
        for scope in scopes:
            for key, upper in bounds:
                params += [repo, scope, version, EntryState.COMMITTED, key]
                if upper is not None:
                    params.append(upper)
                params.append(key)
        sql = _lookup_sql(len(scopes), tuple(upper is not None for _, upper in bounds))
        # Full rows, so a hit needs no second query.
        if touch_at is None:
            rows = await self.db.fetch_all(sql, params)
        else:
            at = touch_at

            def touch(rows: list[Row]) -> Followup:
                return (_TOUCH, (at, rows[0][0], at)) if rows else None

            rows = await self.db.fetch_then_execute(sql, params, touch)
        return _entry(rows[0]) if rows else None

    async def touch(self, entry_id: int, now: float) -> None:
        """Record an access (a restore) of a committed entry; never moves it back."""
        await self.db.execute(_TOUCH, (now, entry_id, now))

    async def list_committed(self, *, repo: str, scopes: Sequence[str], key: str) -> list[Entry]:
        """Committed entries with exactly ``key`` in the given scopes (v1 debug listing)."""
        if not scopes:
            return []
        marks = ", ".join("?" for _ in scopes)
        rows = await self.db.fetch_all(
            f"SELECT {_COLUMNS} FROM entries WHERE repo = ? AND key = ? AND state = ? "
            f"AND scope IN ({marks}) ORDER BY created_at DESC, id DESC",
            (repo, key, EntryState.COMMITTED, *scopes),
        )
        return [_entry(r) for r in rows]

    async def stale_reservations(self, before: float) -> list[Entry]:
        rows = await self.db.fetch_all(
            f"SELECT {_COLUMNS} FROM entries WHERE state < ? AND updated_at < ?",
            (EntryState.COMMITTED, before),
        )
        return [_entry(r) for r in rows]

    async def delete_pending(self, entry_id: int, before: float) -> bool:
        """Delete a reservation still idle since before ``before``; False if it moved on."""
        n = await self.db.execute(
            "DELETE FROM entries WHERE id = ? AND state < ? AND updated_at < ?",
            (entry_id, EntryState.COMMITTED, before),
        )
        return n > 0

    async def pending_uploads(self) -> set[str]:
        rows = await self.db.fetch_all(
            "SELECT upload FROM entries WHERE state < ?", (EntryState.COMMITTED,)
        )
        return {str(r[0]) for r in rows}
