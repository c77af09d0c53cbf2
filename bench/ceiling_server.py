"""A do-nothing cache server: the official client's own ceiling for bench/transfer.py.

    .venv/bin/python bench/ceiling_server.py --dir /dev/shm/ceiling --port 0

It speaks just enough of both protocols for ``@actions/cache`` to save and restore, and does
nothing else: no tokens are checked, no rules enforced, nothing is fsynced or indexed, and
entries live in a dict. Bytes go straight from the socket to files and back with sendfile:

- v2: Twirp ``CreateCacheEntry`` / ``FinalizeCacheEntryUpload`` / ``GetCacheEntryDownloadURL``
  (JSON); Put Blob and Put Block each write one file, Put Block List only records the order
  (nothing is copied: a download sends the block files one after the other).
- v1: reserve, ``PATCH`` chunks written at their ``Content-Range`` offset into one file,
  commit, lookup.
- ``GET``/``HEAD`` of an entry, with ``Range: bytes=a-b``, by sendfile.

It prints ``ceiling listening on http://HOST:PORT`` as its first line.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
READ_BYTES = 4 * 1024 * 1024
_BLOCK_ID = re.compile(r"<(?:Latest|Committed|Uncommitted)>([^<]*)</")
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@dataclass
class Entry:
    key: str
    version: str
    directory: Path
    blocks: dict[str, Path] = field(default_factory=dict)
    parts: list[Path] = field(default_factory=list)  # the bytes, in order
    committed: bool = False


class Ceiling:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.entries: dict[int, Entry] = {}
        self.counter = itertools.count()

    def base(self, request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def reserve(self, key: str, version: str) -> int:
        entry_id = len(self.entries) + 1
        directory = self.root / str(entry_id)
        directory.mkdir(parents=True)
        self.entries[entry_id] = Entry(key, version, directory)
        return entry_id

    def find(self, keys: list[str], version: str) -> tuple[int, Entry] | None:
        committed = [
            (i, e) for i, e in self.entries.items() if e.committed and e.version == version
        ]
        for key in keys:
            for i, e in reversed(committed):
                if e.key == key:
                    return i, e
            for i, e in reversed(committed):
                if e.key.startswith(key):
                    return i, e
        return None

    def entry(self, request: web.Request) -> Entry:
        try:
            return self.entries[int(request.match_info["entry_id"])]
        except (KeyError, ValueError):
            raise web.HTTPNotFound() from None

    # -- v2 ----------------------------------------------------------------------------

    async def twirp(self, request: web.Request) -> web.Response:
        body = await request.json()
        method = request.match_info["method"]
        if method == "CreateCacheEntry":
            entry_id = self.reserve(body["key"], body["version"])
            url = f"{self.base(request)}/blobs/{entry_id}"
            return web.json_response({"ok": True, "signed_upload_url": url})
        if method == "FinalizeCacheEntryUpload":
            for entry_id, e in reversed(self.entries.items()):
                if e.key == body["key"] and e.version == body["version"] and not e.committed:
                    e.committed = True
                    return web.json_response({"ok": True, "entry_id": str(entry_id)})
            return web.json_response({"ok": False, "entry_id": "0"})
        if method == "GetCacheEntryDownloadURL":
            keys = [body["key"], *body.get("restore_keys", [])]
            found = self.find(keys, body["version"])
            if found is None:
                return web.json_response(
                    {"ok": False, "signed_download_url": "", "matched_key": ""}
                )
            url = f"{self.base(request)}/blobs/{found[0]}"
            return web.json_response(
                {"ok": True, "signed_download_url": url, "matched_key": found[1].key}
            )
        raise web.HTTPNotFound()

    async def put(self, request: web.Request) -> web.Response:
        e = self.entry(request)
        comp = request.query.get("comp")
        if comp == "block":
            path = e.directory / f"block-{next(self.counter)}"
            await receive(request, path, 0)
            e.blocks[request.query["blockid"]] = path
        elif comp == "blocklist":
            ids = _BLOCK_ID.findall((await request.read()).decode())
            e.parts = [e.blocks[i] for i in ids]
        else:
            path = e.directory / "blob"
            await receive(request, path, 0)
            e.parts = [path]
        return web.Response(status=201)

    # -- v1 ----------------------------------------------------------------------------

    async def v1_lookup(self, request: web.Request) -> web.Response:
        found = self.find(request.query["keys"].split(","), request.query["version"])
        if found is None:
            return web.Response(status=204)
        entry_id, e = found
        return web.json_response(
            {
                "scope": "refs/heads/main",
                "cacheKey": e.key,
                "cacheVersion": e.version,
                "creationTime": "2024-01-01T00:00:00Z",
                "archiveLocation": f"{self.base(request)}/blobs/{entry_id}",
            }
        )

    async def v1_reserve(self, request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"cacheId": self.reserve(body["key"], body["version"])})

    async def v1_patch(self, request: web.Request) -> web.Response:
        e = self.entry(request)
        m = _CONTENT_RANGE.match(request.headers.get("Content-Range", ""))
        if m is None:
            raise web.HTTPBadRequest()
        e.parts = [e.directory / "blob"]
        await receive(request, e.parts[0], int(m.group(1)))
        return web.Response(status=204)

    async def v1_commit(self, request: web.Request) -> web.Response:
        e = self.entry(request)
        if not e.parts:  # an empty entry
            e.parts = [e.directory / "blob"]
            e.parts[0].touch()
        e.committed = True
        return web.Response(status=204)

    # -- downloads ---------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.StreamResponse:
        e = self.entry(request)
        if not e.committed:
            raise web.HTTPNotFound()
        sizes = [p.stat().st_size for p in e.parts]
        total = sum(sizes)
        start, end = 0, total  # [start, end)
        m = _RANGE.match(request.headers.get("x-ms-range") or request.headers.get("Range") or "")
        ranged = m is not None and bool(m.group(1) or m.group(2))
        if m is not None and ranged:
            if m.group(1):
                start = int(m.group(1))
                end = min(total, int(m.group(2)) + 1) if m.group(2) else total
            else:
                start = max(0, total - int(m.group(2)))
            if start >= end:
                raise web.HTTPRequestRangeNotSatisfiable()
        resp = web.StreamResponse(status=206 if ranged else 200)
        resp.content_length = end - start
        resp.content_type = "application/octet-stream"
        resp.headers["Accept-Ranges"] = "bytes"
        if ranged:
            resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        loop = asyncio.get_running_loop()
        offset = 0
        for path, size in zip(e.parts, sizes, strict=True):
            lo, hi = max(start, offset), min(end, offset + size)
            if lo < hi:
                transport = request.transport
                if transport is None:
                    raise ConnectionResetError("client went away")
                with path.open("rb") as f:
                    await loop.sendfile(transport, f, lo - offset, hi - lo)
            offset += size
        await resp.write_eof()
        return resp


async def receive(request: web.Request, path: Path, offset: int) -> None:
    """Write the request body into ``path`` from ``offset`` (created if missing)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while chunk := await request.content.read(READ_BYTES):
            view = memoryview(chunk)
            while view:
                n = os.pwrite(fd, view, offset)
                offset += n
                view = view[n:]
    finally:
        os.close(fd)


def make_app(root: Path) -> web.Application:
    ceiling = Ceiling(root)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    v1 = "/{prefix:.*}_apis/artifactcache/"
    app.router.add_post(TWIRP + "{method}", ceiling.twirp)
    app.router.add_put("/blobs/{entry_id}", ceiling.put)
    app.router.add_get("/blobs/{entry_id}", ceiling.get)
    app.router.add_get(v1 + "cache", ceiling.v1_lookup)
    app.router.add_post(v1 + "caches", ceiling.v1_reserve)
    app.router.add_patch(v1 + "caches/{entry_id}", ceiling.v1_patch)
    app.router.add_post(v1 + "caches/{entry_id}", ceiling.v1_commit)
    return app


async def serve(root: Path, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(root), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    print(f"ceiling listening on http://{bound[0]}:{bound[1]}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="where uploads are written")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(serve(args.dir, args.host, args.port))


if __name__ == "__main__":
    main()
