"""Legacy v1 REST messages (``protocol.v1``), starting from bodies real clients sent."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from ghacache.errors import RemoteProtocolError
from ghacache.protocol import v1

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"
VERSION = "3ad75f27293d65a135214b8c82b296080f911dc107e52f1e7ec871a2eda46e69"
GO_VERSION = "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"


def trace(name: str) -> bytes:
    return (TRACES / name).read_bytes()


def headers() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(trace("headers.json"))
    return data


# -- captured data ---------------------------------------------------------------------------


def test_captured_bodies_are_byte_exact() -> None:
    manifest = json.loads(trace("manifest.json"))
    assert manifest, "tests/data/traces/manifest.json lists no bodies"
    for name, meta in manifest.items():
        assert hashlib.sha256(trace(name)).hexdigest() == meta["sha256"], name


# -- decode_json ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"", b"not json", b"[1, 2]", b'"text"', b"null", b"42", b"\xff\xfe{}", b'{"key": '],
)
def test_decode_json_rejects(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        v1.decode_json(body)


def test_decode_json_accepts_pretty_printed_bodies() -> None:
    # actions/toolkit's v1 client sends indented JSON.
    body = trace("v1-reserve-cache.json")
    assert b"\n  " in body
    assert v1.decode_json(body)["key"] == "c-big-1"


# -- ReserveCacheRequest ----------------------------------------------------------------------


def test_reserve_from_actions_cache() -> None:
    req = v1.ReserveCacheRequest.from_json(v1.decode_json(trace("v1-reserve-cache.json")))
    assert req == v1.ReserveCacheRequest(key="c-big-1", version=VERSION, cache_size=203078772)


def test_reserve_from_go_actions_cache_has_no_size() -> None:
    # go-actions-cache ReserveCacheReq: key and version only.
    body = json.dumps({"key": "buildkit-blob-1-sha256:abc", "version": GO_VERSION}).encode()
    req = v1.ReserveCacheRequest.from_json(v1.decode_json(body))
    assert req.key == "buildkit-blob-1-sha256:abc"
    assert req.version == GO_VERSION
    assert req.cache_size is None


@pytest.mark.parametrize(
    ("data", "size"),
    [
        ({"cacheSize": 0}, 0),
        ({"cacheSize": None}, None),
        ({"cacheSize": 2**40}, 2**40),
        ({"cache_size": 5}, None),  # only the wire spelling counts
    ],
)
def test_reserve_cache_size(data: dict[str, Any], size: int | None) -> None:
    req = v1.ReserveCacheRequest.from_json({"key": "k", "version": "v", **data})
    assert req.cache_size == size


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"version": "v"}, "'key' and 'version'"),
        ({"key": "k"}, "'key' and 'version'"),
        ({"key": 1, "version": "v"}, "'key' and 'version'"),
        ({"key": "k", "version": 1}, "'key' and 'version'"),
        ({"key": None, "version": "v"}, "'key' and 'version'"),
        ({"key": "", "version": "v"}, "empty"),
        ({"key": "a,b", "version": "v"}, "comma"),
        ({"key": "x" * 513, "version": "v"}, "513"),
        ({"key": "k", "version": ""}, "empty"),
        ({"key": "k", "version": "v" * 513}, "512"),
        ({"key": "k", "version": "v", "cacheSize": -1}, "negative"),
        ({"key": "k", "version": "v", "cacheSize": "100"}, "integer"),
        ({"key": "k", "version": "v", "cacheSize": 1.5}, "integer"),
        ({"key": "k", "version": "v", "cacheSize": 100.0}, "integer"),
        ({"key": "k", "version": "v", "cacheSize": True}, "integer"),
        ({"key": "k", "version": "v", "cacheSize": [1]}, "integer"),
    ],
)
def test_reserve_rejects(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        v1.ReserveCacheRequest.from_json(data)


# -- CommitCacheRequest -----------------------------------------------------------------------


def test_commit_from_actions_cache() -> None:
    req = v1.CommitCacheRequest.from_json(v1.decode_json(trace("v1-commit-cache.json")))
    assert req.size == 203078772


@pytest.mark.parametrize("size", [0, 1, 2**63 - 1])
def test_commit_sizes(size: int) -> None:
    assert v1.CommitCacheRequest.from_json({"size": size}).size == size


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, "integer field 'size'"),
        ({"size": None}, "integer field 'size'"),
        ({"size": -1}, "negative"),
        ({"size": "203078772"}, "integer"),
        ({"size": 1.0}, "integer"),
        ({"size": False}, "integer"),
    ],
)
def test_commit_rejects(data: dict[str, Any], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        v1.CommitCacheRequest.from_json(data)


# -- LookupQuery --------------------------------------------------------------------------------


def test_lookup_query_from_actions_cache() -> None:
    q = headers()["v1_get_cache_entry_query"]
    assert v1.LookupQuery.from_query(q["keys"], q["version"]) == v1.LookupQuery(
        keys=("c-big-1",), version=VERSION
    )


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ("primary", ("primary",)),
        ("primary,restore-a-,restore-", ("primary", "restore-a-", "restore-")),
        ("k,k", ("k", "k")),  # duplicates are kept; the service dedupes
        (",".join(f"k{i}" for i in range(10)), tuple(f"k{i}" for i in range(10))),
        ("with space,ünï", ("with space", "ünï")),
        ("index-buildkit-1-f921bd05#", ("index-buildkit-1-f921bd05#",)),
    ],
)
def test_lookup_query_splits_keys_on_commas(keys: str, expected: tuple[str, ...]) -> None:
    assert v1.LookupQuery.from_query(keys, "v").keys == expected


@pytest.mark.parametrize(
    ("keys", "version", "message"),
    [
        (None, "v", "'keys' is required"),
        ("", "v", "'keys' is required"),
        ("k", None, "'version' is required"),
        ("k", "", "'version' is required"),
        ("a,,b", "v", "empty"),
        ("a,", "v", "empty"),
        (",a", "v", "empty"),
        (",".join(f"k{i}" for i in range(11)), "v", "11 keys"),
        ("x" * 513, "v", "513"),
        ("k", "v" * 513, "512"),
    ],
)
def test_lookup_query_rejects(keys: str | None, version: str | None, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        v1.LookupQuery.from_query(keys, version)


# -- Content-Range ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("bytes 0-1023/*", (0, 1023)),
        ("bytes 0-0/*", (0, 0)),
        ("bytes 5-5/*", (5, 5)),
        ("bytes 0-1023/1024", (0, 1023)),
        ("bytes 0-1023/4096", (0, 1023)),
        ("bytes 1024-2047/2048", (1024, 2047)),
        ("  bytes 0-1023/*  ", (0, 1023)),
        ("bytes 201326592-203078771/*", (201326592, 203078771)),
    ],
)
def test_parse_content_range(value: str, expected: tuple[int, int]) -> None:
    assert v1.parse_content_range(value) == expected


def test_captured_content_ranges_tile_the_upload() -> None:
    captured = headers()["v1_content_ranges"]
    parsed = sorted(v1.parse_content_range(v) for v in captured["values"])
    assert parsed[0][0] == 0
    for (_, end), (start, _) in itertools.pairwise(parsed):
        assert start == end + 1
    assert parsed[-1][1] + 1 == captured["total_size"]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "required"),
        ("", "required"),
        ("bytes 0-1023", "malformed"),
        ("bytes=0-1023/*", "malformed"),
        ("bytes 0-1023/", "malformed"),
        ("bytes -1023/*", "malformed"),
        ("bytes 0-/*", "malformed"),
        ("bytes */1024", "malformed"),
        ("bytes a-b/*", "malformed"),
        ("bytes -1-5/*", "malformed"),
        ("items 0-1023/*", "malformed"),
        ("bytes 0-1023/*, bytes 2048-4095/*", "malformed"),
        ("bytes 0 - 1023/*", "malformed"),
        ("bytes 1024-1023/*", "ends before it starts"),
        ("bytes 10-0/*", "ends before it starts"),
        ("bytes 0-1023/1023", "beyond its total"),
        ("bytes 0-1023/0", "beyond its total"),
    ],
)
def test_parse_content_range_rejects(value: str | None, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        v1.parse_content_range(value)


# -- responses ----------------------------------------------------------------------------------


def test_entry_json_hit_has_githubs_field_names() -> None:
    body = v1.entry_json(
        key="c-big-1",
        version=VERSION,
        scope="refs/heads/main",
        created_at="2026-11-27T17:46:31.663390Z",
        archive_location="http://127.0.0.1/ghacache/entries/1?sig=x",
    )
    assert body == {
        "cacheKey": "c-big-1",
        "scope": "refs/heads/main",
        "cacheVersion": VERSION,
        "creationTime": "2026-11-27T17:46:31.663390Z",
        "archiveLocation": "http://127.0.0.1/ghacache/entries/1?sig=x",
    }
    json.dumps(body)  # serialisable as is


def test_entry_json_list_item_has_no_location() -> None:
    body = v1.entry_json(
        key="k", version="v", scope="refs/heads/main", created_at="t", archive_location=None
    )
    assert "archiveLocation" not in body
    assert body["cacheKey"] == "k"


def test_reserve_response_spells_cache_id_like_github() -> None:
    # go-actions-cache and actions/toolkit both read "cacheId" (not "cacheID").
    assert v1.reserve_response(1421) == {"cacheId": 1421}


def test_error_body_is_vss_shaped() -> None:
    body = v1.error_body("Cache already exists.", type_key=v1.ALREADY_EXISTS_TYPE_KEY)
    assert set(body) == {
        "$id",
        "innerException",
        "message",
        "typeName",
        "typeKey",
        "errorCode",
        "eventId",
    }
    assert body["message"] == "Cache already exists."
    assert body["typeKey"] == v1.ALREADY_EXISTS_TYPE_KEY
    assert body["typeName"].startswith(f"GitHub.Services.Cache.{v1.ALREADY_EXISTS_TYPE_KEY}")
    assert (body["errorCode"], body["eventId"]) == (0, 3000)


def test_already_exists_type_key_is_detected_by_go_actions_cache() -> None:
    # go-actions-cache's GithubAPIError.Is(os.ErrExist): typeKey contains "AlreadyExists".
    assert "AlreadyExists" in v1.ALREADY_EXISTS_TYPE_KEY


def test_api_segment() -> None:
    assert v1.API_SEGMENT == "_apis/artifactcache"
