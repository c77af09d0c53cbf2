"""Soak: many concurrent clients against one real ``ghacache serve`` for a fixed time.

    .venv/bin/python bench/soak.py                         # 32 clients for 600 s (not in CI)
    .venv/bin/python bench/soak.py --clients 64 --duration 1800 --out soak.json
    .venv/bin/python bench/soak.py --mix save_v2=10,restore_recent=40 --rate-limit 600
    .venv/bin/python bench/soak.py --quick --summary out.json   # ~12 s smoke check (CI)
    .venv/bin/python bench/run.py --only soak              # the same 600 s run, via run.py

The server runs on loopback (``--fsync false`` unless ``--fsync``) with a repository quota small
enough that quota eviction runs after nearly every commit (``--quota-mib``, default 256), a
60 s idle expiry (``--idle-expiry``), a 30 s one for a second repository whose entries are
never read, and a 10 s eviction timer, so entries are evicted while others read them. Each
client (an asyncio task with its own v2 and v1 ``CacheClient``) loops over a weighted mix
(``--mix NAME=WEIGHT,...``; default weights in brackets):

  save_v2 [24], save_v1 [8]
                  a new entry of 4 KiB to 8 MiB (log-uniform; above 2 MiB in 1 MiB blocks,
                  two in flight) under a key naming the content's size and sha256
  restore_recent [24]   one of the 16 newest saved keys, by v1 or v2 (either wrote it)
  restore_old [8]       one of the oldest keys still remembered: most were evicted (a miss)
  restore_prefix [8]    a primary key that matches nothing, then restore key ``soak-cNN-``
  miss [10]       must miss: a never-saved key, a saved key under another version, a saved
                  key through the second repository's token, or the second repository's key
  buildkit [4]    ``ghacache.buildkit`` export of a 3-layer cache (a base layer, then 2 of
                  16 others: 17 blobs in all, so each scope's cache stays bounded as a real
                  project's does) into one of 4 scopes, then an import of that scope
  delete [4]      management API delete of a recent key, then a lookup that must miss
  race [4]        one new key saved three times at once (v2, v1, v2): exactly one may win
  save_other [2]  a 4-64 KiB entry in the second repository (left for idle expiry)

Every outcome is classified. Expected: ``saved``, ``hit`` (every restored byte checked against
the size and sha256 its key names), ``miss``, ``one-won`` (one save of a race won, the others
got "already exists"), ``deleted``/``gone`` (a delete found the key, or it was evicted
already), ``vanished`` (evicted between lookup and read), ``rate-limited`` (429, only with
``--rate-limit``), ``no-key`` (nothing saved yet to restore or delete, at the very start).
Anything else is unexpected: an HTTP error, a transport failure or timeout (clients make ONE
attempt, so no retry hides a server error), corrupt bytes, a hit that must have been a miss,
a race with other than one winner, an operation still running 60 s after the end. The
server's own counters (``/metrics``) must show no 5xx, its log no error line, and it must
exit 0 on SIGTERM.

Every ``--sample-every`` seconds (default 5) the server's RSS, open file descriptors and
threads, the data directory's size and, from ``/metrics``, its entries, committed bytes and
evictions are sampled. The report gives RSS at the start, after the warm-up (the first 20%)
and at the end, and the slope of a least-squares line through the samples after the warm-up
in MB per minute. The exit status is 1 if anything unexpected happened. ``--out`` writes every
figure and sample as JSON (default ``bench/results/soak-<time>.json``); ``--summary`` the
headline rows for ``bench/run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import summary  # bench/summary.py: the contract with bench/run.py
from prometheus_client.parser import text_string_to_metric_families

from ghacache.buildkit.backend import BuildkitCache
from ghacache.buildkit.layout import blob_path, write_layout
from ghacache.cacheconfig.model import (
    CacheConfig,
    CacheConfigError,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    LayerAnnotations,
)
from ghacache.client import CacheClient, ClientConfig, RetrySettings
from ghacache.client.management import ManagementClient
from ghacache.errors import (
    DeadlineExceeded,
    RemoteEntryExists,
    RemoteEntryNotFound,
    RemoteRateLimited,
    ServerError,
    TransportError,
)
from ghacache.protocol.scopes import Permission, Scope
from ghacache.server.auth import load_or_create_secret, mint_admin_token, mint_token

ROOT = Path(__file__).resolve().parent
KiB, MiB = 1024, 1024 * 1024
VERSION = "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"
OTHER_VERSION = "0" * 64
REPO, FOREIGN_REPO = "soak/app", "soak/other"
MAIN = "refs/heads/main"
BLOCK_BYTES = 1 * MiB  # small blocks so that entries above SINGLE_PUT_BYTES are multi-block
SINGLE_PUT_BYTES = 2 * MiB
RECENT = 16  # restore_recent picks among this many newest keys
BK_LAYERS = 16  # distinct BuildKit layers (besides the base one) all exports draw from
GRACE_S = 60.0  # an operation still running this long after the end is a hang
SLOPE_LIMIT_MB_MIN = 1.0  # "no growth": what a 10-minute run can tell from noise
SLOPE_MIN_RUN_S = 300.0  # shorter runs report the slope without judging it
DEFAULT_MIX = {
    "save_v2": 24, "save_v1": 8, "restore_recent": 24, "restore_old": 8, "restore_prefix": 8,
    "miss": 10, "buildkit": 4, "delete": 4, "race": 4, "save_other": 2,
}  # fmt: skip
EXPECTED = frozenset(
    {"saved", "hit", "miss", "one-won", "deleted", "gone", "vanished", "rate-limited", "no-key"}
)


@dataclass(frozen=True)
class Settings:
    clients: int = 32
    duration_s: float = 600.0
    quota_bytes: int = 256 * MiB
    idle_expiry: str = "60s"
    # FOREIGN_REPO's: its entries are never read, so idle expiry is what removes them.
    other_expiry: str = "30s"
    eviction_interval: str = "10s"
    min_bytes: int = 4 * KiB
    max_bytes: int = 8 * MiB
    sample_every_s: float = 5.0
    warmup_fraction: float = 0.2
    request_timeout_s: float = 120.0
    rate_limit: int = 0
    fsync: bool = False
    seed: int = 1
    mix: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_MIX))


QUICK = Settings(clients=8, duration_s=8.0, quota_bytes=12 * MiB, idle_expiry="5s", other_expiry="3s",
                 eviction_interval="2s", max_bytes=3 * MiB, sample_every_s=1.0,
                 request_timeout_s=30.0)  # fmt: skip


class Unexpected(Exception):
    """An answer that is wrong although no request failed (corrupt bytes, a phantom hit...)."""

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome


def classify(exc: BaseException) -> tuple[str, bool]:
    """(outcome, expected) of an exception that escaped an operation."""
    if isinstance(exc, Unexpected):
        return exc.outcome, False
    if isinstance(exc, RemoteEntryNotFound):
        return "vanished", True  # evicted or deleted between the lookup and the read
    if isinstance(exc, RemoteRateLimited):
        return "rate-limited", True
    if isinstance(exc, RemoteEntryExists):
        return "exists", False  # only races share keys; they handle it themselves
    if isinstance(exc, DeadlineExceeded | TimeoutError):
        return "timeout", False
    if isinstance(exc, TransportError):
        return "transport", False
    if isinstance(exc, ServerError):
        return f"http-{exc.status}", False
    return type(exc).__name__, False


# -- bookkeeping ---------------------------------------------------------------------------


@dataclass
class Stats:
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    unexpected: list[str] = field(default_factory=list)  # first messages, capped
    bytes_up: int = 0
    bytes_down: int = 0

    def record(self, kind: str, outcome: str, seconds: float, message: str | None) -> None:
        self.outcomes.setdefault(kind, Counter())[outcome] += 1
        self.latencies.setdefault(kind, []).append(seconds)
        if message is not None and len(self.unexpected) < 20:
            self.unexpected.append(message)

    def unexpected_count(self) -> int:
        return sum(n for c in self.outcomes.values() for o, n in c.items() if o not in EXPECTED)


class Payloads:
    """Unique payloads cut from one random pool, named by their size and sha256."""

    HEADER = 40

    def __init__(self, pool_bytes: int, rng: random.Random) -> None:
        self.pool = rng.randbytes(pool_bytes)

    async def make(self, prefix: str, size: int, rng: random.Random) -> tuple[str, bytes]:
        tag = f"{prefix}|{uuid.uuid4().hex}".encode().ljust(self.HEADER, b".")[: self.HEADER]
        start = rng.randrange(len(self.pool) - size + 1)
        data = (tag + self.pool[start : start + size])[:size]
        return f"{prefix}-{size}-{(await sha256_hex(data))[:32]}", data


async def sha256_hex(data: bytes) -> str:
    if len(data) < MiB:
        return hashlib.sha256(data).hexdigest()
    return await asyncio.to_thread(lambda: hashlib.sha256(data).hexdigest())


async def verify(key: str, data: bytes) -> None:
    """Raise ``Unexpected`` unless ``data`` has the size and sha256 ``key`` names."""
    size, digest = key.rsplit("-", 2)[1:]
    if len(data) != int(size):
        raise Unexpected("corrupt", f"{key}: restored {len(data)} bytes, saved {size}")
    if (await sha256_hex(data))[:32] != digest:
        raise Unexpected("corrupt", f"{key}: restored bytes differ from the saved ones")


# -- the clients ---------------------------------------------------------------------------


@dataclass
class Shared:
    settings: Settings
    stats: Stats
    payloads: Payloads
    work: Path
    keys: deque[str]  # committed keys, oldest first
    other_keys: deque[str]  # FOREIGN_REPO's
    admin: ManagementClient
    foreign: CacheClient  # a token of another repository
    base_layer: bytes  # the BuildKit layer every client exports
    layer_pool: list[bytes]  # the others: few, so each scope's cache stays bounded


class Worker:
    """One client: loops over the mix until the deadline."""

    def __init__(self, n: int, shared: Shared, v2: CacheClient, v1: CacheClient) -> None:
        self.n, self.sh, self.v2, self.v1 = n, shared, v2, v1
        self.rng = random.Random(shared.settings.seed * 1000 + n)
        self.seq = 0
        self.bk = BuildkitCache(v2, parallel=4)
        self.ops: dict[str, Callable[[], Awaitable[str]]] = {
            "save_v2": lambda: self.save(self.v2, "v2"),
            "save_v1": lambda: self.save(self.v1, "v1"),
            "restore_recent": lambda: self.restore(self.pick(recent=True)),
            "restore_old": lambda: self.restore(self.pick(recent=False)),
            "restore_prefix": self.restore_prefix,
            "miss": self.miss,
            "buildkit": self.buildkit,
            "delete": self.delete,
            "race": self.race,
            "save_other": self.save_other,
        }

    async def run(self, deadline: float) -> None:
        kinds = [k for k, w in self.sh.settings.mix.items() if w > 0]
        weights = [self.sh.settings.mix[k] for k in kinds]
        while time.monotonic() < deadline:
            kind = self.rng.choices(kinds, weights)[0]
            started = time.perf_counter()
            message = None
            try:
                outcome = await self.ops[kind]()
            except Exception as exc:
                outcome, expected = classify(exc)
                if not expected:
                    message = f"{kind}: {outcome}: {type(exc).__name__}: {exc}"
            self.sh.stats.record(kind, outcome, time.perf_counter() - started, message)

    def size(self) -> int:
        s = self.sh.settings
        return int(math.exp(self.rng.uniform(math.log(s.min_bytes), math.log(s.max_bytes))))

    def client(self) -> CacheClient:
        return self.v2 if self.rng.random() < 0.5 else self.v1

    def pick(self, *, recent: bool) -> str | None:
        keys = self.sh.keys
        if not keys:
            return None
        if recent:
            return keys[-1 - self.rng.randrange(min(RECENT, len(keys)))]
        return keys[self.rng.randrange(max(1, len(keys) // 4))]

    async def save(self, client: CacheClient, proto: str) -> str:
        self.seq += 1
        key, data = await self.sh.payloads.make(
            f"soak-c{self.n:02d}-{proto}-{self.seq}", self.size(), self.rng
        )
        await client.save(key, VERSION, data)
        self.sh.stats.bytes_up += len(data)
        self.sh.keys.append(key)
        return "saved"

    async def read(self, client: CacheClient, keys: list[str]) -> tuple[str, bytes] | None:
        entry = await client.lookup(keys, VERSION)
        if entry is None:
            return None
        async with await client.open(entry) as reader:
            data = await reader.read_all()
        self.sh.stats.bytes_down += len(data)
        await verify(entry.key, data)
        return entry.key, data

    async def restore(self, key: str | None) -> str:
        if key is None:
            return "no-key"
        found = await self.read(self.client(), [key])
        if found is not None and found[0] != key:
            raise Unexpected("wrong-key", f"lookup of {key} matched {found[0]}")
        return "miss" if found is None else "hit"

    async def restore_prefix(self) -> str:
        prefix = f"soak-c{self.rng.randrange(self.sh.settings.clients):02d}-"
        found = await self.read(self.client(), [f"{prefix}none-{uuid.uuid4().hex}", prefix])
        if found is not None and not found[0].startswith(prefix):
            raise Unexpected("wrong-key", f"restore key {prefix} matched {found[0]}")
        return "miss" if found is None else "hit"

    async def miss(self) -> str:
        recent = self.pick(recent=True)
        cases = [(f"soak-never-{uuid.uuid4().hex}", self.client(), VERSION, "never saved")]
        if recent is not None:
            cases.append((recent, self.client(), OTHER_VERSION, "another version"))
            cases.append((recent, self.sh.foreign, VERSION, f"{FOREIGN_REPO}'s token"))
        if self.sh.other_keys:
            cases.append((self.sh.other_keys[-1], self.client(), VERSION, f"{FOREIGN_REPO}'s key"))
        key, client, version, why = self.rng.choice(cases)
        entry = await client.lookup([key], version)
        if entry is not None:
            raise Unexpected("phantom-hit", f"{key} ({why}) matched {entry.key}")
        return "miss"

    async def delete(self) -> str:
        key = self.pick(recent=True)
        if key is None:
            return "no-key"
        try:
            # An entry evicted between the server's find and delete is an empty 200.
            outcome = "deleted" if await self.sh.admin.delete_by_key(REPO, key) else "gone"
        except ServerError as exc:
            if exc.status != 404:
                raise
            outcome = "gone"  # evicted already (or deleted by another client)
        entry = await self.client().lookup([key], VERSION)
        if entry is not None:
            raise Unexpected("visible-after-delete", f"{key} still matched {entry.key}")
        return outcome

    async def race(self) -> str:
        self.seq += 1
        size = min(self.size(), SINGLE_PUT_BYTES * 2)
        key, data = await self.sh.payloads.make(
            f"soak-race-c{self.n:02d}-{self.seq}", size, self.rng
        )
        results = await asyncio.gather(
            *(c.save(key, VERSION, data) for c in (self.v2, self.v1, self.v2)),
            return_exceptions=True,
        )
        wins = sum(not isinstance(r, BaseException) for r in results)
        lost = sum(isinstance(r, RemoteEntryExists) for r in results)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, RemoteEntryExists):
                raise r
        if wins != 1:
            raise Unexpected("race-winners", f"{key}: {wins} saves won, {lost} 'already exists'")
        self.sh.stats.bytes_up += len(data)
        self.sh.keys.append(key)
        return "one-won"

    async def save_other(self) -> str:
        self.seq += 1
        size = self.rng.randrange(4 * KiB, 64 * KiB)
        prefix = f"soak-other-c{self.n:02d}-{self.seq}"
        key, data = await self.sh.payloads.make(prefix, size, self.rng)
        await self.sh.foreign.save(key, VERSION, data)
        self.sh.stats.bytes_up += len(data)
        self.sh.other_keys.append(key)
        return "saved"

    async def buildkit(self) -> str:
        scope = f"soak{self.n % 4}"
        with tempfile.TemporaryDirectory(dir=self.sh.work) as tmp:
            src = Path(tmp) / "src"
            layers = [self.sh.base_layer, *self.rng.sample(self.sh.layer_pool, 2)]
            make_layout(src, layers)
            await self.bk.export(src, scope=scope)
            self.sh.stats.bytes_up += sum(map(len, layers))
            dst = Path(tmp) / "dst"
            try:
                report = await self.bk.import_(dst, scopes=[scope])
            except CacheConfigError as exc:
                if "no BuildKit cache found" in str(exc):
                    return "miss"  # the index was evicted right after the export
                raise
            # import_ checked every downloaded blob against its digest.
            got = sum(blob_path(dst, d).stat().st_size for d in report.downloaded)
            self.sh.stats.bytes_down += got
        return "hit"


def make_layout(root: Path, layers: list[bytes]) -> None:
    """A BuildKit local cache: a chain of ``layers``, one record each."""
    cache_layers, records = [], []
    chain = ""  # a record's digest depends on its inputs' records, as BuildKit's do
    for i, data in enumerate(layers):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = blob_path(root, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        ann = LayerAnnotations(
            media_type="application/vnd.oci.image.layer.v1.tar+gzip",
            diff_id="sha256:" + hashlib.sha256(b"diff" + data).hexdigest(),
            size=len(data),
            created_at="2026-01-01T00:00:00Z",
        )
        cache_layers.append(CacheLayer(blob=digest, parent=i - 1, annotations=ann))
        chain = hashlib.sha256(f"record{chain}".encode() + data).hexdigest()
        records.append(
            CacheRecord(
                digest="sha256:" + chain,
                results=(CacheResult(layer=i, created_at="2026-01-01T00:00:00Z"),),
                inputs=((CacheInput(link=i - 1),),) if i else (),
            )
        )
    write_layout(root, CacheConfig(layers=tuple(cache_layers), records=tuple(records)))


# -- the server and its samples ------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    url: str
    proc: subprocess.Popen[str]
    data_dir: Path
    log: Path


@contextmanager
def serve(s: Settings, work: Path) -> Iterator[Server]:
    data_dir, log = work / "data", work / "server.log"
    cmd = [sys.executable, "-m", "ghacache", "serve", "--port", "0", "--data-dir", str(data_dir)]
    cmd += ["--repo-quota-bytes", str(s.quota_bytes), "--idle-expiry", s.idle_expiry]
    cmd += ["--repo-overrides", f"{FOREIGN_REPO}=1GiB:{s.other_expiry}"]
    cmd += ["--eviction-interval", s.eviction_interval, "--rate-limit", str(s.rate_limit)]
    cmd += ["--fsync", str(s.fsync).lower(), "--log-level", "warning", "--log-format", "json"]
    with open(log, "w") as err:  # a file: an undrained pipe would block the server
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("ghacache listening on "):
            raise RuntimeError(f"ghacache did not start: {line!r}; {log.read_text()[-2000:]}")
        yield Server(line.removeprefix("ghacache listening on "), proc, data_dir, log)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def dir_bytes(root: Path) -> int:
    total = 0
    for path, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # removed while we walked
                total += os.stat(os.path.join(path, name)).st_size
    return total


async def scrape(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    """The /metrics figures the report uses, flattened to ``name{label=value}`` keys."""
    async with session.get(url + "/metrics") as r:
        r.raise_for_status()
        text = await r.text()
    flat: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith(("ghacache_requests_total", "ghacache_evictions_total",
                                       "ghacache_repository_")):  # fmt: skip
                labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
                flat[f"{sample.name}{{{labels}}}"] = sample.value
    return flat


async def sampler(server: Server, session: aiohttp.ClientSession, t0: float, every: float,
                  samples: list[dict[str, Any]], stats: Stats, stop: asyncio.Event) -> None:  # fmt: skip
    proc = psutil.Process(server.proc.pid)
    while not stop.is_set():
        try:
            samples.append(await sample(server, proc, session, t0))
        except (aiohttp.ClientError, OSError, psutil.Error) as exc:  # the server died or hangs
            stats.record("sampler", "unreachable", 0.0, f"sampling the server: {exc!r}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def sample(server: Server, proc: psutil.Process, session: aiohttp.ClientSession,
                 t0: float) -> dict[str, Any]:  # fmt: skip
    metrics = await scrape(session, server.url)
    cpu = proc.cpu_times()
    return {
        "t_s": round(time.monotonic() - t0, 2),
        "rss_mb": proc.memory_info().rss / 1e6,
        "fds": proc.num_fds(),
        "threads": proc.num_threads(),
        "cpu_s": cpu.user + cpu.system,
        "load1": os.getloadavg()[0],  # the machine is shared: how busy it was
        "data_dir_mb": await asyncio.to_thread(dir_bytes, server.data_dir) / 1e6,
        "entries": metrics.get(f"ghacache_repository_entries{{repository={REPO}}}", 0.0),
        "committed_mb": metrics.get(f"ghacache_repository_bytes{{repository={REPO}}}", 0.0) / 1e6,
        "evictions": {k.split("reason=")[1].rstrip("}"): v for k, v in metrics.items()
                      if k.startswith("ghacache_evictions_total")},
    }  # fmt: skip


# -- the run -------------------------------------------------------------------------------


def client_config(url: str, token: str, proto: str, s: Settings) -> ClientConfig:
    retry = RetrySettings(timeout_s=s.request_timeout_s, max_attempts=1)  # no retry hides errors
    common: dict[str, Any] = dict(block_bytes=BLOCK_BYTES, single_put_bytes=SINGLE_PUT_BYTES,
                                  concurrency=2, retry=retry)  # fmt: skip
    if proto == "v2":
        return ClientConfig(token=token, url_v2=url + "/", **common)
    return ClientConfig(token=token, url=url + "/", protocol="v1", **common)


async def drive(s: Settings, server: Server, work: Path) -> dict[str, Any]:
    secret = load_or_create_secret(server.data_dir / "secret")
    now, ttl = time.time(), s.duration_s + 3600
    main_rw = [Scope(ref=MAIN, permission=Permission.READ | Permission.WRITE)]
    token = mint_token(secret, repository=REPO, scopes=main_rw, ttl_s=ttl, now=now)
    foreign = mint_token(secret, repository=FOREIGN_REPO, scopes=main_rw, ttl_s=ttl, now=now)
    rng = random.Random(s.seed)
    stats = Stats()
    samples: list[dict[str, Any]] = []
    stop = asyncio.Event()
    async with (
        aiohttp.ClientSession() as session,
        ManagementClient(server.url, mint_admin_token(secret, ttl_s=ttl, now=now)) as admin,
        CacheClient(client_config(server.url, foreign, "v2", s)) as foreign_client,
    ):
        shared = Shared(s, stats, Payloads(s.max_bytes + 4 * MiB, rng), work, deque(maxlen=4096),
                        deque(maxlen=256), admin, foreign_client, rng.randbytes(48 * KiB),
                        [rng.randbytes((32, 64)[i % 2] * KiB) for i in range(BK_LAYERS)])  # fmt: skip
        clients = [CacheClient(client_config(server.url, token, p, s))
                   for _ in range(s.clients) for p in ("v2", "v1")]  # fmt: skip
        workers = [Worker(n, shared, clients[2 * n], clients[2 * n + 1]) for n in range(s.clients)]
        t0 = time.monotonic()
        watch = asyncio.create_task(
            sampler(server, session, t0, s.sample_every_s, samples, stats, stop)
        )
        tasks = [asyncio.create_task(w.run(t0 + s.duration_s)) for w in workers]
        done, hung = await asyncio.wait(tasks, timeout=s.duration_s + GRACE_S)
        load_s = time.monotonic() - t0
        for task in done:  # a bug in the soak itself must not pass for a clean run
            if (exc := task.exception()) is not None:
                stats.record("all", "worker-crash", 0.0, f"a client died: {exc!r}")
        for task in hung:
            task.cancel()
            stats.record("all", "hung", GRACE_S, "an operation still ran 60 s after the end")
        await asyncio.gather(*hung, return_exceptions=True)
        stop.set()
        await watch
        try:  # the server still answers after the load
            final = await scrape(session, server.url)
        except (aiohttp.ClientError, OSError) as exc:
            final = {}
            stats.record("sampler", "unreachable", 0.0, f"/metrics after the load: {exc!r}")
        for c in clients:
            await c.close()
    statuses: Counter[str] = Counter()
    for k, v in final.items():
        if k.startswith("ghacache_requests_total"):
            statuses[k.split("status=")[1].rstrip("}")] += int(v)
    evictions = {k.split("reason=")[1].rstrip("}"): int(v) for k, v in final.items()
                 if k.startswith("ghacache_evictions_total")}  # fmt: skip
    return {"stats": stats, "samples": samples, "load_s": load_s, "statuses": statuses,
            "evictions": evictions}  # fmt: skip


def server_log(path: Path) -> dict[str, Any]:
    levels: Counter[str] = Counter()
    first: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
            level, message = str(rec.get("level", "?")), str(rec.get("message", line))
        except ValueError:
            level, message = "text", line  # a traceback or print outside the logger
        levels[level] += 1
        if level not in ("info", "debug") and len(first) < 10:
            first.append(f"{level}: {message[:300]}")
    return {"levels": dict(levels), "first": first}


# -- reporting -----------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def memory(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    after = [x for x in samples if x["t_s"] >= warmup_s] or samples[-1:]
    slope = 0.0
    if len(after) >= 3:
        fit = statistics.linear_regression(
            [x["t_s"] / 60 for x in after], [x["rss_mb"] for x in after]
        )
        slope = fit.slope
    return {
        "rss_start_mb": samples[0]["rss_mb"], "rss_warm_mb": after[0]["rss_mb"],
        "rss_end_mb": samples[-1]["rss_mb"], "rss_peak_mb": max(x["rss_mb"] for x in samples),
        "rss_slope_mb_per_min": slope, "slope_samples": len(after), "warmup_s": warmup_s,
        "fds_start": samples[0]["fds"], "fds_end": samples[-1]["fds"],
        "fds_peak": max(x["fds"] for x in samples),
        "threads_start": samples[0]["threads"], "threads_end": samples[-1]["threads"],
        "data_dir_mb_end": samples[-1]["data_dir_mb"],
        "data_dir_mb_peak": max(x["data_dir_mb"] for x in samples),
        "entries_end": samples[-1]["entries"], "committed_mb_end": samples[-1]["committed_mb"],
    }  # fmt: skip


def report(
    s: Settings, run: dict[str, Any], mem: dict[str, Any], log: dict[str, Any], bad: dict[str, int]
) -> str:
    stats: Stats = run["stats"]
    secs = run["load_s"]
    total = sum(sum(c.values()) for c in stats.outcomes.values())
    lines = [
        f"## Soak: {s.clients} clients, {s.duration_s:g} s, quota {s.quota_bytes / MiB:g} MiB, "
        f"idle expiry {s.idle_expiry}, {os.cpu_count()} cores\n",
        "| operation | ops | ops/s | p50 | p99 | outcomes |",
        "|---|---|---|---|---|---|",
    ]
    everything: list[float] = []
    for kind in [*s.mix, "all", "sampler"]:
        if kind not in stats.outcomes:
            continue
        lat = stats.latencies[kind]
        everything += lat
        counts = stats.outcomes[kind]
        n = sum(counts.values())
        outs = ", ".join(f"{o} {c:,}" if o in EXPECTED else f"**{o} {c:,}**"
                         for o, c in counts.most_common())  # fmt: skip
        lines.append(f"| {kind} | {n:,} | {n / secs:.1f} | {pct(lat, 0.5) * 1000:.0f} ms | "
                     f"{pct(lat, 0.99) * 1000:.0f} ms | {outs} |")  # fmt: skip
    lines.append(f"| **total** | {total:,} | {total / secs:.1f} | "
                 f"{pct(everything, 0.5) * 1000:.0f} ms | {pct(everything, 0.99) * 1000:.0f} ms | |")  # fmt: skip
    statuses = run["statuses"]
    lines += [
        "",
        f"Transfer: up {stats.bytes_up / secs / 1e6:.1f} MB/s ({stats.bytes_up / 1e9:.2f} GB), "
        f"down {stats.bytes_down / secs / 1e6:.1f} MB/s ({stats.bytes_down / 1e9:.2f} GB), "
        "bytes of verified saves and restores.",
        f"Server responses by status: {', '.join(f'{k} {v:,}' for k, v in sorted(statuses.items()))}.",
        f"Server log lines by level: {log['levels'] or 'none'}.",
        f"Evictions: {', '.join(f'{k} {v:,}' for k, v in run['evictions'].items())} (the "
        f"server's count; {stats.outcomes.get('delete', Counter())['deleted']:,} deletes "
        "found their key).",
        "",
        "| server | start | after warm-up | end | peak |",
        "|---|---|---|---|---|",
        f"| RSS (MB) | {mem['rss_start_mb']:.1f} | {mem['rss_warm_mb']:.1f} | "
        f"{mem['rss_end_mb']:.1f} | {mem['rss_peak_mb']:.1f} |",
        f"| open fds | {mem['fds_start']} | | {mem['fds_end']} | {mem['fds_peak']} |",
        f"| threads | {mem['threads_start']} | | {mem['threads_end']} | |",
        f"| data dir (MB) | | | {mem['data_dir_mb_end']:.1f} | {mem['data_dir_mb_peak']:.1f} |",
        "",
        f"RSS slope after the warm-up ({mem['warmup_s']:.0f} s, {mem['slope_samples']} samples): "
        f"{mem['rss_slope_mb_per_min']:+.2f} MB/min.",
        "",
        "| t (s) | RSS (MB) | fds | threads | data dir (MB) | entries | committed (MB) | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    samples = run["samples"]
    step = max(1, len(samples) // 12)
    for x in [*samples[::step], *([samples[-1]] if (len(samples) - 1) % step else [])]:
        lines.append(f"| {x['t_s']:.0f} | {x['rss_mb']:.1f} | {x['fds']} | {x['threads']} | "
                     f"{x['data_dir_mb']:.1f} | {x['entries']:.0f} | {x['committed_mb']:.1f} | "
                     f"{x['load1']:.1f} |")  # fmt: skip
    parts = ", ".join(f"{v} {k}" for k, v in bad.items())
    lines += ["", f"Unexpected: {sum(bad.values())} ({parts})."]
    lines += [f"  - {m}" for m in stats.unexpected[:10]]
    lines += [f"  - server log: {m}" for m in log["first"]]
    return "\n".join(lines)


def rows(run: dict[str, Any], mem: dict[str, Any], bad: int) -> list[summary.Row]:
    stats: Stats = run["stats"]
    secs = run["load_s"]
    total = sum(sum(c.values()) for c in stats.outcomes.values())
    slope = mem["rss_slope_mb_per_min"]
    judged = secs >= SLOPE_MIN_RUN_S  # a short run's slope is all warm-up
    return [
        summary.Row(metric="operations/s, mixed", value=total / secs, unit="op/s"),
        summary.Row(metric="upload, verified", value=stats.bytes_up / secs / 1e6, unit="MB/s"),
        summary.Row(metric="unexpected errors", value=bad, unit="", target="0", met=bad == 0),
        summary.Row(metric="server RSS at the end", value=mem["rss_end_mb"], unit="MB"),
        summary.Row(metric="server RSS slope after warm-up", value=slope, unit="MB/min",
                    target=f"< {SLOPE_LIMIT_MB_MIN:g}" if judged else None,
                    met=slope < SLOPE_LIMIT_MB_MIN if judged else None),
    ]  # fmt: skip


def parse_mix(text: str) -> dict[str, int]:
    mix = dict(DEFAULT_MIX)
    for part in filter(None, text.split(",")):
        name, _, weight = part.partition("=")
        if name not in DEFAULT_MIX or not weight.isdigit():
            raise argparse.ArgumentTypeError(
                f"bad mix entry {part!r}: use NAME=WEIGHT, NAME in {', '.join(DEFAULT_MIX)}"
            )
        mix[name] = int(weight)
    if not any(mix.values()):
        raise argparse.ArgumentTypeError("the mix has no operation with a positive weight")
    return mix


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    summary.add_arguments(parser)
    parser.add_argument("--clients", type=int, help="concurrent clients (default 32, quick 8)")
    parser.add_argument("--duration", type=float, help="seconds of load (default 600, quick 8)")
    parser.add_argument("--quota-mib", type=int, help="repository quota (default 256, quick 12)")
    parser.add_argument("--idle-expiry", help="server --idle-expiry (default 60s, quick 5s)")
    parser.add_argument("--mix", type=parse_mix, help="weights, e.g. save_v2=30,delete=0")
    parser.add_argument("--rate-limit", type=int, help="server --rate-limit per minute (default 0)")
    parser.add_argument("--fsync", action="store_true", help="server --fsync true (default false)")
    parser.add_argument("--sample-every", type=float, help="seconds between samples (default 5)")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", type=Path, help="the JSON record (default bench/results/)")
    args = parser.parse_args()
    s = QUICK if args.quick else Settings()
    changes = {"clients": args.clients, "duration_s": args.duration, "idle_expiry": args.idle_expiry,
               "mix": args.mix, "rate_limit": args.rate_limit, "seed": args.seed,
               "quota_bytes": args.quota_mib and args.quota_mib * MiB,
               "fsync": args.fsync or None, "sample_every_s": args.sample_every}  # fmt: skip
    s = replace(s, **{k: v for k, v in changes.items() if v is not None})
    with tempfile.TemporaryDirectory(prefix="ghacache-soak-") as tmp, serve(s, Path(tmp)) as server:
        print(f"soak: {s.clients} clients for {s.duration_s:g} s against {server.url}", flush=True)
        run = asyncio.run(drive(s, server, Path(tmp)))
        server.proc.terminate()
        try:
            exit_code = server.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            exit_code = -1  # a shutdown that hangs; serve() kills it
        log = server_log(server.log)
    mem = memory(run["samples"], s.duration_s * s.warmup_fraction)
    stats: Stats = run["stats"]
    bad = {
        "client outcomes": stats.unexpected_count(),
        "server 5xx": sum(v for k, v in run["statuses"].items() if k.startswith("5")),
        "server log errors": sum(
            n for level, n in log["levels"].items() if level not in ("info", "debug", "warning")
        ),
        "server exit on SIGTERM not 0": int(exit_code != 0),
        # Keys are unique, so each delete that found its key removed exactly one entry.
        "delete count mismatch": abs(
            run["evictions"].get("deleted", 0) - stats.outcomes.get("delete", Counter())["deleted"]
        ),
    }
    print("\n" + report(s, run, mem, log, bad))
    record = {
        "settings": asdict(s), "machine": platform.platform(), "cpus": os.cpu_count(),
        "load_s": run["load_s"], "unexpected": sum(bad.values()), "unexpected_by_source": bad,
        "unexpected_messages": stats.unexpected,
        "outcomes": {k: dict(c) for k, c in stats.outcomes.items()},
        "latency_ms": {k: {"p50": pct(v, 0.5) * 1000, "p99": pct(v, 0.99) * 1000}
                       for k, v in stats.latencies.items()},
        "bytes_up": stats.bytes_up, "bytes_down": stats.bytes_down,
        "server_statuses": dict(run["statuses"]), "evictions": run["evictions"], "server_log": log, "server_exit": exit_code,
        "memory": mem, "samples": run["samples"],
    }  # fmt: skip
    out = args.out or ROOT / "results" / f"soak-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out}")
    summary.write(args.summary, "soak", rows(run, mem, sum(bad.values())))
    return 1 if any(bad.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
