"""A full disk under the real server: blob store and SQLite index on a small tmpfs.

Each test mounts its own tmpfs as the data directory (mounting needs root, as on CI; a
failed mount fails the test), stores a few entries, then fills the disk with a filler file.
Uploads that run out of space get 507 in their protocol's own error shape and leave nothing
visible; a database that cannot grow refuses new entries with 507 ``resource_exhausted``;
lookups and downloads of what was stored go on byte-exact throughout; once space is freed,
saves work again and nothing staged is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import io
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import aiohttp
import defusedxml.ElementTree as SafeET
import pytest

from ghacache.server.auth import mint_admin_token
from tests.conftest import Clock, ServerHandle, serving
from tests.support import wire
from tests.support.official import official_env, run_official

KiB = 1024
MiB = 1024 * KiB
DISK_BYTES = 48 * MiB
# Left free for the upload tests: room for the index to keep writing, not for the uploads.
LEAVE_BYTES = 1 * MiB + 256 * KiB
UPLOAD_BYTES = 3 * MiB
ARCHIVE_BYTES = 24 * MiB


# -- the small disk ---------------------------------------------------------------------------


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of DISK_BYTES, unmounted after the test however it ends."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(
            f"cannot mount a {DISK_BYTES // MiB} MiB tmpfs at {mount_point} (these tests need "
            f"root, as on CI): {done.stderr.strip() or done.returncode}",
            pytrace=False,
        )
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False).returncode != 0:
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True)


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(disk: Path, *, leave: int = 0) -> Path:
    """Grow the filler file until at most ``leave`` bytes are free (0: until ENOSPC), or
    shrink it until ``leave`` are: the server's own writes move the mark a little."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        if free_bytes(disk) < leave:
            os.ftruncate(fd, max(0, os.fstat(fd).st_size - (leave - free_bytes(disk))))
        zeros = bytes(MiB)  # written, not truncated to size: tmpfs does not store holes
        while (free := free_bytes(disk)) > leave:
            try:
                os.write(fd, zeros[: min(MiB, free - leave)])
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
    finally:
        os.close(fd)
    return filler


