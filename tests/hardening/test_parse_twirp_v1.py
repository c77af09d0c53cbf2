"""Property tests of the request and response codecs of both protocols (v2 Twirp JSON, v1).

(a) Anything in gives a value or the module's documented ``RemoteProtocolError``, nothing
else; (b) what the encoders write parses back to the same value; (c) what a parser accepts
obeys the protocol's limits (keys, int64 sizes, Content-Range order).
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ghacache.errors import RemoteProtocolError
from ghacache.protocol import v1, v2
from ghacache.protocol.keys import MAX_KEY_CHARS, MAX_KEYS
from tests.hardening.parse_support import (
    HOSTILE_JSON,
    MANY,
    SOME,
    any_text,
    bytes_or_json,
    json_scalars,
    json_values,
    objects_with,
    props,
    to_json_bytes,
)

INT64_MAX = 2**63 - 1

# Keys and versions GitHub accepts: 1-512 characters, no comma, no NUL (no lone surrogate:
# st.characters leaves them out by default). Mostly short (long text is slow to generate),
# sometimes right at the limit.
_key_chars = st.characters(codec="utf-8", exclude_characters=",\x00")
valid_keys = st.text(_key_chars, min_size=1, max_size=40) | st.builds(
    lambda head, fill: (head + fill * MAX_KEY_CHARS)[:MAX_KEY_CHARS],
    st.text(_key_chars, max_size=8),
    _key_chars,
)
valid_versions = st.text(
    st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=64
)
sizes = st.integers(min_value=0, max_value=INT64_MAX)

V2_FIELDS = ["key", "version", "size_bytes", "sizeBytes", "restore_keys", "restoreKeys"]
V1_FIELDS = ["key", "version", "cacheSize", "size"]
field_values = json_scalars | st.lists(any_text, max_size=12) | sizes.map(str) | json_values()


def assert_valid_key(key: str) -> None:
    assert 0 < len(key) <= MAX_KEY_CHARS
    assert "," not in key and "\x00" not in key
    key.encode()  # no lone surrogate


def assert_valid_version(version: str) -> None:
    assert 0 < len(version) <= 512 and "\x00" not in version
    version.encode()


def hostile(test: Any) -> Any:
    for body in HOSTILE_JSON:
        test = example(body)(test)
    return test


# -- v2 (Twirp) requests ----------------------------------------------------------------------


@props(MANY)
@given(bytes_or_json(json_values()))
@hostile
def test_v2_decode_body_gives_an_object_or_malformed(body: bytes) -> None:
    try:
        data = v2.decode_body(body)
    except v2.MalformedRequest:
        return
    assert isinstance(data, dict) and None not in data.values()


@props(SOME)
@given(objects_with(V2_FIELDS, field_values))
def test_v2_requests_from_any_object(data: dict[str, Any]) -> None:
    data = v2.decode_body(to_json_bytes(data))
    for message in (
        v2.CreateCacheEntryRequest,
        v2.FinalizeCacheEntryUploadRequest,
        v2.GetCacheEntryDownloadURLRequest,
    ):
        try:
            req = message.from_json(data)
        except RemoteProtocolError:
            continue
        if isinstance(req, v2.GetCacheEntryDownloadURLRequest):
            assert 1 <= len(req.keys) <= MAX_KEYS
            for key in req.keys:
                assert_valid_key(key)
        else:
            assert_valid_key(req.key)
        assert_valid_version(req.version)
        if isinstance(req, v2.FinalizeCacheEntryUploadRequest):
            assert 0 <= req.size_bytes <= INT64_MAX


@props(MANY)
@given(st.integers() | st.integers().map(str) | any_text)
@example(str(INT64_MAX + 1))
@example("9" * 5000)  # int() refuses this many digits (a ValueError, not a protocol error)
@example("٣")
def test_v2_size_is_an_int64_or_refused(size: Any) -> None:
    data = {"key": "k", "version": "v", "size_bytes": size}
    try:
        req = v2.FinalizeCacheEntryUploadRequest.from_json(data)
    except RemoteProtocolError:
        as_int = size if isinstance(size, int) else None
        if isinstance(size, str) and size.isascii() and size.isdigit() and len(size) < 30:
            as_int = int(size)
        assert as_int is None or not 0 <= as_int <= INT64_MAX
        return
    assert 0 <= req.size_bytes <= INT64_MAX
    assert req.size_bytes == int(size)


@props(MANY)
@given(valid_keys, valid_versions, sizes, st.lists(valid_keys, max_size=MAX_KEYS - 1))
def test_v2_requests_round_trip(key: str, version: str, size: int, restore: list[str]) -> None:
    create = v2.CreateCacheEntryRequest(key=key, version=version)
    finalize = v2.FinalizeCacheEntryUploadRequest(key=key, version=version, size_bytes=size)
    lookup = v2.GetCacheEntryDownloadURLRequest(
        key=key, restore_keys=tuple(restore), version=version
    )
    for req in (create, finalize, lookup):
        wire = to_json_bytes(req.to_json())
        assert type(req).from_json(v2.decode_body(wire)) == req


@props(SOME)
@given(objects_with(["ok", "signed_upload_url", "signedUploadUrl", "message"], field_values))
def test_v2_responses_from_any_object(data: dict[str, Any]) -> None:
    for message in (
        v2.CreateCacheEntryResponse,
        v2.FinalizeCacheEntryUploadResponse,
        v2.GetCacheEntryDownloadURLResponse,
    ):
        try:
            resp = message.from_json(data)
        except RemoteProtocolError:
            continue
        assert isinstance(resp.ok, bool)


@props(MANY)
@given(st.booleans(), any_text, st.integers(min_value=1, max_value=INT64_MAX), any_text)
def test_v2_responses_round_trip(ok: bool, url: str, entry_id: int, key: str) -> None:
    created = v2.CreateCacheEntryResponse.from_json(v2.create_response(url))
    assert (created.ok, created.signed_upload_url) == (True, url)
    assert v2.FinalizeCacheEntryUploadResponse.from_json(
        v2.finalize_response(entry_id)
    ).entry_id == (entry_id)
    found = v2.GetCacheEntryDownloadURLResponse.from_json(v2.download_response(url, key))
    assert (found.signed_download_url, found.matched_key) == (url, key)
    assert not v2.GetCacheEntryDownloadURLResponse.from_json(v2.download_miss()).ok


# -- v1 requests --------------------------------------------------------------------------


@props(MANY)
@given(bytes_or_json(json_values()))
@hostile
def test_v1_decode_json_gives_an_object_or_protocol_error(body: bytes) -> None:
    try:
        data = v1.decode_json(body)
    except RemoteProtocolError:
        return
    assert isinstance(data, dict)


@props(SOME)
@given(objects_with(V1_FIELDS, field_values))
def test_v1_requests_from_any_object(data: dict[str, Any]) -> None:
    data = v1.decode_json(to_json_bytes(data))
    try:
        reserve = v1.ReserveCacheRequest.from_json(data)
    except RemoteProtocolError:
        pass
    else:
        assert_valid_key(reserve.key)
        assert_valid_version(reserve.version)
        assert reserve.cache_size is None or reserve.cache_size >= 0
    try:
        commit = v1.CommitCacheRequest.from_json(data)
    except RemoteProtocolError:
        pass
    else:
        assert commit.size >= 0 and not isinstance(commit.size, bool)


@props(MANY)
@given(valid_keys, valid_versions, st.none() | sizes)
def test_v1_requests_round_trip(key: str, version: str, size: int | None) -> None:
    reserve = v1.ReserveCacheRequest(key=key, version=version, cache_size=size)
    assert v1.ReserveCacheRequest.from_json(v1.decode_json(to_json_bytes(reserve.to_json()))) == (
        reserve
    )
    commit = v1.CommitCacheRequest(size=size or 0)
    assert v1.CommitCacheRequest.from_json(json.loads(json.dumps(commit.to_json()))) == commit


@props(MANY)
@given(st.none() | any_text, st.none() | any_text)
@example(",".join(["k"] * 11), "v")
@example("a,,b", "v")
def test_v1_lookup_query_from_any_text(keys: str | None, version: str | None) -> None:
    try:
        query = v1.LookupQuery.from_query(keys, version)
    except RemoteProtocolError:
        return
    assert 1 <= len(query.keys) <= MAX_KEYS
    for key in query.keys:
        assert_valid_key(key)
    assert_valid_version(query.version)


@props(MANY)
@given(st.lists(valid_keys, min_size=1, max_size=MAX_KEYS), valid_versions)
def test_v1_lookup_query_round_trip(keys: list[str], version: str) -> None:
    query = v1.LookupQuery(keys=tuple(keys), version=version)
    params = query.to_query()
    assert v1.LookupQuery.from_query(params["keys"], params["version"]) == query


# -- Content-Range (v1 PATCH) -------------------------------------------------------------

content_ranges = st.one_of(
    any_text,
    st.builds(
        "bytes {}-{}/{}".format,
        st.integers(min_value=-5, max_value=10**20),
        st.integers(min_value=-5, max_value=10**20),
        st.sampled_from(["*", "0", "10", "x", ""]) | st.integers(0, 10**20).map(str),
    ),
    st.from_regex(r"\Abytes [0-9\u0660-\u0669]{1,3}-[0-9]{1,3}/(\*|[0-9]{1,3})\s?\Z"),
)


@props(MANY)
@given(st.none() | content_ranges)
@example("bytes 9-0/*")
@example("bytes 0-9/*\n")
@example("bytes \u0660-\u0669/*")
@example("bytes 0-9/9")
def test_content_range_is_ordered_or_refused(value: str | None) -> None:
    try:
        start, end = v1.parse_content_range(value)
    except RemoteProtocolError:
        return
    assert value is not None
    assert 0 <= start <= end
    # Only what the grammar allows was accepted: ASCII digits, a total (if any) beyond end.
    m = re.fullmatch(r"bytes ([0-9]+)-([0-9]+)/(\*|[0-9]+)", value.strip())
    assert m is not None and (int(m[1]), int(m[2])) == (start, end)
    assert m[3] == "*" or int(m[3]) > end


@props(MANY)
@given(
    st.integers(min_value=0, max_value=10**18),
    st.integers(min_value=0, max_value=10**18),
    st.none() | st.integers(min_value=1, max_value=10**18),
)
def test_content_range_round_trip(start: int, length: int, extra: int | None) -> None:
    end = start + length
    total = "*" if extra is None else str(end + extra)
    assert v1.parse_content_range(f"bytes {start}-{end}/{total}") == (start, end)
    if length:  # start > end is always refused
        with pytest.raises(RemoteProtocolError):
            v1.parse_content_range(f"bytes {end}-{start}/*")


# -- v1 responses (the client side) -------------------------------------------------------


@props(SOME)
@given(objects_with(["cacheId", "cacheID", "cacheKey", "archiveLocation", "scope"], field_values))
def test_v1_responses_from_any_object(data: dict[str, Any]) -> None:
    try:
        reserved = v1.ReserveCacheResponse.from_json(data)
    except RemoteProtocolError:
        pass
    else:
        assert isinstance(reserved.cache_id, int) and reserved.cache_id > 0
    try:
        hit = v1.ArtifactCacheEntry.from_json(data)
    except RemoteProtocolError:
        return
    assert hit is None or (hit.cache_key and hit.archive_location)


@props(MANY)
@given(st.integers(min_value=1, max_value=INT64_MAX), valid_keys, valid_versions, any_text)
def test_v1_responses_round_trip(cache_id: int, key: str, version: str, location: str) -> None:
    assert v1.ReserveCacheResponse.from_json(v1.reserve_response(cache_id)).cache_id == cache_id
    body = v1.entry_json(
        key=key,
        version=version,
        scope="refs/heads/main",
        created_at="2024-01-01T00:00:00Z",
        archive_location=location or "x",
    )
    hit = v1.ArtifactCacheEntry.from_json(json.loads(json.dumps(body)))
    assert hit is not None
    assert (hit.cache_key, hit.cache_version, hit.archive_location) == (
        key,
        version,
        location or "x",
    )
