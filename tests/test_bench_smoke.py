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
