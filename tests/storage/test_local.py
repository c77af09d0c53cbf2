"""``LocalStore`` on a real directory: staging, assembling, publishing and reading blobs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest

from ghacache.errors import (
    BlobExists,
    BlobNotFound,
    EntryTooLarge,
    StorageError,
    UploadStateError,
)
from ghacache.protocol.azblob import block_part_name
from ghacache.storage import LocalStore, open_store
from ghacache.storage.local import READ_CHUNK_BYTES, WRITE_BUFFER_BYTES

MiB = 1024 * 1024


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


async def stream(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


async def failing_stream(parts: Iterable[bytes], exc: BaseException) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise exc


async def read_all(store: LocalStore, blob: str, start: int, length: int) -> bytes:
    return b"".join([chunk async for chunk in store.read(blob, start, length)])


def data(n: int, seed: int = 0) -> bytes:
    """Deterministic bytes with a 251-byte period shifted by ``seed``: misplaced bytes show."""
    block = bytes((i * 7 + seed * 31) % 251 for i in range(251))
    return (block * (n // 251 + 1))[:n]


def tree(root: Path) -> list[Path]:
    """Every path under ``root``, relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def staged(store: LocalStore, upload: str) -> list[str]:
    """Every file in an upload's staging directory, hidden temp files included."""
    directory = store.root / "uploads" / upload
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def publish_bytes(store: LocalStore, upload: str, blob: str, payload: bytes) -> None:
    await store.write_part(upload, "p", stream([payload]), max_bytes=len(payload))
    await store.assemble(upload, ["p"])
    await store.publish(upload, blob)


# -- write_part -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param([], id="no chunks"),
        pytest.param([0, 0], id="empty chunks"),
        pytest.param([1], id="one byte"),
        pytest.param([100, 0, 200, 300], id="small chunks"),
        pytest.param([WRITE_BUFFER_BYTES], id="exactly one buffer"),
        pytest.param([WRITE_BUFFER_BYTES - 1, 2], id="just over one buffer"),
        pytest.param([64 * 1024] * 40, id="many chunks over several buffers"),
        pytest.param([3 * MiB + 5], id="one large chunk"),
    ],
)
async def test_write_part_streams_from_an_async_generator(
    store: LocalStore, sizes: list[int]
) -> None:
    parts = [data(n, seed=i) for i, n in enumerate(sizes)]
    expected = b"".join(parts)
    written = await store.write_part("u1", "p1", stream(parts), max_bytes=len(expected))
    assert written == len(expected)
    assert await store.assemble("u1", ["p1"]) == len(expected)
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, len(expected)) == expected
    assert staged(store, "u1") == ["=assembled", "p1"]


async def test_write_part_replaces_a_part_of_the_same_name(store: LocalStore) -> None:
    await store.write_part("u1", "p1", stream([b"first version"]), max_bytes=100)
    assert await store.write_part("u1", "p1", stream([b"second"]), max_bytes=100) == 6
    assert await store.assemble("u1", ["p1"]) == 6
    await store.publish("u1", "b")
    assert await read_all(store, "b", 0, 6) == b"second"


@pytest.mark.parametrize(
    ("sizes", "max_bytes"),
    [
        ([11], 10),
        ([5, 5, 1], 10),
        ([WRITE_BUFFER_BYTES, WRITE_BUFFER_BYTES, 1], 2 * WRITE_BUFFER_BYTES),  # after flushes
    ],
)
async def test_write_part_over_max_bytes_leaves_nothing(
    store: LocalStore, sizes: list[int], max_bytes: int
) -> None:
    with pytest.raises(EntryTooLarge) as info:
        await store.write_part("u1", "p1", stream(data(n) for n in sizes), max_bytes=max_bytes)
    assert info.value.status == 413
    assert staged(store, "u1") == []
    with pytest.raises(BlobNotFound):
        await store.assemble("u1", ["p1"])


async def test_write_part_at_exactly_max_bytes_is_accepted(store: LocalStore) -> None:
    assert await store.write_part("u1", "p1", stream([b"12345", b"67890"]), max_bytes=10) == 10
    assert staged(store, "u1") == ["p1"]


