"""Object-store benchmark: ghacache on S3 (moto) against ghacache on local files, in one run.

    .venv/bin/python bench/object_storage.py                          # 256 MiB, 5 repetitions
    .venv/bin/python bench/object_storage.py --reps 3 --size-mib 128
    .venv/bin/python bench/object_storage.py --single-put-mib 0       # always upload in blocks

The bench starts moto's S3 server (``moto_server`` from the virtualenv) on a free loopback
port and two ``ghacache serve`` processes with --fsync false, each on a fresh data dir: one
on the local file store, one on ``s3://`` in a fresh moto bucket. Each repetition uploads
the same random file to both with ghacache's client (``CacheClient``, v2, default settings:
above 128 MiB parallel blocks, up to it one streamed Put Blob; --single-put-mib changes the
threshold) and downloads it back with ``reader.download_to``; the downloaded bytes' sha256
is checked against the source's. The upload is timed from the start of ``save`` to the
finalize's answer, the download over ``download_to`` alone (lookup and the size HEAD are
not counted). Then, as a baseline for moto itself, the same file goes straight to moto with
boto3 in one PUT and comes back in one GET (``put_object``/``get_object``, no multipart,
checksums only when required; SigV4 over plain http still hashes the body, as obstore
does). The backends alternate: the order is reversed every other repetition.

Rates are MB/s (10^6 bytes per second). The tables show medians: per backend, then the
s3/file ratio; then the raw moto baseline and ghacache-on-s3 relative to it. Full figures go
to bench/results/ as JSON.

Read the S3 figures with care:

- moto is a Python emulator (one werkzeug process, one GIL) that keeps objects in memory or
  spooled temporary files (pointed at --tmp here). Its throughput is far below a real S3's,
  so the absolute s3 figures are a floor set by moto, not by ghacache; the raw baseline
  shows where that floor is. The file store has no such emulator in the way.
- On S3 the bytes cross moto more than once. An upload is staged as one object per request
  (block or Put Blob); finalizing publishes the blob: a server-side copy for a single part,
  otherwise the parts read back and streamed through the server into one multipart upload.
  Downloads pass through the server (S3 presigned URLs are not handed out), so they are
  moto -> server -> client.
- The client, the server and moto share the machine's cores; on a small box they compete,
  which lowers the s3 figures more than the file ones (three busy processes instead of two).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any
from urllib.parse import quote

import boto3  # type: ignore[import-untyped]
import summary  # bench/summary.py: the contract with bench/run.py
from botocore.config import Config  # type: ignore[import-untyped]

from ghacache.client import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_CONCURRENCY,
    DEFAULT_SINGLE_PUT_BYTES,
    CacheClient,
    ClientConfig,
)

ROOT = Path(__file__).resolve().parent
VERSION = "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"
MiB = 1024 * 1024
REGION = "us-east-1"
# moto accepts any credentials; these are the dummy ones its documentation uses.
ACCESS_KEY = "testing"
SECRET_KEY = "testing"
START_TIMEOUT_S = 60
# Settings obstore (in the server) would read: a developer's cloud login must not leak in.
CLOUD_ENV_PREFIXES = ("AWS_", "AZURE_", "AZURITE_", "GOOGLE_")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(CLOUD_ENV_PREFIXES)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True  # any HTTP answer means it is serving
    except OSError:
        return False


@contextmanager
def moto_server(work: Path) -> Iterator[str]:
    """moto's S3 server on a free loopback port, spooling objects under ``work``; yields its URL."""
    exe = Path(sys.executable).parent / "moto_server"
    if not exe.exists():
        raise SystemExit(f"moto_server not found at {exe}: install the dev dependencies")
    spool = work / "moto-tmp"
    spool.mkdir()
    env = {**clean_env(), "TMPDIR": str(spool)}
    for attempt in range(3):  # another process may take the port between probe and bind
        port = free_port()
        log = work / f"moto-{attempt}.log"
        with log.open("wb") as out:
            cmd = [str(exe), "-H", "127.0.0.1", "-p", str(port)]
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=work, env=env,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT_S
        while proc.poll() is None and time.monotonic() < deadline and not answers(url + "/"):
            time.sleep(0.1)
        if proc.poll() is None and answers(url + "/"):
            try:
                yield url
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            return
        proc.kill()
        proc.wait(timeout=10)
        if "EADDRINUSE" not in log.read_text(errors="replace"):
            break
    tail = log.read_text(errors="replace")[-3000:]
    raise SystemExit(f"moto did not start within {START_TIMEOUT_S} s; log {log}:\n{tail}")


def create_bucket(moto: str, bucket: str) -> None:
    # moto does not check signatures, so a plain PUT creates a bucket.
    request = urllib.request.Request(f"{moto}/{bucket}", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as r:
        assert r.status == 200, r.status


def s3_url(moto: str, bucket: str, prefix: str) -> str:
    options = {
        "endpoint": moto,
        "region": REGION,
        "allow_http": "true",
        "access_key_id": ACCESS_KEY,
        "secret_access_key": SECRET_KEY,
    }
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in options.items())
    return f"s3://{bucket}/{prefix}?{query}"


