"""Background upkeep: eviction (quota, idle expiry), abandoned uploads and orphan reconciling.

Eviction runs for one repository right after each commit and for all repositories on a
timer. Rows are deleted (and recorded) before blobs, so nothing is ever served without its
bytes; a blob left behind by a crash in between is an orphan that ``reconcile`` removes once
it is older than the grace period. Blobs are unlinked, so a download already streaming one
finishes intact. Work that follows a removal (repairing BuildKit indexes) is redone at every
sweep for the removals recorded since the previous one, as a crash may have cut it short.

Replicas share the database, so each job holds a database lease while it runs: ``sweep``
for the whole timer pass and ``evict:<repo>`` for one repository. A replica that finds a
lease taken skips that work (its holder is doing it); a replica that dies mid-job loses
its lease when it expires, and the next pass elsewhere picks the work up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from ghacache.crashpoints import crash_point
from ghacache.index import Entry, EntryIndex, Leases
from ghacache.index.catalog import Catalog
from ghacache.protocol.eviction import EvictionReason, Policy, plan
from ghacache.server.metrics import Metrics
from ghacache.storage import BlobStore

log = logging.getLogger("ghacache.maintenance")


@dataclass(frozen=True, kw_only=True)
class PolicyBook:
    """The default policy and per-repository overrides."""

    default: Policy
    overrides: Mapping[str, Policy] = field(default_factory=dict)

    def for_repo(self, repo: str) -> Policy:
        return self.overrides.get(repo, self.default)


def replica_id() -> str:
    """``host:pid``: unique among live replicas, readable in logs, and checkable on restart."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@dataclass(frozen=True, kw_only=True)
class ReconcileReport:
    orphan_blobs: int
    orphan_uploads: int
    missing_entries: int


