"""Blob store on a local filesystem.

Layout under the root::

    uploads/<upload>/<part>             a staged part in a file of its own (temp name, renamed)
    uploads/<upload>/=data              parts written in place, at their offsets in the blob
    uploads/<upload>/<part>@<off>+<n>   marker: part's n bytes sit complete at off in =data
    uploads/<upload>/=assembled         the upload's assembled object
    blobs/<xy>/<blob>                   published blobs, sharded by the name's last two chars

A part whose length is known up front (``length=``: Put Block, v1 chunks) is written into
``=data``: at its own offset when the caller knows it (v1 chunks); else at its ``number``
times the size of the upload's numbered parts (Azure block ids end in the block's number);
else after everything already placed (arrival order). When the parts to assemble sit there
in order and fill the file exactly, ``=data`` *is* the blob: it is hard-linked as
``=assembled`` and nothing is copied. Anything else (a guess that was wrong, a part written
elsewhere) is assembled by copying in the kernel, as a part in its own file always is.

Parts are visible only when complete (a renamed file, or a marker created after the bytes
are written), blobs are hard-linked into place (atomic and create-only) after an fsync, so a
crash at any point leaves either nothing or a complete file. A write never touches bytes a
marker points at: it claims a free range first, and once ``=data`` is linked as the
assembled object it takes no more writes. Temp files are cleaned up with ``missing_ok``: a
concurrent commit may discard the whole upload directory first. Deleting a blob unlinks it;
readers holding it open finish.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import errno
import os
import secrets
import shutil
from collections.abc import AsyncGenerator, AsyncIterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ghacache.errors import (
    BlobExists,
    BlobNotFound,
    EntryTooLarge,
    RemoteProtocolError,
    StorageError,
    StorageFull,
    UploadStateError,
)
from ghacache.storage.base import BlobInfo, check_name

# Received chunks are gathered up to this much and written with one writev(2), straight from
# the buffers aiohttp hands over. Writing on the event loop measured faster than handing
# each batch to a thread (page-cache writes are quick; the hop and the GIL are not).
WRITE_BUFFER_BYTES = 1024 * 1024
# writev(2) takes at most IOV_MAX (1024 on Linux) buffers.
WRITE_BUFFER_CHUNKS = 512
READ_CHUNK_BYTES = 1024 * 1024
_ASSEMBLED = "=assembled"
_DATA = "=data"


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


def _pwritev_all(fd: int, chunks: list[bytes], offset: int) -> None:
    """Write ``chunks`` at ``offset``, completing short writes (see ``_write_all``)."""
    n = os.pwritev(fd, chunks, offset)
    total = sum(len(c) for c in chunks)
    if n < total:
        rest = memoryview(b"".join(chunks))[n:]
        offset += n
        while rest:
            n = os.pwrite(fd, rest, offset)
            rest, offset = rest[n:], offset + n


def _marker(part: str, offset: int, length: int) -> str:
    return f"{part}@{offset}+{length}"


@dataclass
class _Placements:
    """What an upload's ``=data`` file holds: complete parts, and ranges being written.

    Kept in memory (ranges being written exist nowhere else) and rebuilt from the marker
    files when a process meets an upload it has not seen (after a restart). Taken ranges
    never overlap; they are indexed by start, so a claim costs O(log n) checks however many
    blocks an upload has (Azure allows 50,000).
    """

    placed: dict[str, tuple[int, int]] = field(default_factory=dict)  # part: (offset, length)
    writing: int = 0  # parts being written into =data
    end: int = 0  # where the next part of unknown offset goes: past everything taken
    unit: int = 0  # the size of numbered parts: that of the first one seen
    sealed: bool = False  # =data is (linked as) =assembled: it takes no more writes
    _starts: list[int] = field(default_factory=list)  # taken ranges, sorted by start
    _lengths: dict[int, int] = field(default_factory=dict)  # their lengths, by start

    def claim(self, offset: int | None, number: int | None, length: int) -> int | None:
        """Take ``length`` bytes for a part if they are free: at ``offset``, else at
        ``number`` times the parts' size (all but the last are that long), else at the end.
        """
        if self.sealed:
            return None
        if offset is None and number is not None:
            self.unit = self.unit or length
            if length <= self.unit:
                offset = number * self.unit
        start = self.end if offset is None else offset
        i = bisect.bisect_right(self._starts, start)
        before = self._starts[i - 1] if i else None
        if before is not None and before + self._lengths[before] > start:
            return None
        if i < len(self._starts) and self._starts[i] < start + length:
            return None
        self._take(start, length)
        return start

    def _take(self, start: int, length: int) -> None:
        bisect.insort(self._starts, start)
        self._lengths[start] = length
        self.end = max(self.end, start + length)

    def release(self, start: int) -> None:
        """Free a taken range (a write that failed, or a part's older copy)."""
        del self._starts[bisect.bisect_left(self._starts, start)]
        del self._lengths[start]

    def taken_end(self) -> int:
        """Where the last taken range ends (ranges never overlap: the last start's does)."""
        return self._starts[-1] + self._lengths[self._starts[-1]] if self._starts else 0

    def place(self, part: str, at: tuple[int, int] | None) -> tuple[int, int] | None:
        """Record where ``part`` now lives (None: in a file of its own); return its old place."""
        old = self.placed.pop(part, None)
        if old is not None:
            self.release(old[0])
        if at is not None:
            self.placed[part] = at
        return old

    @classmethod
    def load(cls, directory: Path) -> _Placements:
        """Rebuild from the markers: the newest copy of each part wins, older ones go."""
        placements = cls()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return placements
        newest: dict[str, tuple[int, str]] = {}  # part: (mtime, file)
        for e in entries:
            part = e.name.partition("@")[0]
            if not e.name.startswith((".", "=")):
                copy = (e.stat().st_mtime_ns, e.name)
                if part in newest:  # a crash between writing a copy and removing the other
                    copy, older = max(copy, newest[part]), min(copy, newest[part])
                    (directory / older[1]).unlink(missing_ok=True)
                newest[part] = copy
        for part, (_, name) in newest.items():
            offset, _, length = name.partition("@")[2].partition("+")
            if offset.isdigit() and length.isdigit():
                placements.placed[part] = (int(offset), int(length))
                placements._take(int(offset), int(length))
        data, assembled = directory / _DATA, directory / _ASSEMBLED
        if data.exists():
            placements.end = max(placements.end, data.stat().st_size)
            placements.unit = max([n for _, n in placements.placed.values()], default=0)
            placements.sealed = assembled.exists() and os.path.samefile(data, assembled)
        return placements


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise _os_error(exc, what) from exc


def _give_back(data: Path, placements: _Placements) -> None:
    """Cut ``=data`` after the last range still taken, after a write into it failed.

    The failed part's bytes belong to nobody; when they are at the end (as they are when a
    disk fills up mid-write) they are freed now, not when the upload expires, so a 507
    leaves the disk as full as it was before the request. Ranges still taken (parts, and
    writes in flight) all end at or before the cut.
    """
    end = placements.taken_end()
    with contextlib.suppress(OSError):  # best effort: the upload may be gone already
        if data.stat().st_size > end:
            os.truncate(data, end)
            placements.end = end


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
        self._placements: dict[str, _Placements] = {}

    def _upload_dir(self, upload: str) -> Path:
        return self._uploads / check_name("upload", upload)

    def _blob_path(self, blob: str) -> Path:
        check_name("blob", blob)
        return self._blobs / blob[-2:] / blob

    def _placements_of(self, upload: str) -> _Placements:
        found = self._placements.get(upload)
        if found is None:
            found = self._placements[upload] = _Placements.load(self._upload_dir(upload))
        return found

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
        directory = self._upload_dir(upload)
        check_name("part", part)
        what = f"staging part {part} of upload {upload}"
        if length is not None and length > max_bytes:
            raise EntryTooLarge(f"body is larger than the {max_bytes} bytes allowed")
        with _storage_errors(what):
            directory.mkdir(exist_ok=True)
        placements = self._placements_of(upload)
        if length:  # known up front: try to place it in =data, where assembly needs no copy
            start = placements.claim(offset, number, length)
            if start is not None:
                placements.writing += 1
                try:
                    await self._write_in_place(directory, part, chunks, start, length, max_bytes)
                except BaseException:
                    placements.release(start)
                    _give_back(directory / _DATA, placements)
                    raise
                finally:
                    placements.writing -= 1
                with _storage_errors(what):
                    self._keep_only(directory, placements, part, (start, length))
                return length
        tmp = directory / f".tmp-{part}-{secrets.token_hex(4)}"
        try:
            with _storage_errors(what):
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                written = await _receive(chunks, fd, 0, max_bytes, length, what)
            finally:
                os.close(fd)
            with _storage_errors(what):
                os.replace(tmp, directory / part)
                self._keep_only(directory, placements, part, None)
        finally:
            tmp.unlink(missing_ok=True)
        return written

    @staticmethod
    async def _write_in_place(
        directory: Path,
        part: str,
        chunks: AsyncIterable[bytes],
        start: int,
        length: int,
        max_bytes: int,
    ) -> None:
        what = f"staging part {part} of upload {directory.name}"
        with _storage_errors(what):
            fd = os.open(directory / _DATA, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            await _receive(chunks, fd, start, max_bytes, length, what)
        finally:
            os.close(fd)
        with _storage_errors(what):  # the marker makes the complete part visible
            os.close(os.open(directory / _marker(part, start, length), os.O_CREAT, 0o600))

    @staticmethod
    def _keep_only(
        directory: Path, placements: _Placements, part: str, placed: tuple[int, int] | None
    ) -> None:
        """Drop the other copy of a part just written: its file, or its earlier marker."""
        old = placements.place(part, placed)
        if old is not None:
            (directory / _marker(part, *old)).unlink(missing_ok=True)
        if placed is not None:
            (directory / part).unlink(missing_ok=True)

    async def assemble(self, upload: str, parts: Sequence[str]) -> int:
        directory = self._upload_dir(upload)
        names = [check_name("part", p) for p in parts]
        placements = self._placements.get(upload) or _Placements.load(directory)
        sources: list[tuple[Path, int, int | None]] = []  # (file, offset, length or all)
        for name in names:
            at = placements.placed.get(name)
            sources.append((directory / name, 0, None) if at is None else (directory / _DATA, *at))
        if names and not placements.writing and _fills(sources, directory / _DATA):
            # The parts sit in =data in order and fill it exactly: it is the object.
            placements.sealed = True  # before any await: no write may start into it now
            return await asyncio.to_thread(self._link_assembled, upload, directory / _DATA)
        return await asyncio.to_thread(self._assemble, upload, sources)

    def _link_assembled(self, upload: str, source: Path) -> int:
        directory = self._upload_dir(upload)
        tmp = directory / f".tmp-assembled-{secrets.token_hex(4)}"
        try:
            os.link(source, tmp)
            os.replace(tmp, directory / _ASSEMBLED)
            return (directory / _ASSEMBLED).stat().st_size
        except FileNotFoundError as exc:
            raise BlobNotFound(f"upload {upload} has no staged part {source.name}") from exc
        except OSError as exc:
            raise _os_error(exc, f"assembling upload {upload}") from exc
        finally:
            tmp.unlink(missing_ok=True)

    def _assemble(self, upload: str, sources: list[tuple[Path, int, int | None]]) -> int:
        for path, _, length in sources:
            if length is None and not path.is_file():
                raise BlobNotFound(f"upload {upload} has no staged part {path.name}")
        if len(sources) == 1 and sources[0][2] is None:
            return self._link_assembled(upload, sources[0][0])  # no copy for single-shot uploads
        directory = self._upload_dir(upload)
        tmp = directory / f".tmp-assembled-{secrets.token_hex(4)}"
        try:
            with open(tmp, "wb") as out:
                for path, offset, length in sources:
                    with open(path, "rb") as src:
                        size = os.fstat(src.fileno()).st_size if length is None else length
                        _copy_all(src.fileno(), out.fileno(), offset, size)
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
        directory = self._upload_dir(upload)
        self._placements.pop(upload, None)
        await asyncio.to_thread(shutil.rmtree, directory, True)

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


async def _receive(
    chunks: AsyncIterable[bytes],
    fd: int,
    offset: int,
    max_bytes: int,
    length: int | None,
    what: str,
) -> int:
    """Write the body into ``fd`` from ``offset``, in batches; return its size.

    Raises EntryTooLarge past ``max_bytes``, RemoteProtocolError if the body's size is not
    ``length`` (when given). Errors from the body itself (a client that hangs up) pass
    through as they are; only our own file operations become storage errors.
    """
    written = 0
    batch: list[bytes] = []
    batched = 0
    async for chunk in chunks:
        written += len(chunk)
        if written > max_bytes:
            raise EntryTooLarge(f"body is larger than the {max_bytes} bytes allowed")
        if length is not None and written > length:
            raise RemoteProtocolError(f"body is longer than the {length} bytes declared")
        if chunk:
            batch.append(chunk)
            batched += len(chunk)
        if batched >= WRITE_BUFFER_BYTES or len(batch) >= WRITE_BUFFER_CHUNKS:
            with _storage_errors(what):
                _pwritev_all(fd, batch, offset)
            offset += batched
            batch, batched = [], 0
    if batch:
        with _storage_errors(what):
            _pwritev_all(fd, batch, offset)
    if length is not None and written != length:
        raise RemoteProtocolError(f"body had {written} bytes, not the {length} declared")
    return written


def _fills(sources: list[tuple[Path, int, int | None]], data: Path) -> bool:
    """Whether ``sources`` are all ranges of ``data``, back to back from 0, filling it."""
    end = 0
    for path, offset, length in sources:
        if path != data or length is None or offset != end:
            return False
        end += length
    try:
        return data.stat().st_size == end
    except FileNotFoundError:
        return False


def _copy_all(src: int, dst: int, offset: int, size: int) -> None:
    """Append ``size`` bytes of ``src`` from ``offset`` to ``dst``: in the kernel where
    possible (copy_file_range), else by reads."""
    end = offset + size
    while offset < end:
        try:
            n = os.copy_file_range(src, dst, end - offset, offset)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            n = 0
        if n == 0:  # unsupported here: finish with plain reads
            while offset < end:
                buf = os.pread(src, min(READ_CHUNK_BYTES, end - offset), offset)
                if not buf:
                    raise StorageError("a staged part shrank while it was being assembled")
                _write_all(dst, buf)
                offset += len(buf)
            return
        offset += n