@contextmanager
def spawned_server(
    data_dir: Path, quota_bytes: int, storage_url: str | None
) -> Iterator[tuple[str, str]]:
    """A real ``ghacache serve`` on port 0; yields (url, token)."""
    cmd = [sys.executable, "-m", "ghacache", "serve", "--port", "0", "--data-dir", str(data_dir)]
    cmd += ["--fsync", "false", "--repo-quota-bytes", str(quota_bytes), "--log-level", "warning"]
    if storage_url is not None:
        cmd += ["--storage-url", storage_url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=clean_env())
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("ghacache listening on "):
            raise SystemExit(f"ghacache serve did not start (exit status {proc.wait()})")
        url = line.removeprefix("ghacache listening on ")
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


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            digest.update(chunk)
    return digest.hexdigest()


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


@dataclass
class Target:
    """One ghacache server and what the client needs to reach it."""

    name: str
    url: str
    token: str


class Bench:
    def __init__(self, source: Path, work: Path, single_put_bytes: int) -> None:
        self.source, self.work, self.single_put_bytes = source, work, single_put_bytes
        self.size = source.stat().st_size
        self.sha256 = sha256_of(source)

    def config(self, target: Target) -> ClientConfig:
        return ClientConfig(
            token=target.token, url_v2=target.url, single_put_bytes=self.single_put_bytes
        )

    def upload(self, target: Target, key: str) -> float:
        """Seconds from the start of ``save`` to the finalize's answer."""

        async def go() -> float:
            async with CacheClient(self.config(target)) as c:
                start = time.perf_counter()
                await c.save(key, VERSION, self.source)
                return time.perf_counter() - start

        return asyncio.run(go())

    def download(self, target: Target, key: str) -> float:
        """Seconds of ``download_to``; the bytes are checked afterwards."""
        out = self.work / "down.bin"

        async def go() -> float:
            async with CacheClient(self.config(target)) as c:
                entry = await c.lookup(key, VERSION)
                assert entry is not None, f"{target.name}: {key} not found"
                reader = await c.open(entry)
                start = time.perf_counter()
                written = await reader.download_to(out)
                seconds = time.perf_counter() - start
                assert written == self.size, (target.name, written)
                return seconds

        seconds = asyncio.run(go())
        self.check(out, target.name)
        return seconds

    def check(self, out: Path, what: str) -> None:
        try:
            if sha256_of(out) != self.sha256:
                raise SystemExit(f"{what}: downloaded bytes differ from the source")
        finally:
            out.unlink()


class RawMoto:
    """One PUT and one GET of the whole file straight to moto with boto3."""

    def __init__(self, moto: str, bucket: str, bench: Bench) -> None:
        self.bucket, self.bench = bucket, bench
        self.s3 = boto3.client(
            "s3",
            endpoint_url=moto,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(
                s3={"addressing_style": "path"},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                retries={"max_attempts": 1},
                read_timeout=600,
            ),
        )

    def put(self, key: str) -> float:
        with self.bench.source.open("rb") as body:
            start = time.perf_counter()
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=body)
            return time.perf_counter() - start

    def get(self, key: str) -> float:
        out = self.bench.work / "raw.bin"
        with out.open("wb") as f:
            start = time.perf_counter()
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
            for chunk in body.iter_chunks(MiB):
                f.write(chunk)
            seconds = time.perf_counter() - start
        self.s3.delete_object(Bucket=self.bucket, Key=key)  # keep moto's memory flat
        self.bench.check(out, "raw moto")
        return seconds


