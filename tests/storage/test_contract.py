"""The ``BlobStore`` contract: the same tests on local files, S3 (moto) and Azure (Azurite).

What a store holds is read behind its back (files, or a raw object listing plus S3's
pending multipart uploads), so "leaves nothing behind" means exactly that.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import AsyncIterator

import aiohttp
import obstore
import pytest
from obstore.store import S3Store

from ghacache.errors import (
    BlobExists,
    BlobNotFound,
    EntryTooLarge,
    RemoteProtocolError,
    StorageError,
    UploadStateError,
)
from ghacache.protocol.azblob import block_list_xml, block_part_name
from ghacache.storage import DIRECT_PART, BlobStore, LocalStore, open_store
from ghacache.storage.objectstore import PART_BYTES, ObjectStore
from tests.support.blobs import MiB, data, failing_stream, publish_bytes, read_all, stream
from tests.support.objectstores import pending_multipart_uploads


@pytest.fixture
def store(store_url: str) -> BlobStore:
    return open_store(store_url)


def backend(store: BlobStore) -> str:
    if isinstance(store, LocalStore):
        return "file"
    assert isinstance(store, ObjectStore)
    return store.name.split(":", 1)[0]


async def objects(store: BlobStore) -> list[str]:
    """Every object or file the store holds (temp files and unfinished uploads too)."""
    if isinstance(store, LocalStore):
        return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    assert isinstance(store, ObjectStore)
    raw = store.store
    found = [m["path"] for m in await obstore.list(raw, "").collect_async()]
    if isinstance(raw, S3Store):  # and unfinished multipart uploads
        prefix = f"{raw.prefix}/" if raw.prefix else ""
        pending = pending_multipart_uploads(raw.config["endpoint"], raw.config["bucket"])
        found += [f"(multipart) {key.removeprefix(prefix)}" for key in pending]
    return sorted(found)


async def staged(store: BlobStore, upload: str) -> list[str]:
    """What the store holds for ``upload``, as names relative to its staging area."""
    prefix = f"uploads/{upload}/"
    names = [o.replace(prefix, "", 1) for o in await objects(store) if prefix in o]
    return sorted(names)


async def assert_nothing_published(store: BlobStore, blob: str) -> None:
    assert await store.stat(blob) is None
    assert await store.list_blobs() == []
    with pytest.raises(BlobNotFound):
        await read_all(store, blob, 0, 1)


# -- write_part -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sizes",
    [
        pytest.param([], id="no chunks"),
        pytest.param([0, 0], id="empty chunks"),
        pytest.param([1], id="one byte"),
        pytest.param([100, 0, 200, 300], id="small chunks"),
        pytest.param([MiB - 1, 2], id="just over a MiB"),
        pytest.param([64 * 1024] * 40, id="many chunks"),
        pytest.param([3 * MiB + 5], id="one large chunk"),
        pytest.param([PART_BYTES, 1], id="just over one multipart part"),
    ],
)
async def test_write_part_streams_from_an_async_generator(
    store: BlobStore, sizes: list[int]
) -> None:
    parts = [data(n, seed=i) for i, n in enumerate(sizes)]
    expected = b"".join(parts)
    written = await store.write_part("u1", "p1", stream(parts), max_bytes=len(expected))
    assert written == len(expected)
    assert await store.assemble("u1", ["p1"]) == len(expected)
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, len(expected)) == expected
    assert await staged(store, "u1") == ["=assembled", "p1"]


async def test_write_part_replaces_a_part_of_the_same_name(store: BlobStore) -> None:
    await store.write_part("u1", "p1", stream([b"first version"]), max_bytes=100)
    assert await store.write_part("u1", "p1", stream([b"second"]), max_bytes=100) == 6
    assert await store.assemble("u1", ["p1"]) == 6
    await store.publish("u1", "b")
    assert await read_all(store, "b", 0, 6) == b"second"


@pytest.mark.parametrize(
    ("sizes", "max_bytes"),
    [
        pytest.param([11], 10, id="one chunk"),
        pytest.param([5, 5, 1], 10, id="small chunks"),
        pytest.param([MiB, MiB, 1], 2 * MiB, id="after local flushes"),
        pytest.param([PART_BYTES, PART_BYTES, 1], 2 * PART_BYTES, id="after multipart parts"),
    ],
)
async def test_write_part_over_max_bytes_leaves_nothing(
    store: BlobStore, sizes: list[int], max_bytes: int
) -> None:
    with pytest.raises(EntryTooLarge) as info:
        await store.write_part("u1", "p1", stream(data(n) for n in sizes), max_bytes=max_bytes)
    assert info.value.status == 413
    assert await objects(store) == []
    with pytest.raises(BlobNotFound):
        await store.assemble("u1", ["p1"])


async def test_write_part_at_exactly_max_bytes_is_accepted(store: BlobStore) -> None:
    assert await store.write_part("u1", "p1", stream([b"12345", b"67890"]), max_bytes=10) == 10
    assert await staged(store, "u1") == ["p1"]


async def test_write_part_stops_reading_once_over_the_limit(store: BlobStore) -> None:
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
        pytest.param(ConnectionResetError("Connection lost"), id="dropped connection"),
        pytest.param(asyncio.CancelledError(), id="cancelled"),
    ],
)
async def test_a_stream_that_fails_midway_leaves_nothing(
    store: BlobStore, exc: BaseException
) -> None:
    # More than one multipart part arrives first, so the upload is under way when it fails.
    before = [data(MiB, seed=i) for i in range(PART_BYTES // MiB + 2)]
    with pytest.raises(type(exc)):
        await store.write_part("u1", "p1", failing_stream(before, exc), max_bytes=64 * MiB)
    assert await objects(store) == []


async def test_a_cancelled_write_leaves_nothing(store: BlobStore) -> None:
    received = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        for i in range(PART_BYTES // MiB + 2):
            yield data(MiB, seed=i)
        received.set()
        await asyncio.Event().wait()  # the client stalls until the server gives up
        yield b""

    task = asyncio.create_task(store.write_part("u1", "p1", slow_body(), max_bytes=64 * MiB))
    await received.wait()
    if backend(store) == "s3":  # the multipart upload is under way
        assert await staged(store, "u1") == ["(multipart) p1"]
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await objects(store) == []


async def test_a_failed_rewrite_keeps_the_earlier_complete_part(store: BlobStore) -> None:
    await store.write_part("u1", "p1", stream([b"complete"]), max_bytes=100)
    with pytest.raises(RuntimeError):
        await store.write_part(
            "u1", "p1", failing_stream([b"partial"], RuntimeError("boom")), max_bytes=100
        )
    assert await staged(store, "u1") == ["p1"]
    assert await store.assemble("u1", ["p1"]) == len(b"complete")


async def test_parts_of_different_uploads_are_independent(store: BlobStore) -> None:
    await store.write_part("u1", "p", stream([b"one"]), max_bytes=10)
    await store.write_part("u2", "p", stream([b"two!"]), max_bytes=10)
    assert await store.assemble("u1", ["p"]) == 3
    assert await store.assemble("u2", ["p"]) == 4


# -- assemble ---------------------------------------------------------------------------------------


async def test_assemble_concatenates_in_the_given_order(store: BlobStore) -> None:
    parts = {"p1": data(1000, 1), "p2": data(MiB + 3, 2), "p3": data(2 * MiB + 11, 3)}
    for name, payload in parts.items():
        await store.write_part("u1", name, stream([payload]), max_bytes=len(payload))
    order = ["p3", "p1", "p2"]
    expected = b"".join(parts[n] for n in order)
    assert await store.assemble("u1", order) == len(expected)
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, len(expected)) == expected


async def test_small_parts_are_coalesced_into_one_blob(store: BlobStore) -> None:
    # Blocks under S3's 5 MiB minimum part size, then one over it: the object store
    # streams them into multipart parts of its own size.
    parts = [data(MiB, seed=i) for i in range(3)] + [data(7 * MiB, seed=3)]
    names = [f"b{i}" for i in range(len(parts))]
    for name, payload in zip(names, parts, strict=True):
        await store.write_part("u1", name, stream([payload]), max_bytes=len(payload))
    expected = b"".join(parts)
    assert await store.assemble("u1", names) == len(expected)
    await store.publish("u1", "blob1")
    info = await store.stat("blob1")
    assert info is not None and info.size == len(expected)
    assert await read_all(store, "blob1", 0, len(expected)) == expected
    assert not [o for o in await objects(store) if o.startswith("(multipart)")]


async def test_assemble_block_part_names(store: BlobStore) -> None:
    # Put Block part names are the hex of 64-byte Go block ids: the longest names we stage.
    names = [block_part_name(bytes([i]) * 64) for i in range(3)]
    for i, name in enumerate(names):
        await store.write_part("u1", name, stream([b"%d" % i]), max_bytes=1)
    assert await store.assemble("u1", list(reversed(names))) == 3
    await store.publish("u1", "b")
    assert await read_all(store, "b", 0, 3) == b"210"


async def test_assemble_may_use_a_part_twice(store: BlobStore) -> None:
    await store.write_part("u1", "a", stream([b"ab"]), max_bytes=2)
    await store.write_part("u1", "c", stream([b"c"]), max_bytes=1)
    assert await store.assemble("u1", ["a", "c", "a"]) == 5
    await store.publish("u1", "b")
    assert await read_all(store, "b", 0, 5) == b"abcab"


async def test_reassembling_replaces_the_earlier_assembly(store: BlobStore) -> None:
    await store.write_part("u1", "a", stream([b"AAA"]), max_bytes=3)
    await store.write_part("u1", "b", stream([b"B"]), max_bytes=3)
    assert await store.assemble("u1", ["a", "b"]) == 4
    assert await store.assemble("u1", ["b"]) == 1
    await store.publish("u1", "x")
    assert await read_all(store, "x", 0, 1) == b"B"


@pytest.mark.parametrize("parts", [["missing"], ["p1", "missing"], ["missing", "p1"]])
async def test_assemble_with_a_missing_part_fails_and_leaves_no_assembly(
    store: BlobStore, parts: list[str]
) -> None:
    await store.write_part("u1", "p1", stream([b"x"]), max_bytes=1)
    with pytest.raises(BlobNotFound) as info:
        await store.assemble("u1", parts)
    assert "missing" in str(info.value)
    assert await staged(store, "u1") == ["p1"]


async def test_assemble_unknown_upload(store: BlobStore) -> None:
    with pytest.raises(BlobNotFound):
        await store.assemble("nobody", ["p1"])


async def test_read_and_replace_the_assembled_bytes(store: BlobStore) -> None:
    await store.write_part("u1", "a", stream([b"hello "]), max_bytes=10)
    await store.write_part("u1", "b", stream([b"world"]), max_bytes=10)
    assert await store.assemble("u1", ["a", "b"]) == 11
    assert await store.read_assembled("u1", 11) == b"hello world"
    assert await store.read_assembled("u1", 10) is None
    assert await store.replace_assembled("u1", b"merged index") == 12
    assert await store.read_assembled("u1", 100) == b"merged index"
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, 12) == b"merged index"
    await store.discard("u1")
    assert await objects(store) != []  # the blob
    assert await staged(store, "u1") == []


async def test_read_assembled_without_assembly(store: BlobStore) -> None:
    await store.write_part("u1", "a", stream([b"x"]), max_bytes=1)
    with pytest.raises((StorageError, UploadStateError)):
        await store.read_assembled("u1", 100)


# -- placement hints (length, offset, number) -----------------------------------------------------
# A store may use them to write parts into place; whatever it does, the bytes must come out
# in the order assemble names, and a body that breaks a hint must stage nothing.

BLOCK = MiB + 7  # odd sizes: misplaced bytes show


def blocks(count: int, last: int = 1000) -> list[bytes]:
    return [data(BLOCK if i < count - 1 else last, seed=i) for i in range(count)]


async def stage_numbered(store: BlobStore, upload: str, payloads: list[bytes], order: list[int]):
    """Stage ``payloads[i]`` as part ``b<i>`` with number ``i``, concurrently, in ``order``."""

    async def one(i: int) -> None:
        await store.write_part(
            upload, f"b{i}", stream([payloads[i]]), max_bytes=BLOCK, number=i,
            length=len(payloads[i]),
        )  # fmt: skip

    await asyncio.gather(*(one(i) for i in order))


@pytest.mark.parametrize(
    "order",
    [
        pytest.param([0, 1, 2, 3, 4], id="in order"),
        pytest.param([2, 0, 4, 1, 3], id="scrambled"),
        pytest.param([4, 3, 2, 1, 0], id="last first"),
    ],
)
async def test_numbered_parts_come_out_in_list_order(store: BlobStore, order: list[int]) -> None:
    payloads = blocks(5)
    await stage_numbered(store, "u1", payloads, order)
    names = [f"b{i}" for i in range(5)]
    expected = b"".join(payloads)
    assert await store.assemble("u1", names) == len(expected)
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, len(expected)) == expected


async def test_a_list_order_other_than_the_numbers_wins(store: BlobStore) -> None:
    payloads = blocks(4, last=BLOCK)
    await stage_numbered(store, "u1", payloads, [0, 1, 2, 3])
    order = [3, 1, 0, 2, 1]
    expected = b"".join(payloads[i] for i in order)
    assert await store.assemble("u1", [f"b{i}" for i in order]) == len(expected)
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, len(expected)) == expected


async def test_numbers_that_collide_or_mislead_still_assemble_right(store: BlobStore) -> None:
    payloads = [data(BLOCK, seed=i) for i in range(4)]
    for i, payload in enumerate(payloads):  # every block claims number 7
        await store.write_part(
            "u1", f"b{i}", stream([payload]), max_bytes=BLOCK, number=7, length=BLOCK
        )
    assert await store.assemble("u1", [f"b{i}" for i in range(4)]) == 4 * BLOCK
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, 4 * BLOCK) == b"".join(payloads)


@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0]])
async def test_chunks_at_their_offsets_tile_the_object(store: BlobStore, order: list[int]) -> None:
    payloads = blocks(3)
    offsets = [0, BLOCK, 2 * BLOCK]
    for i in order:
        await store.write_part(
            "u1", f"o{offsets[i]}", stream([payloads[i]]), max_bytes=BLOCK, offset=offsets[i],
            length=len(payloads[i]),
        )  # fmt: skip
    expected = b"".join(payloads)
    assert await store.assemble("u1", [f"o{o}" for o in offsets]) == len(expected)
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, len(expected)) == expected


async def test_a_chunk_sent_again_replaces_the_first_copy(store: BlobStore) -> None:
    first, second, tail = data(BLOCK, seed=1), data(BLOCK, seed=2), data(100, seed=3)
    for payload, offset in ((first, 0), (tail, BLOCK), (second, 0)):
        await store.write_part(
            "u1", f"o{offset}", stream([payload]), max_bytes=BLOCK, offset=offset,
            length=len(payload),
        )  # fmt: skip
    assert await store.assemble("u1", ["o0", f"o{BLOCK}"]) == BLOCK + 100
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, BLOCK + 100) == second + tail


async def test_overlapping_chunks_never_mix_their_bytes(store: BlobStore) -> None:
    # A chunk covering [0, 2B), then one at [B, 2B), then [0, B) again: each part keeps
    # its own bytes whichever was written over which range.
    whole, upper, lower = data(2 * BLOCK, seed=1), data(BLOCK, seed=2), data(BLOCK, seed=3)
    for name, payload, offset in (("o0", whole, 0), ("oB", upper, BLOCK), ("o0", lower, 0)):
        await store.write_part(
            "u1", name, stream([payload]), max_bytes=2 * BLOCK, offset=offset,
            length=len(payload),
        )  # fmt: skip
    assert await store.assemble("u1", ["o0", "oB"]) == 2 * BLOCK
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, 2 * BLOCK) == lower + upper


@pytest.mark.parametrize(
    ("sizes", "length"),
    [pytest.param([10, 5], 12, id="longer"), pytest.param([10], 12, id="shorter")],
)
@pytest.mark.parametrize("where", [{"number": 0}, {"offset": 0}, {}], ids=str)
async def test_a_body_of_another_length_than_declared_stages_nothing(
    store: BlobStore, sizes: list[int], length: int, where: dict[str, int]
) -> None:
    with pytest.raises(RemoteProtocolError):
        await store.write_part(
            "u1", "p", stream(data(n) for n in sizes), max_bytes=100, length=length, **where
        )
    with pytest.raises(BlobNotFound):
        await store.assemble("u1", ["p"])


@pytest.mark.parametrize("where", [{"number": 1}, {"offset": BLOCK}], ids=str)
async def test_a_failed_placed_write_leaves_no_part_and_can_be_retried(
    store: BlobStore, where: dict[str, int]
) -> None:
    payloads = blocks(2, last=BLOCK)
    hints = [{"number": 0} if "number" in where else {"offset": 0}, where]
    await store.write_part("u1", "a", stream([payloads[0]]), max_bytes=BLOCK, length=BLOCK,
                           **hints[0])  # fmt: skip
    broken = failing_stream([payloads[1][:1000]], ConnectionResetError("client went away"))
    with pytest.raises(ConnectionResetError):
        await store.write_part("u1", "b", broken, max_bytes=BLOCK, length=BLOCK, **hints[1])
    with pytest.raises(BlobNotFound):
        await store.assemble("u1", ["a", "b"])
    await store.write_part("u1", "b", stream([payloads[1]]), max_bytes=BLOCK, length=BLOCK,
                           **hints[1])  # fmt: skip
    assert await store.assemble("u1", ["a", "b"]) == 2 * BLOCK
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, 2 * BLOCK) == b"".join(payloads)


async def test_a_placed_part_replaced_by_a_plain_one_and_back(store: BlobStore) -> None:
    one, two, three = data(BLOCK, seed=1), data(BLOCK - 1, seed=2), data(BLOCK, seed=3)
    await store.write_part("u1", "p", stream([one]), max_bytes=BLOCK, number=0, length=BLOCK)
    await store.write_part("u1", "p", stream([two]), max_bytes=BLOCK)
    assert await store.assemble("u1", ["p"]) == BLOCK - 1
    assert await store.read_assembled("u1", BLOCK) == two
    await store.write_part("u1", "p", stream([three]), max_bytes=BLOCK, number=0, length=BLOCK)
    assert await store.assemble("u1", ["p"]) == BLOCK
    assert await store.read_assembled("u1", BLOCK) == three


# -- publish ----------------------------------------------------------------------------------------


async def test_nothing_is_visible_before_publish(store: BlobStore) -> None:
    await store.write_part("u1", "p1", stream([b"staged"]), max_bytes=100)
    await store.write_part("u1", "p2", stream([b"bytes"]), max_bytes=100)
    await store.assemble("u1", ["p1", "p2"])
    await assert_nothing_published(store, "blob1")
    await store.publish("u1", "blob1")
    assert await store.list_blobs() == ["blob1"]


@pytest.mark.parametrize("parts", [1, 2], ids=["copied", "streamed"])
async def test_publish_is_create_only(store: BlobStore, parts: int) -> None:
    await publish_bytes(store, "u1", "blob1", b"original")
    names = [f"p{i}" for i in range(parts)]
    for name in names:
        await store.write_part("u2", name, stream([b"intruder"]), max_bytes=100)
    await store.assemble("u2", names)
    with pytest.raises(BlobExists) as info:
        await store.publish("u2", "blob1")
    assert info.value.status == 409
    assert await read_all(store, "blob1", 0, 8) == b"original"


async def test_publishing_the_same_upload_twice_is_rejected(store: BlobStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"x")
    with pytest.raises(BlobExists):
        await store.publish("u1", "blob1")


async def test_one_upload_may_be_published_under_two_names(store: BlobStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"same")
    await store.publish("u1", "blob2")
    assert await read_all(store, "blob2", 0, 4) == b"same"


async def test_publish_without_assemble(store: BlobStore) -> None:
    await store.write_part("u1", "p1", stream([b"staged only"]), max_bytes=100)
    with pytest.raises(UploadStateError) as info:
        await store.publish("u1", "blob1")
    assert info.value.status == 412
    await assert_nothing_published(store, "blob1")


async def test_publish_of_an_unknown_upload(store: BlobStore) -> None:
    with pytest.raises(UploadStateError):
        await store.publish("nobody", "blob1")


async def test_publish_after_discard(store: BlobStore) -> None:
    await store.write_part("u1", "p1", stream([b"x"]), max_bytes=1)
    await store.assemble("u1", ["p1"])
    await store.discard("u1")
    with pytest.raises(UploadStateError):
        await store.publish("u1", "blob1")
    assert await store.list_blobs() == []


async def test_published_blob_survives_discard_of_its_upload(store: BlobStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"durable")
    await store.discard("u1")
    assert await store.list_uploads() == []
    assert await read_all(store, "blob1", 0, 7) == b"durable"


# -- discard and delete -------------------------------------------------------------------------------


async def test_discard_removes_everything_staged(store: BlobStore) -> None:
    await store.write_part("u1", "p1", stream([b"a"]), max_bytes=1)
    await store.write_part("u1", "p2", stream([b"b"]), max_bytes=1)
    await store.assemble("u1", ["p1", "p2"])
    await store.write_part("u2", "p1", stream([b"c"]), max_bytes=1)
    await store.discard("u1")
    assert await store.list_uploads() == ["u2"]
    assert await staged(store, "u1") == []
    assert await store.upload_modified_at("u1") is None
    with pytest.raises(UploadStateError):
        await store.publish("u1", "b")


async def test_discard_of_an_unknown_upload_is_a_no_op(store: BlobStore) -> None:
    await store.discard("never-staged")
    await store.discard("never-staged")
    assert await store.list_uploads() == []


async def test_delete_removes_a_blob(store: BlobStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"bytes")
    await store.delete("blob1")
    assert await store.stat("blob1") is None
    assert await store.list_blobs() == []
    with pytest.raises(BlobNotFound):
        await read_all(store, "blob1", 0, 5)
    await store.delete("blob1")  # already gone: a no-op


async def test_delete_many_skips_missing_blobs(store: BlobStore) -> None:
    for i in range(3):
        await publish_bytes(store, f"u{i}", f"blob{i}", b"x")
    await store.delete_many(["blob0", "missing", "blob2"])
    assert await store.list_blobs() == ["blob1"]
    await store.delete_many([])
    await store.delete_many(["missing", "blob1"])
    assert await store.list_blobs() == []


async def test_a_blob_name_can_be_reused_after_delete(store: BlobStore) -> None:
    await publish_bytes(store, "u1", "blob1", b"old")
    await store.delete("blob1")
    await publish_bytes(store, "u2", "blob1", b"new!")
    assert await read_all(store, "blob1", 0, 4) == b"new!"


# -- stat and read ------------------------------------------------------------------------------------


async def test_stat(store: BlobStore) -> None:
    before = time.time()
    await publish_bytes(store, "u1", "blob1", b"12345")
    await publish_bytes(store, "u2", "blob2", b"67890")
    info1, info2 = await store.stat("blob1"), await store.stat("blob2")
    assert info1 is not None and info2 is not None
    assert info1.size == 5
    assert info1.etag.startswith('"') and info1.etag.endswith('"')
    assert info1.etag != info2.etag
    assert before - 2 <= info1.modified_at <= time.time() + 2
    assert await store.stat("blob1") == info1  # stable while unchanged
    assert await store.stat("missing") is None


async def test_an_empty_blob(store: BlobStore) -> None:
    await store.write_part("u1", "p", stream([]), max_bytes=0)
    assert await store.assemble("u1", ["p"]) == 0
    await store.publish("u1", "empty")
    info = await store.stat("empty")
    assert info is not None
    assert info.size == 0
    assert await read_all(store, "empty", 0, 0) == b""


async def test_an_empty_blob_from_several_parts(store: BlobStore) -> None:
    for name in ("a", "b"):
        await store.write_part("u1", name, stream([]), max_bytes=0)
    assert await store.assemble("u1", ["a", "b"]) == 0
    await store.publish("u1", "empty")
    info = await store.stat("empty")
    assert info is not None and info.size == 0


SIZE = 2 * MiB + 1000
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
        (MiB - 1, 2),
        (MiB, MiB),
        (5, SIZE - 5),
        (123_456, MiB + 789),
    ],
)
async def test_read_ranges(store: BlobStore, start: int, length: int) -> None:
    await publish_bytes(store, "u1", "blob1", PAYLOAD)
    chunks = [chunk async for chunk in store.read("blob1", start, length)]
    assert b"".join(chunks) == PAYLOAD[start : start + length]
    assert all(chunks)


@pytest.mark.parametrize(
    ("start", "length"), [(0, SIZE + 1), (SIZE - 1, 2), (SIZE, 1), (SIZE + 5, 1)]
)
async def test_read_past_the_end_fails(store: BlobStore, start: int, length: int) -> None:
    await publish_bytes(store, "u1", "blob1", PAYLOAD)
    with pytest.raises(StorageError) as info:
        await read_all(store, "blob1", start, length)
    assert not isinstance(info.value, BlobNotFound)


@pytest.mark.parametrize("length", [0, 1])
async def test_read_missing_blob(store: BlobStore, length: int) -> None:
    with pytest.raises(BlobNotFound) as info:
        await read_all(store, "missing", 0, length)
    assert isinstance(info.value, FileNotFoundError)
    assert info.value.status == 404


# -- listing ------------------------------------------------------------------------------------------


async def test_list_uploads_and_blobs(store: BlobStore) -> None:
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


async def test_list_blobs_ignores_staging_and_failed_writes(store: BlobStore) -> None:
    await store.write_part("u1", "p", stream([b"staged"]), max_bytes=10)
    with pytest.raises(EntryTooLarge):
        await store.write_part("u2", "p", stream([b"too large"]), max_bytes=1)
    assert await store.list_blobs() == []


async def test_upload_modified_at(store: BlobStore) -> None:
    assert await store.upload_modified_at("u1") is None
    before = time.time()
    await store.write_part("u1", "p", stream([b"x"]), max_bytes=1)
    modified = await store.upload_modified_at("u1")
    assert modified is not None
    assert before - 2 <= modified <= time.time() + 2
    await store.discard("u1")
    assert await store.upload_modified_at("u1") is None


async def test_a_new_store_sees_existing_data(store: BlobStore, store_url: str) -> None:
    await publish_bytes(store, "u1", "blob1", b"persisted")
    await store.write_part("u2", "p", stream([b"x"]), max_bytes=1)
    again = open_store(store_url)
    assert await again.list_blobs() == ["blob1"]
    assert await again.list_uploads() == ["u1", "u2"]
    assert await read_all(again, "blob1", 0, 9) == b"persisted"


# -- direct transfers ---------------------------------------------------------------------------------


async def test_direct_download_url(store: BlobStore) -> None:
    payload = data(MiB + 5)
    await publish_bytes(store, "u1", "blob1", payload)
    url = await store.direct_download_url("blob1", 60)
    if backend(store) == "file":
        assert url is None  # the server serves local blobs itself
        return
    assert url is not None
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as r:
            assert r.status == 200
            assert await r.read() == payload
        async with http.get(url, headers={"Range": "bytes=100-199"}) as r:
            assert r.status == 206
            assert await r.read() == payload[100:200]
        if backend(store) == "az":  # moto does not check signatures at all
            headers = {"x-ms-blob-type": "BlockBlob"}
            async with http.put(url, data=b"overwrite", headers=headers) as r:
                assert r.status == 403, "a download URL must not allow writes"
    assert await read_all(store, "blob1", 0, len(payload)) == payload


async def test_direct_upload_url(store: BlobStore) -> None:
    url = await store.direct_upload_url("u1", 60)
    if backend(store) != "az":
        assert url is None  # only Azure's SAS URLs speak the Block Blob protocol
        return
    assert url is not None
    payload = data(3 * MiB + 17)
    block_ids = [base64.b64encode(b"block-%04d" % i).decode() for i in range(4)]
    async with aiohttp.ClientSession() as http:
        for i, block_id in enumerate(block_ids):  # the SDKs' Put Block + Put Block List
            chunk = payload[i * MiB : (i + 1) * MiB]
            params = {"comp": "block", "blockid": block_id}
            async with http.put(url, params=params, data=chunk) as r:
                assert r.status == 201, await r.text()
        body = block_list_xml(block_ids)
        async with http.put(url, params={"comp": "blocklist"}, data=body) as r:
            assert r.status == 201, await r.text()
    await assert_nothing_published(store, "blob1")
    assert await staged(store, "u1") == [DIRECT_PART]
    assert await store.assemble("u1", [DIRECT_PART]) == len(payload)
    await store.publish("u1", "blob1")
    download = await store.direct_download_url("blob1", 60)
    assert download is not None
    async with aiohttp.ClientSession() as http, http.get(download) as r:
        assert r.status == 200
        assert await r.read() == payload


async def test_direct_upload_with_put_blob(store: BlobStore) -> None:
    url = await store.direct_upload_url("u1", 60)
    if url is None:
        return
    async with (
        aiohttp.ClientSession() as http,
        http.put(url, data=b"one shot", headers={"x-ms-blob-type": "BlockBlob"}) as r,
    ):
        assert r.status == 201, await r.text()
    assert await store.assemble("u1", [DIRECT_PART]) == 8
    await store.publish("u1", "blob1")
    assert await read_all(store, "blob1", 0, 8) == b"one shot"


async def test_a_direct_upload_url_is_bound_to_its_upload(store: BlobStore) -> None:
    url = await store.direct_upload_url("u1", 60)
    if url is None:
        return
    other = url.replace("/uploads/u1/", "/uploads/u2/")
    headers = {"x-ms-blob-type": "BlockBlob"}
    async with aiohttp.ClientSession() as http, http.put(other, data=b"x", headers=headers) as r:
        assert r.status == 403
    assert await store.list_uploads() == []


# -- names ----------------------------------------------------------------------------------------------

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
    "%2e%2e",
    "é",
    "x" * 1000,
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_names_are_rejected_everywhere(store: BlobStore, name: str) -> None:
    await store.write_part("u1", "p1", stream([b"x"]), max_bytes=1)
    await publish_bytes(store, "u2", "blob1", b"y")
    before = await objects(store)

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
        await store.delete_many(["blob1", name])
    with pytest.raises(ValueError, match="invalid blob name"):
        await store.stat(name)
    with pytest.raises(ValueError, match="invalid blob name"):
        await read_all(store, name, 0, 1)
    with pytest.raises(ValueError, match="invalid blob name"):
        store.local_path(name)
    with pytest.raises(ValueError, match="invalid upload name"):
        await store.upload_modified_at(name)

    assert await objects(store) == before  # nothing created, moved or removed
    assert await read_all(store, "blob1", 0, 1) == b"y"


@pytest.mark.parametrize(
    "name", ["a", "Z9", "u-1", "a.b", "x_y", "0123456789abcdef" * 4, "12-0123456789abcdef"]
)
async def test_good_names(store: BlobStore, name: str) -> None:
    await store.write_part(name, name, stream([b"ok"]), max_bytes=2)
    await store.assemble(name, [name])
    await store.publish(name, name)
    assert await read_all(store, name, 0, 2) == b"ok"
    assert name in await store.list_blobs()
