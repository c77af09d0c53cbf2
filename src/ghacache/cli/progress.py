"""A one-line progress bar on stderr for long transfers (only when stderr is a terminal)."""

from __future__ import annotations

import sys
import time
from typing import TextIO

MiB = 1024 * 1024
# Transfers smaller than this finish before a bar is worth drawing.
MIN_BYTES = 16 * MiB
_WIDTH = 30


class ProgressBar:
    """Call with (done, total); redraws at most ten times a second, ends the line at 100%."""

    def __init__(self, label: str, *, stream: TextIO | None = None, force: bool = False) -> None:
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.start = time.monotonic()
        self._drawn = 0.0
        self._finished = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total < MIN_BYTES or self._finished:
            return
        now = time.monotonic()
        if done < total and now - self._drawn < 0.1:
            return
        self._drawn = now
        fraction = done / total if total else 1.0
        filled = int(fraction * _WIDTH)
        rate = done / max(now - self.start, 1e-6) / 1e6
        line = (
            f"\r{self.label} [{'#' * filled}{'.' * (_WIDTH - filled)}] {fraction:4.0%} "
            f"{done / MiB:,.0f}/{total / MiB:,.0f} MiB {rate:,.0f} MB/s"
        )
        self.stream.write(line)
        if done >= total:
            self.stream.write("\n")
            self._finished = True
        self.stream.flush()
