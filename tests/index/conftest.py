"""Every index test runs on each backend: SQLite in ``tmp_path`` and a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ghacache.index import EntryIndex, open_index

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL ``open_index`` accepts, to an empty database of the parametrised backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    # Looked up lazily, so SQLite runs never need PostgreSQL.
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def index(index_url: str) -> AsyncIterator[EntryIndex]:
    """The index at ``index_url``, migrated, closed after the test."""
    idx = await open_index(index_url)
    try:
        yield idx
    finally:
        await idx.close()
