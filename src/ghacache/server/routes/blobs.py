"""The Azure Block Blob subset behind signed URLs (both protocols hand these out).

``/ghacache/uploads/<id>``: Put Blob, Put Block, Put Block List (every write answers 201).
``/ghacache/entries/<id>``: Get Blob and Get Blob Properties, with ``Range`` or
``x-ms-range`` (206 + Content-Range): served zero-copy with sendfile from a local store,
streamed from the store's ranged reads otherwise (object stores).
"""

from __future__ import annotations

import contextlib
import logging
from email.utils import formatdate
from typing import Any

from aiohttp import hdrs, web

from ghacache.errors import RangeNotSatisfiable, RemoteProtocolError, StorageError
from ghacache.protocol import azblob
from ghacache.protocol.keys import parse_entry_id
from ghacache.server.routes import bodies
from ghacache.server.state import ACCOUNT, ENTRIES, UPLOADS, state_of
from ghacache.storage import BlobInfo, BlobStore

log = logging.getLogger("ghacache.server")

MS_HEADERS = {"x-ms-version": azblob.API_VERSION}


def _entry_id(request: web.Request) -> int:
    raw = request.match_info["entry_id"]
    entry_id = parse_entry_id(raw)
    if entry_id is None:
        raise RemoteProtocolError(f"blob name must be an entry id, got {raw!r}")
    return entry_id


def _created(etag_source: int) -> web.Response:
    return web.Response(
        status=201,
        headers={
            **MS_HEADERS,
            "ETag": f'"0x{etag_source:X}"',
            "Last-Modified": formatdate(usegmt=True),
            "x-ms-request-server-encrypted": "false",
        },
    )


async def put(request: web.Request) -> web.Response:
    state = state_of(request)
    entry_id = _entry_id(request)
    state.verify_blob_url(request, UPLOADS, entry_id)
    service = state.service
    timeout_s = state.config.body_read_timeout
    comp = request.query.get("comp")
    if comp == "block":
        raw_id = azblob.decode_block_id(request.query.get("blockid"))
        size = await service.put_block(
            entry_id, raw_id, bodies.chunks(request, timeout_s), length=request.content_length
        )
    elif comp == "blocklist":
        body = await bodies.read(request, timeout_s, max_bytes=azblob.MAX_BLOCK_LIST_BYTES)
        size = await service.put_block_list(entry_id, azblob.parse_block_list(body))
    elif comp is None:
        blob_type = request.headers.get("x-ms-blob-type")
        if blob_type != "BlockBlob":
            raise RemoteProtocolError(
                f"Put Blob needs the header 'x-ms-blob-type: BlockBlob', got {blob_type!r}"
            )
        size = await service.put_blob(
            entry_id, bodies.chunks(request, timeout_s), length=request.content_length
        )
    else:
        raise RemoteProtocolError(f"unsupported operation comp={comp!r}")
    return _created(size)


class _BlobFileResponse(web.FileResponse):
    """A FileResponse that honours Azure's ``x-ms-range`` like ``Range``."""

    def __init__(self, *args: Any, ms_range: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._ms_range = ms_range

    async def prepare(self, request: web.BaseRequest) -> Any:
        if self._ms_range is not None:
            headers = request.headers.copy()
            headers[hdrs.RANGE] = self._ms_range
            request = request.clone(headers=headers)
        return await super().prepare(request)


async def get(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    entry_id = _entry_id(request)
    state.verify_blob_url(request, ENTRIES, entry_id)
    entry, info = await state.service.open_download(entry_id)
    assert entry.blob is not None
    path = state.service.store.local_path(entry.blob)
    headers = {**MS_HEADERS, "x-ms-blob-type": "BlockBlob", "Accept-Ranges": "bytes"}
    if path is not None:
        return _BlobFileResponse(
            path,
            chunk_size=1024 * 1024,
            headers=headers,
            ms_range=request.headers.get("x-ms-range"),
        )
    return await _stream_blob(request, state.service.store, entry.blob, info, headers)


def _requested_range(request: web.Request, size: int) -> tuple[int, int] | None:
    """``(start, end_inclusive)`` from ``x-ms-range`` (which wins, as in Azure) or ``Range``."""
    raw = request.headers.get("x-ms-range") or request.headers.get(hdrs.RANGE)
    try:
        return azblob.parse_range(raw, size)
    except RangeNotSatisfiable:
        raise
    except RemoteProtocolError as exc:  # sendfile answers a malformed range with 416 too
        raise RangeNotSatisfiable(exc.message, size=size) from exc


async def _stream_blob(
    request: web.Request, store: BlobStore, blob: str, info: BlobInfo, headers: dict[str, str]
) -> web.StreamResponse:
    """Serve a blob the store cannot hand over as a file, with the sendfile path's answers."""
    span = _requested_range(request, info.size)
    start, end = span if span is not None else (0, info.size - 1)
    resp = web.StreamResponse(
        status=200 if span is None else 206,
        headers={
            **headers,
            "ETag": info.etag,
            "Last-Modified": formatdate(info.modified_at, usegmt=True),
            hdrs.CONTENT_TYPE: "application/octet-stream",
            # Set here: the access middleware adds it only to responses not yet sent.
            azblob.REQUEST_ID: azblob.new_request_id(),
        },
    )
    if span is not None:
        resp.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{end}/{info.size}"
    resp.content_length = length = end - start + 1
    if request.method == "HEAD" or length == 0:
        await resp.prepare(request)
        return resp
    async with contextlib.aclosing(store.read(blob, start, length)) as chunks:
        # The first chunk comes before the headers, so a blob deleted since it was found
        # still gets a proper 404 (or 500) instead of a cut-off 200.
        first = await anext(chunks)
        await resp.prepare(request)
        try:
            await resp.write(first)
            async for chunk in chunks:
                await resp.write(chunk)
        except ConnectionError:
            return resp  # the client went away; nothing to tell it
        except StorageError as exc:
            # Headers are out: close the connection so the client sees a truncated body.
            log.error("reading blob %s failed mid-response: %s", blob, exc)
            resp.force_close()
    return resp


def add_routes(app: web.Application) -> None:
    app.router.add_put(f"/{ACCOUNT}/{UPLOADS}/{{entry_id}}", put)
    app.router.add_get(f"/{ACCOUNT}/{ENTRIES}/{{entry_id}}", get)  # also answers HEAD
