"""Basic save/restore round trips over both protocols with BuildKit-shaped traffic."""

from __future__ import annotations

import os

import aiohttp

from tests.conftest import ServerHandle
from tests.support import wire


async def test_v2_put_blob_round_trip(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    token = server.token()
    data = os.urandom(100_000)
    entry_id = await wire.v2_save(http, server.url, token, "k-small", data)
    found = await wire.v2_lookup(http, server.url, token, "k-small")
    assert found["ok"] and found["matched_key"] == "k-small"
    status, body, headers = await wire.download(http, found["signed_download_url"])
    assert (status, body) == (200, data)
    assert headers["Content-Length"] == str(len(data))
    assert "ETag" in headers and "x-ms-request-id" in headers
    assert entry_id > 0


async def test_v2_blocks_out_of_order(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    token = server.token()
    data = os.urandom(5 * 1024 * 1024 + 17)
    _, body = await wire.twirp(
        http, server.url, "CreateCacheEntry", {"key": "k", "version": wire.VERSION}, token
    )
    url = body["signed_upload_url"]
    assert (
        await wire.put_blocks(http, url, data, 1024 * 1024, order=[5, 2, 0, 4, 1, 3], go_ids=True)
        == 201
    )
    status, body = await wire.twirp(
        http,
        server.url,
        "FinalizeCacheEntryUpload",
        {"key": "k", "version": wire.VERSION, "size_bytes": len(data)},
        token,
    )
    assert status == 200 and body["ok"]
    found = await wire.v2_lookup(http, server.url, token, "k")
    assert (await wire.download(http, found["signed_download_url"]))[1] == data


async def test_v1_chunked_out_of_order(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    token = server.token()
    data = os.urandom(3 * 1024 * 1024 + 5)
    await wire.v1_save(
        http, server.url, token, "v1-key", data, chunk_size=1024 * 1024, reverse=True
    )
    status, hit = await wire.v1_lookup(http, server.url, token, ["v1-key"])
    assert status == 200 and hit is not None
    assert hit["cacheKey"] == "v1-key" and hit["scope"] == "refs/heads/main"
    status, body, _ = await wire.download(http, hit["archiveLocation"], {"Range": "bytes=1048576-"})
    assert status == 206 and body == data[1048576:]
