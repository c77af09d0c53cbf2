"""Eviction and reconciliation through the real server, real HTTP and an injected clock.

Saves go through the v2 wire protocol, restores are lookups (which count as accesses),
eviction runs after every finalize and on the timer (``maintainer.evict()``), and every
removal must show up in ``GET /actions/cache/evictions``. No test sleeps to age entries.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ghacache.protocol.eviction import EvictionReason
from ghacache.server.auth import mint_admin_token
from tests.conftest import Clock, ServerHandle, SpawnedServer, Spawner, start_server
from tests.support import wire

KiB = 1024
MiB = 1024 * KiB
DAY = 86400.0
MAIN = "refs/heads/main"


@pytest.fixture
async def quota_server(tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    """1 MiB per repository, 7 days idle expiry; octo/big may hold 2 MiB for 30 days."""
    handle, runner = await start_server(
        tmp_path, clock, repo_quota_bytes="1MiB", repo_overrides="octo/big=2MiB:30d"
    )
    try:
        yield handle
    finally:
        await runner.cleanup()


class Repo:
    """One repository's view of a server: save, restore, and ask the management API."""

    def __init__(
        self, srv: ServerHandle, http: aiohttp.ClientSession, name: str = "octo/repo"
    ) -> None:
        self.srv = srv
        self.http = http
        self.name = name
        self.saved: dict[str, bytes] = {}

    @property
    def token(self) -> str:
        return self.srv.token(self.name)

    async def save(self, key: str, size: int) -> int:
        data = os.urandom(size)
        # Bodies over 1 MiB go in 1 MiB blocks (aiohttp warns about bigger raw bodies).
        block = MiB if size > MiB else None
        entry_id = await wire.v2_save(
            self.http, self.srv.url, self.token, key, data, block_size=block
        )
        self.saved[key] = data
        return entry_id

    async def restore(self, key: str, restore_keys: tuple[str, ...] = ()) -> bytes | None:
        """A restore like the official client's: lookup (an access), then download."""
        found = await wire.v2_lookup(self.http, self.srv.url, self.token, key, restore_keys)
        if not found["ok"]:
            return None
        status, body, _ = await wire.download(self.http, found["signed_download_url"])
        assert status == 200, status
        assert body == self.saved[found["matched_key"]], found["matched_key"]
        return body

    async def alive(self) -> set[str]:
        """Keys an exact restore finds byte-exact (an access: use it only to check)."""
        out = set()
        for key in self.saved:
            found = await wire.v2_lookup(self.http, self.srv.url, self.token, key)
            if found["ok"] and found["matched_key"] == key:
                status, body, _ = await wire.download(self.http, found["signed_download_url"])
                assert (status, body) == (200, self.saved[key]), key
                out.add(key)
        return out

    async def listed(self) -> dict[str, dict[str, Any]]:
        """Caches the management API lists (not an access)."""
        status, body = await api(
            self.http, self.srv, f"/repos/{self.name}/actions/caches?per_page=100"
        )
        assert status == 200, body
        return {c["key"]: c for c in body["actions_caches"]}

    async def usage(self) -> int:
        status, body = await api(self.http, self.srv, f"/repos/{self.name}/actions/cache/usage")
        assert status == 200, body
        return int(body["active_caches_size_in_bytes"])


async def api(
    http: aiohttp.ClientSession, srv: ServerHandle, path: str, method: str = "GET"
) -> tuple[int, Any]:
    token = mint_admin_token(srv.secret, ttl_s=3600, now=srv.clock())
    async with http.request(method, srv.url + path, headers=wire.auth(token)) as r:
        raw = await r.read()
        return r.status, (await r.json(content_type=None)) if raw else None


async def evictions(http: aiohttp.ClientSession, srv: ServerHandle, query: str = "") -> list[Any]:
    status, body = await api(http, srv, f"/actions/cache/evictions?per_page=100{query}")
    assert status == 200, body
    assert body["total_count"] >= len(body["evictions"])
    return list(body["evictions"])


def parse_time(text: str) -> float:
    """A GitHub timestamp (2026-01-02T03:04:05.678Z) as epoch seconds."""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def blob_files(srv: ServerHandle) -> dict[str, Path]:
    root = srv.config.data_dir / "store" / "blobs"
    return {p.name: p for p in root.rglob("*") if p.is_file()}


