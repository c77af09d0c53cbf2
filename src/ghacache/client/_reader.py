"""Reading an entry's bytes from its signed URL: ranged reads, streaming, resume, re-signing.

``read_at`` behaves like go-actions-cache's ReaderAt: one open response is kept, and a read
that starts where the previous one ended continues it; a read elsewhere opens a new
``Range: bytes=<offset>-`` request. A connection that drops mid-body is reopened at the
current offset. A 401/403 (an expired signed URL) is answered once per request by looking the
entry up again for a fresh URL; a 404 (evicted or deleted since the lookup) is
``RemoteEntryNotFound``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
from collections.abc import AsyncGenerator, Awaitable, Callable
from types import TracebackType

import aiohttp

from ghacache.client._blob import BLOB_HEADERS
from ghacache.client._http import Http, read_capped, server_error, transport_error
from ghacache.client._retry import Deadline, backoff_s, deadline_error, with_retries
from ghacache.client._source import ProgressFn
from ghacache.errors import InvalidResponse, RemoteEntryNotFound, ServerError

log = logging.getLogger("ghacache.client")

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
DEFAULT_CHUNK_BYTES = 1024 * 1024
# Bytes collected before ``download_to`` hands them to a thread to write.
WRITE_BATCH_BYTES = 8 * 1024 * 1024
# writev(2) takes at most IOV_MAX (1024 on Linux) buffers; a slow network delivers a batch
# in thousands of small pieces.
WRITEV_MAX_BUFFERS = 512
_IO_ERRORS = (aiohttp.ClientError, OSError, TimeoutError)


class _Stream:
    """One open ranged GET over ``[pos, end)``, reopened at ``pos`` when it breaks."""

    def __init__(self, reader: EntryReader, start: int, end: int) -> None:
        self.reader = reader
        self.pos = start
        self.end = end
        self._resp: aiohttp.ClientResponse | None = None
        self._breaks = 0

    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes from ``pos`` (fewer if the network delivers fewer); b"" at end."""
        while self.pos < self.end:
            if self._resp is None:
                self._resp = await self.reader._open(self.pos, self.end)
            try:
                data = await self._resp.content.read(min(n, self.end - self.pos))
            except _IO_ERRORS as exc:
                await self._broken(exc)
                continue
            if not data:
                await self._broken(None)
                continue
            self.pos += len(data)
            if self.pos >= self.end:  # fully read: the connection can go back to the pool
                self._resp.release()
                self._resp = None
            return data
        return b""

    async def _broken(self, exc: BaseException | None) -> None:
        self.close()
        self._breaks += 1
        retry = self.reader.http.retry
        what = f"download of {self.reader.key!r} at byte {self.pos}"
        if self._breaks >= retry.max_attempts:
            raise transport_error(exc or EOFError("body ended early"), what) from exc
        delay = backoff_s(self._breaks, retry, random.random)
        log.info("%s broke (%s); resuming in %.1f s", what, exc or "body ended early", delay)
        await asyncio.sleep(delay)

    def close(self) -> None:
        if self._resp is not None:
            self._resp.close()  # an unread body cannot go back to the pool
            self._resp = None


