"""``ghacache save`` and ``ghacache restore``: actions/cache from the command line.

Archives, keys and versions are the official client's, so a cache saved here restores with
``actions/cache`` and the reverse. The service comes from the runner's environment
(``ACTIONS_RESULTS_URL``/``ACTIONS_CACHE_URL``, ``ACTIONS_RUNTIME_TOKEN``,
``ACTIONS_CACHE_SERVICE_V2``) unless flags or ``GHACACHE_*`` variables say otherwise.

Exit codes: restore 0 = restored (exact or restore-key hit) or missed, 4 = missed with
``--fail-on-miss``; save 0 = saved, or the key already exists (a notice says so);
1 = error; 2 = usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ghacache.cli import archive
from ghacache.cli.progress import ProgressBar
from ghacache.client import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_CONCURRENCY,
    DEFAULT_SINGLE_PUT_BYTES,
    DEFAULT_TIMEOUT_S,
    CacheClient,
    ClientConfig,
    RetrySettings,
)
from ghacache.errors import EntryExists, GhacacheError, RemoteProtocolError
from ghacache.protocol.keys import validate_keys
from ghacache.server.config import Setting, parse_bool, parse_duration, parse_size

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_MISS = 0, 1, 2, 4
MiB = 1024 * 1024

CLIENT_SETTINGS: tuple[Setting, ...] = (
    Setting("key", "", "`save`/`restore`: the primary cache key."),
    Setting(
        "path",
        "",
        "`save`/`restore`: a file, directory or glob to cache (`!` excludes), relative to "
        "`GITHUB_WORKSPACE` or the current directory; repeat the flag (one per line in the variable).",
    ),
    Setting(
        "restore_key",
        "",
        "`restore`: a key prefix to fall back on, tried in order; repeat the flag (one per "
        "line in the variable).",
    ),
    Setting("fail_on_miss", "false", "`restore`: exit 4 when no entry matches.", "bool"),
    Setting("lookup_only", "false", "`restore`: check for a match, download nothing.", "bool"),
    Setting(
        "results_url",
        "",
        "`save`/`restore`: v2 service URL (default `ACTIONS_RESULTS_URL` when "
        "`ACTIONS_CACHE_SERVICE_V2` is true).",
    ),
    Setting(
        "cache_url",
        "",
        "`save`/`restore`: v1 service URL (default `ACTIONS_CACHE_URL`, else `ACTIONS_RESULTS_URL`).",
    ),
    Setting("token", "", "`save`/`restore`: runtime token (default `ACTIONS_RUNTIME_TOKEN`)."),
    Setting(
        "protocol",
        "",
        "`save`/`restore`: `v1` or `v2`; by default v2 when a v2 URL is known, else v1 (as BuildKit).",
    ),
    Setting(
        "block_size",
        f"{DEFAULT_BLOCK_BYTES // MiB}MiB",
        "`save`: size of the parallel upload blocks (v2 Put Block, v1 PATCH chunks).",
        "size",
    ),
    Setting("concurrency", str(DEFAULT_CONCURRENCY), "`save`: blocks in flight at once.", "int"),
    Setting(
        "single_put_size",
        f"{DEFAULT_SINGLE_PUT_BYTES // MiB}MiB",
        "`save`: archives up to this size go in one request, streamed from disk.",
        "size",
    ),
    Setting(
        "timeout",
        f"{DEFAULT_TIMEOUT_S / 60:g}m",
        "`save`/`restore`: deadline of each request, its retries and back-off included.",
        "duration",
    ),
)
_BY_NAME = {s.name: s for s in CLIENT_SETTINGS}
_LISTS = ("path", "restore_key")
_FLAGS = ("fail_on_miss", "lookup_only")
_UPLOAD = ("block_size", "concurrency", "single_put_size")


def setting(name: str) -> Setting:
    """The ``CLIENT_SETTINGS`` row called ``name`` (other commands reuse the connection rows)."""
    return _BY_NAME[name]


def add_parsers(sub: Any, env_default: Callable[[Setting], str]) -> None:
    """Add ``save`` and ``restore`` to the ``ghacache`` sub-command parser."""
    save = sub.add_parser("save", help="save paths to the cache, like actions/cache/save")
    restore = sub.add_parser("restore", help="restore paths from the cache, like actions/cache")
    common = [n for n in _BY_NAME if n not in ("restore_key", *_FLAGS, *_UPLOAD)]
    for parser, names in (
        (save, [*common, *_UPLOAD]),
        (restore, [*common, "restore_key", *_FLAGS]),
    ):
        for name in names:
            setting = _BY_NAME[name]
            env = env_default(setting)
            text = f"{setting.help} [env {setting.env}]"
            if name in _LISTS:
                parser.add_argument(setting.flag, dest=name, action="append", help=text)
                parser.set_defaults(**{f"{name}_env": [v for v in env.splitlines() if v.strip()]})
            elif name in _FLAGS:
                parser.add_argument(
                    setting.flag, dest=name, action="store_true", default=parse_bool(env), help=text
                )
            else:
                parser.add_argument(setting.flag, dest=name, default=env, help=text)


def _list(args: argparse.Namespace, name: str) -> list[str]:
    given = getattr(args, name)
    return list(given) if given is not None else list(getattr(args, f"{name}_env", []))


def _value(args: argparse.Namespace, name: str) -> str:
    """A flag's value; commands without the flag (restore has no upload flags) get the default."""
    return str(getattr(args, name, _BY_NAME[name].default))


