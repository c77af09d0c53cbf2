"""SQLite query plans on a populated index: lookups and eviction batches stay O(log n).

SQLite keeps no statistics here (nothing runs ANALYZE), so its planner guesses; these tests
pin the plans that keep per-request and per-batch statements logarithmic in the number of
entries.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ghacache.index import EntryState, open_index
from ghacache.index.catalog import remove_statement
from ghacache.index.entries import _lookup_sql

ENTRIES = 3000


@pytest.fixture
async def conn(tmp_path: Path) -> AsyncIterator[sqlite3.Connection]:
    path = tmp_path / "index.sqlite"
    index = await open_index(f"sqlite:///{path}")
    await index.close()
    db = sqlite3.connect(path)
    rows = [
        (f"org/r{i % 7}", "refs/heads/main", f"k-{i}", "v", int(EntryState.COMMITTED), 1, "u",
         "b", float(i), float(i), float(i))
        for i in range(ENTRIES)
    ]  # fmt: skip
    db.executemany(
        "INSERT INTO entries (repo, scope, key, version, state, size, upload, blob, created_at, "
        "updated_at, last_accessed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    db.commit()
    try:
        yield db
    finally:
        db.close()


def plan(conn: sqlite3.Connection, sql: str, params: list[object]) -> list[str]:
    return [str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


@pytest.mark.parametrize("accessed_before", [False, True])
@pytest.mark.parametrize("count", [1, 50, 2000])
def test_eviction_batches_find_rows_by_id(
    conn: sqlite3.Connection, count: int, accessed_before: bool
) -> None:
    params: list[object] = [*range(1, count + 1), EntryState.COMMITTED]
    if accessed_before:
        params.append(1e12)
    steps = plan(conn, remove_statement(count, accessed_before=accessed_before), params)
    assert steps == ["SEARCH entries USING INTEGER PRIMARY KEY (rowid=?)"]


def test_lookups_range_scan_the_identity_index(conn: sqlite3.Connection) -> None:
    sql = _lookup_sql(2, (True, True))
    params: list[object] = []
    for scope in ("refs/pull/1/merge", "refs/heads/main"):
        for key in ("k-12", "k-"):
            params += ["org/r1", scope, "v", EntryState.COMMITTED, key, key + "~", key]
    searches = [s for s in plan(conn, sql, params) if s.startswith(("SEARCH", "SCAN entries"))]
    # The row itself by primary key, then one range scan per (scope, key) for its id.
    assert searches[0] == "SEARCH entries USING INTEGER PRIMARY KEY (rowid=?)"
    assert len(searches) == 5
    for step in searches[1:]:
        assert "(repo=? AND scope=? AND version=?" in step and "key>? AND key<?" in step, step


def test_a_repositorys_committed_rows_are_found_by_repository(conn: sqlite3.Connection) -> None:
    """The sweep's and the listings' ``repo = ? AND state = ?``: one repository's rows, not
    every committed entry through the state index (once per repository: a quadratic sweep)."""
    steps = plan(
        conn,
        "SELECT id, size, created_at, last_accessed_at FROM entries WHERE repo = ? AND state = ?",
        ["org/r1", EntryState.COMMITTED],
    )
    assert steps == ["SEARCH entries USING INDEX entries_repo_state (repo=? AND state=?)"]


def test_access_times_are_in_no_index(conn: sqlite3.Connection) -> None:
    """Every lookup hit writes ``last_accessed_at``: that write changes the row alone."""
    for (name,) in conn.execute("SELECT name FROM pragma_index_list('entries')"):
        columns = [r[2] for r in conn.execute("SELECT * FROM pragma_index_info(?)", (name,))]
        assert "last_accessed_at" not in columns, name
