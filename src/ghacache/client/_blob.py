"""Azure Block Blob uploads to a signed URL: Put Blob, or parallel Put Block + Put Block List.

The URL is a capability (an Azure SAS or ghacache's look-alike), so these requests carry no
Authorization header. Small bodies go in a single Put Blob; larger ones are staged as blocks,
``concurrency`` at a time, and committed in order by the block list.
"""

from __future__ import annotations

import base64
import uuid
from urllib.parse import urlencode

from ghacache.client._http import Http
from ghacache.client._model import Transfer
from ghacache.client._source import BlockSource, Buffer, ProgressFn, StreamBody, for_each_block
from ghacache.protocol import azblob

# Every Azure request names a service version; the SAS carries its own ``sv``.
BLOB_HEADERS = {"x-ms-version": azblob.API_VERSION}


def with_query(url: str, **params: str) -> str:
    """``url`` with ``params`` appended to whatever query it already has (the signature)."""
    return url + ("&" if "?" in url else "?") + urlencode(params)


def block_ids(count: int) -> list[str]:
    """Block ids for one blob: base64 of a 48-character ``<uuid hex><index>`` string.

    All ids of a blob must have the same length (Azure); a random prefix per upload keeps
    a retried upload from reusing another attempt's staged blocks.
    """
    prefix = uuid.uuid4().hex
    return [base64.b64encode(f"{prefix}{i:016d}".encode()).decode() for i in range(count)]


async def put_blob(http: Http, url: str, data: Buffer | StreamBody) -> None:
    """Put Blob: the whole body in one request (Azure answers 201)."""
    await http.call(
        "PUT",
        url,
        what="upload (Put Blob)",
        ok=(201,),
        headers={
            **BLOB_HEADERS,
            "x-ms-blob-type": "BlockBlob",
            "Content-Type": "application/octet-stream",
        },
        data=data,
    )


async def upload_blob(
    http: Http,
    url: str,
    source: BlockSource,
    transfer: Transfer,
    progress: ProgressFn | None = None,
) -> None:
    """Upload ``source`` to a signed blob URL.

    Up to ``transfer.single_put_bytes`` (one block for a stream, which is held in memory)
    the body goes in one Put Blob, streamed from the source; above that, as blocks.

    Raises:
        ServerError: Azure (or ghacache) refused a request.
        TransportError: the network failed past the retries.
    """
    if transfer.single_request(source.size, source.random_access):
        if source.random_access:
            await put_blob(http, url, source.body(0, source.size, progress))
        else:
            await put_blob(http, url, await source.read_next(source.size))
        if progress is not None:
            progress(source.size, source.size)
        return

    block_bytes = transfer.block_bytes
    ids = block_ids((source.size + block_bytes - 1) // block_bytes)

    async def put_block(index: int, offset: int, data: Buffer | StreamBody) -> None:
        await http.call(
            "PUT",
            with_query(url, comp="block", blockid=ids[index]),
            what=f"upload block {index} at byte {offset} (Put Block)",
            ok=(201,),
            headers={**BLOB_HEADERS, "Content-Type": "application/octet-stream"},
            data=data,
        )

    await for_each_block(source, block_bytes, transfer.concurrency, put_block, progress)
    await http.call(
        "PUT",
        with_query(url, comp="blocklist"),
        what=f"commit {len(ids)} blocks (Put Block List)",
        ok=(201,),
        headers={**BLOB_HEADERS, "Content-Type": "application/xml"},
        data=azblob.block_list_xml(ids),
    )
