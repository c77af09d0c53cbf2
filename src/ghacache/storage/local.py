"""Blob store on a local filesystem.

Layout under the root::

    uploads/<upload>/<part>        staged parts (written to a temp name, then renamed)
    uploads/<upload>/=assembled    the upload's assembled object
    blobs/<xy>/<blob>              published blobs, sharded by the name's last two chars

Parts are renamed into place only when complete, and blobs are hard-linked into place (so
creation is atomic and create-only) after an fsync, so a crash at any point leaves either
nothing or a complete file. Temp files are cleaned up with ``missing_ok``: a concurrent
commit may discard the whole upload directory first. Deleting a blob unlinks it; readers
holding it open finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import AsyncGenerator, AsyncIterable, Iterator, Sequence
from pathlib import Path

from ghacache.errors import (
    BlobExists,
    BlobNotFound,
    EntryTooLarge,
    StorageError,
    StorageFull,
    UploadStateError,
)
from ghacache.storage.base import BlobInfo, check_name

WRITE_BUFFER_BYTES = int(os.environ.get('EXP_BUF', str(1024 * 1024)))
EXP_THREAD = os.environ.get('EXP_THREAD') == '1'
READ_CHUNK_BYTES = 1024 * 1024
_ASSEMBLED = "=assembled"


def _os_error(exc: OSError, what: str) -> StorageError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(f"no space left on the cache volume while {what}")
    return StorageError(f"storage failed while {what}: {exc.strerror or exc}")


def _write_all(fd: int, data: bytes | bytearray) -> None:
    """Write every byte: write(2) may store only part of a buffer (disk nearly full, file
    size limit), and the retry is what reports the error."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view) :]
    finally:
        view.release()  # the caller may resize ``data`` (bytearray.clear) afterwards


