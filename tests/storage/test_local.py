"""``LocalStore`` specifics on a real directory: buffers, fsync, hard links, paths, a full disk.

Behaviour every store shares is in test_contract.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from ghacache.errors import EntryTooLarge, StorageError
from ghacache.storage import LocalStore, open_store
from ghacache.storage.local import READ_CHUNK_BYTES, WRITE_BUFFER_BYTES
from tests.support.blobs import MiB, data, failing_stream, publish_bytes, read_all, stream


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def tree(root: Path) -> list[Path]:
    """Every path under ``root``, relative to it."""
    return sorted(p.relative_to(root) for p in root.rglob("*"))


def staged(store: LocalStore, upload: str) -> list[str]:
    """Every file in an upload's staging directory, hidden temp files included."""
    directory = store.root / "uploads" / upload
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- write_part -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param([WRITE_BUFFER_BYTES], id="exactly one buffer"),
        pytest.param([WRITE_BUFFER_BYTES - 1, 2], id="just over one buffer"),
        pytest.param([64 * 1024] * 40, id="many chunks over several buffers"),
    ],
)
async def test_write_buffer_boundaries(store: LocalStore, sizes: list[int]) -> None:
    parts = [data(n, seed=i) for i, n in enumerate(sizes)]
    expected = b"".join(parts)
    assert await store.write_part("u1", "p1", stream(parts), max_bytes=len(expected)) == len(
        expected
    )
    assert (store.root / "uploads" / "u1" / "p1").read_bytes() == expected
    assert staged(store, "u1") == ["p1"]  # no temp file left


async def test_over_max_bytes_after_buffer_flushes_leaves_no_temp_file(store: LocalStore) -> None:
    sizes = [WRITE_BUFFER_BYTES, WRITE_BUFFER_BYTES, 1]
    with pytest.raises(EntryTooLarge):
        await store.write_part(
            "u1", "p1", stream(data(n) for n in sizes), max_bytes=2 * WRITE_BUFFER_BYTES
        )
    assert staged(store, "u1") == []


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


# -- assemble and publish ------------------------------------------------------------------------


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


# -- parts written into place ---------------------------------------------------------------------

BLOCK = MiB + 7


async def put_blocks(store: LocalStore, upload: str, payloads: list[bytes], order: list[int]):
    async def one(i: int) -> None:
        await store.write_part(
            upload, f"b{i}", stream([payloads[i]]), max_bytes=BLOCK, number=i,
            length=len(payloads[i]),
        )  # fmt: skip

    await asyncio.gather(*(one(i) for i in order))


def same_file(store: LocalStore, upload: str, a: str, b: str) -> bool:
    directory = store.root / "uploads" / upload
    return (directory / a).stat().st_ino == (directory / b).stat().st_ino


# The last, shorter block arriving first (possible only when no more blocks than the client
# sends at once) misleads the size guess: that upload is copied, which the contract tests check.
@pytest.mark.parametrize("order", [[0, 1, 2, 3], [2, 1, 0, 3], [1, 3, 2, 0]])
async def test_numbered_blocks_are_assembled_without_a_copy(
    store: LocalStore, order: list[int]
) -> None:
    payloads = [data(BLOCK if i < 3 else 5, seed=i) for i in range(4)]
    await put_blocks(store, "u1", payloads, order)
    # One data file plus a marker per block: no block has a file of its own.
    assert staged(store, "u1") == ["=data", *(f"b{i}@{i * BLOCK}+{len(p)}"
                                             for i, p in enumerate(payloads))]  # fmt: skip
    assert await store.assemble("u1", [f"b{i}" for i in range(4)]) == 3 * BLOCK + 5
    assert same_file(store, "u1", "=data", "=assembled")
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, 3 * BLOCK + 5) == b"".join(payloads)


