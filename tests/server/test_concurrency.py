"""Races: concurrent reservations and finalizes, and abandoned reservations."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import pytest

from ghacache.protocol import v1
from tests.conftest import ServerHandle
from tests.support import wire


def _uploads_dir(server: ServerHandle) -> Path:
    return server.config.data_dir / "store" / "uploads"


def _staged(server: ServerHandle) -> list[Path]:
    return sorted(_uploads_dir(server).rglob("*"))


async def _create(
    http: aiohttp.ClientSession, server: ServerHandle, token: str, key: str
) -> tuple[int, dict[str, Any]]:
    return await wire.twirp(
        http, server.url, "CreateCacheEntry", {"key": key, "version": wire.VERSION}, token
    )


def _assert_twirp_exists(status: int, body: dict[str, Any]) -> None:
    assert status == 409, body
    assert body["code"] == "already_exists"
    assert isinstance(body["msg"], str) and body["msg"]


def _assert_v1_exists(status: int, body: dict[str, Any]) -> None:
    assert status == 409, body
    assert body["typeKey"] == v1.ALREADY_EXISTS_TYPE_KEY
    assert "AlreadyExists" in body["typeKey"] and body["message"]


@pytest.mark.parametrize("n", [2, 20])
async def test_concurrent_v2_reservations_one_wins(
    server: ServerHandle, http: aiohttp.ClientSession, n: int
) -> None:
    token = server.token()
    results = await asyncio.gather(*(_create(http, server, token, "race") for _ in range(n)))
    winners = [body for status, body in results if status == 200]
    assert len(winners) == 1, results
    assert winners[0]["ok"] and winners[0]["signed_upload_url"]
    for status, body in results:
        if status != 200:
            _assert_twirp_exists(status, body)

    # The winner's reservation is the real one: it uploads and finalizes.
    data = os.urandom(50_000)
    assert await wire.put_blob(http, winners[0]["signed_upload_url"], data) == 201
    status, out = await wire.twirp(
        http,
        server.url,
        "FinalizeCacheEntryUpload",
        {"key": "race", "version": wire.VERSION, "size_bytes": str(len(data))},
        token,
    )
    assert status == 200 and out["ok"], out
    found = await wire.v2_lookup(http, server.url, token, "race")
    assert (await wire.download(http, found["signed_download_url"]))[1] == data
    # And the identity stays taken once committed.
    _assert_twirp_exists(*(await _create(http, server, token, "race")))


@pytest.mark.parametrize("n", [2, 20])
async def test_concurrent_v1_reservations_one_wins(
    server: ServerHandle, http: aiohttp.ClientSession, n: int
) -> None:
    token = server.token()
    results = await asyncio.gather(
        *(wire.v1_reserve(http, server.url, token, "race-v1") for _ in range(n))
    )
    winners = [body for status, body in results if status == 201]
    assert len(winners) == 1, results
    for status, body in results:
        if status != 201:
            _assert_v1_exists(status, body)
    cache_id = int(winners[0]["cacheId"])
    data = os.urandom(30_000)
    assert await wire.v1_patch(http, server.url, token, cache_id, 0, data) == 204
    status, raw = await wire.v1_commit(http, server.url, token, cache_id, len(data))
    assert status == 204, raw
    status, hit = await wire.v1_lookup(http, server.url, token, ["race-v1"])
    assert status == 200 and hit is not None
    assert (await wire.download(http, hit["archiveLocation"]))[1] == data


async def test_concurrent_reservations_across_protocols(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    v2_calls = [_create(http, server, token, "race-mixed") for _ in range(5)]
    v1_calls = [wire.v1_reserve(http, server.url, token, "race-mixed") for _ in range(5)]
    results = await asyncio.gather(*v2_calls, *v1_calls)
    assert sum(status in (200, 201) for status, _ in results) == 1, results
    for status, body in results[:5]:
        if status != 200:
            _assert_twirp_exists(status, body)
    for status, body in results[5:]:
        if status != 201:
            _assert_v1_exists(status, body)


async def test_abandoned_reservation_can_be_reserved_again(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    status, first = await _create(http, server, token, "abandoned")
    assert status == 200
    partial = os.urandom(100_000)
    block = wire.js_block_id(0)
    async with http.put(
        first["signed_upload_url"] + "&comp=block&blockid=" + wire._q(block), data=partial
    ) as r:
        assert r.status == 201
    assert any(p.is_file() for p in _staged(server))

    # Still live: a second reservation conflicts.
    _assert_twirp_exists(*(await _create(http, server, token, "abandoned")))
    server.clock.advance(server.config.reservation_timeout - 1)
    _assert_twirp_exists(*(await _create(http, server, token, "abandoned")))
    server.clock.advance(2)

    token = server.token()
    status, second = await _create(http, server, token, "abandoned")
    assert status == 200 and second["ok"], second
    assert second["signed_upload_url"] != first["signed_upload_url"]
    # Taking over the reservation discarded the abandoned upload's staged bytes.
    assert not any(p.is_file() for p in _staged(server))
    # The old upload is dead even behind a freshly signed URL; the new one works end to end.
    old_id = urlsplit(first["signed_upload_url"]).path.rsplit("/", 1)[1]
    query = server.state.signer.sign(
        resource=f"uploads/{old_id}", direction="cw", expires_at=server.clock() + 60
    )
    old_url = f"{server.url}/ghacache/uploads/{old_id}?{urlencode(query)}"
    async with http.put(old_url + "&comp=blocklist", data=wire.block_list([block])) as r:
        assert r.status == 404, await r.read()
    assert await wire.put_blob(http, old_url, b"late bytes") == 404
    assert not any(p.is_file() for p in _staged(server))
    data = os.urandom(20_000)
    assert await wire.put_blob(http, second["signed_upload_url"], data) == 201
    status, out = await wire.twirp(
        http,
        server.url,
        "FinalizeCacheEntryUpload",
        {"key": "abandoned", "version": wire.VERSION, "size_bytes": len(data)},
        token,
    )
    assert status == 200 and out["ok"], out
    found = await wire.v2_lookup(http, server.url, token, "abandoned")
    assert (await wire.download(http, found["signed_download_url"]))[1] == data


async def test_expire_reservations_removes_staged_bytes(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    service = server.state.service
    status, body = await _create(http, server, token, "stale-v2")
    assert status == 200
    assert await wire.put_blob(http, body["signed_upload_url"], os.urandom(64_000)) == 201
    status, reserved = await wire.v1_reserve(http, server.url, token, "stale-v1")
    assert status == 201
    cache_id = int(reserved["cacheId"])
    assert await wire.v1_patch(http, server.url, token, cache_id, 0, os.urandom(10_000)) == 204
    assert len(list(_uploads_dir(server).iterdir())) == 2

    # Nothing is stale yet.
    assert await service.expire_reservations() == 0
    assert len(list(_uploads_dir(server).iterdir())) == 2

    server.clock.advance(server.config.reservation_timeout + 1)
    assert await service.expire_reservations() == 2
    assert list(_uploads_dir(server).iterdir()) == []
    assert await service.index.pending_uploads() == set()

    token = server.token()
    # Both keys are free again, and the dead v1 id cannot be written to.
    assert await wire.v1_patch(http, server.url, token, cache_id, 0, b"late") == 404
    assert list(_uploads_dir(server).iterdir()) == []
    await wire.v2_save(http, server.url, token, "stale-v2", b"fresh")
    await wire.v1_save(http, server.url, token, "stale-v1", b"fresh v1")
    status, hit = await wire.v1_lookup(http, server.url, token, ["stale-v1"])
    assert status == 200 and hit is not None
    assert (await wire.download(http, hit["archiveLocation"]))[1] == b"fresh v1"


async def test_upload_activity_keeps_reservation_alive(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    """Idle time, not age, abandons a reservation: a chunk resets the timeout."""
    token = server.token()
    status, reserved = await wire.v1_reserve(http, server.url, token, "slow-upload")
    assert status == 201
    cache_id = int(reserved["cacheId"])
    data = os.urandom(3000)
    for i in range(3):
        server.clock.advance(server.config.reservation_timeout * 0.75)
        token = server.token()
        chunk = data[i * 1000 : (i + 1) * 1000]
        assert await wire.v1_patch(http, server.url, token, cache_id, i * 1000, chunk) == 204
        assert await server.state.service.expire_reservations() == 0
    status, raw = await wire.v1_commit(http, server.url, token, cache_id, len(data))
    assert status == 204, raw
    status, hit = await wire.v1_lookup(http, server.url, token, ["slow-upload"])
    assert status == 200 and hit is not None
    assert (await wire.download(http, hit["archiveLocation"]))[1] == data


async def _finalize(
    http: aiohttp.ClientSession, server: ServerHandle, token: str, key: str, size: int
) -> tuple[int, dict[str, Any]]:
    return await wire.twirp(
        http,
        server.url,
        "FinalizeCacheEntryUpload",
        {"key": key, "version": wire.VERSION, "size_bytes": str(size)},
        token,
    )


@pytest.mark.parametrize("n", [2, 8])
async def test_concurrent_finalize_makes_one_entry(
    server: ServerHandle, http: aiohttp.ClientSession, n: int
) -> None:
    token = server.token()
    service = server.state.service
    status, body = await _create(http, server, token, "fin-race")
    assert status == 200
    data = os.urandom(2 * 1024 * 1024 + 3)
    assert await wire.put_blocks(http, body["signed_upload_url"], data, 512 * 1024) == 201

    results = await asyncio.gather(
        *(_finalize(http, server, token, "fin-race", len(data)) for _ in range(n))
    )
    ok = [out for status, out in results if status == 200]
    assert len(ok) == 1, results
    for status, out in results:
        if status != 200:
            assert status in (404, 409, 412), (status, out)
            assert set(out) == {"code", "msg"}
            assert out["code"] in ("not_found", "already_exists", "failed_precondition")

    found = await wire.v2_lookup(http, server.url, token, "fin-race")
    assert found["ok"]
    assert (await wire.download(http, found["signed_download_url"]))[1] == data
    assert found["signed_download_url"].split("?")[0].endswith("/" + ok[0]["entry_id"])
    # Exactly one blob is stored and committed; the losers left nothing behind.
    assert set(await service.store.list_blobs()) == set(
        (await server.state.catalog.committed_blob_map()).values()
    )
    assert len(await service.store.list_blobs()) == 1
    assert list(_uploads_dir(server).iterdir()) == []


@pytest.mark.parametrize("n", [2, 8])
async def test_concurrent_v1_commit_makes_one_entry(
    server: ServerHandle, http: aiohttp.ClientSession, n: int
) -> None:
    token = server.token()
    service = server.state.service
    status, reserved = await wire.v1_reserve(http, server.url, token, "commit-race")
    assert status == 201
    cache_id = int(reserved["cacheId"])
    data = os.urandom(4 * 1024 * 1024 + 11)
    chunk = 1024 * 1024
    for start in range(0, len(data), chunk):
        piece = data[start : start + chunk]
        assert await wire.v1_patch(http, server.url, token, cache_id, start, piece) == 204

    results = await asyncio.gather(
        *(wire.v1_commit(http, server.url, token, cache_id, len(data)) for _ in range(n))
    )
    assert sum(status == 204 for status, _ in results) == 1, results
    for status, raw in results:
        if status != 204:
            assert status in (404, 409, 412), (status, raw)
            assert json.loads(raw)["typeKey"]

    status, hit = await wire.v1_lookup(http, server.url, token, ["commit-race"])
    assert status == 200 and hit is not None
    assert (await wire.download(http, hit["archiveLocation"]))[1] == data
    assert set(await service.store.list_blobs()) == set(
        (await server.state.catalog.committed_blob_map()).values()
    )
    assert len(await service.store.list_blobs()) == 1
    assert list(_uploads_dir(server).iterdir()) == []


async def test_concurrent_puts_to_one_upload_then_finalize(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    """Blocks of one upload arriving in parallel (as the Azure SDKs send them) all count."""
    token = server.token()
    status, body = await _create(http, server, token, "parallel-blocks")
    assert status == 200
    url = body["signed_upload_url"]
    data = os.urandom(8 * 1024 * 1024)
    size = 512 * 1024
    ids = [wire.js_block_id(i, "0" * 36) for i in range(len(data) // size)]

    async def put(i: int) -> int:
        target = url + "&comp=block&blockid=" + wire._q(ids[i])
        async with http.put(target, data=data[i * size : (i + 1) * size]) as r:
            return r.status

    assert set(await asyncio.gather(*(put(i) for i in range(len(ids))))) == {201}
    async with http.put(url + "&comp=blocklist", data=wire.block_list(ids)) as r:
        assert r.status == 201
    status, out = await _finalize(http, server, token, "parallel-blocks", len(data))
    assert status == 200 and out["ok"], out
    found = await wire.v2_lookup(http, server.url, token, "parallel-blocks")
    assert (await wire.download(http, found["signed_download_url"]))[1] == data