@pytest.fixture
async def server(disk: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    """The real server with its whole data directory (store, index, secret) on ``disk``."""
    async with serving(disk, clock) as handle:
        yield handle


# -- helpers ----------------------------------------------------------------------------------


async def save_entries(http: aiohttp.ClientSession, server: ServerHandle) -> dict[str, bytes]:
    """Entries by every upload path: Put Blob, blocks, v1 chunks."""
    token = server.token()
    saved = {"blob": os.urandom(MiB), "blocks": os.urandom(2 * MiB + 5), "v1": os.urandom(MiB + 3)}
    await wire.v2_save(http, server.url, token, "blob", saved["blob"])
    await wire.v2_save(http, server.url, token, "blocks", saved["blocks"], block_size=512 * KiB)
    await wire.v1_save(http, server.url, token, "v1", saved["v1"], chunk_size=256 * KiB)
    return saved


async def assert_reads(
    http: aiohttp.ClientSession, server: ServerHandle, saved: dict[str, bytes], rounds: int = 1
) -> None:
    """Every entry is found (v2 and v1) and downloads byte-exact, whole and by range."""
    token = server.token()
    for _ in range(rounds):
        server.clock.advance(1)  # so that every hit has an access time to write
        for key in saved:
            found = await wire.v2_lookup(http, server.url, token, key)
            assert found["ok"] and found["matched_key"] == key, found
            status, hit = await wire.v1_lookup(http, server.url, token, [key])
            assert status == 200 and hit is not None and hit["cacheKey"] == key
    for key, data in saved.items():
        found = await wire.v2_lookup(http, server.url, token, key)
        status, body, _ = await wire.download(http, found["signed_download_url"])
        assert status == 200 and body == data, key
        status, body, _ = await wire.download(
            http, found["signed_download_url"], {"Range": "bytes=7-"}
        )
        assert status == 206 and body == data[7:], key


async def assert_miss(http: aiohttp.ClientSession, server: ServerHandle, key: str) -> None:
    token = server.token()
    assert not (await wire.v2_lookup(http, server.url, token, key))["ok"]
    assert (await wire.v1_lookup(http, server.url, token, [key]))[0] == 204


async def create(
    http: aiohttp.ClientSession, server: ServerHandle, key: str
) -> tuple[int, dict[str, Any]]:
    body = {"key": key, "version": wire.VERSION}
    return await wire.twirp(http, server.url, "CreateCacheEntry", body, server.token())


async def finalize(
    http: aiohttp.ClientSession, server: ServerHandle, key: str, size: int
) -> tuple[int, dict[str, Any]]:
    body = {"key": key, "version": wire.VERSION, "size_bytes": str(size)}
    return await wire.twirp(http, server.url, "FinalizeCacheEntryUpload", body, server.token())


def azure_error(body: bytes) -> tuple[str, str]:
    root = SafeET.fromstring(body)
    return root.findtext("Code") or "", root.findtext("Message") or ""


def staged_uploads(server: ServerHandle) -> list[str]:
    return sorted(p.name for p in (server.config.data_dir / "store" / "uploads").iterdir())


def integrity(server: ServerHandle) -> str:
    db = server.config.data_dir / "index.sqlite"
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


async def clean_up_abandoned(server: ServerHandle) -> None:
    """What the server's timers do once the failed uploads' reservations time out."""
    server.clock.advance(server.config.reservation_timeout + server.config.orphan_grace + 60)
    await server.state.service.expire_reservations()
    await server.state.maintainer.reconcile()


# -- tests ------------------------------------------------------------------------------------


async def test_uploads_that_run_out_of_space_get_507_and_leave_nothing_visible(
    disk: Path, server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    saved = await save_entries(http, server)
    fill(disk, leave=LEAVE_BYTES)
    token = server.token()
    payload = os.urandom(UPLOAD_BYTES)

    # v2 Put Blob: the body streams to a file of its own until the disk is full.
    status, body = await create(http, server, "put-blob")
    assert status == 200 and body["ok"], body
    async with http.put(
        body["signed_upload_url"], data=io.BytesIO(payload), headers={"x-ms-blob-type": "BlockBlob"}
    ) as r:
        assert r.status == 507
        assert r.headers["x-ms-error-code"] == "InsufficientStorage"
        code, message = azure_error(await r.read())
    assert code == "InsufficientStorage"
    assert message.startswith("no space left on the cache volume while staging part blob")
    assert free_bytes(disk) > LEAVE_BYTES - 256 * KiB  # the partial body was removed
    status, body = await finalize(http, server, "put-blob", UPLOAD_BYTES)
    assert (status, body["code"]) == (412, "failed_precondition"), body
    await assert_miss(http, server, "put-blob")

    # v1 PATCH: the chunk is written in place in the upload's data file, which is cut back.
    fill(disk, leave=LEAVE_BYTES)
    status, body = await wire.v1_reserve(http, server.url, token, "v1-patch")
    assert status == 201, body
    cache_id = int(body["cacheId"])
    async with http.patch(
        f"{server.url}{wire.V1}caches/{cache_id}",
        data=io.BytesIO(payload),
        headers={**wire.auth(token), "Content-Range": f"bytes 0-{UPLOAD_BYTES - 1}/*"},
    ) as r:
        assert r.status == 507
        error = await r.json()
    assert error["typeKey"] == "InternalServerErrorException"
    assert error["message"].startswith("no space left on the cache volume while staging part o")
    assert free_bytes(disk) > LEAVE_BYTES - 256 * KiB  # the partial chunk was given back
    status, raw = await wire.v1_commit(http, server.url, token, cache_id, UPLOAD_BYTES)
    assert status == 400 and b"size mismatch" in raw
    await assert_miss(http, server, "v1-patch")

    # v2 Put Block: the first block fits, the second does not.
    fill(disk, leave=LEAVE_BYTES)
    status, body = await create(http, server, "blocks-full")
    assert status == 200 and body["ok"], body
    url = body["signed_upload_url"]
    ids = [wire.js_block_id(i, "f" * 36) for i in range(3)]
    statuses = []
    for i, block_id in enumerate(ids):
        async with http.put(
            f"{url}&comp=block&blockid={block_id}", data=payload[i * MiB : (i + 1) * MiB]
        ) as r:
            statuses.append(r.status)
            if r.status != 201:
                assert r.headers["x-ms-error-code"] == "InsufficientStorage"
                break
    assert statuses == [201, 507]
    async with http.put(f"{url}&comp=blocklist", data=wire.block_list(ids)) as r:
        assert r.status == 400  # names a block that never arrived
        assert azure_error(await r.read())[0] == "InvalidInput"
    status, body = await finalize(http, server, "blocks-full", UPLOAD_BYTES)
    assert (status, body["code"]) == (412, "failed_precondition"), body
    await assert_miss(http, server, "blocks-full")

    # Reads never stopped; the server is healthy.
    await assert_reads(http, server, saved)
    async with http.get(server.url + "/healthz") as r:
        assert r.status == 200

    # An operator frees space through the management API; saving works again.
    admin = mint_admin_token(server.secret, ttl_s=3600, now=server.clock())
    async with http.delete(
        f"{server.url}/repos/octo/repo/actions/caches",
        params={"key": "blocks"},
        headers=wire.auth(admin),
    ) as r:
        assert r.status == 200, await r.text()
    del saved["blocks"]
    again = os.urandom(2 * MiB)
    await wire.v2_save(http, server.url, server.token(), "after-delete", again, block_size=MiB)
    saved["after-delete"] = again

    # The failed uploads' staging is gone once their reservations time out.
    assert staged_uploads(server)  # the block that fitted is still staged until then
    await clean_up_abandoned(server)
    assert staged_uploads(server) == []
    await assert_reads(http, server, saved)
    assert integrity(server) == "ok"


@pytest.mark.slow
async def test_a_full_database_refuses_new_entries_and_keeps_serving_reads(
    disk: Path, server: ServerHandle, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    saved = await save_entries(http, server)
    filler = fill(disk)
    assert free_bytes(disk) == 0

    # New reservations need the index to grow. Its log may hold a few more rows; then 507.
    for n in range(200):
        status, body = await create(http, server, f"more-{n}")
        if status != 200:
            break
    assert status == 507, (n, status, body)
    assert body["code"] == "resource_exhausted"
    assert body["msg"].startswith("no space left for the index database")
    status, body = await wire.v1_reserve(http, server.url, server.token(), "more-v1")
    assert status == 507, body
    assert body["message"].startswith("no space left for the index database")

    # The official client reports a refused reservation in its own words (as "another job
    # may be creating this cache"); the cause is in its debug log.
    workspace = tmp_path / "workspace"
    (workspace / "data").mkdir(parents=True)
    (workspace / "data" / "file").write_bytes(b"data")
    (tmp_path / "temp").mkdir()
    env = official_env(
        protocol="v2",
        base_url=server.url,
        token=server.token(),
        workspace=workspace,
        temp=tmp_path / "temp",
    )
    res = await asyncio.to_thread(
        run_official, "v6", "save", key="official", paths=["data"], env=env, cwd=workspace
    )
    assert res.ok and res.result == -1 and res.warnings == [], (res.error, res.stdout)
    assert (
        "Failed to save: Unable to reserve cache with key official, "
        "another job may be creating this cache." in res.info_lines
    ), res.stdout
    assert "(507) Insufficient Storage: no space left for the index database" in res.stdout

    # Every lookup is a hit whose access-time update cannot be written: reads go on.
    await assert_reads(http, server, saved, rounds=30)
    async with http.get(server.url + "/healthz") as r:
        assert r.status == 200

    # Space comes back: the refused key can be saved, the database is intact.
    filler.unlink()
    data = os.urandom(MiB)
    await wire.v2_save(http, server.url, server.token(), f"more-{n}", data)
    saved[f"more-{n}"] = data
    await assert_reads(http, server, saved)
    assert integrity(server) == "ok"
    await clean_up_abandoned(server)
    assert staged_uploads(server) == []


@pytest.mark.slow
async def test_clients_report_a_full_disk(
    disk: Path,
    server: ServerHandle,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    saved = await save_entries(http, server)
    fill(disk, leave=LEAVE_BYTES)
    workspace = tmp_path / "workspace"
    (workspace / "data").mkdir(parents=True)
    # Random bytes: the archive stays larger than the space left, by far, so that the disk
    # fills up while the client still has much to send.
    (workspace / "data" / "random.bin").write_bytes(os.urandom(ARCHIVE_BYTES))

    def env(protocol: Literal["v1", "v2"], n: int) -> dict[str, str]:
        fill(disk, leave=LEAVE_BYTES)  # what the last failure left, plus the index's growth
        temp = tmp_path / f"temp-{n}"
        temp.mkdir()
        return official_env(
            protocol=protocol,
            base_url=server.url,
            token=server.token(),
            workspace=workspace,
            temp=temp,
        )

    # The official client over v2: Put Blob gets 507, which its Azure SDK does not retry;
    # saveCache warns and returns -1 (a failed save never fails the job).
    v2 = await asyncio.to_thread(
        run_official, "v6", "save", key="full-v2", paths=["data"], env=env("v2", 1), cwd=workspace
    )
    assert v2.ok and v2.result == -1, (v2.error, v2.stdout)
    cause = "no space left on the cache volume while staging part blob of upload "
    upload, failed = v2.warnings
    assert upload.startswith(
        f"uploadCacheArchiveSDK: internal error uploading cache archive: {cause}"
    )
    assert failed.startswith(f"Failed to save: {cause}")

    # The official v1 client: PATCH gets 507, not retried either. It is answered after the
    # whole chunk arrived: an answer mid-body crashes this client (an unhandled stream error).
    v1 = await asyncio.to_thread(
        run_official, "v3", "save", key="full-v1", paths=["data"], env=env("v1", 2), cwd=workspace
    )
    assert v1.ok, (v1.error, v1.stdout, v1.stderr)
    assert isinstance(v1.result, int)  # 3.x returns the id it reserved, saved or not
    (warning,) = v1.warnings
    assert re.fullmatch(
        r"Failed to save: uploadChunk \(start: 0, end: \d+\) failed: "
        r"Cache service responded with 507",
        warning,
    ), warning

    # ghacache's own CLI names the cause and exits 1 at once (507 is not retried).
    cli_env = {k: os.environ[k] for k in ("PATH", "HOME") if k in os.environ}
    cli_env |= env("v2", 3)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "ghacache", "save", "--key", "full-cli", "--path", "data"],
        cwd=workspace,
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "HTTP 507 Insufficient Storage: no space left on the cache volume" in done.stderr
    assert "Cache saved" not in done.stdout

    # Each client sent its upload once: none retries a full disk.
    refused = [r for r in caplog.records if "failed: no space left" in r.getMessage()]
    assert [r.getMessage().split()[0] for r in refused] == ["PUT", "PATCH", "PUT"]

    # None of the failed saves is visible; the server still serves everything it had.
    for key in ("full-v2", "full-v1", "full-cli"):
        await assert_miss(http, server, key)
    await assert_reads(http, server, saved)
    assert free_bytes(disk) > LEAVE_BYTES - 256 * KiB
