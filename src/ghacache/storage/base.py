"""The ``BlobStore`` seam: where entry bytes live.

An upload stages *parts* (a Put Blob body, Azure blocks, v1 PATCH chunks), *assembles* them
in order into one staged object, then *publishes* it under a blob name, atomically and
create-only. Nothing staged is ever readable as a blob; a published blob never changes.

Some stores can also hand out *direct* URLs, so clients move bytes to and from the store
without passing through the server: an upload lands as part ``DIRECT_PART`` of its upload
and is then assembled and published like any other part.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator, AsyncIterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

DIRECT_PART = "direct"  # the part a direct upload lands as
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def check_name(kind: str, name: str) -> str:
    """Return ``name`` if it is a valid upload, part or blob name.

    Names are server-generated; this guards against path traversal all the same.

    Raises:
        ValueError: ``name`` could escape its directory or prefix, or is too long.
    """
    if not _NAME.fullmatch(name) or name in (".", ".."):  # fullmatch: "$" allows a final "\n"
        raise ValueError(f"invalid {kind} name {name!r}")
    return name


@dataclass(frozen=True, kw_only=True)
class BlobInfo:
    """Metadata of a published blob."""

    size: int
    etag: str
    modified_at: float


class BlobStore(Protocol):
    """Storage verbs used by the server; every method is atomic from a reader's view."""

    async def write_part(
        self,
        upload: str,
        part: str,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int,
        offset: int | None = None,
        number: int | None = None,
        length: int | None = None,
    ) -> int:
        """Stage one part of ``upload`` (replacing an earlier part of that name).

        Hints, all optional: ``length`` is the body's exact size when the request declares
        it; ``offset`` where the part will sit in the assembled object when the protocol
        says so (v1 chunks); ``number`` the part's place among equally sized parts (all but
        the last), as the client numbered them (Azure block ids end in it). With them a
        store may write the part into place as it arrives, so that assembling copies
        nothing; a wrong guess only costs that copy.

        Returns the number of bytes written. Raises EntryTooLarge past ``max_bytes``,
        RemoteProtocolError if the body's size is not ``length``, and StorageFull when out
        of space; a failed write leaves no part behind.
        """
        ...

    async def assemble(self, upload: str, parts: Sequence[str]) -> int:
        """Concatenate staged parts in order into the upload's staged object; return its size.

        Raises BlobNotFound if a part is missing.
        """
        ...

    async def read_assembled(self, upload: str, max_bytes: int) -> bytes | None:
        """The upload's assembled bytes, or None if there are more than ``max_bytes``."""
        ...

    async def replace_assembled(self, upload: str, data: bytes) -> int:
        """Atomically replace the upload's assembled object with ``data``; return its size."""
        ...

    async def publish(self, upload: str, blob: str) -> None:
        """Make the assembled object durable and visible as ``blob`` (create-only).

        Raises BlobExists if ``blob`` exists and UploadStateError if nothing was assembled.
        """
        ...

    async def discard(self, upload: str) -> None:
        """Remove everything staged for ``upload``; a no-op if nothing is."""
        ...

    async def delete(self, blob: str) -> None:
        """Remove a published blob; a no-op if it is gone. Open readers keep their bytes."""
        ...

    async def delete_many(self, blobs: Sequence[str]) -> None:
        """Remove several published blobs (missing ones are skipped)."""
        ...

    async def stat(self, blob: str) -> BlobInfo | None:
        """Size and ETag of a published blob, or None if it does not exist."""
        ...

    def local_path(self, blob: str) -> Path | None:
        """A filesystem path for zero-copy serving, or None for remote stores."""
        ...

    def read(self, blob: str, start: int, length: int) -> AsyncGenerator[bytes, None]:
        """Stream ``length`` bytes of ``blob`` from ``start``. Raises BlobNotFound."""
        ...

    async def list_uploads(self) -> list[str]:
        """Names of uploads with staged data (for reconciliation)."""
        ...

    async def upload_modified_at(self, upload: str) -> float | None:
        """When ``upload`` last received data, or None if nothing is staged."""
        ...

    async def list_blobs(self) -> list[str]:
        """Names of all published blobs (for reconciliation)."""
        ...

    async def direct_upload_url(self, upload: str, ttl_s: float) -> str | None:
        """A URL to which a client uploads the whole blob itself with the Azure Block Blob
        protocol (Put Blob, or Put Block + Put Block List), landing as part DIRECT_PART of
        ``upload``; None if the store cannot hand one out (only Azure can: S3/GCS presigned
        URLs don't speak that protocol)."""
        ...

    async def direct_download_url(self, blob: str, ttl_s: float) -> str | None:
        """A presigned GET URL for a published blob, valid for ``ttl_s`` seconds; None if the
        store cannot hand one out (LocalStore)."""
        ...
