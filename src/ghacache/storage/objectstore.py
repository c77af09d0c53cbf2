"""Blob store on S3 (or S3-compatible), Azure Blob Storage or Google Cloud Storage, via obstore.

Layout under the URL's prefix::

    uploads/<upload>/<part>        staged parts, one object each
    uploads/<upload>/=assembled    manifest: JSON naming the parts in order, with sizes and ETags
    uploads/<upload>/=replaced     the bytes given to ``replace_assembled``
    blobs/<blob>                   published blobs

Object stores cannot append, so ``assemble`` copies nothing: it checks that the parts exist
and records their order. ``publish`` writes the blob once, create-only: a server-side copy
when there is a single part (the common Put Blob or direct upload), otherwise the parts
streamed in order into one multipart upload through obstore's buffered writer, whose 8 MiB
parts coalesce blocks below S3's 5 MiB minimum part size. Memory stays bounded (a few parts
in flight) whatever the blob's size. Every write is atomic: a failed, oversized or cancelled
write aborts its multipart upload, so no partial object is ever listed. An existing blob
name is refused with BlobExists (copy in create mode where the store has it, otherwise a
HEAD check first; blob names are random, so this is defence in depth).

Only Azure can take direct uploads (``direct_upload_url``: a service SAS for Put Blob or
Put Block + Put Block List); S3, GCS and Azure give presigned download URLs. The SAS and
presigned URLs come from ``obstore.sign``.

URLs: ``s3://bucket/prefix``, ``az://container/prefix`` (or ``azure://``),
``gs://bucket/prefix``. obstore reads credentials, region and endpoint from the usual
environment (``AWS_*``, ``AZURE_STORAGE_*``, ``AZURITE_BLOB_STORAGE_URL``, ``GOOGLE_*``);
prefer it for secrets, as URLs end up in logs. Query options override it:

=============================  ========  ===================================================
option                         schemes   meaning
=============================  ========  ===================================================
allow_http                     all       ``true`` to allow plain http (emulators)
timeout                        all       request timeout, e.g. ``30s``
connect_timeout                all       connection timeout, e.g. ``5s``
max_retries                    all       retries of a failed request (obstore's 10)
retry_timeout                  all       no retry starts after this long, e.g. ``10s`` (30s)
endpoint                       s3, az    service URL (MinIO, moto, R2; Azurite + account)
region                         s3        AWS region
access_key_id                  s3        AWS access key id
secret_access_key              s3        AWS secret access key
session_token                  s3        AWS session token
virtual_hosted_style_request   s3        ``true`` for bucket-in-hostname requests
copy_if_not_exists             s3        obstore's create-only copy mode (``multipart``)
account_name                   az        storage account
account_key                    az        storage account key (also signs SAS URLs)
use_emulator                   az        ``true`` for Azurite's development account
use_azure_cli                  az        ``true`` to use the Azure CLI's login
client_id                      az        service principal or managed identity client id
client_secret                  az        service principal secret
tenant_id                      az        Entra ID tenant
service_account                gs        path of a service account JSON file
service_account_key            gs        service account JSON, inline
application_credentials        gs        path of application default credentials
=============================  ========  ===================================================

Examples: ``s3://b/p?endpoint=http://127.0.0.1:9000&region=us-east-1&allow_http=true``,
``az://c/p?use_emulator=true``. Unknown options raise ValueError.

Failures: obstore retries 5xx answers, refused or dropped connections and read timeouts
itself (``max_retries``, ``retry_timeout``); what still fails is ``StorageUnavailable``
(503 with ``Retry-After`` to clients). Denied or unauthenticated requests are a
configuration problem, not an outage: ``StorageError`` (500).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    BaseError,
    GenericError,
    NotSupportedError,
    PreconditionError,
)
from obstore.store import AzureStore, GCSStore, S3Store

from ghacache.errors import (
    BlobExists,
    BlobNotFound,
    EntryTooLarge,
    GhacacheError,
    RemoteProtocolError,
    StorageError,
    StorageUnavailable,
    UploadStateError,
)
from ghacache.storage.base import DIRECT_PART, BlobInfo, check_name
from ghacache.storage.objectstore_url import open_raw_store

if TYPE_CHECKING:
    from obstore import AsyncWritableFile, GetOptions, ObjectMeta
    from obstore.store import ObjectStore as RawStore

log = logging.getLogger("ghacache.storage")

PART_BYTES = 8 * 1024 * 1024  # multipart part size: over S3's 5 MiB minimum
UPLOAD_CONCURRENCY = 2  # parts in flight per write: memory is about (2 + 1) x PART_BYTES
READ_CHUNK_BYTES = 1024 * 1024
S3_MAX_COPY_BYTES = 5 * 1024**3  # CopyObject's limit; larger single parts are streamed
# What a 503 tells clients when the store still fails after obstore's own retries.
RETRY_AFTER_S = 10
_ASSEMBLED = "=assembled"
_REPLACED = "=replaced"


def open_object_store(url: str) -> ObjectStore:
    """An ``ObjectStore`` for an ``s3://``, ``az://``, ``azure://`` or ``gs://`` URL.

    Raises:
        ValueError: a bad URL or option, or a configuration obstore rejects.
    """
    raw, name = open_raw_store(url)
    return ObjectStore(raw, name=name)


def _first_line(exc: BaseException) -> str:
    # obstore appends a multi-line debug dump; its first line names the request and status.
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _quoted(meta: ObjectMeta) -> str | None:
    # Azure lists ETags without the quotes its headers carry; If-Match wants them quoted.
    etag = meta["e_tag"]
    if etag is None or etag.startswith(('"', "W/")):
        return etag
    return f'"{etag}"'


class ObjectStore:
    """A ``BlobStore`` on an obstore store; see the module docstring for the layout."""

    def __init__(self, store: RawStore, *, name: str) -> None:
        self.store = store
        self.name = name

    def __repr__(self) -> str:
        return f"ObjectStore({self.name!r})"

    @contextlib.contextmanager
    def _errors(self, what: str, *, missing: type[GhacacheError] = StorageError) -> Iterator[None]:
        """Translate obstore's errors; ``missing`` is what "not found" means here."""
        try:
            yield
        except GhacacheError:  # ours (BlobNotFound is also a FileNotFoundError): as raised
            raise
        except FileNotFoundError as exc:
            raise missing(f"{self.name}: not found while {what}") from exc
        except AlreadyExistsError as exc:
            raise BlobExists(f"{self.name}: already exists while {what}") from exc
        except PreconditionError as exc:
            raise UploadStateError(f"{self.name}: changed while {what}") from exc
        except (GenericError, OSError) as exc:  # the writer's close reports failures as OSError
            # 5xx answers and connection failures, already retried: an outage to ride out.
            # The store's own words (endpoint, request) go to the log, not to clients.
            log.warning("%s failed while %s: %s", self.name, what, _first_line(exc))
            raise StorageUnavailable(
                f"the object store {self.name} is unavailable while {what}; try again later",
                retry_after_s=RETRY_AFTER_S,
            ) from exc
        except BaseError as exc:  # denied, unauthenticated, unsupported: needs an operator
            raise StorageError(f"{self.name} failed while {what}: {_first_line(exc)}") from exc

    # -- paths --------------------------------------------------------------------------------

    @staticmethod
    def _upload_dir(upload: str) -> str:
        return f"uploads/{check_name('upload', upload)}/"

    def _part_path(self, upload: str, part: str) -> str:
        return self._upload_dir(upload) + check_name("part", part)

    @staticmethod
    def _blob_path(blob: str) -> str:
        return f"blobs/{check_name('blob', blob)}"

    # -- staging ------------------------------------------------------------------------------

    async def write_part(
        self,
        upload: str,
        part: str,
        chunks: AsyncIterable[bytes],
        *,
        max_bytes: int,
        offset: int | None = None,  # every part is an object of its own here
        number: int | None = None,
        length: int | None = None,
    ) -> int:
        what = f"staging part {part} of upload {upload}"
        path = self._part_path(upload, part)
        written = 0
        writer = obstore.open_writer_async(
            self.store, path, buffer_size=PART_BYTES, max_concurrency=UPLOAD_CONCURRENCY
        )
        try:
            # Errors from the body itself (a client that hangs up) pass through as they are.
            async for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    raise EntryTooLarge(f"body is larger than the {max_bytes} bytes allowed")
                if length is not None and written > length:
                    raise RemoteProtocolError(f"body is longer than the {length} bytes declared")
                if chunk:
                    with self._errors(what):
                        await writer.write(chunk)
            if length is not None and written != length:
                raise RemoteProtocolError(f"body had {written} bytes, not the {length} declared")
        except BaseException as exc:
            await self._abort(writer, path, exc)
            raise
        await self._close(writer, what)
        return written

    async def _close(self, writer: AsyncWritableFile, what: str) -> None:
        # Shielded: a cancellation now would strand a multipart upload, hidden but billed;
        # a completed object is at worst an orphan that reconciliation removes.
        with self._errors(what):
            await asyncio.shield(writer.close())

    async def _abort(self, writer: AsyncWritableFile, path: str, exc: BaseException) -> None:
        """Abort a writer's multipart upload, even if this task is being cancelled.

        ``__aexit__`` with an exception is the writer's only abort entry point.
        """
        try:
            await asyncio.shield(writer.__aexit__(type(exc), exc, exc.__traceback__))
        except Exception as abort_exc:
            log.warning(
                "%s: could not abort the upload of %s: %s", self.name, path, _first_line(abort_exc)
            )

    async def _parts(self, upload: str) -> dict[str, ObjectMeta]:
        directory = self._upload_dir(upload)
        with self._errors(f"listing upload {upload}"):
            metas = await obstore.list(self.store, directory).collect_async()
        return {m["path"].removeprefix(directory): m for m in metas}

    async def assemble(self, upload: str, parts: Sequence[str]) -> int:
        names = [check_name("part", p) for p in parts]
        staged = await self._parts(upload)  # one listing instead of a HEAD per block
        missing = [n for n in names if n not in staged]
        if missing:
            raise BlobNotFound(f"upload {upload} has no staged part {missing[0]}")
        return await self._write_manifest(upload, [staged[n] for n in names])

    async def _write_manifest(self, upload: str, metas: Sequence[ObjectMeta]) -> int:
        directory = self._upload_dir(upload)
        parts = [
            {"name": m["path"].removeprefix(directory), "size": m["size"], "etag": _quoted(m)}
            for m in metas
        ]
        size = sum(m["size"] for m in metas)
        body = json.dumps({"version": 1, "size": size, "parts": parts}).encode()
        with self._errors(f"assembling upload {upload}"):
            await obstore.put_async(self.store, directory + _ASSEMBLED, body)
        return size

    async def _manifest(self, upload: str) -> list[dict[str, Any]]:
        path = self._upload_dir(upload) + _ASSEMBLED
        with self._errors(f"reading the manifest of upload {upload}"):
            try:
                result = await obstore.get_async(self.store, path)
            except FileNotFoundError as exc:
                raise UploadStateError(f"upload {upload} has nothing assembled") from exc
            raw = await result.bytes_async()
        try:
            parts: list[dict[str, Any]] = json.loads(bytes(raw))["parts"]
        except (ValueError, KeyError, TypeError) as exc:
            raise StorageError(f"{self.name}: manifest of upload {upload} is corrupt") from exc
        return parts

    async def _part_chunks(self, upload: str, part: dict[str, Any]) -> AsyncIterator[bytes]:
        """The bytes of a manifest's part, as long as it is the version that was assembled."""
        what = f"reading part {part['name']} of upload {upload}"
        path = self._upload_dir(upload) + part["name"]  # checked when assembled
        options: GetOptions = {"if_match": part["etag"]} if part.get("etag") else {}
        with self._errors(what, missing=UploadStateError):
            result = await obstore.get_async(self.store, path, options=options)
        stream = result.stream(min_chunk_size=READ_CHUNK_BYTES)
        while True:
            with self._errors(what, missing=UploadStateError):
                chunk = await anext(stream, None)
            if chunk is None:
                return
            yield chunk

    async def read_assembled(self, upload: str, max_bytes: int) -> bytes | None:
        parts = await self._manifest(upload)
        if sum(p["size"] for p in parts) > max_bytes:
            return None
        out = bytearray()
        for part in parts:
            async for chunk in self._part_chunks(upload, part):
                out += chunk
        return bytes(out)

    async def replace_assembled(self, upload: str, data: bytes) -> int:
        path = self._upload_dir(upload) + _REPLACED
        with self._errors(f"rewriting upload {upload}"):
            await obstore.put_async(self.store, path, data)
            meta = await obstore.head_async(self.store, path)
        return await self._write_manifest(upload, [meta])

    # -- publishing ---------------------------------------------------------------------------

    async def publish(self, upload: str, blob: str) -> None:
        target = self._blob_path(blob)
        parts = await self._manifest(upload)
        what = f"publishing upload {upload} as blob {blob}"
        if len(parts) == 1 and self._can_copy(parts[0]["size"]):
            source = self._upload_dir(upload) + parts[0]["name"]
            with self._errors(what, missing=UploadStateError):
                try:
                    await obstore.copy_async(self.store, source, target, overwrite=False)
                    return
                except NotSupportedError:  # S3 without copy_if_not_exists: check, then copy
                    await self._refuse_existing(blob)
                    await obstore.copy_async(self.store, source, target)
                    return
        await self._refuse_existing(blob)
        writer = obstore.open_writer_async(
            self.store, target, buffer_size=PART_BYTES, max_concurrency=UPLOAD_CONCURRENCY
        )
        try:
            for part in parts:
                async for chunk in self._part_chunks(upload, part):
                    with self._errors(what):
                        await writer.write(chunk)
        except BaseException as exc:
            await self._abort(writer, target, exc)
            raise
        await self._close(writer, what)

    def _can_copy(self, size: int) -> bool:
        return not isinstance(self.store, S3Store) or size <= S3_MAX_COPY_BYTES

    async def _refuse_existing(self, blob: str) -> None:
        if await self.stat(blob) is not None:
            raise BlobExists(f"{self.name}: blob {blob} already exists")

    # -- removal ------------------------------------------------------------------------------

    async def discard(self, upload: str) -> None:
        paths = [self._upload_dir(upload) + name for name in await self._parts(upload)]
        await self._delete_paths(paths, f"discarding upload {upload}")

    async def delete(self, blob: str) -> None:
        await self._delete_paths([self._blob_path(blob)], f"deleting blob {blob}")

    async def delete_many(self, blobs: Sequence[str]) -> None:
        await self._delete_paths([self._blob_path(b) for b in blobs], "deleting blobs")

    async def _delete_paths(self, paths: list[str], what: str) -> None:
        if not paths:
            return
        with self._errors(what):
            try:
                await obstore.delete_async(self.store, paths)
            except FileNotFoundError:
                # Azure's batch delete fails on a missing object (after deleting the others):
                # go one by one, ignoring the missing ones.
                for path in paths:
                    with contextlib.suppress(FileNotFoundError):
                        await obstore.delete_async(self.store, path)

    # -- reading ------------------------------------------------------------------------------

    async def stat(self, blob: str) -> BlobInfo | None:
        path = self._blob_path(blob)
        with self._errors(f"checking blob {blob}"):
            try:
                meta = await obstore.head_async(self.store, path)
            except FileNotFoundError:
                return None
        etag = meta["e_tag"] or f'"{meta["size"]:x}-{meta["last_modified"].timestamp():.0f}"'
        return BlobInfo(size=meta["size"], etag=etag, modified_at=meta["last_modified"].timestamp())

    def local_path(self, blob: str) -> Path | None:
        check_name("blob", blob)
        return None

    async def read(self, blob: str, start: int, length: int) -> AsyncGenerator[bytes, None]:
        path = self._blob_path(blob)
        what = f"reading blob {blob}"
        if length == 0:  # object stores refuse empty ranges; only check that the blob exists
            with self._errors(what, missing=BlobNotFound):
                await obstore.head_async(self.store, path)
            return
        with self._errors(what, missing=BlobNotFound):
            result = await obstore.get_async(
                self.store, path, options={"range": (start, start + length)}
            )
        stream = result.stream(min_chunk_size=READ_CHUNK_BYTES)
        remaining = length
        while remaining > 0:
            with self._errors(what, missing=BlobNotFound):
                chunk = await anext(stream, None)
            if chunk is None:
                raise StorageError(f"{self.name}: blob {blob} is shorter than expected")
            remaining -= len(chunk)
            yield chunk

    # -- listing ------------------------------------------------------------------------------

    async def list_uploads(self) -> list[str]:
        with self._errors("listing uploads"):
            result = await obstore.list_with_delimiter_async(self.store, "uploads/")
        return sorted(p.removeprefix("uploads/").strip("/") for p in result["common_prefixes"])

    async def upload_modified_at(self, upload: str) -> float | None:
        parts = await self._parts(upload)
        if not parts:
            return None
        return max(m["last_modified"].timestamp() for m in parts.values())

    async def list_blobs(self) -> list[str]:
        with self._errors("listing blobs"):
            metas = await obstore.list(self.store, "blobs/").collect_async()
        return sorted(m["path"].removeprefix("blobs/") for m in metas)

    # -- direct transfers ---------------------------------------------------------------------

    async def direct_upload_url(self, upload: str, ttl_s: float) -> str | None:
        if not isinstance(self.store, AzureStore):
            return None  # S3/GCS presigned URLs do not speak the Azure Block Blob protocol
        path = self._part_path(upload, DIRECT_PART)
        with self._errors(f"signing an upload URL for upload {upload}"):
            return await obstore.sign_async(self.store, "PUT", path, timedelta(seconds=ttl_s))

    async def direct_download_url(self, blob: str, ttl_s: float) -> str | None:
        if not isinstance(self.store, AzureStore | S3Store | GCSStore):
            return None
        path = self._blob_path(blob)
        with self._errors(f"signing a download URL for blob {blob}"):
            return await obstore.sign_async(self.store, "GET", path, timedelta(seconds=ttl_s))
