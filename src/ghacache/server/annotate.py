"""What the code handling a request knows about it, for its access line.

The access middleware puts a fresh dict in a context variable (and at
``request[LOG_KEY]``) for every request; the service notes the repository, scope and
key there as soon as it knows them, without any HTTP type reaching it. Outside a request
(background jobs) noting is a no-op.
"""

from __future__ import annotations

import contextvars

from aiohttp import web

from ghacache.index import Entry

# Where handlers find the record: request[LOG_KEY] (the same dict the context variable holds).
LOG_KEY: web.RequestKey[dict[str, object]] = web.RequestKey("ghacache_log", dict)
_RECORD: contextvars.ContextVar[dict[str, object] | None] = contextvars.ContextVar(
    "ghacache_access_record", default=None
)


def begin(record: dict[str, object]) -> contextvars.Token[dict[str, object] | None]:
    """Make ``record`` the current request's; pass the token to ``end``."""
    return _RECORD.set(record)


def end(token: contextvars.Token[dict[str, object] | None]) -> None:
    _RECORD.reset(token)


def note(**fields: object) -> None:
    """Add fields (``repository``, ``scope``, ``key``, ...) to the current access line."""
    record = _RECORD.get()
    if record is not None:
        record.update(fields)


def note_entry(entry: Entry | None) -> None:
    """Note the repository, scope and key of the entry a request works on (if found)."""
    if entry is not None:
        note(repository=entry.repo, scope=entry.scope, key=entry.key)
