"""v2: Twirp ``CacheService`` calls, with uploads going to Azure-style signed URLs.

The primary key is repeated in ``restore_keys`` (as go-actions-cache does): the hosted
service matches ``key`` exactly and restore keys by prefix, so the repetition gives the
primary key prefix semantics too (BuildKit's ``index-…#`` lookups depend on it).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ghacache.client._blob import upload_blob
from ghacache.client._http import Http, invalid
from ghacache.client._model import CacheEntry, Reservation, Transfer
from ghacache.client._source import BlockSource, ProgressFn
from ghacache.errors import RemoteEntryExists, RemoteProtocolError, ServerError
from ghacache.protocol import v2
from ghacache.protocol.keys import MAX_KEYS


class V2Api:
    """The three Twirp calls plus the blob upload."""

    protocol = "v2"

    def __init__(self, http: Http, base_url: str, token: str) -> None:
        parts = urlsplit(base_url)
        # Twirp lives at the origin root: the official client drops any path of the URL.
        self._root = f"{parts.scheme}://{parts.netloc}{v2.PATH_PREFIX}"
        self._http = http
        self._headers = {"Authorization": f"Bearer {token}"}

    async def _rpc(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        what = f"{method} {body.get('key', '')!r}"
        data = await self._http.call_json(
            "POST", self._root + method, what=what, ok=(200,), headers=self._headers, json_body=body
        )
        return data

    async def lookup(
        self, keys: tuple[str, ...], version: str, *, prefix_primary: bool = True
    ) -> CacheEntry | None:
        restore = keys if prefix_primary and len(keys) < MAX_KEYS else keys[1:]
        request = v2.GetCacheEntryDownloadURLRequest(
            key=keys[0], restore_keys=restore, version=version
        )
        data = await self._rpc("GetCacheEntryDownloadURL", request.to_json())
        try:
            reply = v2.GetCacheEntryDownloadURLResponse.from_json(data)
        except RemoteProtocolError as exc:
            raise invalid(exc, what="GetCacheEntryDownloadURL", status=200) from exc
        if not reply.ok or not reply.signed_download_url:
            return None
        return CacheEntry(
            key=reply.matched_key or keys[0],
            version=version,
            url=reply.signed_download_url,
            protocol="v2",
        )

    async def reserve(self, key: str, version: str, size: int) -> Reservation:
        data = await self._rpc(
            "CreateCacheEntry", v2.CreateCacheEntryRequest(key=key, version=version).to_json()
        )
        try:
            reply = v2.CreateCacheEntryResponse.from_json(data)
        except RemoteProtocolError as exc:
            raise invalid(exc, what="CreateCacheEntry", status=200) from exc
        if not reply.ok:
            # go-actions-cache drops this message; it is the only explanation there is.
            text = f"CreateCacheEntry {key!r}: reservation refused: {reply.message or 'ok=false'}"
            if "already exists" in reply.message.lower():
                raise RemoteEntryExists(text, status=200, body=str(data))
            raise ServerError(text, status=200, body=str(data))
        if not reply.signed_upload_url:
            raise ServerError(f"CreateCacheEntry {key!r}: no signed_upload_url", status=200)
        return Reservation(key=key, version=version, size=size, target=reply.signed_upload_url)

    async def upload(
        self,
        reservation: Reservation,
        source: BlockSource,
        transfer: Transfer,
        progress: ProgressFn | None,
    ) -> None:
        assert isinstance(reservation.target, str)
        await upload_blob(self._http, reservation.target, source, transfer, progress)

    async def commit(self, reservation: Reservation) -> int:
        request = v2.FinalizeCacheEntryUploadRequest(
            key=reservation.key, version=reservation.version, size_bytes=reservation.size
        )
        data = await self._rpc("FinalizeCacheEntryUpload", request.to_json())
        try:
            reply = v2.FinalizeCacheEntryUploadResponse.from_json(data)
        except RemoteProtocolError as exc:
            raise invalid(exc, what="FinalizeCacheEntryUpload", status=200) from exc
        if not reply.ok:
            raise ServerError(
                f"FinalizeCacheEntryUpload {reservation.key!r}: refused: "
                f"{reply.message or 'ok=false'}",
                status=200,
                body=str(data),
            )
        return reply.entry_id
