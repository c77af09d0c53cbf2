"""Upload sources and the bounded parallel block driver.

A source is bytes, a file path, or a stream of known size. Files and bytes are random access:
each block is streamed by the task that sends it, read as it goes (``os.pread`` in a thread,
STREAM_READ_BYTES at a time), so a block costs one read's memory however large it is.
Streams are read in order by one producer, and at most ``concurrency`` of their blocks are in
memory: a slot is taken before a block is read and given back once it is sent.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeAlias, runtime_checkable

Buffer: TypeAlias = bytes | bytearray | memoryview
ProgressFn: TypeAlias = Callable[[int, int], None]
"""Called with (bytes done, bytes total) as a transfer advances."""


@runtime_checkable
class AsyncReadable(Protocol):
    """Anything with ``async read(n)`` (``asyncio.StreamReader``, aiohttp's ``StreamReader``)."""

    async def read(self, n: int = -1) -> bytes: ...


Source: TypeAlias = Buffer | str | os.PathLike[str] | AsyncIterable[bytes] | AsyncReadable
"""What ``save`` accepts: bytes, a file path, or a stream (then ``size=`` is required)."""


# A streamed body is read this much at a time (one thread hop each: 256 KiB reads spent a
# third of the client's CPU hopping) and handed to the connection in slices of
# _http.SEND_SLICE_BYTES (see there for why).
STREAM_READ_BYTES = 4 * 1024 * 1024
STREAM_PIECE_BYTES = 256 * 1024


@dataclass(frozen=True)
class StreamBody:
    """A request body sent piece by piece; ``open`` starts it afresh for every attempt."""

    length: int
    open: Callable[[], AsyncIterator[Buffer]]


class BlockSource:
    """Bytes to upload, ``size`` long; random access or strictly sequential."""

    size: int
    random_access: bool

    async def read_at(self, offset: int, n: int) -> Buffer:
        raise NotImplementedError

    def body(self, offset: int, n: int, progress: ProgressFn | None = None) -> StreamBody:
        """``[offset, offset + n)`` as a streamed body (random-access sources only).

        Memory stays at one read (STREAM_READ_BYTES) however long the range is. ``progress``
        hears of each piece handed to the connection (a retried attempt starts again from 0).
        """

        async def pieces() -> AsyncIterator[Buffer]:
            end = offset + n
            for start in range(offset, end, STREAM_READ_BYTES):
                view = memoryview(await self.read_at(start, min(STREAM_READ_BYTES, end - start)))
                for at in range(0, len(view), STREAM_PIECE_BYTES):
                    yield view[at : at + STREAM_PIECE_BYTES]
                    if progress is not None:
                        progress(start + min(at + STREAM_PIECE_BYTES, len(view)) - offset, n)

        return StreamBody(n, pieces)

    async def read_next(self, n: int) -> Buffer:
        raise NotImplementedError

    def close(self) -> None:
        """Release the file, if any."""


class _BytesSource(BlockSource):
    random_access = True

    def __init__(self, data: Buffer) -> None:
        self._view = memoryview(data).cast("B")
        self.size = len(self._view)

    async def read_at(self, offset: int, n: int) -> Buffer:
        return self._view[offset : offset + n]  # zero-copy: aiohttp sends memoryviews


class _FileSource(BlockSource):
    random_access = True

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self.size = os.fstat(self._fd).st_size
        self.path = Path(path)

    def _pread(self, offset: int, n: int) -> bytes:
        parts: list[bytes] = []
        while n > 0:
            piece = os.pread(self._fd, n, offset)
            if not piece:
                raise ValueError(f"{self.path} shrank while it was being uploaded")
            parts.append(piece)
            offset += len(piece)
            n -= len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def read_at(self, offset: int, n: int) -> Buffer:
        return await asyncio.to_thread(self._pread, offset, n)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _StreamSource(BlockSource):
    random_access = False

    def __init__(self, stream: AsyncIterable[bytes] | AsyncReadable, size: int) -> None:
        self.size = size
        self._chunks: AsyncIterator[bytes] | None = None
        self._reader: AsyncReadable | None = None
        if isinstance(stream, AsyncReadable):
            self._reader = stream
        else:
            self._chunks = aiter(stream)
        self._left = b""
        self._consumed = 0

    async def _more(self, n: int) -> bytes:
        if self._reader is not None:
            return await self._reader.read(n)
        assert self._chunks is not None
        return await anext(self._chunks, b"")

    async def read_next(self, n: int) -> Buffer:
        buf = bytearray(self._left[:n])
        self._left = self._left[n:]
        while len(buf) < n:
            piece = await self._more(n - len(buf))
            if not piece:
                raise ValueError(
                    f"stream ended after {self._consumed + len(buf)} bytes; size says {self.size}"
                )
            take = n - len(buf)
            buf += piece[:take]
            self._left = piece[take:]
        self._consumed += n
        if self._consumed == self.size and (self._left or await self._more(1)):
            raise ValueError(f"stream is longer than the {self.size} bytes size says")
        return buf


def open_source(source: Source, size: int | None = None) -> BlockSource:
    """Wrap what the caller passed to ``save``.

    Raises:
        TypeError: an unsupported type.
        ValueError: a stream without ``size``, or a ``size`` that contradicts bytes or a file.
    """
    opened: BlockSource
    if isinstance(source, bytes | bytearray | memoryview):
        opened = _BytesSource(source)
    elif isinstance(source, str | os.PathLike):
        opened = _FileSource(source)
    elif isinstance(source, AsyncReadable | AsyncIterable):
        if size is None or size < 0:
            raise ValueError("saving a stream needs its size: pass size=")
        return _StreamSource(source, size)
    else:
        raise TypeError(f"cannot upload a {type(source).__name__}; pass bytes, a path or a stream")
    if size is not None and size != opened.size:
        opened.close()
        raise ValueError(f"size={size} but the source holds {opened.size} bytes")
    return opened


async def for_each_block(
    source: BlockSource,
    block_bytes: int,
    concurrency: int,
    send: Callable[[int, int, Buffer | StreamBody], Awaitable[None]],
    progress: ProgressFn | None = None,
) -> int:
    """Call ``send(index, offset, data)`` for every block, ``concurrency`` at a time.

    Returns:
        The number of blocks sent.

    Raises:
        Exception: the first failure of a read or a ``send``; the other blocks are cancelled.
    """
    total = source.size
    count = (total + block_bytes - 1) // block_bytes
    slots = asyncio.Semaphore(concurrency)
    done = 0
    pending: set[asyncio.Task[None]] = set()

    async def one(index: int, offset: int, length: int, data: Buffer | None) -> None:
        nonlocal done
        try:
            await send(index, offset, source.body(offset, length) if data is None else data)
            done += length
            if progress is not None:
                progress(done, total)
        finally:
            slots.release()

    def reap(tasks: set[asyncio.Task[None]]) -> None:
        for task in [t for t in tasks if t.done()]:
            pending.discard(task)
            error = task.exception()
            if error is not None:
                raise error

    try:
        for index in range(count):
            await slots.acquire()
            reap(pending)
            offset = index * block_bytes
            length = min(block_bytes, total - offset)
            data = None if source.random_access else await source.read_next(length)
            pending.add(asyncio.create_task(one(index, offset, length, data)))
        while pending:
            finished, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
            reap(finished)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    return count
