"""``ghacache caches list|delete|usage|evictions``: ``gh cache``'s options against a server.

Exit codes: 0 success; 1 nothing matched (delete without --succeed-on-no-caches);
2 bad usage; 3 the server or network failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from ghacache.client.management import ManagementClient
from ghacache.errors import ClientError, ServerError
from ghacache.server.config import Setting

CACHES_SETTINGS: tuple[Setting, ...] = (
    Setting("url", "http://127.0.0.1:8080", "caches: base URL of the ghacache server."),
    Setting("admin_token", "", "caches: admin token (`ghacache token --admin`)."),
)

# gh's JSON field names for `gh cache list --json`.
JSON_FIELDS = {
    "id": "id",
    "key": "key",
    "ref": "ref",
    "version": "version",
    "sizeInBytes": "size_in_bytes",
    "createdAt": "created_at",
    "lastAccessedAt": "last_accessed_at",
}


def add_parser(sub: Any, env_default: Callable[[Setting], str], repo: Setting) -> None:
    caches = sub.add_parser("caches", help="list, delete and measure caches (like gh cache)")
    actions = caches.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        for s in CACHES_SETTINGS:
            p.add_argument(
                s.flag, dest=s.name, default=env_default(s), help=f"{s.help} [env {s.env}]"
            )
        p.add_argument(
            "-R",
            repo.flag,
            dest="repo",
            default=env_default(repo),
            help=f"OWNER/NAME [env {repo.env}]",
        )

    ls = actions.add_parser("list", help="list caches of a repository")
    common(ls)
    ls.add_argument("-k", "--key", help="only keys starting with this prefix")
    ls.add_argument("-r", "--ref", help="only caches of this ref, e.g. refs/heads/main")
    ls.add_argument(
        "-S",
        "--sort",
        default="last_accessed_at",
        choices=["created_at", "last_accessed_at", "size_in_bytes"],
    )
    ls.add_argument("-O", "--order", default="desc", choices=["asc", "desc"])
    ls.add_argument(
        "-L", "--limit", type=int, default=30, help="maximum number of caches (default 30)"
    )
    ls.add_argument(
        "--json", nargs="?", const=",".join(JSON_FIELDS), default=None, metavar="FIELDS",
        help=f"print JSON with these comma-separated fields ({', '.join(JSON_FIELDS)})",
    )  # fmt: skip

    rm = actions.add_parser("delete", help="delete caches by id or key")
    common(rm)
    rm.add_argument("target", nargs="?", help="a cache id or a cache key")
    rm.add_argument("-r", "--ref", help="with a key: only caches of this ref")
    rm.add_argument("-a", "--all", action="store_true", help="delete every cache of the repository")
    rm.add_argument(
        "--succeed-on-no-caches", action="store_true", help="exit 0 when nothing matched"
    )

    usage = actions.add_parser("usage", help="bytes and entries per repository")
    common(usage)
    usage.add_argument("--json", action="store_true", help="print JSON")

    ev = actions.add_parser("evictions", help="recently evicted or deleted caches")
    common(ev)
    ev.add_argument("-L", "--limit", type=int, default=30)
    ev.add_argument("--json", action="store_true", help="print JSON")


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    raise AssertionError("unreachable")


def _ago(iso: str) -> str:
    then = datetime.strptime(iso[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    secs = int((datetime.now(UTC) - then).total_seconds())
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if secs >= size:
            return f"{secs // size}{unit} ago"
    return f"{max(secs, 0)}s ago"


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    return "\n".join(lines)


def _require_repo(args: argparse.Namespace) -> str:
    if not args.repo or "/" not in args.repo:
        raise ValueError("-R/--repo OWNER/NAME is required")
    return str(args.repo)


Rows = list[tuple[str, ...]]


async def _run(args: argparse.Namespace) -> int:
    if not args.admin_token:
        raise ValueError(
            "--admin-token (or GHACACHE_ADMIN_TOKEN) is required; mint one with `ghacache token --admin`"
        )
    async with ManagementClient(args.url, args.admin_token) as client:
        if args.action == "list":
            repo = _require_repo(args)
            caches = await client.list_caches(
                repo,
                key=args.key,
                ref=args.ref,
                sort=args.sort,
                direction=args.order,
                limit=args.limit,
            )
            if args.json is not None:
                fields = [f for f in args.json.split(",") if f]
                unknown = [f for f in fields if f not in JSON_FIELDS]
                if unknown:
                    raise ValueError(
                        f"unknown --json field(s) {', '.join(unknown)}; known: {', '.join(JSON_FIELDS)}"
                    )
                print(
                    json.dumps([{f: c[JSON_FIELDS[f]] for f in fields} for c in caches], indent=2)
                )
            elif caches:
                rows: Rows = [
                    (
                        str(c["id"]),
                        c["key"],
                        human_size(int(c["size_in_bytes"])),
                        c["ref"],
                        _ago(c["created_at"]),
                        _ago(c["last_accessed_at"]),
                    )
                    for c in caches
                ]
                print(_table(rows, ("ID", "KEY", "SIZE", "REF", "CREATED", "ACCESSED")))
            else:
                print(f"no caches in {repo}", file=sys.stderr)
            return 0
        if args.action == "delete":
            return await _delete(client, args)
        if args.action == "usage":
            usages = (
                [await client.usage(args.repo)] if args.repo else await client.usage_by_repository()
            )
            if args.json:
                print(json.dumps(usages, indent=2))
            else:
                rows = [
                    (
                        u["full_name"],
                        str(u["active_caches_count"]),
                        human_size(int(u["active_caches_size_in_bytes"])),
                    )
                    for u in usages
                ]
                print(_table(rows, ("REPOSITORY", "CACHES", "SIZE")))
            return 0
        items = await client.evictions(args.repo or None, limit=args.limit)
        if args.json:
            print(json.dumps(items, indent=2))
        else:
            rows = [
                (
                    e["repository"],
                    e["key"],
                    human_size(int(e["size_in_bytes"])),
                    e["reason"],
                    _ago(e["evicted_at"]),
                )
                for e in items
            ]
            print(_table(rows, ("REPOSITORY", "KEY", "SIZE", "REASON", "EVICTED")))
        return 0


async def _delete(client: ManagementClient, args: argparse.Namespace) -> int:
    repo = _require_repo(args)
    if args.all == bool(args.target):
        raise ValueError("give a cache id or key, or --all (not both)")
    try:
        if args.all:
            caches = await client.list_caches(repo, limit=10**9)
            for c in caches:
                await client.delete_by_id(repo, int(c["id"]))
            deleted = len(caches)
        elif args.target.isdigit():
            await client.delete_by_id(repo, int(args.target))
            deleted = 1
        else:
            deleted = len(await client.delete_by_key(repo, args.target, args.ref))
    except ServerError as exc:
        if exc.status != 404:
            raise
        deleted = 0
    if deleted == 0:
        print(f"no caches to delete in {repo}", file=sys.stderr)
        return 0 if args.succeed_on_no_caches else 1
    print(f"deleted {deleted} cache{'s' if deleted != 1 else ''} from {repo}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_run(args))
    except ClientError as exc:
        print(f"ghacache: error: {exc}", file=sys.stderr)
        return 3
