"""SIGKILL the real server mid-upload and restart it on the same data directory.

Committed entries must survive byte-exact, nothing half-written may become visible, and the
abandoned upload's staged bytes must be removed once its reservation times out. These kill
``python -m ghacache serve`` from outside; ``tests/hardening/test_crash_points.py`` kills it
at each named crash point, on SQLite and on PostgreSQL + S3.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp

from tests.conftest import SpawnedServer, Spawner
from tests.support import wire

MIB = 1024 * 1024


def _uploads(data_dir: Path) -> Path:
    return data_dir / "store" / "uploads"


def _staged_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


async def _wait_for(predicate: object, limit_s: float, what: str) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + limit_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what}")
        await asyncio.sleep(0.05)


async def _assert_saved(
    http: aiohttp.ClientSession, srv: SpawnedServer, token: str, entries: dict[str, bytes]
) -> None:
    for key, data in entries.items():
        found = await wire.v2_lookup(http, srv.url, token, key)
        assert found["ok"] and found["matched_key"] == key
        status, body, _ = await wire.download(http, found["signed_download_url"])
        assert status == 200 and body == data, key
        status, hit = await wire.v1_lookup(http, srv.url, token, [key])
        assert status == 200 and hit is not None
        status, body, _ = await wire.download(http, hit["archiveLocation"])
        assert status == 200 and body == data, key


async def _assert_miss(
    http: aiohttp.ClientSession, srv: SpawnedServer, token: str, key: str
) -> None:
    found = await wire.v2_lookup(http, srv.url, token, key)
    assert found == {"ok": False, "signed_download_url": "", "matched_key": ""}
    assert (await wire.v1_lookup(http, srv.url, token, [key]))[0] == 204
    # A prefix (restore-key) lookup does not find it either.
    assert not (await wire.v2_lookup(http, srv.url, token, key[:-1]))["ok"]


async def _start_slow_put(url: str, total: int, send: int) -> asyncio.StreamWriter:
    """Send a Put Blob announcing ``total`` bytes but only ``send`` of them, then stall."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    del reader
    head = (
        f"PUT {parts.path}?{parts.query} HTTP/1.1\r\n"
        f"Host: {parts.netloc}\r\n"
        "x-ms-blob-type: BlockBlob\r\n"
        "Content-Type: application/octet-stream\r\n"
        f"Content-Length: {total}\r\n\r\n"
    )
    writer.write(head.encode())
    chunk = os.urandom(MIB)
    for _ in range(send // MIB):
        writer.write(chunk)
        await writer.drain()
    return writer


async def test_kill_mid_upload_then_restart(
    spawn_server: Spawner, http: aiohttp.ClientSession
) -> None:
    srv = spawn_server()
    token = srv.token()
    saved = {"crash-one": os.urandom(300_000), "crash-two": os.urandom(2 * MIB + 5)}
    await wire.v2_save(http, srv.url, token, "crash-one", saved["crash-one"])
    await wire.v1_save(http, srv.url, token, "crash-two", saved["crash-two"], chunk_size=MIB)

    status, body = await wire.twirp(
        http, srv.url, "CreateCacheEntry", {"key": "crash-three", "version": wire.VERSION}, token
    )
    assert status == 200
    uploads = _uploads(srv.data_dir)
    writer = await _start_slow_put(body["signed_upload_url"], total=64 * MIB, send=8 * MIB)
    try:
        await _wait_for(lambda: _staged_bytes(uploads) >= 4 * MIB, 20, "the server to stage 4 MiB")
        (staged_upload,) = [p for p in uploads.iterdir() if p.is_dir()]
        srv.kill()
    finally:
        writer.close()
    assert srv.proc.returncode is not None and srv.proc.returncode < 0  # killed by a signal
    assert _staged_bytes(staged_upload) > 0  # the partial body is on disk after the crash

    restarted = spawn_server("--reservation-timeout", "2s", data_dir=srv.data_dir)
    await _assert_miss(http, restarted, token, "crash-three")
    await _assert_saved(http, restarted, token, saved)

    # Within a reservation timeout (2 s here) the staged bytes of the dead upload go away.
    await _wait_for(lambda: not staged_upload.exists(), 10, "the abandoned upload's removal")
    assert _staged_bytes(uploads) == 0
    await _assert_miss(http, restarted, token, "crash-three")

    # The key is free again, and a fresh save of it works.
    third = os.urandom(3 * MIB)
    await wire.v2_save(http, restarted.url, token, "crash-three", third, block_size=MIB)
    await _assert_saved(http, restarted, token, {**saved, "crash-three": third})
    assert _staged_bytes(uploads) == 0


async def test_kill_between_block_list_and_finalize(
    spawn_server: Spawner, http: aiohttp.ClientSession
) -> None:
    srv = spawn_server()
    token = srv.token()
    saved = {"before-crash": os.urandom(123_456)}
    await wire.v2_save(http, srv.url, token, "before-crash", saved["before-crash"])

    status, body = await wire.twirp(
        http, srv.url, "CreateCacheEntry", {"key": "unfinalized", "version": wire.VERSION}, token
    )
    assert status == 200
    pending = os.urandom(2 * MIB + 1)
    assert await wire.put_blocks(http, body["signed_upload_url"], pending, 512 * 1024) == 201
    await _assert_miss(http, srv, token, "unfinalized")
    srv.kill()
    uploads = _uploads(srv.data_dir)
    assert _staged_bytes(uploads) >= len(pending)  # the blocks (and assembly) are on disk

    restarted = spawn_server("--reservation-timeout", "2s", data_dir=srv.data_dir)
    await _assert_miss(http, restarted, token, "unfinalized")
    await _assert_saved(http, restarted, token, saved)

    await _wait_for(lambda: _staged_bytes(uploads) == 0, 10, "the abandoned upload's removal")
    await _assert_miss(http, restarted, token, "unfinalized")
    # The late finalize of the abandoned upload cannot resurrect it.
    status, out = await wire.twirp(
        http,
        restarted.url,
        "FinalizeCacheEntryUpload",
        {"key": "unfinalized", "version": wire.VERSION, "size_bytes": str(len(pending))},
        token,
    )
    assert status == 404 and out["code"] == "not_found", out
    await _assert_miss(http, restarted, token, "unfinalized")

    fresh = os.urandom(MIB)
    await wire.v1_save(http, restarted.url, token, "unfinalized", fresh)
    await _assert_saved(http, restarted, token, {**saved, "unfinalized": fresh})
