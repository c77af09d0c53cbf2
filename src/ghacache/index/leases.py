"""Named, expiring leases, so one replica at a time runs a background job (e.g. eviction).

A holder renews its lease well within ``ttl_s``; if it dies, the lease expires and another
replica takes over. Each operation is one statement, so it is atomic across processes on
every dialect without a transaction: the upsert either inserts, or updates a row that is
expired or already ours, and the affected-row count says whether we won. Times are the
caller's clock (injected, like everywhere in the index); replicas' clocks must roughly agree.
"""

from __future__ import annotations

from ghacache.index.database import Database

_ACQUIRE = (
    "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at "
    "WHERE leases.expires_at <= ? OR leases.holder = excluded.holder"
)


class Leases:
    """Leases stored in the index database's ``leases`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def acquire(self, name: str, holder: str, *, ttl_s: float, now: float) -> bool:
        """Take lease ``name`` for ``holder`` until ``now + ttl_s``, or renew it if ``holder``
        already holds it.

        Returns:
            True if ``holder`` now holds the lease; False while another holder's lease is
            unexpired (``expires_at > now``).

        Raises:
            ValueError: ``ttl_s`` is not positive.
            MetadataError: the database failed.
        """
        if not ttl_s > 0:
            raise ValueError(f"lease ttl_s must be positive, got {ttl_s!r}")
        # float(): PostgreSQL types parameters by their Python type; keep times DOUBLE.
        won = await self.db.execute(_ACQUIRE, (name, holder, float(now + ttl_s), float(now)))
        return won > 0

    async def release(self, name: str, holder: str) -> None:
        """Give the lease up if ``holder`` holds it (a no-op otherwise)."""
        await self.db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

    async def holder(self, name: str, *, now: float) -> str | None:
        """Who holds an unexpired lease ``name``, or None."""
        row = await self.db.fetch_one(
            "SELECT holder FROM leases WHERE name = ? AND expires_at > ?", (name, float(now))
        )
        return None if row is None else str(row[0])

    async def held(self) -> list[tuple[str, str]]:
        """Every recorded lease as (name, holder), expired ones included."""
        rows = await self.db.fetch_all("SELECT name, holder FROM leases ORDER BY name")
        return [(str(name), str(holder)) for name, holder in rows]
