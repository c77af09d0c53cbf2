"""Save, look up and read back through the real server, on both protocols.

Small sizes run with 256 KiB blocks and a 256 KiB single-request limit so that 1 MiB - 1 and
1 MiB take the multi-block path (a short last block, and exact blocks), while 0 and 1 byte
take the single-request path.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from ghacache.client import CacheClient, SyncCacheClient
from ghacache.errors import ClientError, EntryExists, RemoteEntryExists
from tests.client.conftest import VERSION, MakeClient, MiB, ProtocolName, config_for
from tests.conftest import ServerHandle

SMALL = {"block_bytes": 256 * 1024, "single_put_bytes": 256 * 1024, "concurrency": 3}


def small_client(make_client: MakeClient, protocol: ProtocolName) -> CacheClient:
    return make_client(protocol, **SMALL)


@pytest.mark.parametrize("size", [0, 1, MiB - 1, MiB], ids=["0B", "1B", "1MiB-1", "1MiB"])
async def test_bytes_round_trip(make_client: MakeClient, protocol: ProtocolName, size: int) -> None:
    client = small_client(make_client, protocol)
    data = os.urandom(size)
    entry_id = await client.save(f"rt-{size}", VERSION, data)
    assert entry_id > 0
    entry = await client.lookup(f"rt-{size}", VERSION)
    assert entry is not None and entry.key == f"rt-{size}" and entry.protocol == protocol
    async with await client.open(entry) as reader:
        assert reader.size == size
        assert await reader.read_all() == data
        assert await reader.read_at(size, 10) == b""  # at the end: no request, no 416
        if size:
            assert await reader.read_at(size - 1, 10) == data[-1:]


async def test_default_settings_round_trip(make_client: MakeClient, protocol: ProtocolName) -> None:
    client = make_client(protocol)
    data = os.urandom(3 * MiB + 7)
    await client.save("default", VERSION, data)
    assert await client.load("default", VERSION) == data


async def test_ranged_reads_at_arbitrary_offsets(
    make_client: MakeClient, protocol: ProtocolName
) -> None:
    client = small_client(make_client, protocol)
    data = os.urandom(MiB + 12345)
    await client.save("ranges", VERSION, data)
    entry = await client.lookup("ranges", VERSION)
    assert entry is not None
    rng = random.Random(7)
    reads = [(0, 1), (0, len(data)), (len(data) - 1, 1), (262143, 2), (262144, 262144)]
    reads += [(rng.randrange(len(data)), rng.randrange(1, 300_000)) for _ in range(20)]
    reads += [(len(data) - 5, 100), (len(data), 1), (len(data) + 10, 1)]
    async with await client.open(entry) as reader:
        for offset, n in reads:
            assert await reader.read_at(offset, n) == data[offset : offset + n], (offset, n)


async def test_sequential_reads_continue_one_stream(
    make_client: MakeClient, protocol: ProtocolName
) -> None:
    client = small_client(make_client, protocol)
    data = os.urandom(2 * MiB + 3)
    await client.save("seq", VERSION, data)
    entry = await client.lookup("seq", VERSION)
    assert entry is not None
    async with await client.open(entry) as reader:
        pieces, offset = [], 0
        while piece := await reader.read_at(offset, 100_000):
            pieces.append(piece)
            offset += len(piece)
        assert b"".join(pieces) == data
        chunks = [c async for c in reader.iter_chunks(chunk_bytes=64 * 1024)]
        assert b"".join(chunks) == data
        assert max(len(c) for c in chunks) <= 64 * 1024
        tail = [c async for c in reader.iter_chunks(MiB, MiB + 1000)]
        assert b"".join(tail) == data[MiB : MiB + 1000]


async def test_lookup_prefix_semantics(make_client: MakeClient, protocol: ProtocolName) -> None:
    client = make_client(protocol)
    for key in ("deps-1", "deps-12", "other"):
        await client.save(key, VERSION, key.encode())
        await asyncio.sleep(0.01)  # distinct creation times

    async def matched(*keys: str) -> str | None:
        entry = await client.lookup(list(keys), VERSION)
        return None if entry is None else entry.key

    assert await matched("deps-1") == "deps-1"  # an exact match beats a newer prefix match
    assert await matched("deps-") == "deps-12"  # the newest entry with the prefix
    assert await matched("dep") == "deps-12"
    assert await matched("nothing", "deps-1") == "deps-1"  # restore keys in order
    assert await matched("nothing", "oth") == "other"
    assert await matched("nothing") is None
    assert await client.lookup("deps-1", "another-version") is None


async def test_saving_an_existing_key_is_entry_exists(
    make_client: MakeClient, protocol: ProtocolName
) -> None:
    client = make_client(protocol)
    await client.save("once", VERSION, b"first")
    with pytest.raises(RemoteEntryExists) as info:
        await client.save("once", VERSION, b"second")
    assert isinstance(info.value, EntryExists) and isinstance(info.value, ClientError)
    assert info.value.status == 409
    assert "already exists" in str(info.value)  # the server's own words
    assert await client.load("once", VERSION) == b"first"


async def test_stream_sources(make_client: MakeClient, protocol: ProtocolName) -> None:
    client = small_client(make_client, protocol)
    data = os.urandom(MiB + 99)

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 70_000):
            yield data[i : i + 70_000]

    await client.save("stream", VERSION, chunks(), size=len(data))
    assert await client.load("stream", VERSION) == data

    reader = asyncio.StreamReader()
    reader.feed_data(data[:1000])
    reader.feed_eof()
    await client.save("reader", VERSION, reader, size=1000)
    assert await client.load("reader", VERSION) == data[:1000]

    with pytest.raises(ValueError, match="size"):
        await client.save("no-size", VERSION, chunks())
    with pytest.raises(ValueError, match="ended after"):
        await client.save("short", VERSION, chunks(), size=len(data) + 1)


async def test_invalid_keys_are_value_errors(make_client: MakeClient) -> None:
    client = make_client("v2")
    with pytest.raises(ValueError, match="commas"):
        await client.lookup("a,b", VERSION)
    with pytest.raises(ValueError, match="at most 10"):
        await client.lookup([f"k{i}" for i in range(11)], VERSION)
    with pytest.raises(ValueError, match="512"):
        await client.save("x" * 513, VERSION, b"")


async def test_progress_reports_every_byte(make_client: MakeClient, protocol: ProtocolName) -> None:
    client = small_client(make_client, protocol)
    data = os.urandom(MiB + 1)
    calls: list[tuple[int, int]] = []
    await client.save("progress", VERSION, data, progress=lambda d, t: calls.append((d, t)))
    assert calls[-1] == (len(data), len(data))
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    entry = await client.lookup("progress", VERSION)
    assert entry is not None
    down: list[tuple[int, int]] = []
    reader = await client.open(entry)
    await reader.download_to(os.devnull, progress=lambda d, t: down.append((d, t)))
    assert down[-1] == (len(data), len(data))


async def test_sync_facade(server: ServerHandle, tmp_path: Path, protocol: ProtocolName) -> None:
    config = config_for(server.url, server.token(), protocol, **SMALL)
    source = tmp_path / "src.bin"
    source.write_bytes(os.urandom(MiB + 5))

    def script() -> None:  # a blocking script, as users write them
        with SyncCacheClient(config) as client:
            client.save("sync", VERSION, source)
            entry = client.lookup(["nope", "sy"], VERSION)
            assert entry is not None and entry.key == "sync"
            with client.open(entry) as reader:
                assert reader.read_at(10, 20) == source.read_bytes()[10:30]
                assert b"".join(reader.iter_chunks(chunk_bytes=100_000)) == source.read_bytes()
                reader.download_to(tmp_path / "out.bin")
            assert client.save_mutable("m", VERSION, lambda old: b"v1") == "m#1"
            assert client.load("m#", VERSION) == b"v1"

    await asyncio.to_thread(script)  # the server runs in this loop, the script in a thread
    assert (tmp_path / "out.bin").read_bytes() == source.read_bytes()


def _write_random(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            piece = os.urandom(min(left, 8 * MiB))
            digest.update(piece)
            f.write(piece)
            left -= len(piece)
    return digest.hexdigest()


class PeakRss:
    """Samples this process's RSS while a transfer runs (the server shares the process)."""

    def __init__(self) -> None:
        self.proc = psutil.Process()
        self.start = self.proc.memory_info().rss
        self.peak = self.start
        self._task: asyncio.Task[None] | None = None

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> PeakRss:
        self._task = asyncio.create_task(self._sample())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.start) / MiB


