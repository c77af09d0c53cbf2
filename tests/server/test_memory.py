"""The server streams: 1 GiB up and down on each protocol without its RSS following the body.

A thread samples the real server process's RSS every 50 ms while a 1 GiB v2 Put Blob and a
1 GiB v1 upload (32 MiB PATCH chunks) go up and come back down. Buffering a whole body (or
even a few 32 MiB chunks at once) would push the peak far past the bound.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager

import aiohttp
import psutil
import pytest

from tests.conftest import Spawner
from tests.support import wire

MIB = 1024 * 1024
GIB = 1024 * MIB
V1_CHUNK = 32 * MIB
# Measured on a 2-CPU dev machine: idle ~53 MB, peak ~57 MB (growth ~3 MB) for all 4 GiB.
# Holding a whole 1 GiB body would add over 1 GB; holding even one 32 MiB PATCH chunk would
# add over 33 MB, so growth is bounded at 32 MB and the absolute peak at 150 MB.
PEAK_RSS_BOUND = 150 * 1000 * 1000
GROWTH_BOUND = 32 * 1000 * 1000

pytestmark = pytest.mark.slow


class RssSampler:
    """Samples one process's RSS from a thread, keeping the peak."""

    def __init__(self, pid: int, interval_s: float = 0.05) -> None:
        self.process = psutil.Process(pid)
        self.interval_s = interval_s
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.process.memory_info().rss
            except psutil.NoSuchProcess:
                return
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._stop.wait(self.interval_s)

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(timeout=5)


class Payload:
    """A reproducible stream of distinct 1 MiB chunks with a running sha256."""

    def __init__(self, size: int) -> None:
        assert size % MIB == 0
        self.size = size
        self.buf = bytearray(os.urandom(MIB))
        self.sha = hashlib.sha256()
        self.sent = 0

    def next_chunk(self) -> bytes:
        i = self.sent // MIB
        # Mutate a few bytes so no two chunks are equal (defeats any dedup or compression).
        self.buf[0:8] = i.to_bytes(8, "big")
        self.buf[(i * 7919) % MIB] ^= 0xFF
        chunk = bytes(self.buf)
        self.sha.update(chunk)
        self.sent += len(chunk)
        return chunk

    async def stream(self, n_bytes: int) -> AsyncIterator[bytes]:
        for _ in range(n_bytes // MIB):
            yield self.next_chunk()


async def _download_sha256(http: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    sha = hashlib.sha256()
    total = 0
    async with http.get(url) as r:
        assert r.status == 200, await r.read()
        assert r.headers["Content-Length"] == str(GIB)
        async for chunk in r.content.iter_chunked(4 * MIB):
            sha.update(chunk)
            total += len(chunk)
    return total, sha.hexdigest()


async def _v2_round_trip(http: aiohttp.ClientSession, base: str, token: str) -> None:
    key = "memory-v2"
    status, body = await wire.twirp(
        http, base, "CreateCacheEntry", {"key": key, "version": wire.VERSION}, token
    )
    assert status == 200, body
    payload = Payload(GIB)
    async with http.put(
        body["signed_upload_url"],
        data=payload.stream(GIB),
        headers={"x-ms-blob-type": "BlockBlob"},
    ) as r:
        assert r.status == 201, await r.read()
    assert payload.sent == GIB
    status, out = await wire.twirp(
        http,
        base,
        "FinalizeCacheEntryUpload",
        {"key": key, "version": wire.VERSION, "size_bytes": str(GIB)},
        token,
    )
    assert status == 200 and out["ok"], out
    found = await wire.v2_lookup(http, base, token, key)
    assert found["ok"]
    assert await _download_sha256(http, found["signed_download_url"]) == (
        GIB,
        payload.sha.hexdigest(),
    )


async def _v1_round_trip(http: aiohttp.ClientSession, base: str, token: str) -> None:
    key = "memory-v1"
    status, body = await wire.v1_reserve(http, base, token, key, size=GIB)
    assert status == 201, body
    cache_id = int(body["cacheId"])
    payload = Payload(GIB)
    for start in range(0, GIB, V1_CHUNK):
        headers = {
            **wire.auth(token),
            "Content-Type": "application/octet-stream",
            "Content-Range": f"bytes {start}-{start + V1_CHUNK - 1}/*",
        }
        async with http.patch(
            f"{base}{wire.V1}caches/{cache_id}", data=payload.stream(V1_CHUNK), headers=headers
        ) as r:
            assert r.status == 204, await r.read()
    assert payload.sent == GIB
    status, raw = await wire.v1_commit(http, base, token, cache_id, GIB)
    assert status == 204, raw
    status, hit = await wire.v1_lookup(http, base, token, [key])
    assert status == 200 and hit is not None
    assert await _download_sha256(http, hit["archiveLocation"]) == (GIB, payload.sha.hexdigest())


async def test_one_gib_each_way_with_bounded_rss(
    spawn_server: Spawner, http: aiohttp.ClientSession
) -> None:
    srv = spawn_server("--fsync", "false")
    token = srv.token()
    started = time.monotonic()
    sampler = RssSampler(srv.proc.pid)
    idle = sampler.process.memory_info().rss
    with sampler.running():
        await _v2_round_trip(http, srv.url, token)
        v2_peak = sampler.peak
        await _v1_round_trip(http, srv.url, token)
    elapsed = time.monotonic() - started
    print(
        f"\nserver RSS: idle {idle / 1e6:.1f} MB, peak {sampler.peak / 1e6:.1f} MB "
        f"(after v2 {v2_peak / 1e6:.1f} MB) over {sampler.samples} samples; "
        f"4 GiB moved in {elapsed:.1f} s"
    )
    assert sampler.samples > 20  # the sampler really ran during the transfers
    assert sampler.peak < PEAK_RSS_BOUND, f"server RSS peaked at {sampler.peak / 1e6:.1f} MB"
    growth = sampler.peak - idle
    assert growth < GROWTH_BOUND, f"server RSS grew by {growth / 1e6:.1f} MB while streaming"
