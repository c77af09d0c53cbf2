"""BuildKit fixtures (written by a real BuildKit; copied from shared/fixtures/buildkit)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "data" / "buildkit"


@dataclass(frozen=True)
class GhaEntry:
    order: int
    key: str
    version: str
    scope: str
    size: int
    data: bytes


def gha_entries() -> list[GhaEntry]:
    """Every entry BuildKit created over v2, in creation order."""
    doc = json.loads((ROOT / "gha" / "entries.json").read_text())
    out = [
        GhaEntry(
            e["order"],
            e["key"],
            e["version"],
            e["scope"],
            e["size"],
            (ROOT / "gha" / e["file"]).read_bytes(),
        )
        for e in doc["entries"]
    ]
    return sorted(out, key=lambda e: e.order)


def index_bytes(name: str) -> bytes:
    """An index document by key, e.g. ``index-build-a-1-f921bd05#2``."""
    return (ROOT / "gha" / "entries" / name.replace("#", "%23")).read_bytes()


def layout(name: str) -> Path:
    """A BuildKit local cache directory: ``build-a``, ``build-b`` or ``build-a2``."""
    return ROOT / f"local-cache-{name}"
