"""Every index test runs on each backend: SQLite in ``tmp_path`` and a fresh PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL ``open_index`` accepts, to an empty database of the parametrised backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'index.sqlite'}"
    # Looked up lazily, so SQLite runs never need PostgreSQL.
    url: str = request.getfixturevalue("postgres_url")
    return url
