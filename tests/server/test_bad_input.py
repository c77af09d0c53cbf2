"""Malformed and hostile requests: a precise 4xx in the protocol's shape, and nothing changes.

Every case starts from one saved entry (``Baseline``) and ends by checking that it still
downloads byte-exact on both protocols, that no other entry became committed, and that no
key the bad request used (all start with ``bad``) is visible through lookup.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aiohttp
import pytest
from defusedxml import ElementTree

from ghacache.protocol.v2 import METHODS
from tests.conftest import Clock, ServerHandle, start_server
from tests.support import wire

KEEP_KEY = "keep-entry"


@dataclass
class Baseline:
    server: ServerHandle
    data: bytes
    blobs: set[str]


async def _committed_blobs(server: ServerHandle) -> set[str]:
    return set((await server.state.catalog.committed_blob_map()).values())


async def _save_baseline(server: ServerHandle, http: aiohttp.ClientSession) -> Baseline:
    data = os.urandom(150_000)
    await wire.v2_save(http, server.url, server.token(), KEEP_KEY, data)
    blobs = await _committed_blobs(server)
    assert len(blobs) == 1
    return Baseline(server, data, blobs)


@pytest.fixture
async def base(server: ServerHandle, http: aiohttp.ClientSession) -> Baseline:
    return await _save_baseline(server, http)


async def assert_unchanged(
    http: aiohttp.ClientSession, base: Baseline, probes: tuple[str, ...] = ("bad",)
) -> None:
    server = base.server
    token = server.token()  # fresh: some cases move the clock
    found = await wire.v2_lookup(http, server.url, token, KEEP_KEY)
    assert found["ok"] and found["matched_key"] == KEEP_KEY
    status, body, _ = await wire.download(http, found["signed_download_url"])
    assert (status, body == base.data) == (200, True)
    status, hit = await wire.v1_lookup(http, server.url, token, [KEEP_KEY])
    assert status == 200 and hit is not None
    status, body, _ = await wire.download(http, hit["archiveLocation"])
    assert (status, body == base.data) == (200, True)
    assert await _committed_blobs(server) == base.blobs
    for probe in probes:
        assert not (await wire.v2_lookup(http, server.url, token, probe))["ok"], probe
        assert (await wire.v1_lookup(http, server.url, token, [probe]))[0] == 204, probe


def assert_twirp_error(status: int, body: Any, want_status: int, *codes: str) -> None:
    assert status == want_status, (status, body)
    assert isinstance(body, dict) and set(body) == {"code", "msg"}, body
    assert body["code"] in codes, body
    assert isinstance(body["msg"], str) and body["msg"]


def assert_v1_error(status: int, raw: bytes, want_status: int, type_key: str) -> dict[str, Any]:
    assert status == want_status, (status, raw)
    body = json.loads(raw)
    assert isinstance(body["message"], str) and body["message"]
    assert body["typeKey"] == type_key, body
    return dict(body)


def assert_azure_error(status: int, raw: bytes, headers: Any, want_status: int, code: str) -> None:
    assert status == want_status, (status, raw)
    assert headers["x-ms-error-code"] == code
    assert "x-ms-request-id" in headers
    root = ElementTree.fromstring(raw)
    assert root.tag == "Error"
    assert root.findtext("Code") == code
    assert root.findtext("Message")


async def _post_raw(
    http: aiohttp.ClientSession, url: str, data: bytes, token: str
) -> tuple[int, bytes]:
    headers = {**wire.auth(token), "Content-Type": "application/json"}
    async with http.post(url, data=data, headers=headers) as r:
        return r.status, await r.read()


async def _request(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    data: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes, Any]:
    async with http.request(method, url, data=data, headers=headers or {}) as r:
        return r.status, await r.read(), r.headers.copy()


async def _reserve_v2(http: aiohttp.ClientSession, server: ServerHandle, key: str) -> str:
    status, body = await wire.twirp(
        http, server.url, "CreateCacheEntry", {"key": key, "version": wire.VERSION}, server.token()
    )
    assert status == 200 and body["ok"], body
    return str(body["signed_upload_url"])


async def _reserve_v1(http: aiohttp.ClientSession, server: ServerHandle, key: str) -> int:
    status, body = await wire.v1_reserve(http, server.url, server.token(), key)
    assert status == 201, body
    return int(body["cacheId"])


async def _finalize(
    http: aiohttp.ClientSession, server: ServerHandle, key: str, size: Any
) -> tuple[int, dict[str, Any]]:
    return await wire.twirp(
        http,
        server.url,
        "FinalizeCacheEntryUpload",
        {"key": key, "version": wire.VERSION, "size_bytes": size},
        server.token(),
    )


def _with_path(url: str, path: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=path))


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def _uploads_dir(server: ServerHandle) -> Path:
    return server.config.data_dir / "store" / "uploads"


def _staged_files(server: ServerHandle) -> list[Path]:
    return [p for p in _uploads_dir(server).rglob("*") if p.is_file()]


# -- malformed JSON and wrong types ---------------------------------------------------------

NOT_JSON = [b"{", b"not json", b'{"key": "bad-x",', b"\xff\xfe\x00{"]
NOT_OBJECT = [b"[]", b'"bad-string"', b"42", b"null", b"true"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("body", NOT_JSON + NOT_OBJECT)
async def test_twirp_body_not_a_json_object(
    base: Baseline, http: aiohttp.ClientSession, method: str, body: bytes
) -> None:
    server = base.server
    status, raw = await _post_raw(http, server.url + wire.TWIRP + method, body, server.token())
    assert_twirp_error(status, json.loads(raw), 400, "malformed", "invalid_argument")
    await assert_unchanged(http, base)


async def test_v1_reserve_and_commit_body_not_a_json_object(
    base: Baseline, http: aiohttp.ClientSession
) -> None:
    server = base.server
    token = server.token()
    cache_id = await _reserve_v1(http, server, "bad-v1-json")
    assert await wire.v1_patch(http, server.url, token, cache_id, 0, b"abc") == 204
    for body in NOT_JSON + NOT_OBJECT:
        status, raw = await _post_raw(http, server.url + wire.V1 + "caches", body, token)
        assert_v1_error(status, raw, 400, "ArgumentException")
        status, raw = await _post_raw(http, f"{server.url}{wire.V1}caches/{cache_id}", body, token)
        assert_v1_error(status, raw, 400, "ArgumentException")
    await assert_unchanged(http, base)
    # The reservation survived untouched and can still be committed.
    status, raw = await wire.v1_commit(http, server.url, token, cache_id, 3)
    assert status == 204, raw
    status, hit = await wire.v1_lookup(http, server.url, token, ["bad-v1-json"])
    assert status == 200 and hit is not None
    assert (await wire.download(http, hit["archiveLocation"]))[1] == b"abc"


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("CreateCacheEntry", {"key": 5, "version": wire.VERSION}),
        ("CreateCacheEntry", {"key": ["bad-k"], "version": wire.VERSION}),
        ("CreateCacheEntry", {"key": "bad-k", "version": 7}),
        ("CreateCacheEntry", {"key": None, "version": wire.VERSION}),
        (
            "GetCacheEntryDownloadURL",
            {"key": "bad-k", "version": wire.VERSION, "restore_keys": "bad"},
        ),
        (
            "GetCacheEntryDownloadURL",
            {"key": "bad-k", "version": wire.VERSION, "restore_keys": [1]},
        ),
        ("GetCacheEntryDownloadURL", {"key": {"k": 1}, "version": wire.VERSION}),
        ("GetCacheEntryDownloadURL", {"key": "bad-k", "version": None}),
    ],
)
async def test_twirp_wrong_field_types(
    base: Baseline, http: aiohttp.ClientSession, method: str, body: dict[str, Any]
) -> None:
    server = base.server
    status, out = await wire.twirp(http, server.url, method, body, server.token())
    assert_twirp_error(status, out, 400, "invalid_argument", "malformed")
    await assert_unchanged(http, base)


@pytest.mark.parametrize("size", ["abc", True, 1.5, -1, "-1", [3], {"n": 3}, "3.0"])
async def test_twirp_finalize_wrong_size_type(
    base: Baseline, http: aiohttp.ClientSession, size: Any
) -> None:
    server = base.server
    url = await _reserve_v2(http, server, "bad-fin-type")
    assert await wire.put_blob(http, url, b"xyz") == 201
    status, out = await _finalize(http, server, "bad-fin-type", size)
    assert_twirp_error(status, out, 400, "invalid_argument", "malformed")
    await assert_unchanged(http, base)
    # The upload is still pending and finalizes correctly afterwards.
    status, out = await _finalize(http, server, "bad-fin-type", "3")
    assert status == 200 and out["ok"], out


@pytest.mark.parametrize(
    "body",
    [
        {"key": 1, "version": wire.VERSION},
        {"key": "bad-k", "version": ["v"]},
        {"version": wire.VERSION},
        {"key": "bad-k"},
        {"key": "bad-k", "version": wire.VERSION, "cacheSize": "10"},
        {"key": "bad-k", "version": wire.VERSION, "cacheSize": -1},
        {"key": "bad-k", "version": wire.VERSION, "cacheSize": True},
        {"key": "bad-k", "version": wire.VERSION, "cacheSize": 1.5},
    ],
)
async def test_v1_reserve_wrong_field_types(
    base: Baseline, http: aiohttp.ClientSession, body: dict[str, Any]
) -> None:
    server = base.server
    async with http.post(
        server.url + wire.V1 + "caches", json=body, headers=wire.auth(server.token())
    ) as r:
        assert_v1_error(r.status, await r.read(), 400, "ArgumentException")
    await assert_unchanged(http, base)


async def test_v1_commit_wrong_field_types(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    token = server.token()
    cache_id = await _reserve_v1(http, server, "bad-commit-type")
    assert await wire.v1_patch(http, server.url, token, cache_id, 0, b"12345") == 204
    for body in ({}, {"size": "5"}, {"size": -1}, {"size": 5.0}, {"size": None}, {"size": True}):
        async with http.post(
            f"{server.url}{wire.V1}caches/{cache_id}", json=body, headers=wire.auth(token)
        ) as r:
            assert_v1_error(r.status, await r.read(), 400, "ArgumentException")
    await assert_unchanged(http, base)


async def test_unknown_twirp_method(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    status, out = await wire.twirp(
        http, server.url, "DeleteCacheEntry", {"key": "bad-k", "version": "v"}, server.token()
    )
    assert_twirp_error(status, out, 404, "bad_route")
    async with http.get(server.url + wire.TWIRP + "CreateCacheEntry") as r:
        assert_twirp_error(r.status, await r.json(content_type=None), 405, "bad_route")
    # Only the JSON flavour of Twirp is served; protobuf bodies are a bad route.
    async with http.post(
        server.url + wire.TWIRP + "CreateCacheEntry",
        data=b"\n\x05bad-k",
        headers={**wire.auth(server.token()), "Content-Type": "application/protobuf"},
    ) as r:
        assert_twirp_error(r.status, await r.json(content_type=None), 404, "bad_route")
    await assert_unchanged(http, base)


async def test_v1_bad_cache_id(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    token = server.token()
    for cache_id in ("abc", "0", "-3"):
        status, raw = await _post_raw(
            http, f"{server.url}{wire.V1}caches/{cache_id}", b'{"size": 1}', token
        )
        assert_v1_error(status, raw, 400, "ArgumentException")
    status, raw = await wire.v1_commit(http, server.url, token, 987654, 1)
    assert_v1_error(status, raw, 404, "ArtifactCacheNotFoundException")
    await assert_unchanged(http, base)


# -- v1 PATCH --------------------------------------------------------------------------------


async def _patch(
    http: aiohttp.ClientSession,
    server: ServerHandle,
    cache_id: int,
    data: bytes,
    content_range: str | None,
) -> tuple[int, bytes]:
    headers = {**wire.auth(server.token()), "Content-Type": "application/octet-stream"}
    if content_range is not None:
        headers["Content-Range"] = content_range

    async def body() -> AsyncIterator[bytes]:
        yield data

    async with http.patch(
        f"{server.url}{wire.V1}caches/{cache_id}", data=body(), headers=headers
    ) as r:
        return r.status, await r.read()


@pytest.mark.parametrize(
    "content_range",
    [
        None,
        "",
        "bytes=0-9",
        "bytes 0-9",
        "items 0-9/*",
        "bytes a-b/*",
        "bytes -9/*",
        "bytes 9-0/*",
        "bytes 0-9/5",
        "bytes 0-9/*, bytes 10-19/*",
    ],
)
async def test_v1_patch_bad_content_range(
    base: Baseline, http: aiohttp.ClientSession, content_range: str | None
) -> None:
    server = base.server
    cache_id = await _reserve_v1(http, server, "bad-range")
    status, raw = await _patch(http, server, cache_id, b"0123456789", content_range)
    assert_v1_error(status, raw, 400, "ArgumentException")
    assert await server.state.service.index.parts(cache_id) == {}
    # Nothing was staged, so a commit of the announced bytes fails.
    status, raw = await wire.v1_commit(http, server.url, server.token(), cache_id, 10)
    assert_v1_error(status, raw, 400, "ArgumentException")
    await assert_unchanged(http, base)


@pytest.mark.parametrize("actual", [50, 99, 101, 150, 0])
async def test_v1_patch_body_length_differs_from_range(
    base: Baseline, http: aiohttp.ClientSession, actual: int
) -> None:
    server = base.server
    token = server.token()
    cache_id = await _reserve_v1(http, server, "bad-length")
    status, raw = await _patch(http, server, cache_id, os.urandom(actual), "bytes 0-99/*")
    assert_v1_error(status, raw, 400, "ArgumentException")
    assert await server.state.service.index.parts(cache_id) == {}
    if actual:  # (committing 0 bytes of an upload with no chunks is a valid empty entry)
        status, raw = await wire.v1_commit(http, server.url, token, cache_id, actual)
        assert status == 400, raw
    await assert_unchanged(http, base)

    good = os.urandom(100)
    assert await wire.v1_patch(http, server.url, token, cache_id, 0, good) == 204
    status, raw = await wire.v1_commit(http, server.url, token, cache_id, 100)
    assert status == 204, raw
    status, hit = await wire.v1_lookup(http, server.url, token, ["bad-length"])
    assert status == 200 and hit is not None
    assert (await wire.download(http, hit["archiveLocation"]))[1] == good


@pytest.mark.parametrize("actual", [50, 150])
async def test_v1_bad_patch_does_not_replace_a_good_chunk(
    base: Baseline, http: aiohttp.ClientSession, actual: int
) -> None:
    """A wrong-length re-send of a range must not clobber the chunk already staged for it."""
    server = base.server
    token = server.token()
    cache_id = await _reserve_v1(http, server, "bad-resend")
    good = os.urandom(100)
    assert await wire.v1_patch(http, server.url, token, cache_id, 0, good) == 204
    status, raw = await _patch(http, server, cache_id, os.urandom(actual), "bytes 0-99/*")
    assert_v1_error(status, raw, 400, "ArgumentException")
    status, raw = await wire.v1_commit(http, server.url, token, cache_id, 100)
    assert status == 204, raw
    status, hit = await wire.v1_lookup(http, server.url, token, ["bad-resend"])
    assert status == 200 and hit is not None
    status, body, headers = await wire.download(http, hit["archiveLocation"])
    assert status == 200 and headers["Content-Length"] == "100"
    assert body == good


async def test_v1_commit_size_mismatch(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    token = server.token()
    cache_id = await _reserve_v1(http, server, "bad-commit-size")
    data = os.urandom(1000)
    assert await wire.v1_patch(http, server.url, token, cache_id, 0, data[:600]) == 204
    assert await wire.v1_patch(http, server.url, token, cache_id, 600, data[600:]) == 204
    for size in (999, 1001, 0):
        status, raw = await wire.v1_commit(http, server.url, token, cache_id, size)
        assert_v1_error(status, raw, 400, "ArgumentException")
    await assert_unchanged(http, base)
    status, raw = await wire.v1_commit(http, server.url, token, cache_id, 1000)
    assert status == 204, raw


async def test_v1_commit_with_gap(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    token = server.token()
    cache_id = await _reserve_v1(http, server, "bad-gap")
    assert await wire.v1_patch(http, server.url, token, cache_id, 0, b"a" * 10) == 204
    assert await wire.v1_patch(http, server.url, token, cache_id, 20, b"c" * 10) == 204
    status, raw = await wire.v1_commit(http, server.url, token, cache_id, 30)
    assert_v1_error(status, raw, 400, "ArgumentException")
    await assert_unchanged(http, base)


# -- v2 finalize -----------------------------------------------------------------------------


async def test_v2_finalize_size_mismatch(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    url = await _reserve_v2(http, server, "bad-fin-size")
    data = os.urandom(4321)
    assert await wire.put_blob(http, url, data) == 201
    for size in ("4320", "4322", "0", 10**12):
        status, out = await _finalize(http, server, "bad-fin-size", size)
        assert_twirp_error(status, out, 400, "invalid_argument")
    await assert_unchanged(http, base)
    status, out = await _finalize(http, server, "bad-fin-size", str(len(data)))
    assert status == 200 and out["ok"], out


async def test_v2_finalize_before_upload(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    await _reserve_v2(http, server, "bad-early")
    status, out = await _finalize(http, server, "bad-early", "0")
    assert_twirp_error(status, out, 412, "failed_precondition")
    await assert_unchanged(http, base)


async def test_v2_finalize_unknown_key(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    status, out = await _finalize(http, server, "bad-never-reserved", "10")
    assert_twirp_error(status, out, 404, "not_found")
    # Finalizing a committed entry again is not a way to re-commit it either.
    status, out = await _finalize(http, server, KEEP_KEY, str(len(base.data)))
    assert_twirp_error(status, out, 404, "not_found")
    await assert_unchanged(http, base)


# -- the blob (Azure) surface ----------------------------------------------------------------


async def test_block_list_naming_unknown_block(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    url = await _reserve_v2(http, server, "bad-blocklist")
    staged = wire.js_block_id(0)
    status, raw, headers = await _request(
        http, "PUT", url + "&comp=block&blockid=" + wire._q(staged), b"x" * 100
    )
    assert status == 201, raw
    ids = [staged, wire.js_block_id(1)]
    status, raw, headers = await _request(
        http, "PUT", url + "&comp=blocklist", wire.block_list(ids)
    )
    assert_azure_error(status, raw, headers, 400, "InvalidInput")
    status, out = await _finalize(http, server, "bad-blocklist", "100")
    assert_twirp_error(status, out, 412, "failed_precondition")
    await assert_unchanged(http, base)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not xml",
        b"<NotABlockList/>",
        b"<BlockList><Bogus>AAAA</Bogus></BlockList>",
        b'<!DOCTYPE x [<!ENTITY a "aaaa">]><BlockList><Latest>&a;</Latest></BlockList>',
    ],
)
async def test_bad_block_list_xml(base: Baseline, http: aiohttp.ClientSession, body: bytes) -> None:
    server = base.server
    url = await _reserve_v2(http, server, "bad-xml")
    status, raw, headers = await _request(http, "PUT", url + "&comp=blocklist", body)
    assert_azure_error(status, raw, headers, 400, "InvalidInput")
    await assert_unchanged(http, base)


async def test_put_blob_without_blob_type(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    url = await _reserve_v2(http, server, "bad-blobtype")
    for headers in ({}, {"x-ms-blob-type": "AppendBlob"}, {"x-ms-blob-type": "blockblob"}):
        status, raw, resp_headers = await _request(http, "PUT", url, b"data", headers)
        assert_azure_error(status, raw, resp_headers, 400, "InvalidInput")
    status, out = await _finalize(http, server, "bad-blobtype", "4")
    assert_twirp_error(status, out, 412, "failed_precondition")
    assert _staged_files(server) == []
    await assert_unchanged(http, base)


@pytest.mark.parametrize("comp", ["appendblock", "metadata", "page", "", "BLOCK"])
async def test_unsupported_comp(base: Baseline, http: aiohttp.ClientSession, comp: str) -> None:
    server = base.server
    url = await _reserve_v2(http, server, "bad-comp")
    status, raw, headers = await _request(
        http, "PUT", f"{url}&comp={comp}", b"data", {"x-ms-blob-type": "BlockBlob"}
    )
    assert_azure_error(status, raw, headers, 400, "InvalidInput")
    assert _staged_files(server) == []
    await assert_unchanged(http, base)


@pytest.mark.parametrize(
    "block_id",
    [
        None,
        "",
        "!!!not-base64!!!",
        "QUJ",  # truncated: incorrect padding
        base64.b64encode(b"x" * 65).decode(),
    ],
)
async def test_invalid_block_id(
    base: Baseline, http: aiohttp.ClientSession, block_id: str | None
) -> None:
    server = base.server
    url = await _reserve_v2(http, server, "bad-blockid")
    target = url + "&comp=block"
    if block_id is not None:
        target += "&blockid=" + wire._q(block_id)
    status, raw, headers = await _request(http, "PUT", target, b"data")
    assert_azure_error(status, raw, headers, 400, "InvalidInput")
    assert _staged_files(server) == []
    await assert_unchanged(http, base)


def _flip(sig: str, at: int) -> str:
    c = sig[at]
    return sig[:at] + ("A" if c != "A" else "B") + sig[at + 1 :]


async def test_forged_signatures(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    found = await wire.v2_lookup(http, server.url, server.token(), KEEP_KEY)
    download_url = found["signed_download_url"]
    upload_url = await _reserve_v2(http, server, "bad-forged")
    sig = dict(parse_qsl(urlsplit(download_url).query))["sig"]
    for at in (0, len(sig) // 2, len(sig) - 1):
        forged = _with_query(download_url, sig=_flip(sig, at))
        status, raw, headers = await _request(http, "GET", forged)
        assert_azure_error(status, raw, headers, 403, "AuthenticationFailed")
        assert base.data[:64] not in raw
    up_sig = dict(parse_qsl(urlsplit(upload_url).query))["sig"]
    forged = _with_query(upload_url, sig=_flip(up_sig, 3))
    status, raw, headers = await _request(
        http, "PUT", forged, b"evil", {"x-ms-blob-type": "BlockBlob"}
    )
    assert_azure_error(status, raw, headers, 403, "AuthenticationFailed")
    # Tampering with the signed expiry or direction breaks the signature too.
    for change in ({"se": "2099-01-01T00:00:00Z"}, {"sp": "cw"}):
        status, raw, headers = await _request(http, "GET", _with_query(download_url, **change))
        assert_azure_error(status, raw, headers, 403, "AuthenticationFailed")
    # An unsigned URL is a missing credential.
    status, raw, headers = await _request(http, "GET", download_url.split("?")[0])
    assert_azure_error(status, raw, headers, 401, "NoAuthenticationInformation")
    assert _staged_files(server) == []
    status, out = await _finalize(http, server, "bad-forged", "4")
    assert_twirp_error(status, out, 412, "failed_precondition")
    await assert_unchanged(http, base)


async def test_urls_used_in_the_wrong_direction(
    base: Baseline, http: aiohttp.ClientSession
) -> None:
    server = base.server
    found = await wire.v2_lookup(http, server.url, server.token(), KEEP_KEY)
    download_url = found["signed_download_url"]
    upload_url = await _reserve_v2(http, server, "bad-direction")
    assert await wire.put_blob(http, upload_url, b"pending bytes") == 201

    # No download verb exists on upload URLs, and no upload verb on download URLs.
    for method in ("GET", "HEAD"):
        status, raw, headers = await _request(http, method, upload_url)
        assert status == 405, raw
        assert headers["x-ms-error-code"] == "UnsupportedHttpVerb"
        assert b"pending bytes" not in raw
    status, raw, headers = await _request(
        http, "PUT", download_url, b"overwrite", {"x-ms-blob-type": "BlockBlob"}
    )
    assert_azure_error(status, raw, headers, 405, "UnsupportedHttpVerb")

    # A signature moved to the other container does not verify there.
    up_path, down_path = urlsplit(upload_url).path, urlsplit(download_url).path
    up_as_download = _with_path(upload_url, up_path.replace("/uploads/", "/entries/"))
    status, raw, headers = await _request(http, "GET", up_as_download)
    assert_azure_error(status, raw, headers, 403, "AuthenticationFailed")
    assert b"pending bytes" not in raw
    down_as_upload = _with_path(download_url, down_path.replace("/entries/", "/uploads/"))
    status, raw, headers = await _request(
        http, "PUT", down_as_upload, b"overwrite", {"x-ms-blob-type": "BlockBlob"}
    )
    assert_azure_error(status, raw, headers, 403, "AuthenticationFailed")

    assert not (await wire.v2_lookup(http, server.url, server.token(), "bad-direction"))["ok"]
    await assert_unchanged(http, base)
    status, out = await _finalize(http, server, "bad-direction", str(len(b"pending bytes")))
    assert status == 200 and out["ok"], out


async def test_url_of_one_entry_on_another_path(
    base: Baseline, http: aiohttp.ClientSession
) -> None:
    server = base.server
    other_data = os.urandom(9999)
    await wire.v2_save(http, server.url, server.token(), "other-entry", other_data)
    base.blobs = await _committed_blobs(server)
    keep = (await wire.v2_lookup(http, server.url, server.token(), KEEP_KEY))["signed_download_url"]
    other = (await wire.v2_lookup(http, server.url, server.token(), "other-entry"))[
        "signed_download_url"
    ]
    other_path = urlsplit(other).path
    status, raw, headers = await _request(http, "GET", _with_path(keep, other_path))
    assert_azure_error(status, raw, headers, 403, "AuthenticationFailed")
    assert other_data[:64] not in raw

    first = await _reserve_v2(http, server, "bad-first")
    second = await _reserve_v2(http, server, "bad-second")
    status, raw, headers = await _request(
        http,
        "PUT",
        _with_path(first, urlsplit(second).path),
        b"misdirected",
        {"x-ms-blob-type": "BlockBlob"},
    )
    assert_azure_error(status, raw, headers, 403, "AuthenticationFailed")
    for key in ("bad-first", "bad-second"):
        status, out = await _finalize(http, server, key, "11")
        assert_twirp_error(status, out, 412, "failed_precondition")
    assert _staged_files(server) == []
    await assert_unchanged(http, base)


async def test_expired_urls(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    download_url = (await wire.v2_lookup(http, server.url, server.token(), KEEP_KEY))[
        "signed_download_url"
    ]
    upload_url = await _reserve_v2(http, server, "bad-expired")
    server.clock.advance(server.config.url_ttl + 1)

    status, raw, headers = await _request(http, "GET", download_url)
    assert status in (401, 403)
    assert_azure_error(status, raw, headers, status, headers["x-ms-error-code"])
    assert base.data[:64] not in raw
    status, raw, headers = await _request(
        http, "PUT", upload_url, b"late", {"x-ms-blob-type": "BlockBlob"}
    )
    assert status in (401, 403)
    assert_azure_error(status, raw, headers, status, headers["x-ms-error-code"])
    assert _staged_files(server) == []
    await assert_unchanged(http, base)


# -- keys and versions -----------------------------------------------------------------------

BAD_KEYS = [
    pytest.param("bad" + "k" * 510, id="513-chars"),
    pytest.param("bad,comma", id="comma"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_key_v2(base: Baseline, http: aiohttp.ClientSession, key: str) -> None:
    server = base.server
    token = server.token()
    ident = {"key": key, "version": wire.VERSION}
    status, out = await wire.twirp(http, server.url, "CreateCacheEntry", ident, token)
    assert_twirp_error(status, out, 400, "invalid_argument")
    status, out = await wire.twirp(http, server.url, "GetCacheEntryDownloadURL", ident, token)
    assert_twirp_error(status, out, 400, "invalid_argument")
    restore = {"key": "bad-ok", "version": wire.VERSION, "restore_keys": [key]}
    status, out = await wire.twirp(http, server.url, "GetCacheEntryDownloadURL", restore, token)
    assert_twirp_error(status, out, 400, "invalid_argument")
    status, out = await _finalize(http, server, key, "1")
    assert_twirp_error(status, out, 400, "invalid_argument")
    await assert_unchanged(http, base)


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_key_v1(base: Baseline, http: aiohttp.ClientSession, key: str) -> None:
    server = base.server
    token = server.token()
    status, out = await wire.v1_reserve(http, server.url, token, key)
    assert_v1_error(status, json.dumps(out).encode(), 400, "ArgumentException")
    if "," not in key:  # v1 lookups join keys with commas: a comma key is two keys there
        async with http.get(
            server.url + wire.V1 + "cache",
            params={"keys": f"bad-ok,{key}" if key else "bad-ok,,x", "version": wire.VERSION},
            headers=wire.auth(token),
        ) as r:
            assert_v1_error(r.status, await r.read(), 400, "ArgumentException")
    await assert_unchanged(http, base)


async def test_513_char_key_limit_is_exact(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    ok = "bad" + "k" * 509
    assert len(ok) == 512
    await wire.v2_save(http, server.url, server.token(), ok, b"fits")
    found = await wire.v2_lookup(http, server.url, server.token(), ok)
    assert found["ok"] and found["matched_key"] == ok


async def test_eleven_keys(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    token = server.token()
    restore = [f"bad-{i}" for i in range(10)]
    body = {"key": KEEP_KEY, "version": wire.VERSION, "restore_keys": restore}
    status, out = await wire.twirp(http, server.url, "GetCacheEntryDownloadURL", body, token)
    assert_twirp_error(status, out, 400, "invalid_argument")
    status, hit = await wire.v1_lookup(http, server.url, token, [KEEP_KEY, *restore])
    assert_v1_error(status, json.dumps(hit).encode(), 400, "ArgumentException")
    # Ten keys are fine.
    body["restore_keys"] = restore[:9]
    status, out = await wire.twirp(http, server.url, "GetCacheEntryDownloadURL", body, token)
    assert status == 200 and out["ok"], out
    await assert_unchanged(http, base)


async def test_empty_version(base: Baseline, http: aiohttp.ClientSession) -> None:
    server = base.server
    token = server.token()
    for method in ("CreateCacheEntry", "GetCacheEntryDownloadURL"):
        for body in ({"key": "bad-v"}, {"key": "bad-v", "version": ""}):
            status, out = await wire.twirp(http, server.url, method, body, token)
            assert_twirp_error(status, out, 400, "invalid_argument")
    status, out = await wire.v1_reserve(http, server.url, token, "bad-v", version="")
    assert_v1_error(status, json.dumps(out).encode(), 400, "ArgumentException")
    status, hit = await wire.v1_lookup(http, server.url, token, ["bad-v"], version="")
    assert_v1_error(status, json.dumps(hit).encode(), 400, "ArgumentException")
    async with http.get(
        server.url + wire.V1 + "cache", params={"keys": "bad-v"}, headers=wire.auth(token)
    ) as r:
        assert_v1_error(r.status, await r.read(), 400, "ArgumentException")
    await assert_unchanged(http, base)


# -- size limits -----------------------------------------------------------------------------

MIB = 1024 * 1024


@pytest.fixture
async def small_server(tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    handle, runner = await start_server(tmp_path, clock, max_entry_size="1MiB")
    try:
        yield handle
    finally:
        await runner.cleanup()


async def test_v1_reserve_over_max_entry_size(
    small_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    base = await _save_baseline(small_server, http)
    token = small_server.token()
    status, out = await wire.v1_reserve(http, small_server.url, token, "bad-huge", size=MIB + 1)
    assert_v1_error(status, json.dumps(out).encode(), 413, "ArtifactCacheTooLargeException")
    await assert_unchanged(http, base)
    # The key was not reserved: exactly the limit is accepted.
    status, out = await wire.v1_reserve(http, small_server.url, token, "bad-huge", size=MIB)
    assert status == 201, out


async def test_v2_put_blob_over_max_entry_size(
    small_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    base = await _save_baseline(small_server, http)
    url = await _reserve_v2(http, small_server, "bad-huge")
    entry_id = int(urlsplit(url).path.rsplit("/", 1)[1])

    async def body() -> AsyncIterator[bytes]:
        for _ in range(2):
            yield os.urandom(MIB // 2)
        yield b"!"

    status, raw, headers = await _request(http, "PUT", url, body(), {"x-ms-blob-type": "BlockBlob"})
    assert_azure_error(status, raw, headers, 413, "RequestBodyTooLarge")
    assert _staged_files(small_server) == []
    assert await small_server.state.service.index.parts(entry_id) == {}
    status, out = await _finalize(http, small_server, "bad-huge", str(MIB + 1))
    assert_twirp_error(status, out, 412, "failed_precondition")
    await assert_unchanged(http, base)

    # The same reservation still accepts a blob of exactly the limit.
    data = os.urandom(MIB)
    assert await wire.put_blob(http, url, data) == 201
    status, out = await _finalize(http, small_server, "bad-huge", str(MIB))
    assert status == 200 and out["ok"], out
