"""The real server on object storage: S3 (moto) and Azure Blob Storage (Azurite).

The same tests run on local files, whose downloads use sendfile, as the reference.

Blocks and chunks go through the server into the store, finalize publishes them there (a
server-side copy for one part, a multipart stream for several), and downloads are streamed
back from ranged reads with the same answers as local sendfile.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import obstore
import pytest

from ghacache.storage import LocalStore
from ghacache.storage.objectstore import ObjectStore
from tests.conftest import Clock, ServerHandle, start_server
from tests.support import wire

MiB = 1024 * 1024


@pytest.fixture
async def server(store_url: str, tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    """A server per backend; local files show the object stores answer like sendfile."""
    handle, runner = await start_server(tmp_path, clock, storage_url=store_url)
    try:
        yield handle
    finally:
        await runner.cleanup()


async def stored(server: ServerHandle) -> list[str]:
    """Every object (or file) the server's store holds."""
    store = server.state.service.store
    if isinstance(store, LocalStore):
        return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    assert isinstance(store, ObjectStore)
    return sorted(m["path"] for m in await obstore.list(store.store, "").collect_async())


async def remove(server: ServerHandle, path: str) -> None:
    """Delete an object behind the server's back."""
    store = server.state.service.store
    if isinstance(store, LocalStore):
        (store.root / path).unlink()
    else:
        assert isinstance(store, ObjectStore)
        await obstore.delete_async(store.store, path)


async def check_download(http: aiohttp.ClientSession, url: str, data: bytes) -> None:
    size = len(data)
    status, body, headers = await wire.download(http, url)
    assert (status, body) == (200, data)
    assert headers["Content-Length"] == str(size)
    assert headers["ETag"] and headers["x-ms-request-id"]
    assert headers["x-ms-blob-type"] == "BlockBlob" and headers["Accept-Ranges"] == "bytes"
    for start in (1, size // 2, size - 1):  # resumed reads
        status, body, headers = await wire.download(http, url, {"Range": f"bytes={start}-"})
        assert status == 206 and body == data[start:]
        assert headers["Content-Range"] == f"bytes {start}-{size - 1}/{size}"
        assert headers["Content-Length"] == str(size - start)
    for header in ("Range", "x-ms-range"):
        for a, b in ((0, 0), (10, 4095), (size - 100, size - 1), (size - 10, size + 10)):
            status, body, headers = await wire.download(http, url, {header: f"bytes={a}-{b}"})
            assert status == 206, (header, a, b)
            assert headers["Content-Range"] == f"bytes {a}-{min(b, size - 1)}/{size}"
            assert body == data[a : b + 1]
    status, body, headers = await wire.download(http, url, {"Range": "bytes=-100"})
    assert status == 206 and body == data[-100:]
    async with http.head(url) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(size)
        assert r.headers.get("ETag") and r.headers.get("x-ms-request-id")
        assert await r.read() == b""
    for bad in ("bytes=abc", "bytes=5-3", "bytes=0-1,3-4", "items=0-1"):
        status, _, headers = await wire.download(http, url, {"Range": bad})
        assert status == 416, bad
    for start in (size, size + 10):
        status, _, headers = await wire.download(http, url, {"Range": f"bytes={start}-"})
        assert status == 416
        assert headers["Content-Range"] == f"bytes */{size}"
        assert headers.get("x-ms-request-id")


async def test_v2_blocks_round_trip(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    token = server.token()
    # Blocks of 1 MiB, under S3's 5 MiB minimum part size, out of order: publish coalesces.
    data = os.urandom(9 * MiB + 17)
    _, body = await wire.twirp(
        http, server.url, "CreateCacheEntry", {"key": "blocks", "version": wire.VERSION}, token
    )
    order = [3, 0, 9, 1, 8, 2, 7, 4, 6, 5]
    assert await wire.put_blocks(http, body["signed_upload_url"], data, MiB, order=order) == 201
    status, out = await wire.twirp(
        http,
        server.url,
        "FinalizeCacheEntryUpload",
        {"key": "blocks", "version": wire.VERSION, "size_bytes": str(len(data))},
        token,
    )
    assert status == 200 and out["ok"], out
    found = await wire.v2_lookup(http, server.url, token, "blocks")
    assert found["ok"] and found["matched_key"] == "blocks"
    await check_download(http, found["signed_download_url"], data)
    blobs = [p for p in await stored(server) if p.startswith("blobs/")]
    assert len(blobs) == 1
    assert [p for p in await stored(server) if p.startswith("uploads/")] == []


async def test_v2_put_blob_round_trip(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    token = server.token()
    data = os.urandom(100_000)
    await wire.v2_save(http, server.url, token, "one-shot", data)
    found = await wire.v2_lookup(http, server.url, token, "one-shot")
    await check_download(http, found["signed_download_url"], data)
    assert [p.split("/")[0] for p in await stored(server)] == ["blobs"]


async def test_v1_round_trip(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    token = server.token()
    data = os.urandom(3 * MiB + 5)
    await wire.v1_save(http, server.url, token, "v1-key", data, chunk_size=MiB, reverse=True)
    status, hit = await wire.v1_lookup(http, server.url, token, ["v1-key"])
    assert status == 200 and hit is not None and hit["cacheKey"] == "v1-key"
    await check_download(http, hit["archiveLocation"], data)
    assert [p.split("/")[0] for p in await stored(server)] == ["blobs"]


async def test_empty_entry(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    token = server.token()
    await wire.v2_save(http, server.url, token, "empty", b"")
    found = await wire.v2_lookup(http, server.url, token, "empty")
    status, body, headers = await wire.download(http, found["signed_download_url"])
    assert (status, body, headers["Content-Length"]) == (200, b"", "0")
    status, _, headers = await wire.download(
        http, found["signed_download_url"], {"Range": "bytes=0-"}
    )
    assert status == 416 and headers["Content-Range"] == "bytes */0"


async def test_a_blob_gone_from_the_store_is_a_404(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    await wire.v2_save(http, server.url, token, "vanishing", b"bytes")
    found = await wire.v2_lookup(http, server.url, token, "vanishing")
    for path in await stored(server):
        await remove(server, path)
    status, _, headers = await wire.download(http, found["signed_download_url"])
    assert status == 404
    assert headers["x-ms-error-code"] == "BlobNotFound"
