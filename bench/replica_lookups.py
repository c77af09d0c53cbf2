"""Lookups per second on PostgreSQL: one replica against three, measured with wrk.

    .venv/bin/python bench/replica_lookups.py            # 5 interleaved rounds of 10 s
    .venv/bin/python bench/replica_lookups.py --rounds 3 --seconds 5

Three ``ghacache serve`` processes share a fresh PostgreSQL database (on
``GHACACHE_BENCH_POSTGRES_URL``, default the local server) and one store. The index holds
``--entries`` committed entries; every request is a v2 ``GetCacheEntryDownloadURL`` for a
random one of them (an exact hit, which also records the access). A round runs wrk against
one replica with ``--connections`` connections, then three wrks at once, one per replica,
with a third of the connections each; rounds alternate the order. The table shows the
median requests per second of each setup and the ratio. Everything shares this machine's
cores with PostgreSQL and wrk, so the ratio is a floor for replicas on their own hosts.
Needs ``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import psycopg
import summary  # bench/summary.py: the contract with bench/run.py

ROOT = Path(__file__).resolve().parent
TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
VERSION = "3ad75f27293d65a135214b8c82b296080f911dc107e52f1e7ec871a2eda46e69"

LUA = """
local keys = %d
local token = "%s"
local version = "%s"
math.randomseed(os.time() + %d)
request = function()
  local body = string.format('{"key":"k-%%05d","version":"%%s"}', math.random(0, keys - 1), version)
  return wrk.format("POST", "%sGetCacheEntryDownloadURL",
    {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token}, body)
end
done = function(summary, latency, requests)
  io.write(string.format("GHACACHE %%d %%d %%d\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.timeout,
    latency:percentile(50)))
end
"""


@contextmanager
def fresh_database(base_url: str) -> Iterator[str]:
    name = f"ghacache_bench_{secrets.token_hex(4)}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(base_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@contextmanager
def replicas(root: Path, database_url: str, n: int) -> Iterator[list[str]]:
    secret = root / "secret"
    store = root / "store"
    procs: list[subprocess.Popen[str]] = []
    urls: list[str] = []
    try:
        for i in range(n):
            cmd = [sys.executable, "-m", "ghacache", "serve", "--port", "0"]
            cmd += ["--data-dir", str(root / f"replica-{i}"), "--secret-file", str(secret)]
            cmd += ["--database-url", database_url, "--storage-url", f"file://{store}"]
            cmd += ["--fsync", "false", "--log-level", "warning"]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout is not None
            urls.append(proc.stdout.readline().strip().removeprefix("ghacache listening on "))
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=30)
            if proc.stdout is not None:
                proc.stdout.close()


def mint_token(secret: Path) -> str:
    args = [sys.executable, "-m", "ghacache", "token", "--secret-file", str(secret)]
    args += ["--repo", "bench/repo", "--scope", "refs/heads/main:rw"]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


async def populate(url: str, token: str, entries: int) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    sem = asyncio.Semaphore(16)
    async with aiohttp.ClientSession(headers=headers) as http:

        async def save(i: int) -> None:
            key = f"k-{i:05d}"
            async with sem:
                async with http.post(
                    url + TWIRP + "CreateCacheEntry", json={"key": key, "version": VERSION}
                ) as r:
                    upload = (await r.json())["signed_upload_url"]
                async with http.put(
                    upload, data=key.encode(), headers={"x-ms-blob-type": "BlockBlob"}
                ) as r:
                    assert r.status == 201
                body = {"key": key, "version": VERSION, "size_bytes": str(len(key))}
                async with http.post(url + TWIRP + "FinalizeCacheEntryUpload", json=body) as r:
                    assert r.status == 200, await r.text()

        await asyncio.gather(*(save(i) for i in range(entries)))


def run_wrk(
    urls: list[str], script_dir: Path, token: str, entries: int, connections: int, seconds: int
) -> dict[str, float]:
    """wrk against every URL at once (connections split between them); summed figures."""
    procs = []
    for i, url in enumerate(urls):
        script = script_dir / f"lookup-{i}.lua"
        script.write_text(LUA % (entries, token, VERSION, i, TWIRP))
        per = max(1, connections // len(urls))
        cmd = ["wrk", "-t1", f"-c{per}", f"-d{seconds:g}s", "-s", str(script), url]
        procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True))
    requests = errors = 0
    p50s: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        m = re.search(r"^GHACACHE (\d+) (\d+) (\d+)$", out, re.MULTILINE)
        assert m, out
        requests += int(m.group(1))
        errors += int(m.group(2))
        p50s.append(int(m.group(3)) / 1000)
    return {"rps": requests / seconds, "errors": errors, "p50_ms": statistics.median(p50s)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=48)
    parser.add_argument("--entries", type=int, default=2000)
    summary.add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.seconds, args.entries = 1, 1, 100
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    base = os.environ.get(
        "GHACACHE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    results: dict[str, list[dict[str, float]]] = {"1": [], "3": []}
    with (
        tempfile.TemporaryDirectory(prefix="ghacache-bench-") as tmp,
        fresh_database(base) as database_url,
        replicas(Path(tmp), database_url, 3) as urls,
    ):
        token = mint_token(Path(tmp) / "secret")
        started = time.monotonic()
        asyncio.run(populate(urls[0], token, args.entries))
        print(f"populated {args.entries} entries in {time.monotonic() - started:.1f} s")
        for r in range(args.rounds):
            order = ["1", "3"] if r % 2 == 0 else ["3", "1"]
            for setup in order:
                targets = urls[:1] if setup == "1" else urls
                figures = run_wrk(
                    targets, Path(tmp), token, args.entries, args.connections, args.seconds
                )
                results[setup].append(figures)
                print(
                    f"round {r + 1} {setup} replica(s): {figures['rps']:.0f} lookups/s, "
                    f"p50 {figures['p50_ms']:.1f} ms, {figures['errors']:.0f} errors"
                )
    one = statistics.median(f["rps"] for f in results["1"])
    three = statistics.median(f["rps"] for f in results["3"])
    print()
    print("| replicas | lookups/s (median) | p50 latency (median) |")
    print("|---|---|---|")
    for setup in ("1", "3"):
        rps = statistics.median(f["rps"] for f in results[setup])
        p50 = statistics.median(f["p50_ms"] for f in results[setup])
        print(f"| {setup} | {rps:.0f} | {p50:.1f} ms |")
    print(f"\n3 replicas / 1 replica: {three / one:.2f}x on {os.cpu_count()} cores")
    summary.write(
        args.summary,
        "replica_lookups",
        [
            summary.Row(
                metric=f"lookups/s on PostgreSQL, 3 replicas, {args.connections} connections",
                value=three,
                unit="req/s",
                baseline="1 replica",
                baseline_value=one,
                ratio=three / one,
            )
        ],
    )
    out = ROOT / "results" / f"replica_lookups-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {"args": {k: str(v) for k, v in vars(args).items()}, "machine": platform.platform(), "cpus": os.cpu_count(),
             "results": results},
            indent=2,
        )
    )  # fmt: skip


if __name__ == "__main__":
    main()