def client_config(args: argparse.Namespace) -> ClientConfig:
    """The ``ClientConfig`` for parsed connection flags, the runner's variables filling gaps.

    Raises:
        ValueError: a bad value, or no token or URL anywhere.
    """
    if args.protocol not in ("", "v1", "v2"):
        raise ValueError(f"--protocol must be v1 or v2, got {args.protocol!r}")
    return ClientConfig.from_env(
        os.environ,
        token=args.token or None,
        url=args.cache_url or None,
        url_v2=args.results_url or None,
        protocol=args.protocol or None,
        block_bytes=parse_size(_value(args, "block_size")),
        concurrency=int(_value(args, "concurrency")),
        single_put_bytes=parse_size(_value(args, "single_put_size")),
        retry=RetrySettings(timeout_s=parse_duration(args.timeout)),
    )


def _workspace() -> Path:
    return Path(os.environ.get("GITHUB_WORKSPACE") or os.getcwd()).resolve()


def _temp_dir() -> Path:
    base = os.environ.get("RUNNER_TEMP") or None
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="ghacache-", dir=base))


def _write_outputs(**outputs: str) -> None:
    """Append ``name=value`` lines to ``$GITHUB_OUTPUT``, as actions/cache's outputs."""
    path = os.environ.get("GITHUB_OUTPUT")
    if not path:
        return
    with open(path, "a", encoding="utf-8") as f:
        for name, value in outputs.items():
            f.write(f"{name.replace('_', '-')}={value}\n")


def _inputs(args: argparse.Namespace, restore_keys: Sequence[str] = ()) -> tuple[str, list[str]]:
    if not args.key:
        raise ValueError("--key (or GHACACHE_KEY) is required")
    paths = _list(args, "path")
    if not paths:
        raise ValueError("at least one --path (or GHACACHE_PATH) is required")
    try:
        validate_keys([args.key, *restore_keys])
    except RemoteProtocolError as exc:
        raise ValueError(exc.message) from exc
    return args.key, paths


async def _save(config: ClientConfig, key: str, version: str, archive_path: Path) -> None:
    async with CacheClient(config) as client:
        await client.save(key, version, archive_path, progress=ProgressBar("upload  "))


async def _restore(
    config: ClientConfig, keys: Sequence[str], version: str, target: Path | None
) -> str | None:
    async with CacheClient(config) as client:
        entry = await client.lookup(keys, version)
        if entry is None:
            return None
        if target is not None:
            async with await client.open(entry) as reader:
                await reader.download_to(target, progress=ProgressBar("download"))
        return entry.key


def save(args: argparse.Namespace) -> int:
    key, paths = _inputs(args)
    config = client_config(args)
    workspace = _workspace()
    compression = archive.detect_compression()
    version = archive.cache_version(paths, compression)
    try:
        members = archive.resolve_paths(paths, workspace, Path.cwd())
    except ValueError as exc:  # nothing matched: not a usage error, nothing to save
        print(f"ghacache: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    temp = _temp_dir()
    try:
        archive_path = temp / archive.archive_name(compression)
        archive.create_archive(archive_path, members, workspace, compression)
        size = archive_path.stat().st_size
        print(f"Cache Size: ~{round(size / MiB)} MB ({size} B)")
        try:
            asyncio.run(_save(config, key, version, archive_path))
        except EntryExists:
            print(
                f"Cache not saved: an entry with key {key} already exists (another job saved it)."
            )
            return EXIT_OK
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    print(f"Cache saved with key: {key}")
    return EXIT_OK


def restore(args: argparse.Namespace) -> int:
    restore_keys = _list(args, "restore_key")
    key, paths = _inputs(args, restore_keys)
    keys = [key, *restore_keys]
    config = client_config(args)
    workspace = _workspace()
    compression = archive.detect_compression()
    version = archive.cache_version(paths, compression)
    temp = None if args.lookup_only else _temp_dir()
    try:
        target = None if temp is None else temp / archive.archive_name(compression)
        matched = asyncio.run(_restore(config, keys, version, target))
        if matched is None:
            _write_outputs(cache_hit="false", cache_primary_key=key, cache_matched_key="")
            print(f"Cache not found for input keys: {', '.join(keys)}")
            return EXIT_MISS if args.fail_on_miss else EXIT_OK
        if target is not None:
            archive.extract_archive(target, workspace, compression)
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    exact = matched.lower() == key.lower()  # actions/cache compares case-insensitively
    _write_outputs(cache_hit=str(exact).lower(), cache_primary_key=key, cache_matched_key=matched)
    how = "exact match" if exact else "restore-key match"
    verb = "Cache found and can be restored" if args.lookup_only else "Cache restored"
    print(f"{verb} from key: {matched} ({how})")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Run ``save`` or ``restore``; returns the exit code (see the module docstring)."""
    try:
        return save(args) if args.command == "save" else restore(args)
    except ValueError as exc:  # bad input or configuration, found before any transfer
        print(f"ghacache: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (GhacacheError, OSError) as exc:
        print(f"ghacache: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
