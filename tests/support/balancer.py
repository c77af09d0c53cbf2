"""A round-robin HTTP front for replica tests: each request goes to the next upstream.

It is what a load balancer does to a client that keeps one base URL: consecutive requests of
one upload or download land on different replicas. Bodies stream both ways, the ``Host``
header is kept (so replicas sign URLs for the front), and an upstream that refuses the
connection is skipped, as a load balancer's health check would.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

# Headers that describe one hop, not the message (RFC 9110 section 7.6.1).
_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
}


@dataclass
class Balancer:
    url: str
    upstreams: list[str]
    # How many requests each upstream received, so tests can check the spread.
    served: Counter[str] = field(default_factory=Counter)


@asynccontextmanager
async def balancer(upstreams: Sequence[str]) -> AsyncIterator[Balancer]:
    """Serve a round-robin front over ``upstreams`` on 127.0.0.1 (a free port)."""
    turn = itertools.cycle(list(upstreams))
    front = Balancer(url="", upstreams=list(upstreams))
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        body = request.content if request.body_exists else None
        for _ in front.upstreams:
            upstream = next(turn)
            try:
                return await _relay(request, upstream, headers, body)
            except aiohttp.ClientConnectorError:
                continue  # refused before any byte of the body was read
        return web.Response(status=502, text="no upstream accepted the connection")

    async def _relay(
        request: web.Request,
        upstream: str,
        headers: dict[str, str],
        body: aiohttp.StreamReader | None,
    ) -> web.StreamResponse:
        async with session.request(
            request.method,
            upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body,
            allow_redirects=False,
        ) as upstream_response:
            front.served[upstream] += 1
            response = web.StreamResponse(
                status=upstream_response.status,
                headers={
                    k: v for k, v in upstream_response.headers.items() if k.lower() not in _HOP
                },
            )
            if upstream_response.content_length is not None:
                response.content_length = upstream_response.content_length
            await response.prepare(request)
            async for chunk in upstream_response.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    front.url = f"http://127.0.0.1:{port}"
    try:
        yield front
    finally:
        await runner.cleanup()
        await session.close()
