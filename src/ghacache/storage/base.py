"""The ``BlobStore`` seam: where entry bytes live.

An upload stages *parts* (a Put Blob body, Azure blocks, v1 PATCH chunks), *assembles* them
in order into one staged object, then *publishes* it under a blob name, atomically and
create-only. Nothing staged is ever readable as a blob; a published blob never changes.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True, kw_only=True)
class BlobInfo:
    """Metadata of a published blob."""

    size: int
    etag: str
    modified_at: float


class BlobStore(Protocol):
    """Storage verbs used by the server; every method is atomic from a reader's view."""

    async def write_part(
        self, upload: str, part: str, chunks: AsyncIterable[bytes], *, max_bytes: int
    ) -> int:
        """Stage one part of ``upload`` (replacing an earlier part of that name).

        Returns the number of bytes written. Raises EntryTooLarge past ``max_bytes`` and
        StorageFull when out of space; a failed write leaves no part behind.
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

    def read(self, blob: str, start: int, length: int) -> AsyncIterator[bytes]:
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
