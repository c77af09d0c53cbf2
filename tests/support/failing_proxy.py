"""A test-only fault proxy in front of a real object store (moto, say).

    async with FailingProxy.running(moto.url) as proxy:
        # the server's storage URL names the proxy as its endpoint
        url = s3_store_url(dataclasses.replace(moto, url=proxy.url), bucket, prefix)
        proxy.fail(respond(503), method="PUT", times=-1)   # the store is down for writes
        proxy.clear()                                      # ... and back

Every request is forwarded untouched (method, path, query, headers, body) unless a rule
matches it; a rule answers the first ``times`` matching requests itself (negative: until
cleared): a fixed status, a reset connection, a stall, or the real answer cut off part-way.
``proxy.seen`` records every request as ``(method, path_qs)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from tests.support.faults import Rule

Forward = Callable[[], Awaitable[aiohttp.ClientResponse]]
Action = Callable[[web.Request, Forward], Awaitable[web.StreamResponse]]

# Headers that describe one hop, not the message (RFC 9110 §7.6.1), and those aiohttp sets.
_HOP_BY_HOP = frozenset(
    h.lower()
    for h in (
        "Connection",
        "Keep-Alive",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Transfer-Encoding",
        "Upgrade",
        "Content-Length",
        "Date",
        "Server",
    )
)
MAX_BODY_BYTES = 256 * 1024 * 1024
COPY_CHUNK_BYTES = 64 * 1024


@dataclass
class FailingProxy:
    """A reverse proxy to ``upstream`` that breaks the requests its rules match."""

    upstream: str
    url: str = ""
    rules: list[Rule[Action]] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)
    _session: aiohttp.ClientSession | None = None
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, upstream: str) -> AsyncIterator[FailingProxy]:
        """Listen on 127.0.0.1, port 0, in this event loop, until the block ends."""
        proxy = cls(upstream.rstrip("/"))
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_route("*", "/{tail:.*}", proxy._handle)
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        proxy.url = f"http://{host}:{port}"
        proxy._session = aiohttp.ClientSession(auto_decompress=False)
        try:
            yield proxy
        finally:
            await proxy._session.close()
            await runner.cleanup()

    def fail(
        self,
        action: Action,
        *,
        method: str | None = None,
        path: str = "",
        query: str = "",
        match: Callable[[web.Request], bool] | None = None,
        times: int = 1,
    ) -> Rule[Action]:
        """Answer matching requests with ``action``; ``path``/``query`` are substrings."""
        rule = Rule(action, method, path, query, match, times)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """The store recovers: forward everything again."""
        self.rules.clear()

    def count(self, method: str, path: str = "", query: str = "") -> int:
        """How many requests with this method had ``path`` and ``query`` in them."""
        return sum(
            1
            for m, pq in self.seen
            if m == method and path in pq.partition("?")[0] and query in pq.partition("?")[2]
        )

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` holds, checking it as each request arrives."""
        async with self._arrived:
            await self._arrived.wait_for(predicate)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs))
        async with self._arrived:
            self._arrived.notify_all()
        body = await request.read()  # parts are small in tests; S3 wants a Content-Length

        async def forward() -> aiohttp.ClientResponse:
            assert self._session is not None
            headers = CIMultiDict(
                (k, v) for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP
            )
            return await self._session.request(
                request.method,
                self.upstream + request.path_qs,
                headers=headers,
                data=io.BytesIO(body),  # raw bytes over 1 MiB make aiohttp warn
                allow_redirects=False,
                skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent"),
            )

        for rule in self.rules:
            if rule.matches(request):
                rule.hits += 1
                return await rule.action(request, forward)
        return await relay(request, await forward())


async def relay(
    request: web.Request, upstream: aiohttp.ClientResponse, *, cut_after: int | None = None
) -> web.StreamResponse:
    """Send the upstream answer back; with ``cut_after``, drop the connection after that
    many body bytes (the status line and headers, Content-Length included, are sent as is)."""
    async with upstream:
        resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        for k, v in upstream.headers.items():
            if k.lower() not in _HOP_BY_HOP:
                resp.headers.add(k, v)
        if upstream.content_length is not None:
            resp.content_length = upstream.content_length
        await resp.prepare(request)
        sent = 0
        async for chunk in upstream.content.iter_chunked(COPY_CHUNK_BYTES):
            if cut_after is not None and sent + len(chunk) > cut_after:
                await resp.write(chunk[: cut_after - sent])
                _abort(request)
                return resp
            await resp.write(chunk)
            sent += len(chunk)
        await resp.write_eof()
        return resp


def _abort(request: web.Request) -> None:
    assert request.transport is not None
    request.transport.abort()


# -- actions ------------------------------------------------------------------------------


def respond(status: int, body: bytes = b"", *, headers: dict[str, str] | None = None) -> Action:
    """Answer ``status`` without asking the store (an S3-style XML body if none is given)."""

    async def action(request: web.Request, forward: Forward) -> web.StreamResponse:
        text = body or (
            b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
            b"<Message>injected by the failing proxy</Message></Error>"
        )
        return web.Response(
            status=status, body=text, headers=headers, content_type="application/xml"
        )

    return action


def reset() -> Action:
    """Close the connection without answering (the store's host went away)."""

    async def action(request: web.Request, forward: Forward) -> web.StreamResponse:
        _abort(request)
        raise asyncio.CancelledError  # aiohttp drops the handler quietly

    return action


def stall(seconds: float) -> Action:
    """Answer nothing for ``seconds`` (longer than the client waits), then forward."""

    async def action(request: web.Request, forward: Forward) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await relay(request, await forward())

    return action


def cut_after(n_bytes: int) -> Action:
    """Forward, but drop the connection after ``n_bytes`` of the store's answer."""

    async def action(request: web.Request, forward: Forward) -> web.StreamResponse:
        return await relay(request, await forward(), cut_after=n_bytes)

    return action
