"""Export, import, merge, gc and inspect BuildKit ``type=gha`` caches through ``CacheClient``.

Keys and documents are exactly BuildKit's (``ghacache.cacheconfig``), so what this writes a
real BuildKit imports and the reverse. Unlike BuildKit, exports upload missing blobs in
parallel and *merge* with the scope's current index instead of replacing it, and ``gc``
drops index records whose blobs the service has evicted.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from ghacache.buildkit.layout import DEFAULT_TAG, blob_path, read_layout, write_layout
from ghacache.cacheconfig import keys as bk
from ghacache.cacheconfig.merge import gc as gc_config
from ghacache.cacheconfig.merge import merge, normalize
from ghacache.cacheconfig.model import CacheConfig, CacheConfigError, dumps, parse
from ghacache.client import CacheClient
from ghacache.errors import RemoteEntryExists, RemoteEntryNotFound

log = logging.getLogger("ghacache.buildkit")

Mode = Literal["min", "max"]
T = TypeVar("T")
R = TypeVar("R")
DEFAULT_PARALLEL = 8
MAX_INDEX_BYTES = 16 * 1024 * 1024  # refuse to load absurd "indexes"


async def _bounded(items: Iterable[T], fn: Callable[[T], Awaitable[R]], parallel: int) -> list[R]:
    """``fn`` over ``items`` with at most ``parallel`` in flight, results in order."""
    sem = asyncio.Semaphore(parallel)

    async def one(item: T) -> R:
        async with sem:
            return await fn(item)

    return list(await asyncio.gather(*(one(i) for i in items)))


def _digest_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1024 * 1024):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


@dataclass(kw_only=True)
class ExportReport:
    index_key: str
    uploaded: list[str] = field(default_factory=list)
    present: list[str] = field(default_factory=list)
    records: int = 0
    layers: int = 0


@dataclass(kw_only=True)
class ImportReport:
    index_keys: list[str] = field(default_factory=list)
    downloaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    records: int = 0


@dataclass(kw_only=True)
class ScopeInfo:
    scope: str
    ref: str
    index_key: str | None
    generation: int | None
    records: int = 0
    layers: int = 0
    bytes: int = 0
    missing_blobs: list[str] = field(default_factory=list)


class BuildkitCache:
    """BuildKit's gha cache layout on top of one ``CacheClient``."""

    def __init__(
        self,
        client: CacheClient,
        *,
        parallel: int = DEFAULT_PARALLEL,
        max_index_bytes: int = MAX_INDEX_BYTES,
    ) -> None:
        self.client = client
        self.parallel = parallel
        self.max_index_bytes = max_index_bytes

    # -- refs ---------------------------------------------------------------------------

    def write_ref(self, ref: str | None = None) -> str:
        """The git ref whose index exports write: given, else the token's last writable."""
        if ref is not None:
            return ref
        found = self.client.token_info().write_ref
        return found if found is not None else ""

    def read_refs(self, refs: Sequence[str] | None = None) -> list[str]:
        """Refs imports read: given, else every scope in the token (as BuildKit's importer)."""
        if refs:
            return list(refs)
        return list(dict.fromkeys(s.ref for s in self.client.token_info().scopes))

    # -- reading ------------------------------------------------------------------------

    async def load_index(self, scope: str, ref: str) -> tuple[str, CacheConfig] | None:
        """The current index of (BuildKit scope, ref): its key and document, or None.

        Raises:
            CacheConfigError: the stored index is not a valid cacheconfig.
        """
        entry = await self.client.lookup(bk.index_base(scope, ref) + "#", bk.VERSION)
        if entry is None:
            return None
        async with await self.client.open(entry) as reader:
            if reader.size > self.max_index_bytes:
                raise CacheConfigError(
                    f"index {entry.key} is {reader.size} bytes; refusing to load it"
                )
            data = await reader.read_all()
        try:
            return entry.key, parse(data)
        except CacheConfigError as exc:
            raise CacheConfigError(f"index {entry.key} is corrupt: {exc.message}") from exc

    async def existing(self, digests: Iterable[str]) -> set[str]:
        """Which blobs the service still has (parallel lookups, one per blob)."""
        wanted = sorted(set(digests))

        async def has(d: str) -> bool:
            return await self.client.lookup(bk.blob_key(d), bk.VERSION) is not None

        found = await _bounded(wanted, has, self.parallel)
        return {d for d, ok in zip(wanted, found, strict=True) if ok}

    # -- export -------------------------------------------------------------------------

    async def export(
        self,
        directory: Path,
        *,
        scope: str = bk.DEFAULT_SCOPE,
        ref: str | None = None,
        tag: str = DEFAULT_TAG,
        mode: Mode = "max",
        replace: bool = False,
    ) -> ExportReport:
        """Upload a BuildKit local cache directory as a ``type=gha`` cache.

        Blobs the service lacks are uploaded in parallel (each checked against its digest
        first); then a new index generation is written: the directory's records merged with
        the current index of the scope, unless ``replace``. ``mode="min"`` keeps only records
        with results and what they depend on.

        Raises:
            CacheConfigError: a bad layout, or a blob whose bytes do not match its digest.
            ClientError: the service failed (nothing is reported as success that was not).
        """
        local = read_layout(directory, tag)
        config = local.config
        if mode == "min":
            config, _ = gc_config(config, lambda d: True)
        present = await self.existing(local.blobs)
        todo = [d for d in sorted(local.blobs) if d not in present]
        for d in todo:  # verify before anything is uploaded: never publish wrong bytes
            if await asyncio.to_thread(_digest_of, local.blobs[d]) != d:
                raise CacheConfigError(f"blob {d} in {directory} does not match its digest")

        async def upload(d: str) -> None:
            # Another exporter saving it meanwhile is exactly what we wanted.
            with contextlib.suppress(RemoteEntryExists):
                await self.client.save(bk.blob_key(d), bk.VERSION, str(local.blobs[d]))

        await _bounded(todo, upload, self.parallel)
        ref_name = self.write_ref(ref)
        base = bk.index_base(scope, ref_name)

        def build(previous: bytes | None) -> bytes:
            docs = [config]
            if previous is not None and not replace:
                try:
                    docs.insert(0, parse(previous))
                except CacheConfigError as exc:
                    log.warning("current index of %s is corrupt (%s); replacing it", base, exc)
            return dumps(merge(*docs))

        key = await self.client.save_mutable(base, bk.VERSION, build)
        merged = merge(config)
        return ExportReport(
            index_key=key,
            uploaded=todo,
            present=sorted(present),
            records=len(merged.records),
            layers=len(merged.layers),
        )

    # -- import -------------------------------------------------------------------------

    async def import_(
        self,
        directory: Path,
        *,
        scopes: Sequence[str] = (bk.DEFAULT_SCOPE,),
        refs: Sequence[str] | None = None,
        tag: str = DEFAULT_TAG,
    ) -> ImportReport:
        """Write a BuildKit local cache directory from the gha caches of ``scopes``.

        The indexes of every readable ref (and every BuildKit scope given) are merged;
        records whose blobs are gone are dropped; blobs are downloaded in parallel and
        checked against their digests.

        Raises:
            CacheConfigError: nothing to import, or a downloaded blob was corrupt.
        """
        report = ImportReport()
        loaded = await _bounded(
            [(s, r) for s in scopes for r in self.read_refs(refs)],
            lambda sr: self.load_index(*sr),
            self.parallel,
        )
        docs = []
        for item in loaded:
            if item is not None:
                key, doc = item
                report.index_keys.append(key)
                docs.append(doc)
        if not docs:
            raise CacheConfigError(f"no BuildKit cache found for scopes {', '.join(scopes)}")
        config = merge(*docs)
        available = await self.existing(config.blobs())
        config, gc_report = gc_config(config, lambda d: d in available)
        report.missing = sorted(gc_report.missing_blobs)

        async def fetch(d: str) -> None:
            path = blob_path(directory, d)
            if path.is_file() and await asyncio.to_thread(_digest_of, path) == d:
                return
            entry = await self.client.lookup(bk.blob_key(d), bk.VERSION)
            if entry is None:
                raise RemoteEntryNotFound(f"blob {d} vanished during import", status=404)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.part")
            async with await self.client.open(entry) as reader:
                await reader.download_to(tmp)
            if await asyncio.to_thread(_digest_of, tmp) != d:
                tmp.unlink()
                raise CacheConfigError(f"downloaded blob {d} does not match its digest")
            tmp.replace(path)
            report.downloaded.append(d)

        await _bounded(sorted(config.blobs()), fetch, self.parallel)
        write_layout(directory, config, tag=tag)
        report.records = len(config.records)
        return report

    # -- maintenance --------------------------------------------------------------------

    async def merge_into(
        self,
        *,
        scope: str,
        ref: str | None = None,
        from_scopes: Sequence[str] = (),
        from_refs: Sequence[str] = (),
    ) -> str | None:
        """Write the union of several indexes as a new generation of (scope, ref).

        Returns:
            The key written, or None if there was nothing to merge.
        """
        target_ref = self.write_ref(ref)
        sources = [(s, r) for s in (*from_scopes, scope) for r in (*from_refs, target_ref)]
        loaded = [
            x
            for x in await _bounded(
                dict.fromkeys(sources), lambda sr: self.load_index(*sr), self.parallel
            )
            if x is not None
        ]
        if not loaded:
            return None
        merged = merge(*(doc for _, doc in loaded))
        return await self.client.save_mutable(
            bk.index_base(scope, target_ref),
            bk.VERSION,
            lambda previous: dumps(merge(merged, *_parsed(previous))),
        )

    async def gc(self, *, scope: str, ref: str | None = None) -> tuple[str | None, list[str]]:
        """Drop records of (scope, ref)'s index whose blobs are gone.

        Returns:
            The new index key (None if nothing changed) and the missing blob digests.
        """
        target_ref = self.write_ref(ref)
        current = await self.load_index(scope, target_ref)
        if current is None:
            return None, []
        _, doc = current
        available = await self.existing(doc.blobs())
        cleaned, report = gc_config(doc, lambda d: d in available)
        if not report.missing_blobs:
            return None, []

        def build(previous: bytes | None) -> bytes:
            # A writer may have added records since: keep them, minus what is gone.
            latest = merge(cleaned, *_parsed(previous))
            return dumps(gc_config(latest, lambda d: d not in report.missing_blobs)[0])

        key = await self.client.save_mutable(bk.index_base(scope, target_ref), bk.VERSION, build)
        return key, sorted(report.missing_blobs)

    async def inspect(
        self, scopes: Sequence[str], refs: Sequence[str] | None = None
    ) -> list[ScopeInfo]:
        """For each (scope, ref): the current generation, counts, size and missing blobs."""
        out = []
        for scope in scopes:
            for ref in self.read_refs(refs):
                info = ScopeInfo(scope=scope, ref=ref, index_key=None, generation=None)
                current = await self.load_index(scope, ref)
                if current is not None:
                    key, doc = current
                    parsed = bk.parse_index_key(key)
                    info.index_key = key
                    info.generation = parsed.generation if parsed else None
                    info.records, info.layers = len(doc.records), len(doc.layers)
                    sizes = {
                        layer.blob: layer.annotations.size
                        for layer in doc.layers
                        if layer.annotations
                    }
                    info.bytes = sum(sizes.values())
                    info.missing_blobs = sorted(doc.blobs() - await self.existing(doc.blobs()))
                out.append(info)
        return out


def _parsed(previous: bytes | None) -> list[CacheConfig]:
    if previous is None:
        return []
    try:
        return [parse(previous)]
    except CacheConfigError:
        return []


__all__ = ["BuildkitCache", "ExportReport", "ImportReport", "ScopeInfo", "normalize"]
