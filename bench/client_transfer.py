"""Transfer benchmark: ghacache's client against curl, on one spawned server over loopback.

    .venv/bin/python bench/client_transfer.py              # 1 GiB, 5 interleaved repetitions
    .venv/bin/python bench/client_transfer.py --sweep      # block size x concurrency grid

Each repetition uploads the same random file with the client (v2 and v1 with the default
settings, which cut it into blocks, and v2 in one streamed request like curl's) and with curl
(a v2 Put Blob of the whole file), then downloads it with each. Rates are MB/s (10^6 bytes per
second) of the timed transfer; the table shows medians and the client/curl ratio, and the
full figures go to bench/results/ as JSON. The server runs with --fsync false so the figures
measure the transfer path, not the disk's flush speed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ghacache.client import CacheClient, ClientConfig

ROOT = Path(__file__).resolve().parent
VERSION = "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"
MiB = 1024 * 1024
TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"


@contextmanager
def spawned_server(data_dir: Path) -> Iterator[tuple[str, str]]:
    """A real ``ghacache serve`` on port 0; yields (url, token)."""
    cmd = [sys.executable, "-m", "ghacache", "serve", "--port", "0", "--data-dir", str(data_dir)]
    cmd += ["--fsync", "false", "--repo-quota-bytes", "3GiB", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip().removeprefix("ghacache listening on ")
        token = subprocess.run(
            [sys.executable, "-m", "ghacache", "token", "--data-dir", str(data_dir),
             "--repo", "bench/repo", "--scope", "refs/heads/main:rw"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip
        yield url, token
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def random_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n


def twirp(url: str, token: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url + TWIRP + method,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())  # type: ignore[no-any-return]


def curl(*args: str, output: str = "/dev/null") -> None:
    subprocess.run(["curl", "-sS", "--fail", "-o", output, *args], check=True)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Bench:
    def __init__(self, url: str, token: str, source: Path, work: Path) -> None:
        self.url, self.token, self.source, self.work = url, token, source, work
        self.size = source.stat().st_size
        self.n = 0

    def key(self, label: str) -> str:
        self.n += 1
        return f"bench-{label}-{self.n}"

    def config(self, protocol: str, **settings: Any) -> ClientConfig:
        if protocol == "v2":
            return ClientConfig(token=self.token, url_v2=self.url, **settings)
        return ClientConfig(token=self.token, url=self.url, protocol="v1", **settings)

    def client_up(self, protocol: str, **settings: Any) -> tuple[float, str]:
        key = self.key(f"client-{protocol}")

        async def go() -> None:
            async with CacheClient(self.config(protocol, **settings)) as c:
                await c.save(key, VERSION, self.source)

        return timed(lambda: asyncio.run(go())), key

    def client_down(self, protocol: str, key: str, **settings: Any) -> float:
        out = self.work / "down.bin"

        async def go() -> None:
            async with CacheClient(self.config(protocol, **settings)) as c:
                entry = await c.lookup(key, VERSION)
                assert entry is not None
                reader = await c.open(entry)
                assert await reader.download_to(out) == self.size

        seconds = timed(lambda: asyncio.run(go()))
        out.unlink()
        return seconds

    def curl_up(self) -> tuple[float, str]:
        key = self.key("curl")
        upload = twirp(self.url, self.token, "CreateCacheEntry", {"key": key, "version": VERSION})
        headers = [
            "-H",
            "x-ms-blob-type: BlockBlob",
            "-H",
            "Content-Type: application/octet-stream",
        ]
        seconds = timed(lambda: curl("-T", str(self.source), *headers, upload["signed_upload_url"]))
        body = {"key": key, "version": VERSION, "size_bytes": str(self.size)}
        assert twirp(self.url, self.token, "FinalizeCacheEntryUpload", body)["ok"]
        return seconds, key

    def curl_down(self, key: str) -> float:
        found = twirp(
            self.url, self.token, "GetCacheEntryDownloadURL",
            {"key": key, "restore_keys": [key], "version": VERSION},
        )  # fmt: skip
        out = self.work / "down.bin"
        seconds = timed(lambda: curl(found["signed_download_url"], output=str(out)))
        assert out.stat().st_size == self.size
        out.unlink()
        return seconds


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def compare(bench: Bench, reps: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        rates.setdefault(name, []).append(mbps(bench.size, seconds))

    for rep in range(reps):
        # Interleaved: each repetition runs every contender once, in a rotating order.
        steps: list[Callable[[], None]] = []

        def v2() -> None:
            up, key = bench.client_up("v2")
            add("upload client v2", up)
            add("download client v2", bench.client_down("v2", key))

        def v1() -> None:
            up, key = bench.client_up("v1")
            add("upload client v1", up)
            add("download client v1", bench.client_down("v1", key))

        def v2_one_request() -> None:
            # The same operation as curl's: one streamed Put Blob of the whole file.
            up, _key = bench.client_up("v2", single_put_bytes=bench.size)
            add("upload client v2 one request", up)

        def with_curl() -> None:
            up, key = bench.curl_up()
            add("upload curl", up)
            add("download curl", bench.curl_down(key))

        steps = [v2, v1, v2_one_request, with_curl]
        for step in steps[rep % 4 :] + steps[: rep % 4]:
            step()
        print(f"repetition {rep + 1}/{reps} done", file=sys.stderr)
    medians = {name: statistics.median(values) for name, values in rates.items()}
    table = [
        ("upload", "v2", medians["upload client v2"], medians["upload curl"]),
        ("upload", "v1", medians["upload client v1"], medians["upload curl"]),
        ("upload", "v2 1 req", medians["upload client v2 one request"], medians["upload curl"]),
        ("download", "v2", medians["download client v2"], medians["download curl"]),
        ("download", "v1", medians["download client v1"], medians["download curl"]),
    ]
    print(f"\n{'direction':<10} {'protocol':<9} {'client MB/s':>12} {'curl MB/s':>10} {'ratio':>6}")
    for direction, protocol, client, ref in table:
        print(f"{direction:<10} {protocol:<9} {client:>12.0f} {ref:>10.0f} {client / ref:>6.2f}")
    return {"rates_mbps": rates, "medians_mbps": medians}


def sweep(bench: Bench, reps: int, blocks: list[int], concurrencies: list[int]) -> dict[str, Any]:
    results: dict[str, list[float]] = {}
    for rep in range(reps):
        for protocol in ("v2", "v1"):
            for block in blocks:
                for conc in concurrencies:
                    settings = {"block_bytes": block * MiB, "concurrency": conc}
                    up, _key = bench.client_up(protocol, **settings)
                    name = f"{protocol} {block}MiBx{conc}"
                    results.setdefault(name, []).append(mbps(bench.size, up))
        print(f"sweep repetition {rep + 1}/{reps} done", file=sys.stderr)
    medians = {name: statistics.median(v) for name, v in results.items()}
    print(f"\n{'upload':<16} {'MB/s':>8}")
    for name, value in medians.items():
        print(f"{name:<16} {value:>8.0f}")
    return {"upload_rates_mbps": results, "upload_medians_mbps": medians}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--sweep", action="store_true", help="grid of block sizes x concurrency")
    parser.add_argument("--blocks", default="4,8,16,32,64", help="MiB, for --sweep")
    parser.add_argument("--concurrency", default="1,2,4,8", help="for --sweep")
    parser.add_argument(
        "--tmp",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="directory for the file, the downloads and the server's data (default: tmpfs, "
        "so disk write-back does not add noise)",
    )
    args = parser.parse_args()
    if shutil.which("curl") is None:
        print("curl is needed", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="ghacache-bench-", dir=args.tmp) as tmp:
        work = Path(tmp)
        source = work / "random.bin"
        random_file(source, args.size_mib * MiB)
        with spawned_server(work / "data") as (url, token):
            bench = Bench(url, token, source, work)
            if args.sweep:
                blocks = [int(b) for b in args.blocks.split(",")]
                conc = [int(c) for c in args.concurrency.split(",")]
                figures = sweep(bench, args.reps, blocks, conc)
            else:
                figures = compare(bench, args.reps)
    result = {
        "benchmark": "sweep" if args.sweep else "client_vs_curl",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "size_bytes": args.size_mib * MiB,
        "repetitions": args.reps,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "storage": args.tmp or tempfile.gettempdir(),
        **figures,
    }
    out_dir = ROOT / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"client_transfer-{result['benchmark']}-{int(time.time())}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
