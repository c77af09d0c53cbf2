"""A test-only fault injector: an aiohttp middleware in front of the real server.

    faults = Faults()
    handle, runner = await start_server(tmp_path, clock, middlewares=[faults.middleware])
    faults.add(respond(429, headers={"Retry-After": "1"}), method="POST", path="CreateCacheEntry")

Each rule answers (or breaks) the first ``times`` matching requests itself; everything else,
and every request after that, reaches the real server untouched. ``faults.seen`` records every
request as ``(method, path)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from aiohttp import web

from ghacache.protocol import azblob, v1, v2

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Action = Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]
A = TypeVar("A")  # what a rule does: an Action here, a proxy's action in failing_proxy.py


@dataclass
class Rule(Generic[A]):
    """Which requests to break (``method`` exact; ``path``/``query`` substrings) and how."""

    action: A
    method: str | None = None
    path: str = ""
    query: str = ""
    match: Callable[[web.Request], bool] | None = None
    times: int = 1  # negative: forever
    hits: int = 0

    def matches(self, request: web.Request) -> bool:
        if self.times >= 0 and self.hits >= self.times:
            return False
        if self.method is not None and request.method != self.method:
            return False
        if self.path not in request.path or self.query not in request.query_string:
            return False
        return self.match is None or self.match(request)


@dataclass
class Faults:
    rules: list[Rule[Action]] = field(default_factory=list)
    seen: list[tuple[str, str]] = field(default_factory=list)

    def add(
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

    def count(self, method: str, path: str) -> int:
        """How many requests with this method had a path ending in ``path``."""
        return sum(1 for m, p in self.seen if m == method and p.endswith(path))

    def count_in(self, method: str, fragment: str) -> int:
        """How many requests with this method had ``fragment`` in their path."""
        return sum(1 for m, p in self.seen if m == method and fragment in p)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        self.seen.append((request.method, request.path))
        for rule in self.rules:
            if rule.matches(request):
                rule.hits += 1
                return await rule.action(request, handler)
        return await handler(request)


# -- actions ------------------------------------------------------------------------------


def respond(
    status: int,
    body: bytes = b"",
    *,
    headers: dict[str, str] | None = None,
    content_type: str = "application/json",
) -> Action:
    """Answer with a fixed response (the request body is left unread)."""

    async def action(request: web.Request, handler: Handler) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers, content_type=content_type)

    return action


def twirp_error(status: int, code: str, msg: str, **headers: str) -> Action:
    import json

    return respond(status, json.dumps(v2.error_body(code, msg)).encode(), headers=headers)


def vss_error(status: int, message: str, type_key: str = "InvalidOperationException") -> Action:
    import json

    # GitHub's v1 error bodies start with a UTF-8 BOM (moby/buildkit#2276).
    body = "\ufeff" + json.dumps(v1.error_body(message, type_key=type_key))
    return respond(status, body.encode())


def azure_error(status: int, code: str, message: str) -> Action:
    return respond(
        status,
        azblob.error_xml(code, message),
        headers={"x-ms-error-code": code},
        content_type="application/xml",
    )


def drop_mid_body(after_bytes: int) -> Action:
    """Read part of the request body, then close the connection without answering."""

    async def action(request: web.Request, handler: Handler) -> web.StreamResponse:
        received = 0
        while received < after_bytes:
            piece = await request.content.read(after_bytes - received)
            if not piece:
                break
            received += len(piece)
        assert request.transport is not None
        request.transport.abort()
        raise asyncio.CancelledError  # aiohttp drops the handler quietly

    return action


def delay(seconds: float) -> Action:
    """Wait, then let the real server answer."""

    async def action(request: web.Request, handler: Handler) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await handler(request)

    return action