def _writev_all(fd: int, chunks: list[bytes]) -> None:
    total = sum(len(c) for c in chunks)
    n = os.writev(fd, chunks)
    if n < total:
        rest = b"".join(chunks)[n:]
        _write_all(fd, rest)


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _os_error(exc, what) from exc


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class LocalStore:
    """A ``BlobStore`` in a directory; see the module docstring for the layout."""

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root
        self.fsync = fsync
        self._uploads = root / "uploads"
        self._blobs = root / "blobs"
        self._uploads.mkdir(parents=True, exist_ok=True)
        self._blobs.mkdir(parents=True, exist_ok=True)

    def _upload_dir(self, upload: str) -> Path:
        return self._uploads / check_name("upload", upload)

    def _blob_path(self, blob: str) -> Path:
        check_name("blob", blob)
        return self._blobs / blob[-2:] / blob

    async def write_part(
        self, upload: str, part: str, chunks: AsyncIterable[bytes], *, max_bytes: int
    ) -> int:
        directory = self._upload_dir(upload)
        final = directory / check_name("part", part)
        tmp = directory / f".tmp-{part}-{secrets.token_hex(4)}"
        what = f"staging part {part} of upload {upload}"
        written = 0
        try:
            with _storage_errors(what):
                directory.mkdir(exist_ok=True)
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            inflight = None
            try:
                buf: list[bytes] = []
                size = 0
                async for chunk in chunks:
                    written += len(chunk)
                    if written > max_bytes:
                        raise EntryTooLarge(f"body is larger than the {max_bytes} bytes allowed")
                    buf.append(chunk)
                    size += len(chunk)
                    if size >= WRITE_BUFFER_BYTES:
                        if not EXP_THREAD:
                            _writev_all(fd, buf)
                            buf = []
                            size = 0
                            continue
                        if inflight is not None:
                            await inflight
                        inflight = asyncio.ensure_future(asyncio.to_thread(_writev_all, fd, buf))
                        buf = []
                        size = 0
                if inflight is not None:
                    await inflight
                    inflight = None
                with _storage_errors(what):
                    if buf:
                        _writev_all(fd, buf)
            finally:
                if inflight is not None:
                    inflight.add_done_callback(lambda _: os.close(fd))
                else:
                    os.close(fd)
            with _storage_errors(what):
                os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        return written

    async def assemble(self, upload: str, parts: Sequence[str]) -> int:
        return await asyncio.to_thread(self._assemble, upload, list(parts))

    def _assemble(self, upload: str, parts: list[str]) -> int:
        directory = self._upload_dir(upload)
        paths = [directory / check_name("part", p) for p in parts]
        for p in paths:
            if not p.is_file():
                raise BlobNotFound(f"upload {upload} has no staged part {p.name}")
        tmp = directory / f".tmp-assembled-{secrets.token_hex(4)}"
        try:
            if len(paths) == 1:
                os.link(paths[0], tmp)  # no copy for single-shot uploads
            else:
                with open(tmp, "wb") as out:
                    for p in paths:
                        with open(p, "rb") as src:
                            _copy_all(src.fileno(), out.fileno(), os.fstat(src.fileno()).st_size)
            os.replace(tmp, directory / _ASSEMBLED)
            return (directory / _ASSEMBLED).stat().st_size
        except OSError as exc:
            raise _os_error(exc, f"assembling upload {upload}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    async def read_assembled(self, upload: str, max_bytes: int) -> bytes | None:
        path = self._upload_dir(upload) / _ASSEMBLED
        with _storage_errors(f"reading upload {upload}"):
            if path.stat().st_size > max_bytes:
                return None
            return await asyncio.to_thread(path.read_bytes)

    async def replace_assembled(self, upload: str, data: bytes) -> int:
        directory = self._upload_dir(upload)
        tmp = directory / f".tmp-replace-{secrets.token_hex(4)}"
        with _storage_errors(f"rewriting upload {upload}"):
            try:
                await asyncio.to_thread(tmp.write_bytes, data)
                os.replace(tmp, directory / _ASSEMBLED)
            finally:
                tmp.unlink(missing_ok=True)
        return len(data)

    async def publish(self, upload: str, blob: str) -> None:
        await asyncio.to_thread(self._publish, upload, blob)

    def _publish(self, upload: str, blob: str) -> None:
        source = self._upload_dir(upload) / _ASSEMBLED
        target = self._blob_path(blob)
        try:
            if self.fsync:
                fd = os.open(source, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            target.parent.mkdir(exist_ok=True)
            os.link(source, target)  # atomic and create-only
            # A hard link keeps the upload's mtime; reconciliation's grace period counts
            # from publication, so a slow finalize is never mistaken for an old orphan.
            os.utime(target)
            if self.fsync:
                _fsync_dir(target.parent)
        except FileNotFoundError as exc:
            raise UploadStateError(f"upload {upload} has no assembled blob to publish") from exc
        except FileExistsError as exc:
            raise BlobExists(f"blob {blob} already exists") from exc
        except OSError as exc:
            raise _os_error(exc, f"publishing blob {blob}") from exc

    async def discard(self, upload: str) -> None:
        await asyncio.to_thread(shutil.rmtree, self._upload_dir(upload), True)

    async def delete(self, blob: str) -> None:
        try:
            self._blob_path(blob).unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _os_error(exc, f"deleting blob {blob}") from exc

    async def delete_many(self, blobs: Sequence[str]) -> None:
        await asyncio.to_thread(self._delete_many, list(blobs))

    def _delete_many(self, blobs: list[str]) -> None:
        root = str(self._blobs)
        for blob in blobs:  # all names first: a bad one must not stop a batch half-way
            check_name("blob", blob)
        for blob in blobs:
            try:
                os.unlink(f"{root}/{blob[-2:]}/{blob}")
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise _os_error(exc, f"deleting blob {blob}") from exc

    async def stat(self, blob: str) -> BlobInfo | None:
        try:
            st = self._blob_path(blob).stat()
        except FileNotFoundError:
            return None
        return BlobInfo(
            size=st.st_size, etag=f'"0x{st.st_ino:x}{st.st_mtime_ns:x}"', modified_at=st.st_mtime
        )

    def local_path(self, blob: str) -> Path | None:
        return self._blob_path(blob)

    async def read(self, blob: str, start: int, length: int) -> AsyncGenerator[bytes, None]:
        try:
            f = await asyncio.to_thread(open, self._blob_path(blob), "rb")
        except FileNotFoundError as exc:
            raise BlobNotFound(f"blob {blob} is gone") from exc
        with f:
            f.seek(start)
            remaining = length
            while remaining > 0:
                chunk = await asyncio.to_thread(f.read, min(READ_CHUNK_BYTES, remaining))
                if not chunk:
                    raise StorageError(f"blob {blob} is shorter than expected")
                remaining -= len(chunk)
                yield chunk

    async def list_uploads(self) -> list[str]:
        return sorted(p.name for p in self._uploads.iterdir() if p.is_dir())

    async def upload_modified_at(self, upload: str) -> float | None:
        directory = self._upload_dir(upload)
        try:
            times = [directory.stat().st_mtime] + [p.stat().st_mtime for p in directory.iterdir()]
        except FileNotFoundError:
            return None
        return max(times)

    async def list_blobs(self) -> list[str]:
        return sorted(
            p.name
            for shard in self._blobs.iterdir()
            if shard.is_dir()
            for p in shard.iterdir()
            if not p.name.startswith(".")
        )

    async def direct_upload_url(self, upload: str, ttl_s: float) -> str | None:
        return None  # clients upload through the server

    async def direct_download_url(self, blob: str, ttl_s: float) -> str | None:
        return None  # the server serves blobs itself (zero-copy)


def _copy_all(src: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes in the kernel where possible (copy_file_range), else by reads."""
    offset = 0
    while offset < size:
        try:
            n = os.copy_file_range(src, dst, size - offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = 0
        if n == 0:  # unsupported here: finish with plain reads
            while offset < size:
                buf = os.read(src, min(READ_CHUNK_BYTES, size - offset))
                if not buf:
                    raise StorageError("a staged part shrank while it was being assembled")
                _write_all(dst, buf)
                offset += len(buf)
            return
        offset += n
