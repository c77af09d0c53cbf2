"""The request sequences real BuildKit (go-actions-cache) sends, replayed on the raw wire.

See the shared reference "buildkit-real-client-behaviour.md": mutable ``index-...#n`` keys
found by prefix (newest wins), one index lookup per token scope, lookup-before-reserve for
layer blobs, chunked out-of-order v1 PATCHes, ranged reads, and sequential 1 MiB Put Blocks
with 64-byte Go SDK block ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Literal
from urllib.parse import quote

import aiohttp
import pytest

from tests.conftest import Clock, ServerHandle
from tests.support import wire

Proto = Literal["v1", "v2"]
BOTH = [pytest.param("v1", id="v1"), pytest.param("v2", id="v2")]

BK = wire.BUILDKIT_VERSION
MiB = 1024 * 1024
REPO = "octo/repo"
MAIN = "refs/heads/main"
PR = "refs/pull/1/merge"


def index_key(scope: str, name: str = "test") -> str:
    """BuildKit's index key: ``index-<name>-1-<first 8 hex of sha256(scope)>``."""
    return f"index-{name}-1-{hashlib.sha256(scope.encode()).hexdigest()[:8]}"


def blob_key(data: bytes) -> str:
    return f"buildkit-blob-1-sha256:{hashlib.sha256(data).hexdigest()}"


INDEX_MAIN = index_key(MAIN)
INDEX_PR = index_key(PR)


def test_index_key_matches_captured_traffic() -> None:
    assert INDEX_MAIN == "index-test-1-f921bd05"
    assert INDEX_PR != INDEX_MAIN


async def bk_lookup(
    http: aiohttp.ClientSession, base: str, proto: Proto, token: str, key: str
) -> tuple[str, str] | None:
    """One lookup as BuildKit sends it; (matched key, download URL) or None on a miss."""
    if proto == "v1":
        status, body = await wire.v1_lookup(http, base, token, [key], version=BK)
        if status == 204:
            assert body is None
            return None
        assert status == 200 and body is not None, (status, body)
        return str(body["cacheKey"]), str(body["archiveLocation"])
    # go-actions-cache repeats the primary key as the only restore key.
    out = await wire.v2_lookup(http, base, token, key, [key], version=BK)
    if not out["ok"]:
        return None
    return str(out["matched_key"]), str(out["signed_download_url"])


async def bk_save(
    http: aiohttp.ClientSession, base: str, proto: Proto, token: str, key: str, data: bytes
) -> None:
    if proto == "v1":
        await wire.v1_save(http, base, token, key, data, version=BK)
    else:
        block = MiB if len(data) >= MiB else None  # BuildKit: Put Blob under 1 MiB
        await wire.v2_save(http, base, token, key, data, version=BK, block_size=block)


async def fetch(http: aiohttp.ClientSession, url: str) -> bytes:
    status, body, _ = await wire.download(http, url)
    assert status == 200
    return body


# -- mutable index keys ---------------------------------------------------------------------


@pytest.mark.parametrize("proto", BOTH)
@pytest.mark.parametrize("gap_s", [1.0, 0.0], ids=["later", "same-instant"])
async def test_mutable_index_newest_wins(
    server: ServerHandle, http: aiohttp.ClientSession, clock: Clock, proto: Proto, gap_s: float
) -> None:
    token = server.token(REPO, f"{MAIN}:rw")
    first, second = b'{"layers":[],"records":[1]}', b'{"layers":[],"records":[1,2]}'

    # Exporter: look up "index-...#", take the newest #n, reserve #n+1.
    assert await bk_lookup(http, server.url, proto, token, INDEX_MAIN + "#") is None
    await bk_save(http, server.url, proto, token, INDEX_MAIN + "#1", first)
    clock.advance(gap_s)
    hit = await bk_lookup(http, server.url, proto, token, INDEX_MAIN + "#")
    assert hit is not None and hit[0] == INDEX_MAIN + "#1"
    await bk_save(http, server.url, proto, token, INDEX_MAIN + "#2", second)

    # Exporter (with '#') and importer (without) both see #2, and get #2's bytes.
    for lookup_key in (INDEX_MAIN + "#", INDEX_MAIN):
        hit = await bk_lookup(http, server.url, proto, token, lookup_key)
        assert hit is not None and hit[0] == INDEX_MAIN + "#2", (lookup_key, hit)
        assert await fetch(http, hit[1]) == second


