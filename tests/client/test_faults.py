"""Retries, deadlines, error messages and re-signing, with faults injected in front of the
real server (tests/support/faults.py). Timing bounds are generous on purpose."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ghacache.client import CacheClient, RetrySettings
from ghacache.errors import DeadlineExceeded, RemoteEntryExists, ServerError
from tests.client.conftest import FAST_RETRY, VERSION, MiB, ProtocolName, config_for
from tests.conftest import Clock, ServerHandle, start_server
from tests.support import faults as f

SMALL: dict[str, Any] = {
    "block_bytes": 256 * 1024,
    "single_put_bytes": 256 * 1024,
    "concurrency": 2,
}
RESERVE = {"v2": ("POST", "CreateCacheEntry"), "v1": ("POST", "/_apis/artifactcache/caches")}
LOOKUP = {"v2": ("POST", "GetCacheEntryDownloadURL"), "v1": ("GET", "/_apis/artifactcache/cache")}


def api_error(protocol: ProtocolName, status: int, message: str, **headers: str) -> f.Action:
    """An error in the protocol's own shape (Twirp JSON, or a VSS body with a BOM)."""
    if protocol == "v2":
        return f.twirp_error(status, "unavailable", message, **headers)
    action = f.vss_error(status, message)

    async def with_headers(request: web.Request, handler: f.Handler) -> web.StreamResponse:
        resp = await action(request, handler)
        resp.headers.update(headers)
        return resp

    return with_headers


@dataclass
class Rig:
    server: ServerHandle
    faults: f.Faults
    clients: list[CacheClient]

    def client(
        self, protocol: ProtocolName, *, token: str | None = None, **settings: object
    ) -> CacheClient:
        settings.setdefault("retry", FAST_RETRY)
        config = config_for(self.server.url, token or self.server.token(), protocol, **settings)
        client = CacheClient(config)
        self.clients.append(client)
        return client


@pytest.fixture
async def rig(tmp_path: Path, clock: Clock) -> AsyncIterator[Rig]:
    faults = f.Faults()
    handle, runner = await start_server(tmp_path, clock, middlewares=[faults.middleware])
    rig = Rig(handle, faults, [])
    try:
        yield rig
    finally:
        for client in rig.clients:
            await client.close()
        await runner.cleanup()


async def test_429_waits_for_retry_after_then_succeeds(rig: Rig, protocol: ProtocolName) -> None:
    method, path = RESERVE[protocol]
    rig.faults.add(
        api_error(protocol, 429, "too many uploads", **{"Retry-After": "1"}),
        method=method,
        path=path,
    )
    client = rig.client(protocol)
    start = time.monotonic()
    await client.save("throttled", VERSION, b"data")
    assert time.monotonic() - start >= 0.9  # it waited what the server asked
    assert rig.faults.count(method, path) == 2
    assert await client.load("throttled", VERSION) == b"data"


async def test_retry_after_as_http_date(rig: Rig) -> None:
    when = formatdate(time.time() + 2, usegmt=True)
    rig.faults.add(
        f.twirp_error(429, "resource_exhausted", "later", **{"Retry-After": when}),
        path="GetCacheEntryDownloadURL",
    )
    start = time.monotonic()
    assert await rig.client("v2").lookup("k", VERSION) is None
    assert 0.5 <= time.monotonic() - start < 5


async def test_503_then_success(rig: Rig, protocol: ProtocolName) -> None:
    method, path = LOOKUP[protocol]
    rig.faults.add(api_error(protocol, 503, "busy"), method=method, path=path, times=2)
    client = rig.client(protocol)
    await client.save("k", VERSION, b"v")
    entry = await client.lookup("k", VERSION)
    assert entry is not None and entry.key == "k"
    assert rig.faults.count(method, path) == 3


