"""``ghacache buildkit export|import|merge|gc|ls``: BuildKit's gha cache from the command line.

Connection settings are those of ``ghacache save/restore`` (``--results-url``,
``--cache-url``, ``--token``, ``--protocol`` or the runner's ``ACTIONS_*`` variables).
Exit codes: 0 success, 1 error (service, network, or a bad cache directory), 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ghacache.buildkit.backend import BuildkitCache
from ghacache.cacheconfig.keys import DEFAULT_SCOPE
from ghacache.cli import cache as client_cli
from ghacache.client import CacheClient
from ghacache.errors import GhacacheError
from ghacache.server.config import Setting, parse_bool

BUILDKIT_SETTINGS: tuple[Setting, ...] = (
    Setting(
        "buildkit_scope",
        DEFAULT_SCOPE,
        "`buildkit`: BuildKit cache scope (`scope=` of `type=gha`); import and ls take several, "
        "space-separated in the variable.",
        flag_override="--scope",
    ),
    Setting(
        "buildkit_ref",
        "",
        "`buildkit`: git ref of the index (default: the token's last writable ref for writes, "
        "every ref in the token for reads).",
        flag_override="--ref",
    ),
    Setting(
        "buildkit_dir",
        "",
        "`buildkit`: BuildKit local cache directory (OCI layout).",
        flag_override="--dir",
    ),
    Setting(
        "buildkit_tag",
        "latest",
        "`buildkit`: tag of the cache in the directory.",
        flag_override="--tag",
    ),
    Setting(
        "buildkit_mode",
        "max",
        "`buildkit export`: `max` exports every record; `min` only records with results and what "
        "they depend on.",
        "choice",
        ("min", "max"),
        flag_override="--mode",
    ),
    Setting(
        "buildkit_replace",
        "false",
        "`buildkit export`: write the directory's records alone instead of merging with the "
        "current index.",
        "bool",
        flag_override="--replace",
    ),
)
_B = {s.name: s for s in BUILDKIT_SETTINGS}
_CONNECTION = (
    "results_url",
    "cache_url",
    "token",
    "protocol",
    "concurrency",
    "timeout",
    "block_size",
    "single_put_size",
)


def add_parser(sub: Any, env_default: Callable[[Setting], str]) -> None:
    bk = sub.add_parser("buildkit", help="BuildKit type=gha caches: export, import, merge, gc, ls")
    actions = bk.add_subparsers(dest="action", required=True)

    def arg(
        p: argparse.ArgumentParser, name: str, *, many: bool = False, required: bool = False
    ) -> None:
        s = _B[name]
        env = env_default(s)
        text = f"{s.help} [env {s.env}]"
        if s.kind == "bool":
            p.add_argument(
                s.flag, dest=name, action="store_true", default=parse_bool(env), help=text
            )
        elif many:
            p.add_argument(s.flag, dest=name, action="append", default=None, help=text)
            p.set_defaults(**{f"{name}_env": env.split()})
        else:
            choices = list(s.choices) or None
            p.add_argument(
                s.flag,
                dest=name,
                default=env or None,
                choices=choices,
                required=required and not env,
                help=text,
            )

    def connection(p: argparse.ArgumentParser) -> None:
        for name in _CONNECTION:
            s = client_cli.setting(name)
            p.add_argument(
                s.flag, dest=name, default=env_default(s), help=f"{s.help} [env {s.env}]"
            )

    export = actions.add_parser("export", help="upload a BuildKit local cache directory")
    for name in (
        "buildkit_dir",
        "buildkit_scope",
        "buildkit_ref",
        "buildkit_tag",
        "buildkit_mode",
        "buildkit_replace",
    ):
        arg(export, name, required=name == "buildkit_dir")
    imp = actions.add_parser("import", help="write a BuildKit local cache directory")
    arg(imp, "buildkit_dir", required=True)
    arg(imp, "buildkit_scope", many=True)
    arg(imp, "buildkit_ref", many=True)
    arg(imp, "buildkit_tag")
    merge = actions.add_parser("merge", help="write the union of several indexes into one scope")
    arg(merge, "buildkit_scope")
    arg(merge, "buildkit_ref")
    merge.add_argument(
        "--from-scope", action="append", default=[], help="a scope to merge from (repeat)"
    )
    merge.add_argument(
        "--from-ref", action="append", default=[], help="a ref to merge from (repeat)"
    )
    gc = actions.add_parser("gc", help="drop index records whose blobs were evicted")
    arg(gc, "buildkit_scope")
    arg(gc, "buildkit_ref")
    ls = actions.add_parser(
        "ls", help="show indexes: generation, records, layers, size, missing blobs"
    )
    arg(ls, "buildkit_scope", many=True)
    arg(ls, "buildkit_ref", many=True)
    ls.add_argument("--json", action="store_true", help="print JSON")
    for p in (export, imp, merge, gc, ls):
        connection(p)


def _many(args: argparse.Namespace, name: str, default: list[str]) -> list[str]:
    given = getattr(args, name)
    return list(given) if given else (list(getattr(args, f"{name}_env", [])) or default)


async def _run(args: argparse.Namespace) -> int:
    config = client_cli.client_config(args)
    async with CacheClient(config) as client:
        cache = BuildkitCache(client, parallel=config.concurrency)
        if args.action == "export":
            report = await cache.export(
                Path(args.buildkit_dir),
                scope=args.buildkit_scope,
                ref=args.buildkit_ref,
                tag=args.buildkit_tag,
                mode=args.buildkit_mode,
                replace=args.buildkit_replace,
            )
            print(
                f"exported {report.records} records and {report.layers} layers as {report.index_key} "
                f"({len(report.uploaded)} blobs uploaded, {len(report.present)} already present)"
            )
        elif args.action == "import":
            scopes = _many(args, "buildkit_scope", [DEFAULT_SCOPE])
            imported = await cache.import_(
                Path(args.buildkit_dir),
                scopes=scopes,
                refs=_many(args, "buildkit_ref", []) or None,
                tag=args.buildkit_tag,
            )
            print(
                f"imported {imported.records} records from {', '.join(imported.index_keys)} "
                f"({len(imported.downloaded)} blobs downloaded, {len(imported.missing)} missing blobs dropped)"
            )
        elif args.action == "merge":
            key = await cache.merge_into(
                scope=args.buildkit_scope,
                ref=args.buildkit_ref,
                from_scopes=args.from_scope,
                from_refs=args.from_ref,
            )
            print(f"wrote {key}" if key else "nothing to merge")
        elif args.action == "gc":
            key, missing = await cache.gc(scope=args.buildkit_scope, ref=args.buildkit_ref)
            print(
                f"dropped records of {len(missing)} missing blobs; wrote {key}"
                if key
                else "nothing to collect"
            )
        else:
            infos = await cache.inspect(
                _many(args, "buildkit_scope", [DEFAULT_SCOPE]),
                _many(args, "buildkit_ref", []) or None,
            )
            if args.json:
                print(json.dumps([asdict(i) for i in infos], indent=2))
            for info in [] if args.json else infos:
                where = f"{info.scope} @ {info.ref or '(no ref)'}"
                if info.index_key is None:
                    print(f"{where}: no index")
                    continue
                print(
                    f"{where}: {info.index_key} (generation {info.generation}), {info.records} records, "
                    f"{info.layers} layers, {info.bytes} bytes, {len(info.missing_blobs)} missing blobs"
                )
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except GhacacheError as exc:
        print(f"ghacache buildkit: error: {exc}", file=sys.stderr)
        return 1
