"""Cache keys and versions: validation and GitHub's lookup order, as pure functions.

GitHub's rule (docs "Cache key matching"): for each readable scope in order, for each key in
order, an exact match wins, then the newest-created entry whose key starts with that key.
The version must be equal. Nothing here touches a database: the index fetches candidates and
``pick`` decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ghacache.errors import RemoteProtocolError

MAX_KEY_CHARS = 512
MAX_KEYS = 10
MAX_VERSION_CHARS = 512


def _is_unicode(text: str) -> bool:
    """False if ``text`` holds a lone surrogate (JSON's ``\\ud800``), which no database
    column or UTF-8 encoder accepts."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def validate_key(key: str) -> str:
    """Return ``key`` if GitHub would accept it.

    Raises:
        RemoteProtocolError: empty, longer than 512 characters, or containing a comma, NUL
            or a lone surrogate.
    """
    if not key:
        raise RemoteProtocolError("cache key must not be empty")
    if "\x00" in key:
        # PostgreSQL text cannot hold NUL; refuse it everywhere so backends agree.
        raise RemoteProtocolError("cache key must not contain NUL characters")
    if not _is_unicode(key):
        raise RemoteProtocolError("cache key must be valid Unicode (it has a lone surrogate)")
    if len(key) > MAX_KEY_CHARS:
        raise RemoteProtocolError(
            f"cache key is {len(key)} characters; the limit is {MAX_KEY_CHARS}"
        )
    if "," in key:
        raise RemoteProtocolError(f"cache key must not contain commas: {key[:80]!r}")
    return key


def validate_keys(keys: Sequence[str]) -> tuple[str, ...]:
    """Validate a primary key followed by restore keys (at most 10 in all).

    Raises:
        RemoteProtocolError: no keys, too many keys, or an invalid key.
    """
    if not keys:
        raise RemoteProtocolError("at least one cache key is required")
    if len(keys) > MAX_KEYS:
        raise RemoteProtocolError(f"{len(keys)} keys given; at most {MAX_KEYS} are allowed")
    return tuple(validate_key(k) for k in keys)


def validate_version(version: str) -> str:
    """Return ``version`` if it is a plausible cache version string.

    Raises:
        RemoteProtocolError: empty, over 512 characters, or containing NUL or a lone surrogate.
    """
    if not version:
        raise RemoteProtocolError("cache version must not be empty")
    if "\x00" in version:
        raise RemoteProtocolError("cache version must not contain NUL characters")
    if not _is_unicode(version):
        raise RemoteProtocolError("cache version must be valid Unicode (it has a lone surrogate)")
    if len(version) > MAX_VERSION_CHARS:
        raise RemoteProtocolError(f"cache version is longer than {MAX_VERSION_CHARS} characters")
    return version


def prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix``, if any.

    Code-point order equals UTF-8 byte order, so ``prefix <= key < bound`` is exactly
    ``key.startswith(prefix)`` in a bytewise-collated index (SQLite, PostgreSQL ``C``).
    """
    for i in range(len(prefix) - 1, -1, -1):
        code = ord(prefix[i]) + 1
        if code == 0xD800:  # skip the surrogate block, which UTF-8 cannot hold
            code = 0xE000
        if code <= 0x10FFFF:
            return prefix[:i] + chr(code)
    return None


MAX_ENTRY_ID = 2**63 - 1  # int64, as the protocols carry ids


def parse_entry_id(raw: str) -> int | None:
    """A positive int64 id written in ASCII digits, else None.

    ``str.isdigit`` alone would accept e.g. "²", which ``int`` rejects.
    """
    # At most 19 digits: int() refuses thousands of them (a ValueError), and no int64 has more.
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        return None
    value = int(raw)
    return value if 0 < value <= MAX_ENTRY_ID else None


def dedupe_keys(keys: Iterable[str]) -> tuple[str, ...]:
    """Drop repeated keys, keeping first occurrences (BuildKit repeats the primary key)."""
    return tuple(dict.fromkeys(keys))


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A committed entry that may answer a lookup."""

    entry_id: int
    scope: str
    key: str
    created_at: float


def pick(
    candidates: Iterable[Candidate], *, scopes: Sequence[str], keys: Sequence[str]
) -> Candidate | None:
    """Choose the entry GitHub would return, or None for a miss.

    ``candidates`` must already have the right repository and version; it may hold entries
    that match no key (they are ignored).
    """
    pool = list(candidates)
    for scope in scopes:
        in_scope = [c for c in pool if c.scope == scope]
        if not in_scope:
            continue
        for key in keys:
            for c in in_scope:
                if c.key == key:
                    return c
            prefixed = [c for c in in_scope if c.key.startswith(key)]
            if prefixed:
                return max(prefixed, key=lambda c: (c.created_at, c.entry_id))
    return None
