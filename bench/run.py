"""Run every benchmark and print one table of headline figures.

    .venv/bin/python bench/run.py                 # the full run (about an hour on 2 cores)
    .venv/bin/python bench/run.py --quick         # tiny sizes, one round: a smoke check
    .venv/bin/python bench/run.py --only transfer metadata
    .venv/bin/python bench/run.py --only soak     # the 10-minute soak (never in the full run)

Each benchmark runs as its own process, one after another (so they never share the cores),
prints its detailed tables, and hands its headline figures back through ``--summary`` (see
``bench/summary.py``). The combined table goes to stdout and, with every row, to
``bench/results/run-<time>.json``. Missing a target is reported, not an error; the exit
status is non-zero only if a benchmark failed.

Needs: wrk and nginx (``apt-get install wrk nginx-light``), PostgreSQL on 127.0.0.1:5432
(``GHACACHE_BENCH_POSTGRES_URL``) and the official client in ``tests/js`` (``npm ci``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
# In running order: the long transfer runs first, while the machine is freshest.
BENCHMARKS = ("transfer", "metadata", "replica_lookups", "object_storage", "buildkit_export")
# Run only when named with --only: the soak (bench/soak.py) loads the server for 10 minutes.
ON_REQUEST = ("soak",)


def run_one(name: str, quick: bool, out: Path) -> tuple[dict[str, Any] | None, float]:
    cmd = [sys.executable, str(ROOT / f"{name}.py"), "--summary", str(out)]
    if quick:
        cmd.append("--quick")
    print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, check=False)
    elapsed = time.monotonic() - started
    if proc.returncode != 0 or not out.exists():
        print(f"=== {name} FAILED (exit {proc.returncode}) after {elapsed:.0f} s", flush=True)
        return None, elapsed
    result: dict[str, Any] = json.loads(out.read_text())
    return result, elapsed


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| benchmark | figure | value | compared with | ratio | target | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for row in result["rows"]:
            baseline = ""
            if row["baseline"]:
                baseline = f"{row['baseline']} ({_fmt(row['baseline_value'])} {row['unit']})"
            met = {True: "yes", False: "**no**", None: ""}[row["met"]]
            lines.append(
                f"| {result['benchmark']} | {row['metric']} | {_fmt(row['value'])} {row['unit']} "
                f"| {baseline} | {_fmt(row['ratio'])} | {row['target'] or ''} | {met} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=BENCHMARKS + ON_REQUEST,
        help="run just these (soak runs only when named here)",
    )
    parser.add_argument("--out", type=Path, help="where the JSON record goes")
    args = parser.parse_args()
    chosen = [b for b in BENCHMARKS + ON_REQUEST if b in (args.only or BENCHMARKS)]
    results: list[dict[str, Any]] = []
    failed: list[str] = []
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ghacache-run-") as tmp:
        for name in chosen:
            result, timings[name] = run_one(name, args.quick, Path(tmp) / f"{name}.json")
            if result is None:
                failed.append(name)
            else:
                results.append(result)
    print(f"\n## Results ({'quick' if args.quick else 'full'} run, {os.cpu_count()} cores)\n")
    print(table(results))
    if failed:
        print(f"\nFAILED: {', '.join(failed)}")
    out = args.out or ROOT / "results" / f"run-{datetime.now(UTC):%Y%m%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "quick": args.quick,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "seconds": timings,
        "failed": failed,
        "results": results,
    }
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
