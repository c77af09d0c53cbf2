"""BuildKit's ``type=gha`` key names (moby/buildkit ``cache/remotecache/gha/gha.go``).

- layer blobs: ``buildkit-blob-1-<digest>`` (immutable; the bytes hash to the digest)
- the index of (BuildKit scope, git ref): ``index-<scope>-1-<sha256(ref)[:8]>#<N>``, a new
  ``N`` per export; the current one is the newest key with the ``...#`` prefix
- signed mode adds ``-sig`` before ``#`` (index) or after the digest (signature blob)

Every entry uses one protocol version: sha256("|go-actionscache-1.0").
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

FORMAT_VERSION = "1"
VERSION = "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"
DEFAULT_SCOPE = "buildkit"
BLOB_PREFIX = f"buildkit-blob-{FORMAT_VERSION}-"

# Matched with fullmatch ("$" would accept a final newline) and ASCII digits only.
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
_INDEX = re.compile(
    rf"index-(?P<scope>.*)-{FORMAT_VERSION}-(?P<h8>[0-9a-f]{{8}})(?P<sig>-sig)?(?:#(?P<n>[0-9]{{0,30}}))?",
    re.DOTALL,
)


def ref_hash(ref: str) -> str:
    """The 8 hex digits BuildKit derives from a git ref (GitHub scope)."""
    return hashlib.sha256(ref.encode()).hexdigest()[:8]


def blob_key(digest: str) -> str:
    return BLOB_PREFIX + digest


def index_base(scope: str, ref: str, *, signed: bool = False) -> str:
    """``index-<scope>-1-<h8>`` (append ``#N`` for a generation, ``#`` to look up the newest)."""
    return f"index-{scope}-{FORMAT_VERSION}-{ref_hash(ref)}{'-sig' if signed else ''}"


def is_digest(value: str) -> bool:
    return bool(_DIGEST.fullmatch(value))


def parse_blob_key(key: str) -> str | None:
    """The digest in a blob key (also its ``-sig`` twin), or None for other keys."""
    if not key.startswith(BLOB_PREFIX):
        return None
    digest = key[len(BLOB_PREFIX) :].removesuffix("-sig")
    return digest if is_digest(digest) else None


@dataclass(frozen=True, kw_only=True)
class IndexKey:
    scope: str
    ref_hash: str
    signed: bool
    generation: int | None  # N of "#N"; None for a bare base or "#"

    @property
    def base(self) -> str:
        return f"index-{self.scope}-{FORMAT_VERSION}-{self.ref_hash}{'-sig' if self.signed else ''}"


def parse_index_key(key: str) -> IndexKey | None:
    """Split an index key into its parts, or None if ``key`` is not one."""
    m = _INDEX.fullmatch(key)
    if not m:
        return None
    n = m.group("n")
    return IndexKey(
        scope=m.group("scope"),
        ref_hash=m.group("h8"),
        signed=bool(m.group("sig")),
        generation=int(n) if n else None,
    )
