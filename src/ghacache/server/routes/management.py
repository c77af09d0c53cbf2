"""Management API shaped like GitHub's REST API, so ``gh cache``-style scripts carry over.

GitHub's endpoints (same paths, parameters and response fields):
  GET    /repos/{owner}/{repo}/actions/caches          key (prefix), ref, sort, direction, per_page, page
  DELETE /repos/{owner}/{repo}/actions/caches?key=K[&ref=R]
  DELETE /repos/{owner}/{repo}/actions/caches/{cache_id}
  GET    /repos/{owner}/{repo}/actions/cache/usage
  GET    /orgs/{org}/actions/cache/usage
  GET    /orgs/{org}/actions/cache/usage-by-repository
ghacache additions (all repositories, and the eviction record):
  GET    /actions/cache/usage-by-repository
  GET    /actions/cache/evictions                     repo, per_page, page
  GET    /actions/cache/openapi.json                  this API's OpenAPI description
Every route but the description needs an admin token (``ghacache token --admin``).
``server/openapi.json`` describes each route; a test keeps it equal to ``add_routes``.
"""

from __future__ import annotations

import importlib.resources
import json
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from ghacache._version import __version__
from ghacache.errors import EntryNotFound, RemoteProtocolError
from ghacache.index import Entry
from ghacache.index.catalog import Eviction, RepoUsage, SortField
from ghacache.protocol.keys import parse_entry_id
from ghacache.server.routes.timestamps import iso
from ghacache.server.state import ServerState, state_of

OPENAPI_PATH = "/actions/cache/openapi.json"
SORTS: tuple[SortField, ...] = ("created_at", "last_accessed_at", "size_in_bytes")
MAX_PER_PAGE = 100


class ValidationFailed(RemoteProtocolError):
    """A query parameter is invalid (GitHub answers 422)."""

    status = 422


def cache_json(e: Entry) -> dict[str, Any]:
    return {
        "id": e.id,
        "ref": e.scope,
        "key": e.key,
        "version": e.version,
        "last_accessed_at": iso(e.last_accessed_at),
        "created_at": iso(e.created_at),
        "size_in_bytes": e.size or 0,
    }


def usage_json(u: RepoUsage) -> dict[str, Any]:
    return {
        "full_name": u.repo,
        "active_caches_size_in_bytes": u.size,
        "active_caches_count": u.count,
    }


def eviction_json(e: Eviction) -> dict[str, Any]:
    return {
        "id": e.id,
        "cache_id": e.entry_id,
        "repository": e.repo,
        "ref": e.scope,
        "key": e.key,
        "version": e.version,
        "size_in_bytes": e.size,
        "reason": str(e.reason),
        "created_at": iso(e.created_at),
        "last_accessed_at": iso(e.last_accessed_at),
        "evicted_at": iso(e.evicted_at),
    }


def _param(request: web.Request, name: str) -> str | None:
    """A query parameter given at most once, without NUL (no stored text holds one)."""
    values = request.query.getall(name, [])
    if len(values) > 1:
        raise ValidationFailed(f"'{name}' is given {len(values)} times; give it once")
    if not values:
        return None
    if "\x00" in values[0]:
        raise ValidationFailed(f"'{name}' must not contain NUL characters")
    return values[0]


def _int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = _param(request, name)
    if raw is None:
        return default
    value = parse_entry_id(raw)
    if value is None or not low <= value <= high:
        raise ValidationFailed(f"'{name}' must be an integer from {low} to {high}, got {raw!r}")
    return value


def _paging(request: web.Request) -> tuple[int, int]:
    per_page = _int_param(request, "per_page", 30, 1, MAX_PER_PAGE)
    page = _int_param(request, "page", 1, 1, 10**9)
    return per_page, (page - 1) * per_page


async def _admin(request: web.Request) -> ServerState:
    state = state_of(request)
    await state.require_admin(request)
    return state


def _name(request: web.Request, part: str) -> str:
    """An owner, repository or organization name from the path; ``%2F`` cannot smuggle a '/'."""
    value = request.match_info[part]
    if "/" in value or "\x00" in value:
        raise ValidationFailed(f"'{part}' must not contain '/' or NUL characters")
    return value


def _repo(request: web.Request) -> str:
    return f"{_name(request, 'owner')}/{_name(request, 'repo')}"


