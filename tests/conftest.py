"""Shared fixtures: a real ghacache server on 127.0.0.1 (port 0) with an injected clock.

``server`` runs ``create_app`` in the test's event loop; ``spawn_server`` runs the real CLI
(``python -m ghacache serve``) in a subprocess for tests that kill or restart it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Middleware

from ghacache.protocol.scopes import parse_scope_spec
from ghacache.server.app import create_app
from ghacache.server.auth import load_or_create_secret, mint_token
from ghacache.server.config import ServerConfig
from ghacache.server.state import STATE, ServerState
from tests.support.objectstores import *  # noqa: F403  (moto, Azurite and store URL fixtures)
from tests.support.postgres import postgres_url  # noqa: F401


class Clock:
    """A settable clock; starts at the real time so signed URLs look plausible."""

    def __init__(self) -> None:
        self.t = time.time()

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class ServerHandle:
    url: str
    config: ServerConfig
    clock: Clock
    app: web.Application
    secret: bytes = field(repr=False)

    @property
    def state(self) -> ServerState:
        return self.app[STATE]

    def token(
        self, repo: str = "octo/repo", *scopes: str, ttl_s: float = 3600, now: float | None = None
    ) -> str:
        """A runtime token; scopes default to ``refs/heads/main:rw``."""
        specs = scopes or ("refs/heads/main:rw",)
        return mint_token(
            self.secret,
            repository=repo,
            scopes=[parse_scope_spec(s) for s in specs],
            ttl_s=ttl_s,
            now=self.clock() if now is None else now,
        )


async def start_server(
    tmp_path: Path, clock: Clock, *, middlewares: Sequence[Middleware] = (), **settings: str
) -> tuple[ServerHandle, web.AppRunner]:
    """Start a real server in this event loop; ``middlewares`` may inject faults."""
    values = {"data_dir": str(tmp_path / "data"), "port": "0", "fsync": "false", **settings}
    config = ServerConfig.from_strings(values)
    app = await create_app(config, now=clock, middlewares=middlewares)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    secret = load_or_create_secret(config.secret_path)
    return ServerHandle(f"http://{host}:{port}", config, clock, app, secret), runner


@asynccontextmanager
async def serving(
    tmp_path: Path, clock: Clock, *, middlewares: Sequence[Middleware] = (), **settings: str
) -> AsyncIterator[ServerHandle]:
    """``start_server``, stopped when the block ends: the body of most server fixtures."""
    handle, runner = await start_server(tmp_path, clock, middlewares=middlewares, **settings)
    try:
        yield handle
    finally:
        await runner.cleanup()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def server(tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    async with serving(tmp_path, clock) as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        yield session


# -- the real CLI in a subprocess ---------------------------------------------------------


@dataclass
class SpawnedServer:
    proc: subprocess.Popen[str]
    url: str
    data_dir: Path
    log: Path

    def token(self, repo: str = "octo/repo", *scopes: str, ttl: str = "1h") -> str:
        args = [sys.executable, "-m", "ghacache", "token", "--data-dir", str(self.data_dir)]
        args += ["--repo", repo, "--ttl", ttl]
        for s in scopes or ("refs/heads/main:rw",):
            args += ["--scope", s]
        return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()

    def kill(self) -> None:
        """SIGKILL: no clean-up handlers run, as in a crash."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        self._close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self._close()

    def _close(self) -> None:
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def spawn(data_dir: Path, *args: str, env: Mapping[str, str] | None = None) -> SpawnedServer:
    """Start ``ghacache serve --port 0`` and wait until it answers /healthz."""
    cmd = [sys.executable, "-m", "ghacache", "serve", "--port", "0", "--data-dir", str(data_dir)]
    # stderr goes to a file: an undrained pipe would block a chatty server.
    log = data_dir.parent / f"server-{data_dir.name}-{time.monotonic_ns()}.log"
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [*cmd, *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env={**os.environ, **(env or {})},
        )
    assert proc.stdout is not None
    first = proc.stdout.readline().strip()
    prefix = "ghacache listening on "
    if not first.startswith(prefix):
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise AssertionError(f"unexpected first line {first!r}; log: {log.read_text()}")
    url = first.removeprefix(prefix)
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    return SpawnedServer(proc, url, data_dir, log)


class Spawner(Protocol):
    def __call__(
        self, *args: str, data_dir: Path | None = None, env: Mapping[str, str] | None = None
    ) -> SpawnedServer: ...


@pytest.fixture
def spawn_server(tmp_path: Path) -> Iterator[Spawner]:
    """Start real server processes; all are stopped after the test."""
    started: list[SpawnedServer] = []

    def _spawn(
        *args: str, data_dir: Path | None = None, env: Mapping[str, str] | None = None
    ) -> SpawnedServer:
        s = spawn(data_dir or tmp_path / "data", *args, env=env)
        started.append(s)
        return s

    yield _spawn
    for s in started:
        s.stop()
