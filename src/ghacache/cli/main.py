"""The ``ghacache`` command: the only code that reads argv and the environment.

Every flag has a ``GHACACHE_*`` twin; flags win over variables, variables over defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from aiohttp import web

from ghacache._version import __version__
from ghacache.cli import buildkit, cache, caches
from ghacache.protocol.scopes import parse_scope_spec
from ghacache.server.config import SETTINGS, ServerConfig, Setting, parse_bool, parse_duration
from ghacache.server.logformat import configure_logging

# Settings of `ghacache token` beyond the server's (documented in the same README table).
TOKEN_SETTINGS: tuple[Setting, ...] = (
    Setting("repo", "", "token: repository (OWNER/NAME) the token belongs to."),
    Setting(
        "scope",
        "",
        "token: a scope as REF:rw, REF:r or REF:w; repeat the flag (or separate with spaces "
        "in the variable) for several.",
    ),
    Setting("ttl", "6h", "token: lifetime of the minted token.", "duration"),
    Setting("admin", "false", "token: mint an admin token for the management API instead.", "bool"),
)


def _env_default(setting: Setting) -> str:
    return os.environ.get(setting.env, setting.default)


def _add_setting(parser: argparse.ArgumentParser, setting: Setting) -> None:
    parser.add_argument(
        setting.flag,
        dest=setting.name,
        default=_env_default(setting),
        metavar=setting.name.upper(),
        help=f"{setting.help} [env {setting.env}, default {setting.default!r}]",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ghacache",
        description="GitHub Actions cache: server, client and BuildKit cache backend",
    )
    parser.add_argument("--version", action="version", version=f"ghacache {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the cache server")
    for setting in SETTINGS:
        _add_setting(serve, setting)

    token = sub.add_parser("token", help="mint a runtime token the server accepts")
    by_name = {s.name: s for s in SETTINGS}
    _add_setting(token, by_name["data_dir"])
    _add_setting(token, by_name["secret_file"])
    for setting in TOKEN_SETTINGS:
        if setting.name == "scope":
            env = _env_default(setting).split()
            token.add_argument(
                setting.flag,
                dest="scope",
                action="append",
                default=None,
                metavar="REF:PERM",
                help=f"{setting.help} [env {setting.env}]",
            )
            token.set_defaults(scope_env=env)
        elif setting.name == "admin":
            token.add_argument(
                setting.flag,
                dest="admin",
                action="store_true",
                default=parse_bool(_env_default(setting)),
                help=f"{setting.help} [env {setting.env}]",
            )
        else:
            _add_setting(token, setting)

    by_token = {s.name: s for s in TOKEN_SETTINGS}
    caches.add_parser(sub, _env_default, by_token["repo"])
    cache.add_parsers(sub, _env_default)
    buildkit.add_parser(sub, _env_default)
    return parser


def _server_config(args: argparse.Namespace) -> ServerConfig:
    return ServerConfig.from_strings({s.name: getattr(args, s.name) for s in SETTINGS})


async def _serve(config: ServerConfig) -> None:
    from ghacache.server.app import create_app

    app = await create_app(config)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, backlog=1024)
    await site.start()
    host, port = runner.addresses[0][:2]
    # Everything built so far lives as long as the process. Freezing it keeps the garbage
    # collector's full passes from rescanning ~50,000 objects (tens of ms) under load, which
    # was the lookup latency tail.
    gc.collect()
    gc.freeze()
    print(f"ghacache listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _token(args: argparse.Namespace) -> str:
    from ghacache.server.auth import load_or_create_secret, mint_admin_token, mint_token

    data_dir = Path(args.data_dir)
    secret_path = Path(args.secret_file) if args.secret_file else data_dir / "secret"
    ttl_s = parse_duration(args.ttl)
    if args.admin:
        return mint_admin_token(load_or_create_secret(secret_path), ttl_s=ttl_s, now=time.time())
    if not args.repo:
        raise ValueError("--repo OWNER/NAME is required")
    specs = args.scope if args.scope is not None else args.scope_env
    if not specs:
        raise ValueError("at least one --scope REF:rw|r|w is required")
    scopes = [parse_scope_spec(s) for s in specs]
    secret = load_or_create_secret(secret_path)
    return mint_token(secret, repository=args.repo, scopes=scopes, ttl_s=ttl_s, now=time.time())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            config = _server_config(args)
            configure_logging(config.log_level, config.log_format)
            asyncio.run(_serve(config))
        elif args.command == "token":
            print(_token(args))
        elif args.command == "buildkit":
            return buildkit.run(args)
        elif args.command == "caches":
            return caches.run(args)
        elif args.command in ("save", "restore"):
            return cache.run(args)
    except ValueError as exc:
        print(f"ghacache: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
