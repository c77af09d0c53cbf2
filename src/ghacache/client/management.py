"""A client for the GitHub-shaped management API (ghacache's, or GitHub's own REST API)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import aiohttp

from ghacache.client._http import decode_json, server_error, transport_error


class ManagementClient:
    """List, delete and measure caches of a server with an admin (or GitHub) token."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s))

    async def __aenter__(self) -> ManagementClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    async def _request(self, method: str, path: str, params: dict[str, str] | None = None) -> Any:
        url = self.base_url + path
        what = f"{method} {path}"
        try:
            async with self._session.request(
                method, url, params=params, headers=self._headers
            ) as r:
                body = await r.read()
                if r.status >= 400:
                    raise server_error(r.status, body, r.headers, what=what, reason=r.reason or "")
                return decode_json(body, what=what, status=r.status) if body.strip() else None
        except (aiohttp.ClientError, OSError) as exc:
            raise transport_error(exc, f"{method} {url}") from exc
        except TimeoutError as exc:
            raise transport_error(exc, f"{method} {url} timed out") from exc

    async def list_caches(
        self,
        repo: str,
        *,
        key: str | None = None,
        ref: str | None = None,
        sort: str = "last_accessed_at",
        direction: str = "desc",
        limit: int = 30,
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` caches, following pages of 100."""
        caches: list[dict[str, Any]] = []
        page = 1
        while len(caches) < limit:
            params = {"sort": sort, "direction": direction, "per_page": "100", "page": str(page)}
            if key:
                params["key"] = key
            if ref:
                params["ref"] = ref
            body = await self._request("GET", f"/repos/{repo}/actions/caches", params)
            batch = body["actions_caches"]
            caches += batch
            if len(batch) < 100 or len(caches) >= int(body["total_count"]):
                break
            page += 1
        return caches[:limit]

    async def delete_by_key(
        self, repo: str, key: str, ref: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"key": key, **({"ref": ref} if ref else {})}
        body = await self._request("DELETE", f"/repos/{repo}/actions/caches", params)
        return list(body["actions_caches"])

    async def delete_by_id(self, repo: str, cache_id: int) -> None:
        await self._request("DELETE", f"/repos/{repo}/actions/caches/{cache_id}")

    async def usage(self, repo: str) -> dict[str, Any]:
        return dict(await self._request("GET", f"/repos/{repo}/actions/cache/usage"))

    async def usage_by_repository(self) -> list[dict[str, Any]]:
        usages: list[dict[str, Any]] = []
        page = 1
        while True:
            body = await self._request(
                "GET", "/actions/cache/usage-by-repository", {"per_page": "100", "page": str(page)}
            )
            usages += body["repository_cache_usages"]
            if len(usages) >= int(body["total_count"]) or not body["repository_cache_usages"]:
                return usages
            page += 1

    async def evictions(self, repo: str | None = None, *, limit: int = 30) -> list[dict[str, Any]]:
        params = {"per_page": str(min(limit, 100)), **({"repo": repo} if repo else {})}
        body = await self._request("GET", "/actions/cache/evictions", params)
        return list(body["evictions"])[:limit]