def upload_mode(size: int, single_put_bytes: int) -> str:
    if size <= single_put_bytes:
        return "one Put Blob request"
    blocks = -(-size // DEFAULT_BLOCK_BYTES)
    return f"{blocks} blocks of {DEFAULT_BLOCK_BYTES // MiB} MiB, {DEFAULT_CONCURRENCY} in flight"


def run(bench: Bench, targets: dict[str, Target], raw: RawMoto, reps: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {}
    size = bench.size

    def add(name: str, seconds: float) -> None:
        rates.setdefault(name, []).append(mbps(size, seconds))

    def contender(name: str, rep: int) -> None:
        if name == "raw moto":
            key = f"raw-{rep}"
            add("raw put", raw.put(key))
            add("raw get", raw.get(key))
            return
        key = f"bench-{name}-{rep}"
        add(f"{name} upload", bench.upload(targets[name], key))
        add(f"{name} download", bench.download(targets[name], key))

    for rep in range(reps):
        # Interleaved: every contender once per repetition, the order reversed every other one.
        order = ["s3", "file", "raw moto"]
        if rep % 2:
            order.reverse()
        for name in order:
            contender(name, rep)
        now = {name: values[-1] for name, values in rates.items()}
        print(
            f"rep {rep + 1}/{reps} ({' > '.join(order)}): "
            f"s3 up {now['s3 upload']:.0f} down {now['s3 download']:.0f} | "
            f"file up {now['file upload']:.0f} down {now['file download']:.0f} | "
            f"raw moto put {now['raw put']:.0f} get {now['raw get']:.0f} MB/s",
            flush=True,
        )

    med = {name: statistics.median(values) for name, values in rates.items()}
    ratios = {
        "upload s3/file": med["s3 upload"] / med["file upload"],
        "download s3/file": med["s3 download"] / med["file download"],
        "upload s3/raw moto": med["s3 upload"] / med["raw put"],
        "download s3/raw moto": med["s3 download"] / med["raw get"],
    }
    rows = [
        ("file", f"{med['file upload']:.0f}", f"{med['file download']:.0f}"),
        ("s3 (moto)", f"{med['s3 upload']:.0f}", f"{med['s3 download']:.0f}"),
        ("ratio s3/file", f"{ratios['upload s3/file']:.2f}", f"{ratios['download s3/file']:.2f}"),
    ]
    print_table(("backend (medians)", "upload MB/s", "download MB/s"), rows)
    rows = [
        ("boto3 straight to moto", f"{med['raw put']:.0f}", f"{med['raw get']:.0f}"),
        (
            "ratio ghacache s3/raw",
            f"{ratios['upload s3/raw moto']:.2f}",
            f"{ratios['download s3/raw moto']:.2f}",
        ),
    ]
    print_table(("raw moto, one request (medians)", "PUT MB/s", "GET MB/s"), rows)
    return {"rates_mbps": rates, "medians_mbps": med, "ratios": ratios}


def print_table(header: tuple[str, str, str], rows: list[tuple[str, str, str]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
    print()
    print(f"| {header[0]:<{widths[0]}} | {header[1]:>{widths[1]}} | {header[2]:>{widths[2]}} |")
    print(f"|:{'-' * widths[0]}-|-{'-' * widths[1]}:|-{'-' * widths[2]}:|")
    for a, b, c in rows:
        print(f"| {a:<{widths[0]}} | {b:>{widths[1]}} | {c:>{widths[2]}} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--single-put-mib",
        type=int,
        default=DEFAULT_SINGLE_PUT_BYTES // MiB,
        help="client uploads up to this size in one request, larger ones in blocks "
        "(default: the client's default)",
    )
    parser.add_argument(
        "--tmp",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="directory for the file, the downloads, the servers' data and moto's spooled "
        "objects (default: tmpfs, so disk write-back does not add noise)",
    )
    summary.add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.size_mib, args.reps = 8, 1
    size = args.size_mib * MiB
    single_put_bytes = args.single_put_mib * MiB
    # Every upload stays (one entry per repetition per server): keep them all under quota.
    quota = (args.reps + 2) * size
    mode = upload_mode(size, single_put_bytes)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ghacache-bench-", dir=args.tmp) as tmp:
        work = Path(tmp)
        source = work / "random.bin"
        random_file(source, size)
        bench = Bench(source, work, single_put_bytes)
        print(f"{args.size_mib} MiB, {args.reps} repetitions; client v2 upload: {mode}")
        with moto_server(work) as moto:
            bucket, raw_bucket = f"bench-{secrets.token_hex(4)}", f"raw-{secrets.token_hex(4)}"
            create_bucket(moto, bucket)
            create_bucket(moto, raw_bucket)
            s3 = s3_url(moto, bucket, "ghacache")
            with (
                spawned_server(work / "data-s3", quota, s3) as (s3_at, s3_token),
                spawned_server(work / "data-file", quota, None) as (file_at, file_token),
            ):
                targets = {
                    "s3": Target("s3", s3_at, s3_token),
                    "file": Target("file", file_at, file_token),
                }
                figures = run(bench, targets, RawMoto(moto, raw_bucket, bench), args.reps)
    elapsed = time.perf_counter() - started
    result = {
        "benchmark": "object_storage",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "size_bytes": size,
        "repetitions": args.reps,
        "client": {
            "protocol": "v2",
            "block_bytes": DEFAULT_BLOCK_BYTES,
            "concurrency": DEFAULT_CONCURRENCY,
            "single_put_bytes": single_put_bytes,
            "upload": mode,
        },
        "versions": {name: dist_version(name) for name in ("moto", "obstore", "boto3")},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "storage": args.tmp or tempfile.gettempdir(),
        "elapsed_s": round(elapsed, 1),
        **figures,
    }
    out_dir = ROOT / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"object_storage-{int(time.time())}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out} ({elapsed:.0f} s)")
    med, ratios = figures["medians_mbps"], figures["ratios"]
    label = f"{args.size_mib} MiB through S3 (moto)"
    summary.write(
        args.summary,
        "object_storage",
        [
            summary.Row(metric=f"upload {label}", value=med["s3 upload"], unit="MB/s",
                        baseline="local files", baseline_value=med["file upload"],
                        ratio=ratios["upload s3/file"]),
            summary.Row(metric=f"download {label}", value=med["s3 download"], unit="MB/s",
                        baseline="local files", baseline_value=med["file download"],
                        ratio=ratios["download s3/file"]),
        ],
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
