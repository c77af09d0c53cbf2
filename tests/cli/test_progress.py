"""The CLI's progress bar: drawn only on a terminal (or when forced), only for long transfers."""

from __future__ import annotations

import io

from ghacache.cli.progress import MIN_BYTES, ProgressBar


def test_draws_and_ends_the_line() -> None:
    out = io.StringIO()
    bar = ProgressBar("upload", stream=out, force=True)
    total = 4 * MIN_BYTES
    bar(total // 2, total)
    bar(total, total)
    bar(total, total)  # a repeated final call draws nothing more
    text = out.getvalue()
    assert text.startswith("\rupload [") and "50%" in text and "100%" in text
    assert text.endswith("\n") and text.count("\n") == 1


def test_silent_off_a_terminal_and_for_small_transfers() -> None:
    out = io.StringIO()  # not a tty
    ProgressBar("upload", stream=out)(10 * MIN_BYTES, 10 * MIN_BYTES)
    forced_small = ProgressBar("upload", stream=out, force=True)
    forced_small(MIN_BYTES - 1, MIN_BYTES - 1)
    assert out.getvalue() == ""
