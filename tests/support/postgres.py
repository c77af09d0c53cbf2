"""A fresh, empty PostgreSQL database per test, on the real server the suite runs against.

``scripts/test`` starts PostgreSQL; ``GHACACHE_TEST_POSTGRES_URL`` points at another server's
maintenance database. An unreachable server fails the test: it is never skipped.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from urllib.parse import urlsplit

import psycopg
import pytest
from psycopg import sql

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
CONNECT_TIMEOUT_S = 5


def base_url() -> str:
    return os.environ.get("GHACACHE_TEST_POSTGRES_URL", DEFAULT_URL)


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead."""
    return urlsplit(url)._replace(path="/" + name).geturl()


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S)
    except psycopg.OperationalError as exc:
        error = exc  # failed outside the except block, so the report is not a chained traceback
    pytest.fail(
        f"PostgreSQL is not reachable at {url}: {error}\n"
        "Start it (./scripts/test does) or set GHACACHE_TEST_POSTGRES_URL.",
        pytrace=False,
    )


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of a new empty database, dropped (connections and all) after the test."""
    base = base_url()
    name = f"ghacache_t_{secrets.token_hex(6)}"
    with _admin(base) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(base, name)
    finally:
        with _admin(base) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
