"""v1: the legacy ``_apis/artifactcache`` REST API (GHES, act, older BuildKit).

Uploads are ``PATCH caches/<id>`` chunks with ``Content-Range: bytes a-b/*``, sent in
parallel and in any order, then ``POST caches/<id> {"size"}`` commits them.
"""

from __future__ import annotations

from ghacache.client._http import Http, decode_json, invalid
from ghacache.client._model import CacheEntry, Reservation, Transfer
from ghacache.client._source import BlockSource, Buffer, ProgressFn, StreamBody, for_each_block
from ghacache.errors import RemoteProtocolError
from ghacache.protocol import v1

# The Accept header the hosted service (and every client) uses.
ACCEPT = "application/json;api-version=6.0-preview.1"


class V1Api:
    """Lookup, reserve, chunked upload and commit."""

    protocol = "v1"

    def __init__(self, http: Http, base_url: str, token: str) -> None:
        # BuildKit's normalisation; the official client needs ACTIONS_CACHE_URL to end in "/".
        self._base = base_url.rstrip("/") + "/" + v1.API_SEGMENT + "/"
        self._http = http
        self._headers = {"Authorization": f"Bearer {token}", "Accept": ACCEPT}

    async def lookup(
        self, keys: tuple[str, ...], version: str, *, prefix_primary: bool = True
    ) -> CacheEntry | None:
        # v1 matches every key by prefix, the primary one included; nothing to repeat.
        query = v1.LookupQuery(keys=keys, version=version).to_query()
        reply = await self._http.call(
            "GET",
            self._base + "cache",
            what=f"lookup {keys[0]!r}",
            ok=(200, 204),
            headers=self._headers,
            params=query,
        )
        if reply.status == 204 or not reply.body.strip():
            return None
        data = decode_json(reply.body, what=f"lookup {keys[0]!r}", status=reply.status)
        try:
            hit = v1.ArtifactCacheEntry.from_json(data)
        except RemoteProtocolError as exc:
            raise invalid(exc, what="lookup", status=reply.status) from exc
        if hit is None:
            return None
        return CacheEntry(
            key=hit.cache_key,
            version=hit.cache_version or version,
            url=hit.archive_location,
            protocol="v1",
            scope=hit.scope or None,
        )

    async def reserve(self, key: str, version: str, size: int) -> Reservation:
        request = v1.ReserveCacheRequest(key=key, version=version, cache_size=size)
        data = await self._http.call_json(
            "POST",
            self._base + "caches",
            what=f"reserve {key!r}",
            headers=self._headers,
            json_body=request.to_json(),
        )
        try:
            reply = v1.ReserveCacheResponse.from_json(data)
        except RemoteProtocolError as exc:
            raise invalid(exc, what=f"reserve {key!r}", status=200) from exc
        return Reservation(key=key, version=version, size=size, target=reply.cache_id)

    async def upload(
        self,
        reservation: Reservation,
        source: BlockSource,
        transfer: Transfer,
        progress: ProgressFn | None,
    ) -> None:
        url = f"{self._base}caches/{reservation.target}"

        async def patch(index: int, offset: int, data: Buffer | StreamBody) -> None:
            end = offset + (data.length if isinstance(data, StreamBody) else len(data)) - 1
            await self._http.call(
                "PATCH",
                url,
                what=f"upload chunk bytes {offset}-{end} of {reservation.key!r}",
                headers={
                    **self._headers,
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"bytes {offset}-{end}/*",
                },
                data=data,
            )

        if source.size == 0:
            return  # nothing to send; the commit of size 0 stands alone
        if source.random_access and transfer.single_request(source.size, True):
            await patch(0, 0, source.body(0, source.size, progress))  # one chunk, streamed
            if progress is not None:
                progress(source.size, source.size)
            return
        await for_each_block(source, transfer.block_bytes, transfer.concurrency, patch, progress)

    async def commit(self, reservation: Reservation) -> int:
        await self._http.call(
            "POST",
            f"{self._base}caches/{reservation.target}",
            what=f"commit {reservation.key!r}",
            headers=self._headers,
            json_body=v1.CommitCacheRequest(size=reservation.size).to_json(),
        )
        assert isinstance(reservation.target, int)
        return reservation.target
