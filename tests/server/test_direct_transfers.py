"""Direct transfers: replicas hand out Azure SAS URLs and clients talk to Azurite themselves.

This is what GitHub does: CreateCacheEntry answers with a SAS URL for a blob in the storage
account, the client uploads there with the Azure Block Blob protocol, and finalize only
checks and publishes what the store holds. No entry byte passes through a replica.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import pytest

from ghacache.client import CacheClient, ClientConfig
from tests.server.test_replicas import Cluster, _official_round_trip, start_cluster
from tests.support import wire

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


@pytest.fixture
def cluster(tmp_path: Path, postgres_url: str, az_storage_url: str) -> Iterator[Cluster]:
    c = start_cluster(
        tmp_path,
        postgres_url,
        az_storage_url,
        3,
        "--direct-transfers",
        "true",
        "--max-entry-size",
        "8MiB",
    )
    yield c
    for r in c.replicas:
        r.stop()


def _is_azurite(url: str, azure_url: str) -> bool:
    """True if ``url`` points at the Azure endpoint (not at a replica)."""
    return urlsplit(url).netloc == urlsplit(azure_url).netloc


def _azure_endpoint(storage_url: str) -> str:
    from urllib.parse import parse_qs

    return parse_qs(urlsplit(storage_url).query)["endpoint"][0]


async def test_urls_point_at_the_store_and_entries_are_visible_everywhere(
    cluster: Cluster, az_storage_url: str, http: aiohttp.ClientSession
) -> None:
    azure = _azure_endpoint(az_storage_url)
    token = cluster.token()
    a, b, c = cluster.urls
    data = os.urandom(3 * MiB + 17)
    status, body = await wire.twirp(
        http, a, "CreateCacheEntry", {"key": "direct", "version": wire.VERSION}, token
    )
    assert status == 200 and body["ok"]
    upload = body["signed_upload_url"]
    assert _is_azurite(upload, azure), upload
    assert await wire.put_blocks(http, upload, data, MiB) == 201
    status, body = await wire.twirp(
        http,
        b,
        "FinalizeCacheEntryUpload",
        {"key": "direct", "version": wire.VERSION, "size_bytes": str(len(data))},
        token,
    )
    assert status == 200 and body["ok"], body
    for replica in cluster.urls:
        hit = await wire.v2_lookup(http, replica, token, "direct")
        assert hit["ok"] and _is_azurite(hit["signed_download_url"], azure), hit
        status, got, _ = await wire.download(http, hit["signed_download_url"])
        assert status == 200 and got == data
    # v1 lookups hand out the store's URL too (v1 uploads still go through a replica).
    status, found = await wire.v1_lookup(http, c, token, ["direct"])
    assert status == 200 and found is not None
    assert _is_azurite(found["archiveLocation"], azure)
    assert (await wire.download(http, found["archiveLocation"]))[1] == data


async def test_finalize_checks_what_the_store_holds(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    token = cluster.token()
    a, b, _ = cluster.urls

    async def create(key: str) -> str:
        status, body = await wire.twirp(
            http, a, "CreateCacheEntry", {"key": key, "version": wire.VERSION}, token
        )
        assert status == 200 and body["ok"]
        return str(body["signed_upload_url"])

    async def finalize(key: str, size: int) -> tuple[int, dict[str, str]]:
        body = {"key": key, "version": wire.VERSION, "size_bytes": str(size)}
        return await wire.twirp(http, b, "FinalizeCacheEntryUpload", body, token)

    await create("nothing-yet")
    status, out = await finalize("nothing-yet", 10)
    assert status == 412 and "nothing has been uploaded" in out["msg"], out

    assert await wire.put_blob(http, await create("wrong-size"), b"x" * 100) == 201
    status, out = await finalize("wrong-size", 99)
    assert status == 400 and "size mismatch" in out["msg"], out

    # The store takes anything; the entry size limit is enforced at finalize.
    too_big = await create("too-big")
    async with http.put(
        too_big, data=io.BytesIO(os.urandom(9 * MiB)), headers={"x-ms-blob-type": "BlockBlob"}
    ) as r:
        assert r.status == 201, await r.text()
    status, out = await finalize("too-big", 9 * MiB)
    assert status == 413, out
    for key in ("nothing-yet", "wrong-size", "too-big"):
        assert (await wire.v2_lookup(http, a, token, key))["ok"] is False


async def test_ghacache_client_uploads_and_downloads_directly(
    cluster: Cluster, http: aiohttp.ClientSession
) -> None:
    token = cluster.token()
    data = os.urandom(5 * MiB + 3)
    save_config = ClientConfig(token=token, url_v2=cluster.urls[0] + "/", block_bytes=2 * MiB)
    async with CacheClient(save_config) as client:
        await client.save("client-direct", wire.VERSION, data)
    async with CacheClient(ClientConfig(token=token, url_v2=cluster.urls[2] + "/")) as client:
        entry = await client.lookup(["client-direct"], wire.VERSION)
        assert entry is not None
        async with await client.open(entry) as reader:
            assert reader.size == len(data)
            assert await reader.read_at(MiB, 10) == data[MiB : MiB + 10]
            chunks = [chunk async for chunk in reader.iter_chunks()]
    assert b"".join(chunks) == data


def test_official_client_saves_and_restores_directly(cluster: Cluster, tmp_path: Path) -> None:
    token = cluster.token()
    _official_round_trip(
        cluster.urls[0], token, tmp_path, "v6", "v2", restore_url=cluster.urls[1], key="v6-direct"
    )
    # The v1 client uploads through a replica and downloads from the store.
    _official_round_trip(
        cluster.urls[2], token, tmp_path, "v3", "v1", restore_url=cluster.urls[0], key="v3-direct"
    )


def test_direct_transfers_need_an_azure_store(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "ghacache", "serve", "--port", "0"]
    cmd += ["--data-dir", str(tmp_path / "data"), "--direct-transfers", "true"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "--direct-transfers needs a store that hands out upload URLs (az://)" in proc.stderr
    assert not (tmp_path / "data" / "index.sqlite").exists()
