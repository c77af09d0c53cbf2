"""Queries for operators and the maintenance jobs: listing, usage, eviction and its record.

Kept apart from ``entries.py`` (the request hot path). Deleting an entry always writes an
``evictions`` row in the same transaction, so every removal can be shown and counted;
blobs are deleted by the caller only after that transaction commits, so an entry is never
visible without its bytes (a crash in between leaves an orphan blob for reconciliation).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ghacache.index.database import Database, Row
from ghacache.index.entries import _COLUMNS, Entry, EntryState, _entry, key_prefix_condition
from ghacache.protocol.eviction import EvictionReason, Usage

SortField = Literal["created_at", "last_accessed_at", "size_in_bytes"]
_SORT_COLUMNS = {
    "created_at": "created_at",
    "last_accessed_at": "last_accessed_at",
    "size_in_bytes": "size",
}
# Rows per DELETE; the eviction record is inserted in slices that stay under SQLite's
# 32,766 bound parameters.
DELETE_BATCH = 2000
_INSERT_ROWS = 1000


def remove_statement(count: int, *, accessed_before: bool) -> str:
    """DELETE ... RETURNING for ``count`` entry ids, the committed state and, optionally, a
    last access at or before a time."""
    marks = ", ".join("?" for _ in range(count))
    # "+state": find the rows by id. Given the choice, SQLite (which keeps no statistics
    # here) scans an index on state for a long id list: every committed entry, once per
    # batch, which made a sweep quadratic in the size of the index.
    sql = f"DELETE FROM entries WHERE id IN ({marks}) AND +state = ?"
    if accessed_before:
        sql += " AND last_accessed_at <= ?"
    return f"{sql} RETURNING {_COLUMNS}"


@dataclass(frozen=True, kw_only=True)
class RepoUsage:
    repo: str
    size: int
    count: int
    oldest_access: float


@dataclass(frozen=True, kw_only=True)
class Eviction:
    """One removed entry: what, why, when and how big."""

    id: int
    entry_id: int
    repo: str
    scope: str
    key: str
    version: str
    size: int
    reason: EvictionReason
    created_at: float
    last_accessed_at: float
    evicted_at: float


_EVICTION_COLUMNS = "id, entry_id, repo, scope, key, version, size, reason, created_at, last_accessed_at, evicted_at"


def _eviction(row: Row) -> Eviction:
    return Eviction(
        id=int(row[0]),
        entry_id=int(row[1]),
        repo=str(row[2]),
        scope=str(row[3]),
        key=str(row[4]),
        version=str(row[5]),
        size=int(row[6]),
        reason=EvictionReason(str(row[7])),
        created_at=float(row[8]),
        last_accessed_at=float(row[9]),
        evicted_at=float(row[10]),
    )


class Catalog:
    """Operator and maintenance queries over any ``Database``."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def list_entries(
        self,
        *,
        repo: str,
        key_prefix: str | None = None,
        ref: str | None = None,
        sort: SortField = "last_accessed_at",
        descending: bool = True,
        limit: int = 30,
        offset: int = 0,
    ) -> tuple[int, list[Entry]]:
        """Committed entries of a repository, filtered, sorted and paged; with the total."""
        where = ["repo = ?", "state = ?"]
        params: list[object] = [repo, EntryState.COMMITTED]
        if key_prefix:
            condition, bounds = key_prefix_condition(key_prefix)
            where.append(condition)
            params += bounds
        if ref:
            where.append("scope = ?")
            params.append(ref)
        clause = " AND ".join(where)
        total_row = await self.db.fetch_one(f"SELECT COUNT(*) FROM entries WHERE {clause}", params)
        direction = "DESC" if descending else "ASC"
        rows = await self.db.fetch_all(
            f"SELECT {_COLUMNS} FROM entries WHERE {clause} "
            f"ORDER BY {_SORT_COLUMNS[sort]} {direction}, id {direction} LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return (int(total_row[0]) if total_row else 0), [_entry(r) for r in rows]

    async def find(self, *, repo: str, key: str, ref: str | None = None) -> list[Entry]:
        """Committed entries of a repository with exactly ``key`` (any version)."""
        sql = f"SELECT {_COLUMNS} FROM entries WHERE repo = ? AND key = ? AND state = ?"
        params: list[object] = [repo, key, EntryState.COMMITTED]
        if ref:
            sql += " AND scope = ?"
            params.append(ref)
        return [_entry(r) for r in await self.db.fetch_all(sql + " ORDER BY id", params)]

    async def usage(self, repo: str | None = None) -> list[RepoUsage]:
        """Committed bytes and entry counts per repository (one repository, or all)."""
        sql = (
            "SELECT repo, COALESCE(SUM(size), 0), COUNT(*), MIN(last_accessed_at) FROM entries "
            "WHERE state = ?"
        )
        params: list[object] = [EntryState.COMMITTED]
        if repo is not None:
            sql += " AND repo = ?"
            params.append(repo)
        rows = await self.db.fetch_all(sql + " GROUP BY repo ORDER BY repo", params)
        return [
            RepoUsage(repo=str(r[0]), size=int(r[1]), count=int(r[2]), oldest_access=float(r[3]))
            for r in rows
        ]

    async def usages_of(self, repo: str) -> list[Usage]:
        """Every committed entry of a repository, as the eviction policy needs them."""
        rows = await self.db.fetch_all(
            "SELECT id, size, created_at, last_accessed_at FROM entries WHERE repo = ? AND state = ?",
            (repo, EntryState.COMMITTED),
        )
        return [
            Usage(
                entry_id=int(r[0]),
                size=int(r[1] or 0),
                created_at=float(r[2]),
                last_accessed_at=float(r[3]),
            )
            for r in rows
        ]

    async def remove(
        self,
        entry_ids: Sequence[int],
        reason: EvictionReason,
        *,
        now: float,
        accessed_before: float | None = None,
    ) -> list[Entry]:
        """Delete committed entries and record why; return those actually deleted.

        With ``accessed_before``, an entry accessed since (e.g. restored while the sweep was
        planning) is kept.
        """
        removed: list[Entry] = []
        for i in range(0, len(entry_ids), DELETE_BATCH):
            batch = list(entry_ids[i : i + DELETE_BATCH])
            params: list[object] = [*batch, EntryState.COMMITTED]
            if accessed_before is not None:
                params.append(accessed_before)
            sql = remove_statement(len(batch), accessed_before=accessed_before is not None)
            async with self.db.transaction() as tx:
                rows = await tx.fetch_all(sql, params)
                gone = [_entry(r) for r in rows]
                for k in range(0, len(gone), _INSERT_ROWS):
                    part = gone[k : k + _INSERT_ROWS]
                    values = ", ".join("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" for _ in part)
                    record: list[object] = []
                    for e in part:
                        record += [
                            e.id, e.repo, e.scope, e.key, e.version, e.size or 0, str(reason),
                            e.created_at, e.last_accessed_at, now,
                        ]  # fmt: skip
                    await tx.execute(
                        "INSERT INTO evictions (entry_id, repo, scope, key, version, size, reason, "
                        f"created_at, last_accessed_at, evicted_at) VALUES {values}",
                        record,
                    )
            removed += gone
        return removed

    async def committed_blob_map(self) -> dict[int, str]:
        """Entry id -> blob name of every committed entry."""
        rows = await self.db.fetch_all(
            "SELECT id, blob FROM entries WHERE state = ? AND blob IS NOT NULL",
            (EntryState.COMMITTED,),
        )
        return {int(r[0]): str(r[1]) for r in rows}

    async def buildkit_blobs(self, repo: str, version: str) -> set[str]:
        """Digests of committed ``buildkit-blob-1-<digest>`` entries in any scope of ``repo``."""
        condition, bounds = key_prefix_condition("buildkit-blob-1-")
        rows = await self.db.fetch_all(
            f"SELECT key FROM entries WHERE repo = ? AND version = ? AND state = ? AND {condition}",
            [repo, version, EntryState.COMMITTED, *bounds],
        )
        return {str(r[0])[len("buildkit-blob-1-") :] for r in rows}

    async def removed_since(
        self, key_prefix: str, version: str, since: float
    ) -> list[tuple[str, str]]:
        """(repo, key) of the recorded removals since ``since`` of keys under ``key_prefix``."""
        condition, bounds = key_prefix_condition(key_prefix)
        rows = await self.db.fetch_all(
            f"SELECT DISTINCT repo, key FROM evictions WHERE evicted_at >= ? AND version = ? "
            f"AND {condition}",
            [since, version, *bounds],
        )
        return [(str(r[0]), str(r[1])) for r in rows]

    async def newest_buildkit_indexes(self, repo: str, version: str) -> list[Entry]:
        """The newest committed entry of every ``index-…#N`` family (per scope) of ``repo``."""
        condition, bounds = key_prefix_condition("index-")
        rows = await self.db.fetch_all(
            f"SELECT {_COLUMNS} FROM entries WHERE repo = ? AND version = ? AND state = ? "
            f"AND {condition} ORDER BY created_at, id",
            [repo, version, EntryState.COMMITTED, *bounds],
        )
        newest: dict[tuple[str, str], Entry] = {}
        for entry in map(_entry, rows):
            newest[(entry.scope, entry.key.rpartition("#")[0] or entry.key)] = entry
        return list(newest.values())

    async def replace_blob(self, entry_id: int, *, old_blob: str, new_blob: str, size: int) -> bool:
        """Point a committed entry at new bytes, if it still points at ``old_blob``."""
        n = await self.db.execute(
            "UPDATE entries SET blob = ?, size = ? WHERE id = ? AND blob = ? AND state = ?",
            (new_blob, size, entry_id, old_blob, EntryState.COMMITTED),
        )
        return n > 0

    async def evictions(
        self, *, repo: str | None = None, limit: int = 100, offset: int = 0
    ) -> tuple[int, list[Eviction]]:
        """Recorded removals, newest first, with the total count."""
        where, params = ("WHERE repo = ?", [repo]) if repo else ("", [])
        total = await self.db.fetch_one(f"SELECT COUNT(*) FROM evictions {where}", params)
        rows = await self.db.fetch_all(
            f"SELECT {_EVICTION_COLUMNS} FROM evictions {where} "
            "ORDER BY evicted_at DESC, id DESC LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return (int(total[0]) if total else 0), [_eviction(r) for r in rows]

    async def eviction_counts(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(repo, reason) -> (count, bytes) of all recorded removals."""
        rows = await self.db.fetch_all(
            "SELECT repo, reason, COUNT(*), COALESCE(SUM(size), 0) FROM evictions GROUP BY repo, reason"
        )
        return {(str(r[0]), str(r[1])): (int(r[2]), int(r[3])) for r in rows}
