"""The headline figures a benchmark hands to ``bench/run.py``.

Every benchmark accepts ``--quick`` (tiny sizes, one round: a smoke check of the command)
and ``--summary PATH``, where it writes ``{"benchmark": NAME, "rows": [Row, ...]}`` as JSON.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True, kw_only=True)
class Row:
    """One headline figure, optionally compared with a baseline measured in the same run."""

    metric: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None
    target: str | None = None
    met: bool | None = None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one round (smoke)")
    parser.add_argument("--summary", type=Path, help="write the headline figures here as JSON")


def write(path: Path | None, benchmark: str, rows: list[Row]) -> None:
    if path is not None:
        path.write_text(
            json.dumps({"benchmark": benchmark, "rows": [asdict(r) for r in rows]}, indent=2)
        )
