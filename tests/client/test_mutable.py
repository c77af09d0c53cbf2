"""``save_mutable``: the ``base#N`` protocol under concurrency, failures and crashed writers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ghacache.client import CacheClient
from ghacache.errors import ServerError
from tests.client.conftest import FAST_RETRY, VERSION, MakeClient, ProtocolName, config_for
from tests.conftest import Clock, ServerHandle, start_server
from tests.support import faults as f

FAST = {"max_wait_s": 10.0, "retry_interval_s": 0.05}


async def test_concurrent_writers_get_consecutive_generations(
    make_client: MakeClient, protocol: ProtocolName
) -> None:
    seen: list[bytes | None] = []
    both_computed = asyncio.Barrier(2)

    def writer(name: bytes) -> object:
        first = True

        async def fn(old: bytes | None) -> bytes:
            nonlocal first
            seen.append(old)
            if first:  # both compute from "nothing" and race for #1
                first = False
                await both_computed.wait()
            return name if old is None else old + b"+" + name

        return fn

    a, b = make_client(protocol), make_client(protocol)
    keys = await asyncio.gather(
        a.save_mutable("idx", VERSION, writer(b"a"), **FAST),  # type: ignore[arg-type]
        b.save_mutable("idx", VERSION, writer(b"b"), **FAST),  # type: ignore[arg-type]
    )
    assert sorted(keys) == ["idx#1", "idx#2"]
    first_value = await a.load("idx#1", VERSION)
    second_value = await a.load("idx#2", VERSION)
    assert first_value in (b"a", b"b")
    # The loser started over and built on the winner's value.
    assert second_value == first_value + b"+" + (b"b" if first_value == b"a" else b"a")
    assert seen.count(None) >= 2 and first_value in seen
    newest = await a.lookup("idx", VERSION)
    assert newest is not None and newest.key == "idx#2"
    assert await a.save_mutable("idx", VERSION, lambda old: b"third", **FAST) == "idx#3"


async def test_a_stuck_number_is_skipped_after_the_bounded_wait(
    server: ServerHandle, make_client: MakeClient, protocol: ProtocolName
) -> None:
    client = make_client(protocol)
    assert await client.save_mutable("base", VERSION, lambda old: b"one") == "base#1"
    # A writer reserves #2 and crashes before uploading: the reservation stays.
    crashed = make_client(protocol)
    _, api = crashed._connect()
    await api.reserve("base#2", VERSION, 3)

    start = time.monotonic()
    key = await client.save_mutable(
        "base", VERSION, lambda old: (old or b"") + b"+three", max_wait_s=0.3, retry_interval_s=0.1
    )
    assert key == "base#3"
    assert 0.3 <= time.monotonic() - start < 5
    assert await client.load("base", VERSION) == b"one+three"


async def test_the_value_function_may_be_plain_or_async(make_client: MakeClient) -> None:
    client = make_client("v2")

    async def bump(old: bytes | None) -> bytes:
        return str(int(old or b"0") + 1).encode()

    assert await client.save_mutable("n", VERSION, bump) == "n#1"
    assert await client.save_mutable("n", VERSION, bump) == "n#2"
    assert await client.load("n#", VERSION) == b"2"
    with pytest.raises(TypeError, match="bytes"):
        await client.save_mutable("n", VERSION, lambda old: "text")  # type: ignore[arg-type,return-value]


@pytest.fixture
async def faulty(tmp_path: Path, clock: Clock) -> AsyncIterator[tuple[ServerHandle, f.Faults]]:
    faults = f.Faults()
    handle, runner = await start_server(tmp_path, clock, middlewares=[faults.middleware])
    try:
        yield handle, faults
    finally:
        await runner.cleanup()


async def test_a_failed_upload_is_an_error_not_a_silent_success(
    faulty: tuple[ServerHandle, f.Faults], protocol: ProtocolName
) -> None:
    server, faults = faulty
    method = "PUT" if protocol == "v2" else "PATCH"
    faults.add(f.azure_error(400, "InvalidInput", "upload rejected"), method=method, times=-1)
    async with CacheClient(config_for(server.url, server.token(), protocol, retry=FAST_RETRY)) as c:
        with pytest.raises(ServerError, match="upload rejected"):
            await c.save_mutable("idx", VERSION, lambda old: b"value", **FAST)
        assert await c.lookup("idx#", VERSION) is None  # no generation became visible
        assert await c.lookup("idx", VERSION) is None

        faults.rules.clear()
        # The failed writer's reservation of #1 is now a stuck number: skipped after the wait.
        key = await c.save_mutable(
            "idx", VERSION, lambda old: b"value", max_wait_s=0.2, retry_interval_s=0.1
        )
        assert key == "idx#2"
        assert await c.load("idx", VERSION) == b"value"
