"""The server understands BuildKit's ``type=gha`` layout, so unmodified BuildKit gets merged,
self-repairing caches.

- When an index entry ``index-<scope>-1-<h8>#N`` is finalized, its document is merged with
  the newest earlier generation of the same key family before it becomes visible, records
  whose blobs are gone are dropped, and the result is bounded in size. What the next import
  sees is the union, not the last writer's document.
- When eviction removes ``buildkit-blob-1-<digest>`` entries, the newest index of every
  family in that repository that references them is rewritten without the records that
  needed them (the index entry keeps its id and key; its blob is replaced atomically).

Only the pure ``cacheconfig`` code is used; an index that does not parse is left alone.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ghacache.cacheconfig import keys as bk
from ghacache.cacheconfig.merge import bound, gc, merge
from ghacache.cacheconfig.model import CacheConfig, CacheConfigError, dumps, parse
from ghacache.crashpoints import crash_point
from ghacache.index import Entry, EntryIndex
from ghacache.index.catalog import Catalog
from ghacache.storage import BlobStore

log = logging.getLogger("ghacache.buildkit")

# Indexes far larger than the bound are not BuildKit's; leave them untouched.
READ_LIMIT_FACTOR = 8


@dataclass(frozen=True, kw_only=True)
class IndexLimits:
    max_bytes: int
    max_age_s: float | None  # drop results older than this, if set


class BuildkitIndexes:
    """Merges index generations at finalize and repairs indexes after blob evictions."""

    def __init__(
        self,
        *,
        index: EntryIndex,
        catalog: Catalog,
        store: BlobStore,
        limits: IndexLimits,
        now: Callable[[], float],
    ) -> None:
        self.index = index
        self.catalog = catalog
        self.store = store
        self.limits = limits
        self.now = now
        self.merges = 0
        self.records_dropped = 0

    def is_index(self, entry: Entry) -> bool:
        parsed = bk.parse_index_key(entry.key)
        return entry.version == bk.VERSION and parsed is not None and parsed.generation is not None

    async def before_publish(self, entry: Entry) -> int | None:
        """Merge a pending index upload with its previous generation.

        Returns the new size if the staged bytes were rewritten, else None.
        """
        if not self.is_index(entry):
            return None
        limit = self.limits.max_bytes * READ_LIMIT_FACTOR
        raw = await self.store.read_assembled(entry.upload, limit)
        if raw is None:
            log.warning("index %s is over %d bytes; stored without merging", entry.key, limit)
            return None
        if not looks_like_cacheconfig(raw):
            log.warning("index %s is not a BuildKit cacheconfig; stored as uploaded", entry.key)
            return None
        try:
            new = parse(raw)
        except CacheConfigError as exc:
            log.warning("index %s does not parse (%s); stored as uploaded", entry.key, exc)
            return None
        parsed = bk.parse_index_key(entry.key)
        assert parsed is not None
        previous = await self.index.lookup(
            repo=entry.repo, scopes=[entry.scope], keys=[parsed.base + "#"], version=entry.version
        )
        docs = [new]
        if previous is not None and previous.blob is not None:
            old = await self._read(previous)
            if old is not None:
                docs.insert(0, old)
        merged = await self._repair(entry.repo, merge(*docs))
        data = dumps(merged)
        if data == raw:
            return None
        self.merges += 1
        size = await self.store.replace_assembled(entry.upload, data)
        crash_point("buildkit.merge.after_rewrite")
        return size

    async def _repair(
        self, repo: str, config: CacheConfig, gone: set[str] | None = None
    ) -> CacheConfig:
        available = await self.catalog.buildkit_blobs(repo, bk.VERSION)
        repaired, report = gc(config, lambda d: d in available and d not in (gone or set()))
        self.records_dropped += report.dropped_records
        cutoff = None
        if self.limits.max_age_s is not None:
            oldest = datetime.fromtimestamp(self.now() - self.limits.max_age_s, UTC)
            cutoff = oldest.strftime("%Y-%m-%dT%H:%M:%SZ")
        return bound(repaired, max_bytes=self.limits.max_bytes, min_created_at=cutoff)

    async def _read(self, entry: Entry) -> CacheConfig | None:
        if (
            entry.blob is None
            or entry.size is None
            or entry.size > self.limits.max_bytes * READ_LIMIT_FACTOR
        ):
            return None
        data = b"".join([chunk async for chunk in self.store.read(entry.blob, 0, entry.size)])
        if not looks_like_cacheconfig(data):
            return None
        try:
            return parse(data)
        except CacheConfigError as exc:
            log.warning("index %s does not parse (%s); not merged", entry.key, exc)
            return None

    async def after_removal(self, removed: list[Entry]) -> int:
        """Rewrite indexes that reference evicted blobs; return how many were rewritten."""
        by_repo: dict[str, set[str]] = {}
        for e in removed:
            digest = bk.parse_blob_key(e.key)
            if digest is not None and e.version == bk.VERSION:
                by_repo.setdefault(e.repo, set()).add(digest)
        rewritten = 0
        for repo, gone in by_repo.items():
            rewritten += await self._repair_repo(repo, gone)
        return rewritten

    async def repair_since(self, since: float) -> int:
        """Redo ``after_removal`` for the blob entries removed since ``since``.

        ``after_removal`` runs after the removal commits, so a crash in between leaves
        indexes naming blobs that are gone; the sweep calls this to finish that work. A
        blob saved again since its removal is no longer gone.
        """
        removed: dict[str, set[str]] = {}
        for repo, key in await self.catalog.removed_since(bk.BLOB_PREFIX, bk.VERSION, since):
            digest = bk.parse_blob_key(key)
            if digest is not None:
                removed.setdefault(repo, set()).add(digest)
        rewritten = 0
        for repo, digests in removed.items():
            gone = digests - await self.catalog.buildkit_blobs(repo, bk.VERSION)
            if gone:
                rewritten += await self._repair_repo(repo, gone)
        return rewritten

    async def _repair_repo(self, repo: str, gone: set[str]) -> int:
        """Rewrite the newest index of every family in ``repo`` that uses a ``gone`` blob."""
        rewritten = 0
        for entry in await self.catalog.newest_buildkit_indexes(repo, bk.VERSION):
            config = await self._read(entry)
            if config is None or not (config.blobs() & gone):
                continue
            if await self._rewrite(entry, await self._repair(repo, config, gone)):
                rewritten += 1
        return rewritten

    async def _rewrite(self, entry: Entry, config: CacheConfig) -> bool:
        data = dumps(config)
        upload = f"rewrite-{secrets.token_hex(8)}"
        blob = f"{entry.id}-{secrets.token_hex(8)}"

        async def body() -> AsyncIterator[bytes]:
            yield data

        try:
            await self.store.write_part(upload, "blob", body(), max_bytes=len(data))
            await self.store.assemble(upload, ["blob"])
            await self.store.publish(upload, blob)
            crash_point("buildkit.gc.after_publish")
        finally:
            await self.store.discard(upload)
        assert entry.blob is not None
        if not await self.catalog.replace_blob(
            entry.id, old_blob=entry.blob, new_blob=blob, size=len(data)
        ):
            await self.store.delete(blob)  # the entry changed or went meanwhile
            return False
        crash_point("buildkit.gc.after_replace")
        await self.store.delete(entry.blob)
        log.info("rewrote index %s without records of evicted blobs", entry.key)
        return True


def looks_like_cacheconfig(raw: bytes) -> bool:
    """A JSON object with nothing but ``layers`` and ``records`` (what BuildKit writes).

    Anything else under an index key (another tool's data) is never rewritten: merging would
    silently drop what the cacheconfig model does not know.
    """
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and bool(doc) and set(doc) <= {"layers", "records"}
