"""Job leases on one server: a crashed process's leases are freed on restart, live ones kept."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import aiohttp
import pytest

from ghacache.index import Leases, open_index
from tests.conftest import Clock, start_server
from tests.server.test_eviction import Repo

KiB = 1024


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


async def _fill_then_restart_small(
    tmp_path: Path, clock: Clock, http: aiohttp.ClientSession, holder: str
) -> tuple[int, list[tuple[str, str]]]:
    """Fill to 1200 KiB, leave leases held by ``holder``, restart with a 1 MiB quota.

    Returns the usage after the restart's start-up sweep and the leases left.
    """
    first, runner = await start_server(tmp_path, clock, repo_quota_bytes="10MiB")
    try:
        repo = Repo(first, http)
        for i in range(3):
            await repo.save(f"lease-{i}", 400 * KiB)
            clock.advance(10)
    finally:
        await runner.cleanup()
    index = await open_index(first.config.index_url)
    try:
        leases = Leases(index.db)
        for job in ("sweep", "evict:octo/repo"):
            assert await leases.acquire(job, holder, ttl_s=86400, now=clock())
    finally:
        await index.close()
    second, runner = await start_server(tmp_path, clock, repo_quota_bytes="1MiB")
    try:
        usage = await Repo(second, http).usage()
        left = await Leases(second.state.service.index.db).held()
    finally:
        await runner.cleanup()
    return usage, left


async def test_leases_of_a_dead_process_on_this_host_are_freed_at_start(
    tmp_path: Path, clock: Clock, http: aiohttp.ClientSession
) -> None:
    holder = f"{socket.gethostname()}:{dead_pid()}"
    usage, left = await _fill_then_restart_small(tmp_path, clock, http, holder)
    assert usage == 800 * KiB  # the start-up sweep ran at once, not after the lease expired
    assert left == []


@pytest.mark.parametrize("where", ["live-process", "other-host"])
async def test_leases_of_live_or_remote_holders_are_respected(
    tmp_path: Path, clock: Clock, http: aiohttp.ClientSession, where: str
) -> None:
    holder = (
        f"{socket.gethostname()}:{os.getppid()}" if where == "live-process" else "elsewhere:4242"
    )
    usage, left = await _fill_then_restart_small(tmp_path, clock, http, holder)
    assert usage == 1200 * KiB  # another replica holds the jobs: this one keeps its hands off
    assert left == [("evict:octo/repo", holder), ("sweep", holder)]
