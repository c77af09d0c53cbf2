"""Three ``ghacache serve`` processes on one PostgreSQL and one S3-compatible store.

Any replica serves any step: reserve on one, blocks on another, finalize on a third; the
official client saves and restores through a round-robin front; a replica killed with
SIGKILL mid-upload leaves nothing visible; eviction runs on one replica at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest

from tests.conftest import SpawnedServer, spawn
from tests.support import wire
from tests.support.balancer import balancer
from tests.support.official import official_env, run_official

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


@dataclass
class Cluster:
    replicas: list[SpawnedServer]
    secret_file: Path
    data_root: Path

    @property
    def urls(self) -> list[str]:
        return [r.url for r in self.replicas]

    def token(self, *scopes: str, repo: str = "octo/repo", admin: bool = False) -> str:
        args = [sys.executable, "-m", "ghacache", "token", "--secret-file", str(self.secret_file)]
        args += ["--admin"] if admin else ["--repo", repo]
        for s in () if admin else scopes or ("refs/heads/main:rw",):
            args += ["--scope", s]
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def start_cluster(
    root: Path, database_url: str, storage_url: str, n: int = 3, *extra: str
) -> Cluster:
    secret_file = root / "shared-secret"
    # One secret for all: created once, as an operator would before rolling out replicas.
    subprocess.run(
        [sys.executable, "-m", "ghacache", "token", "--admin", "--secret-file", str(secret_file)],
        check=True,
        capture_output=True,
    )
    args = ["--database-url", database_url, "--storage-url", storage_url]
    args += ["--secret-file", str(secret_file), *extra]
    replicas = [spawn(root / f"replica-{i}", *args) for i in range(n)]
    return Cluster(replicas, secret_file, root)


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, s3_storage_url: str) -> Iterator[Cluster]:
    c = start_cluster(tmp_path, postgres_url, s3_storage_url)
    yield c
    for r in c.replicas:
        r.stop()


def on(url: str, base: str) -> str:
    """``url`` re-aimed at another replica (signatures cover path and query, not the host)."""
    target = urlsplit(base)
    return urlunsplit(urlsplit(url)._replace(scheme=target.scheme, netloc=target.netloc))


async def test_reserve_upload_finalize_download_on_different_replicas(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    a, b, c = cluster.urls
    token = cluster.token()
    data = os.urandom(3 * MiB + 5)
    status, body = await wire.twirp(
        http, a, "CreateCacheEntry", {"key": "spread", "version": wire.VERSION}, token
    )
    assert status == 200 and body["ok"], body
    upload = body["signed_upload_url"]
    # Blocks alternate between b and c; the block list goes to a.
    block = MiB
    ids = [wire.js_block_id(i) for i in range(4)]
    for i, start in enumerate(range(0, len(data), block)):
        target = (b, c)[i % 2]
        url = on(upload, target) + "&comp=block&blockid=" + ids[i]
        async with http.put(url, data=data[start : start + block]) as r:
            assert r.status == 201, await r.text()
    async with http.put(on(upload, a) + "&comp=blocklist", data=wire.block_list(ids)) as r:
        assert r.status == 201, await r.text()
    status, body = await wire.twirp(
        http,
        c,
        "FinalizeCacheEntryUpload",
        {"key": "spread", "version": wire.VERSION, "size_bytes": str(len(data))},
        token,
    )
    assert status == 200 and body["ok"], body
    for replica in cluster.urls:
        hit = await wire.v2_lookup(http, replica, token, "spread")
        assert hit["ok"] and hit["matched_key"] == "spread"
        status, got, _ = await wire.download(http, on(hit["signed_download_url"], b))
        assert status == 200 and got == data
        status, got, headers = await wire.download(
            http, hit["signed_download_url"], {"Range": "bytes=1048570-1048580"}
        )
        assert status == 206 and got == data[1048570:1048581], headers


async def test_v1_chunks_on_different_replicas(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    a, b, c = cluster.urls
    token = cluster.token()
    data = os.urandom(2 * MiB + 1)
    status, reserved = await wire.v1_reserve(http, a, token, "v1-spread")
    assert status == 201
    cache_id = int(reserved["cacheId"])
    for i, start in enumerate(range(0, len(data), MiB)):
        piece = data[start : start + MiB]
        assert await wire.v1_patch(http, (b, c)[i % 2], token, cache_id, start, piece) == 204
    status, _ = await wire.v1_commit(http, a, token, cache_id, len(data))
    assert status == 204
    status, hit = await wire.v1_lookup(http, c, token, ["v1-spread"])
    assert status == 200 and hit is not None
    assert (await wire.download(http, hit["archiveLocation"]))[1] == data


async def test_twenty_concurrent_writers_of_one_key_make_one_entry(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    token = cluster.token()
    payloads = [os.urandom(256 * 1024 + i) for i in range(20)]

    async def writer(i: int) -> tuple[int, int | None]:
        base = cluster.urls[i % 3]
        status, body = await wire.twirp(
            http, base, "CreateCacheEntry", {"key": "contended", "version": wire.VERSION}, token
        )
        if status != 200:
            return status, None
        assert await wire.put_blob(http, body["signed_upload_url"], payloads[i]) == 201
        status, body = await wire.twirp(
            http,
            cluster.urls[(i + 1) % 3],
            "FinalizeCacheEntryUpload",
            {"key": "contended", "version": wire.VERSION, "size_bytes": str(len(payloads[i]))},
            token,
        )
        return status, i if status == 200 else None

    results = await asyncio.gather(*(writer(i) for i in range(20)))
    winners = [i for status, i in results if status == 200 and i is not None]
    assert len(winners) == 1, results
    assert all(status in (200, 409) for status, _ in results), results
    hits = [await wire.v2_lookup(http, url, token, "contended") for url in cluster.urls]
    assert len({h["signed_download_url"].split("?")[0].rsplit("/", 1)[1] for h in hits}) == 1
    got = (await wire.download(http, hits[0]["signed_download_url"]))[1]
    assert got == payloads[winners[0]]
    admin = cluster.token(admin=True)
    async with http.get(
        cluster.urls[2] + "/repos/octo/repo/actions/caches",
        headers=wire.auth(admin),
        params={"key": "contended"},
    ) as r:
        listing = await r.json()
    assert listing["total_count"] == 1, listing


def test_official_client_saves_and_restores_through_a_round_robin_front(
    cluster: Cluster, tmp_path: Path
) -> None:
    token = cluster.token()

    async def run() -> None:
        async with balancer(cluster.urls) as front:
            for impl, protocol in (("v6", "v2"), ("v3", "v1")):
                await asyncio.to_thread(
                    _official_round_trip, front.url, token, tmp_path, impl, protocol
                )
            # Every replica took part in the saves and restores.
            assert set(front.served) == set(cluster.urls), front.served

    asyncio.run(run())
    # Save through one replica, restore through another, no front in between.
    _official_round_trip(
        cluster.urls[0], token, tmp_path, "v6", "v2", restore_url=cluster.urls[2], key="direct"
    )


def _official_round_trip(
    save_url: str,
    token: str,
    root: Path,
    impl: Any,
    protocol: Any,
    *,
    restore_url: str | None = None,
    key: str = "",
) -> None:
    key = key or f"official-{impl}-{protocol}"
    work = root / key
    save_ws, restore_ws = work / "save", work / "restore"
    (save_ws / "data").mkdir(parents=True)
    restore_ws.mkdir()
    files = {"data/a.bin": os.urandom(300_000), "data/b.txt": key.encode() * 1000}
    for rel, data in files.items():
        (save_ws / rel).write_bytes(data)
    steps: list[tuple[Path, str, Literal["save", "restore"]]] = [
        (save_ws, save_url, "save"),
        (restore_ws, restore_url or save_url, "restore"),
    ]
    for ws, url, op in steps:
        temp = work / f"temp-{op}"
        temp.mkdir()
        env = official_env(protocol=protocol, base_url=url, token=token, workspace=ws, temp=temp)
        res = run_official(impl, op, key=key, paths=["data"], env=env, cwd=ws)
        assert res.ok, (res.error, res.stdout, res.stderr)
        assert not res.warnings, res.stdout
    assert {rel: (restore_ws / rel).read_bytes() for rel in files} == files


async def test_replica_killed_mid_upload_leaves_nothing_visible(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    a, b, c = cluster.replicas
    token = cluster.token()
    status, body = await wire.twirp(
        http, a.url, "CreateCacheEntry", {"key": "crash", "version": wire.VERSION}, token
    )
    assert status == 200
    upload = body["signed_upload_url"]
    half_sent = asyncio.Event()

    async def slow_body() -> Any:
        yield os.urandom(2 * MiB)
        half_sent.set()
        await asyncio.sleep(30)  # a client still sending when the replica dies
        yield b"never sent"

    async def put() -> int:
        async with http.put(
            upload + "&comp=block&blockid=" + wire.js_block_id(0), data=slow_body()
        ) as r:
            return r.status

    sender = asyncio.create_task(put())
    await half_sent.wait()
    await asyncio.sleep(0.2)
    a.kill()
    with pytest.raises(aiohttp.ClientError):
        await sender

    for survivor in (b, c):
        assert (await wire.v2_lookup(http, survivor.url, token, "crash"))["ok"] is False
    status, out = await wire.twirp(
        http,
        b.url,
        "FinalizeCacheEntryUpload",
        {"key": "crash", "version": wire.VERSION, "size_bytes": str(2 * MiB)},
        token,
    )
    assert status != 200, out
    assert (await wire.v2_lookup(http, c.url, token, "crash"))["ok"] is False
    # The survivors keep serving, the re-aimed upload URL included.
    await wire.v2_save(http, b.url, token, "after-crash", b"still here")
    hit = await wire.v2_lookup(http, c.url, token, "after-crash")
    assert (await wire.download(http, hit["signed_download_url"]))[1] == b"still here"


_SWEEP = re.compile(r"^(\S+ \S+) DEBUG ghacache.maintenance: sweep (started|finished) on (\S+)$")


def _sweeps(log: Path) -> list[tuple[float, float, str]]:
    """(start, end, replica) of every sweep a replica logged."""
    spans: list[tuple[float, float, str]] = []
    started: float | None = None
    for line in log.read_text().splitlines():
        m = _SWEEP.match(line)
        if not m:
            continue
        at = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if m.group(2) == "started":
            started = at
        elif started is not None:
            spans.append((started, at, m.group(3)))
            started = None
    return spans


def test_eviction_runs_on_one_replica_at_a_time(
    tmp_path: Path, postgres_url: str, s3_storage_url: str
) -> None:
    cluster = start_cluster(
        tmp_path,
        postgres_url,
        s3_storage_url,
        3,
        "--eviction-interval",
        "0.3s",
        "--repo-quota-bytes",
        "400KiB",
        "--log-level",
        "debug",
        "--log-format",
        "text",  # _sweeps reads the text lines
    )
    try:
        token = cluster.token()

        async def fill() -> None:
            async with aiohttp.ClientSession() as http:
                for i in range(12):
                    url = cluster.urls[i % 3]
                    await wire.v2_save(http, url, token, f"fill-{i:02d}", os.urandom(100 * 1024))

        async def evictions() -> dict[str, Any]:
            async with (
                aiohttp.ClientSession() as http,
                http.get(
                    cluster.urls[1] + "/actions/cache/evictions",
                    headers=wire.auth(cluster.token(admin=True)),
                    params={"per_page": "100"},
                ) as r,
            ):
                assert r.status == 200
                out: dict[str, Any] = await r.json()
                return out

        asyncio.run(fill())
        time.sleep(3)  # several sweep periods on every replica
        evicted = asyncio.run(evictions())
        spans = sorted(s for r in cluster.replicas for s in _sweeps(r.log))
    finally:
        for r in cluster.replicas:
            r.stop()
    assert len(spans) >= 3, spans
    for (_, end, who), (start, _, other) in itertools.pairwise(spans):
        assert end <= start, f"sweeps overlap: {who} until {end}, {other} from {start}"
    # 12 entries of 100 KiB against a 400 KiB quota: exactly the 8 oldest go, each once.
    keys = sorted(e["key"] for e in evicted["evictions"])
    assert keys == [f"fill-{i:02d}" for i in range(8)], evicted
