"""Name what a request is: its protocol and operation, for metric labels, logs and spans.

Names come from a fixed vocabulary (never from raw paths or client input) so metric label
sets stay bounded whatever clients send.
"""

from __future__ import annotations

from aiohttp import web

from ghacache.protocol import v1, v2
from ghacache.server.state import ACCOUNT

PROTOCOLS = ("v2", "v1", "blob", "management", "ui", "other")
V2_METHODS = frozenset({"CreateCacheEntry", "FinalizeCacheEntryUpload", "GetCacheEntryDownloadURL"})
_BLOB_PUTS = {"block": "put_block", "blocklist": "put_block_list", None: "put_blob"}
_V1_OPERATIONS = {
    ("GET", "cache"): "lookup",
    ("GET", "caches"): "list",
    ("POST", "caches"): "reserve",
    ("PATCH", "caches/"): "patch",
    ("POST", "caches/"): "commit",
}
_MANAGEMENT_PREFIXES = ("/repos/", "/orgs/", "/actions/")
_OTHER = {"/healthz": "healthz", "/metrics": "metrics"}


def classify(request: web.Request) -> tuple[str, str]:
    """``(protocol, operation)`` of a request, e.g. ``("blob", "put_block")``."""
    path, method = request.path, request.method
    if path.startswith("/twirp/"):
        name = path.removeprefix(v2.PATH_PREFIX)
        return "v2", name if name in V2_METHODS else "unknown"
    segment = f"/{v1.API_SEGMENT}/"
    if segment in path:  # under any path prefix
        rest = path.split(segment, 1)[1]
        resource = "caches/" if rest.startswith("caches/") else rest
        return "v1", _V1_OPERATIONS.get((method, resource), "unknown")
    if path.startswith(f"/{ACCOUNT}/"):
        if method == "PUT":
            return "blob", _BLOB_PUTS.get(request.query.get("comp"), "unknown")
        return "blob", {"GET": "get_blob", "HEAD": "head_blob"}.get(method, "unknown")
    if path == "/ui" or path.startswith("/ui/"):
        return "ui", _handler_name(request)
    if path.startswith(_MANAGEMENT_PREFIXES):
        return "management", _handler_name(request)
    return "other", _OTHER.get(path, "unknown")


def _handler_name(request: web.Request) -> str:
    """The matched handler's function name (a bounded set), or ``unknown`` for no route."""
    info = request.match_info
    if info.http_exception is not None:
        return "unknown"
    return str(getattr(info.route.handler, "__name__", "unknown"))