@pytest.mark.parametrize("proto", BOTH)
async def test_importer_with_two_scopes(
    server: ServerHandle, http: aiohttp.ClientSession, clock: Clock, proto: Proto
) -> None:
    main_token = server.token(REPO, f"{MAIN}:rw")
    pr_token = server.token(REPO, f"{PR}:rw", f"{MAIN}:r")
    main_index, pr_index = b'{"from":"main"}', b'{"from":"pr"}'
    await bk_save(http, server.url, proto, main_token, INDEX_MAIN + "#1", main_index)
    clock.advance(1)

    async def import_lookups() -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
        # The importer looks up one index per scope of its token, in parallel.
        pr_hit, main_hit = await asyncio.gather(
            bk_lookup(http, server.url, proto, pr_token, INDEX_PR),
            bk_lookup(http, server.url, proto, pr_token, INDEX_MAIN),
        )
        return pr_hit, main_hit

    pr_hit, main_hit = await import_lookups()
    assert pr_hit is None
    assert main_hit is not None and main_hit[0] == INDEX_MAIN + "#1"
    assert await fetch(http, main_hit[1]) == main_index

    # The PR build exports under its writable scope (the PR ref).
    assert await bk_lookup(http, server.url, proto, pr_token, INDEX_PR + "#") is None
    await bk_save(http, server.url, proto, pr_token, INDEX_PR + "#1", pr_index)

    pr_hit, main_hit = await import_lookups()
    assert pr_hit is not None and pr_hit[0] == INDEX_PR + "#1"
    assert await fetch(http, pr_hit[1]) == pr_index
    assert main_hit is not None and main_hit[0] == INDEX_MAIN + "#1"
    assert await fetch(http, main_hit[1]) == main_index
    # The PR entry went to the PR scope: a main-only token cannot see it.
    assert await bk_lookup(http, server.url, proto, main_token, INDEX_PR) is None


