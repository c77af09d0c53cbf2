"""Raw protocol calls for tests: exactly the requests real clients send, nothing clever.

These speak HTTP with aiohttp directly (not ghacache's client), so server tests can send
malformed, out-of-order or partial traffic on purpose.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Sequence
from typing import Any

import aiohttp
from multidict import CIMultiDict

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
V1 = "/_apis/artifactcache/"
# What go-actions-cache sends for every BuildKit entry: sha256("|go-actionscache-1.0").
BUILDKIT_VERSION = "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"
VERSION = "3ad75f27293d65a135214b8c82b296080f911dc107e52f1e7ec871a2eda46e69"


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def twirp(
    http: aiohttp.ClientSession, base: str, method: str, body: Any, token: str
) -> tuple[int, dict[str, Any]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with http.post(
        base + TWIRP + method,
        data=data,
        headers={**auth(token), "Content-Type": "application/json"},
    ) as r:
        return r.status, await r.json(content_type=None)


def js_block_id(index: int, prefix: str | None = None) -> str:
    """A block id like the Azure JS SDK's: base64 of a 48-char UUID + padded index."""
    raw = (prefix or str(uuid.uuid4())) + f"{index:012d}"
    return base64.b64encode(raw.encode()).decode()


def go_block_id(index: int, prefix: bytes | None = None) -> str:
    """A block id like the Azure Go SDK's: base64 of 64 bytes (uuid + big-endian index)."""
    raw = (prefix or uuid.uuid4().bytes) + index.to_bytes(4, "big")
    return base64.b64encode(raw.ljust(64, b"\0")).decode()


def block_list(ids: Sequence[str]) -> bytes:
    inner = "".join(f"<Latest>{i}</Latest>" for i in ids)
    return f'<?xml version="1.0" encoding="utf-8"?><BlockList>{inner}</BlockList>'.encode()


async def put_blob(http: aiohttp.ClientSession, url: str, data: bytes) -> int:
    async with http.put(url, data=data, headers={"x-ms-blob-type": "BlockBlob"}) as r:
        await r.read()
        return r.status


async def put_blocks(
    http: aiohttp.ClientSession,
    url: str,
    data: bytes,
    block_size: int,
    *,
    order: Sequence[int] | None = None,
    go_ids: bool = False,
) -> int:
    """Stage ``data`` as blocks (in ``order``), then commit the list in index order."""
    chunks = [data[i : i + block_size] for i in range(0, len(data), block_size)] or [b""]
    prefix_s, prefix_b = str(uuid.uuid4()), uuid.uuid4().bytes
    ids = [
        go_block_id(i, prefix_b) if go_ids else js_block_id(i, prefix_s) for i in range(len(chunks))
    ]
    for i in order if order is not None else range(len(chunks)):
        async with http.put(url + "&comp=block&blockid=" + _q(ids[i]), data=chunks[i]) as r:
            await r.read()
            if r.status != 201:
                return r.status
    async with http.put(
        url + "&comp=blocklist", data=block_list(ids), headers={"Content-Type": "application/xml"}
    ) as r:
        await r.read()
        return r.status


def _q(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


async def v2_save(
    http: aiohttp.ClientSession,
    base: str,
    token: str,
    key: str,
    data: bytes,
    *,
    version: str = VERSION,
    block_size: int | None = None,
) -> int:
    """Reserve, upload (Put Blob, or blocks of ``block_size``) and finalize; return entry id."""
    status, body = await twirp(
        http, base, "CreateCacheEntry", {"key": key, "version": version}, token
    )
    assert status == 200 and body["ok"], (status, body)
    url = body["signed_upload_url"]
    if block_size is None:
        assert await put_blob(http, url, data) == 201
    else:
        assert await put_blocks(http, url, data, block_size) == 201
    status, body = await twirp(
        http,
        base,
        "FinalizeCacheEntryUpload",
        {"key": key, "version": version, "size_bytes": str(len(data))},
        token,
    )
    assert status == 200 and body["ok"], (status, body)
    return int(body["entry_id"])


async def v2_lookup(
    http: aiohttp.ClientSession,
    base: str,
    token: str,
    key: str,
    restore_keys: Sequence[str] = (),
    *,
    version: str = VERSION,
) -> dict[str, Any]:
    body: dict[str, Any] = {"key": key, "version": version}
    if restore_keys:
        body["restore_keys"] = list(restore_keys)
    status, out = await twirp(http, base, "GetCacheEntryDownloadURL", body, token)
    assert status == 200, (status, out)
    return out


async def download(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes, CIMultiDict[str]]:
    async with http.get(url, headers=headers or {}) as r:
        return r.status, await r.read(), CIMultiDict(r.headers)


async def v1_lookup(
    http: aiohttp.ClientSession,
    base: str,
    token: str,
    keys: Sequence[str],
    *,
    version: str = VERSION,
) -> tuple[int, dict[str, Any] | None]:
    async with http.get(
        base + V1 + "cache",
        params={"keys": ",".join(keys), "version": version},
        headers=auth(token),
    ) as r:
        raw = await r.read()
        return r.status, json.loads(raw) if raw else None


async def v1_reserve(
    http: aiohttp.ClientSession,
    base: str,
    token: str,
    key: str,
    *,
    version: str = VERSION,
    size: int | None = None,
) -> tuple[int, dict[str, Any]]:
    body: dict[str, Any] = {"key": key, "version": version}
    if size is not None:
        body["cacheSize"] = size
    async with http.post(base + V1 + "caches", json=body, headers=auth(token)) as r:
        return r.status, await r.json(content_type=None)


async def _chunked(data: bytes, piece: int = 65536) -> Any:
    for i in range(0, len(data), piece):
        yield data[i : i + piece]


async def v1_patch(
    http: aiohttp.ClientSession, base: str, token: str, cache_id: int, start: int, data: bytes
) -> int:
    """PATCH one chunk with Transfer-Encoding: chunked (no Content-Length), like the clients."""
    headers = {
        **auth(token),
        "Content-Type": "application/octet-stream",
        "Content-Range": f"bytes {start}-{start + len(data) - 1}/*",
    }
    async with http.patch(
        f"{base}{V1}caches/{cache_id}", data=_chunked(data), headers=headers
    ) as r:
        await r.read()
        return r.status


async def v1_commit(
    http: aiohttp.ClientSession, base: str, token: str, cache_id: int, size: int
) -> tuple[int, bytes]:
    async with http.post(
        f"{base}{V1}caches/{cache_id}", json={"size": size}, headers=auth(token)
    ) as r:
        return r.status, await r.read()


async def v1_save(
    http: aiohttp.ClientSession,
    base: str,
    token: str,
    key: str,
    data: bytes,
    *,
    version: str = VERSION,
    chunk_size: int = 32 * 1024 * 1024,
    reverse: bool = False,
) -> int:
    status, body = await v1_reserve(http, base, token, key, version=version)
    assert status == 201, (status, body)
    cache_id = int(body["cacheId"])
    starts = list(range(0, len(data), chunk_size))
    for start in reversed(starts) if reverse else starts:
        assert (
            await v1_patch(http, base, token, cache_id, start, data[start : start + chunk_size])
            == 204
        )
    status, raw = await v1_commit(http, base, token, cache_id, len(data))
    assert status == 204, (status, raw)
    return cache_id
