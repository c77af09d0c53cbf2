"""Hostile HTTP against the real server: XML bombs, huge headers and URLs, slow-drip bodies,
path traversal, block-count and entry-size limits.

``tests/server/test_bad_input.py`` covers malformed JSON, bad Content-Ranges, block ids and
signatures; this file adds what an attacker would send on purpose. Raw sockets are used
where a well-behaved client library would refuse or normalise the request. Every case
checks the server's answer, that nothing was staged or committed that should not be, and
that the server goes on serving.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import os
import re
import resource
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from defusedxml import ElementTree

from ghacache.protocol import azblob
from tests.conftest import Clock, ServerHandle, serving
from tests.support import wire

MIB = 1024 * 1024
TWIRP_CREATE = wire.TWIRP + "CreateCacheEntry"
IDENT = b'{"key": "k", "version": "v"}'


# -- raw HTTP ---------------------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]  # lower-cased names
    body: bytes
    closed: bool  # the server closed the connection after answering


def _port(server: ServerHandle) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def _read_answer(reader: asyncio.StreamReader) -> Answer:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Answer(status, headers, body, closed=False)


async def exchange(
    server: ServerHandle,
    request: bytes,
    *,
    drip: bytes = b"",
    drip_every_s: float = 0.0,
    until_closed: bool = False,
) -> Answer:
    """Send ``request``, then ``drip`` one byte at a time; return the answer. With
    ``until_closed``, also wait (30 s at most, a guard against hanging) to see whether the
    server closes the connection after answering."""
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    try:
        writer.write(request)
        await writer.drain()

        async def dripping() -> None:
            for i in range(len(drip)):
                await asyncio.sleep(drip_every_s)
                writer.write(drip[i : i + 1])
                await writer.drain()

        sender = asyncio.create_task(dripping())
        try:
            answer = await _read_answer(reader)
            if until_closed:
                try:
                    answer.closed = await asyncio.wait_for(reader.read(1), 30) == b""
                except ConnectionError:
                    answer.closed = True
                except TimeoutError:
                    answer.closed = False
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
        return answer
    finally:
        writer.close()


def http_request(
    method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def target_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}" if parts.query else parts.path


# -- what the server leaves on disk -------------------------------------------------------------

_UPLOAD_PART = re.compile(r"=data|=assembled|blob|b[0-9a-f]{2,128}|o[0-9]{20}|.+@[0-9]+\+[0-9]+")


def assert_store_is_tidy(server: ServerHandle, tmp_path: Path) -> None:
    """Every file the server wrote is one of its own, in its own place under the data dir."""
    data = server.config.data_dir
    assert sorted(p.name for p in tmp_path.iterdir()) == [data.name]
    allowed_top = {"secret", "index.sqlite", "index.sqlite-wal", "index.sqlite-shm", "store"}
    assert {p.name for p in data.iterdir()} <= allowed_top
    store = data / "store"
    assert {p.name for p in store.iterdir()} <= {"uploads", "blobs"}
    for path in (store / "blobs").rglob("*"):
        if path.is_file():
            assert re.fullmatch(r"[0-9]+-[0-9a-f]{16}", path.name), path
            assert path.parent.parent == store / "blobs" and path.parent.name == path.name[-2:]
    for path in (store / "uploads").rglob("*"):
        if path.is_file():
            assert re.fullmatch(r"[0-9a-f]{24}", path.parent.name), path
            assert path.parent.parent == store / "uploads"
            assert _UPLOAD_PART.fullmatch(path.name), path


def staged_files(server: ServerHandle) -> list[Path]:
    """Staged parts: files of their own, and markers of parts written in place.

    ``=data`` is left out: a part being written in place goes there before its marker makes
    it visible, and a failed write leaves its bytes there, unreferenced, until the upload
    is committed or expires.
    """
    uploads = server.config.data_dir / "store" / "uploads"
    return [p for p in uploads.rglob("*") if p.is_file() and p.name != "=data"]


async def committed_count(server: ServerHandle) -> int:
    return len(await server.state.catalog.committed_blob_map())


async def assert_still_serving(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    key = f"alive-{uuid.uuid4()}"
    data = os.urandom(1000)
    await wire.v2_save(http, server.url, server.token(), key, data)
    found = await wire.v2_lookup(http, server.url, server.token(), key)
    status, body, _ = await wire.download(http, found["signed_download_url"])
    assert (status, body) == (200, data)


async def reserve_v2(http: aiohttp.ClientSession, server: ServerHandle, key: str) -> str:
    status, body = await wire.twirp(
        http, server.url, "CreateCacheEntry", {"key": key, "version": wire.VERSION}, server.token()
    )
    assert status == 200 and body["ok"], body
    return str(body["signed_upload_url"])


async def finalize(
    http: aiohttp.ClientSession, server: ServerHandle, key: str, size: int
) -> tuple[int, dict[str, object]]:
    return await wire.twirp(
        http,
        server.url,
        "FinalizeCacheEntryUpload",
        {"key": key, "version": wire.VERSION, "size_bytes": str(size)},
        server.token(),
    )


def entry_id_of(url: str) -> int:
    return int(urlsplit(url).path.rsplit("/", 1)[1])


def assert_azure_error(answer: Answer, status: int, code: str) -> None:
    assert answer.status == status, answer
    assert answer.headers["x-ms-error-code"] == code
    assert ElementTree.fromstring(answer.body).findtext("Code") == code


# -- XML bombs in Put Block List --------------------------------------------------------------

_LAUGHS = b"".join(b'<!ENTITY l%d "%s">' % (i, (b"&l%d;" % (i - 1)) * 10) for i in range(1, 10))
XML_BOMBS = {
    "billion-laughs": b'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY l0 "lol">'
    + _LAUGHS
    + b"]><BlockList><Latest>&l9;</Latest></BlockList>",
    "quadratic": b'<!DOCTYPE b [<!ENTITY a "'
    + b"A" * 100_000
    + b'">]><BlockList><Latest>'
    + b"&a;" * 20_000
    + b"</Latest></BlockList>",
    "external-entity": b'<!DOCTYPE b [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b"<BlockList><Latest>&e;</Latest></BlockList>",
    "parameter-entity": b'<!DOCTYPE b [<!ENTITY % p SYSTEM "http://127.0.0.1:9/p.dtd"> %p;]>'
    b"<BlockList/>",
    "external-dtd": b'<!DOCTYPE BlockList SYSTEM "http://127.0.0.1:9/b.dtd"><BlockList/>',
    "unknown-encoding": b'<?xml version="1.0" encoding="rot13"?><BlockList/>',
    "deep": b"<BlockList>" + b"<a>" * 50_000 + b"</a>" * 50_000 + b"</BlockList>",
}


@pytest.mark.timeout(120)  # an expanding bomb would hang: fail instead
async def test_xml_bombs_in_put_block_list_are_refused(
    server: ServerHandle, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    url = await reserve_v2(http, server, "bomb")
    block = wire.js_block_id(0)
    async with http.put(f"{url}&comp=block&blockid={quote(block, safe='')}", data=b"x") as r:
        assert r.status == 201
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for name, body in XML_BOMBS.items():
        answer = await exchange(
            server,
            http_request(
                "PUT",
                target_of(url) + "&comp=blocklist",
                {"Content-Length": str(len(body)), "Content-Type": "application/xml"},
                body,
            ),
        )
        assert_azure_error(answer, 400, "InvalidInput")
        assert b"root:" not in answer.body, name  # /etc/passwd never comes back
    # Refused before any expansion: the process grew by far less than one expanded bomb
    # (billion laughs is ~3 GB expanded; the bodies themselves are ~2.5 MB).
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before
    assert grown_kib < 256 * 1024
    status, out = await finalize(http, server, "bomb", 1)
    assert status == 412, out  # nothing was assembled
    # The upload is intact: the real block list still commits.
    async with http.put(url + "&comp=blocklist", data=wire.block_list([block])) as r:
        assert r.status == 201
    status, out = await finalize(http, server, "bomb", 1)
    assert status == 200, out
    assert_store_is_tidy(server, tmp_path)
    await assert_still_serving(server, http)


async def test_a_block_list_over_its_size_limit_is_refused_even_when_chunked(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    url = await reserve_v2(http, server, "big-list")

    async def body() -> AsyncIterator[bytes]:  # chunked: no Content-Length to check up front
        yield b"<BlockList>"
        for _ in range(azblob.MAX_BLOCK_LIST_BYTES // MIB + 1):
            yield b" " * MIB
        yield b"</BlockList>"

    async with http.put(url + "&comp=blocklist", data=body()) as r:
        assert r.status == 400, await r.text()
        assert r.headers["x-ms-error-code"] == "InvalidInput"
    await assert_still_serving(server, http)


# -- huge headers and URLs --------------------------------------------------------------------


async def test_huge_headers_and_urls_are_refused_and_the_server_keeps_serving(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    hostile = {
        "huge-header": http_request("GET", "/healthz", {"X-Big": "a" * 100_000}),
        "huge-url": http_request("GET", "/healthz?" + "a" * 100_000),
        "huge-blob-url": http_request("GET", "/ghacache/entries/1?sig=" + "A" * 100_000),
        "huge-token": http_request(
            "POST", TWIRP_CREATE, {"Authorization": "Bearer " + "x" * 100_000}
        ),
        "many-headers": http_request("GET", "/healthz", {f"X-{i}": "y" for i in range(10_000)}),
        "huge-header-name": http_request("GET", "/healthz", {"X" * 100_000: "y"}),
    }
    for name, request in hostile.items():
        answer = await exchange(server, request, until_closed=True)
        assert answer.status in (400, 414, 431), (name, answer)
        assert answer.closed, name  # the connection is not reused after a broken request
    # Just under the limits is an ordinary request: a long (invalid) token is a 401.
    answer = await exchange(
        server,
        http_request(
            "POST",
            TWIRP_CREATE,
            {
                "Authorization": "Bearer " + "x" * 8000,
                "Content-Type": "application/json",
                "Content-Length": str(len(IDENT)),
            },
            IDENT,
        ),
    )
    assert answer.status == 401 and b"unauthenticated" in answer.body
    await assert_still_serving(server, http)


async def test_tokens_that_are_not_utf8_are_unauthenticated(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    """Header bytes that are not UTF-8 reach the token decoder as lone surrogates."""
    auth = b"Authorization: Bearer a\xff\xfe.b\xc0.c\r\n"
    cache = http_request(
        "POST",
        TWIRP_CREATE,
        {"Content-Type": "application/json", "Content-Length": str(len(IDENT))},
    )
    answer = await exchange(server, cache.replace(b"\r\n\r\n", b"\r\n" + auth + b"\r\n") + IDENT)
    assert answer.status == 401 and b"unauthenticated" in answer.body, answer
    admin = http_request("GET", "/repos/o/r/actions/caches")
    answer = await exchange(server, admin.replace(b"\r\n\r\n", b"\r\n" + auth + b"\r\n"))
    assert answer.status == 401, answer
    await assert_still_serving(server, http)


# -- slow-drip bodies ---------------------------------------------------------------------------


@pytest.fixture
async def impatient(tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    """A server that gives up on a body after 0.5 s without bytes."""
    async with serving(tmp_path, clock, body_read_timeout="0.5s") as handle:
        yield handle


@pytest.mark.timeout(60)  # without a body timeout these would wait forever
@pytest.mark.parametrize("route", ["put-blob", "put-block", "block-list", "v1-patch", "twirp"])
async def test_slow_drip_bodies_are_cut_off(
    impatient: ServerHandle, http: aiohttp.ClientSession, tmp_path: Path, route: str
) -> None:
    server = impatient
    token = server.token()
    declared = 100
    headers = {"Content-Length": str(declared)}
    if route == "v1-patch":
        status, body = await wire.v1_reserve(http, server.url, token, "drip")
        assert status == 201
        cache_id = int(body["cacheId"])
        target = f"{wire.V1}caches/{cache_id}"
        headers |= {"Authorization": f"Bearer {token}", "Content-Range": "bytes 0-99/*"}
        method = "PATCH"
    elif route == "twirp":
        target, method = TWIRP_CREATE, "POST"
        headers |= {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    else:
        url = await reserve_v2(http, server, "drip")
        target, method = target_of(url), "PUT"
        if route == "put-blob":
            headers["x-ms-blob-type"] = "BlockBlob"
        elif route == "put-block":
            target += "&comp=block&blockid=" + quote(wire.js_block_id(0), safe="")
        else:
            target += "&comp=blocklist"
    # One byte now, then one every 2 s: each gap is longer than the server's 0.5 s.
    answer = await exchange(
        server,
        http_request(method, target, headers, b"<"),
        drip=b"x" * 20,
        drip_every_s=2.0,
        until_closed=True,
    )
    assert answer.status == 408, answer
    assert answer.closed  # the connection is freed, not left waiting for the rest
    if route == "twirp":
        assert b"deadline_exceeded" in answer.body
    elif route == "v1-patch":
        assert b"TimeoutException" in answer.body
        assert await server.state.service.index.parts(cache_id) == {}
    else:
        assert answer.headers["x-ms-error-code"] == "OperationTimedOut"
        assert await server.state.service.index.parts(entry_id_of(url)) == {}
    assert staged_files(server) == []
    assert_store_is_tidy(server, tmp_path)
    await assert_still_serving(server, http)


async def test_a_slow_but_steady_body_is_not_cut_off(
    impatient: ServerHandle, http: aiohttp.ClientSession
) -> None:
    """The timeout limits each wait for more bytes, not the whole body."""
    server = impatient
    url = await reserve_v2(http, server, "steady")
    data = b"0123456789"
    answer = await exchange(
        server,
        http_request(
            "PUT",
            target_of(url),
            {"Content-Length": str(len(data)), "x-ms-blob-type": "BlockBlob"},
            data[:1],
        ),
        drip=data[1:],
        drip_every_s=0.1,  # 0.9 s in all, well past the 0.5 s timeout
    )
    assert answer.status == 201, answer
    status, out = await finalize(http, server, "steady", len(data))
    assert status == 200, out


# -- path traversal -------------------------------------------------------------------------

TRAVERSAL_NAMES = [
    "../../ESCAPE",
    "..\\..\\ESCAPE",
    "%2e%2e%2fESCAPE",
    "..%2F..%2FESCAPE",
    "/etc/ESCAPE",
    "C:\\ESCAPE",
    "./.",
    "..",
    "a/../../ESCAPE",
    "ESCAPE" + "/.." * 120,
]


async def test_traversal_in_keys_and_versions_stays_data(
    server: ServerHandle, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    token = server.token()
    for i, name in enumerate(TRAVERSAL_NAMES):
        data = os.urandom(100 + i)
        await wire.v2_save(http, server.url, token, name, data, version=name)
        found = await wire.v2_lookup(http, server.url, token, name, version=name)
        assert found["ok"] and found["matched_key"] == name
        assert (await wire.download(http, found["signed_download_url"]))[1] == data
        await wire.v1_save(http, server.url, token, "v1" + name, data, version=name)
    assert_store_is_tidy(server, tmp_path)
    assert not [p for p in tmp_path.parent.rglob("*ESCAPE*")]
    # NUL and lone surrogates are refused (a database could not hold them), not a 500.
    for bad in ("nul\x00key", "lone\ud800surrogate"):
        status, out = await wire.twirp(
            http, server.url, "CreateCacheEntry", {"key": bad, "version": "v"}, token
        )
        assert status == 400 and out["code"] == "invalid_argument", out
        status, out = await wire.twirp(
            http, server.url, "CreateCacheEntry", {"key": "k", "version": bad}, token
        )
        assert status == 400 and out["code"] == "invalid_argument", out
        status, body = await wire.v1_reserve(http, server.url, token, bad)
        assert status == 400, body
    async with http.get(
        server.url + wire.V1 + "cache",
        params={"keys": "a\x00b", "version": "v"},
        headers=wire.auth(token),
    ) as r:
        assert r.status == 400


BLOB_TARGETS = [
    "/ghacache/entries/..%2F..%2Fsecret",
    "/ghacache/entries/%2e%2e%2f%2e%2e%2fsecret",
    "/ghacache/entries/../../secret",
    "/ghacache/entries/..\\..\\secret",
    "/ghacache/entries/1%00",
    "/ghacache/entries/1%2F..%2F..%2Fsecret",
    "/ghacache/entries//etc/passwd",
    "/ghacache/entries/" + "9" * 5000,
    "/ghacache/entries/-1",
    "/ghacache/entries/0x1",
    "/ghacache/entries/%EF%BC%91",  # a fullwidth "1"
    "/ghacache/uploads/..%2F1",
    "/ghacache/../secret",
    "/ui/static/..%2F..%2F..%2Fsecret",
    "/ui/static/../../secret",
    "/_apis/artifactcache/caches/..%2F1",
    "/_apis/artifactcache/caches/1%2F..",
    "/_apis/artifactcache/caches/%2e%2e",
    "/_apis/artifactcache/caches/" + "9" * 30,
    "/_apis/artifactcache/caches/" + "9" * 5000,
    "/..%2F..%2Fsecret/_apis/artifactcache/cache",
]


async def test_traversal_in_blob_names_and_cache_ids_is_refused(
    server: ServerHandle, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    secret = server.config.secret_path.read_bytes().strip()
    token = server.token()
    key = "traversal-target"
    await wire.v2_save(http, server.url, token, key, b"payload")
    found = await wire.v2_lookup(http, server.url, token, key)
    query = urlsplit(found["signed_download_url"]).query  # a genuine signature, wrong path
    for target in BLOB_TARGETS:
        for method in ("GET", "PUT", "PATCH", "POST"):
            headers = {"Authorization": f"Bearer {token}", "Content-Length": "11"}
            body = b'{"size": 1}'
            answer = await exchange(
                server, http_request(method, f"{target}?{query}", headers, body)
            )
            assert 400 <= answer.status < 500, (method, target, answer)
            assert secret not in answer.body and b"payload" not in answer.body, (method, target)
    assert (await wire.download(http, found["signed_download_url"]))[1] == b"payload"
    assert await committed_count(server) == 1
    assert_store_is_tidy(server, tmp_path)


async def test_traversal_in_block_ids_stays_inside_the_upload(
    server: ServerHandle, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    raw_ids = [b"../../ESCAPE..", b"/etc/ESCAPE.xx", b"\x00" * 14, b"..\\..\\ESCAPE.."]
    ids = [base64.b64encode(raw).decode() for raw in raw_ids]  # all 14 bytes: one length
    url = await reserve_v2(http, server, "block-traversal")
    for i, block_id in enumerate(ids):
        async with http.put(
            f"{url}&comp=block&blockid={quote(block_id, safe='')}", data=bytes([65 + i])
        ) as r:
            assert r.status == 201, await r.text()
    assert_store_is_tidy(server, tmp_path)
    async with http.put(url + "&comp=blocklist", data=wire.block_list(ids)) as r:
        assert r.status == 201, await r.text()
    status, out = await finalize(http, server, "block-traversal", 4)
    assert status == 200, out
    found = await wire.v2_lookup(http, server.url, server.token(), "block-traversal")
    assert (await wire.download(http, found["signed_download_url"]))[1] == b"ABCD"
    assert not [p for p in tmp_path.parent.rglob("*ESCAPE*")]
    assert_store_is_tidy(server, tmp_path)


# -- block-count limits ---------------------------------------------------------------------


@pytest.mark.timeout(120)
async def test_block_lists_over_50000_blocks_are_refused(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    url = await reserve_v2(http, server, "many-blocks")
    block = wire.js_block_id(0)
    async with http.put(f"{url}&comp=block&blockid={quote(block, safe='')}", data=b"z") as r:
        assert r.status == 201
    too_many = azblob.block_list_xml([block] * (azblob.MAX_BLOCKS + 1))
    async with http.put(url + "&comp=blocklist", data=io.BytesIO(too_many)) as r:
        assert r.status == 400
        assert "50000" in await r.text()
    status, out = await finalize(http, server, "many-blocks", azblob.MAX_BLOCKS + 1)
    assert status == 412, out  # nothing was assembled
    # Exactly Azure's limit is accepted (the one staged block, listed 50,000 times).
    exact = azblob.block_list_xml([block] * azblob.MAX_BLOCKS)
    async with http.put(url + "&comp=blocklist", data=io.BytesIO(exact)) as r:
        assert r.status == 201, await r.text()
    status, out = await finalize(http, server, "many-blocks", azblob.MAX_BLOCKS)
    assert status == 200, out
    found = await wire.v2_lookup(http, server.url, server.token(), "many-blocks")
    assert (await wire.download(http, found["signed_download_url"]))[1] == b"z" * azblob.MAX_BLOCKS


# -- entry-size limits ------------------------------------------------------------------------


@pytest.fixture
async def small(tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    async with serving(tmp_path, clock, max_entry_size="1MiB") as handle:
        yield handle


async def test_v1_patch_beyond_the_reserved_or_maximum_size_is_refused(
    small: ServerHandle, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server, token = small, small.token()
    status, body = await wire.v1_reserve(http, server.url, token, "v1-sized", size=1000)
    assert status == 201
    sized = int(body["cacheId"])
    data = os.urandom(1500)
    # Past the reserved 1000 bytes: refused whole, also when it starts inside the reservation.
    for start, chunk in ((0, data), (900, data[900:1100]), (1000, data[1000:])):
        assert await wire.v1_patch(http, server.url, token, sized, start, chunk) == 413
    assert await server.state.service.index.parts(sized) == {}
    # Without a declared size, the limit is the maximum entry size.
    status, body = await wire.v1_reserve(http, server.url, token, "v1-unsized")
    unsized = int(body["cacheId"])
    assert await wire.v1_patch(http, server.url, token, unsized, MIB, b"!") == 413
    assert await wire.v1_patch(http, server.url, token, unsized, MIB - 1, b"!") == 204
    assert staged_files(server) != []  # (the accepted byte)
    # The reservation itself is unharmed: its declared bytes commit.
    assert await wire.v1_patch(http, server.url, token, sized, 0, data[:1000]) == 204
    status, raw = await wire.v1_commit(http, server.url, token, sized, 1000)
    assert status == 204, raw
    status, hit = await wire.v1_lookup(http, server.url, token, ["v1-sized"])
    assert hit is not None and (await wire.download(http, hit["archiveLocation"]))[1] == data[:1000]
    assert_store_is_tidy(server, tmp_path)


async def test_v2_blocks_beyond_the_maximum_entry_size_are_refused_as_they_arrive(
    small: ServerHandle, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    server = small
    url = await reserve_v2(http, server, "v2-blocks")
    prefix = str(uuid.uuid4())
    ids = [wire.js_block_id(i, prefix) for i in range(3)]
    blocks = [os.urandom(600 * 1024), os.urandom(600 * 1024), os.urandom(400 * 1024)]

    async def put_block(i: int, data: bytes) -> int:
        async with http.put(f"{url}&comp=block&blockid={quote(ids[i], safe='')}", data=data) as r:
            await r.read()
            return r.status

    assert await put_block(0, blocks[0]) == 201
    # 600 + 600 KiB staged would be over 1 MiB: refused before a byte is kept.
    assert await put_block(1, blocks[1]) == 413
    assert set(await server.state.service.index.parts(entry_id_of(url))) == {
        azblob.block_part_name(base64.b64decode(ids[0]))
    }
    # Sending block 0 again replaces it (it does not count twice); 600 + 400 KiB fits.
    assert await put_block(0, blocks[0]) == 201
    assert await put_block(2, blocks[2]) == 201
    async with http.put(url + "&comp=blocklist", data=wire.block_list([ids[0], ids[2]])) as r:
        assert r.status == 201
    status, out = await finalize(http, server, "v2-blocks", len(blocks[0]) + len(blocks[2]))
    assert status == 200, out
    assert_store_is_tidy(server, tmp_path)


async def test_put_blob_with_a_lying_content_length(
    small: ServerHandle,
    http: aiohttp.ClientSession,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = small
    url = await reserve_v2(http, server, "lying")
    target = target_of(url)
    blob_headers = {"x-ms-blob-type": "BlockBlob"}
    # Declares more than the limit: refused at once, before the body is read.
    answer = await exchange(
        server,
        http_request("PUT", target, {**blob_headers, "Content-Length": str(10 * 1024**3)}, b"abc"),
    )
    assert_azure_error(answer, 413, "RequestBodyTooLarge")
    # Declares less than it sends: the rest is no request at all, and the connection drops.
    answer = await exchange(
        server,
        http_request("PUT", target, {**blob_headers, "Content-Length": "3"}, b"abcGARBAGE"),
        until_closed=True,
    )
    assert answer.status in (201, 400) and answer.closed
    # Declares more than it sends, then hangs up: nothing is staged.
    reader, writer = await asyncio.open_connection("127.0.0.1", _port(server))
    writer.write(http_request("PUT", target, {**blob_headers, "Content-Length": "100"}, b"abc"))
    writer.write_eof()
    assert await reader.read() == b""  # no answer to a request that never ended
    writer.close()
    await asyncio.sleep(0.1)  # let the handler see the hang-up (no result depends on it)
    # A client hanging up mid-body is the client's doing, not a server failure to log.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
    entry_id = entry_id_of(url)
    assert set(await server.state.service.index.parts(entry_id)) <= {"blob"}
    # Whatever was kept, finalize accepts only the true size of a complete upload.
    status, out = await finalize(http, server, "lying", 10)
    assert status in (400, 412), out
    assert await wire.put_blob(http, url, b"0123456789") == 201
    status, out = await finalize(http, server, "lying", 10)
    assert status == 200, out
    assert staged_files(server) == []
    assert_store_is_tidy(server, tmp_path)
    await assert_still_serving(server, http)
