"""What handlers share: the service, the authenticator, the URL signer and the clock.

One ``ServerState`` hangs off each app (no module globals); handlers reach it through
``state_of(request)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from ghacache.index import Entry
from ghacache.index.catalog import Catalog
from ghacache.protocol.scopes import RuntimeClaims
from ghacache.protocol.signing import Direction, UrlSigner
from ghacache.server.auth import AdminAuthenticator, Authenticator, bearer_token
from ghacache.server.config import ServerConfig
from ghacache.server.maintenance import Maintainer
from ghacache.server.service import CacheService

# The first path segment of blob URLs; Azure SDKs read it as the storage account.
ACCOUNT = "ghacache"
UPLOADS = "uploads"
ENTRIES = "entries"


@dataclass(frozen=True, kw_only=True)
class ServerState:
    config: ServerConfig
    service: CacheService
    catalog: Catalog
    maintainer: Maintainer
    authenticator: Authenticator
    admin: AdminAuthenticator
    signer: UrlSigner
    now: Callable[[], float]

    def base_url(self, request: web.Request) -> str:
        if self.config.public_url:
            return self.config.public_url.rstrip("/")
        return f"{request.scheme}://{request.host}"

    def blob_url(self, request: web.Request, container: str, entry_id: int) -> str:
        """A signed URL for an entry's upload (``uploads``) or download (``entries``)."""
        direction: Direction = "cw" if container == UPLOADS else "r"
        query = self.signer.sign_query(
            resource=f"{container}/{entry_id}",
            direction=direction,
            expires_at=self.now() + self.config.url_ttl,
        )
        return f"{self.base_url(request)}/{ACCOUNT}/{container}/{entry_id}?{query}"

    async def upload_url(self, request: web.Request, entry: Entry) -> str:
        """Where the client uploads: the store itself with direct transfers, else this server."""
        if self.config.direct_transfers:
            url = await self.service.store.direct_upload_url(entry.upload, self.config.url_ttl)
            if url is not None:
                return url
        return self.blob_url(request, UPLOADS, entry.id)

    async def download_url(self, request: web.Request, entry: Entry) -> str:
        """Where the client downloads a committed entry from (the store, with direct transfers)."""
        if self.config.direct_transfers and entry.blob is not None:
            url = await self.service.store.direct_download_url(entry.blob, self.config.url_ttl)
            if url is not None:
                return url
        return self.blob_url(request, ENTRIES, entry.id)

    def verify_blob_url(self, request: web.Request, container: str, entry_id: int) -> None:
        direction: Direction = "cw" if container == UPLOADS else "r"
        self.signer.verify(
            dict(request.query),
            resource=f"{container}/{entry_id}",
            direction=direction,
            now=self.now(),
        )

    async def require_admin(self, request: web.Request) -> None:
        """Raises Unauthenticated or ScopeForbidden unless the request has an admin token."""
        await self.admin.authenticate(request.headers.get("Authorization"))

    async def claims(self, request: web.Request) -> RuntimeClaims:
        token = bearer_token(request.headers.get("Authorization"))
        return await self.authenticator.authenticate(token)


STATE: web.AppKey[ServerState] = web.AppKey("ghacache_state", ServerState)


def state_of(request: web.Request) -> ServerState:
    return request.app[STATE]
