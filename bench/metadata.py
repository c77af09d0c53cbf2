"""Metadata performance of one replica (SQLite + local files): lookups and the eviction sweep.

    .venv/bin/python bench/metadata.py                     # both sections, default sizes
    .venv/bin/python bench/metadata.py --only lookups      # or: --only scaling
    .venv/bin/python bench/metadata.py --quick --summary out.json   # CI smoke (tiny sizes)

Sections:
  lookups   lookups/s and p50/p99 latency at 1, 16 and 64 concurrent clients with 10^4 and
            10^6 entries in the index. Target: >= 2,000 lookups/s and p99 < 25 ms at 16
            clients with 10^6 entries.
  scaling   lookup p50/p99 at 16 clients, and the time of the timer sweep's parts (eviction
            with nothing to evict, with every repository 10% over quota, and with 10% of
            the entries idle past expiry; reconciliation of the index with the store), at
            10^4, 10^5 and 10^6 entries, with the growth factor per 10x entries. (This
            replaces bench/eviction_sweep.py.)

The data set: 500 committed entries per repository (10^6 entries = 2,000 repositories),
created in time order round-robin over the repositories, each in one of 22 scopes (main,
a release branch, 20 pull requests) under keys ``<tool>-<os>-<64 hex>`` of 5 tools x 2
operating systems, one version per tool and OS. Rows are written straight into the index
(created by ``ghacache.index``'s own migrations) in one transaction, and an empty blob file
per entry is created (the server's start-up reconciliation removes entries without bytes).

Requests are v2 ``GetCacheEntryDownloadURL`` calls over real HTTP to a spawned
``ghacache serve`` (defaults, except ``--fsync false`` and an eviction timer of a day so that
no timer sweep runs during a measurement; the start-up sweep runs before it listens).
They come from "jobs": a token per job (a repository and its main branch, a release branch
or a pull request, the latter two also reading main), 1, 2 or 4 lookups per job, each with
``key`` and one restore key (the tool/OS prefix): about 55% exact hits (a key saved in the
job's own scope, else main), 30% restore-key hits (a new lockfile hash) and 15% misses (a
tool nothing was saved for, or another version). wrk (one thread, ``connections = clients``)
walks the pool in order from a random offset, so a job's lookups arrive together, as from a
real job. Every answer is checked: a sample before and after the rounds against the
expected matched key, and during the load wrk's script counts statuses other than 200 and
compares the number of hits with the pool's expectation for the requests it sent. Any mismatch fails the run (exit 1); a missed target
never does.

Rounds interleave every (size, clients) combination in rotating order; tables show medians.
Full figures go to ``bench/results/metadata-<time>.json``; ``--summary PATH`` writes the
headline rows for ``bench/run.py``. Needs ``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import itertools
import json
import math
import os
import platform
import random
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import summary  # bench/summary.py: the contract with bench/run.py

from ghacache.index import Entry, EntryState, open_index
from ghacache.index.catalog import Catalog
from ghacache.protocol.eviction import Policy
from ghacache.protocol.scopes import Permission, Scope
from ghacache.server.auth import load_or_create_secret, mint_token
from ghacache.server.maintenance import Maintainer, PolicyBook
from ghacache.storage import LocalStore

ROOT = Path(__file__).resolve().parent
TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
DAY = 86400.0
PER_REPO = 500
ENTRY_BYTES = 1_000_000
MAIN, RELEASE = "refs/heads/main", "refs/heads/release"
PULLS = tuple(f"refs/pull/{n}/merge" for n in range(1, 21))
TOOLS = ("node-modules", "pip", "cargo", "gradle", "ccache")
SYSTEMS = ("Linux", "Windows")
# Idle expiry for the "idle" sweep: access times span [0, 0.9) days before the data set's
# clock, in creation order, so exactly the oldest 10% are idle past 0.91 days.
IDLE_EXPIRY_S = 0.91 * DAY
SCENARIOS = ("noop", "quota", "idle", "reconcile")
TARGET_RPS = 2000.0
TARGET_P99_MS = 25.0

LUA = r"""
-- Walks a pool of pre-built lookups in order from an offset; counts answers by kind.
local pool, hit_of = {}, {}
local n, i = 0, 0
issued, responses, hits, expected_hits, bad = 0, 0, 0, 0, 0

