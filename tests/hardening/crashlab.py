"""Machinery of the crash suite: server processes, per-case copies of a cache, and a look at
what a crash left in the index and the store.

A *site* is one cache's data: SQLite + local files, or a PostgreSQL database + an S3 prefix
(moto). Each case runs on a copy of one *golden* site that a real server populated, so no
request made to set a case up passes the crash point that case arms.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import obstore
import psycopg
from obstore.store import S3Store
from psycopg import sql

from ghacache.index.entries import EntryState
from tests.support.objectstores import S3_REGION, Service, pending_multipart_uploads
from tests.support.postgres import with_database

LAUNCHER = Path(__file__).with_name("launcher.py")
LISTENING = "ghacache listening on "
START_TIMEOUT_S = 60.0
# Variables a server must not inherit from the test run: settings and cloud credentials.
_FOREIGN_ENV = ("GHACACHE_", "AWS_", "AZURE_", "AZURITE_", "GOOGLE_")


def server_env(extra: Mapping[str, str] = {}) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_ENV)}
    return {**env, **extra}


# -- server processes -------------------------------------------------------------------------


@dataclass
class Child:
    pid: int
    exited: asyncio.Future[int]  # the return code; -9 after SIGKILL


class Launcher:
    """Client of ``launcher.py``: starts servers as children of one pre-loaded interpreter."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self._starting: deque[asyncio.Future[Child]] = deque()
        self._children: dict[int, Child] = {}
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls) -> Launcher:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(LAUNCHER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=server_env(),
        )
        assert proc.stdout is not None
        ready = await asyncio.wait_for(proc.stdout.readline(), START_TIMEOUT_S)
        assert json.loads(ready or b"null") == {"ready": True}, ready
        return cls(proc)

    async def _read(self) -> None:
        assert self._proc.stdout is not None
        loop = asyncio.get_running_loop()
        async for line in self._proc.stdout:
            message = json.loads(line)
            if "pid" in message:
                child = Child(message["pid"], loop.create_future())
                self._children[child.pid] = child
                self._starting.popleft().set_result(child)
            elif "exited" in message:
                self._children[message["exited"]].exited.set_result(message["returncode"])

    async def spawn(
        self, argv: Sequence[str], env: Mapping[str, str], stdout: Path, stderr: Path
    ) -> Child:
        assert self._proc.stdin is not None
        started: asyncio.Future[Child] = asyncio.get_running_loop().create_future()
        self._starting.append(started)
        request = {
            "argv": list(argv),
            "env": dict(env),
            "stdout": str(stdout),
            "stderr": str(stderr),
        }
        self._proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self._proc.stdin.drain()
        return await asyncio.wait_for(started, START_TIMEOUT_S)

    async def close(self) -> None:
        for child in self._children.values():
            if not child.exited.done():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.pid, signal.SIGKILL)
        assert self._proc.stdin is not None
        self._proc.stdin.close()
        await self._proc.wait()
        await self._reader


