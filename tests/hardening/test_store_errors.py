"""An object store that fails: the real server on S3 (moto) behind a fault proxy.

The proxy (tests/support/failing_proxy.py) answers 503, resets connections, stalls, or cuts
downloads off part-way, for the requests its rules match. obstore's own retries are turned
down in the storage URL (one retry, none after 2 s; a silent store is given up after 5 s) so
that a failure surfaces in well under a second, a stall in 5 s. Uploads then get 503 with ``Retry-After`` in their protocol's shape and leave no
entry, object or multipart upload behind; lookups, which read only the index, go on;
downloads fail visibly (an error status, or a body shorter than its Content-Length), never
as a complete-looking 200; once the store is back, everything committed is byte-exact and
the failed uploads can be finished.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import defusedxml.ElementTree as SafeET
import pytest

from ghacache.client import CacheClient, ClientConfig, RetrySettings
from ghacache.storage.objectstore import RETRY_AFTER_S
from tests.conftest import Clock, ServerHandle, start_server
from tests.support import wire
from tests.support.failing_proxy import FailingProxy, cut_after, reset, respond, stall
from tests.support.objectstores import (
    Service,
    create_bucket,
    pending_multipart_uploads,
    s3_store_url,
)

MiB = 1024 * 1024
# One retry, and a store request that hangs is given up after 5 s.
STORE_OPTIONS = "&max_retries=1&retry_timeout=2s&timeout=5s"
CLIENT_RETRY = RetrySettings(timeout_s=30, base_delay_s=0.05, max_delay_s=0.2)


@dataclasses.dataclass
class Rig:
    server: ServerHandle
    proxy: FailingProxy
    moto: Service
    bucket: str

    def objects(self) -> list[str]:
        """Every object in the bucket, asked of moto directly (not through the proxy)."""
        with urllib.request.urlopen(f"{self.moto.url}/{self.bucket}?list-type=2") as r:
            root = SafeET.fromstring(r.read())
        ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
        return sorted(key.text or "" for key in root.iter(f"{ns}Key"))

    def blobs(self) -> list[str]:
        return [o for o in self.objects() if "/blobs/" in o]

    def pending_multipart(self) -> list[str]:
        return pending_multipart_uploads(self.moto.url, self.bucket)


@pytest.fixture
async def rig(
    moto: Service, clean_cloud_env: None, tmp_path: Path, clock: Clock
) -> AsyncIterator[Rig]:
    bucket = f"faults-{os.urandom(4).hex()}"
    create_bucket(moto, bucket)
    async with FailingProxy.running(moto.url) as proxy:
        url = s3_store_url(dataclasses.replace(moto, url=proxy.url), bucket, "cache")
        handle, runner = await start_server(tmp_path, clock, storage_url=url + STORE_OPTIONS)
        try:
            yield Rig(handle, proxy, moto, bucket)
        finally:
            await runner.cleanup()


async def create(rig: Rig, http: aiohttp.ClientSession, key: str) -> str:
    body = {"key": key, "version": wire.VERSION}
    status, out = await wire.twirp(
        http, rig.server.url, "CreateCacheEntry", body, rig.server.token()
    )
    assert status == 200 and out["ok"], out
    return str(out["signed_upload_url"])


async def finalize(
    rig: Rig, http: aiohttp.ClientSession, key: str, size: int
) -> tuple[int, dict[str, Any], str | None]:
    body = {"key": key, "version": wire.VERSION, "size_bytes": str(size)}
    async with http.post(
        rig.server.url + wire.TWIRP + "FinalizeCacheEntryUpload",
        json=body,
        headers=wire.auth(rig.server.token()),
    ) as r:
        return r.status, await r.json(), r.headers.get("Retry-After")


def azure_error(body: bytes) -> tuple[str, str]:
    root = SafeET.fromstring(body)
    return root.findtext("Code") or "", root.findtext("Message") or ""


async def assert_downloads(rig: Rig, http: aiohttp.ClientSession, saved: dict[str, bytes]) -> None:
    token = rig.server.token()
    for key, data in saved.items():
        found = await wire.v2_lookup(http, rig.server.url, token, key)
        assert found["ok"], found
        status, body, _ = await wire.download(http, found["signed_download_url"])
        assert status == 200 and body == data, key


async def assert_miss(rig: Rig, http: aiohttp.ClientSession, key: str) -> None:
    token = rig.server.token()
    assert not (await wire.v2_lookup(http, rig.server.url, token, key))["ok"]
    assert (await wire.v1_lookup(http, rig.server.url, token, [key]))[0] == 204


async def test_uploads_while_the_store_fails_get_503_and_leave_nothing_behind(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    token = rig.server.token()
    saved = {"small": os.urandom(100_000), "multi": os.urandom(9 * MiB + 3)}
    # A single 503 is absorbed by obstore's retry: the save succeeds.
    rig.proxy.fail(respond(503), method="PUT")
    await wire.v2_save(http, rig.server.url, token, "small", saved["small"])
    assert rig.proxy.rules[0].hits == 1
    await wire.v2_save(http, rig.server.url, token, "multi", saved["multi"], block_size=MiB)
    committed = rig.blobs()
    assert len(committed) == 2

    # Every write fails with 503 (and obstore's retry fails too).
    rig.proxy.fail(respond(503), method="PUT", times=-1)
    url = await create(rig, http, "put-blob")
    async with http.put(url, data=b"x" * 1000, headers={"x-ms-blob-type": "BlockBlob"}) as r:
        assert r.status == 503
        assert r.headers["Retry-After"] == str(RETRY_AFTER_S)
        assert r.headers["x-ms-error-code"] == "ServerBusy"
        code, message = azure_error(await r.read())
    assert code == "ServerBusy"
    assert message.startswith(f"the object store s3://{rig.bucket}/cache is unavailable while ")
    assert message.endswith("; try again later") and "127.0.0.1" not in message
    status, body, _ = await finalize(rig, http, "put-blob", 1000)
    assert (status, body["code"]) == (412, "failed_precondition")

    status, body = await wire.v1_reserve(http, rig.server.url, token, "v1-chunk")
    assert status == 201, body
    cache_id = int(body["cacheId"])
    async with http.patch(
        f"{rig.server.url}{wire.V1}caches/{cache_id}",
        data=io.BytesIO(os.urandom(2 * MiB)),
        headers={**wire.auth(token), "Content-Range": f"bytes 0-{2 * MiB - 1}/*"},
    ) as r:
        assert r.status == 503 and r.headers["Retry-After"] == str(RETRY_AFTER_S)
        error = await r.json()
    assert error["typeKey"] == "InternalServerErrorException"
    assert "is unavailable while staging part o00000000000000000000" in error["message"]

    # A reset connection and a stalled store are the same to clients.
    rig.proxy.clear()
    rig.proxy.fail(reset(), method="PUT", times=-1)
    url = await create(rig, http, "reset")
    assert await wire.put_blocks(http, url, os.urandom(3000), 1000) == 503
    rig.proxy.clear()
    rig.proxy.fail(stall(30), method="PUT", times=-1)
    async with http.put(url + "&comp=block&blockid=" + wire.js_block_id(0), data=b"y") as r:
        assert r.status == 503 and r.headers["x-ms-error-code"] == "ServerBusy"

    # Finalize whose publish fails mid-way (multipart part 2 of a 9 MiB blob): 503, the
    # multipart upload is aborted, nothing is listed or visible.
    rig.proxy.clear()
    data = os.urandom(9 * MiB)
    url = await create(rig, http, "publish")
    assert await wire.put_blocks(http, url, data, MiB) == 201
    rig.proxy.fail(respond(503), method="PUT", query="partNumber=2", times=-1)
    status, body, retry_after = await finalize(rig, http, "publish", len(data))
    assert (status, body["code"], retry_after) == (503, "unavailable", str(RETRY_AFTER_S))
    assert body["msg"].startswith(f"the object store s3://{rig.bucket}/cache is unavailable")
    assert rig.blobs() == committed and rig.pending_multipart() == []
    for key in ("put-blob", "v1-chunk", "reset", "publish"):
        await assert_miss(rig, http, key)

    # The store is back: what was committed is intact, the failed finalize completes.
    rig.proxy.clear()
    await assert_downloads(rig, http, saved)
    status, body, _ = await finalize(rig, http, "publish", len(data))
    assert status == 200 and body["ok"], body
    saved["publish"] = data
    await assert_downloads(rig, http, saved)
    assert rig.pending_multipart() == []
    # The failed writes staged nothing (their objects were never created).
    assert [o for o in rig.objects() if "/uploads/" in o] == []


async def test_lookups_go_on_while_the_store_is_down_and_downloads_fail_visibly(
    rig: Rig, http: aiohttp.ClientSession
) -> None:
    token = rig.server.token()
    data = os.urandom(3 * MiB)
    await wire.v2_save(http, rig.server.url, token, "big", data, block_size=MiB)

    # Down for everything: lookups read only the index, downloads get 503 up front.
    rig.proxy.fail(respond(503), times=-1)
    found = await wire.v2_lookup(http, rig.server.url, token, "big")
    assert found["ok"] and found["matched_key"] == "big"
    status, hit = await wire.v1_lookup(http, rig.server.url, token, ["bi"])
    assert status == 200 and hit is not None and hit["cacheKey"] == "big"
    for url in (found["signed_download_url"], hit["archiveLocation"]):
        async with http.get(url) as r:
            assert r.status == 503 and r.headers["x-ms-error-code"] == "ServerBusy"
            assert r.headers["Retry-After"] == str(RETRY_AFTER_S)
        async with http.head(url) as r:
            assert r.status == 503 and r.headers["x-ms-error-code"] == "ServerBusy"

    # Only the read fails (HEAD works): still an error status, sent before any byte.
    rig.proxy.clear()
    rig.proxy.fail(reset(), method="GET", path="/blobs/", times=-1)
    async with http.get(found["signed_download_url"]) as r:
        assert r.status == 503
        code, _ = azure_error(await r.read())
        assert code == "ServerBusy"

    # A body the store breaks off is resumed by obstore (one retry): nobody notices.
    rig.proxy.clear()
    gets = rig.proxy.count("GET", "/blobs/")
    rig.proxy.fail(cut_after(MiB + MiB // 2), method="GET", path="/blobs/")
    status, body, _ = await wire.download(http, found["signed_download_url"])
    assert status == 200 and body == data
    assert rig.proxy.count("GET", "/blobs/") == gets + 2

    # Broken off for good once the first MiB went out: the answer is a 200 whose body stops
    # short of its Content-Length, which HTTP clients report as an error, never as complete.
    break_reads_midway(rig.proxy, times=-1)
    async with http.get(found["signed_download_url"]) as r:
        assert r.status == 200 and r.headers["Content-Length"] == str(len(data))
        with pytest.raises(aiohttp.ClientPayloadError):
            await r.read()

    # ghacache's client resumes from where the body stopped, once the store recovers.
    break_reads_midway(rig.proxy, times=1)
    config = ClientConfig(token=token, url_v2=rig.server.url, retry=CLIENT_RETRY)
    async with CacheClient(config) as client:
        assert await client.load("big", wire.VERSION) == data
    assert [rule.hits for rule in rig.proxy.rules] == [1, 1]


def break_reads_midway(proxy: FailingProxy, *, times: int) -> None:
    """Blob reads get 1.5 MiB, then the connection drops; obstore's retry is refused."""
    proxy.clear()
    proxy.fail(cut_after(MiB + MiB // 2), method="GET", path="/blobs/")
    proxy.fail(reset(), method="GET", path="/blobs/", times=times)


async def test_a_client_rides_out_a_short_outage(rig: Rig, http: aiohttp.ClientSession) -> None:
    """ghacache's client retries 503s; the save completes once the store is back."""
    rig.proxy.fail(respond(503), method="PUT", times=-1)
    config = ClientConfig(token=rig.server.token(), url_v2=rig.server.url, retry=CLIENT_RETRY)
    data = os.urandom(200_000)
    async with CacheClient(config) as client:
        saving = asyncio.create_task(client.save("outage", wire.VERSION, data))
        async with asyncio.timeout(60):  # a bound, not a measurement: fail rather than hang
            await rig.proxy.wait_for(lambda: rig.proxy.count("PUT") >= 4)  # 2 refused uploads
        assert not saving.done()
        rig.proxy.clear()
        await saving
    await assert_downloads(rig, http, {"outage": data})
    assert [o for o in rig.objects() if "/uploads/" in o] == []  # staging cleaned up
