"""Cache archives exactly as ``@actions/cache`` makes them, so either side restores the other's.

The same ``version`` (sha256 of ``paths|compression|1.0``, with the patterns as written), the
same tar invocation (``--posix``, ``-P``, ``-C <workspace>``, a manifest of paths relative to
the workspace, ``zstdmt`` to compress and ``unzstd`` to extract), and gzip only when zstd is
missing, as the official client falls back.
"""

from __future__ import annotations

import glob
import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

Compression = Literal["zstd-without-long", "gzip"]
VERSION_SALT = "1.0"
MANIFEST = "manifest.txt"


def detect_compression() -> Compression:
    """``zstd-without-long`` if ``zstd --quiet --version`` prints something, else ``gzip``."""
    if shutil.which("zstd") is None:
        return "gzip"
    try:
        out = subprocess.run(
            ["zstd", "--quiet", "--version"], capture_output=True, text=True, check=False
        ).stdout
    except OSError:
        return "gzip"
    return "zstd-without-long" if out.strip() else "gzip"


def cache_version(
    paths: Sequence[str], compression: Compression, *, windows_only: bool = False
) -> str:
    """The ``version`` actions/cache sends: sha256 of ``paths|compression[|windows-only]|1.0``.

    ``paths`` are the patterns exactly as written (not the files they match).
    """
    parts = [*paths, compression, *(["windows-only"] if windows_only else []), VERSION_SALT]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()


def archive_name(compression: Compression) -> str:
    return "cache.tzst" if compression == "zstd-without-long" else "cache.tgz"


def resolve_paths(patterns: Sequence[str], workspace: Path, cwd: Path) -> list[str]:
    """Match the patterns (globs, ``~``, ``!`` exclusions) and make them workspace-relative.

    Like ``@actions/glob`` with ``implicitDescendants: false``: a matched directory is listed
    once and tar takes its whole tree.

    Returns:
        Posix paths relative to ``workspace`` (``..`` allowed, ``.`` for the workspace).

    Raises:
        ValueError: nothing matched (the official client's "Path Validation Error").
    """
    matched: dict[str, None] = {}
    excluded: set[str] = set()
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = os.path.expanduser(pattern.removeprefix("!"))
        absolute = pattern if os.path.isabs(pattern) else str(cwd / pattern)
        found = sorted(glob.glob(absolute, recursive=True, include_hidden=True))
        for path in found:
            normal = os.path.normpath(path)
            if negate:
                excluded.add(normal)
            else:
                matched[normal] = None
    relative = [
        Path(os.path.relpath(p, workspace)).as_posix() for p in matched if p not in excluded
    ]
    if not relative:
        raise ValueError(
            "Path Validation Error: Path(s) specified in the action for caching do(es) not "
            "exist, hence no cache is being saved."
        )
    return relative


def _compress_args(compression: Compression, mode: Literal["create", "extract"]) -> list[str]:
    if compression == "gzip":
        return ["-z"]
    return ["--use-compress-program", "zstdmt" if mode == "create" else "unzstd"]


def _run(args: list[str], cwd: Path | None = None) -> None:
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise OSError(
            f"{' '.join(args[:3])} ... failed with exit code {proc.returncode}: "
            f"{proc.stderr.strip() or proc.stdout.strip()}"
        )


def create_archive(
    archive: Path, members: Sequence[str], workspace: Path, compression: Compression
) -> None:
    """Write ``members`` (workspace-relative) into ``archive`` with the official tar command.

    Raises:
        OSError: tar failed.
    """
    folder = archive.parent
    (folder / MANIFEST).write_text("\n".join(members))
    name = archive.as_posix()
    args = ["tar", "--posix", "-cf", name, "--exclude", name, "-P", "-C", str(workspace)]
    args += ["--files-from", MANIFEST, *_compress_args(compression, "create")]
    _run(args, cwd=folder)


def extract_archive(archive: Path, workspace: Path, compression: Compression) -> None:
    """Unpack ``archive`` into ``workspace`` (created if needed) as the official client does.

    Raises:
        OSError: tar failed.
    """
    workspace.mkdir(parents=True, exist_ok=True)
    args = ["tar", "-xf", archive.as_posix(), "-P", "-C", str(workspace)]
    _run([*args, *_compress_args(compression, "extract")])