class Maintainer:
    """Runs eviction and reconciliation; one sweep at a time per process."""

    def __init__(
        self,
        *,
        index: EntryIndex,
        catalog: Catalog,
        store: BlobStore,
        policies: PolicyBook,
        orphan_grace_s: float,
        now: Callable[[], float],
        on_removed: Callable[[list[Entry]], Awaitable[object]] | None = None,
        redo_removed: Callable[[float], Awaitable[object]] | None = None,
        replica: str | None = None,
        lease_ttl_s: float = 300.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.index = index
        self.catalog = catalog
        self.store = store
        self.policies = policies
        self.orphan_grace_s = orphan_grace_s
        self.now = now
        # Called with every batch of removed entries (BuildKit index repair).
        self.on_removed = on_removed
        # Redoes that work for the removals recorded since a time, at every sweep: it runs
        # after a removal commits, so a crash in between would skip it for good.
        self.redo_removed = redo_removed
        self._swept_at: float | None = None  # when this process's last sweep started
        self.replica = replica or replica_id()
        self.leases = Leases(index.db)
        self.lease_ttl_s = lease_ttl_s
        self.metrics = metrics
        self._lock = asyncio.Lock()

    @asynccontextmanager
    async def lease(self, name: str) -> AsyncIterator[bool]:
        """Hold database lease ``name`` for the block; yields False if another replica has it.

        While held, the lease is renewed every third of its lifetime, so a long job keeps it.
        """
        if not await self._renew(name):
            yield False
            return
        keeper = asyncio.create_task(self._keep(name))
        try:
            yield True
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            await self.leases.release(name, self.replica)

    async def _renew(self, name: str) -> bool:
        return await self.leases.acquire(name, self.replica, ttl_s=self.lease_ttl_s, now=self.now())

    async def _keep(self, name: str) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl_s / 3)
            if not await self._renew(name):
                log.warning("lost lease %s (this replica stalled past its lifetime)", name)
                return

    async def free_dead_leases(self) -> int:
        """Release leases that a crashed process on this host left behind.

        Its pid is gone, so it runs no job; without this, a restarted single server would
        wait out the lease lifetime before it evicts again.
        """
        host = socket.gethostname()
        freed = 0
        for name, holder in await self.leases.held():
            lease_host, _, pid = holder.rpartition(":")
            ours = lease_host == host and pid.isdigit() and holder != self.replica
            if ours and not _alive(int(pid)):
                await self.leases.release(name, holder)
                freed += 1
        if freed:
            log.info("released %d lease(s) left by a crashed process on this host", freed)
        return freed

    async def sweep(self) -> bool:
        """One timer pass (evict every repository, then reconcile) unless a replica is on it."""
        async with self.lease("sweep") as held:
            if not held:
                log.debug("sweep skipped: another replica holds the lease")
                return False
            log.debug("sweep started on %s", self.replica)
            started = self.now()
            await self.evict()
            await self.reconcile()
            await self._redo_removed()
            self._swept_at = started
            log.debug("sweep finished on %s", self.replica)
            return True

    async def _redo_removed(self) -> None:
        """Finish post-removal work a crash may have cut short (on any replica).

        Covers the removals since this process's previous sweep, less a lease lifetime
        (another replica may have removed them while it held the lease), or all of them at
        its first sweep.
        """
        if self.redo_removed is None:
            return
        since = 0.0 if self._swept_at is None else self._swept_at - self.lease_ttl_s
        try:
            await self.redo_removed(since)
        except Exception:
            log.exception("redoing post-removal work failed")

    async def evict(self, repo: str | None = None) -> list[Entry]:
        """Apply quota and idle expiry to one repository (or all); return what was removed.

        A repository whose ``evict:<repo>`` lease another replica holds is skipped.
        """
        async with self._lock:
            removed: list[Entry] = []
            for usage in await self.catalog.usage(repo):
                policy = self.policies.for_repo(usage.repo)
                now = self.now()
                if (
                    usage.size <= policy.quota_bytes
                    and usage.oldest_access >= now - policy.idle_expiry_s
                ):
                    continue
                async with self.lease(f"evict:{usage.repo}") as held:
                    if held:
                        removed += await self._evict_repo(usage.repo, policy, now)
            return removed

    async def _evict_repo(self, repo: str, policy: Policy, now: float) -> list[Entry]:
        planned = plan(await self.catalog.usages_of(repo), policy=policy, now=now)
        removed: list[Entry] = []
        for reason in (EvictionReason.IDLE, EvictionReason.QUOTA):
            batch = [u for u, r in planned if r is reason]
            if not batch:
                continue
            # An entry restored since planning has a newer access time and is kept.
            newest = max(u.last_accessed_at for u in batch)
            gone = await self.catalog.remove(
                [u.entry_id for u in batch], reason, now=now, accessed_before=newest
            )
            self._count(reason, gone)
            await self._delete_blobs(gone)
            removed += gone
        if removed:
            log.info(
                "evicted %d entries (%d bytes) from %s",
                len(removed),
                sum(e.size or 0 for e in removed),
                repo,
            )
        return removed

    async def delete(self, entry_ids: list[int]) -> list[Entry]:
        """Remove entries on an operator's request (recorded with reason ``deleted``)."""
        gone = await self.catalog.remove(entry_ids, EvictionReason.DELETED, now=self.now())
        self._count(EvictionReason.DELETED, gone)
        await self._delete_blobs(gone)
        return gone

    def _count(self, reason: EvictionReason, gone: list[Entry]) -> None:
        if self.metrics is not None:
            self.metrics.evicted(reason, gone)

    async def _delete_blobs(self, entries: list[Entry]) -> None:
        if entries:
            crash_point("evict.after_index_delete")
        await self.store.delete_many([e.blob for e in entries if e.blob is not None])
        if entries:
            crash_point("evict.after_blob_delete")
        if entries and self.on_removed is not None:
            try:
                await self.on_removed(entries)
            except Exception:
                log.exception("post-removal work failed")

    async def reconcile(self) -> ReconcileReport:
        """Remove bytes without an entry and entries without bytes.

        Blobs and staged uploads are only removed once older than the grace period, so an
        upload or commit in flight (possibly on another replica) is never disturbed.
        """
        async with self._lock:
            # Read the index before listing the store: an entry committed after this read
            # has a fresh blob (protected by the grace period), never a "missing" one.
            committed = await self.catalog.committed_blob_map()
            pending = await self.index.pending_uploads()
            blobs = set(await self.store.list_blobs())
            cutoff = self.now() - self.orphan_grace_s
            orphan_blobs = 0
            for name in blobs - set(committed.values()):
                info = await self.store.stat(name)
                if info is not None and info.modified_at < cutoff:
                    await self.store.delete(name)
                    crash_point("reconcile.after_blob_delete")
                    orphan_blobs += 1
            missing = [entry_id for entry_id, blob in committed.items() if blob not in blobs]
            gone = await self.catalog.remove(missing, EvictionReason.MISSING, now=self.now())
            if gone:
                crash_point("reconcile.after_missing_removed")
            self._count(EvictionReason.MISSING, gone)
            orphan_uploads = 0
            for upload in await self.store.list_uploads():
                if upload in pending:
                    continue
                age = await self.store.upload_modified_at(upload)
                if age is not None and age < cutoff:
                    await self.store.discard(upload)
                    crash_point("reconcile.after_upload_discard")
                    orphan_uploads += 1
            report = ReconcileReport(
                orphan_blobs=orphan_blobs, orphan_uploads=orphan_uploads, missing_entries=len(gone)
            )
            if orphan_blobs or orphan_uploads or gone:
                log.info("reconciled storage: %s", report)
            return report
