"""Values the client hands out: a found entry, and an upload in progress."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class CacheEntry:
    """A lookup hit: the entry's full key and a signed URL to read it from.

    ``key`` is the matched key, which differs from the primary key on a prefix or
    restore-key hit. ``scope`` is the ref the entry lives in (v1 reports it; v2 does not).
    """

    key: str
    version: str
    url: str
    protocol: Literal["v1", "v2"]
    scope: str | None = None

    def __repr__(self) -> str:  # the URL is a credential: keep it out of logs
        return f"CacheEntry(key={self.key!r}, version={self.version[:12]!r}…, protocol={self.protocol!r})"


@dataclass(frozen=True, kw_only=True)
class Reservation:
    """A reserved key: ``target`` is the v2 signed upload URL or the v1 cache id."""

    key: str
    version: str
    size: int
    target: str | int

    def __repr__(self) -> str:
        return f"Reservation(key={self.key!r}, size={self.size})"


@dataclass(frozen=True, kw_only=True)
class Transfer:
    """How one upload is cut: the block size, blocks in flight, and the one-request limit."""

    block_bytes: int
    concurrency: int
    single_put_bytes: int

    def single_request(self, size: int, random_access: bool) -> bool:
        """Whether ``size`` bytes go in one request (a stream must fit in one block)."""
        return size <= (self.single_put_bytes if random_access else self.block_bytes)
