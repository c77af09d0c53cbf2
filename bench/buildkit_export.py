"""Export time of a 50-layer BuildKit cache: parallel uploads vs one at a time (like BuildKit).

Builds a synthetic BuildKit local cache directory (a chain of N random gzip-sized layers with
one record per layer), then exports it to a fresh ghacache server (real CLI, loopback) with
``ghacache.buildkit`` at parallelism 8 and at parallelism 1, interleaved, and prints medians
and the ratio.

Usage: .venv/bin/python bench/buildkit_export.py [--layers 50] [--layer-mib 4] [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import summary  # bench/summary.py: the contract with bench/run.py

from ghacache.buildkit.backend import BuildkitCache
from ghacache.buildkit.layout import blob_path, write_layout
from ghacache.cacheconfig.model import (
    CacheConfig,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    LayerAnnotations,
)
from ghacache.client import CacheClient, ClientConfig


def make_layout(root: Path, layers: int, layer_bytes: int) -> None:
    cache_layers, records = [], []
    for i in range(layers):
        data = os.urandom(layer_bytes)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = blob_path(root, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        created = f"2026-11-27T12:00:{i % 60:02d}Z"
        ann = LayerAnnotations(
            media_type="application/vnd.oci.image.layer.v1.tar+gzip",
            diff_id="sha256:" + hashlib.sha256(b"diff" + data[:64]).hexdigest(),
            size=layer_bytes,
            created_at=created,
        )
        cache_layers.append(CacheLayer(blob=digest, parent=i - 1, annotations=ann))
        inputs = ((CacheInput(link=i - 1),),) if i else ()
        records.append(
            CacheRecord(
                digest="sha256:" + hashlib.sha256(f"record-{i}".encode()).hexdigest(),
                results=(CacheResult(layer=i, created_at=created),),
                inputs=inputs,
            )
        )
    write_layout(root, CacheConfig(layers=tuple(cache_layers), records=tuple(records)))


def start_server(data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ghacache",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(data_dir),
            "--fsync",
            "false",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip().removeprefix("ghacache listening on ")


def token(data_dir: Path) -> str:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "ghacache",
            "token",
            "--data-dir",
            str(data_dir),
            "--repo",
            "bench/app",
            "--scope",
            "refs/heads/main:rw",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


async def export_once(directory: Path, parallel: int) -> float:
    with tempfile.TemporaryDirectory(prefix="ghacache-bk-") as tmp:
        data_dir = Path(tmp)
        proc, url = start_server(data_dir)
        try:
            config = ClientConfig(token=token(data_dir), url=url, protocol="v2")
            async with CacheClient(config) as client:
                cache = BuildkitCache(client, parallel=parallel)
                start = time.perf_counter()
                report = await cache.export(directory, scope="bench")
                elapsed = time.perf_counter() - start
                assert len(report.uploaded) > 0
                return elapsed
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            if proc.stdout:
                proc.stdout.close()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=50)
    parser.add_argument("--layer-mib", type=float, default=4.0)
    parser.add_argument("--runs", type=int, default=3)
    summary.add_arguments(parser)
    args = parser.parse_args()
    if args.quick:
        args.layers, args.layer_mib, args.runs = 5, 0.0625, 1
    with tempfile.TemporaryDirectory(prefix="ghacache-layout-") as tmp:
        directory = Path(tmp)
        make_layout(directory, args.layers, int(args.layer_mib * 1024 * 1024))
        times: dict[int, list[float]] = {8: [], 1: []}
        for _ in range(args.runs):
            for parallel in (8, 1):  # interleaved
                times[parallel].append(await export_once(directory, parallel))
    par, seq = statistics.median(times[8]), statistics.median(times[1])
    total_mib = args.layers * args.layer_mib
    print(
        f"BuildKit cache export: {args.layers} layers x {args.layer_mib:g} MiB, fresh server each run, median of {args.runs}"
    )
    print(f"{'uploads':<16} {'median s':>9} {'MiB/s':>8}   runs")
    print(
        f"{'parallel (8)':<16} {par:>9.2f} {total_mib / par:>8.0f}   {', '.join(f'{t:.2f}' for t in times[8])}"
    )
    print(
        f"{'one at a time':<16} {seq:>9.2f} {total_mib / seq:>8.0f}   {', '.join(f'{t:.2f}' for t in times[1])}"
    )
    print(f"speed-up: {seq / par:.2f}x")
    summary.write(
        args.summary,
        "buildkit_export",
        [
            summary.Row(
                metric=f"BuildKit export, {args.layers} layers x {args.layer_mib:g} MiB",
                value=par,
                unit="s",
                baseline="one upload at a time",
                baseline_value=seq,
                ratio=seq / par,
            )
        ],
    )
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "buildkit_export.json").write_text(
        json.dumps(
            {
                "layers": args.layers,
                "layer_mib": args.layer_mib,
                "parallel_s": times[8],
                "sequential_s": times[1],
                "speedup": seq / par,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