async def test_connection_dropped_mid_block_is_resent(rig: Rig, protocol: ProtocolName) -> None:
    if protocol == "v2":
        rig.faults.add(f.drop_mid_body(100_000), method="PUT", query="comp=block", times=2)
    else:
        rig.faults.add(f.drop_mid_body(100_000), method="PATCH", times=2)
    client = rig.client(protocol, **SMALL)
    data = os.urandom(MiB + 77)
    await client.save("dropped", VERSION, data)
    assert await client.load("dropped", VERSION) == data
    sent = rig.faults.count_in("PUT" if protocol == "v2" else "PATCH", "/")
    assert sent >= 5 + 2  # five blocks, two of them sent twice


async def test_download_resumes_after_a_dropped_connection(rig: Rig) -> None:
    client = rig.client("v2")
    data = os.urandom(3 * MiB)
    await client.save("resume", VERSION, data)

    async def half_then_drop(request: web.Request, handler: f.Handler) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": str(len(data))})
        await resp.prepare(request)
        await resp.write(data[: MiB + 5])
        assert request.transport is not None
        request.transport.abort()
        return resp

    rig.faults.add(half_then_drop, method="GET", path="/entries/")
    entry = await client.lookup("resume", VERSION)
    assert entry is not None
    async with await client.open(entry) as reader:
        assert await reader.read_all() == data
    assert rig.faults.count_in("GET", "/entries/") == 2  # the second asked for the rest only


async def test_deadline_gives_a_clear_timeout_error(rig: Rig) -> None:
    rig.faults.add(f.twirp_error(503, "unavailable", "down for maintenance"), times=-1)
    client = rig.client("v2", retry=RetrySettings(timeout_s=1.0, base_delay_s=0.1, max_delay_s=0.3))
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded) as info:
        await client.lookup("k", VERSION)
    assert time.monotonic() - start < 3
    assert isinstance(info.value, TimeoutError)
    assert "deadline" in str(info.value) and "down for maintenance" in str(info.value)


async def test_deadline_passing_mid_attempt_still_names_the_last_error(rig: Rig) -> None:
    """A slow machine can put the deadline inside a retry, not between two: the error then
    still says what the earlier attempts ran into."""
    rig.faults.add(f.twirp_error(503, "unavailable", "down for maintenance"))
    rig.faults.add(f.delay(5))  # the retry hangs past the 1 s deadline
    client = rig.client("v2", retry=RetrySettings(timeout_s=1.0, base_delay_s=0.1, max_delay_s=0.1))
    with pytest.raises(DeadlineExceeded) as info:
        await client.lookup("k", VERSION)
    message = str(info.value)
    assert "deadline passed" in message and "2 attempt(s)" in message
    assert "down for maintenance" in message


async def test_retry_after_past_the_deadline_fails_at_once(rig: Rig) -> None:
    rig.faults.add(
        f.twirp_error(429, "resource_exhausted", "come back later", **{"Retry-After": "60"}),
        times=-1,
    )
    client = rig.client("v2", retry=RetrySettings(timeout_s=5.0))
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="come back later"):
        await client.lookup("k", VERSION)
    assert time.monotonic() - start < 2  # no point waiting for a retry that cannot happen


async def test_a_hung_server_hits_the_deadline(rig: Rig) -> None:
    rig.faults.add(f.delay(2.5), times=-1)
    client = rig.client("v2", retry=RetrySettings(timeout_s=1.0))
    start = time.monotonic()
    with pytest.raises(DeadlineExceeded):
        await client.lookup("k", VERSION)
    assert time.monotonic() - start < 3


async def test_a_throttled_client_does_not_delay_another(rig: Rig) -> None:
    token_a = rig.server.token("octo/a")
    token_b = rig.server.token("octo/b")
    throttle = f.twirp_error(429, "resource_exhausted", "slow down", **{"Retry-After": "3"})
    throttled = asyncio.Event()

    async def throttle_a(request: web.Request, handler: f.Handler) -> web.StreamResponse:
        throttled.set()
        return await throttle(request, handler)

    rig.faults.add(
        throttle_a,
        path="CreateCacheEntry",
        match=lambda r: r.headers.get("Authorization") == f"Bearer {token_a}",
    )
    client_a = rig.client("v2", token=token_a)
    client_b = rig.client("v2", token=token_b)
    finished: list[str] = []

    async def save(name: str, client: CacheClient) -> float:
        start = time.monotonic()
        await client.save(f"key-{name}", VERSION, name.encode())
        finished.append(name)
        return time.monotonic() - start

    task_a = asyncio.create_task(save("a", client_a))
    await throttled.wait()  # A is now backing off for 3 s
    b_seconds = await save("b", client_b)
    assert await client_b.load("key-b", VERSION) == b"b"
    a_seconds = await task_a
    assert finished == ["b", "a"]
    assert b_seconds < 1.5 and a_seconds >= 2.5, (a_seconds, b_seconds)