class EntryReader:
    """Random and sequential access to one cache entry's bytes. Get one from ``open``.

    Not safe for concurrent ``read_at`` calls on one reader's shared stream: they are
    serialised by a lock. Use :meth:`iter_chunks` (independent streams) for parallel reads.
    """

    def __init__(
        self,
        http: Http,
        *,
        key: str,
        url: str,
        size: int,
        resign: Callable[[], Awaitable[str]],
    ) -> None:
        self.http = http
        self.key = key
        self.size = size
        self._url = url
        self._resign = resign
        self._stream: _Stream | None = None
        self._lock = asyncio.Lock()

    async def __aenter__(self) -> EntryReader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Drop the open connection, if any (the reader stays usable)."""
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    async def read_at(self, offset: int, n: int) -> bytes:
        """``n`` bytes from ``offset`` (fewer only at the end of the entry; b"" past it).

        Raises:
            ValueError: a negative offset or size.
            ServerError: the blob store refused (after one re-signing on 401/403).
            TransportError: the network failed past the retries.
        """
        if offset < 0 or n < 0:
            raise ValueError("offset and n must not be negative")
        n = min(n, self.size - offset)
        if n <= 0:
            return b""  # never ask for bytes past the end: that is a 416
        async with self._lock:
            if self._stream is None or self._stream.pos != offset:
                self.close()
                self._stream = _Stream(self, offset, self.size)
            buf = bytearray()
            while len(buf) < n:
                piece = await self._stream.read(n - len(buf))
                if not piece:
                    break
                buf += piece
            return bytes(buf)

    async def iter_chunks(
        self, start: int = 0, end: int | None = None, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> AsyncGenerator[bytes, None]:
        """Stream ``[start, end)`` in chunks of at most ``chunk_bytes``, on its own connection."""
        stop = self.size if end is None else min(end, self.size)
        stream = _Stream(self, start, stop)
        try:
            while piece := await stream.read(chunk_bytes):
                yield piece
        finally:
            stream.close()

    async def read_all(self) -> bytes:
        """The whole entry in memory."""
        return b"".join([chunk async for chunk in self.iter_chunks()])

    async def download_to(
        self, path: str | os.PathLike[str], *, progress: ProgressFn | None = None
    ) -> int:
        """Write the whole entry to ``path`` (created or truncated).

        Returns:
            The number of bytes written.
        """
        done = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        loop = asyncio.get_running_loop()
        writing: asyncio.Future[None] | None = None
        batch: list[bytes] = []
        batched = 0
        try:
            async for chunk in self.iter_chunks():
                batch.append(chunk)
                batched += len(chunk)
                done += len(chunk)
                if batched >= WRITE_BATCH_BYTES:
                    # Written on a thread while the next batch arrives: receiving and
                    # copying into the file then use both cores (one hop per batch).
                    if writing is not None:
                        await writing
                    writing = loop.run_in_executor(None, _write_all, fd, batch)
                    batch, batched = [], 0
                if progress is not None:
                    progress(done, self.size)
            if writing is not None:
                await writing
                writing = None
            _write_all(fd, batch)
        finally:
            if writing is not None:  # failed or cancelled mid-download: let it finish first
                await asyncio.wait([writing])
            os.close(fd)
        return done

    # -- requests -----------------------------------------------------------------------

    async def _with_resign(self, request: Callable[[str], Awaitable[object]]) -> object:
        try:
            try:
                return await request(self._url)
            except ServerError as exc:
                if exc.status not in (401, 403):
                    raise
                log.info("signed URL of %r refused (%s); looking it up again", self.key, exc.status)
                self._url = await self._resign()
                return await request(self._url)
        except ServerError as exc:
            if exc.status != 404 or isinstance(exc, RemoteEntryNotFound):
                raise
            # Evicted or deleted since the lookup found it: the documented "vanished" error.
            raise RemoteEntryNotFound(str(exc), status=404, body=exc.body) from exc

    async def _open(self, start: int, end: int) -> aiohttp.ClientResponse:
        """A response streaming ``[start, end)``; retried, and re-signed once on 401/403."""
        resp = await self._with_resign(lambda url: self._open_once(url, start, end))
        assert isinstance(resp, aiohttp.ClientResponse)
        return resp

    async def _open_once(self, url: str, start: int, end: int) -> aiohttp.ClientResponse:
        what = f"download of {self.key!r}"
        ranged = start > 0 or end < self.size
        headers = {
            **BLOB_HEADERS,
            "Accept-Encoding": "identity",
            "User-Agent": self.http.user_agent,
        }
        if ranged:
            headers["Range"] = f"bytes={start}-{end - 1}"

        async def attempt(deadline: Deadline) -> aiohttp.ClientResponse:
            try:
                resp = await self.http.session.get(
                    url, headers=headers, timeout=self.http.timeout(deadline, streaming=True)
                )
            except _IO_ERRORS as exc:
                if isinstance(exc, TimeoutError):
                    raise deadline_error(what, deadline, exc) from exc
                raise transport_error(exc, what) from exc
            try:
                if resp.status not in (200, 206):
                    body = await read_capped(resp)
                    raise server_error(resp.status, body, resp.headers, what=what)
                _check_range(resp, start, ranged, what)
            except BaseException:
                resp.close()
                raise
            return resp

        return await with_retries(attempt, self.http.retry, what=what)


def _check_range(resp: aiohttp.ClientResponse, start: int, ranged: bool, what: str) -> None:
    """A ranged answer must be a 206 starting exactly at ``start`` (go-actions-cache's check)."""
    if not ranged:
        return
    m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
    if resp.status != 206 or not m or int(m.group(1)) != start:
        raise InvalidResponse(
            f"{what}: asked for bytes from {start} but got HTTP {resp.status} "
            f"with Content-Range {resp.headers.get('Content-Range')!r}",
            status=resp.status,
        )


async def blob_size(http: Http, url: str, *, what: str) -> int:
    """The blob's size from Get Blob Properties (HEAD).

    Raises:
        ServerError: the store refused (401/403 are left to the caller to re-sign).
        InvalidResponse: no usable Content-Length.
    """
    reply = await http.call(
        "HEAD", url, what=what, ok=(200,), headers={**BLOB_HEADERS, "Accept-Encoding": "identity"}
    )
    length = reply.headers.get("Content-Length", "")
    if not length.isdigit():
        raise InvalidResponse(f"{what}: HEAD gave no Content-Length", status=reply.status)
    return int(length)


def _write_all(fd: int, chunks: list[bytes]) -> None:
    """Write ``chunks`` at the file's position, in order, however short each write is."""
    views = [memoryview(c) for c in chunks if c]
    while views:
        n = os.writev(fd, views[:WRITEV_MAX_BUFFERS])
        while n and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]