async def test_v1_lookup_reports_the_scope_of_the_hit(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    main_token = server.token(REPO, f"{MAIN}:rw")
    pr_token = server.token(REPO, f"{PR}:rw", f"{MAIN}:r")
    await wire.v1_save(http, server.url, main_token, INDEX_MAIN + "#1", b"main", version=BK)
    await wire.v1_save(http, server.url, pr_token, INDEX_PR + "#1", b"pr", version=BK)

    _, main_hit = await wire.v1_lookup(http, server.url, pr_token, [INDEX_MAIN], version=BK)
    _, pr_hit = await wire.v1_lookup(http, server.url, pr_token, [INDEX_PR], version=BK)

    assert main_hit is not None and main_hit["scope"] == MAIN
    assert pr_hit is not None and pr_hit["scope"] == PR


# -- layer blobs: lookup, reserve, upload, commit -------------------------------------------


async def test_v1_blob_existence_flow(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    token = server.token(REPO, f"{MAIN}:rw")
    data = os.urandom(139)
    key = blob_key(data)

    status, body = await wire.v1_lookup(http, server.url, token, [key], version=BK)
    assert (status, body) == (204, None)
    status, reserved = await wire.v1_reserve(http, server.url, token, key, version=BK)
    assert status == 201 and isinstance(reserved["cacheId"], int) and reserved["cacheId"] > 0
    cache_id = reserved["cacheId"]
    assert await wire.v1_patch(http, server.url, token, cache_id, 0, data) == 204
    assert await wire.v1_commit(http, server.url, token, cache_id, len(data)) == (204, b"")

    # Re-export: the lookup now hits, and a racing reserve is "already exists".
    status, hit = await wire.v1_lookup(http, server.url, token, [key], version=BK)
    assert status == 200 and hit is not None and hit["cacheKey"] == key
    assert await fetch(http, hit["archiveLocation"]) == data
    status, conflict = await wire.v1_reserve(http, server.url, token, key, version=BK)
    assert status == 409
    assert "AlreadyExists" in conflict["typeKey"], conflict


async def test_v2_blob_existence_flow(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    token = server.token(REPO, f"{MAIN}:rw")
    data = os.urandom(139)
    key = blob_key(data)
    ident = {"key": key, "version": BK}

    miss = await wire.v2_lookup(http, server.url, token, key, [key], version=BK)
    assert miss["ok"] is False
    status, created = await wire.twirp(http, server.url, "CreateCacheEntry", ident, token)
    assert status == 200 and created["ok"] is True, created
    async with http.put(
        created["signed_upload_url"],
        data=data,
        headers={"x-ms-blob-type": "BlockBlob", "Content-Type": "application/octet-stream"},
    ) as r:
        assert r.status == 201
        assert r.headers.get("x-ms-request-id")
    # go-actions-cache sends size_bytes as a JSON number.
    status, done = await wire.twirp(
        http, server.url, "FinalizeCacheEntryUpload", {**ident, "size_bytes": len(data)}, token
    )
    assert status == 200 and done["ok"] is True and int(done["entry_id"]) > 0, done

    hit = await wire.v2_lookup(http, server.url, token, key, [key], version=BK)
    assert hit["ok"] is True and hit["matched_key"] == key
    assert await fetch(http, hit["signed_download_url"]) == data
    status, conflict = await wire.twirp(http, server.url, "CreateCacheEntry", ident, token)
    assert status == 409
    assert conflict["code"] == "already_exists", conflict


# -- v1 chunked, out-of-order PATCH ---------------------------------------------------------


@pytest.mark.parametrize("concurrent", [False, True], ids=["sequential", "concurrent"])
async def test_v1_chunked_patches_out_of_order(
    server: ServerHandle, http: aiohttp.ClientSession, concurrent: bool
) -> None:
    token = server.token(REPO, f"{MAIN}:rw")
    chunk = MiB
    data = os.urandom(2 * chunk + chunk // 2 + 7)
    key = blob_key(data)
    status, reserved = await wire.v1_reserve(http, server.url, token, key, version=BK)
    assert status == 201
    cache_id = reserved["cacheId"]

    starts = [2 * chunk, chunk, 0]  # the last chunk first, as BuildKit's workers did
    patches = [
        wire.v1_patch(http, server.url, token, cache_id, s, data[s : s + chunk]) for s in starts
    ]
    # Concurrently, the requests are started in this order; sequentially, each one finishes first.
    statuses = list(await asyncio.gather(*patches)) if concurrent else [await p for p in patches]
    assert statuses == [204, 204, 204]
    assert await wire.v1_commit(http, server.url, token, cache_id, len(data)) == (204, b"")

    status, hit = await wire.v1_lookup(http, server.url, token, [key], version=BK)
    assert status == 200 and hit is not None
    status, body, headers = await wire.download(http, hit["archiveLocation"])
    assert status == 200 and body == data
    assert headers["Content-Length"] == str(len(data))


# -- ranged reads on the download URL -------------------------------------------------------


@pytest.mark.parametrize("proto", BOTH)
async def test_ranged_reads(
    server: ServerHandle, http: aiohttp.ClientSession, proto: Proto
) -> None:
    token = server.token(REPO, f"{MAIN}:rw")
    data = os.urandom(MiB + 123)
    size = len(data)
    key = blob_key(data)
    await bk_save(http, server.url, proto, token, key, data)
    hit = await bk_lookup(http, server.url, proto, token, key)
    assert hit is not None
    url = hit[1]

    # Open-ended ranges, as a resumed BuildKit read sends them (never from 0).
    for start in (1, 4095, 65536, size // 2, size - 1):
        status, body, headers = await wire.download(http, url, {"Range": f"bytes={start}-"})
        assert status == 206, start
        assert headers["Content-Range"] == f"bytes {start}-{size - 1}/{size}"
        assert headers["Content-Length"] == str(size - start)
        assert body == data[start:], start
        assert headers.get("x-ms-request-id")

    # Closed ranges, with the standard header and with the Azure JS SDK's x-ms-range.
    for header in ("Range", "x-ms-range"):
        for a, b in ((0, 0), (10, 4 * 1024 - 1), (size - 100, size - 1)):
            status, body, headers = await wire.download(http, url, {header: f"bytes={a}-{b}"})
            assert status == 206, (header, a, b)
            assert headers["Content-Range"] == f"bytes {a}-{b}/{size}"
            assert body == data[a : b + 1], (header, a, b)
            assert headers.get("x-ms-request-id")

    # Get Blob Properties.
    async with http.head(url) as r:
        assert r.status == 200
        assert r.headers["Content-Length"] == str(size)
        assert r.headers.get("ETag")
        assert r.headers.get("x-ms-request-id")
        assert await r.read() == b""

    # Ranges that start at or after the end.
    for start in (size, size + 10):
        status, _, headers = await wire.download(http, url, {"Range": f"bytes={start}-"})
        assert status == 416, start
        assert headers["Content-Range"] == f"bytes */{size}"
        assert headers.get("x-ms-request-id")

    # The whole blob.
    status, body, headers = await wire.download(http, url)
    assert status == 200 and body == data
    assert headers.get("x-ms-request-id")


# -- v2 Put Block with Go SDK block ids -----------------------------------------------------


async def test_v2_go_sdk_sequential_1mib_blocks(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token(REPO, f"{MAIN}:rw")
    data = os.urandom(5 * MiB + 17)  # 6 blocks, the last one short
    key = blob_key(data)
    ident = {"key": key, "version": BK}
    assert len(wire.go_block_id(0)) == 88  # base64 of 64 raw bytes

    status, created = await wire.twirp(http, server.url, "CreateCacheEntry", ident, token)
    assert status == 200 and created["ok"] is True
    url = created["signed_upload_url"]
    assert await wire.put_blocks(http, url, data, MiB, go_ids=True) == 201
    status, done = await wire.twirp(
        http, server.url, "FinalizeCacheEntryUpload", {**ident, "size_bytes": len(data)}, token
    )
    assert status == 200 and done["ok"] is True, done

    hit = await wire.v2_lookup(http, server.url, token, key, [key], version=BK)
    assert hit["ok"] is True and hit["matched_key"] == key
    status, body, headers = await wire.download(http, hit["signed_download_url"])
    assert status == 200 and body == data
    assert headers["Content-Length"] == str(len(data))


async def test_v2_block_writes_carry_request_id(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    """buildkitd panics (nil pointer in uploadV2) if a blob write lacks x-ms-request-id."""
    token = server.token(REPO, f"{MAIN}:rw")
    data = os.urandom(2 * MiB + 1)
    ident = {"key": blob_key(data), "version": BK}
    _, created = await wire.twirp(http, server.url, "CreateCacheEntry", ident, token)
    url = created["signed_upload_url"]

    prefix = os.urandom(16)
    ids = [wire.go_block_id(i, prefix) for i in range(3)]
    for i, block_id in enumerate(ids):
        async with http.put(
            url + "&comp=block&blockid=" + quote(block_id, safe=""),
            data=data[i * MiB : (i + 1) * MiB],
        ) as r:
            assert r.status == 201, await r.text()
            assert r.headers.get("x-ms-request-id")
    async with http.put(
        url + "&comp=blocklist",
        data=wire.block_list(ids),
        headers={"Content-Type": "application/xml"},
    ) as r:
        assert r.status == 201, await r.text()
        assert r.headers.get("x-ms-request-id")
    status, done = await wire.twirp(
        http, server.url, "FinalizeCacheEntryUpload", {**ident, "size_bytes": len(data)}, token
    )
    assert status == 200 and done["ok"] is True
