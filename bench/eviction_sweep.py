"""Eviction sweep time for N committed entries (default 100,000) on SQLite + local files.

Scenarios (each run rebuilds the data from scratch; runs are interleaved; medians reported):
  noop     every repository within quota and recently used: the common timer sweep
  quota    every repository 10% over its quota: evicts 10% of all entries (LRU)
  idle     every entry idle past the expiry: evicts everything
  reconcile   orphan/missing check over all entries (nothing to do)

Usage: .venv/bin/python bench/eviction_sweep.py [--entries 100000] [--repos 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from ghacache.index import EntryState, open_index
from ghacache.index.catalog import Catalog
from ghacache.protocol.eviction import Policy
from ghacache.server.maintenance import Maintainer, PolicyBook
from ghacache.storage import LocalStore

ENTRY_BYTES = 1_000_000
DAY = 86400.0


async def build(
    root: Path, entries: int, repos: int, now: float
) -> tuple[Catalog, LocalStore, object]:
    index = await open_index(f"sqlite:///{root / 'index.sqlite'}")
    store = LocalStore(root / "store", fsync=False)
    per_repo = entries // repos
    rows: list[object] = []
    ident = 0
    async with index.db.transaction() as tx:
        for r in range(repos):
            for i in range(per_repo):
                ident += 1
                blob = f"{ident}-{ident:016x}"
                # Access times spread over the last day, oldest first.
                accessed = now - DAY + (i / per_repo) * DAY * 0.9
                rows += [f"owner/repo{r}", "refs/heads/main", f"key-{i}", "v", int(EntryState.COMMITTED),
                         ENTRY_BYTES, f"up{ident}", blob, accessed, accessed, accessed]  # fmt: skip
                path = root / "store" / "blobs" / blob[-2:] / blob
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"x")
                if len(rows) >= 11 * 400:
                    await _insert(tx, rows)
                    rows = []
        if rows:
            await _insert(tx, rows)
    return Catalog(index.db), store, index


async def _insert(tx: object, rows: list[object]) -> None:
    n = len(rows) // 11
    values = ", ".join("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)" for _ in range(n))
    await tx.execute(  # type: ignore[attr-defined]
        "INSERT INTO entries (repo, scope, key, version, state, size, upload, blob, created_at, "
        f"updated_at, last_accessed_at) VALUES {values}",
        rows,
    )


async def one_run(scenario: str, entries: int, repos: int) -> tuple[float, int]:
    now = time.time()
    with tempfile.TemporaryDirectory(prefix="ghacache-bench-") as tmp:
        catalog, store, index = await build(Path(tmp), entries, repos, now)
        per_repo_bytes = (entries // repos) * ENTRY_BYTES
        quota = {"noop": per_repo_bytes, "quota": int(per_repo_bytes / 1.1), "idle": per_repo_bytes}
        expiry = 0.01 if scenario == "idle" else 7 * DAY
        maintainer = Maintainer(
            index=index,  # type: ignore[arg-type]
            catalog=catalog,
            store=store,
            policies=PolicyBook(
                default=Policy(
                    quota_bytes=quota.get(scenario, per_repo_bytes), idle_expiry_s=expiry
                )
            ),
            orphan_grace_s=3600,
            now=lambda: now,
        )
        start = time.perf_counter()
        if scenario == "reconcile":
            await maintainer.reconcile()
            removed = 0
        else:
            removed = len(await maintainer.evict())
        elapsed = time.perf_counter() - start
        await index.close()  # type: ignore[attr-defined]
    return elapsed, removed


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repos", type=int, default=100)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    scenarios = ["noop", "quota", "idle", "reconcile"]
    times: dict[str, list[float]] = {s: [] for s in scenarios}
    removed: dict[str, int] = {}
    for _ in range(args.runs):
        for s in scenarios:  # interleaved, so machine noise spreads over all scenarios
            t, n = await one_run(s, args.entries, args.repos)
            times[s].append(t)
            removed[s] = n
    print(
        f"eviction sweep, {args.entries:,} entries in {args.repos} repositories, median of {args.runs}"
    )
    print(
        f"{'scenario':<10} {'median s':>9} {'min s':>7} {'max s':>7} {'evicted':>9} {'entries/s':>10}"
    )
    results = {}
    for s in scenarios:
        med = statistics.median(times[s])
        print(
            f"{s:<10} {med:>9.3f} {min(times[s]):>7.3f} {max(times[s]):>7.3f} {removed[s]:>9,} {args.entries / med:>10,.0f}"
        )
        results[s] = {"median_s": med, "runs_s": times[s], "evicted": removed[s]}
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "eviction_sweep.json").write_text(
        json.dumps(
            {
                "entries": args.entries,
                "repos": args.repos,
                "cpu": os.cpu_count(),
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