@pytest.mark.parametrize(
    ("protocol", "action", "message"),
    [
        ("v2", f.twirp_error(403, "permission_denied", "twirp says no"), "twirp says no"),
        ("v1", f.vss_error(400, "vss says no", "ArgumentException"), "vss says no"),
    ],
)
async def test_api_error_messages_surface(
    rig: Rig, protocol: ProtocolName, action: f.Action, message: str
) -> None:
    rig.faults.add(action, method=RESERVE[protocol][0], path=RESERVE[protocol][1])
    with pytest.raises(ServerError) as info:
        await rig.client(protocol).save("k", VERSION, b"x")
    assert message in str(info.value)
    assert info.value.status in (400, 403) and not isinstance(info.value, RemoteEntryExists)


async def test_azure_error_message_surfaces(rig: Rig) -> None:
    rig.faults.add(
        f.azure_error(400, "InvalidBlobOrBlock", "The specified blob or block content is invalid."),
        method="PUT",
    )
    with pytest.raises(ServerError, match="The specified blob or block content is invalid"):
        await rig.client("v2").save("k", VERSION, b"x")


async def test_real_server_refusal_message_surfaces(rig: Rig, protocol: ProtocolName) -> None:
    read_only = rig.server.token("octo/repo", "refs/heads/main:r")
    with pytest.raises(ServerError, match="cache write denied") as info:
        await rig.client(protocol, token=read_only).save("k", VERSION, b"x")
    assert info.value.status == 403


async def test_expired_signed_url_is_re_signed_once(rig: Rig, protocol: ProtocolName) -> None:
    token = rig.server.token(ttl_s=10 * 3600)
    client = rig.client(protocol, token=token)
    data = os.urandom(1000)
    await client.save("signed", VERSION, data)
    entry = await client.lookup("signed", VERSION)
    assert entry is not None
    reader = await client.open(entry)
    method, path = LOOKUP[protocol]
    lookups = rig.faults.count(method, path)
    rig.server.clock.advance(2 * 3600)  # past the URL's lifetime (url_ttl = 1 h)
    assert await reader.read_at(0, 1000) == data
    assert rig.faults.count(method, path) == lookups + 1
    assert await reader.read_at(500, 10) == data[500:510]  # the fresh URL is kept
    assert rig.faults.count(method, path) == lookups + 1


async def test_a_blob_that_keeps_refusing_fails_after_one_re_sign(rig: Rig) -> None:
    client = rig.client("v2")
    await client.save("refused", VERSION, b"bytes")
    entry = await client.lookup("refused", VERSION)
    assert entry is not None
    rig.faults.add(
        f.azure_error(403, "AuthenticationFailed", "sig mismatch"), path="/entries/", times=-1
    )
    with pytest.raises(ServerError, match="AuthenticationFailed") as info:
        await client.open(entry)  # HEAD: Azure's code comes in x-ms-error-code
    assert info.value.status == 403
    assert rig.faults.count("POST", "GetCacheEntryDownloadURL") == 2
    rig.faults.rules.clear()
    reader = await client.open(entry)
    rig.faults.add(
        f.azure_error(403, "AuthenticationFailed", "sig mismatch"), path="/entries/", times=-1
    )
    with pytest.raises(ServerError, match="sig mismatch"):
        await reader.read_at(0, 5)  # GET: the XML body's message
    assert rig.faults.count("POST", "GetCacheEntryDownloadURL") == 3  # one more re-sign
