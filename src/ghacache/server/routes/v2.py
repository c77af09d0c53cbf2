"""v2: Twirp ``CacheService`` at the origin root (the official client drops URL paths)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ghacache.errors import RemoteProtocolError
from ghacache.protocol import v2
from ghacache.server.routes import bodies
from ghacache.server.state import ServerState, state_of

MAX_RPC_BODY_BYTES = 1024 * 1024


class BadRoute(RemoteProtocolError):
    """No such Twirp method."""

    status = 404
    code = "bad_route"


async def _create(state: ServerState, request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    req = v2.CreateCacheEntryRequest.from_json(body)
    claims = await state.claims(request)
    entry = await state.service.reserve(claims, req.key, req.version)
    return v2.create_response(await state.upload_url(request, entry))


async def _finalize(
    state: ServerState, request: web.Request, body: dict[str, Any]
) -> dict[str, Any]:
    req = v2.FinalizeCacheEntryUploadRequest.from_json(body)
    claims = await state.claims(request)
    entry = await state.service.finalize(claims, req.key, req.version, req.size_bytes)
    return v2.finalize_response(entry.id)


async def _download_url(
    state: ServerState, request: web.Request, body: dict[str, Any]
) -> dict[str, Any]:
    req = v2.GetCacheEntryDownloadURLRequest.from_json(body)
    claims = await state.claims(request)
    entry = await state.service.lookup(claims, req.keys, req.version)
    if entry is None:
        return v2.download_miss()
    return v2.download_response(await state.download_url(request, entry), entry.key)


_METHODS = {
    "CreateCacheEntry": _create,
    "FinalizeCacheEntryUpload": _finalize,
    "GetCacheEntryDownloadURL": _download_url,
}


async def rpc(request: web.Request) -> web.Response:
    method = _METHODS.get(request.match_info["method"])
    if method is None:
        raise BadRoute(f"no such method: {v2.SERVICE}/{request.match_info['method']}")
    if request.content_type not in ("application/json", ""):
        raise BadRoute(f"unsupported content type {request.content_type!r}; send JSON")
    state = state_of(request)
    raw = await bodies.read(request, state.config.body_read_timeout, max_bytes=MAX_RPC_BODY_BYTES)
    return web.json_response(await method(state, request, v2.decode_body(raw)))


def add_routes(app: web.Application) -> None:
    app.router.add_post(v2.PATH_PREFIX + "{method}", rpc)
