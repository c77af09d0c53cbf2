"""The benchmark commands still run: ``bench/run.py --quick`` (tiny sizes, no timing asserts).

Figures from a quick run mean nothing; what this checks is that every benchmark starts its
servers, moves and verifies its bytes, and reports every headline figure it promises.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"

pytestmark = pytest.mark.slow


def test_quick_run_of_every_benchmark_reports_every_figure(tmp_path: Path) -> None:
    record_path = tmp_path / "run.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH / "run.py"), "--quick", "--out", str(record_path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    record = json.loads(record_path.read_text())
    assert record["failed"] == []
    by_name = {r["benchmark"]: r["rows"] for r in record["results"]}
    expected = {"transfer", "metadata", "replica_lookups", "object_storage", "buildkit_export"}
    assert set(by_name) == expected
    for name, rows in by_name.items():
        assert rows, f"{name} reported no figures"
        for row in rows:
            assert row["value"] > 0, (name, row)
            if row["baseline"] is not None:
                assert row["baseline_value"] > 0 and row["ratio"] > 0, (name, row)
    assert "| benchmark | figure | value |" in proc.stdout


def test_quick_soak_reports_its_contract_and_no_unexpected_error(tmp_path: Path) -> None:
    """``bench/soak.py --quick``: every operation of the mix ran, and nothing went wrong."""
    summary_path, record_path = tmp_path / "summary.json", tmp_path / "soak.json"
    args = ["--quick", "--summary", str(summary_path), "--out", str(record_path)]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "soak.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    headline = json.loads(summary_path.read_text())
    assert headline["benchmark"] == "soak"
    rows = {r["metric"]: r for r in headline["rows"]}
    assert set(rows) == {
        "operations/s, mixed",
        "upload, verified",
        "unexpected errors",
        "server RSS at the end",
        "server RSS slope after warm-up",
    }
    assert rows["unexpected errors"]["value"] == 0 and rows["unexpected errors"]["met"] is True
    assert rows["operations/s, mixed"]["value"] > 0 and rows["upload, verified"]["value"] > 0

    record = json.loads(record_path.read_text())
    assert record["unexpected"] == 0 and record["unexpected_messages"] == []
    outcomes = record["outcomes"]
    expected = {"saved", "hit", "miss", "one-won", "deleted", "gone", "vanished", "no-key"}
    assert set(outcomes) == set(record["settings"]["mix"])  # every operation ran
    for kind, counts in outcomes.items():
        assert set(counts) <= expected, (kind, counts)
    assert outcomes["save_v2"]["saved"] > 0 and outcomes["save_v1"]["saved"] > 0
    assert outcomes["restore_recent"].get("hit", 0) > 0  # restored bytes were verified
    assert outcomes["race"].get("one-won", 0) > 0
    assert not any(status.startswith("5") for status in record["server_statuses"])
    assert record["server_exit"] == 0
    assert record["evictions"]["quota"] > 0  # the quota was small enough to bite
    samples = record["samples"]
    assert len(samples) >= 3 and all(s["rss_mb"] > 0 and s["fds"] > 0 for s in samples)
    assert "| operation | ops | ops/s |" in proc.stdout and "RSS slope" in proc.stdout