@dataclass
class Server:
    """One ``ghacache serve`` process on a site."""

    child: Child
    stdout: Path
    log: Path
    url: str = ""

    async def listening(self) -> bool:
        """Wait for the "listening" line: True, or False if the process died first."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            text = self.stdout.read_text() if self.stdout.exists() else ""
            if LISTENING in text:
                self.url = text.split(LISTENING, 1)[1].split()[0]
                return True
            if self.child.exited.done():
                return False
            if time.monotonic() > deadline:
                raise AssertionError(f"no server after {START_TIMEOUT_S} s; log:\n{self.logs()}")
            await asyncio.sleep(0.02)

    async def returncode(self, timeout_s: float = 30.0) -> int:
        try:
            return await asyncio.wait_for(asyncio.shield(self.child.exited), timeout_s)
        except TimeoutError:
            raise AssertionError(f"server still running after {timeout_s} s") from None

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not stopped within 10 s."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self.child.exited.done():
                return
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child.pid, sig)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.child.exited), 10)

    def kill(self) -> None:
        if not self.child.exited.done():
            with contextlib.suppress(ProcessLookupError):  # dead, its exit not yet reported
                os.kill(self.child.pid, signal.SIGKILL)

    def logs(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


# -- sites ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    id: int
    repo: str
    key: str
    version: str
    state: EntryState
    blob: str | None


@dataclass(frozen=True)
class Snapshot:
    """The index rows and the store's contents of a site, read from outside the server."""

    rows: list[Row]
    parts: int  # rows of the parts table
    uploads: list[str]  # files or objects under the store's uploads/
    blobs: set[str]  # blob names in the store
    multipart: list[str] = field(default_factory=list)  # S3 multipart uploads not finished

    @property
    def pending(self) -> list[str]:
        return [r.key for r in self.rows if r.state is not EntryState.COMMITTED]

    @property
    def orphan_blobs(self) -> set[str]:
        return self.blobs - {r.blob for r in self.rows if r.blob is not None}

    @property
    def missing_blobs(self) -> set[str]:
        return {r.blob for r in self.rows if r.blob is not None} - self.blobs

    def leftovers(self) -> dict[str, object]:
        """Everything a crash may leave that recovery must remove (empty when clean)."""
        found: dict[str, object] = {
            "uncommitted entries": self.pending,
            "parts rows": self.parts,
            "staged uploads": self.uploads,
            "orphan blobs": sorted(self.orphan_blobs),
            "committed entries without bytes": sorted(self.missing_blobs),
            "unfinished multipart uploads": self.multipart,
        }
        return {what: value for what, value in found.items() if value}


class Site(Protocol):
    name: str
    data_dir: Path

    def server_args(self) -> list[str]: ...

    async def snapshot(self) -> Snapshot: ...

    async def put_store_object(self, path: str, data: bytes) -> None:
        """Write ``path`` (``blobs/<name>`` or ``uploads/<upload>/<part>``) behind the server."""
        ...

    async def delete_store_object(self, path: str) -> None: ...

    async def receiving(self) -> bool:
        """Whether an upload's body is arriving: 8 MiB staged, or a multipart upload begun."""
        ...


def _rows(raw: Sequence[Sequence[Any]]) -> list[Row]:
    return [Row(int(r[0]), r[1], r[2], r[3], EntryState(int(r[4])), r[5]) for r in raw]


_ROWS_SQL = "SELECT id, repo, key, version, state, blob FROM entries ORDER BY id"
_PARTS_SQL = "SELECT COUNT(*) FROM parts"


@dataclass
class FileSite:
    """SQLite and local files, all under ``data_dir`` (the server's defaults)."""

    name: str
    data_dir: Path

    @property
    def store(self) -> Path:
        return self.data_dir / "store"

    def server_args(self) -> list[str]:
        return []

    def _read_index(self) -> tuple[list[Row], int]:
        path = self.data_dir / "index.sqlite"
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            return _rows(db.execute(_ROWS_SQL).fetchall()), db.execute(_PARTS_SQL).fetchone()[0]

    async def snapshot(self) -> Snapshot:
        rows, parts = await asyncio.to_thread(self._read_index)
        uploads = sorted(str(p.relative_to(self.store)) for p in self.store.rglob("uploads/*"))
        blobs = {p.name for p in self.store.glob("blobs/*/*")}
        return Snapshot(rows=rows, parts=parts, uploads=uploads, blobs=blobs)

    def _object_path(self, path: str) -> Path:
        kind, _, name = path.partition("/")
        return self.store / kind / (name[-2:] if kind == "blobs" else "") / name

    async def put_store_object(self, path: str, data: bytes) -> None:
        target = self._object_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    async def delete_store_object(self, path: str) -> None:
        self._object_path(path).unlink()

    async def receiving(self) -> bool:
        staged = (p for p in self.store.glob("uploads/*/*") if p.is_file())
        return any(p.stat().st_size >= 8 * 1024 * 1024 for p in staged)


class FileSites:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def new(self, name: str) -> FileSite:
        return FileSite(name, self.root / name / "data")

    async def clone(self, source: Site, name: str) -> FileSite:
        assert isinstance(source, FileSite)
        site = await self.new(name)
        await asyncio.to_thread(shutil.copytree, source.data_dir, site.data_dir)
        return site

    async def close(self) -> None:
        pass


