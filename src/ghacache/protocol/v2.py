"""Twirp ``github.actions.results.api.v1.CacheService`` messages (JSON flavour).

Requests use proto field names (snake_case); int64 arrives as a string (the JS client) or a
number (go-actions-cache). Responses are snake_case with int64 as strings, like protobuf's
canonical JSON. Unknown fields are ignored, as protobuf JSON parsers do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ghacache.errors import RemoteProtocolError
from ghacache.protocol.keys import validate_key, validate_keys, validate_version

SERVICE = "github.actions.results.api.v1.CacheService"
PATH_PREFIX = f"/twirp/{SERVICE}/"
METHODS = ("CreateCacheEntry", "FinalizeCacheEntryUpload", "GetCacheEntryDownloadURL")

# Twirp error code -> HTTP status (twirp spec, "Error codes").
TWIRP_STATUS: dict[str, int] = {
    "canceled": 408,
    "invalid_argument": 400,
    "malformed": 400,
    "deadline_exceeded": 408,
    "not_found": 404,
    "bad_route": 404,
    "already_exists": 409,
    "permission_denied": 403,
    "unauthenticated": 401,
    "resource_exhausted": 429,
    "failed_precondition": 412,
    "aborted": 409,
    "out_of_range": 400,
    "unimplemented": 501,
    "internal": 500,
    "unavailable": 503,
    "dataloss": 500,
    "unknown": 500,
}


# proto3 JSON int64 as a string: an optional minus sign and ASCII digits only
# (str.isdigit() also accepts '²' and other digits that int() refuses or protobuf rejects).
_INT64_STRING = re.compile(r"-?[0-9]+")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


class MalformedRequest(RemoteProtocolError):
    """The body could not be decoded at all (Twirp's ``malformed``)."""

    code = "malformed"


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse a Twirp JSON request body into a dict; proto3 ``null`` fields mean "default".

    Raises:
        MalformedRequest: not JSON, or not a JSON object.
    """
    try:
        data = json.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise MalformedRequest(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise MalformedRequest("request body must be a JSON object")
    return {k: v for k, v in data.items() if v is not None}


def _str(data: dict[str, Any], name: str) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise RemoteProtocolError(f"field '{name}' must be a string")
    return value


def _int64(data: dict[str, Any], name: str) -> int:
    value = data.get(name, 0)
    if isinstance(value, bool):
        raise RemoteProtocolError(f"field '{name}' must be an int64")
    if isinstance(value, str) and _INT64_STRING.fullmatch(value) and len(value) <= 64:
        value = int(value)
    if not isinstance(value, int):
        raise RemoteProtocolError(f"field '{name}' must be an int64 (number or decimal string)")
    if not INT64_MIN <= value <= INT64_MAX:
        raise RemoteProtocolError(f"field '{name}' is out of the int64 range")
    return value


def _key(data: dict[str, Any]) -> str:
    return validate_key(_str(data, "key"))


@dataclass(frozen=True, kw_only=True)
class CreateCacheEntryRequest:
    key: str
    version: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CreateCacheEntryRequest:
        return cls(key=_key(data), version=validate_version(_str(data, "version")))

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "version": self.version}


@dataclass(frozen=True, kw_only=True)
class FinalizeCacheEntryUploadRequest:
    key: str
    version: str
    size_bytes: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FinalizeCacheEntryUploadRequest:
        name = "size_bytes" if "size_bytes" in data else "sizeBytes"
        size = _int64(data, name)
        if size < 0:
            raise RemoteProtocolError("size_bytes must not be negative")
        return cls(key=_key(data), version=validate_version(_str(data, "version")), size_bytes=size)

    def to_json(self) -> dict[str, Any]:
        # int64 as a string, as protobuf's canonical JSON (and the official client) sends it.
        return {"key": self.key, "size_bytes": str(self.size_bytes), "version": self.version}


@dataclass(frozen=True, kw_only=True)
class GetCacheEntryDownloadURLRequest:
    key: str
    restore_keys: tuple[str, ...]
    version: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GetCacheEntryDownloadURLRequest:
        raw = data.get("restore_keys", data.get("restoreKeys", []))
        if not isinstance(raw, list) or not all(isinstance(k, str) for k in raw):
            raise RemoteProtocolError("restore_keys must be a list of strings")
        key = _str(data, "key")
        validate_keys([key, *raw])
        return cls(
            key=key, restore_keys=tuple(raw), version=validate_version(_str(data, "version"))
        )

    @property
    def keys(self) -> tuple[str, ...]:
        return (self.key, *self.restore_keys)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key, "version": self.version}
        if self.restore_keys:  # proto3 JSON leaves default (empty) fields out
            out["restore_keys"] = list(self.restore_keys)
        return out


def create_response(signed_upload_url: str) -> dict[str, Any]:
    return {"ok": True, "signed_upload_url": signed_upload_url}


def finalize_response(entry_id: int) -> dict[str, Any]:
    return {"ok": True, "entry_id": str(entry_id)}


def download_response(signed_download_url: str, matched_key: str) -> dict[str, Any]:
    return {"ok": True, "signed_download_url": signed_download_url, "matched_key": matched_key}


def download_miss() -> dict[str, Any]:
    return {"ok": False, "signed_download_url": "", "matched_key": ""}


def error_body(code: str, msg: str) -> dict[str, Any]:
    """A Twirp error body; ``code`` must be a Twirp error code."""
    if code not in TWIRP_STATUS:
        code = "internal"
    return {"code": code, "msg": msg}


# -- client side: response decoders ----------------------------------------------------------
# Responses may use proto names (snake_case) or lowerCamelCase; ``{}`` means ``ok: false``.


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _resp_field(data: dict[str, Any], name: str) -> Any:
    value = data.get(name)
    return data.get(_camel(name)) if value is None else value


def _resp_str(data: dict[str, Any], name: str) -> str:
    value = _resp_field(data, name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RemoteProtocolError(f"response field '{name}' must be a string")
    return value


def _resp_ok(data: dict[str, Any]) -> bool:
    value = _resp_field(data, "ok")
    if value is None:
        return False
    if not isinstance(value, bool):
        raise RemoteProtocolError("response field 'ok' must be a boolean")
    return value


@dataclass(frozen=True, kw_only=True)
class CreateCacheEntryResponse:
    ok: bool
    signed_upload_url: str
    message: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CreateCacheEntryResponse:
        """Raises RemoteProtocolError on a wrongly typed field."""
        return cls(
            ok=_resp_ok(data),
            signed_upload_url=_resp_str(data, "signed_upload_url"),
            message=_resp_str(data, "message"),
        )


@dataclass(frozen=True, kw_only=True)
class FinalizeCacheEntryUploadResponse:
    ok: bool
    entry_id: int
    message: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FinalizeCacheEntryUploadResponse:
        """Raises RemoteProtocolError on a wrongly typed field."""
        name = "entry_id" if "entry_id" in data else "entryId"
        return cls(
            ok=_resp_ok(data), entry_id=_int64(data, name), message=_resp_str(data, "message")
        )


@dataclass(frozen=True, kw_only=True)
class GetCacheEntryDownloadURLResponse:
    ok: bool
    signed_download_url: str
    matched_key: str

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GetCacheEntryDownloadURLResponse:
        """Raises RemoteProtocolError on a wrongly typed field."""
        return cls(
            ok=_resp_ok(data),
            signed_download_url=_resp_str(data, "signed_download_url"),
            matched_key=_resp_str(data, "matched_key"),
        )
