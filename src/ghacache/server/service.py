"""The cache service: GitHub's rules over an ``EntryIndex`` and a ``BlobStore``.

No HTTP types here: routes decode requests, call these methods with verified claims and
byte streams, and encode the results. Both protocols share one upload model: parts are
staged, assembled in order, then published and committed in one step, so an entry is
visible only once its bytes are complete and durable.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from ghacache.crashpoints import crash_point
from ghacache.errors import (
    BlobNotFound,
    EntryNotFound,
    EntryTooLarge,
    RemoteProtocolError,
    ScopeForbidden,
    StorageError,
    UploadStateError,
)
from ghacache.index import Entry, EntryIndex, EntryState
from ghacache.protocol.azblob import block_part_name
from ghacache.protocol.keys import dedupe_keys
from ghacache.protocol.scopes import RuntimeClaims
from ghacache.server import annotate
from ghacache.server.metrics import Metrics, lookup_result
from ghacache.server.ratelimit import CreationRateLimiter
from ghacache.storage import BlobInfo, BlobStore
from ghacache.storage.base import DIRECT_PART

log = logging.getLogger("ghacache.service")

SINGLE_PART = "blob"
MAX_BLOCK_BYTES = 4000 * 1024 * 1024  # Azure's Put Block limit
MAX_STAGED_BLOCKS = 100_000  # Azure's limit of uncommitted blocks per blob


def _block_number(raw_block_id: bytes) -> int | None:
    """The block's number, if its id ends in one (up to 5 digits; Azure allows 50,000 blocks).

    The Azure SDKs (and ghacache's client) make ids as a per-upload prefix plus the block's
    zero-padded index. Only a placement hint: the block list alone decides the order.
    """
    digits = len(raw_block_id) - len(raw_block_id.rstrip(b"0123456789"))
    return int(raw_block_id[-min(digits, 5) :]) if digits else None


def _chunk_part(offset: int) -> str:
    # Zero-padded so that name order is offset order.
    return f"o{offset:020d}"


@dataclass(frozen=True, kw_only=True)
class Limits:
    max_entry_bytes: int
    reservation_timeout_s: float


class CacheService:
    """Lookups, reservations, uploads and downloads with GitHub's semantics."""

    def __init__(
        self,
        *,
        index: EntryIndex,
        store: BlobStore,
        limits: Limits,
        now: Callable[[], float],
        rate_limiter: CreationRateLimiter | None = None,
        on_commit: Callable[[Entry], Awaitable[object]] | None = None,
        before_publish: Callable[[Entry], Awaitable[int | None]] | None = None,
        direct_uploads: bool = False,
        metrics: Metrics | None = None,
        on_lookup: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.index = index
        self.store = store
        self.limits = limits
        self.now = now
        self.rate_limiter = rate_limiter or CreationRateLimiter(0, now=now)
        # Called after every commit (eviction for the entry's repository); its failures are
        # logged, never reported to the client whose entry is already safely committed.
        self.on_commit = on_commit
        # May rewrite the staged bytes before they become visible (BuildKit index merge);
        # returns the new size. Its failures keep the bytes as uploaded.
        self.before_publish = before_publish
        # Clients upload straight to the store (part DIRECT_PART); finalize adopts the blob.
        self.direct_uploads = direct_uploads
        self.metrics = metrics
        # Told (repository, hit) of every lookup: the dashboard's hit-rate history.
        self.on_lookup = on_lookup

    # -- lookups --------------------------------------------------------------------------

    async def lookup(
        self, claims: RuntimeClaims, keys: Sequence[str], version: str
    ) -> Entry | None:
        """The entry a restore with these keys gets, or None; a hit counts as an access."""
        keys = dedupe_keys(keys)
        entry = await self.index.lookup(
            repo=claims.repository,
            scopes=claims.readable_refs(),
            keys=keys,
            version=version,
            touch_at=self.now(),  # a hit is an access, recorded before we answer
        )
        self._observe_lookup(claims, keys, entry)
        if self.on_lookup is not None:
            self.on_lookup(claims.repository, entry is not None)
        return entry

    def _observe_lookup(
        self, claims: RuntimeClaims, keys: Sequence[str], entry: Entry | None
    ) -> None:
        """Count the lookup (exact, prefix or miss) and note it for the access line."""
        result = self.metrics.lookup(keys, entry) if self.metrics else lookup_result(keys, entry)
        annotate.note(repository=claims.repository, key=keys[0] if keys else "", lookup=result)
        if entry is not None:
            annotate.note(scope=entry.scope, matched_key=entry.key)

    async def list_key(self, claims: RuntimeClaims, key: str) -> list[Entry]:
        """Committed entries with exactly ``key`` in readable scopes (v1 debug listing)."""
        return await self.index.list_committed(
            repo=claims.repository, scopes=claims.readable_refs(), key=key
        )

    # -- reservations ---------------------------------------------------------------------

    def _write_scope(self, claims: RuntimeClaims) -> str:
        annotate.note(repository=claims.repository)
        scope = claims.writable_ref()
        if scope is None:
            raise ScopeForbidden("cache write denied: token has no writable scopes")
        annotate.note(scope=scope)
        return scope

    async def reserve(
        self, claims: RuntimeClaims, key: str, version: str, declared_size: int | None = None
    ) -> Entry:
        """Reserve (repository, writable scope, key, version) for an upload.

        Raises:
            ScopeForbidden: the token cannot write.
            EntryTooLarge: the declared size is over the limit.
            EntryExists: the identity is committed or reserved by a live upload.
        """
        annotate.note(key=key)
        scope = self._write_scope(claims)
        self.rate_limiter.acquire(claims.repository)
        if declared_size is not None and declared_size > self.limits.max_entry_bytes:
            raise EntryTooLarge(
                f"cache size of {declared_size} bytes exceeds the limit of "
                f"{self.limits.max_entry_bytes} bytes"
            )
        now = self.now()
        entry, replaced = await self.index.reserve(
            repo=claims.repository,
            scope=scope,
            key=key,
            version=version,
            declared_size=declared_size,
            upload=secrets.token_hex(12),
            now=now,
            stale_before=now - self.limits.reservation_timeout_s,
        )
        crash_point("reserve.after_commit")
        if replaced is not None:
            log.info("replaced abandoned reservation %s of key %r", replaced.id, key)
            await self.store.discard(replaced.upload)
        return entry

    async def _pending(self, entry_id: int) -> Entry:
        entry = await self.index.get(entry_id)
        annotate.note_entry(entry)
        if entry is None or entry.state is EntryState.COMMITTED:
            raise EntryNotFound(f"no upload in progress for entry {entry_id}")
        return entry

    async def _pending_for(self, claims: RuntimeClaims, cache_id: int) -> Entry:
        """A v1 reservation by id, checked against the caller's repository and scope."""
        entry = await self.index.get(cache_id)
        if entry is None or entry.repo != claims.repository:
            raise EntryNotFound(f"cache {cache_id} not found")
        annotate.note_entry(entry)
        if entry.scope != self._write_scope(claims):
            raise ScopeForbidden(f"cache {cache_id} belongs to another scope")
        if entry.state is EntryState.COMMITTED:
            raise UploadStateError(f"cache {cache_id} is already committed")
        return entry

    async def _stage(
        self,
        entry: Entry,
        part: str,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int,
        offset: int | None = None,
        number: int | None = None,
        length: int | None = None,
    ) -> int:
        size = await self.store.write_part(
            entry.upload,
            part,
            chunks,
            max_bytes=max_bytes,
            offset=offset,
            number=number,
            length=length,
        )
        crash_point("stage.after_write")
        if not await self.index.add_part(entry.id, part, size, self.now()):
            raise EntryNotFound(f"upload for entry {entry.id} was abandoned or committed")
        crash_point("stage.after_record")
        return size

    # -- v2 uploads (Azure Block Blob subset behind the signed URL) ---------------------------

    async def put_blob(
        self, entry_id: int, chunks: AsyncIterable[bytes], *, length: int | None = None
    ) -> int:
        """Put Blob: the whole body in one request (``length``: its declared size, if any)."""
        entry = await self._pending(entry_id)
        if length is not None and length > self.limits.max_entry_bytes:  # refuse before reading
            raise EntryTooLarge(f"blob of {length} bytes exceeds the entry size limit")
        await self._stage(entry, SINGLE_PART, chunks, max_bytes=self.limits.max_entry_bytes)
        return await self._assemble(entry, [SINGLE_PART])

    async def put_block(
        self,
        entry_id: int,
        raw_block_id: bytes,
        chunks: AsyncIterable[bytes],
        *,
        length: int | None = None,
    ) -> int:
        """Put Block: stage one block, in any order.

        ``length`` is the body's declared size (Content-Length): with it, and the number the
        block id ends in, the store can write the block straight into its place.
        """
        entry = await self._pending(entry_id)
        name = block_part_name(raw_block_id)
        # Staged blocks count against the entry size and Azure's block count as they arrive,
        # not only at Put Block List: an upload cannot fill the disk with blocks it never lists.
        count, staged, replaced = await self.index.part_totals(entry.id, name)
        if replaced is None and count >= MAX_STAGED_BLOCKS:
            raise RemoteProtocolError(f"upload already has {count} staged blocks, the most allowed")
        room = self.limits.max_entry_bytes - (staged - (replaced or 0))
        max_bytes = max(0, min(MAX_BLOCK_BYTES, room))
        number = _block_number(raw_block_id)
        return await self._stage(
            entry, name, chunks, max_bytes=max_bytes, number=number, length=length
        )

    async def put_block_list(self, entry_id: int, raw_block_ids: Sequence[bytes]) -> int:
        """Put Block List: assemble staged blocks in list order."""
        entry = await self._pending(entry_id)
        staged = await self.index.parts(entry.id)
        names = [block_part_name(b) for b in raw_block_ids]
        missing = [n for n in names if n not in staged]
        if missing:
            raise RemoteProtocolError(
                f"block list names {len(missing)} block(s) that were never uploaded"
            )
        total = sum(staged[n] for n in names)
        if total > self.limits.max_entry_bytes:
            raise EntryTooLarge(f"blob of {total} bytes exceeds the entry size limit")
        return await self._assemble(entry, names)

    async def _assemble(self, entry: Entry, names: Sequence[str]) -> int:
        size = await self._assemble_parts(entry, names)
        crash_point("assemble.after_store")
        if not await self.index.mark_uploaded(entry.id, size, self.now()):
            raise EntryNotFound(f"upload for entry {entry.id} was abandoned or committed")
        crash_point("assemble.after_mark")
        return size

    async def finalize(
        self, claims: RuntimeClaims, key: str, version: str, size_bytes: int
    ) -> Entry:
        """FinalizeCacheEntryUpload: make the uploaded blob visible.

        Raises:
            EntryNotFound: no reservation for this key and version in the writable scope.
            UploadStateError: nothing was uploaded yet.
            RemoteProtocolError: ``size_bytes`` differs from the bytes received.
        """
        annotate.note(key=key)
        scope = self._write_scope(claims)
        entry = await self.index.find_pending(
            repo=claims.repository, scope=scope, key=key, version=version
        )
        if entry is None:
            raise EntryNotFound(f"no reservation for key {key!r} and this version in {scope}")
        if entry.state is EntryState.RESERVED and self.direct_uploads:
            entry = await self._adopt_direct_upload(entry)
        if entry.state is not EntryState.UPLOADED or entry.size is None:
            raise UploadStateError(f"nothing has been uploaded for key {key!r} yet")
        if entry.size != size_bytes:
            raise RemoteProtocolError(
                f"size mismatch: finalize says {size_bytes} bytes but {entry.size} were uploaded"
            )
        return await self._publish(entry, entry.size)

    async def _adopt_direct_upload(self, entry: Entry) -> Entry:
        """Take the blob a client uploaded straight to the store as this entry's upload."""
        try:
            size = await self.store.assemble(entry.upload, [DIRECT_PART])
        except BlobNotFound:
            return entry  # nothing uploaded yet: finalize says so
        if size > self.limits.max_entry_bytes:
            await self.store.discard(entry.upload)
            raise EntryTooLarge(f"blob of {size} bytes exceeds the entry size limit")
        if not await self.index.mark_uploaded(entry.id, size, self.now()):
            raise EntryNotFound(f"upload for entry {entry.id} was abandoned or committed")
        return replace(entry, state=EntryState.UPLOADED, size=size)

    # -- v1 uploads -----------------------------------------------------------------------

    async def upload_chunk(
        self,
        claims: RuntimeClaims,
        cache_id: int,
        start: int,
        end: int,
        chunks: AsyncIterable[bytes],
    ) -> None:
        """PATCH one chunk ``[start, end]`` (inclusive), in any order.

        Raises:
            RemoteProtocolError: the body length differs from the Content-Range.
        """
        entry = await self._pending_for(claims, cache_id)
        if end >= self.limits.max_entry_bytes:
            raise EntryTooLarge(f"chunk ends beyond the {self.limits.max_entry_bytes}-byte limit")
        if entry.declared_size is not None and end >= entry.declared_size:
            # The reservation passed the size limit with this size: hold the upload to it.
            raise EntryTooLarge(f"chunk ends beyond the {entry.declared_size} bytes reserved")
        expected = end - start + 1
        part = _chunk_part(start)
        # The length is checked inside the stream, so a wrong-length body fails the write
        # and never replaces a chunk already staged for this range. The chunk is written
        # at its offset in the object, so a commit of chunks that tile it copies nothing.
        await self._stage(
            entry,
            part,
            _exactly(chunks, expected),
            max_bytes=expected,
            offset=start,
            length=expected,
        )

    async def commit_chunks(self, claims: RuntimeClaims, cache_id: int, size: int) -> Entry:
        """Commit a v1 upload whose chunks must tile ``[0, size)`` exactly.

        Raises:
            RemoteProtocolError: gaps, overlaps, or a size other than the bytes received.
        """
        entry = await self._pending_for(claims, cache_id)
        staged = await self.index.parts(entry.id)
        # A concurrent commit deletes the parts as it commits: check we read a pending upload's.
        entry = await self._pending_for(claims, cache_id)
        offset = 0
        names: list[str] = []
        for name, length in sorted(staged.items()):
            if not name.startswith("o"):
                raise UploadStateError(f"cache {cache_id} holds blocks of a v2 upload")
            start = int(name[1:])
            if start != offset:
                what = "gap" if start > offset else "overlap"
                raise RemoteProtocolError(
                    f"uploaded chunks have a {what} at byte {min(start, offset)}"
                )
            names.append(name)
            offset += length
        if offset != size:
            raise RemoteProtocolError(
                f"size mismatch: commit says {size} bytes but {offset} were uploaded"
            )
        if not names:
            names = [SINGLE_PART]
            await self._stage(entry, SINGLE_PART, _empty(), max_bytes=0)
        assembled = await self._assemble_parts(entry, names)
        crash_point("v1.commit.after_assemble")
        return await self._publish(entry, assembled)

    async def _assemble_parts(self, entry: Entry, names: Sequence[str]) -> int:
        """Assemble staged parts; losing a race to a concurrent commit is a 412, not a 500."""
        try:
            return await self.store.assemble(entry.upload, names)
        except StorageError as exc:
            await self._raise_if_lost(entry, exc)
            raise

    async def _raise_if_lost(self, entry: Entry, exc: Exception | None = None) -> None:
        """Raise UploadStateError if a concurrent commit or expiry took this upload.

        The loser discards the upload again: its own writes may have landed in the
        directory after the winner's discard, and nobody else will ever clean them.
        """
        current = await self.index.get(entry.id)
        if current is None or current.committed:
            await self.store.discard(entry.upload)
            raise UploadStateError(
                f"upload for entry {entry.id} was committed or abandoned"
            ) from exc

    # -- commit and downloads -------------------------------------------------------------

    async def _publish(self, entry: Entry, size: int) -> Entry:
        if self.before_publish is not None:
            try:
                size = await self.before_publish(entry) or size
            except Exception:
                log.exception("pre-publish work failed for entry %s; kept as uploaded", entry.id)
        blob = f"{entry.id}-{secrets.token_hex(8)}"
        try:
            await self.store.publish(entry.upload, blob)
        except (StorageError, UploadStateError) as exc:
            await self._raise_if_lost(entry, exc)
            raise
        crash_point("finalize.after_publish")
        committed = await self.index.commit(entry.id, size=size, blob=blob, now=self.now())
        if committed is None:  # a concurrent finalize won, or the reservation expired
            await self.store.delete(blob)
            await self._raise_if_lost(entry)
            raise UploadStateError(f"upload for entry {entry.id} was committed or abandoned")
        crash_point("finalize.after_commit")
        await self.store.discard(entry.upload)
        if self.on_commit is not None:
            try:
                await self.on_commit(committed)
            except Exception:
                log.exception("post-commit work failed for entry %s", committed.id)
        return committed

    async def open_download(self, entry_id: int) -> tuple[Entry, BlobInfo]:
        """A committed entry and its blob's metadata.

        Raises:
            EntryNotFound: no such committed entry.
            BlobNotFound: the entry's bytes are gone.
        """
        entry = await self.index.get(entry_id)
        annotate.note_entry(entry)
        if entry is None or not entry.committed or entry.blob is None:
            raise BlobNotFound(f"entry {entry_id} does not exist")
        info = await self.store.stat(entry.blob)
        if info is None:
            raise BlobNotFound(f"the bytes of entry {entry_id} are gone")
        return entry, info

    # -- maintenance ----------------------------------------------------------------------

    async def expire_reservations(self) -> int:
        """Delete uploads idle past the reservation timeout and their staged bytes."""
        before = self.now() - self.limits.reservation_timeout_s
        expired = 0
        for entry in await self.index.stale_reservations(before):
            if await self.index.delete_pending(entry.id, before):
                crash_point("expire.after_index_delete")
                await self.store.discard(entry.upload)
                expired += 1
        if expired:
            log.info("expired %d abandoned reservation(s)", expired)
        return expired


async def _exactly(chunks: AsyncIterable[bytes], expected: int) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through, raising if they add up to anything but ``expected`` bytes."""
    received = 0
    async for chunk in chunks:
        received += len(chunk)
        if received > expected:
            raise RemoteProtocolError(
                f"Content-Range announces {expected} bytes but the body is longer"
            )
        yield chunk
    if received != expected:
        raise RemoteProtocolError(
            f"Content-Range announces {expected} bytes but the body had {received}"
        )


async def _empty() -> AsyncIterator[bytes]:
    nothing: tuple[bytes, ...] = ()
    for chunk in nothing:
        yield chunk