async def test_v1_chunks_at_their_offsets_are_assembled_without_a_copy(store: LocalStore) -> None:
    payloads = [data(BLOCK, seed=1), data(BLOCK, seed=2), data(3, seed=3)]
    offsets = [0, BLOCK, 2 * BLOCK]
    for i in (2, 0, 1):
        await store.write_part(
            "u1", f"o{i}", stream([payloads[i]]), max_bytes=BLOCK, offset=offsets[i],
            length=len(payloads[i]),
        )  # fmt: skip
    assert await store.assemble("u1", ["o0", "o1", "o2"]) == 2 * BLOCK + 3
    assert same_file(store, "u1", "=data", "=assembled")


async def test_blocks_out_of_list_order_are_copied(store: LocalStore) -> None:
    payloads = [data(BLOCK, seed=i) for i in range(3)]
    await put_blocks(store, "u1", payloads, [0, 1, 2])
    assert await store.assemble("u1", ["b1", "b0", "b2"]) == 3 * BLOCK
    assert not same_file(store, "u1", "=data", "=assembled")
    assert await store.read_assembled("u1", 3 * BLOCK) == payloads[1] + payloads[0] + payloads[2]


async def test_an_assembled_data_file_takes_no_more_writes(store: LocalStore) -> None:
    payloads = [data(BLOCK, seed=i) for i in range(3)]
    await put_blocks(store, "u1", payloads, [0, 1, 2])
    names = ["b0", "b1", "b2"]
    assert await store.assemble("u1", names) == 3 * BLOCK
    late = data(BLOCK, seed=9)  # stragglers: a block sent again, and a new one
    await store.write_part("u1", "b1", stream([late]), max_bytes=BLOCK, number=1, length=BLOCK)
    await store.write_part("u1", "b3", stream([late]), max_bytes=BLOCK, number=3, length=BLOCK)
    assert await store.read_assembled("u1", 4 * BLOCK) == b"".join(payloads)
    assert await store.assemble("u1", [*names, "b3"]) == 4 * BLOCK  # a new list sees them
    assert await store.read_assembled("u1", 4 * BLOCK) == payloads[0] + late + payloads[2] + late


async def test_a_restarted_store_finds_placed_parts(store: LocalStore) -> None:
    payloads = [data(BLOCK, seed=i) for i in range(3)]
    await put_blocks(store, "u1", payloads[:2], [1, 0])
    again = LocalStore(store.root)  # a new process: only the files remain
    await again.write_part("u1", "b2", stream([payloads[2]]), max_bytes=BLOCK, number=2,
                           length=BLOCK)  # fmt: skip
    assert await again.assemble("u1", ["b0", "b1", "b2"]) == 3 * BLOCK
    assert same_file(again, "u1", "=data", "=assembled")
    assert await again.read_assembled("u1", 3 * BLOCK) == b"".join(payloads)
    assert await LocalStore(store.root).assemble("u1", ["b0", "b1", "b2"]) == 3 * BLOCK


@pytest.mark.parametrize("newer", ["file", "marker"])
async def test_after_a_crash_the_newest_copy_of_a_part_wins(store: LocalStore, newer: str) -> None:
    placed, own = data(BLOCK, seed=1), data(BLOCK - 5, seed=2)
    await store.write_part("u1", "b0", stream([placed]), max_bytes=BLOCK, number=0, length=BLOCK)
    # A crash between writing another copy of the part and removing the first one.
    directory = store.root / "uploads" / "u1"
    (directory / "b0").write_bytes(own)
    marker = directory / f"b0@0+{BLOCK}"
    first, second = (marker, directory / "b0") if newer == "file" else (directory / "b0", marker)
    os.utime(first, ns=(1_000_000_000, 1_000_000_000))
    os.utime(second, ns=(2_000_000_000, 2_000_000_000))
    again = LocalStore(store.root)
    expected = own if newer == "file" else placed
    assert await again.assemble("u1", ["b0"]) == len(expected)
    assert await again.read_assembled("u1", BLOCK) == expected
    assert not first.exists()


