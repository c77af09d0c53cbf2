"""Byte streams and shortcuts for driving a ``BlobStore`` in tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable

from ghacache.storage import BlobStore

MiB = 1024 * 1024


def data(n: int, seed: int = 0) -> bytes:
    """Deterministic bytes with a 251-byte period shifted by ``seed``: misplaced bytes show."""
    block = bytes((i * 7 + seed * 31) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


async def stream(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


async def failing_stream(parts: Iterable[bytes], exc: BaseException) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise exc


async def read_all(store: BlobStore, blob: str, start: int, length: int) -> bytes:
    return b"".join([chunk async for chunk in store.read(blob, start, length)])


async def publish_bytes(store: BlobStore, upload: str, blob: str, payload: bytes) -> None:
    await store.write_part(upload, "p", stream([payload]), max_bytes=len(payload))
    await store.assemble(upload, ["p"])
    await store.publish(upload, blob)
