"""v1: the legacy ``_apis/artifactcache`` REST API, under any path prefix."""

from __future__ import annotations

from aiohttp import web

from ghacache.errors import RemoteProtocolError
from ghacache.index import Entry
from ghacache.protocol import v1
from ghacache.protocol.keys import parse_entry_id
from ghacache.server.routes import bodies
from ghacache.server.routes.timestamps import iso
from ghacache.server.state import state_of

# ACTIONS_CACHE_URL may carry any path prefix (GitHub used /<opaque id>/).
PREFIX = "/{prefix:(?:.*/)?}" + v1.API_SEGMENT
MAX_JSON_BYTES = 1024 * 1024


def _entry_json(entry: Entry, *, archive_location: str | None = None) -> dict[str, object]:
    return v1.entry_json(
        key=entry.key,
        version=entry.version,
        scope=entry.scope,
        created_at=iso(entry.created_at),
        archive_location=archive_location,
    )


async def _json(request: web.Request) -> dict[str, object]:
    timeout_s = state_of(request).config.body_read_timeout
    return v1.decode_json(await bodies.read(request, timeout_s, max_bytes=MAX_JSON_BYTES))


def _cache_id(request: web.Request) -> int:
    raw = request.match_info["cache_id"]
    cache_id = parse_entry_id(raw)
    if cache_id is None:
        raise RemoteProtocolError(f"cache id must be a positive integer, got {raw!r}")
    return cache_id


async def lookup(request: web.Request) -> web.Response:
    state = state_of(request)
    query = v1.LookupQuery.from_query(request.query.get("keys"), request.query.get("version"))
    claims = await state.claims(request)
    entry = await state.service.lookup(claims, query.keys, query.version)
    if entry is None:
        return web.Response(status=204)
    location = await state.download_url(request, entry)
    return web.json_response(_entry_json(entry, archive_location=location))


async def list_caches(request: web.Request) -> web.Response:
    state = state_of(request)
    key = request.query.get("key", "")
    claims = await state.claims(request)
    entries = await state.service.list_key(claims, key) if key else []
    return web.json_response(
        {
            "totalCount": len(entries),
            "artifactCaches": [_entry_json(e) for e in entries],
        }
    )


async def reserve(request: web.Request) -> web.Response:
    state = state_of(request)
    req = v1.ReserveCacheRequest.from_json(await _json(request))
    claims = await state.claims(request)
    entry = await state.service.reserve(claims, req.key, req.version, req.cache_size)
    return web.json_response(v1.reserve_response(entry.id), status=201)


async def upload_chunk(request: web.Request) -> web.Response:
    state = state_of(request)
    cache_id = _cache_id(request)
    start, end = v1.parse_content_range(request.headers.get("Content-Range"))
    claims = await state.claims(request)
    chunks = bodies.chunks(request, state.config.body_read_timeout)
    await state.service.upload_chunk(claims, cache_id, start, end, chunks)
    return web.Response(status=204)


async def commit(request: web.Request) -> web.Response:
    state = state_of(request)
    cache_id = _cache_id(request)
    req = v1.CommitCacheRequest.from_json(await _json(request))
    claims = await state.claims(request)
    await state.service.commit_chunks(claims, cache_id, req.size)
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    app.router.add_get(PREFIX + "/cache", lookup)
    app.router.add_get(PREFIX + "/caches", list_caches)
    app.router.add_post(PREFIX + "/caches", reserve)
    app.router.add_patch(PREFIX + "/caches/{cache_id}", upload_chunk)
    app.router.add_post(PREFIX + "/caches/{cache_id}", commit)