@pytest.mark.slow
@pytest.mark.parametrize("single_put_mib", [0, 512], ids=["blocks", "single-put"])
async def test_large_file_round_trip_in_bounded_memory(
    make_client: MakeClient, protocol: ProtocolName, tmp_path: Path, single_put_mib: int
) -> None:
    size = 200 * MiB + 12345
    source = tmp_path / "big.bin"
    digest = _write_random(source, size)
    client = make_client(protocol, single_put_bytes=single_put_mib * MiB)
    async with PeakRss() as rss:
        await client.save("big", VERSION, source)
    # Blocks in flight (4 x 8 MiB by default) plus the in-process server's buffers.
    assert rss.growth_mib < 120, f"RSS grew by {rss.growth_mib:.0f} MiB"

    entry = await client.lookup("big", VERSION)
    assert entry is not None
    out = tmp_path / "out.bin"
    async with await client.open(entry) as reader, PeakRss() as rss:
        assert reader.size == size
        assert await reader.download_to(out) == size
    assert rss.growth_mib < 120, f"RSS grew by {rss.growth_mib:.0f} MiB"
    assert hashlib.sha256(out.read_bytes()).hexdigest() == digest

    rng = random.Random(1)
    with source.open("rb") as f:
        async with await client.open(entry) as reader:
            for offset in [0, 8 * MiB - 1, size - 100] + [rng.randrange(size) for _ in range(8)]:
                f.seek(offset)
                assert await reader.read_at(offset, 300_000) == f.read(300_000), offset


def test_batches_are_written_whole_and_in_order(tmp_path: Path) -> None:
    from ghacache.client._reader import _write_all

    chunks = [b"", os.urandom(3), b"", os.urandom(MiB + 1), os.urandom(7), b""]
    # More pieces than one writev(2) takes (IOV_MAX is 1024), as a slow network delivers.
    chunks += [os.urandom(1 + i % 1400) for i in range(3000)]
    path = tmp_path / "out.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        _write_all(fd, chunks[:3])
        _write_all(fd, [])
        _write_all(fd, chunks[3:])
    finally:
        os.close(fd)
    assert path.read_bytes() == b"".join(chunks)