# -- idle expiry ---------------------------------------------------------------------------


async def test_idle_entries_vanish_on_the_timer_sweep(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    repo = Repo(quota_server, http)
    for key in ("idle-a", "idle-b", "idle-c"):
        await repo.save(key, 10 * KiB)
        clock.advance(60)
    clock.advance(3 * DAY)
    assert await repo.restore("idle-a") == repo.saved["idle-a"]  # accessed 3 days in
    # idle-c via a restore key (prefix match): that is an access of idle-c too.
    assert await repo.restore("missing-key", ("idle-c",)) == repo.saved["idle-c"]
    clock.advance(4 * DAY + 1)  # idle-b: 7 days and 2 minutes without access

    # Nothing happens until a sweep runs: age alone does not hide entries.
    assert set(await repo.listed()) == {"idle-a", "idle-b", "idle-c"}
    removed = await quota_server.state.maintainer.evict()

    assert [e.key for e in removed] == ["idle-b"]
    assert set(await repo.listed()) == {"idle-a", "idle-c"}
    assert await repo.alive() == {"idle-a", "idle-c"}
    (record,) = await evictions(http, quota_server)
    assert record["key"] == "idle-b" and record["reason"] == "idle"
    assert record["size_in_bytes"] == 10 * KiB

    # Another 4 days: idle-a and idle-c were accessed just now by alive(), so they stay.
    clock.advance(4 * DAY)
    assert await quota_server.state.maintainer.evict() == []
    clock.advance(3 * DAY + 1)
    assert {e.key for e in await quota_server.state.maintainer.evict()} == {"idle-a", "idle-c"}
    assert await repo.listed() == {}
    assert await repo.usage() == 0


async def test_idle_expiry_applies_after_commit_too(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    repo = Repo(quota_server, http)
    await repo.save("stale", 1 * KiB)
    clock.advance(8 * DAY)
    # A commit in the same repository runs eviction for it: the stale entry goes.
    await repo.save("fresh", 1 * KiB)
    assert set(await repo.listed()) == {"fresh"}
    assert [(e["key"], e["reason"]) for e in await evictions(http, quota_server)] == [
        ("stale", "idle")
    ]


# -- quota (least recently accessed first) -------------------------------------------------


async def test_over_quota_evicts_exactly_the_lru_entries_after_finalize(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    repo = Repo(quota_server, http)
    for i in range(3):
        await repo.save(f"q-{i}", 300 * KiB)
        clock.advance(10)
    assert await repo.usage() == 900 * KiB
    assert (await evictions(http, quota_server)) == []

    await repo.save("q-3", 300 * KiB)  # 1200 KiB > 1 MiB: q-0 (oldest access) must go
    assert set(await repo.listed()) == {"q-1", "q-2", "q-3"}
    assert await repo.usage() == 900 * KiB
    clock.advance(10)

    await repo.save("q-big", 700 * KiB)  # 1600 KiB: q-1 and q-2 go (900 KiB left would not do)
    assert set(await repo.listed()) == {"q-3", "q-big"}
    assert await repo.usage() == 1000 * KiB <= MiB
    assert await repo.alive() == {"q-3", "q-big"}

    records = await evictions(http, quota_server)
    assert [(e["key"], e["reason"]) for e in records] == [
        ("q-2", "quota"),
        ("q-1", "quota"),
        ("q-0", "quota"),
    ]  # newest first; q-1 and q-2 were removed in one sweep, in LRU order


async def test_recent_restore_survives_older_and_larger_entries(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    repo = Repo(quota_server, http)
    await repo.save("old-big", 500 * KiB)  # oldest and biggest
    clock.advance(60)
    await repo.save("mid-1", 200 * KiB)
    clock.advance(60)
    await repo.save("mid-2", 200 * KiB)
    clock.advance(60)
    assert await repo.restore("old-big") == repo.saved["old-big"]  # restored: most recent
    clock.advance(60)
    # 1200 KiB: evicting by creation or by size would drop old-big; LRU drops mid-1 only.
    await repo.save("new", 300 * KiB)
    assert set(await repo.listed()) == {"old-big", "mid-2", "new"}
    assert [e["key"] for e in await evictions(http, quota_server)] == ["mid-1"]


async def test_v1_lookups_count_as_accesses(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    repo = Repo(quota_server, http)
    await repo.save("v1-a", 400 * KiB)
    clock.advance(60)
    await repo.save("v1-b", 400 * KiB)
    clock.advance(60)
    status, hit = await wire.v1_lookup(http, quota_server.url, repo.token, ["v1-a"])
    assert status == 200 and hit is not None and hit["cacheKey"] == "v1-a"
    clock.advance(60)
    await repo.save("v1-c", 400 * KiB)
    assert set(await repo.listed()) == {"v1-a", "v1-c"}


async def test_listing_is_not_an_access(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    repo = Repo(quota_server, http)
    await repo.save("l-a", 400 * KiB)
    clock.advance(60)
    await repo.save("l-b", 400 * KiB)
    clock.advance(60)
    before = (await repo.listed())["l-a"]["last_accessed_at"]
    assert (await repo.listed())["l-a"]["last_accessed_at"] == before
    await repo.save("l-c", 400 * KiB)
    assert set(await repo.listed()) == {"l-b", "l-c"}


async def test_other_repositories_are_untouched(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    busy = Repo(quota_server, http, "octo/busy")
    quiet = Repo(quota_server, http, "octo/quiet")
    await quiet.save("quiet-old", 900 * KiB)  # the oldest access on the whole server
    clock.advance(60)
    for i in range(6):
        await busy.save(f"busy-{i}", 400 * KiB)
        clock.advance(60)
    assert set(await busy.listed()) == {"busy-4", "busy-5"}
    assert set(await quiet.listed()) == {"quiet-old"}
    assert await quiet.usage() == 900 * KiB
    # The timer sweep over all repositories finds nothing more to do.
    assert await quota_server.state.maintainer.evict() == []
    assert {e["repository"] for e in await evictions(http, quota_server)} == {"octo/busy"}
    assert await evictions(http, quota_server, "&repo=octo/quiet") == []
    assert len(await evictions(http, quota_server, "&repo=octo/busy")) == 4


async def test_timer_sweep_evicts_every_repository_over_quota(
    tmp_path: Path, http: aiohttp.ClientSession, clock: Clock
) -> None:
    # Start with a generous quota, fill two repositories, then restart with a small quota:
    # only the sweep (at start-up and on the timer) can bring them down.
    first, runner = await start_server(tmp_path, clock, repo_quota_bytes="10MiB")
    try:
        for name in ("octo/one", "octo/two", "octo/three"):
            repo = Repo(first, http, name)
            for i in range(3 if name != "octo/three" else 1):
                await repo.save(f"{name}-{i}", 400 * KiB)
                clock.advance(1)
    finally:
        await runner.cleanup()
    second, runner = await start_server(tmp_path, clock, repo_quota_bytes="1MiB")
    try:
        # The start-up sweep already ran: both repositories are within quota again.
        expected = {
            "octo/one": ["octo/one-1", "octo/one-2"],
            "octo/two": ["octo/two-1", "octo/two-2"],
            "octo/three": ["octo/three-0"],
        }
        for name, keys in expected.items():
            repo = Repo(second, http, name)
            assert sorted(await repo.listed()) == keys, name
            assert await repo.usage() <= MiB
        assert await second.state.maintainer.evict() == []
        records = await evictions(http, second)
        assert sorted(e["key"] for e in records) == ["octo/one-0", "octo/two-0"]
    finally:
        await runner.cleanup()


async def test_repo_overrides(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    big = Repo(quota_server, http, "octo/big")  # 2 MiB, 30 days
    small = Repo(quota_server, http, "octo/repo")  # 1 MiB, 7 days
    for i in range(4):
        await big.save(f"o-{i}", 400 * KiB)
        await small.save(f"o-{i}", 400 * KiB)
        clock.advance(10)
    assert set(await big.listed()) == {"o-0", "o-1", "o-2", "o-3"}  # 1600 KiB <= 2 MiB
    assert set(await small.listed()) == {"o-2", "o-3"}
    await big.save("o-4", 500 * KiB)  # 2100 KiB > 2 MiB
    assert set(await big.listed()) == {"o-1", "o-2", "o-3", "o-4"}

    clock.advance(8 * DAY)
    await quota_server.state.maintainer.evict()
    assert await small.listed() == {}
    assert len(await big.listed()) == 4
    clock.advance(23 * DAY)
    await quota_server.state.maintainer.evict()
    assert await big.listed() == {}


# -- the eviction record ---------------------------------------------------------------------


async def test_eviction_record_says_what_why_when_and_how_big(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    repo = Repo(quota_server, http)
    t_created = clock()
    first = await repo.save("rec-a", 600 * KiB)
    clock.advance(30)
    t_access = clock()
    assert await repo.restore("rec-a") is not None
    clock.advance(30)
    await repo.save("rec-b", 300 * KiB)
    clock.advance(30)
    t_evict = clock()
    await repo.save("rec-c", 600 * KiB)  # evicts rec-a (LRU) at t_evict

    (record,) = await evictions(http, quota_server)
    assert set(record) == {
        "id", "cache_id", "repository", "ref", "key", "version", "size_in_bytes", "reason",
        "created_at", "last_accessed_at", "evicted_at",
    }  # fmt: skip
    times = {
        name: parse_time(record.pop(name))
        for name in ("created_at", "last_accessed_at", "evicted_at")
    }
    assert record == {
        "id": record["id"],
        "cache_id": first,
        "repository": "octo/repo",
        "ref": MAIN,
        "key": "rec-a",
        "version": wire.VERSION,
        "size_in_bytes": 600 * KiB,
        "reason": "quota",
    }
    for name, expected in (
        ("created_at", t_created),
        ("last_accessed_at", t_access),
        ("evicted_at", t_evict),
    ):
        assert expected - 0.001 < times[name] <= expected, name

    # An API delete and a missing blob are recorded too, each with its reason.
    status, _ = await api(
        http,
        quota_server,
        f"/repos/octo/repo/actions/caches/{(await repo.listed())['rec-b']['id']}",
        "DELETE",
    )
    assert status == 204
    clock.advance(5)
    entry = (await repo.listed())["rec-c"]
    stored = await quota_server.state.service.index.get(entry["id"])
    assert stored is not None and stored.blob is not None
    blob_files(quota_server)[stored.blob].unlink()
    await quota_server.state.maintainer.reconcile()
    records = await evictions(http, quota_server)
    assert [(e["key"], e["reason"]) for e in records] == [
        ("rec-c", "missing"),
        ("rec-b", "deleted"),
        ("rec-a", "quota"),
    ]
    # Paging and the repo filter of the record.
    status, body = await api(http, quota_server, "/actions/cache/evictions?per_page=1&page=2")
    assert status == 200 and body["total_count"] == 3
    assert [e["key"] for e in body["evictions"]] == ["rec-b"]
    assert await evictions(http, quota_server, "&repo=other/repo") == []


# -- a download in flight ----------------------------------------------------------------


@pytest.mark.parametrize("how", ["idle-sweep", "api-delete"])
async def test_download_started_before_eviction_completes_intact(
    tmp_path: Path, http: aiohttp.ClientSession, clock: Clock, how: str
) -> None:
    # Big enough that most of the body is still on disk, not in socket buffers, mid-way.
    srv, runner = await start_server(tmp_path, clock, repo_quota_bytes="1GiB")
    try:
        repo = Repo(srv, http)
        await repo.save("in-flight", 48 * MiB)
        found = await wire.v2_lookup(http, srv.url, repo.token, "in-flight")
        assert found["ok"]
        url = found["signed_download_url"]
        async with http.get(url) as r:
            assert r.status == 200
            head = await r.content.readexactly(2 * MiB)
            if how == "idle-sweep":
                clock.advance(8 * DAY)
                removed = await srv.state.maintainer.evict()
                assert [e.key for e in removed] == ["in-flight"]
            else:
                entry_id = (await repo.listed())["in-flight"]["id"]
                status, _ = await api(
                    http, srv, f"/repos/octo/repo/actions/caches/{entry_id}", "DELETE"
                )
                assert status == 204
            assert blob_files(srv) == {}  # the bytes are unlinked already...
            assert await repo.listed() == {}
            rest = await r.read()
        assert head + rest == repo.saved["in-flight"]  # ...yet the reader got all of them
        # A new download of the same URL gets nothing: 404 while the URL is still valid
        # (deleted now), 401 after the 8 days the idle case waited (URLs live 1 h).
        status, _, _ = await wire.download(http, url)
        assert status == (401 if how == "idle-sweep" else 404)
        assert await repo.restore("in-flight") is None
    finally:
        await runner.cleanup()


# -- reconciliation: the crash windows, deterministically ----------------------------------


async def test_crash_after_index_delete_before_unlink_leaves_orphan_for_reconcile(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    repo = Repo(quota_server, http)
    entry_id = await repo.save("orphaned", 100 * KiB)
    kept_id = await repo.save("kept", 100 * KiB)
    state = quota_server.state
    # The state right after eviction's transaction and before its unlink (a crash there).
    (gone,) = await state.catalog.remove([entry_id], EvictionReason.QUOTA, now=clock())
    assert gone.blob is not None
    files = blob_files(quota_server)
    assert gone.blob in files and len(files) == 2

    # Never served: neither lookups nor the listing see it, though its bytes exist.
    assert await repo.alive() == {"kept"}
    assert set(await repo.listed()) == {"kept"}
    assert await repo.usage() == 100 * KiB

    # Within the grace period (1 h) the orphan stays (it could be a commit in flight).
    clock.advance(3599)
    report = await state.maintainer.reconcile()
    assert report.orphan_blobs == 0 and gone.blob in blob_files(quota_server)
    clock.advance(2)
    report = await state.maintainer.reconcile()
    assert (report.orphan_blobs, report.missing_entries, report.orphan_uploads) == (1, 0, 0)
    kept = await state.service.index.get(kept_id)
    assert kept is not None and set(blob_files(quota_server)) == {kept.blob}
    assert await repo.alive() == {"kept"}
    # Reconciling again finds nothing to do.
    again = await state.maintainer.reconcile()
    assert (again.orphan_blobs, again.missing_entries, again.orphan_uploads) == (0, 0, 0)


async def test_blob_deleted_behind_the_index_is_reconciled_as_missing(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    repo = Repo(quota_server, http)
    lost_id = await repo.save("lost", 100 * KiB)
    await repo.save("kept", 100 * KiB)
    lost = await quota_server.state.service.index.get(lost_id)
    assert lost is not None and lost.blob is not None
    found = await wire.v2_lookup(http, quota_server.url, repo.token, "lost")
    blob_files(quota_server)[lost.blob].unlink()

    # Even before reconciling, the missing bytes are never served as an empty or bad body.
    status, body, _ = await wire.download(http, found["signed_download_url"])
    assert status == 404 and body != b""
    report = await quota_server.state.maintainer.reconcile()  # no grace needed for this
    assert (report.missing_entries, report.orphan_blobs) == (1, 0)
    assert await repo.alive() == {"kept"}
    assert (await wire.v1_lookup(http, quota_server.url, repo.token, ["lost"]))[0] == 204
    assert not (await wire.v2_lookup(http, quota_server.url, repo.token, "los", ("lo",)))["ok"]
    assert set(await repo.listed()) == {"kept"}
    (record,) = await evictions(http, quota_server)
    assert (record["key"], record["reason"], record["cache_id"]) == ("lost", "missing", lost_id)
    # The key can be saved afresh.
    await repo.save("lost", 50 * KiB)
    assert await repo.alive() == {"kept", "lost"}


async def test_orphan_staged_uploads_are_removed_after_grace(
    quota_server: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    repo = Repo(quota_server, http)
    state = quota_server.state
    uploads = quota_server.config.data_dir / "store" / "uploads"

    async def stage(key: str) -> int:
        status, body = await wire.twirp(
            http,
            quota_server.url,
            "CreateCacheEntry",
            {"key": key, "version": wire.VERSION},
            repo.token,
        )
        assert status == 200 and body["ok"], body
        url = body["signed_upload_url"]
        async with http.put(
            url + "&comp=block&blockid=" + wire._q(wire.js_block_id(0)), data=b"x" * 1000
        ) as r:
            assert r.status == 201
        return int(url.split("/uploads/")[1].split("?")[0])

    live_id = await stage("live-upload")
    dead_id = await stage("dead-upload")
    dead = await state.service.index.get(dead_id)
    assert dead is not None
    # expire_reservations' crash window: the row is gone, its staged bytes are not.
    clock.advance(1)
    assert await state.service.index.delete_pending(dead_id, clock())
    assert (uploads / dead.upload).is_dir()

    report = await state.maintainer.reconcile()
    assert report.orphan_uploads == 0 and (uploads / dead.upload).is_dir()  # within grace
    clock.advance(3601)
    report = await state.maintainer.reconcile()
    assert report.orphan_uploads == 1
    assert not (uploads / dead.upload).exists()
    live = await state.service.index.get(live_id)
    assert live is not None and (uploads / live.upload).is_dir()  # a reservation protects it


# -- a real SIGKILL during eviction ----------------------------------------------------------


def _blob_ids(srv: SpawnedServer) -> set[int]:
    root = srv.data_dir / "store" / "blobs"
    return {int(p.name.split("-")[0]) for p in root.rglob("*") if p.is_file()}


def _admin(srv: SpawnedServer) -> str:
    import subprocess
    import sys

    args = [sys.executable, "-m", "ghacache", "token", "--admin", "--data-dir", str(srv.data_dir)]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


async def _listed_ids(
    http: aiohttp.ClientSession, srv: SpawnedServer, admin: str
) -> dict[int, str]:
    out: dict[int, str] = {}
    for page in range(1, 100):
        async with http.get(
            f"{srv.url}/repos/octo/repo/actions/caches?per_page=100&page={page}",
            headers=wire.auth(admin),
        ) as r:
            assert r.status == 200
            body = await r.json()
        out.update({c["id"]: c["key"] for c in body["actions_caches"]})
        if len(body["actions_caches"]) < 100:
            return out
    raise AssertionError("too many pages")


async def test_sigkill_during_eviction_then_restart_is_consistent(
    spawn_server: Spawner, http: aiohttp.ClientSession
) -> None:
    flags = ("--repo-quota-bytes", "1MiB", "--orphan-grace", "1s", "--eviction-interval", "1s")
    srv = spawn_server(*flags)
    token = srv.token()
    saved: dict[str, bytes] = {}
    committed = 0
    enough = asyncio.Event()

    async def saver(worker: int) -> None:
        nonlocal committed
        for i in range(1000):
            key = f"kill-{worker}-{i}"
            data = os.urandom(96 * KiB + worker * 1000 + i)
            saved[key] = data
            await wire.v2_save(http, srv.url, token, key, data)
            committed += 1
            if committed >= 60:
                enough.set()

    tasks = [asyncio.create_task(saver(w)) for w in range(6)]
    await asyncio.wait_for(enough.wait(), timeout=30)
    srv.kill()  # every finalize past ~10 entries evicts: this lands mid-eviction or close
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(o, Exception) for o in outcomes), outcomes  # all were cut off

    restarted = spawn_server(*flags, data_dir=srv.data_dir)
    admin = _admin(restarted)
    deadline = time.monotonic() + 15
    while True:
        listed = await _listed_ids(http, restarted, admin)
        on_disk = _blob_ids(restarted)
        if on_disk == set(listed):
            break
        # Bytes without an entry are allowed only until the grace period (1 s) has passed.
        assert set(listed) <= on_disk, "an entry is listed without its bytes"
        assert time.monotonic() < deadline, (sorted(on_disk - set(listed)), sorted(listed))
        await asyncio.sleep(0.2)

    assert len(listed) > 0 and sum(len(saved[k]) for k in listed.values()) <= MiB
    # Eviction really was running before the kill: its record survived the crash.
    async with http.get(
        f"{restarted.url}/actions/cache/evictions?per_page=100", headers=wire.auth(admin)
    ) as r:
        record = await r.json()
    assert record["total_count"] >= 40
    assert {e["reason"] for e in record["evictions"]} == {"quota"}
    for key in listed.values():  # everything listed restores byte-exact
        found = await wire.v2_lookup(http, restarted.url, token, key)
        assert found["ok"] and found["matched_key"] == key
        status, body, _ = await wire.download(http, found["signed_download_url"])
        assert status == 200 and body == saved[key], key
    for key in set(saved) - set(listed.values()):  # everything else misses cleanly
        found = await wire.v2_lookup(http, restarted.url, token, key)
        # (an exact lookup may still prefix-match a listed key, e.g. kill-1-1 -> kill-1-10)
        assert not found["ok"] or found["matched_key"] in listed.values(), key
    # And saving continues normally after the restart.
    await wire.v2_save(http, restarted.url, token, "after-restart", os.urandom(100 * KiB))
    assert "after-restart" in (await _listed_ids(http, restarted, admin)).values()
