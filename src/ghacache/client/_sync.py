"""A blocking facade for scripts: each call runs the async client on a private event loop.

The loop (an ``asyncio.Runner``) lives as long as the facade, so the session and its pooled
connections are reused between calls. Do not call it from inside a running event loop; use
``CacheClient`` there.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType

from ghacache.client._client import CacheClient
from ghacache.client._config import ClientConfig
from ghacache.client._model import CacheEntry
from ghacache.client._reader import DEFAULT_CHUNK_BYTES, EntryReader
from ghacache.client._source import Buffer, ProgressFn
from ghacache.client._token import TokenInfo


class SyncEntryReader:
    """Blocking twin of ``EntryReader``."""

    def __init__(self, runner: asyncio.Runner, reader: EntryReader) -> None:
        self._runner = runner
        self._reader = reader

    @property
    def size(self) -> int:
        return self._reader.size

    @property
    def key(self) -> str:
        return self._reader.key

    def read_at(self, offset: int, n: int) -> bytes:
        """See ``EntryReader.read_at``."""
        return self._runner.run(self._reader.read_at(offset, n))

    def read_all(self) -> bytes:
        return self._runner.run(self._reader.read_all())

    def iter_chunks(
        self, start: int = 0, end: int | None = None, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> Iterator[bytes]:
        """See ``EntryReader.iter_chunks``; each chunk is fetched on the facade's loop."""
        chunks = self._reader.iter_chunks(start, end, chunk_bytes=chunk_bytes)

        async def step() -> bytes | None:
            return await anext(chunks, None)

        async def close() -> None:
            await chunks.aclose()

        try:
            while (chunk := self._runner.run(step())) is not None:
                yield chunk
        finally:
            self._runner.run(close())

    def download_to(
        self, path: str | os.PathLike[str], *, progress: ProgressFn | None = None
    ) -> int:
        return self._runner.run(self._reader.download_to(path, progress=progress))

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> SyncEntryReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncCacheClient:
    """Blocking twin of ``CacheClient`` (use ``with``); same arguments, results and errors."""

    def __init__(self, config: ClientConfig) -> None:
        self._runner = asyncio.Runner()
        self._client = CacheClient(config)
        self.protocol = self._client.protocol

    def __enter__(self) -> SyncCacheClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the session and the private loop."""
        try:
            self._runner.run(self._client.close())
        finally:
            self._runner.close()

    def token_info(self) -> TokenInfo:
        return self._client.token_info()

    def lookup(self, keys: str | Sequence[str], version: str) -> CacheEntry | None:
        """See ``CacheClient.lookup``."""
        return self._runner.run(self._client.lookup(keys, version))

    def save(
        self,
        key: str,
        version: str,
        source: Buffer | str | os.PathLike[str],
        *,
        progress: ProgressFn | None = None,
    ) -> int:
        """See ``CacheClient.save`` (bytes or a file path)."""
        return self._runner.run(self._client.save(key, version, source, progress=progress))

    def open(self, entry: CacheEntry) -> SyncEntryReader:
        """See ``CacheClient.open``."""
        return SyncEntryReader(self._runner, self._runner.run(self._client.open(entry)))

    def load(self, keys: str | Sequence[str], version: str) -> bytes | None:
        return self._runner.run(self._client.load(keys, version))

    def save_mutable(
        self,
        base_key: str,
        version: str,
        fn: Callable[[bytes | None], bytes],
        *,
        max_wait_s: float = 15.0,
        retry_interval_s: float = 2.0,
    ) -> str:
        """See ``CacheClient.save_mutable`` (``fn`` is a plain function here)."""
        return self._runner.run(
            self._client.save_mutable(
                base_key, version, fn, max_wait_s=max_wait_s, retry_interval_s=retry_interval_s
            )
        )
