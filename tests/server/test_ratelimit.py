"""The per-repository creation rate limit (like GitHub's 200 uploads/min/repo), over HTTP.

Over the limit, creating an entry answers 429 with ``Retry-After`` in the protocol's own
error shape (Twirp ``resource_exhausted`` on v2, a VSS body on v1); after waiting that long
(the injected clock advances, nothing sleeps) the same request succeeds.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ghacache.errors import RateLimited
from ghacache.server.ratelimit import CreationRateLimiter
from tests.conftest import Clock, ServerHandle, start_server
from tests.support import wire

LIMIT = 3


@pytest.fixture
async def limited(tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    handle, runner = await start_server(tmp_path, clock, rate_limit=str(LIMIT))
    try:
        yield handle
    finally:
        await runner.cleanup()


async def create_v2(
    http: aiohttp.ClientSession, srv: ServerHandle, key: str, repo: str = "octo/repo"
) -> tuple[int, Any, str | None]:
    async with http.post(
        srv.url + wire.TWIRP + "CreateCacheEntry",
        json={"key": key, "version": wire.VERSION},
        headers=wire.auth(srv.token(repo)),
    ) as r:
        return r.status, await r.json(content_type=None), r.headers.get("Retry-After")


async def create_v1(
    http: aiohttp.ClientSession, srv: ServerHandle, key: str, repo: str = "octo/repo"
) -> tuple[int, Any, str | None]:
    async with http.post(
        srv.url + wire.V1 + "caches",
        json={"key": key, "version": wire.VERSION},
        headers={
            **wire.auth(srv.token(repo)),
            "Accept": "application/json;api-version=6.0-preview.1",
        },
    ) as r:
        return r.status, await r.json(content_type=None), r.headers.get("Retry-After")


def assert_twirp_429(status: int, body: Any) -> None:
    assert status == 429
    assert set(body) == {"code", "msg"}
    assert body["code"] == "resource_exhausted"
    assert "rate limit" in body["msg"]


def assert_v1_429(status: int, body: Any) -> None:
    assert status == 429
    assert body["typeKey"] == "RequestBlockedException"
    assert body["typeName"].startswith("GitHub.Services.Cache.RequestBlockedException")
    assert "rate limit" in body["message"]


async def test_v2_429_with_retry_after_then_success_after_waiting(
    limited: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    for i in range(LIMIT):
        status, body, retry = await create_v2(http, limited, f"k{i}")
        assert status == 200 and body["ok"] and retry is None
    status, body, retry = await create_v2(http, limited, "over")
    assert_twirp_429(status, body)
    assert retry == "60"  # all three creations happened at this instant

    clock.advance(59)
    status, body, retry = await create_v2(http, limited, "over")
    assert_twirp_429(status, body)
    assert retry == "1"
    clock.advance(1)
    status, body, retry = await create_v2(http, limited, "over")
    assert status == 200 and body["ok"], body
    # The refused attempts reserved nothing: the entry can be uploaded and finalized.
    assert await wire.put_blob(http, body["signed_upload_url"], b"late") == 201
    status, out = await wire.twirp(
        http,
        limited.url,
        "FinalizeCacheEntryUpload",
        {"key": "over", "version": wire.VERSION, "size_bytes": "4"},
        limited.token(),
    )
    assert status == 200 and out["ok"]


async def test_v1_429_with_retry_after_then_success_after_waiting(
    limited: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    for i in range(LIMIT):
        status, body, _ = await create_v1(http, limited, f"k{i}")
        assert status == 201 and body["cacheId"] > 0
    status, body, retry = await create_v1(http, limited, "over")
    assert_v1_429(status, body)
    assert retry is not None and int(retry) == 60
    clock.advance(int(retry))
    status, body, retry = await create_v1(http, limited, "over")
    assert status == 201 and retry is None, body
    cache_id = int(body["cacheId"])
    assert await wire.v1_patch(http, limited.url, limited.token(), cache_id, 0, b"abc") == 204
    status, _ = await wire.v1_commit(http, limited.url, limited.token(), cache_id, 3)
    assert status == 204


async def test_sliding_window_retry_after_counts_from_the_oldest_creation(
    limited: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    for i in range(LIMIT):  # at t, t+20, t+40
        assert (await create_v2(http, limited, f"s{i}"))[0] == 200
        clock.advance(20)
    clock.advance(-10)  # t+50
    status, body, retry = await create_v2(http, limited, "s-over")
    assert_twirp_429(status, body)
    assert retry == "10"  # the creation at t leaves the window at t+60
    clock.advance(10)
    assert (await create_v2(http, limited, "s-over"))[0] == 200
    status, _, retry = await create_v2(http, limited, "s-next")
    assert status == 429 and retry == "20"  # now the creation at t+20 is the oldest


async def test_both_protocols_share_one_limit_per_repository(
    limited: ServerHandle, http: aiohttp.ClientSession
) -> None:
    assert (await create_v2(http, limited, "a"))[0] == 200
    assert (await create_v1(http, limited, "b"))[0] == 201
    assert (await create_v2(http, limited, "c"))[0] == 200
    status, body, retry = await create_v1(http, limited, "d")
    assert_v1_429(status, body)
    assert retry == "60"
    status, body, _ = await create_v2(http, limited, "d")
    assert_twirp_429(status, body)


async def test_repositories_are_limited_independently(
    limited: ServerHandle, http: aiohttp.ClientSession, clock: Clock
) -> None:
    for i in range(LIMIT):
        assert (await create_v2(http, limited, f"k{i}", "octo/busy"))[0] == 200
    assert (await create_v2(http, limited, "k9", "octo/busy"))[0] == 429
    # Another repository (same keys, same instant) has its own full allowance.
    for i in range(LIMIT):
        assert (await create_v2(http, limited, f"k{i}", "octo/calm"))[0] == 200
        assert (await create_v1(http, limited, f"v1-{i}", "other/repo"))[0] == 201
    assert (await create_v2(http, limited, "k9", "octo/calm"))[0] == 429
    assert (await create_v1(http, limited, "v1-9", "other/repo"))[0] == 429


async def test_only_creations_are_limited(
    limited: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = limited.token()
    for i in range(LIMIT - 1):
        await wire.v2_save(http, limited.url, token, f"saved-{i}", b"data")
    status, body = await wire.twirp(
        http, limited.url, "CreateCacheEntry", {"key": "last", "version": wire.VERSION}, token
    )
    assert status == 200
    assert (await create_v2(http, limited, "refused"))[0] == 429
    # Uploading, finalizing, looking up and downloading all go on at the limit.
    assert await wire.put_blob(http, body["signed_upload_url"], b"xyz") == 201
    status, out = await wire.twirp(
        http,
        limited.url,
        "FinalizeCacheEntryUpload",
        {"key": "last", "version": wire.VERSION, "size_bytes": "3"},
        token,
    )
    assert status == 200 and out["ok"]
    for _ in range(10):
        found = await wire.v2_lookup(http, limited.url, token, "last")
        assert found["ok"]
        status, data, _ = await wire.download(http, found["signed_download_url"])
        assert (status, data) == (200, b"xyz")
        status, hit = await wire.v1_lookup(http, limited.url, token, ["saved-0"])
        assert status == 200 and hit is not None
    assert (await create_v1(http, limited, "refused"))[0] == 429


async def test_off_by_default(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    assert server.config.rate_limit == 0
    # More than GitHub's 200 per minute, all at the same instant.
    for i in range(205):
        create = create_v2 if i % 2 else create_v1
        status, _, retry = await create(http, server, f"free-{i}")
        assert status in (200, 201) and retry is None, i


def test_retry_after_is_exact_for_any_start_time() -> None:
    # Waiting Retry-After seconds is always enough and a second less never is, whatever the
    # (float) clock reads. The limiter itself, driven by a plain settable clock.
    rng = random.Random(7)
    for _ in range(500):
        clock = Clock()
        clock.t = rng.uniform(1e6, 4e9)
        limiter = CreationRateLimiter(2, now=clock)
        limiter.acquire("r")
        first = rng.uniform(0, 59)
        clock.advance(first)
        limiter.acquire("r")
        clock.advance(rng.uniform(0, 59 - first))
        with pytest.raises(RateLimited) as refused:
            limiter.acquire("r")
        retry = refused.value.retry_after_s
        assert 1 <= retry <= 60
        if retry > 1:
            clock.advance(retry - 1)
            with pytest.raises(RateLimited):
                limiter.acquire("r")
            clock.advance(1)
        else:
            clock.advance(retry)
        limiter.acquire("r")