async def test_a_write_never_lands_on_a_range_being_written(store: LocalStore) -> None:
    started = asyncio.Event()
    release = asyncio.Event()
    first, second = data(BLOCK, seed=1), data(BLOCK, seed=2)

    async def slow() -> AsyncIterator[bytes]:
        yield first[:1000]
        started.set()
        await release.wait()
        yield first[1000:]

    task = asyncio.create_task(
        store.write_part("u1", "o0", slow(), max_bytes=BLOCK, offset=0, length=BLOCK)
    )
    await started.wait()
    # The same range again (a client's retry): it goes to a file of its own.
    await store.write_part("u1", "o0", stream([second]), max_bytes=BLOCK, offset=0, length=BLOCK)
    assert "o0" in staged(store, "u1")
    release.set()
    await task  # finishes later, so its copy of the part is the one kept
    assert "o0" not in staged(store, "u1")
    assert await store.assemble("u1", ["o0"]) == BLOCK
    assert await store.read_assembled("u1", BLOCK) == first


async def test_a_failed_placed_write_leaves_no_marker(store: LocalStore) -> None:
    broken = failing_stream([data(1000)], ConnectionResetError("client went away"))
    with pytest.raises(ConnectionResetError):
        await store.write_part("u1", "b0", broken, max_bytes=BLOCK, number=0, length=BLOCK)
    assert staged(store, "u1") == ["=data"]
    await store.discard("u1")
    assert staged(store, "u1") == []


async def test_publish_without_fsync(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "nofsync", fsync=False)
    await publish_bytes(store, "u1", "blob1", b"fast")
    assert await read_all(store, "blob1", 0, 4) == b"fast"


# -- delete and read ------------------------------------------------------------------------------


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


async def test_read_chunks_are_bounded(store: LocalStore) -> None:
    payload = data(2 * READ_CHUNK_BYTES + 1000)
    await publish_bytes(store, "u1", "blob1", payload)
    chunks = [chunk async for chunk in store.read("blob1", 5, len(payload) - 5)]
    assert b"".join(chunks) == payload[5:]
    assert all(0 < len(c) <= READ_CHUNK_BYTES for c in chunks)


async def test_read_past_the_end_says_so(store: LocalStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"short")
    with pytest.raises(StorageError, match="shorter than expected"):
        await read_all(store, "blob1", 0, 6)


async def test_local_path_points_at_the_published_bytes(store: LocalStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"zero-copy")
    path = store.local_path("blob1")
    assert path is not None
    assert path.read_bytes() == b"zero-copy"
    assert path.is_relative_to(store.root)


# -- opening and names -------------------------------------------------------------------------------


def test_open_store(tmp_path: Path) -> None:
    by_url = open_store(f"file://{tmp_path / 'a'}")
    assert isinstance(by_url, LocalStore)
    assert by_url.root == tmp_path / "a"
    by_path = open_store(str(tmp_path / "b"))
    assert isinstance(by_path, LocalStore)
    assert (tmp_path / "b" / "blobs").is_dir()
    with pytest.raises(ValueError, match="scheme"):
        open_store("ftp://host/prefix")


@pytest.mark.parametrize("name", ["../x", "..", ".", "a/b", "/abs", "a\\b", "%2e%2e", "x\n"])
async def test_bad_names_never_touch_the_filesystem(
    store: LocalStore, tmp_path: Path, name: str
) -> None:
    await store.write_part("u1", "p1", stream([b"x"]), max_bytes=1)
    await publish_bytes(store, "u2", "blob1", b"y")
    before = tree(tmp_path)
    attempts = [
        store.write_part(name, "p", stream([b"z"]), max_bytes=1),
        store.write_part("u1", name, stream([b"z"]), max_bytes=1),
        store.assemble("u1", ["p1", name]),
        store.publish("u2", name),
        store.discard(name),
        store.delete(name),
        store.delete_many(["blob1", name]),
        read_all(store, name, 0, 1),
    ]
    for attempt in attempts:
        with pytest.raises(ValueError, match="invalid"):
            await attempt
    assert tree(tmp_path) == before
    assert await read_all(store, "blob1", 0, 1) == b"y"
