"""Structured logs: one JSON access line per request, and never a secret.

The real CLI runs with ``--log-format json``; the workload hands out signed URLs and sends
runtime and admin tokens (good and bad). Every stderr line must parse, access lines must
carry their fields, and no token, signature or ``sig=`` may appear anywhere.
"""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from ghacache.server.logformat import REDACTED, JsonFormatter, TextFormatter, redact
from tests.conftest import SpawnedServer, Spawner
from tests.support import wire

FIELDS = (
    "time", "level", "logger", "message", "request_id", "protocol", "operation", "method",
    "path", "status", "bytes_in", "bytes_out", "duration_ms",
)  # fmt: skip


def admin_token(s: SpawnedServer) -> str:
    args = [sys.executable, "-m", "ghacache", "token", "--admin", "--data-dir", str(s.data_dir)]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def signature(url: str) -> str:
    return parse_qs(urlsplit(url).query)["sig"][0]


async def workload(s: SpawnedServer, http: aiohttp.ClientSession) -> list[str]:
    """Traffic of every kind; returns every secret the server handed out or was sent."""
    token, admin = s.token("octo/app"), admin_token(s)
    secrets = [token, admin]
    status, body = await wire.twirp(
        http, s.url, "CreateCacheEntry", {"key": "log-a", "version": wire.VERSION}, token
    )
    assert status == 200
    upload = body["signed_upload_url"]
    secrets.append(signature(upload))
    assert await wire.put_blob(http, upload, b"a" * 1000) == 201
    size = {"key": "log-a", "version": wire.VERSION, "size_bytes": "1000"}
    assert (await wire.twirp(http, s.url, "FinalizeCacheEntryUpload", size, token))[0] == 200
    await wire.v2_save(http, s.url, token, "log-b", b"b" * 300, block_size=100)
    hit = await wire.v2_lookup(http, s.url, token, "log-a", ["log-"])
    download = hit["signed_download_url"]
    secrets.append(signature(download))
    status, data, _ = await wire.download(http, download)
    assert (status, len(data)) == (200, 1000)
    # A tampered signature is refused (and must not be logged either).
    forged = download.replace(signature(download), "AAAA" + signature(download)[4:])
    assert (await wire.download(http, forged))[0] == 403
    await wire.v1_save(http, s.url, token, "log-c", b"c" * 200, chunk_size=100)
    status, found = await wire.v1_lookup(http, s.url, token, ["log-c"])
    assert status == 200 and found is not None
    secrets.append(signature(found["archiveLocation"]))
    assert (await wire.download(http, found["archiveLocation"]))[0] == 200
    bad = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"  # JWT-shaped, invalid
    secrets.append(bad)
    status, _ = await wire.twirp(
        http, s.url, "GetCacheEntryDownloadURL", {"key": "x", "version": wire.VERSION}, bad
    )
    assert status == 401
    async with http.get(s.url + "/repos/octo/app/actions/caches", headers=wire.auth(admin)) as r:
        assert r.status == 200
    return secrets


async def test_json_access_lines_have_their_fields_and_no_secrets(
    spawn_server: Spawner, http: aiohttp.ClientSession
) -> None:
    s = spawn_server("--log-format", "json")
    secrets = await workload(s, http)
    s.stop()  # every line is flushed
    text = s.log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    access = [line for line in lines if line["logger"] == "ghacache.access"]
    assert len(access) == 20, [(a["method"], a["path"]) for a in access]
    for line in access:
        assert all(f in line for f in FIELDS), line
        assert "?" not in line["path"] and line["level"] == "info"
        assert line["message"] == f"{line['method']} {line['path']} {line['status']}"
    for secret in secrets:
        assert secret not in text
    assert "sig=" not in text and "eyJ" not in text and "Bearer" not in text

    def one(operation: str, **match: Any) -> dict[str, Any]:
        found: list[dict[str, Any]] = [
            a for a in access if a["operation"] == operation and match.items() <= a.items()
        ]
        assert len(found) == 1, (operation, match, found)
        return found[0]

    put = one("put_blob", key="log-a")
    assert put["repository"] == "octo/app" and put["scope"] == "refs/heads/main"
    assert (put["protocol"], put["status"], put["bytes_in"]) == ("blob", 201, 1000)
    got = one("get_blob", status=200, key="log-a")
    assert got["bytes_out"] == 1000 and got["repository"] == "octo/app"
    assert one("get_blob", status=403)["bytes_out"] > 0  # the Azure XML error body
    lookup = one("GetCacheEntryDownloadURL", status=200)
    assert (lookup["key"], lookup["lookup"], lookup["matched_key"]) == ("log-a", "exact", "log-a")
    assert one("GetCacheEntryDownloadURL", status=401).get("repository") is None
    patches = [a for a in access if a["operation"] == "patch"]
    assert [(p["key"], p["bytes_in"], p["status"]) for p in patches] == [("log-c", 100, 204)] * 2
    assert one("list_caches")["protocol"] == "management"
    assert len({a["request_id"] for a in access}) == len(access)


def test_formatters_scrub_secrets_from_any_message() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJyZXBvIjoieCJ9.AbC-dEf_123"
    message = (
        f"GET /ghacache/entries/1?sv=2&sig=AbC%2Fd%3D&se=9 Authorization: Bearer {jwt} "
        "https://acct.blob.core.windows.net/c/b?sp=r&sig=xyz&se=1 "
        "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=abcd&X-Amz-Credential=AKIA"
    )
    record = logging.LogRecord("ghacache.x", logging.ERROR, __file__, 1, message, None, None)
    record.ghacache = {"key": f"k sig=zzz {jwt}"}
    for formatter in (JsonFormatter(), TextFormatter()):
        out = formatter.format(record)
        for secret in (jwt, "AbC%2Fd%3D", "xyz", "abcd", "AKIA", "zzz"):
            assert secret not in out, (formatter, out)
        assert REDACTED in out
    assert json.loads(JsonFormatter().format(record))["level"] == "error"
    assert redact("sig=abc&se=1") == f"sig={REDACTED}&se=1"


def test_text_lines_append_fields_not_in_the_message() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter())
    record = logging.LogRecord(
        "ghacache.access", logging.INFO, __file__, 1, "%s %s %s", ("GET", "/x", 200), None
    )
    record.ghacache = {"method": "GET", "path": "/x", "status": 200, "key": "a b", "scope": None}
    handler.emit(record)
    assert stream.getvalue().rstrip().endswith('ghacache.access: GET /x 200 key="a b"')
