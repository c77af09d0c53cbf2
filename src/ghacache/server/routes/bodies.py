"""Reading request bodies with a deadline on every wait, so slow-drip clients are cut off.

A client that sends a body one byte every few seconds would otherwise hold a connection, a
handler and a staged part open forever. Every read of a body goes through ``chunks``: if
the next bytes take longer than ``--body-read-timeout`` to arrive, the read fails with
``BodyReadTimeout`` (408), the handler's staging is undone as for any failed body, and the
connection is closed after the answer (an unread body cannot be skipped).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from aiohttp import web

from ghacache.errors import RemoteProtocolError


class BodyReadTimeout(RemoteProtocolError, TimeoutError):
    """The request body stopped arriving for longer than the body read timeout.

    Also a ``TimeoutError``: aiohttp then closes the connection instead of waiting out
    its lingering time on a body nobody reads.
    """

    status = 408
    code = "deadline_exceeded"


class BodyIncomplete(RemoteProtocolError):
    """The client closed the connection before the body's declared end.

    Nobody is left to read the answer; what matters is that it is a client error (the
    upload's staging is undone) and not logged as a server failure.
    """


async def chunks(request: web.Request, timeout_s: float) -> AsyncIterator[bytes]:
    """The body's chunks as they arrive; each wait for more is limited to ``timeout_s``.

    One timer per ``timeout_s`` of waiting, not one per chunk: fast uploads pay nothing.

    Raises:
        BodyReadTimeout: no bytes came for ``timeout_s`` while waiting for them.
    """
    stream = request.content
    loop = asyncio.get_running_loop()
    waiting_since: float | None = None
    timer: asyncio.TimerHandle | None = None

    def check() -> None:
        nonlocal timer
        timer = None
        if waiting_since is None:
            return  # not waiting now; the next wait arms the timer again
        due = waiting_since + timeout_s
        if loop.time() >= due:
            # Wakes the pending read with this error; aiohttp then drops the connection.
            stream.set_exception(
                BodyReadTimeout(f"no request body bytes arrived for {timeout_s:g} s")
            )
        else:
            timer = loop.call_at(due, check)

    try:
        while True:
            waiting_since = loop.time()
            if timer is None:
                timer = loop.call_at(waiting_since + timeout_s, check)
            try:
                chunk = await stream.readany()
            except ConnectionError as exc:
                raise BodyIncomplete("the connection closed before the body ended") from exc
            waiting_since = None
            if not chunk:
                return
            yield chunk
    finally:
        if timer is not None:
            timer.cancel()


async def read(request: web.Request, timeout_s: float, *, max_bytes: int) -> bytes:
    """The whole body, read as ``chunks`` reads it, refused past ``max_bytes``.

    Raises:
        BodyReadTimeout: the body stalled.
        RemoteProtocolError: the body (declared or received) is over ``max_bytes``.
    """
    if (request.content_length or 0) > max_bytes:
        raise RemoteProtocolError(f"request body is over {max_bytes} bytes")
    if request.content.is_eof():
        # The whole body came with the headers (as small RPC bodies do): nothing to wait
        # for, so no timer and no generator.
        body = request.content.read_nowait()
        if len(body) > max_bytes:
            raise RemoteProtocolError(f"request body is over {max_bytes} bytes")
        return body
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks(request, timeout_s):
        size += len(chunk)
        if size > max_bytes:
            raise RemoteProtocolError(f"request body is over {max_bytes} bytes")
        parts.append(chunk)
    return b"".join(parts)