async def test_write_part_stops_reading_once_over_the_limit(store: LocalStore) -> None:
    pulled: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        i = 0
        while True:
            pulled.append(i)
            i += 1
            yield b"x" * 1024

    with pytest.raises(EntryTooLarge):
        await store.write_part("u1", "p1", endless(), max_bytes=10 * 1024)
    assert len(pulled) == 11


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(RuntimeError("client went away"), id="error"),
        pytest.param(asyncio.CancelledError(), id="cancelled"),
    ],
)
async def test_a_stream_that_fails_midway_leaves_no_part_and_no_temp_file(
    store: LocalStore, exc: BaseException
) -> None:
    # 2.5 MiB arrives first, so some of it has already been flushed to the temp file.
    before = [data(MiB, seed=i) for i in range(2)] + [data(MiB // 2)]
    with pytest.raises(type(exc)):
        await store.write_part("u1", "p1", failing_stream(before, exc), max_bytes=10 * MiB)
    assert staged(store, "u1") == []


async def test_a_dropped_connection_midway_leaves_no_part_and_no_temp_file(
    store: LocalStore,
) -> None:
    # aiohttp ends a request body with ConnectionResetError("Connection lost").
    before = [data(MiB, seed=i) for i in range(2)]
    failing = failing_stream(before, ConnectionResetError("Connection lost"))
    with pytest.raises((ConnectionResetError, StorageError)):
        await store.write_part("u1", "p1", failing, max_bytes=10 * MiB)
    assert staged(store, "u1") == []


async def test_a_failed_rewrite_keeps_the_earlier_complete_part(store: LocalStore) -> None:
    await store.write_part("u1", "p1", stream([b"complete"]), max_bytes=100)
    with pytest.raises(RuntimeError):
        await store.write_part(
            "u1", "p1", failing_stream([b"partial"], RuntimeError("boom")), max_bytes=100
        )
    assert staged(store, "u1") == ["p1"]
    assert await store.assemble("u1", ["p1"]) == len(b"complete")


async def test_parts_of_different_uploads_are_independent(store: LocalStore) -> None:
    await store.write_part("u1", "p", stream([b"one"]), max_bytes=10)
    await store.write_part("u2", "p", stream([b"two!"]), max_bytes=10)
    assert await store.assemble("u1", ["p"]) == 3
    assert await store.assemble("u2", ["p"]) == 4


@pytest.mark.skipif(sys.platform != "linux", reason="uses RLIMIT_FSIZE short writes")
def test_short_writes_are_never_silently_dropped(tmp_path: Path) -> None:
    """A write(2) that stores only part of the buffer (disk nearly full, file size limit)
    must either be completed or fail; it must never leave a truncated part or blob.

    Runs in a subprocess because RLIMIT_FSIZE applies to the whole process.
    """
    script = textwrap.dedent(
        """
        import asyncio, json, resource, signal, sys
        from pathlib import Path
        from ghacache.storage.local import LocalStore

        root = Path(sys.argv[1])
        store = LocalStore(root, fsync=False)
        results = {}

        async def chunks(n, size):
            for _ in range(n):
                yield b"x" * size

        async def main():
            # Two staged parts of 1 MiB, written before the limit applies.
            for name in ("a", "b"):
                await store.write_part("big", name, chunks(16, 65536), max_bytes=1 << 30)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (1536 * 1024, resource.RLIM_INFINITY))
            try:
                n = await store.write_part("u", "p", chunks(32, 65536), max_bytes=1 << 30)
                results["write_part"] = ["returned", n]
            except Exception as exc:
                results["write_part"] = ["raised", type(exc).__name__]
            try:
                n = await store.assemble("big", ["a", "b"])
                results["assemble"] = ["returned", n]
            except Exception as exc:
                results["assemble"] = ["raised", type(exc).__name__]
            results["files"] = {
                f"{d.name}/{p.name}": p.stat().st_size
                for d in (root / "uploads").iterdir()
                for p in d.iterdir()
            }
            print(json.dumps(results))

        asyncio.run(main())
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "store")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert results["write_part"] == ["raised", "StorageError"]
    assert results["assemble"] == ["raised", "StorageError"]
    # Only the two complete 1 MiB parts remain: no truncated part, assembly or temp file.
    assert results["files"] == {"big/a": MiB, "big/b": MiB}


# -- assemble ---------------------------------------------------------------------------------------


async def test_assemble_concatenates_in_the_given_order(store: LocalStore) -> None:
    parts = {"p1": data(1000, 1), "p2": data(MiB + 3, 2), "p3": data(2 * MiB + 11, 3)}
    for name, payload in parts.items():
        await store.write_part("u1", name, stream([payload]), max_bytes=len(payload))
    order = ["p3", "p1", "p2"]
    expected = b"".join(parts[n] for n in order)
    assert await store.assemble("u1", order) == len(expected)
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, len(expected)) == expected


async def test_assemble_block_part_names(store: LocalStore) -> None:
    # Put Block part names are the hex of 64-byte Go block ids: the longest names we stage.
    names = [block_part_name(bytes([i]) * 64) for i in range(3)]
    for i, name in enumerate(names):
        await store.write_part("u1", name, stream([b"%d" % i]), max_bytes=1)
    assert await store.assemble("u1", list(reversed(names))) == 3
    await store.publish("u1", "b")
    assert await read_all(store, "b", 0, 3) == b"210"


async def test_assemble_may_use_a_part_twice(store: LocalStore) -> None:
    await store.write_part("u1", "a", stream([b"ab"]), max_bytes=2)
    await store.write_part("u1", "c", stream([b"c"]), max_bytes=1)
    assert await store.assemble("u1", ["a", "c", "a"]) == 5
    await store.publish("u1", "b")
    assert await read_all(store, "b", 0, 5) == b"abcab"


async def test_assemble_single_part_hard_links_and_keeps_the_part(store: LocalStore) -> None:
    payload = data(2 * MiB)
    await store.write_part("u1", "blob", stream([payload]), max_bytes=len(payload))
    assert await store.assemble("u1", ["blob"]) == len(payload)
    part = store.root / "uploads" / "u1" / "blob"
    assembled = store.root / "uploads" / "u1" / "=assembled"
    assert part.is_file()
    assert part.stat().st_ino == assembled.stat().st_ino
    assert part.stat().st_nlink == 2
    # The part is still usable: assembling again works and gives the same bytes.
    assert await store.assemble("u1", ["blob"]) == len(payload)
    await store.publish("u1", "b")
    assert await read_all(store, "b", 0, len(payload)) == payload


async def test_reassembling_replaces_the_earlier_assembly(store: LocalStore) -> None:
    await store.write_part("u1", "a", stream([b"AAA"]), max_bytes=3)
    await store.write_part("u1", "b", stream([b"B"]), max_bytes=3)
    assert await store.assemble("u1", ["a", "b"]) == 4
    assert await store.assemble("u1", ["b"]) == 1
    await store.publish("u1", "x")
    assert await read_all(store, "x", 0, 1) == b"B"


@pytest.mark.parametrize("parts", [["missing"], ["p1", "missing"], ["missing", "p1"]])
async def test_assemble_with_a_missing_part_fails_and_leaves_no_assembly(
    store: LocalStore, parts: list[str]
) -> None:
    await store.write_part("u1", "p1", stream([b"x"]), max_bytes=1)
    with pytest.raises(BlobNotFound) as info:
        await store.assemble("u1", parts)
    assert "missing" in str(info.value)
    assert staged(store, "u1") == ["p1"]


async def test_assemble_unknown_upload(store: LocalStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.assemble("nobody", ["p1"])


# -- publish ----------------------------------------------------------------------------------------


async def test_publish_is_create_only(store: LocalStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"original")
    await store.write_part("u2", "p", stream([b"intruder"]), max_bytes=100)
    await store.assemble("u2", ["p"])
    with pytest.raises(BlobExists) as info:
        await store.publish("u2", "blob1")
    assert info.value.status == 409
    assert await read_all(store, "blob1", 0, 8) == b"original"


async def test_publishing_the_same_upload_twice_is_rejected(store: LocalStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"x")
    with pytest.raises(BlobExists):
        await store.publish("u1", "blob1")


async def test_one_upload_may_be_published_under_two_names(store: LocalStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"same")
    await store.publish("u1", "blob2")
    assert await read_all(store, "blob2", 0, 4) == b"same"


async def test_publish_without_assemble(store: LocalStore) -> None:
    await store.write_part("u1", "p1", stream([b"staged only"]), max_bytes=100)
    with pytest.raises(UploadStateError) as info:
        await store.publish("u1", "blob1")
    assert info.value.status == 412
    assert await store.stat("blob1") is None
    assert await store.list_blobs() == []


async def test_publish_of_an_unknown_upload(store: LocalStore) -> None:
    with pytest.raises(UploadStateError):
        await store.publish("nobody", "blob1")


async def test_published_blob_survives_discard_of_its_upload(store: LocalStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"durable")
    await store.discard("u1")
    assert await store.list_uploads() == []
    assert await read_all(store, "blob1", 0, 7) == b"durable"


async def test_publish_without_fsync(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "nofsync", fsync=False)
    await publish_bytes(store, "u1", "blob1", b"fast")
    assert await read_all(store, "blob1", 0, 4) == b"fast"


# -- discard and delete -------------------------------------------------------------------------------


async def test_discard_removes_everything_staged(store: LocalStore) -> None:
    await store.write_part("u1", "p1", stream([b"a"]), max_bytes=1)
    await store.write_part("u1", "p2", stream([b"b"]), max_bytes=1)
    await store.assemble("u1", ["p1", "p2"])
    await store.write_part("u2", "p1", stream([b"c"]), max_bytes=1)
    await store.discard("u1")
    assert await store.list_uploads() == ["u2"]
    assert not (store.root / "uploads" / "u1").exists()
    with pytest.raises(UploadStateError):
        await store.publish("u1", "b")


async def test_discard_of_an_unknown_upload_is_a_no_op(store: LocalStore) -> None:
    await store.discard("never-staged")
    await store.discard("never-staged")
    assert await store.list_uploads() == []


async def test_delete_removes_a_blob(store: LocalStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"bytes")
    await store.delete("blob1")
    assert await store.stat("blob1") is None
    assert await store.list_blobs() == []
    with pytest.raises(BlobNotFound):
        await read_all(store, "blob1", 0, 5)
    await store.delete("blob1")  # already gone: a no-op


async def test_delete_keeps_an_already_open_file_readable(store: LocalStore) -> None:
    payload = data(3 * READ_CHUNK_BYTES + 17)
    await publish_bytes(store, "u1", "blob1", payload)
    reader = store.read("blob1", 0, len(payload))
    first = await anext(reader)
    assert len(first) == READ_CHUNK_BYTES
    await store.delete("blob1")
    assert await store.stat("blob1") is None
    rest = b"".join([chunk async for chunk in reader])
    assert first + rest == payload


async def test_a_blob_name_can_be_reused_after_delete(store: LocalStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"old")
    await store.delete("blob1")
    await publish_bytes(store, "u2", "blob1", b"new!")
    assert await read_all(store, "blob1", 0, 4) == b"new!"


# -- stat, read, local_path ---------------------------------------------------------------------------


async def test_stat(store: LocalStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"12345")
    await publish_bytes(store, "u2", "blob2", b"12345")
    info1, info2 = await store.stat("blob1"), await store.stat("blob2")
    assert info1 is not None and info2 is not None
    assert info1.size == 5
    assert info1.etag.startswith('"') and info1.etag.endswith('"')
    assert info1.etag != info2.etag
    assert info1.modified_at > 0
    assert await store.stat("blob1") == info1  # stable while unchanged
    assert await store.stat("missing") is None


async def test_stat_of_an_empty_blob(store: LocalStore) -> None:
    await store.write_part("u1", "p", stream([]), max_bytes=0)
    assert await store.assemble("u1", ["p"]) == 0
    await store.publish("u1", "empty")
    info = await store.stat("empty")
    assert info is not None
    assert info.size == 0
    assert await read_all(store, "empty", 0, 0) == b""


SIZE = 2 * READ_CHUNK_BYTES + 1000
PAYLOAD = data(SIZE, seed=9)


@pytest.mark.parametrize(
    ("start", "length"),
    [
        (0, SIZE),
        (0, 0),
        (0, 1),
        (SIZE - 1, 1),
        (SIZE, 0),
        (10, 100),
        (READ_CHUNK_BYTES - 1, 2),  # across a chunk boundary
        (READ_CHUNK_BYTES, READ_CHUNK_BYTES),
        (5, SIZE - 5),
        (123_456, READ_CHUNK_BYTES + 789),
    ],
)
async def test_read_ranges(store: LocalStore, start: int, length: int) -> None:
    await publish_bytes(store, "u1", "blob1", PAYLOAD)
    chunks = [chunk async for chunk in store.read("blob1", start, length)]
    assert b"".join(chunks) == PAYLOAD[start : start + length]
    assert all(0 < len(c) <= READ_CHUNK_BYTES for c in chunks)


@pytest.mark.parametrize(
    ("start", "length"), [(0, SIZE + 1), (SIZE - 1, 2), (SIZE, 1), (SIZE + 5, 1)]
)
async def test_read_past_the_end_fails(store: LocalStore, start: int, length: int) -> None:
    await publish_bytes(store, "u1", "blob1", PAYLOAD)
    with pytest.raises(StorageError, match="shorter than expected"):
        await read_all(store, "blob1", start, length)


async def test_read_missing_blob(store: LocalStore) -> None:
    with pytest.raises(BlobNotFound) as info:
        await read_all(store, "missing", 0, 1)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.status == 404


async def test_local_path_points_at_the_published_bytes(store: LocalStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"zero-copy")
    path = store.local_path("blob1")
    assert path is not None
    assert path.read_bytes() == b"zero-copy"
    assert path.is_relative_to(store.root)


# -- listing --------------------------------------------------------------------------------------------


async def test_list_uploads_and_blobs(store: LocalStore) -> None:
    assert await store.list_uploads() == []
    assert await store.list_blobs() == []
    for upload in ["u3", "u1", "u2"]:
        await store.write_part(upload, "p", stream([upload.encode()]), max_bytes=10)
    assert await store.list_uploads() == ["u1", "u2", "u3"]
    blobs = ["7-aa", "12-ab", "3-ff", "1-aa"]
    for i, blob in enumerate(blobs):
        await publish_bytes(store, f"pub{i}", blob, blob.encode())
    assert await store.list_blobs() == sorted(blobs)
    assert await store.list_uploads() == ["pub0", "pub1", "pub2", "pub3", "u1", "u2", "u3"]


async def test_list_blobs_ignores_staging_and_failed_writes(store: LocalStore) -> None:
    await store.write_part("u1", "p", stream([b"staged"]), max_bytes=10)
    with pytest.raises(EntryTooLarge):
        await store.write_part("u2", "p", stream([b"too large"]), max_bytes=1)
    assert await store.list_blobs() == []


async def test_a_new_store_sees_existing_data(store: LocalStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"persisted")
    await store.write_part("u2", "p", stream([b"x"]), max_bytes=1)
    again = LocalStore(store.root)
    assert await again.list_blobs() == ["blob1"]
    assert await again.list_uploads() == ["u1", "u2"]
    assert await read_all(again, "blob1", 0, 9) == b"persisted"


def test_open_store(tmp_path: Path) -> None:
    by_url = open_store(f"file://{tmp_path / 'a'}")
    assert isinstance(by_url, LocalStore)
    assert by_url.root == tmp_path / "a"
    by_path = open_store(str(tmp_path / "b"))
    assert isinstance(by_path, LocalStore)
    assert (tmp_path / "b" / "blobs").is_dir()
    with pytest.raises(ValueError, match="scheme"):
        open_store("s3://bucket/prefix")


# -- names --------------------------------------------------------------------------------------------

BAD_NAMES = [
    "../x",
    "..",
    ".",
    "a/b",
    "/abs",
    "a\\b",
    "",
    ".hidden",
    "-dash",
    "_under",
    "=assembled",
    "a b",
    "a\x00b",
    "x\n",
    "name\n",
    "%2e%2e",
    "é",
    "x" * 1000,
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_names_are_rejected_everywhere(
    store: LocalStore, tmp_path: Path, name: str
) -> None:
    await store.write_part("u1", "p1", stream([b"x"]), max_bytes=1)
    await publish_bytes(store, "u2", "blob1", b"y")
    before = tree(tmp_path)

    with pytest.raises(ValueError, match="invalid upload name"):
        await store.write_part(name, "p", stream([b"z"]), max_bytes=1)
    with pytest.raises(ValueError, match="invalid part name"):
        await store.write_part("u1", name, stream([b"z"]), max_bytes=1)
    with pytest.raises(ValueError, match="invalid upload name"):
        await store.assemble(name, ["p1"])
    with pytest.raises(ValueError, match="invalid part name"):
        await store.assemble("u1", ["p1", name])
    with pytest.raises(ValueError, match="invalid upload name"):
        await store.publish(name, "blob2")
    with pytest.raises(ValueError, match="invalid blob name"):
        await store.publish("u2", name)
    with pytest.raises(ValueError, match="invalid upload name"):
        await store.discard(name)
    with pytest.raises(ValueError, match="invalid blob name"):
        await store.delete(name)
    with pytest.raises(ValueError, match="invalid blob name"):
        await store.stat(name)
    with pytest.raises(ValueError, match="invalid blob name"):
        await read_all(store, name, 0, 1)
    with pytest.raises(ValueError, match="invalid blob name"):
        store.local_path(name)

    # Nothing was created, moved or removed anywhere under tmp_path.
    assert tree(tmp_path) == before
    assert await read_all(store, "blob1", 0, 1) == b"y"


@pytest.mark.parametrize(
    "name", ["a", "Z9", "u-1", "a.b", "x_y", "0123456789abcdef" * 4, "12-0123456789abcdef"]
)
async def test_good_names(store: LocalStore, name: str) -> None:
    await store.write_part(name, name, stream([b"ok"]), max_bytes=2)
    await store.assemble(name, [name])
    await store.publish(name, name)
    assert await read_all(store, name, 0, 2) == b"ok"
    assert name in await store.list_blobs()
