"""Twirp CacheService messages (``protocol.v2``), starting from bodies real clients sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ghacache import errors
from ghacache.errors import RemoteProtocolError
from ghacache.protocol import v2

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"
VERSION = "3ad75f27293d65a135214b8c82b296080f911dc107e52f1e7ec871a2eda46e69"
GO_VERSION = "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"


def body(name: str) -> dict[str, Any]:
    return v2.decode_body((TRACES / name).read_bytes())


def go_body(**fields: Any) -> dict[str, Any]:
    # go-actions-cache encodes with encoding/json: int64 as a JSON number.
    return v2.decode_body(json.dumps(fields, separators=(",", ":")).encode())


# -- decode_body ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", [b"not json", b"[]", b'"x"', b"null", b"1", b"\xff", b'{"key":', b"{'key': 'k'}"]
)
def test_decode_body_rejects(raw: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        v2.decode_body(raw)


def test_decode_body_empty_is_an_empty_message() -> None:
    # Twirp treats an empty JSON body as the default message.
    assert v2.decode_body(b"") == {}


# -- CreateCacheEntryRequest -----------------------------------------------------------------------


def test_create_from_actions_cache() -> None:
    req = v2.CreateCacheEntryRequest.from_json(body("v2-create-cache-entry.json"))
    assert req == v2.CreateCacheEntryRequest(key="a-small-1", version=VERSION)


def test_create_ignores_unknown_fields() -> None:
    data = {"key": "k", "version": "v", "metadata": {"repository_id": "1", "scope": []}}
    assert v2.CreateCacheEntryRequest.from_json(data).key == "k"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": "v"}, "empty"),
        ({"key": "k"}, "empty"),
        ({"key": "", "version": "v"}, "empty"),
        ({"key": 1, "version": "v"}, "'key' must be a string"),
        ({"key": ["k"], "version": "v"}, "'key' must be a string"),
        ({"key": "k", "version": 1}, "'version' must be a string"),
        ({"key": "a,b", "version": "v"}, "comma"),
        ({"key": "x" * 513, "version": "v"}, "513"),
        ({"key": "k", "version": "v" * 513}, "512"),
    ],
)
def test_create_rejects(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        v2.CreateCacheEntryRequest.from_json(data)


# -- FinalizeCacheEntryUploadRequest ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "size"),
    [
        ("v2-finalize-small.json", "a-small-1", 100534),
        ("v2-finalize-multiblock.json", "a-big-1", 203078772),
    ],
)
def test_finalize_from_actions_cache_sends_size_as_string(name: str, key: str, size: int) -> None:
    data = body(name)
    assert isinstance(data["size_bytes"], str)
    req = v2.FinalizeCacheEntryUploadRequest.from_json(data)
    assert req == v2.FinalizeCacheEntryUploadRequest(key=key, version=VERSION, size_bytes=size)


def test_finalize_from_go_actions_cache_sends_size_as_number() -> None:
    data = go_body(key="index-buildkit-1-f921bd05#13", size_bytes=5321, version=GO_VERSION)
    req = v2.FinalizeCacheEntryUploadRequest.from_json(data)
    assert (req.key, req.size_bytes, req.version) == (
        "index-buildkit-1-f921bd05#13",
        5321,
        GO_VERSION,
    )


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ("0", 0),
        (0, 0),
        ("9223372036854775807", 2**63 - 1),
        (9223372036854775807, 2**63 - 1),
        ("007", 7),
    ],
)
def test_finalize_int64_as_string_or_number(size: object, expected: int) -> None:
    data = {"key": "k", "version": "v", "size_bytes": size}
    assert v2.FinalizeCacheEntryUploadRequest.from_json(data).size_bytes == expected


def test_finalize_accepts_the_lower_camel_json_name() -> None:
    # protobuf JSON parsers accept the lowerCamelCase name as well.
    data = {"key": "k", "version": "v", "sizeBytes": "12"}
    assert v2.FinalizeCacheEntryUploadRequest.from_json(data).size_bytes == 12


def test_finalize_missing_size_is_zero() -> None:
    # proto3 omits default values, so an empty blob arrives without size_bytes.
    assert (
        v2.FinalizeCacheEntryUploadRequest.from_json({"key": "k", "version": "v"}).size_bytes == 0
    )


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("-1", "negative"),
        (-1, "negative"),
        ("-203078772", "negative"),
        (1.5, "int64"),
        (100.0, "int64"),
        (True, "int64"),
        (False, "int64"),
        ("", "int64"),
        ("12a", "int64"),
        ("1e3", "int64"),
        (" 12", "int64"),
        ("+12", "int64"),
        ("0x10", "int64"),
        ("1_000", "int64"),
        ("--5", "int64"),
        ("-", "int64"),
        ("²", "int64"),  # str.isdigit() says yes; int() says no
        ("٣", "int64"),  # Arabic-Indic digit: not a protobuf JSON integer
        ([1], "int64"),
        ({"value": 1}, "int64"),
    ],
)
def test_finalize_rejects_bad_sizes(size: object, message: str) -> None:
    data = {"key": "k", "version": "v", "size_bytes": size}
    with pytest.raises(RemoteProtocolError, match=message):
        v2.FinalizeCacheEntryUploadRequest.from_json(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": "v", "size_bytes": "1"}, "empty"),
        ({"key": "k", "size_bytes": "1"}, "empty"),
        ({"key": 5, "version": "v", "size_bytes": "1"}, "'key' must be a string"),
        ({"key": "a,b", "version": "v", "size_bytes": "1"}, "comma"),
    ],
)
def test_finalize_rejects_bad_identity(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        v2.FinalizeCacheEntryUploadRequest.from_json(data)


# -- GetCacheEntryDownloadURLRequest -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key", "restore_keys"),
    [
        ("v2-get-download-url-exact.json", "a-big-1", ()),
        ("v2-get-download-url-prefix.json", "a-big-2", ("a-big-",)),
        ("v2-get-download-url-miss.json", "a-big-nope", ("a-big-zzz",)),
    ],
)
def test_download_url_from_actions_cache(
    name: str, key: str, restore_keys: tuple[str, ...]
) -> None:
    req = v2.GetCacheEntryDownloadURLRequest.from_json(body(name))
    assert req == v2.GetCacheEntryDownloadURLRequest(
        key=key, restore_keys=restore_keys, version=VERSION
    )
    assert req.keys == (key, *restore_keys)


def test_download_url_from_go_actions_cache_repeats_the_key() -> None:
    key = "index-buildkit-1-f921bd05#"
    req = v2.GetCacheEntryDownloadURLRequest.from_json(
        go_body(key=key, restore_keys=[key], version=GO_VERSION)
    )
    assert req.keys == (key, key)


def test_download_url_accepts_lower_camel_restore_keys() -> None:
    req = v2.GetCacheEntryDownloadURLRequest.from_json(
        {"key": "k", "restoreKeys": ["r-"], "version": "v"}
    )
    assert req.restore_keys == ("r-",)


def test_download_url_ten_keys_in_all_are_allowed() -> None:
    restore = [f"r{i}" for i in range(9)]
    req = v2.GetCacheEntryDownloadURLRequest.from_json(
        {"key": "k", "restore_keys": restore, "version": "v"}
    )
    assert len(req.keys) == 10


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"key": "k", "restore_keys": [f"r{i}" for i in range(10)], "version": "v"}, "11 keys"),
        ({"key": "k", "restore_keys": "r-", "version": "v"}, "list of strings"),
        ({"key": "k", "restore_keys": ["r-", 3], "version": "v"}, "list of strings"),
        ({"key": "k", "restore_keys": {"r": 1}, "version": "v"}, "list of strings"),
        ({"key": "k", "restore_keys": ["a,b"], "version": "v"}, "comma"),
        ({"key": "k", "restore_keys": [""], "version": "v"}, "empty"),
        ({"restore_keys": ["r-"], "version": "v"}, "empty"),
        ({"key": "k", "version": ""}, "empty"),
        ({"key": 1, "version": "v"}, "'key' must be a string"),
    ],
)
def test_download_url_rejects(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        v2.GetCacheEntryDownloadURLRequest.from_json(data)


# -- responses and errors ------------------------------------------------------------------------------


def test_create_response() -> None:
    assert v2.create_response("http://h/ghacache/uploads/1?sig=x") == {
        "ok": True,
        "signed_upload_url": "http://h/ghacache/uploads/1?sig=x",
    }


def test_finalize_response_sends_int64_as_string() -> None:
    # actions/toolkit parseInt()s it; go-actions-cache declares it a string.
    assert v2.finalize_response(2) == {"ok": True, "entry_id": "2"}
    assert v2.finalize_response(2**63 - 1)["entry_id"] == "9223372036854775807"


def test_download_responses() -> None:
    assert v2.download_response("http://h/e/1?sig=x", "a-big-1") == {
        "ok": True,
        "signed_download_url": "http://h/e/1?sig=x",
        "matched_key": "a-big-1",
    }
    # The exact miss body the hosted service sends (captured in v2-restore-miss).
    assert json.dumps(v2.download_miss()) == (
        '{"ok": false, "signed_download_url": "", "matched_key": ""}'
    )


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("already_exists", 409),
        ("not_found", 404),
        ("invalid_argument", 400),
        ("unauthenticated", 401),
        ("permission_denied", 403),
        ("resource_exhausted", 429),
        ("failed_precondition", 412),
        ("internal", 500),
        ("unavailable", 503),
    ],
)
def test_error_body_is_twirp_shaped(code: str, status: int) -> None:
    assert v2.error_body(code, "boom") == {"code": code, "msg": "boom"}
    assert v2.TWIRP_STATUS[code] == status


def test_error_body_matches_captured_conflict() -> None:
    msg = "cache entry with the same key, version, and scope already exists"
    assert json.dumps(v2.error_body("already_exists", msg)) == (
        '{"code": "already_exists", "msg": "cache entry with the same key, version, and scope already exists"}'
    )


@pytest.mark.parametrize("code", ["", "AlreadyExists", "bogus", "409"])
def test_error_body_unknown_code_becomes_internal(code: str) -> None:
    assert v2.error_body(code, "m") == {"code": "internal", "msg": "m"}


def test_every_error_code_of_the_tree_is_a_twirp_code() -> None:
    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, errors.GhacacheError)
    ]
    assert len(classes) > 10
    for cls in classes:
        assert cls.code in v2.TWIRP_STATUS, cls.__name__


def test_paths() -> None:
    assert v2.PATH_PREFIX == "/twirp/github.actions.results.api.v1.CacheService/"
    assert set(v2.METHODS) == {
        "CreateCacheEntry",
        "FinalizeCacheEntryUpload",
        "GetCacheEntryDownloadURL",
    }
