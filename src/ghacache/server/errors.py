"""The one place exceptions become HTTP responses, in each protocol's own error shape.

Twirp routes get ``{"code","msg"}``, v1 routes a VSS body with ``typeKey``, blob URLs an
Azure XML ``<Error>`` with ``x-ms-error-code``, everything else ``{"message"}``. (The
access middleware, outside this one, gives every answer its ``x-ms-request-id``.)

An upload that fails before its body is read to the end (a full disk, an object store that
is down, an expired reservation) is answered once the client has sent the rest: the official
v1 client crashes, failing the job, when the answer arrives while it is still sending (its
file stream errors after the file is closed, and nothing handles that error).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Literal

from aiohttp import web

from ghacache.errors import (
    EntryExists,
    GhacacheError,
    RangeNotSatisfiable,
    RateLimited,
    StorageUnavailable,
)
from ghacache.protocol import azblob, v1, v2
from ghacache.server.state import ACCOUNT

log = logging.getLogger("ghacache.server")

Family = Literal["twirp", "v1", "blob", "api"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# Twirp codes for aiohttp's own errors (unknown route, wrong method, body too large).
_HTTP_CODES = {404: "bad_route", 405: "bad_route", 413: "invalid_argument"}
# The rest of a failed upload's body is read, and dropped, up to the largest body the
# official clients send in one request (a 128 MiB Put Blob) and for as long as aiohttp
# would linger after answering anyway.
DRAIN_MAX_BYTES = 128 * 1024 * 1024
DRAIN_TIMEOUT_S = 10.0


def family_of(path: str) -> Family:
    if path.startswith("/twirp/"):
        return "twirp"
    if f"/{v1.API_SEGMENT}/" in path:
        return "v1"
    if path.startswith(f"/{ACCOUNT}/"):
        return "blob"
    return "api"


def render(
    family: Family, status: int, code: str, message: str, *, head: bool = False
) -> web.Response:
    """Build the error response for one protocol family."""
    if family == "twirp":
        return web.json_response(v2.error_body(code, message), status=status)
    if family == "v1":
        type_key = v1.ALREADY_EXISTS_TYPE_KEY if code == "already_exists" else _v1_type_key(status)
        return web.json_response(v1.error_body(message, type_key=type_key), status=status)
    if family == "blob":
        azure_code = azblob.ERROR_CODES.get(status, "InternalError")
        body = None if head else azblob.error_xml(azure_code, message)
        return web.Response(
            status=status,
            body=body,
            content_type="application/xml",
            headers={"x-ms-error-code": azure_code},
        )
    return web.json_response({"message": message, "code": code}, status=status)


def _v1_type_key(status: int) -> str:
    return {
        400: "ArgumentException",
        401: "UnauthorizedRequestException",
        403: "AccessDeniedException",
        404: "ArtifactCacheNotFoundException",
        408: "TimeoutException",
        412: "InvalidOperationException",
        413: "ArtifactCacheTooLargeException",
        429: "RequestBlockedException",
    }.get(status, "InternalServerErrorException")


def _for_exception(family: Family, exc: GhacacheError, head: bool) -> web.Response:
    resp = render(family, exc.status, exc.code, exc.message, head=head)
    if isinstance(exc, RateLimited | StorageUnavailable):
        resp.headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, RangeNotSatisfiable):
        resp.headers["Content-Range"] = f"bytes */{exc.size}"
    if isinstance(exc, EntryExists) and family == "blob":
        resp.headers["x-ms-error-code"] = "BlobAlreadyExists"
    return resp


async def _drain(request: web.Request, status: int) -> None:
    """Read what is left of a failed request's body, within DRAIN_MAX_BYTES and
    DRAIN_TIMEOUT_S; a body too large for that (or a 413) is answered at once."""
    declared = request.content_length or 0
    if not request.body_exists or status == 413 or declared > DRAIN_MAX_BYTES:
        return
    left = DRAIN_MAX_BYTES
    try:
        async with asyncio.timeout(DRAIN_TIMEOUT_S):
            while left > 0 and (chunk := await request.content.readany()):
                left -= len(chunk)
    except Exception:  # whatever ends the drain (a client gone, the timeout), answer now
        return


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    family = family_of(request.path)
    head = request.method == "HEAD"
    try:
        resp = await handler(request)
    except GhacacheError as exc:
        if exc.status >= 500:
            log.error("%s %s failed: %s", request.method, request.path, exc)
        resp = _for_exception(family, exc, head)
        await _drain(request, exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = render(
            family, exc.status, _HTTP_CODES.get(exc.status, "internal"), exc.reason, head=head
        )
        if "Allow" in exc.headers:  # keep what a 405 says is allowed
            resp.headers["Allow"] = exc.headers["Allow"]
    except Exception:
        log.exception("%s %s failed unexpectedly", request.method, request.path)
        resp = render(family, 500, "internal", "internal server error", head=head)
        await _drain(request, 500)
    return resp
