"""Requests of the crash suite: saves, lookups and management calls against one server.

Plain wire calls (``tests.support.wire``) with tokens minted from the site's own secret.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp

from ghacache.protocol.scopes import parse_scope_spec
from ghacache.server.auth import load_or_create_secret, mint_admin_token, mint_token
from tests.hardening.crashlab import Server, Site
from tests.support import wire

BLOCK = 256 * 1024  # blocks and v1 chunks
Ident = tuple[str, str, str]  # repository, key, version


class Client:
    """Requests to one server with the site's tokens."""

    def __init__(self, http: aiohttp.ClientSession, server: Server, site: Site) -> None:
        self.http = http
        self.url = server.url
        self._secret = load_or_create_secret(site.data_dir / "secret")

    def token(self, repo: str) -> str:
        scopes = [parse_scope_spec("refs/heads/main:rw")]
        return mint_token(self._secret, repository=repo, scopes=scopes, ttl_s=3600, now=time.time())

    def admin(self) -> dict[str, str]:
        return wire.auth(mint_admin_token(self._secret, ttl_s=3600, now=time.time()))

    async def reserve(self, ident: Ident) -> str:
        repo, key, version = ident
        body = {"key": key, "version": version}
        status, out = await wire.twirp(
            self.http, self.url, "CreateCacheEntry", body, self.token(repo)
        )
        assert status == 200 and out["ok"], (ident, status, out)
        return str(out["signed_upload_url"])

    async def finalize(self, ident: Ident, size: int) -> tuple[int, dict[str, Any]]:
        repo, key, version = ident
        body = {"key": key, "version": version, "size_bytes": str(size)}
        return await wire.twirp(
            self.http, self.url, "FinalizeCacheEntryUpload", body, self.token(repo)
        )

    async def v1_reserve(self, ident: Ident) -> int:
        repo, key, version = ident
        status, out = await wire.v1_reserve(
            self.http, self.url, self.token(repo), key, version=version
        )
        assert status == 201, (ident, status, out)
        return int(out["cacheId"])

    async def v1_patch(self, ident: Ident, cache_id: int, data: bytes, start: int) -> None:
        chunk = data[start : start + BLOCK]
        status = await wire.v1_patch(
            self.http, self.url, self.token(ident[0]), cache_id, start, chunk
        )
        assert status == 204, status

    async def v1_commit(self, ident: Ident, cache_id: int, size: int) -> None:
        status, raw = await wire.v1_commit(
            self.http, self.url, self.token(ident[0]), cache_id, size
        )
        assert status == 204, (status, raw)

    async def save(self, ident: Ident, data: bytes, how: str = "put-blob") -> None:
        if how == "v1":
            cache_id = await self.v1_reserve(ident)
            for start in range(0, len(data), BLOCK):
                await self.v1_patch(ident, cache_id, data, start)
            await self.v1_commit(ident, cache_id, len(data))
            return
        url = await self.reserve(ident)
        if how == "blocks":
            assert await wire.put_blocks(self.http, url, data, BLOCK) == 201
        else:
            assert await wire.put_blob(self.http, url, data) == 201
        status, out = await self.finalize(ident, len(data))
        assert status == 200 and out["ok"], (ident, status, out)

    async def fetch(self, ident: Ident) -> bytes:
        """The entry's bytes, found by an exact v2 and an exact v1 lookup (which must agree)."""
        repo, key, version = ident
        found = await wire.v2_lookup(self.http, self.url, self.token(repo), key, version=version)
        assert found["ok"] and found["matched_key"] == key, (ident, found)
        status, body, _ = await wire.download(self.http, found["signed_download_url"])
        assert status == 200, (ident, status)
        status, hit = await wire.v1_lookup(
            self.http, self.url, self.token(repo), [key], version=version
        )
        assert status == 200 and hit is not None and hit["cacheKey"] == key, (ident, hit)
        status, again, _ = await wire.download(self.http, hit["archiveLocation"])
        assert status == 200 and again == body, ident
        return body

    async def assert_absent(self, ident: Ident) -> None:
        """No lookup (exact or prefix, v2 or v1) and no management listing shows the entry."""
        repo, key, version = ident
        token = self.token(repo)
        found = await wire.v2_lookup(self.http, self.url, token, key, version=version)
        assert not found["ok"], (ident, found)
        assert (await wire.v1_lookup(self.http, self.url, token, [key], version=version))[0] == 204
        prefix = await wire.v2_lookup(self.http, self.url, token, key[:-1], version=version)
        assert prefix["matched_key"] != key, (ident, prefix)
        async with self.http.get(
            f"{self.url}/repos/{repo}/actions/caches", params={"key": key}, headers=self.admin()
        ) as r:
            assert r.status == 200, await r.text()
            listed = (await r.json())["actions_caches"]
        assert key not in {c["key"] for c in listed}, (ident, listed)

    async def delete_key(self, repo: str, key: str) -> None:
        async with self.http.delete(
            f"{self.url}/repos/{repo}/actions/caches", params={"key": key}, headers=self.admin()
        ) as r:
            await r.read()
            assert r.status == 200, r.status