@dataclass
class CloudSite:
    """A PostgreSQL database and a prefix of an S3 bucket (moto)."""

    name: str
    data_dir: Path  # the secret only
    database_url: str
    moto: Service
    bucket: str
    prefix: str
    s3: S3Store  # the whole bucket, for looking behind the server's back

    def server_args(self) -> list[str]:
        options = {
            "endpoint": self.moto.url,
            "region": S3_REGION,
            "allow_http": "true",
            "access_key_id": "testing",
            "secret_access_key": "testing",
        }
        query = "&".join(f"{k}={v}" for k, v in options.items())
        storage = f"s3://{self.bucket}/{self.prefix}?{query}"
        return ["--database-url", self.database_url, "--storage-url", storage]

    async def _list(self, under: str) -> list[str]:
        metas = await obstore.list(self.s3, f"{self.prefix}/{under}").collect_async()
        return sorted(m["path"].removeprefix(f"{self.prefix}/") for m in metas)

    async def snapshot(self) -> Snapshot:
        async with await psycopg.AsyncConnection.connect(self.database_url) as db:
            rows = _rows(await (await db.execute(_ROWS_SQL)).fetchall())
            (parts,) = await (await db.execute(_PARTS_SQL)).fetchone() or (0,)
        multipart = await asyncio.to_thread(pending_multipart_uploads, self.moto.url, self.bucket)
        return Snapshot(
            rows=rows,
            parts=int(parts),
            uploads=await self._list("uploads/"),
            blobs={p.removeprefix("blobs/") for p in await self._list("blobs/")},
            multipart=[k for k in multipart if k.startswith(f"{self.prefix}/")],
        )

    async def put_store_object(self, path: str, data: bytes) -> None:
        await obstore.put_async(self.s3, f"{self.prefix}/{path}", data)

    async def delete_store_object(self, path: str) -> None:
        await obstore.delete_async(self.s3, f"{self.prefix}/{path}")

    async def receiving(self) -> bool:
        return bool((await self.snapshot()).multipart)


class CloudSites:
    """Databases on the test PostgreSQL server and prefixes in one moto bucket."""

    def __init__(
        self,
        root: Path,
        admin: psycopg.AsyncConnection[Any],
        base_url: str,
        moto: Service,
        bucket: str,
    ) -> None:
        self.root = root
        self.admin = admin
        self.base_url = base_url
        self.moto = moto
        self.bucket = bucket
        self.s3 = S3Store(
            bucket,
            endpoint=moto.url,
            region=S3_REGION,
            access_key_id="testing",
            secret_access_key="testing",
            client_options={"allow_http": True},
        )
        self.databases: list[str] = []
        # CREATE DATABASE ... TEMPLATE fails while anything else uses the template.
        self._lock = asyncio.Lock()

    async def _site(self, name: str, database: str) -> CloudSite:
        self.databases.append(database)
        return CloudSite(
            name=name,
            data_dir=self.root / name / "data",
            database_url=with_database(self.base_url, database),
            moto=self.moto,
            bucket=self.bucket,
            prefix=name,
            s3=self.s3,
        )

    async def new(self, name: str) -> CloudSite:
        database = f"ghacache_crash_{secrets.token_hex(6)}"
        await self.admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        return await self._site(name, database)

    async def clone(self, source: Site, name: str) -> CloudSite:
        assert isinstance(source, CloudSite)
        database = f"ghacache_crash_{secrets.token_hex(6)}"
        template = source.database_url.rsplit("/", 1)[1]
        async with self._lock:
            await self.admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(database), sql.Identifier(template)
                )
            )
        site = await self._site(name, database)
        await asyncio.to_thread(shutil.copytree, source.data_dir, site.data_dir)
        metas = await obstore.list(self.s3, f"{source.prefix}/").collect_async()
        await asyncio.gather(
            *(
                obstore.copy_async(
                    self.s3, m["path"], site.prefix + m["path"].removeprefix(source.prefix)
                )
                for m in metas
            )
        )
        return site

    async def close(self) -> None:
        for database in self.databases:
            await self.admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database))
            )