async def list_caches(request: web.Request) -> web.Response:
    state = await _admin(request)
    sort = _param(request, "sort")
    sort = "last_accessed_at" if sort is None else sort
    if sort not in SORTS:
        raise ValidationFailed(f"'sort' must be one of {', '.join(SORTS)}, got {sort!r}")
    direction = _param(request, "direction")
    direction = "desc" if direction is None else direction
    if direction not in ("asc", "desc"):
        raise ValidationFailed(f"'direction' must be asc or desc, got {direction!r}")
    per_page, offset = _paging(request)
    total, entries = await state.catalog.list_entries(
        repo=_repo(request),
        key_prefix=_param(request, "key") or None,
        ref=_param(request, "ref") or None,
        sort=sort,
        descending=direction == "desc",
        limit=per_page,
        offset=offset,
    )
    return web.json_response(
        {"total_count": total, "actions_caches": [cache_json(e) for e in entries]}
    )


async def delete_by_key(request: web.Request) -> web.Response:
    state = await _admin(request)
    repo = _repo(request)
    key = _param(request, "key")
    if not key:
        raise ValidationFailed("'key' is required to delete caches by key")
    entries = await state.catalog.find(repo=repo, key=key, ref=_param(request, "ref") or None)
    if not entries:
        raise EntryNotFound(f"no caches with key {key!r} in {repo}")
    gone = await state.maintainer.delete([e.id for e in entries])
    return web.json_response(
        {"total_count": len(gone), "actions_caches": [cache_json(e) for e in gone]}
    )


async def delete_by_id(request: web.Request) -> web.Response:
    state = await _admin(request)
    repo = _repo(request)
    raw = request.match_info["cache_id"]
    cache_id = parse_entry_id(raw)  # int64 ids only; anything else names no cache
    entry = await state.service.index.get(cache_id) if cache_id is not None else None
    if entry is None or not entry.committed or entry.repo != repo:
        raise EntryNotFound(f"cache {raw} not found in {repo}")
    if not await state.maintainer.delete([entry.id]):
        raise EntryNotFound(f"cache {raw} not found in {repo}")
    return web.Response(status=204)


async def repo_usage(request: web.Request) -> web.Response:
    state = await _admin(request)
    repo = _repo(request)
    found = await state.catalog.usage(repo)
    usage = found[0] if found else RepoUsage(repo=repo, size=0, count=0, oldest_access=0.0)
    return web.json_response(usage_json(usage))


def _owned_by(org: str | None, usages: list[RepoUsage]) -> list[RepoUsage]:
    return usages if org is None else [u for u in usages if u.repo.split("/", 1)[0] == org]


async def org_usage(request: web.Request) -> web.Response:
    state = await _admin(request)
    usages = _owned_by(_name(request, "org"), await state.catalog.usage())
    return web.json_response(
        {
            "total_active_caches_size_in_bytes": sum(u.size for u in usages),
            "total_active_caches_count": sum(u.count for u in usages),
        }
    )


async def usage_by_repository(request: web.Request) -> web.Response:
    state = await _admin(request)
    org = _name(request, "org") if "org" in request.match_info else None
    usages = _owned_by(org, await state.catalog.usage())
    per_page, offset = _paging(request)
    return web.json_response(
        {
            "total_count": len(usages),
            "repository_cache_usages": [usage_json(u) for u in usages[offset : offset + per_page]],
        }
    )


async def evictions(request: web.Request) -> web.Response:
    state = await _admin(request)
    per_page, offset = _paging(request)
    total, items = await state.catalog.evictions(
        repo=_param(request, "repo") or None, limit=per_page, offset=offset
    )
    return web.json_response({"total_count": total, "evictions": [eviction_json(e) for e in items]})


def openapi_document() -> dict[str, Any]:
    """The OpenAPI description of this API (package data), stamped with the server's version."""
    text = importlib.resources.files("ghacache.server").joinpath("openapi.json").read_text()
    document: dict[str, Any] = json.loads(text)
    document["info"]["version"] = __version__
    return document


def _openapi_handler() -> Handler:
    body = json.dumps(openapi_document(), separators=(",", ":")).encode()

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return openapi


def add_routes(app: web.Application) -> None:
    repo = "/repos/{owner}/{repo}/actions"
    app.router.add_get(f"{repo}/caches", list_caches)
    app.router.add_delete(f"{repo}/caches", delete_by_key)
    app.router.add_delete(f"{repo}/caches/{{cache_id}}", delete_by_id)
    app.router.add_get(f"{repo}/cache/usage", repo_usage)
    app.router.add_get("/orgs/{org}/actions/cache/usage", org_usage)
    app.router.add_get("/orgs/{org}/actions/cache/usage-by-repository", usage_by_repository)
    app.router.add_get("/actions/cache/usage-by-repository", usage_by_repository)
    app.router.add_get("/actions/cache/evictions", evictions)
    # The description is public: it says what the API is, nothing about the caches.
    app.router.add_get(OPENAPI_PATH, _openapi_handler())