function init(args)
  local tokens = {}
  for line in io.lines(args[1]) do
    local kind, a, b, c = line:match("^(%u)\t([^\t]*)\t?([^\t]*)\t?(.*)$")
    if kind == "T" then
      tokens[#tokens + 1] = a
    else
      n = n + 1
      hit_of[n] = tonumber(b)
      pool[n] = wrk.format("POST", args[2], {
        ["Content-Type"] = "application/json",
        ["Authorization"] = "Bearer " .. tokens[tonumber(a)],
      }, c)
    end
  end
  i = tonumber(args[3]) % n
end

function request()
  i = i % n + 1
  issued = issued + 1
  expected_hits = expected_hits + hit_of[i]
  return pool[i]
end

function response(status, headers, body)
  responses = responses + 1
  if status ~= 200 then
    bad = bad + 1
  elseif body:find('"ok":%s*true') then
    hits = hits + 1
  end
end

local threads = {}
function setup(thread) threads[#threads + 1] = thread end

function done(summary, latency, requests)
  local t = threads[1]
  io.write(string.format("GHACACHE %d %d %d %d %d %d %d %d %d %d %d\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    t:get("issued"), t:get("responses"), t:get("hits"), t:get("expected_hits"), t:get("bad"),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max))
end
"""


class BenchError(Exception):
    """A wrong answer, a non-200 status or a failed tool: the run is invalid."""


# -- the data set ------------------------------------------------------------------------


def version_of(tool: str, system: str) -> str:
    return hashlib.sha256(f"{tool}|{system}|zstd".encode()).hexdigest()


@dataclass
class Dataset:
    """An index of ``entries`` committed entries, a store with their (empty) blobs."""

    entries: int
    repos: int
    root: Path  # the server's data directory
    pristine: Path  # a copy of the index taken before any server opened it
    now: float  # the data set's clock: entries were created during the day before it
    secret: bytes = field(repr=False)
    # (repo, scope, version) -> [(key, created_at, id)], for the expected answers.
    groups: dict[tuple[str, str, str], list[tuple[str, float, int]]] = field(repr=False)

    @property
    def store(self) -> Path:
        return self.root / "store"


def repo_name(r: int) -> str:
    return f"org{r % 97}/repo-{r}"


def build_dataset(base: Path, entries: int, seed: int) -> Dataset:
    rng = random.Random(seed)
    repos = max(1, entries // PER_REPO)
    root = base / f"data-{entries}"
    root.mkdir(parents=True)
    index_path = root / "index.sqlite"
    asyncio.run(_create_schema(index_path))
    now = time.time()
    t0 = now - DAY
    scopes = [MAIN] * 8 + [RELEASE] * 2 + list(PULLS)  # main 8 in 30, release 2, each PR 1
    groups: dict[tuple[str, str, str], list[tuple[str, float, int]]] = {}
    rows: list[tuple[object, ...]] = []
    names = [repo_name(r) for r in range(repos)]
    blobs_dir = root / "store" / "blobs"
    for shard in range(256):
        (blobs_dir / f"{shard:02x}").mkdir(parents=True)
    for i in range(entries):
        ident = i + 1
        repo = names[i % repos]
        scope = rng.choice(scopes)
        tool, system = rng.choice(TOOLS), rng.choice(SYSTEMS)
        version = version_of(tool, system)
        key = f"{tool}-{system}-{rng.getrandbits(256):064x}"
        created = t0 + (i / entries) * 0.9 * DAY
        blob = f"{ident}-{rng.getrandbits(64):016x}"
        rows.append((ident, repo, scope, key, version, int(EntryState.COMMITTED), ENTRY_BYTES,
                     ENTRY_BYTES, f"u{ident:x}", blob, created, created, created))  # fmt: skip
        groups.setdefault((repo, scope, version), []).append((key, created, ident))
        fd = os.open(f"{blobs_dir}/{blob[-2:]}/{blob}", os.O_WRONLY | os.O_CREAT, 0o644)
        os.close(fd)
    conn = sqlite3.connect(index_path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO entries (id, repo, scope, key, version, state, size, declared_size, "
            "upload, blob, created_at, updated_at, last_accessed_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    pristine = base / f"pristine-{entries}.sqlite"
    shutil.copyfile(index_path, pristine)
    secret = load_or_create_secret(root / "secret")
    return Dataset(entries, repos, root, pristine, now, secret, groups)


async def _create_schema(path: Path) -> None:
    index = await open_index(f"sqlite:///{path}")
    await index.close()


def expected_key(
    ds: Dataset, repo: str, scopes: Sequence[str], keys: Sequence[str], version: str
) -> str:
    """GitHub's answer, computed independently of the server: matched key or "" (miss)."""
    for scope in scopes:
        group = ds.groups.get((repo, scope, version))
        if not group:
            continue
        for key in keys:
            for k, _, _ in group:
                if k == key:
                    return k
            prefixed = [(c, i, k) for k, c, i in group if k.startswith(key)]
            if prefixed:
                return max(prefixed)[2]
    return ""


@dataclass(frozen=True)
class Lookup:
    token: int
    body: str
    expected: str  # matched key, "" for a miss
    exact: bool  # the expected hit is the primary key itself


def build_pool(ds: Dataset, size: int, seed: int) -> tuple[list[str], list[Lookup]]:
    """``size`` lookups from jobs of 1, 2 or 4 lookups, each job with its own token."""
    rng = random.Random(seed)
    tokens: list[str] = []
    pool: list[Lookup] = []
    while len(pool) < size:
        repo = repo_name(rng.randrange(ds.repos))
        u = rng.random()
        own = MAIN if u < 0.3 else RELEASE if u < 0.4 else rng.choice(PULLS)
        scopes = [Scope(ref=own, permission=Permission.READ | Permission.WRITE)]
        if own != MAIN:
            scopes.append(Scope(ref=MAIN, permission=Permission.READ))
        readable = [s.ref for s in scopes]
        tokens.append(
            mint_token(ds.secret, repository=repo, scopes=scopes, ttl_s=12 * 3600, now=time.time())
        )
        for _ in range(rng.choice((1, 1, 1, 2, 2, 4))):
            tool, system = rng.choice(TOOLS), rng.choice(SYSTEMS)
            version = version_of(tool, system)
            prefix = f"{tool}-{system}-"
            key = f"{prefix}{rng.getrandbits(256):064x}"
            kind = rng.random()
            if kind < 0.55:  # restore a key saved earlier: in this scope, else in main
                for scope in readable:
                    saved = ds.groups.get((repo, scope, version))
                    if saved:
                        key = rng.choice(saved)[0]
                        break
            elif kind < 0.85:
                pass  # a new lockfile hash: the restore key's newest prefix match
            elif kind < 0.93:
                version = "0" * 64  # another version (other paths or compression)
            else:
                prefix = f"bazel-{system}-"  # a tool nothing was saved for
                key = f"{prefix}{rng.getrandbits(256):064x}"
            body = json.dumps(
                {"key": key, "restore_keys": [prefix], "version": version}, separators=(",", ":")
            )
            expected = expected_key(ds, repo, readable, [key, prefix], version)
            pool.append(Lookup(len(tokens), body, expected, expected == key))
    return tokens, pool


def write_pool(path: Path, tokens: list[str], pool: list[Lookup]) -> None:
    with path.open("w") as f:
        for t in tokens:
            f.write(f"T\t{t}\n")
        for q in pool:
            f.write(f"R\t{q.token}\t{int(bool(q.expected))}\t{q.body}\n")


# -- servers and load --------------------------------------------------------------------


@contextmanager
def serve(ds: Dataset) -> Iterator[str]:
    cmd = [sys.executable, "-m", "ghacache", "serve", "--port", "0"]
    cmd += ["--data-dir", str(ds.root), "--fsync", "false", "--log-level", "warning"]
    cmd += ["--eviction-interval", "1d"]
    log = ds.root.parent / f"server-{ds.entries}.log"
    with log.open("a") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        if not first.startswith("ghacache listening on "):
            raise BenchError(f"server did not start: {first!r}; {log.read_text()[-2000:]}")
        yield first.removeprefix("ghacache listening on ")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def validate(url: str, tokens: list[str], sample: Sequence[Lookup]) -> None:
    """Send ``sample`` and compare every answer with the expected one."""
    sem = asyncio.Semaphore(8)
    wrong: list[str] = []
    async with aiohttp.ClientSession() as http:

        async def one(q: Lookup) -> None:
            headers = {"Authorization": f"Bearer {tokens[q.token - 1]}"}
            headers["Content-Type"] = "application/json"
            async with (
                sem,
                http.post(
                    url + TWIRP + "GetCacheEntryDownloadURL", data=q.body, headers=headers
                ) as r,
            ):
                text = await r.text()
                if r.status != 200:
                    wrong.append(f"status {r.status}: {text[:200]}")
                    return
                answer = json.loads(text)
                got = answer.get("matched_key", "") if answer.get("ok") else ""
                if got != q.expected or bool(answer.get("signed_download_url")) != bool(got):
                    wrong.append(f"{q.body}: expected {q.expected!r}, got {got!r}")

        await asyncio.gather(*(one(q) for q in sample))
    if wrong:
        raise BenchError(f"{len(wrong)} wrong answers of {len(sample)}, e.g. {wrong[0]}")


def run_wrk(
    url: str, script: Path, pool_file: Path, clients: int, seconds: float
) -> dict[str, float]:
    offset = random.randrange(1 << 30)
    cmd = ["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--timeout", "30s", "-s", str(script)]
    cmd += [url, "--", str(pool_file), TWIRP + "GetCacheEntryDownloadURL", str(offset)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120, check=False)
    m = re.search(r"^GHACACHE ((?:\d+ ?){11})$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or m is None:
        raise BenchError(
            f"wrk failed ({proc.returncode}): {proc.stdout[-1000:]}{proc.stderr[-1000:]}"
        )
    done, errors, issued, responses, hits, expected, bad, p50, p99, p999, worst = map(
        int, m.group(1).split()
    )
    if errors or bad:
        raise BenchError(f"wrk: {bad} answers other than 200 and {errors} socket errors")
    # Up to one request per connection was sent but not answered when wrk stopped, and wrk
    # builds one request (never sent) to check the script.
    unanswered = issued - responses
    if not (expected - unanswered <= hits <= expected) or unanswered > clients + 1:
        raise BenchError(
            f"wrk: {hits} hits in {responses} answers, expected {expected} of {issued}"
        )
    return {
        "rps": done / seconds,
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "p999_ms": p999 / 1000,
        "max_ms": worst / 1000,
        "requests": done,
        "hit_ratio": hits / max(1, responses),
    }


# -- eviction sweeps ---------------------------------------------------------------------


def sweep_once(ds: Dataset, scenario: str, work: Path) -> tuple[float, int]:
    """One pass of the timer sweep's work over a fresh copy of the pristine index.

    ``noop``, ``quota`` and ``idle`` time ``Maintainer.evict()`` (all repositories) under a
    policy that evicts nothing, 10% of every repository (least recently used first), or the
    oldest 10% of all entries; ``reconcile`` times ``Maintainer.reconcile()`` (the index
    against every blob in the store; nothing to fix). Evicted blobs are put back afterwards.
    """
    copy = work / f"sweep-{ds.entries}.sqlite"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{copy}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(ds.pristine, copy)
    elapsed, removed = asyncio.run(_sweep(ds, scenario, copy))
    for e in removed:  # put the bytes back for the next run and the servers
        assert e.blob is not None
        os.close(os.open(f"{ds.store}/blobs/{e.blob[-2:]}/{e.blob}", os.O_WRONLY | os.O_CREAT))
    expected = {"noop": 0, "quota": None, "idle": ds.entries // 10, "reconcile": 0}[scenario]
    if expected is not None and len(removed) != expected:
        raise BenchError(f"{scenario} sweep removed {len(removed)} entries, not {expected}")
    return elapsed, len(removed)


async def _sweep(ds: Dataset, scenario: str, index_path: Path) -> tuple[float, list[Entry]]:
    index = await open_index(f"sqlite:///{index_path}")
    per_repo_bytes = (ds.entries // ds.repos) * ENTRY_BYTES
    quota = int(per_repo_bytes / 1.1) if scenario == "quota" else per_repo_bytes
    expiry = IDLE_EXPIRY_S if scenario == "idle" else 7 * DAY
    maintainer = Maintainer(
        index=index,
        catalog=Catalog(index.db),
        store=LocalStore(ds.store, fsync=False),
        policies=PolicyBook(default=Policy(quota_bytes=quota, idle_expiry_s=expiry)),
        orphan_grace_s=3600,
        now=lambda: ds.now,
    )
    removed: list[Entry] = []
    try:
        start = time.perf_counter()
        if scenario == "reconcile":
            report = await maintainer.reconcile()
            if report.orphan_blobs or report.orphan_uploads or report.missing_entries:
                raise BenchError(f"reconciliation found something to fix: {report}")
        else:
            removed = await maintainer.evict()
        return time.perf_counter() - start, removed
    finally:
        await index.close()


# -- sections ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    rounds: int
    seconds: float
    pool: int
    sample: int
    lookup_sizes: tuple[int, ...]
    scaling_sizes: tuple[int, ...]
    clients: tuple[int, ...] = (1, 16, 64)


SECTIONS = ("lookups", "scaling")
FULL = Settings(rounds=3, seconds=10, pool=60_000, sample=1000, lookup_sizes=(10_000, 1_000_000),
                scaling_sizes=(10_000, 100_000, 1_000_000))  # fmt: skip
QUICK = Settings(rounds=1, seconds=2, pool=4000, sample=200, lookup_sizes=(1_000, 10_000),
                 scaling_sizes=(1_000, 10_000))  # fmt: skip


class Bench:
    def __init__(self, settings: Settings, work: Path) -> None:
        self.s = settings
        self.work = work
        self.script = work / "lookup.lua"
        self.script.write_text(LUA)
        self.datasets: dict[int, tuple[Dataset, list[str], list[Lookup], Path]] = {}

    def dataset(self, entries: int) -> tuple[Dataset, list[str], list[Lookup], Path]:
        if entries not in self.datasets:
            started = time.monotonic()
            ds = build_dataset(self.work, entries, seed=entries)
            tokens, pool = build_pool(ds, self.s.pool, seed=entries + 1)
            pool_file = self.work / f"pool-{entries}.tsv"
            write_pool(pool_file, tokens, pool)
            exact = sum(q.exact for q in pool) / len(pool)
            misses = sum(not q.expected for q in pool) / len(pool)
            print(
                f"built {entries:,} entries in {ds.repos:,} repositories and a pool of "
                f"{len(pool):,} lookups with {len(tokens):,} tokens ({exact:.0%} exact hits, "
                f"{1 - exact - misses:.0%} restore-key hits, {misses:.0%} misses) "
                f"in {time.monotonic() - started:.0f} s",
                flush=True,
            )
            self.datasets[entries] = (ds, tokens, pool, pool_file)
        return self.datasets[entries]

    @contextmanager
    def servers(self, sizes: Sequence[int]) -> Iterator[dict[int, str]]:
        with ExitStack() as stack:
            urls: dict[int, str] = {}
            for n in sizes:
                ds, tokens, pool, _ = self.dataset(n)
                started = time.monotonic()
                urls[n] = stack.enter_context(serve(ds))
                asyncio.run(validate(urls[n], tokens, pool[: self.s.sample]))
                print(
                    f"server with {n:,} entries up and answering correctly "
                    f"({time.monotonic() - started:.1f} s)",
                    flush=True,
                )
            yield urls
            for n in sizes:  # answers are still right after all the load
                _, tokens, pool, _ = self.dataset(n)
                asyncio.run(validate(urls[n], tokens, pool[-self.s.sample :]))

    def measure(self, url: str, entries: int, clients: int) -> dict[str, float]:
        return run_wrk(url, self.script, self.dataset(entries)[3], clients, self.s.seconds)

    def lookups(self) -> dict[str, list[dict[str, float]]]:
        sizes, clients = self.s.lookup_sizes, self.s.clients
        combos = [(n, c) for n in sizes for c in clients]
        runs: dict[str, list[dict[str, float]]] = {f"{n}/{c}": [] for n, c in combos}
        with self.servers(sizes) as urls:
            for r in range(self.s.rounds):
                k = r % len(combos)
                for n, c in combos[k:] + combos[:k]:
                    fig = self.measure(urls[n], n, c)
                    runs[f"{n}/{c}"].append(fig)
                    print(
                        f"round {r + 1} lookups {n:>9,} entries {c:>2} clients: "
                        f"{fig['rps']:7.0f}/s p50 {fig['p50_ms']:6.2f} ms "
                        f"p99 {fig['p99_ms']:6.2f} ms",
                        flush=True,
                    )
        return runs

    def scaling(self) -> dict[str, list[dict[str, float]]]:
        sizes = self.s.scaling_sizes
        runs: dict[str, list[dict[str, float]]] = {}
        with self.servers(sizes) as urls:
            for r in range(self.s.rounds):
                k = r % len(sizes)
                for n in sizes[k:] + sizes[:k]:
                    fig = self.measure(urls[n], n, 16)
                    runs.setdefault(f"{n}/lookup", []).append(fig)
                    line = f"p50 {fig['p50_ms']:.2f} ms p99 {fig['p99_ms']:.2f} ms"
                    j = r % len(SCENARIOS)
                    for scenario in SCENARIOS[j:] + SCENARIOS[:j]:
                        secs, removed = sweep_once(self.dataset(n)[0], scenario, self.work)
                        runs.setdefault(f"{n}/{scenario}", []).append(
                            {"seconds": secs, "evicted": removed}
                        )
                        line += f", {scenario} {secs:.3f} s" + (
                            f" ({removed:,} evicted)" if removed else ""
                        )
                    print(f"round {r + 1} scaling {n:>9,} entries: {line}", flush=True)
        return runs


# -- reporting ---------------------------------------------------------------------------


def med(figs: list[dict[str, float]], name: str) -> float:
    return statistics.median(f[name] for f in figs)


def sci(n: int) -> str:
    e = round(math.log10(n))
    return f"1e{e}" if 10**e == n else f"{n:,}"


def report_lookups(s: Settings, runs: dict[str, list[dict[str, float]]]) -> list[summary.Row]:
    print(f"\n### Lookups (median of {s.rounds} round(s) of {s.seconds:g} s)\n")
    print("| entries | clients | lookups/s | p50 | p99 | p99.9 |")
    print("|---|---|---|---|---|---|")
    rows: list[summary.Row] = []
    smallest = s.lookup_sizes[0]
    for n in s.lookup_sizes:
        for c in s.clients:
            figs = runs[f"{n}/{c}"]
            rps, p50, p99 = med(figs, "rps"), med(figs, "p50_ms"), med(figs, "p99_ms")
            print(f"| {n:,} | {c} | {rps:,.0f} | {p50:.2f} ms | {p99:.2f} ms | "
                  f"{med(figs, 'p999_ms'):.2f} ms |")  # fmt: skip
            where = f"{c} client{'' if c == 1 else 's'}, {sci(n)} entries"
            targeted = c == 16 and n == 1_000_000
            rps_base = p99_base = None
            if n != smallest:
                rps_base = med(runs[f"{smallest}/{c}"], "rps")
                p99_base = med(runs[f"{smallest}/{c}"], "p99_ms")
            rows.append(summary.Row(
                metric=f"lookups/s, {where}", value=rps, unit="req/s",
                baseline=None if rps_base is None else f"{sci(smallest)} entries",
                baseline_value=rps_base, ratio=None if rps_base is None else rps / rps_base,
                target=f">= {TARGET_RPS:.0f}" if targeted else None,
                met=rps >= TARGET_RPS if targeted else None,
            ))  # fmt: skip
            rows.append(summary.Row(
                metric=f"p99, {where}", value=p99, unit="ms",
                baseline=None if p99_base is None else f"{sci(smallest)} entries",
                baseline_value=p99_base, ratio=None if p99_base is None else p99 / p99_base,
                target=f"< {TARGET_P99_MS:.0f} ms" if targeted else None,
                met=p99 < TARGET_P99_MS if targeted else None,
            ))  # fmt: skip
    return rows


FIGURES = {
    "p50": "lookup p50",
    "p99": "lookup p99",
    "noop": "sweep, nothing to evict",
    "quota": "sweep, 10% over quota",
    "idle": "sweep, 10% idle",
    "reconcile": "reconciliation",
}


def report_scaling(s: Settings, runs: dict[str, list[dict[str, float]]]) -> list[summary.Row]:
    sizes = s.scaling_sizes
    print(f"\n### Scaling (median of {s.rounds} round(s); lookups at 16 clients)\n")
    print("| entries | lookup p50 | lookup p99 | lookups/s | sweep: nothing to evict "
          "| sweep: 10% over quota | sweep: 10% idle | reconciliation |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    table: dict[int, dict[str, float]] = {}
    for n in sizes:
        lk = runs[f"{n}/lookup"]
        t = {"p50": med(lk, "p50_ms"), "p99": med(lk, "p99_ms"), "rps": med(lk, "rps")}
        cells = []
        for sc in SCENARIOS:
            t[sc] = med(runs[f"{n}/{sc}"], "seconds")
            evicted = int(med(runs[f"{n}/{sc}"], "evicted"))
            cells.append(f"{t[sc]:.3f} s" + (f" ({evicted:,} evicted)" if evicted else ""))
        table[n] = t
        print(f"| {n:,} | {t['p50']:.2f} ms | {t['p99']:.2f} ms | {t['rps']:,.0f} | "
              + " | ".join(cells) + " |")  # fmt: skip
    print("\nGrowth factor per 10x entries:\n")
    print("| step | " + " | ".join(FIGURES.values()) + " |")
    print("|---|" + "---|" * len(FIGURES))
    for a, b in itertools.pairwise(sizes):
        per = math.log10(b / a)
        factors = [(table[b][k] / table[a][k]) ** (1 / per) for k in FIGURES]
        print(f"| {sci(a)} -> {sci(b)} | " + " | ".join(f"{f:.2f}x" for f in factors) + " |")
    rows: list[summary.Row] = []
    lo, hi = sizes[0], sizes[-1]
    decades = math.log10(hi / lo)
    for k, label in FIGURES.items():
        unit = "ms" if k in ("p50", "p99") else "s"
        suffix = ", 16 clients" if unit == "ms" else ""
        rows.append(summary.Row(
            metric=f"{label}, {sci(hi)} entries{suffix}", value=table[hi][k], unit=unit,
            baseline=f"{sci(lo)} entries", baseline_value=table[lo][k],
            ratio=table[hi][k] / table[lo][k],
        ))  # fmt: skip
        rows.append(summary.Row(
            metric=f"{label}: growth per 10x entries ({sci(lo)} to {sci(hi)})",
            value=(table[hi][k] / table[lo][k]) ** (1 / decades), unit="x",
        ))  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    summary.add_arguments(parser)
    parser.add_argument(
        "--only", nargs="+", action="extend", choices=SECTIONS, help="sections to run (default all)"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, quick 1)")
    parser.add_argument("--seconds", type=float, help="seconds per load run (default 10, quick 2)")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    settings = QUICK if args.quick else FULL
    if args.rounds:
        settings = dataclasses.replace(settings, rounds=args.rounds)
    if args.seconds:
        settings = dataclasses.replace(settings, seconds=args.seconds)
    sections = args.only or list(SECTIONS)
    record: dict[str, Any] = {"settings": dataclasses.asdict(settings), "sections": {},
                              "machine": platform.platform(), "cpus": os.cpu_count()}  # fmt: skip
    rows: list[summary.Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="ghacache-bench-metadata-") as tmp:
            bench = Bench(settings, Path(tmp))
            if "lookups" in sections:
                runs = bench.lookups()
                record["sections"]["lookups"] = runs
                rows += report_lookups(settings, runs)
            if "scaling" in sections:
                runs = bench.scaling()
                record["sections"]["scaling"] = runs
                rows += report_scaling(settings, runs)
    except BenchError as exc:
        print(f"metadata benchmark failed: {exc}", file=sys.stderr)
        return 1
    record["rows"] = [dataclasses.asdict(r) for r in rows]
    out = ROOT / "results" / f"metadata-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"\nfull figures: {out.relative_to(ROOT.parent)}")
    summary.write(args.summary, "metadata", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
