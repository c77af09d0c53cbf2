"""A small, known workload for the dashboard tests, and a logged-in dashboard session.

Three repositories: ``octo/app`` (caches on two refs, restores, misses, and a save that
pushes it over its 800 KiB quota so one entry is evicted), ``octo/web`` (BuildKit entries
written by a real BuildKit: two scopes, three index generations) and ``acme/tools``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

import aiohttp

from ghacache.server.auth import mint_admin_token
from tests.conftest import ServerHandle
from tests.support import wire
from tests.support.fixtures import gha_entries

KiB = 1024
# Start the server with --repo-overrides QUOTAS so that octo/app's fourth save evicts gradle-ccc.
QUOTAS = "octo/app=800KiB"
FEATURE = "refs/heads/feature"
MAIN = "refs/heads/main"


@dataclass
class Workload:
    ids: dict[tuple[str, str, str], int] = field(default_factory=dict)  # (repo, ref, key) -> id
    hits: dict[str, int] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)
    evicted: list[str] = field(default_factory=list)


async def _save(
    srv: ServerHandle,
    http: aiohttp.ClientSession,
    w: Workload,
    repo: str,
    key: str,
    data: bytes,
    *,
    ref: str = MAIN,
    version: str = wire.VERSION,
) -> None:
    token = srv.token(repo, f"{ref}:rw")
    w.ids[(repo, ref, key)] = await wire.v2_save(http, srv.url, token, key, data, version=version)
    srv.clock.advance(60)


async def _lookup(
    srv: ServerHandle,
    http: aiohttp.ClientSession,
    w: Workload,
    repo: str,
    key: str,
    restore: tuple[str, ...] = (),
    *,
    version: str = wire.VERSION,
) -> bool:
    token = srv.token(repo, f"{MAIN}:r")
    found = await wire.v2_lookup(http, srv.url, token, key, restore, version=version)
    hit = bool(found["ok"])
    counts = w.hits if hit else w.misses
    counts[repo] = counts.get(repo, 0) + 1
    srv.clock.advance(60)
    return hit


async def run_workload(srv: ServerHandle, http: aiohttp.ClientSession) -> Workload:
    """Save, restore and miss in three repositories; the server needs ``repo_overrides=QUOTAS``."""
    w = Workload()
    app = "octo/app"
    await _save(srv, http, w, app, "npm-linux-aaa", os.urandom(200 * KiB))
    await _save(srv, http, w, app, "pip-linux-bbb", os.urandom(300 * KiB))
    await _save(srv, http, w, app, "gradle-ccc", os.urandom(150 * KiB))
    await _save(srv, http, w, app, "npm-linux-aaa", os.urandom(20 * KiB), ref=FEATURE)
    assert await _lookup(srv, http, w, app, "npm-linux-aaa")
    assert await _lookup(srv, http, w, app, "pip-linux-x", ("pip-linux-",))
    assert not await _lookup(srv, http, w, app, "cargo-linux-ddd")
    # 670 KiB + 250 KiB is over the quota: gradle-ccc, accessed least recently, goes.
    await _save(srv, http, w, app, "docker-eee", os.urandom(250 * KiB))
    w.evicted.append("gradle-ccc")

    for entry in gha_entries():
        await _save(srv, http, w, "octo/web", entry.key, entry.data, version=entry.version)
    assert await _lookup(
        srv, http, w, "octo/web", "index-build-a-1-f921bd05#", version=wire.BUILDKIT_VERSION
    )

    tools = "acme/tools"
    await _save(srv, http, w, tools, "go-mod-xyz", os.urandom(40 * KiB))
    await _save(srv, http, w, tools, "go-build-xyz", os.urandom(90 * KiB))
    assert await _lookup(srv, http, w, tools, "go-mod-xyz")
    assert not await _lookup(srv, http, w, tools, "go-mod-abc")
    assert not await _lookup(srv, http, w, tools, "lint-xyz")
    return w


async def lookups_over_hours(
    srv: ServerHandle, http: aiohttp.ClientSession, w: Workload, hours: int
) -> None:
    """Restores and misses spread over ``hours`` hours (the clock moves on), busier some hours."""
    hits = [
        ("octo/app", "npm-linux-aaa"),
        ("octo/app", "pip-linux-bbb"),
        ("acme/tools", "go-mod-xyz"),
    ]
    misses = [("octo/app", "cargo-linux-zzz"), ("acme/tools", "lint-abc")]
    for h in range(hours):
        plan = [hits[i % 3] for i in range(6 + (h * 7) % 11)]
        plan[:: 2 + h % 4] = [misses[i % 2] for i in range(len(plan[:: 2 + h % 4]))]
        for repo, key in plan:
            await _lookup(srv, http, w, repo, key)  # moves the clock a minute
            srv.clock.advance(3600 / len(plan) - 60)


def admin_token(srv: ServerHandle) -> str:
    return mint_admin_token(srv.secret, ttl_s=3600, now=srv.clock())


CSRF = re.compile(r'name="csrf" value="([0-9a-f]{64})"')


async def login(srv: ServerHandle, http: aiohttp.ClientSession) -> str:
    """Log ``http`` (a session with an unsafe cookie jar) in; return the page's CSRF value."""
    async with http.post(srv.url + "/ui/login", data={"token": admin_token(srv)}) as r:
        assert r.status == 200 and r.url.path == "/ui/", (r.status, r.url)
        match = CSRF.search(await r.text())
    assert match is not None
    return match.group(1)
