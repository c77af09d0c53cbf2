"""Legacy v1 REST messages (``_apis/artifactcache``), as GHES, act and older BuildKit send them.

Field spellings follow the hosted service: ``cacheId`` (not ``cacheID``), ``cacheKey``,
``archiveLocation``; errors are VSS-shaped with a ``typeKey`` that clients grep for.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ghacache.errors import RemoteProtocolError
from ghacache.protocol.keys import validate_key, validate_keys, validate_version

API_SEGMENT = "_apis/artifactcache"
ALREADY_EXISTS_TYPE_KEY = "ArtifactCacheItemAlreadyExistsException"

# ASCII digits only: \d would also take other scripts' digits, which int() reads.
_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,19})-([0-9]{1,19})/(\*|[0-9]{1,19})")


def decode_json(body: bytes) -> dict[str, Any]:
    """Parse a v1 JSON request body.

    Raises:
        RemoteProtocolError: not JSON, or not an object.
    """
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise RemoteProtocolError(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RemoteProtocolError("request body must be a JSON object")
    return data


def _opt_int(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise RemoteProtocolError(f"field '{name}' must be an integer")
    if value < 0:
        raise RemoteProtocolError(f"field '{name}' must not be negative")
    return value


@dataclass(frozen=True, kw_only=True)
class ReserveCacheRequest:
    key: str
    version: str
    cache_size: int | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReserveCacheRequest:
        key, version = data.get("key"), data.get("version")
        if not isinstance(key, str) or not isinstance(version, str):
            raise RemoteProtocolError("reserve needs string fields 'key' and 'version'")
        return cls(
            key=validate_key(key),
            version=validate_version(version),
            cache_size=_opt_int(data, "cacheSize"),
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "version": self.version}
        if self.cache_size is not None:
            out["cacheSize"] = self.cache_size
        return out


@dataclass(frozen=True, kw_only=True)
class CommitCacheRequest:
    size: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CommitCacheRequest:
        size = _opt_int(data, "size")
        if size is None:
            raise RemoteProtocolError("commit needs an integer field 'size'")
        return cls(size=size)

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size}


@dataclass(frozen=True, kw_only=True)
class LookupQuery:
    keys: tuple[str, ...]
    version: str

    @classmethod
    def from_query(cls, keys: str | None, version: str | None) -> LookupQuery:
        """Build from the raw ``keys`` (comma-joined) and ``version`` query values."""
        if not keys:
            raise RemoteProtocolError("query parameter 'keys' is required")
        if not version:
            raise RemoteProtocolError("query parameter 'version' is required")
        return cls(keys=validate_keys(keys.split(",")), version=validate_version(version))

    def to_query(self) -> dict[str, str]:
        """The query parameters (the HTTP client percent-encodes the commas and ``#``)."""
        return {"keys": ",".join(self.keys), "version": self.version}


def parse_content_range(value: str | None) -> tuple[int, int]:
    """Parse a PATCH ``Content-Range: bytes a-b/*`` into ``(start, end_inclusive)``.

    Raises:
        RemoteProtocolError: missing, malformed, or with end before start.
    """
    if not value:
        raise RemoteProtocolError("Content-Range header is required, e.g. 'bytes 0-1023/*'")
    m = _CONTENT_RANGE.fullmatch(value.strip())
    if not m:
        raise RemoteProtocolError(f"malformed Content-Range {value!r}; expected 'bytes a-b/*'")
    start, end = int(m.group(1)), int(m.group(2))
    if end < start:
        raise RemoteProtocolError(f"Content-Range {value!r} ends before it starts")
    if m.group(3) != "*" and int(m.group(3)) <= end:
        raise RemoteProtocolError(f"Content-Range {value!r} ends beyond its total")
    return start, end


def entry_json(
    *, key: str, version: str, scope: str, created_at: str, archive_location: str | None
) -> dict[str, Any]:
    """An ``ArtifactCacheEntry`` (lookup hit, or list item without a location)."""
    out: dict[str, Any] = {
        "cacheKey": key,
        "scope": scope,
        "cacheVersion": version,
        "creationTime": created_at,
    }
    if archive_location is not None:
        out["archiveLocation"] = archive_location
    return out


def reserve_response(cache_id: int) -> dict[str, Any]:
    return {"cacheId": cache_id}


def error_body(message: str, *, type_key: str) -> dict[str, Any]:
    """A VSS-style error body like the hosted v1 service sends."""
    return {
        "$id": "1",
        "innerException": None,
        "message": message,
        "typeName": f"GitHub.Services.Cache.{type_key}, ghacache",
        "typeKey": type_key,
        "errorCode": 0,
        "eventId": 3000,
    }


# -- client side: response decoders ----------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReserveCacheResponse:
    cache_id: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReserveCacheResponse:
        """Read ``cacheId`` (any letter case, as Go's decoder does).

        Raises:
            RemoteProtocolError: missing, not a positive integer (0 means a failed reservation).
        """
        value = next((v for k, v in data.items() if k.lower() == "cacheid"), None)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise RemoteProtocolError(f"reserve response has no valid 'cacheId': {value!r}")
        return cls(cache_id=value)


@dataclass(frozen=True, kw_only=True)
class ArtifactCacheEntry:
    """A lookup hit (``GET cache``)."""

    cache_key: str
    archive_location: str
    scope: str
    cache_version: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ArtifactCacheEntry | None:
        """The hit, or None when ``cacheKey`` is empty (a miss, as go-actions-cache reads it).

        Raises:
            RemoteProtocolError: a hit without ``archiveLocation`` or with ill-typed fields.
        """
        key = data.get("cacheKey") or ""
        if not key:
            return None
        location = data.get("archiveLocation")
        scope, version = data.get("scope") or "", data.get("cacheVersion") or ""
        if not isinstance(key, str) or not isinstance(location, str) or not location:
            raise RemoteProtocolError("lookup hit has no string 'archiveLocation'")
        if not isinstance(scope, str) or not isinstance(version, str):
            raise RemoteProtocolError("lookup hit has ill-typed 'scope' or 'cacheVersion'")
        return cls(cache_key=key, archive_location=location, scope=scope, cache_version=version)
