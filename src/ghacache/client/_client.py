"""``CacheClient``: look up, save, read and mutably update entries on any GHA cache service.

One client holds one aiohttp session (created in the running loop on first use) and one
configuration; the protocol (v1 or v2) is fixed when it is built. Verbs follow
go-actions-cache: ``lookup``, ``save``, ``open``, ``save_mutable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

import aiohttp

from ghacache.client._config import MAX_BLOCKS, ClientConfig
from ghacache.client._http import Http, new_session
from ghacache.client._model import CacheEntry, Reservation, Transfer
from ghacache.client._mutable import MutateFn, save_mutable
from ghacache.client._reader import EntryReader, blob_size
from ghacache.client._source import BlockSource, ProgressFn, Source, open_source
from ghacache.client._token import TokenInfo, decode_token
from ghacache.client._v1 import V1Api
from ghacache.client._v2 import V2Api
from ghacache.errors import RemoteEntryNotFound, RemoteProtocolError
from ghacache.protocol.keys import validate_key, validate_keys, validate_version


class _Api(Protocol):
    protocol: str

    async def lookup(
        self, keys: tuple[str, ...], version: str, *, prefix_primary: bool = True
    ) -> CacheEntry | None: ...

    async def reserve(self, key: str, version: str, size: int) -> Reservation: ...

    async def upload(
        self,
        reservation: Reservation,
        source: BlockSource,
        transfer: Transfer,
        progress: ProgressFn | None,
    ) -> None: ...

    async def commit(self, reservation: Reservation) -> int: ...


def _checked_keys(keys: str | Sequence[str]) -> tuple[str, ...]:
    try:
        return validate_keys([keys] if isinstance(keys, str) else list(keys))
    except RemoteProtocolError as exc:
        raise ValueError(exc.message) from exc


def _checked(key: str, version: str) -> None:
    try:
        validate_key(key)
        validate_version(version)
    except RemoteProtocolError as exc:
        raise ValueError(exc.message) from exc


class CacheClient:
    """An async client for one cache service (use ``async with``).

    Args:
        config: where and how to connect; see ``ClientConfig``.
        session: an aiohttp session to reuse (the caller closes it); by default the client
            opens its own on first use and closes it in :meth:`close`.

    Raises:
        ValueError: the configuration names no usable URL.
    """

    def __init__(
        self, config: ClientConfig, *, session: aiohttp.ClientSession | None = None
    ) -> None:
        self.config = config
        self.protocol, self.base_url = config.selected()
        self._session = session
        self._owns_session = session is None
        self._api: _Api | None = None
        self._http: Http | None = None

    async def __aenter__(self) -> CacheClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session if the client opened it."""
        if self._owns_session and self._session is not None:
            await self._session.close()
        self._session = None
        self._api = None
        self._http = None

    def _connect(self) -> tuple[Http, _Api]:
        if self._http is None or self._api is None:
            if self._session is None:
                self._session = new_session(self.config.concurrency)
            self._http = Http(self._session, self.config.retry, self.config.user_agent)
            api_class = V2Api if self.protocol == "v2" else V1Api
            self._api = api_class(self._http, self.base_url, self.config.token)
        return self._http, self._api

    def token_info(self) -> TokenInfo:
        """The configured token's scopes and expiry (decoded, not verified).

        Raises:
            Unauthenticated: the token is not a JWT shaped like GitHub's.
        """
        return decode_token(self.config.token)

    async def lookup(self, keys: str | Sequence[str], version: str) -> CacheEntry | None:
        """Find the entry a restore with ``keys`` (primary first, at most 10) would get.

        Every key matches by prefix, the newest entry winning (on v2 the primary key is
        repeated among the restore keys for that, as BuildKit does).

        Returns:
            The entry, or None on a miss.

        Raises:
            ValueError: invalid keys or version.
            ServerError: the service refused; TransportError: the network failed.
        """
        checked = _checked_keys(keys)
        _checked(checked[0], version)
        _, api = self._connect()
        return await api.lookup(checked, version)

    async def save(
        self,
        key: str,
        version: str,
        source: Source,
        *,
        size: int | None = None,
        progress: ProgressFn | None = None,
    ) -> int:
        """Reserve ``key``, upload ``source`` in parallel blocks, and commit it.

        ``source`` is bytes, a file path, or an async stream (``async read(n)`` or an async
        iterable of bytes) with ``size`` given. Memory stays at about ``concurrency`` x
        4 MiB for bytes and files (blocks are streamed from them), ``concurrency`` x
        ``block_bytes`` for streams.

        Returns:
            The service's entry id (v1 cache id, v2 entry id).

        Raises:
            RemoteEntryExists: the key and version are already saved or being saved.
            ValueError: invalid key/version, or a source whose size is wrong.
            ServerError: the service refused; TransportError: the network failed.
        """
        _checked(key, version)
        _, api = self._connect()
        opened = open_source(source, size)
        try:
            transfer = Transfer(
                block_bytes=max(self.config.block_bytes, -(-opened.size // MAX_BLOCKS)),
                concurrency=self.config.concurrency,
                single_put_bytes=self.config.single_put_bytes,
            )
            reservation = await api.reserve(key, version, opened.size)
            await api.upload(reservation, opened, transfer, progress)
            return await api.commit(reservation)
        finally:
            opened.close()

    async def open(self, entry: CacheEntry) -> EntryReader:
        """A reader for ``entry``'s bytes (its size is fetched with one HEAD request).

        Raises:
            RemoteEntryNotFound: the entry vanished and a fresh lookup does not find it.
            ServerError: the blob store refused; TransportError: the network failed.
        """
        http, _ = self._connect()
        reader = EntryReader(
            http, key=entry.key, url=entry.url, size=0, resign=lambda: self._resign(entry)
        )
        what = f"size of {entry.key!r}"
        size = await reader._with_resign(lambda url: blob_size(http, url, what=what))
        assert isinstance(size, int)
        reader.size = size
        return reader

    async def _resign(self, entry: CacheEntry) -> str:
        """A fresh signed URL for exactly ``entry`` (its URL expired)."""
        _, api = self._connect()
        again = await api.lookup((entry.key,), entry.version, prefix_primary=False)
        if again is None or again.key != entry.key:
            raise RemoteEntryNotFound(f"cache entry {entry.key!r} no longer exists", status=404)
        return again.url

    async def load(self, keys: str | Sequence[str], version: str) -> bytes | None:
        """``lookup`` and read the whole entry into memory; None on a miss."""
        entry = await self.lookup(keys, version)
        if entry is None:
            return None
        async with await self.open(entry) as reader:
            return await reader.read_all()

    async def save_mutable(
        self,
        base_key: str,
        version: str,
        fn: MutateFn,
        *,
        max_wait_s: float = 15.0,
        retry_interval_s: float = 2.0,
    ) -> str:
        """Write a new generation ``base_key#N+1`` computed by ``fn(previous bytes or None)``.

        The protocol of go-actions-cache's ``SaveMutable``, without its bug: a failed upload
        is raised, never reported as success. Concurrent writers retry; a number reserved by
        a writer that never finished is skipped after ``max_wait_s``.

        Returns:
            The key written, e.g. ``"index-buildkit-1-f921bd05#13"``.

        Raises:
            ServerError, TransportError: the save failed (nothing new became visible).
        """
        _checked(base_key + "#1", version)
        return await save_mutable(
            self,
            base_key,
            version,
            fn,
            max_wait_s=max_wait_s,
            retry_interval_s=retry_interval_s,
        )
