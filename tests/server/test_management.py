"""The GitHub-shaped management API: every endpoint, its parameters, auth and field names.

Compared against GitHub's documented behaviour (docs.github.com/en/rest/actions/cache):
``key`` is a prefix filter, ``ref`` exact, ``sort`` created_at|last_accessed_at|size_in_bytes,
``direction`` asc|desc (default desc), ``per_page`` default 30 max 100, ``page``; delete by
key removes every version of exactly that key (optionally one ref); delete by id.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import aiohttp
import pytest

from ghacache.server.auth import mint_admin_token
from tests.conftest import Clock, ServerHandle, Spawner
from tests.support import wire
from tests.support.official import official_env, run_official

MAIN = "refs/heads/main"
FEATURE = "refs/heads/feature"
V1 = wire.VERSION
V2 = wire.BUILDKIT_VERSION
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
CACHE_FIELDS = {"id", "ref", "key", "version", "last_accessed_at", "created_at", "size_in_bytes"}


def iso_to_ts(text: str) -> float:
    assert TIMESTAMP.match(text), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


@dataclass
class Saved:
    id: int
    key: str
    ref: str
    version: str
    size: int
    created: float
    accessed: float


class Api:
    def __init__(self, srv: ServerHandle, http: aiohttp.ClientSession) -> None:
        self.srv = srv
        self.http = http

    @property
    def admin(self) -> str:
        return mint_admin_token(self.srv.secret, ttl_s=3600, now=self.srv.clock())

    async def call(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        token: str | None = None,
    ) -> tuple[int, Any]:
        headers = wire.auth(self.admin if token is None else token)
        async with self.http.request(
            method, self.srv.url + path, params=params, headers=headers
        ) as r:
            raw = await r.read()
            if raw:
                assert r.content_type == "application/json", r.content_type
            return r.status, (await r.json()) if raw else None

    async def list_caches(self, repo: str = "octo/repo", **params: str) -> tuple[int, Any]:
        return await self.call("GET", f"/repos/{repo}/actions/caches", params)

    async def keys(self, repo: str = "octo/repo", **params: str) -> list[tuple[str, str, str]]:
        status, body = await self.list_caches(repo, **params)
        assert status == 200, body
        return [(c["key"], c["ref"], c["version"]) for c in body["actions_caches"]]


class Seeded:
    """A server holding a known set of entries in octo/repo (and one in octo/other)."""

    def __init__(self, srv: ServerHandle, http: aiohttp.ClientSession) -> None:
        self.srv = srv
        self.http = http
        self.api = Api(srv, http)
        self.entries: list[Saved] = []

    async def save(
        self, key: str, size: int, *, ref: str = MAIN, version: str = V1, repo: str = "octo/repo"
    ) -> Saved:
        token = self.srv.token(repo, f"{ref}:rw")
        entry_id = await wire.v2_save(
            self.http, self.srv.url, token, key, os.urandom(size), version=version
        )
        now = self.srv.clock()
        saved = Saved(entry_id, key, ref, version, size, now, now)
        if repo == "octo/repo":
            self.entries.append(saved)
        self.srv.clock.advance(10)
        return saved

    async def restore(self, saved: Saved) -> None:
        token = self.srv.token("octo/repo", f"{saved.ref}:r")
        found = await wire.v2_lookup(
            self.http, self.srv.url, token, saved.key, version=saved.version
        )
        assert found["ok"] and found["matched_key"] == saved.key
        saved.accessed = self.srv.clock()
        self.srv.clock.advance(10)


@pytest.fixture
async def seeded(server: ServerHandle, http: aiohttp.ClientSession) -> Seeded:
    s = Seeded(server, http)
    await s.save("npm-linux-aaa", 100)
    await s.save("npm-linux-bbb", 300)
    await s.save("npm-macos-ccc", 200, version=V2)
    pip = await s.save("pip-linux", 50)
    await s.save("npm-linux-aaa", 150, ref=FEATURE)
    await s.save("npm-linux-aaa", 120, version=V2)
    await s.save("npm-linux-aaa", 999, repo="octo/other")
    await s.restore(pip)  # pip-linux: oldest creation but latest access but one
    await s.restore(s.entries[0])
    return s


def by(entries: list[Saved], field: str, descending: bool) -> list[int]:
    attr = {"created_at": "created", "last_accessed_at": "accessed", "size_in_bytes": "size"}
    ordered = sorted(entries, key=lambda e: (getattr(e, attr[field]), e.id), reverse=descending)
    return [e.id for e in ordered]


# -- listing ---------------------------------------------------------------------------------


async def test_list_fields_and_timestamps_match_github(seeded: Seeded) -> None:
    status, body = await seeded.api.list_caches()
    assert status == 200
    assert set(body) == {"total_count", "actions_caches"}
    assert body["total_count"] == 6
    by_id = {e.id: e for e in seeded.entries}
    for cache in body["actions_caches"]:
        assert set(cache) == CACHE_FIELDS
        saved = by_id[cache["id"]]
        assert (cache["key"], cache["ref"], cache["version"], cache["size_in_bytes"]) == (
            saved.key,
            saved.ref,
            saved.version,
            saved.size,
        )
        assert abs(iso_to_ts(cache["created_at"]) - saved.created) < 0.001
        assert abs(iso_to_ts(cache["last_accessed_at"]) - saved.accessed) < 0.001
        assert isinstance(cache["id"], int) and isinstance(cache["size_in_bytes"], int)
    # Default order: last_accessed_at, descending.
    assert [c["id"] for c in body["actions_caches"]] == by(seeded.entries, "last_accessed_at", True)


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.9994, 0.9995, 0.9999995])
async def test_timestamps_are_millisecond_truncations(
    server: ServerHandle, http: aiohttp.ClientSession, clock: Clock, fraction: float
) -> None:
    # 1,700,000,000 s = 2023-11-14T22:13:20Z. The printed instant must never lie ahead of
    # the real one (it is truncated to milliseconds), and never by a whole second.
    clock.t = 1_700_000_000 + fraction
    exact = clock.t
    entry_id = await wire.v2_save(http, server.url, server.token(), "ts", b"x")
    status, body = await Api(server, http).list_caches()
    assert status == 200
    (cache,) = body["actions_caches"]
    assert cache["id"] == entry_id
    shown = iso_to_ts(cache["created_at"])
    assert exact - 0.001 < shown <= exact, (cache["created_at"], exact)
    assert cache["created_at"].startswith("2023-11-14T22:13:20.")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("npm-linux-aaa", 3),  # an exact key is a prefix of itself: all refs and versions
        ("npm-linux", 4),
        ("npm-", 5),
        ("npm-linux-aaaa", 0),
        ("linux", 0),  # a prefix, not a substring
        ("NPM", 0),  # case-sensitive
        ("p", 1),
        ("", 6),  # empty = no filter
    ],
)
async def test_key_is_a_prefix_filter(seeded: Seeded, key: str, expected: int) -> None:
    status, body = await seeded.api.list_caches(key=key)
    assert status == 200
    assert body["total_count"] == expected == len(body["actions_caches"])
    assert all(c["key"].startswith(key) for c in body["actions_caches"])


async def test_ref_is_an_exact_filter(seeded: Seeded) -> None:
    assert await seeded.api.keys(ref=FEATURE) == [("npm-linux-aaa", FEATURE, V1)]
    assert len(await seeded.api.keys(ref=MAIN)) == 5
    assert await seeded.api.keys(ref="refs/heads") == []
    assert await seeded.api.keys(ref="refs/heads/mai") == []
    assert await seeded.api.keys(ref="main") == []
    # Combined with a key prefix.
    assert sorted(await seeded.api.keys(key="npm-linux-a", ref=MAIN)) == [
        ("npm-linux-aaa", MAIN, V1),
        ("npm-linux-aaa", MAIN, V2),
    ]


async def test_unicode_key_prefix(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    token = server.token()
    for key in ("ключ-один", "ключ-два", "ключи", "клюв", "\U0010ffff-max", "z"):
        await wire.v2_save(http, server.url, token, key, b"x")
    api = Api(server, http)
    assert sorted(k for k, _, _ in await api.keys(key="ключ-")) == ["ключ-два", "ключ-один"]
    assert len(await api.keys(key="ключ")) == 3
    assert [k for k, _, _ in await api.keys(key="\U0010ffff")] == ["\U0010ffff-max"]


@pytest.mark.parametrize("field", ["created_at", "last_accessed_at", "size_in_bytes"])
@pytest.mark.parametrize("direction", ["asc", "desc", None])
async def test_sort_and_direction(seeded: Seeded, field: str, direction: str | None) -> None:
    params = {"sort": field, **({"direction": direction} if direction else {})}
    status, body = await seeded.api.list_caches(**params)
    assert status == 200
    got = [c["id"] for c in body["actions_caches"]]
    # Default direction is desc.
    assert got == by(seeded.entries, field, descending=direction != "asc")


async def test_paging(seeded: Seeded) -> None:
    pages = []
    for page in (1, 2, 3, 4):
        status, body = await seeded.api.list_caches(
            per_page="2", page=str(page), sort="created_at", direction="asc"
        )
        assert status == 200 and body["total_count"] == 6  # the total, not the page
        pages.append([c["id"] for c in body["actions_caches"]])
    assert pages[:3] == [[e.id for e in seeded.entries[i : i + 2]] for i in (0, 2, 4)]
    assert pages[3] == []
    # Page 1 is the default.
    status, body = await seeded.api.list_caches(per_page="4", sort="created_at", direction="asc")
    assert [c["id"] for c in body["actions_caches"]] == pages[0] + pages[1]


async def test_per_page_defaults_to_30_and_allows_100(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    for i in range(32):
        await wire.v2_save(http, server.url, token, f"many-{i:02d}", b"x")
        server.clock.advance(1)
    api = Api(server, http)
    status, body = await api.list_caches()
    assert status == 200 and body["total_count"] == 32 and len(body["actions_caches"]) == 30
    assert body["actions_caches"][0]["key"] == "many-31"  # most recently accessed first
    status, body = await api.list_caches(page="2")
    assert [c["key"] for c in body["actions_caches"]] == ["many-01", "many-00"]
    status, body = await api.list_caches(per_page="100")
    assert status == 200 and len(body["actions_caches"]) == 32


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "name"},
        {"sort": "size"},
        {"sort": "CREATED_AT"},
        {"direction": "up"},
        {"direction": "DESC"},
        {"per_page": "101"},
        {"per_page": "0"},
        {"per_page": "-1"},
        {"per_page": "abc"},
        {"per_page": "1.5"},
        {"per_page": "²"},  # a Unicode digit that int() cannot parse
        {"per_page": "9" * 30},
        {"page": "abc"},
        {"page": "²"},
    ],
)
async def test_invalid_list_parameters_are_422(seeded: Seeded, params: dict[str, str]) -> None:
    status, body = await seeded.api.list_caches(**params)
    assert status == 422, (params, status, body)
    assert isinstance(body["message"], str) and body["message"]


# -- deleting ------------------------------------------------------------------------------


async def test_delete_by_key_removes_every_version_and_ref_of_exactly_that_key(
    seeded: Seeded,
) -> None:
    status, body = await seeded.api.call(
        "DELETE", "/repos/octo/repo/actions/caches", {"key": "npm-linux-aaa"}
    )
    assert status == 200
    assert body["total_count"] == 3
    assert sorted((c["ref"], c["version"]) for c in body["actions_caches"]) == sorted(
        [(MAIN, V1), (FEATURE, V1), (MAIN, V2)]
    )
    assert all(set(c) == CACHE_FIELDS for c in body["actions_caches"])
    # Only exact matches went; prefix-sharing keys and the other repository stayed.
    assert sorted(k for k, _, _ in await seeded.api.keys()) == [
        "npm-linux-bbb",
        "npm-macos-ccc",
        "pip-linux",
    ]
    assert await seeded.api.keys("octo/other") == [("npm-linux-aaa", MAIN, V1)]
    # Again: nothing left with that key.
    status, body = await seeded.api.call(
        "DELETE", "/repos/octo/repo/actions/caches", {"key": "npm-linux-aaa"}
    )
    assert status == 404 and body["message"]


async def test_delete_by_key_and_ref(seeded: Seeded) -> None:
    status, body = await seeded.api.call(
        "DELETE", "/repos/octo/repo/actions/caches", {"key": "npm-linux-aaa", "ref": FEATURE}
    )
    assert status == 200 and body["total_count"] == 1
    assert body["actions_caches"][0]["ref"] == FEATURE
    assert sorted(await seeded.api.keys(key="npm-linux-aaa")) == [
        ("npm-linux-aaa", MAIN, V1),
        ("npm-linux-aaa", MAIN, V2),
    ]
    status, body = await seeded.api.call(
        "DELETE", "/repos/octo/repo/actions/caches", {"key": "npm-linux-aaa", "ref": FEATURE}
    )
    assert status == 404
    # A prefix of the key deletes nothing.
    status, _ = await seeded.api.call(
        "DELETE", "/repos/octo/repo/actions/caches", {"key": "npm-linux"}
    )
    assert status == 404
    assert len(await seeded.api.keys()) == 5


async def test_delete_by_key_needs_a_key(seeded: Seeded) -> None:
    for params in ({}, {"key": ""}, {"ref": MAIN}):
        status, _ = await seeded.api.call("DELETE", "/repos/octo/repo/actions/caches", params)
        assert status == 422, params
    assert len(await seeded.api.keys()) == 6


async def test_delete_by_id(seeded: Seeded) -> None:
    target = seeded.entries[1]
    path = f"/repos/octo/repo/actions/caches/{target.id}"
    status, body = await seeded.api.call("DELETE", path)
    assert (status, body) == (204, None)
    assert [e.id for e in seeded.entries if e.id != target.id] == sorted(
        c["id"] for c in (await seeded.api.list_caches())[1]["actions_caches"]
    )
    status, body = await seeded.api.call("DELETE", path)
    assert status == 404 and body["message"]


async def test_delete_by_id_of_another_repository_is_404(seeded: Seeded) -> None:
    (other,) = (await seeded.api.list_caches("octo/other"))[1]["actions_caches"]
    status, _ = await seeded.api.call("DELETE", f"/repos/octo/repo/actions/caches/{other['id']}")
    assert status == 404
    assert len(await seeded.api.keys("octo/other")) == 1


@pytest.mark.parametrize("cache_id", ["0", "999999", "abc", "-1", "1.0", "²", "9" * 30])
async def test_delete_by_unknown_or_malformed_id_is_404(seeded: Seeded, cache_id: str) -> None:
    status, body = await seeded.api.call("DELETE", f"/repos/octo/repo/actions/caches/{cache_id}")
    assert status == 404, (status, body)
    assert len(await seeded.api.keys()) == 6


async def test_delete_by_id_of_an_upload_in_progress_is_404(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    status, body = await wire.twirp(
        http, server.url, "CreateCacheEntry", {"key": "pending", "version": V1}, token
    )
    assert status == 200 and body["ok"]
    pending_id = int(body["signed_upload_url"].split("/uploads/")[1].split("?")[0])
    api = Api(server, http)
    status, _ = await api.call("DELETE", f"/repos/octo/repo/actions/caches/{pending_id}")
    assert status == 404
    # The upload can still complete.
    assert await wire.put_blob(http, body["signed_upload_url"], b"data") == 201
    status, out = await wire.twirp(
        http,
        server.url,
        "FinalizeCacheEntryUpload",
        {"key": "pending", "version": V1, "size_bytes": "4"},
        token,
    )
    assert status == 200 and out["ok"]


async def test_deleted_entry_is_gone_for_clients_and_its_key_reusable(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    entry_id = await wire.v2_save(http, server.url, token, "gone", b"old bytes")
    found = await wire.v2_lookup(http, server.url, token, "gone")
    api = Api(server, http)
    status, _ = await api.call("DELETE", f"/repos/octo/repo/actions/caches/{entry_id}")
    assert status == 204
    assert not (await wire.v2_lookup(http, server.url, token, "gone", ("go",)))["ok"]
    assert (await wire.v1_lookup(http, server.url, token, ["gone"]))[0] == 204
    status, _, _ = await wire.download(http, found["signed_download_url"])
    assert status == 404
    # Saving the same key (and version, and scope) works again.
    new_id = await wire.v2_save(http, server.url, token, "gone", b"new bytes")
    assert new_id != entry_id
    found = await wire.v2_lookup(http, server.url, token, "gone")
    assert (await wire.download(http, found["signed_download_url"]))[1] == b"new bytes"
    # The delete is on record.
    status, body = await api.call("GET", "/actions/cache/evictions")
    assert status == 200
    assert [(e["cache_id"], e["reason"]) for e in body["evictions"]] == [(entry_id, "deleted")]


# -- usage -----------------------------------------------------------------------------------


async def test_repository_usage(seeded: Seeded) -> None:
    status, body = await seeded.api.call("GET", "/repos/octo/repo/actions/cache/usage")
    assert status == 200
    assert body == {
        "full_name": "octo/repo",
        "active_caches_size_in_bytes": 100 + 300 + 200 + 50 + 150 + 120,
        "active_caches_count": 6,
    }
    status, body = await seeded.api.call("GET", "/repos/octo/empty/actions/cache/usage")
    assert status == 200
    assert body == {
        "full_name": "octo/empty",
        "active_caches_size_in_bytes": 0,
        "active_caches_count": 0,
    }


async def test_usage_ignores_uploads_in_progress(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    await wire.v2_save(http, server.url, token, "done", b"12345")
    status, body = await wire.twirp(
        http, server.url, "CreateCacheEntry", {"key": "pending", "version": V1}, token
    )
    assert await wire.put_blob(http, body["signed_upload_url"], b"x" * 1000) == 201
    status, body = await Api(server, http).call("GET", "/repos/octo/repo/actions/cache/usage")
    assert status == 200
    assert (body["active_caches_count"], body["active_caches_size_in_bytes"]) == (1, 5)


async def test_org_and_all_repository_usage(seeded: Seeded) -> None:
    await seeded.save("x", 7, repo="elsewhere/repo")
    api = seeded.api
    status, body = await api.call("GET", "/orgs/octo/actions/cache/usage")
    assert status == 200
    assert body == {
        "total_active_caches_size_in_bytes": 920 + 999,
        "total_active_caches_count": 7,
    }
    status, body = await api.call("GET", "/orgs/nobody/actions/cache/usage")
    assert body == {"total_active_caches_size_in_bytes": 0, "total_active_caches_count": 0}

    status, body = await api.call("GET", "/orgs/octo/actions/cache/usage-by-repository")
    assert status == 200 and body["total_count"] == 2
    assert body["repository_cache_usages"] == [
        {"full_name": "octo/other", "active_caches_size_in_bytes": 999, "active_caches_count": 1},
        {"full_name": "octo/repo", "active_caches_size_in_bytes": 920, "active_caches_count": 6},
    ]
    status, body = await api.call("GET", "/actions/cache/usage-by-repository")
    assert status == 200 and body["total_count"] == 3
    assert [u["full_name"] for u in body["repository_cache_usages"]] == [
        "elsewhere/repo",
        "octo/other",
        "octo/repo",
    ]
    status, body = await api.call(
        "GET", "/actions/cache/usage-by-repository", {"per_page": "2", "page": "2"}
    )
    assert status == 200 and body["total_count"] == 3
    assert [u["full_name"] for u in body["repository_cache_usages"]] == ["octo/repo"]
    status, body = await api.call("GET", "/actions/cache/usage-by-repository", {"per_page": "101"})
    assert status == 422


# -- authentication --------------------------------------------------------------------------

ENDPOINTS = [
    ("GET", "/repos/octo/repo/actions/caches", {}),
    ("DELETE", "/repos/octo/repo/actions/caches", {"key": "npm-linux-bbb"}),
    ("DELETE", "/repos/octo/repo/actions/caches/{id}", {}),
    ("GET", "/repos/octo/repo/actions/cache/usage", {}),
    ("GET", "/orgs/octo/actions/cache/usage", {}),
    ("GET", "/orgs/octo/actions/cache/usage-by-repository", {}),
    ("GET", "/actions/cache/usage-by-repository", {}),
    ("GET", "/actions/cache/evictions", {}),
]


@pytest.mark.parametrize(("method", "path", "params"), ENDPOINTS)
async def test_every_endpoint_needs_an_admin_token(
    seeded: Seeded, method: str, path: str, params: dict[str, str]
) -> None:
    srv, clock = seeded.srv, seeded.srv.clock
    path = path.replace("{id}", str(seeded.entries[1].id))
    api = seeded.api

    async def status_with(headers: dict[str, str]) -> tuple[int, Any]:
        async with seeded.http.request(method, srv.url + path, params=params, headers=headers) as r:
            return r.status, await r.json(content_type=None)

    assert (await status_with({}))[0] == 401
    for bad in ("Bearer garbage", "Bearer ", "Basic dXNlcjpwYXNz", "garbage"):
        status, body = await status_with({"Authorization": bad})
        assert status == 401, bad
        assert body["message"]
    other_secret = mint_admin_token(os.urandom(32), ttl_s=3600, now=clock())
    assert (await api.call(method, path, params, token=other_secret))[0] == 401
    not_yet = mint_admin_token(srv.secret, ttl_s=3600, now=clock() + 600)
    assert (await api.call(method, path, params, token=not_yet))[0] == 401
    cache_token = srv.token()  # valid for the cache protocol, not for management
    status, body = await api.call(method, path, params, token=cache_token)
    assert status == 403 and body["message"]
    expiring = mint_admin_token(srv.secret, ttl_s=60, now=clock())
    clock.advance(61)
    assert (await api.call(method, path, params, token=expiring))[0] == 401
    # Nothing was deleted by the refused requests; the admin token works.
    assert len(await api.keys()) == 6
    status, _ = await api.call(method, path, params)
    assert status in (200, 204)
    if method == "DELETE":
        assert len(await api.keys()) == 5


async def test_admin_token_is_not_a_cache_token(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    admin = Api(server, http).admin
    status, body = await wire.twirp(
        http, server.url, "GetCacheEntryDownloadURL", {"key": "k", "version": V1}, admin
    )
    assert status == 401 and body["code"] == "unauthenticated"
    status, _ = await wire.v1_reserve(http, server.url, admin, "k")
    assert status == 401


# -- the official client -----------------------------------------------------------------------


@pytest.mark.slow
async def test_official_client_misses_after_api_delete_then_saves_again(
    spawn_server: Spawner, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    if shutil.which("node") is None:
        pytest.skip("node is not installed")
    srv = spawn_server()
    token = srv.token()
    minted = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ghacache", "token", "--admin", "--data-dir", str(srv.data_dir),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await minted.communicate()
    assert minted.returncode == 0
    admin = stdout.decode().strip()
    counter = iter(range(100))

    def run(
        op: Literal["save", "restore"], files: dict[str, bytes] | None = None
    ) -> tuple[Any, Path]:
        n = next(counter)
        workspace, temp = tmp_path / f"ws-{n}", tmp_path / f"tmp-{n}"
        workspace.mkdir()
        temp.mkdir()
        for name, data in (files or {}).items():
            (workspace / "data").mkdir(exist_ok=True)
            (workspace / "data" / name).write_bytes(data)
        env = official_env(
            protocol="v2", base_url=srv.url, token=token, workspace=workspace, temp=temp
        )
        res = run_official("v6", op, key="official-key", paths=["data"], env=env, cwd=workspace)
        assert res.ok, (res.error, res.stdout, res.stderr)
        return res, workspace

    res, _ = run("save", {"a.bin": os.urandom(50_000)})
    first_id = res.result
    assert isinstance(first_id, int) and first_id > 0, res.stdout
    assert res.warnings == [], res.warnings

    async with http.delete(
        f"{srv.url}/repos/octo/repo/actions/caches",
        params={"key": "official-key"},
        headers=wire.auth(admin),
    ) as r:
        assert r.status == 200
        body = await r.json()
    assert [c["id"] for c in body["actions_caches"]] == [first_id]

    res, workspace = run("restore")
    assert res.result is None, res.stdout  # restoreCache returns undefined on a miss
    assert not (workspace / "data").exists()

    second = os.urandom(40_000)
    res, _ = run("save", {"b.bin": second})
    assert isinstance(res.result, int) and res.result not in (0, first_id), res.stdout
    assert res.warnings == [], res.warnings  # no "another job may be creating this cache"

    res, workspace = run("restore")
    assert res.result == "official-key"
    assert (workspace / "data" / "b.bin").read_bytes() == second
    assert not (workspace / "data" / "a.bin").exists()
