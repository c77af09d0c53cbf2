"""Crash consistency: SIGKILL the real server at every crash point, restart it, check.

For every point of ``ghacache.crashpoints`` (several by more than one path), on SQLite +
local files and on PostgreSQL + S3 (moto), a case:

1. copies a cache that a real server populated (``_populate``: committed entries in four
   repositories, BuildKit's entries, an abandoned upload) and then damaged behind its back
   (an orphan blob, an orphan upload, an entry whose bytes were deleted);
2. starts ``ghacache serve`` on the copy with ``GHACACHE_CRASH_AT`` naming the point, and
   drives the request or start-up job that reaches it: the server must die there by SIGKILL;
3. restarts it on the same data without the variable (reservation timeout 2 s, orphan grace
   0 s) and checks: every committed entry is found by v2 and v1 lookups and downloads
   byte-exact; the interrupted entry is committed if the crash came after its commit, and
   otherwise neither lookup, prefix lookup nor the management API finds it; expiry and
   reconciliation leave no uncommitted row, part, staged upload, orphan blob or unfinished
   multipart upload; a fresh save of every key the case lost works.

The cases of the module run concurrently, ``CONCURRENCY`` at a time, on the module's event
loop: each test awaits its own case, and all of them start with the module's first test.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import aiohttp
import psycopg
import pytest
import pytest_asyncio

from ghacache.cacheconfig import keys as bk
from ghacache.cacheconfig.merge import gc
from ghacache.cacheconfig.model import CacheConfig, parse
from ghacache.crashpoints import ENV, POINTS, CrashPoint
from tests.hardening.crashclient import BLOCK, Client, Ident
from tests.hardening.crashlab import (
    CloudSites,
    FileSites,
    Launcher,
    Server,
    Site,
    Snapshot,
    server_env,
)
from tests.support import wire
from tests.support.fixtures import gha_entries, index_bytes
from tests.support.objectstores import Service, create_bucket
from tests.support.postgres import base_url

CONCURRENCY = 4
MIB = 1024 * 1024
LEFTOVERS_TIMEOUT_S = 30.0
# The restarted server: reservations idle for 2 s are abandoned, orphans of any age removed
# by the start-up sweep (the timed sweep, every 10 min, never runs during a case).
RESTART_ARGS = ("--reservation-timeout", "2s", "--orphan-grace", "0s")

REPO, IDLE, QUOTA, BK = "octo/repo", "octo/idle", "octo/quota", "octo/bk"


def _data(label: str, size: int) -> bytes:
    return random.Random(label).randbytes(size)


def _v(repo: str, key: str) -> Ident:
    return (repo, key, wire.VERSION)


def _bk(key: str) -> Ident:
    return (BK, key, bk.VERSION)


# -- the golden cache -------------------------------------------------------------------------

# (ident, bytes, how it is saved); saved in this order, so quota-1 is the older access.
SAVES: list[tuple[Ident, bytes, str]] = [
    (_v(REPO, "kept-blob"), _data("kept-blob", 300_000), "put-blob"),
    (_v(REPO, "kept-blocks"), _data("kept-blocks", 3 * BLOCK + 5), "blocks"),
    (_v(REPO, "kept-v1"), _data("kept-v1", 2 * BLOCK + 7), "v1"),
    (_v(REPO, "delete-me"), _data("delete-me", 50_000), "put-blob"),
    (_v(REPO, "lost"), _data("lost", 40_000), "put-blob"),  # its blob is deleted afterwards
    (_v(IDLE, "idle-1"), _data("idle-1", 30_000), "put-blob"),
    (_v(QUOTA, "quota-1"), _data("quota-1", 100_000), "put-blob"),
    (_v(QUOTA, "quota-2"), _data("quota-2", 100_000), "put-blob"),
]
LOST = _v(REPO, "lost")
ABANDONED = _v(REPO, "abandoned")  # reserved, one block staged, never finalized
ORPHAN_BLOB = "blobs/999999-0123456789abcdef"
ORPHAN_UPLOAD = "uploads/0123456789abcdef01234567/blob"
BK_INDEX_A = "index-build-a-1-f921bd05"
# A blob only build-a's index uses: deleting it makes the server repair that index.
VICTIM = sorted(
    parse(index_bytes(f"{BK_INDEX_A}#2")).blobs()
    - parse(index_bytes("index-build-b-1-f921bd05#1")).blobs()
)[0]
VICTIM_ENTRY = _bk(bk.blob_key(VICTIM))


@dataclass
class Golden:
    site: Site
    entries: dict[Ident, bytes]  # every committed entry a restart must keep, as served
    settled_at: float  # from then on, golden entries are over 1 s idle


async def _populate(client: Client) -> dict[Ident, bytes]:
    for ident, data, how in SAVES:
        await client.save(ident, data, how)
    entries = {ident: data for ident, data, _ in SAVES if ident != LOST}
    for e in gha_entries():
        await client.save(_bk(e.key), e.data)
    for e in gha_entries():  # index generations are stored merged: keep what is served
        entries[_bk(e.key)] = await client.fetch(_bk(e.key)) if "#" in e.key else e.data
    url = await client.reserve(ABANDONED)
    ids = [wire.js_block_id(0)]
    async with client.http.put(f"{url}&comp=block&blockid={ids[0]}", data=b"x" * BLOCK) as r:
        assert r.status == 201
    return entries


# -- cases ------------------------------------------------------------------------------------

SUBJECT = _v(REPO, "subject")
SUBJECT_DATA = _data("subject", 3 * BLOCK + 11)
Drive = Callable[["Case", Client, Server, Site], Awaitable[None]]


@dataclass(frozen=True)
class Case:
    name: str
    point: CrashPoint | None  # None: the case kills the server itself
    drive: Drive | None  # None: a start-up job reaches the point
    hit: int = 1
    args: tuple[str, ...] = ()  # for the server that crashes
    subject: Ident | None = None  # the entry being saved when it crashed
    committed: bool = False  # ... and it was committed before the crash
    gone: tuple[Ident, ...] = ()  # golden entries the case removes
    repaired: bool = False  # BuildKit's index must no longer use VICTIM

    @property
    def crash_at(self) -> str:
        return f"{self.point}@{self.hit}"

    @property
    def data(self) -> bytes:
        """The bytes the interrupted request was saving under ``subject``."""
        assert self.subject is not None
        return SUBJECT_DATA if self.subject == SUBJECT else _data(self.subject[1], 100_000)


async def _crashes(request: Awaitable[object]) -> None:
    """``request`` must fail because the server died under it."""
    try:
        result = await request
    except aiohttp.ClientConnectionError:
        return
    raise AssertionError(f"the request completed ({result!r}): the server did not crash")


async def _v2_reserve(case: Case, c: Client, s: Server, site: Site) -> None:
    assert case.subject is not None
    repo, key, version = case.subject
    body = {"key": key, "version": version}
    await _crashes(wire.twirp(c.http, c.url, "CreateCacheEntry", body, c.token(repo)))


async def _v2_blocks(case: Case, c: Client, s: Server, site: Site) -> None:
    url = await c.reserve(SUBJECT)
    await _crashes(wire.put_blocks(c.http, url, SUBJECT_DATA, BLOCK))


async def _v2_put_blob(case: Case, c: Client, s: Server, site: Site) -> None:
    url = await c.reserve(SUBJECT)
    await _crashes(wire.put_blob(c.http, url, SUBJECT_DATA))


async def _v2_finalize_blocks(case: Case, c: Client, s: Server, site: Site) -> None:
    url = await c.reserve(SUBJECT)
    assert await wire.put_blocks(c.http, url, SUBJECT_DATA, BLOCK) == 201
    await _crashes(c.finalize(SUBJECT, len(SUBJECT_DATA)))


async def _v2_finalize_blob(case: Case, c: Client, s: Server, site: Site) -> None:
    assert case.subject is not None
    url = await c.reserve(case.subject)
    assert await wire.put_blob(c.http, url, case.data) == 201
    await _crashes(c.finalize(case.subject, len(case.data)))


async def _v1_chunks(case: Case, c: Client, s: Server, site: Site) -> None:
    cache_id = await c.v1_reserve(SUBJECT)
    await c.v1_patch(SUBJECT, cache_id, SUBJECT_DATA, 0)
    await _crashes(c.v1_patch(SUBJECT, cache_id, SUBJECT_DATA, BLOCK))


async def _v1_commit(case: Case, c: Client, s: Server, site: Site) -> None:
    cache_id = await c.v1_reserve(SUBJECT)
    for start in range(0, len(SUBJECT_DATA), BLOCK):
        await c.v1_patch(SUBJECT, cache_id, SUBJECT_DATA, start)
    await _crashes(c.v1_commit(SUBJECT, cache_id, len(SUBJECT_DATA)))


async def _delete(case: Case, c: Client, s: Server, site: Site) -> None:
    (repo, key, _), *_ = case.gone
    await _crashes(c.delete_key(repo, key))


async def _buildkit_generation(case: Case, c: Client, s: Server, site: Site) -> None:
    assert case.subject is not None
    data = index_bytes(f"{BK_INDEX_A}#1")  # merged with #2 before it would be visible
    url = await c.reserve(case.subject)
    assert await wire.put_blob(c.http, url, data) == 201
    await _crashes(c.finalize(case.subject, len(data)))


async def _kill_mid_body(case: Case, c: Client, s: Server, site: Site) -> None:
    """An external SIGKILL while a Put Blob body streams in (past S3's first 8 MiB part)."""
    url = urlsplit(await c.reserve(SUBJECT))
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        head = (
            f"PUT {url.path}?{url.query} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"x-ms-blob-type: BlockBlob\r\nContent-Length: {40 * MIB}\r\n\r\n"
        )
        writer.write(head.encode())
        chunk = _data("mid-body", MIB)
        for _ in range(24):  # of 40 MiB announced: the rest never comes
            writer.write(chunk)
            await writer.drain()
        deadline = time.monotonic() + 30
        while not await site.receiving():
            assert time.monotonic() < deadline, "the server never staged the body"
            await asyncio.sleep(0.05)
        s.kill()
        with contextlib.suppress(ConnectionResetError):  # no answer: the connection just ends
            assert await reader.read() == b""
    finally:
        writer.close()


_START_UP = None  # the point is reached by a start-up job (expiry or sweep)
_QUOTA_1, _QUOTA_3 = _v(QUOTA, "quota-1"), _v(QUOTA, "quota-3")
_IDLE_1 = _v(IDLE, "idle-1")
_NEW_GENERATION = _bk(f"{BK_INDEX_A}#3")

CASES: list[Case] = [
    # v2 uploads: reserve, blocks or Put Blob, block list, finalize.
    Case("v2-reserve", "reserve.after_commit", _v2_reserve, subject=SUBJECT),
    Case("v2-block-written", "stage.after_write", _v2_blocks, hit=2, subject=SUBJECT),
    Case("v2-blob-recorded", "stage.after_record", _v2_put_blob, subject=SUBJECT),
    Case("v2-block-list", "assemble.after_store", _v2_blocks, subject=SUBJECT),
    Case("v2-put-blob", "assemble.after_mark", _v2_put_blob, subject=SUBJECT),
    Case("v2-finalize-published", "finalize.after_publish", _v2_finalize_blocks, subject=SUBJECT),
    Case("v2-finalize-committed", "finalize.after_commit", _v2_finalize_blob, subject=SUBJECT, committed=True),
    # v1 uploads: chunks, commit.
    Case("v1-chunk-recorded", "stage.after_record", _v1_chunks, hit=2, subject=SUBJECT),
    Case("v1-commit-assembled", "v1.commit.after_assemble", _v1_commit, subject=SUBJECT),
    Case("v1-commit-transaction", "commit.in_transaction", _v1_commit, subject=SUBJECT),
    # Expiry of the abandoned upload at start-up.
    Case("expiry", "expire.after_index_delete", _START_UP, args=("--reservation-timeout", "1s")),
    # Eviction and deletion, on both sides of the blob deletion.
    Case("quota-sweep-index", "evict.after_index_delete", _START_UP, args=("--repo-overrides", f"{QUOTA}=150000"), gone=(_QUOTA_1,)),
    Case("quota-commit-blobs", "evict.after_blob_delete", _v2_finalize_blob, args=("--repo-overrides", f"{QUOTA}=250000"), subject=_QUOTA_3, committed=True, gone=(_QUOTA_1,)),
    Case("idle-sweep-index", "evict.after_index_delete", _START_UP, args=("--repo-overrides", f"{IDLE}=10GiB:1s"), gone=(_IDLE_1,)),
    Case("idle-sweep-blobs", "evict.after_blob_delete", _START_UP, args=("--repo-overrides", f"{IDLE}=10GiB:1s"), gone=(_IDLE_1,)),
    Case("delete-index", "evict.after_index_delete", _delete, gone=(_v(REPO, "delete-me"),)),
    Case("delete-blobs", "evict.after_blob_delete", _delete, gone=(VICTIM_ENTRY,), repaired=True),
    # Reconciliation at start-up: the orphan blob, the lost entry, the orphan upload.
    Case("reconcile-blob", "reconcile.after_blob_delete", _START_UP, args=("--orphan-grace", "0s")),
    Case("reconcile-missing", "reconcile.after_missing_removed", _START_UP, args=("--orphan-grace", "0s")),
    Case("reconcile-upload", "reconcile.after_upload_discard", _START_UP, args=("--orphan-grace", "0s")),
    # BuildKit index maintenance: merge at finalize, repair after a blob's deletion.
    Case("buildkit-merge", "buildkit.merge.after_rewrite", _buildkit_generation, subject=_NEW_GENERATION),
    Case("buildkit-repair-published", "buildkit.gc.after_publish", _delete, gone=(VICTIM_ENTRY,), repaired=True),
    Case("buildkit-repair-replaced", "buildkit.gc.after_replace", _delete, gone=(VICTIM_ENTRY,), repaired=True),
    # No crash point: SIGKILL from outside while a body streams.
    Case("sigkill-mid-body", None, _kill_mid_body, subject=SUBJECT),
]  # fmt: skip


# -- running a case ---------------------------------------------------------------------------


class Lab:
    """The module's shared machinery: one launcher, the two kinds of site, their goldens."""

    def __init__(self, root: Path, launcher: Launcher, http: aiohttp.ClientSession) -> None:
        self.root = root
        self.launcher = launcher
        self.http = http
        self.sites: dict[str, FileSites | CloudSites] = {}
        self._goldens: dict[str, asyncio.Task[Golden]] = {}
        self.cases: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def start(self, site: Site, args: tuple[str, ...], crash_at: str | None = None) -> Server:
        name = f"{time.monotonic_ns()}"
        logs = site.data_dir.parent
        logs.mkdir(parents=True, exist_ok=True)
        argv = ["serve", "--port", "0", "--data-dir", str(site.data_dir)]
        argv += [*site.server_args(), "--log-format", "text", *args]
        env = server_env({ENV: crash_at} if crash_at else {})
        stdout, log = logs / f"{name}.out", logs / f"{name}.log"
        return Server(await self.launcher.spawn(argv, env, stdout, log), stdout, log)

    def golden(self, backend: str) -> asyncio.Task[Golden]:
        if backend not in self._goldens:
            self._goldens[backend] = asyncio.create_task(self._build_golden(backend))
        return self._goldens[backend]

    async def _build_golden(self, backend: str) -> Golden:
        site = await self.sites[backend].new("golden")
        server = await self.start(site, ())
        try:
            assert await server.listening(), server.logs()
            entries = await _populate(Client(self.http, server, site))
        finally:
            await server.stop()
        # Behind the server's back: one entry loses its bytes, strays appear in the store.
        (lost_blob,) = [r.blob for r in (await site.snapshot()).rows if r.key == LOST[1]]
        await site.delete_store_object(f"blobs/{lost_blob}")
        await site.put_store_object(ORPHAN_BLOB, b"orphan")
        await site.put_store_object(ORPHAN_UPLOAD, b"stray")
        return Golden(site, entries, settled_at=time.time() + 1.5)

    def schedule(self, backend: str, case: Case) -> None:
        self.cases[(backend, case.name)] = asyncio.create_task(self._run(backend, case))

    async def close(self) -> None:
        tasks = [*self.cases.values(), *self._goldens.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.launcher.close()
        for sites in self.sites.values():
            await sites.close()

    async def _run(self, backend: str, case: Case) -> None:
        golden = await self.golden(backend)
        async with self._slots:
            site = await self.sites[backend].clone(golden.site, case.name)
            await asyncio.sleep(golden.settled_at - time.time())
            await self._crash(site, case)
            await self._check_restart(site, case, golden)

    async def _crash(self, site: Site, case: Case) -> None:
        server = await self.start(site, case.args, case.crash_at if case.point else None)
        try:
            up = await server.listening()
            if case.drive is None:
                assert not up, f"the server started: no start-up job reached {case.point}"
            else:
                assert up, f"the server died at start-up:\n{server.logs()}"
                await case.drive(case, Client(self.http, server, site), server, site)
            code = await server.returncode()
        finally:
            server.kill()
        assert code == -signal.SIGKILL, (code, server.logs())
        if case.point is not None:
            assert f"crash point {case.point} (hit {case.hit})" in server.logs(), server.logs()

    async def _check_restart(self, site: Site, case: Case, golden: Golden) -> None:
        server = await self.start(site, RESTART_ARGS)
        try:
            assert await server.listening(), server.logs()
            client = Client(self.http, server, site)
            await _check_entries(client, case, golden)
            await _wait_clean(site, case)
            await _save_again(client, case)
            assert not _unexplained(await site.snapshot(), case)
        finally:
            await server.stop()


def _expected(case: Case, golden: Golden) -> dict[Ident, bytes]:
    entries = {i: d for i, d in golden.entries.items() if i not in case.gone}
    if case.committed:
        assert case.subject is not None
        entries[case.subject] = case.data
    return entries


def _repaired(golden: Golden) -> CacheConfig:
    """The newest build-a index without what needed VICTIM, as the server repairs it."""
    config, _ = gc(parse(golden.entries[_bk(f"{BK_INDEX_A}#2")]), lambda d: d != VICTIM)
    return config


async def _check_entries(client: Client, case: Case, golden: Golden) -> None:
    for ident, data in _expected(case, golden).items():
        body = await client.fetch(ident)
        if case.repaired and ident == _bk(f"{BK_INDEX_A}#2"):
            assert parse(body) == _repaired(golden), ident
        else:
            assert body == data, ident
    absent = {LOST, ABANDONED, *case.gone}
    if case.subject is not None and not case.committed:
        absent.add(case.subject)
    for ident in absent:
        await client.assert_absent(ident)


async def _wait_clean(site: Site, case: Case) -> None:
    """Expiry and reconciliation must remove every leftover of the crash."""
    deadline = time.monotonic() + LEFTOVERS_TIMEOUT_S
    while True:
        left = _unexplained((await site.snapshot()), case)
        if not left:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left after {LEFTOVERS_TIMEOUT_S} s: {left}")
        await asyncio.sleep(0.5)


def _unexplained(snapshot: Snapshot, case: Case) -> dict[str, object]:
    left = snapshot.leftovers()
    if case.point is None and "unfinished multipart uploads" in left:
        # A SIGKILL in the middle of a multipart upload leaves it to the bucket's lifecycle
        # rule (docs/deploying.md): the server cannot list them. They are never blobs.
        assert all("/uploads/" in k for k in snapshot.multipart), snapshot.multipart
        del left["unfinished multipart uploads"]
    return left


async def _save_again(client: Client, case: Case) -> None:
    """Every key the case lost can be saved again; a committed key stays immutable."""
    again = list(case.gone)
    if case.subject is not None and not case.committed:
        again.append(case.subject)
    for ident in again:
        if ident == _NEW_GENERATION:  # stored merged with the previous generation
            await client.save(ident, index_bytes(f"{BK_INDEX_A}#1"))
            assert parse(await client.fetch(ident)).records
            continue
        data = _data(f"again-{ident[1]}", 70_000)
        await client.save(ident, data)
        assert await client.fetch(ident) == data, ident
    if case.subject is not None and case.committed:
        repo, key, version = case.subject
        status, out = await wire.twirp(
            client.http,
            client.url,
            "CreateCacheEntry",
            {"key": key, "version": version},
            client.token(repo),
        )
        assert status == 409 and out["code"] == "already_exists", (status, out)


# -- fixtures and tests -----------------------------------------------------------------------

BACKENDS = ("sqlite-file", "postgres-s3")


def _selected(request: pytest.FixtureRequest) -> list[tuple[str, Case]]:
    """The (backend, case) pairs of this module's tests that will run (after ``-k``)."""
    pairs = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if getattr(item, "module", None) is request.module and "case" in params:
            pairs.append((params["backend"], params["case"]))
    return pairs


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def lab(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, moto: Service
) -> AsyncIterator[Lab]:
    root = tmp_path_factory.mktemp("crash")
    bucket = f"crash-{time.monotonic_ns()}"
    create_bucket(moto, bucket)
    admin = await psycopg.AsyncConnection.connect(base_url(), autocommit=True)
    launcher = await Launcher.start()
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        lab = Lab(root, launcher, http)
        lab.sites["sqlite-file"] = FileSites(root / "file")
        lab.sites["postgres-s3"] = CloudSites(root / "cloud", admin, base_url(), moto, bucket)
        try:
            for backend, case in _selected(request):
                lab.schedule(backend, case)
            yield lab
        finally:
            await lab.close()
            await admin.close()


def test_every_crash_point_has_a_case() -> None:
    assert {c.point for c in CASES if c.point is not None} == set(POINTS)
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
@pytest.mark.parametrize("backend", BACKENDS)
async def test_crash_point(lab: Lab, backend: str, case: Case) -> None:
    await lab.cases[(backend, case.name)]


@pytest.mark.asyncio(loop_scope="module")
async def test_unknown_crash_point_stops_the_server(lab: Lab) -> None:
    site = await lab.sites["sqlite-file"].new("unknown-point")
    server = await lab.start(site, (), crash_at="finalize.after_everything")
    assert not await server.listening()
    assert await server.returncode() == 2
    assert f"{ENV}='finalize.after_everything': expected one of" in server.logs()


def test_operating_guide_lists_every_crash_point() -> None:
    guide = (Path(__file__).resolve().parents[2] / "docs" / "operating.md").read_text()
    section = guide.split("## What a crash leaves behind", 1)[1].split("\n## ", 1)[0]
    assert f"**{len(POINTS)} crash points**" in section
    assert f"runs {len(CASES)} scenarios" in section
    assert f"makes {len(CASES) * len(BACKENDS)} cases" in section
    for point in POINTS:
        assert f"| `{point}` |" in section, point
