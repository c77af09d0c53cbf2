"""Transfer benchmark: ghacache's upload and download paths against nginx, a do-nothing server,
and curl, each comparison made within one run.

    .venv/bin/python bench/transfer.py                     # every section, 1 GiB, 5 repetitions
    .venv/bin/python bench/transfer.py --only raw client   # some sections
    .venv/bin/python bench/transfer.py --quick             # 8 MiB, 1 repetition (a smoke check)
    .venv/bin/python bench/transfer.py --summary out.json  # headline rows for bench/run.py

Sections (each figure is the median of ``--reps`` repetitions; within a repetition every
contender runs once, in an order that rotates from one repetition to the next):

- ``raw``: curl as the client, so only the servers differ. Downloads: a GET of the entry
  (already read once, so in the page cache) against nginx serving the same file with
  sendfile. Uploads: v2 Put Blob (one request); v2 in 32 MiB Put Block requests, 4 at a
  time, then Put Block List (the Azure SDK's pattern, as ``@actions/cache`` uses it); v1
  32 MiB PATCH chunks, 4 at a time (``@actions/cache`` 3.x's pattern); each timed from the
  reservation to the finalize/commit's answer, against nginx writing the same body to a
  file (a WebDAV ``PUT``, with 1 MiB body buffers: faster than nginx's 16 KiB default).
  Needs ``nginx`` (the bench runs its own, on a free port, in a temp dir).
- ``official``: ``@actions/cache`` 6.3.0 over v2 and 3.2.4 over v1 saving and restoring the
  file (wall time of the whole ``saveCache``/``restoreCache`` call: tar, zstd and the
  transfer), against ``bench/ceiling_server.py``, a server that only stores and returns
  bytes: the client's own ceiling.
- ``client``: ghacache's ``CacheClient`` (default settings: ``save`` from the file,
  ``open`` + ``download_to`` a file) against curl (one v2 Put Blob; one GET to a file).
- ``memory``: peak RSS of the ghacache server (sampled every 50 ms) while 8 curl clients
  upload the file at once (each in 32 MiB blocks, 4 at a time), then while 8 download it.
- ``sweep`` (only with ``--only sweep``): the client's uploads in blocks of 8 to 64 MiB,
  1 to 4 in flight, on both protocols: how its defaults were chosen.

Every transfer's byte count is checked, and every uploaded entry is read back and its
sha256 compared with the source's (outside the timed part); any mismatch or server error
fails the run (exit 1). A missed target never does. Rates are MB/s (10^6 bytes per second).
ghacache runs with ``--fsync false`` unless ``--fsync true`` is given: the figures measure
the transfer path, not how fast the disk flushes. Files live in ``--tmp`` (tmpfs by default,
so disk write-back adds no noise). Full figures go to bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import hashlib
import json
import os
import platform
import pwd
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import psutil

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))  # tests.support.official drives the npm clients

import summary  # noqa: E402  (bench/summary.py)
from summary import Row  # noqa: E402
from tests.support.official import ensure_node_modules, official_env, run_official  # noqa: E402

from ghacache.client import CacheClient, ClientConfig  # noqa: E402

SECTIONS = ("raw", "official", "client", "memory")  # the default run; "sweep" on request
MiB = 1024 * 1024
GiB = 1024 * MiB
VERSION = "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"
TWIRP = "/twirp/github.actions.results.api.v1.CacheService/"
V1 = "/_apis/artifactcache/"
V1_ACCEPT = "application/json;api-version=6.0-preview.1"
REPO = "bench/repo"
AZURE_SDK_BLOCKS = 32 * MiB  # @actions/cache's uploadChunkSize (v2 blocks and v1 chunks)
AZURE_SDK_CONCURRENCY = 4  # its uploadConcurrency
SWEEP_BLOCKS = (8, 16, 32, 64)  # MiB
SWEEP_CONCURRENCY = (1, 2, 4)
MEMORY_CLIENTS = 8
RSS_TARGET_BYTES = 200 * 1000 * 1000
# Fresh memory touched before each timed step, in entry sizes (see warm_memory).
WARM_FACTOR = 3


class Failure(Exception):
    """A transfer went wrong: a wrong byte count or digest, a server error, a tool failing."""


@dataclass(frozen=True)
class Settings:
    size: int
    reps: int
    block_bytes: int
    fsync: bool
    work: Path

    @property
    def label(self) -> str:
        return human(self.size)


@dataclass(frozen=True)
class Source:
    path: Path
    size: int
    sha256: str
    blocks: list[tuple[Path, int, int]]  # (file, offset, length) of each curl block


def human(n: int) -> str:
    """A byte count as "32 MiB", "1 GiB" or "256 KiB"."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB")):
        if n >= unit and n % unit == 0:
            return f"{n // unit} {name}"
    return f"{n // 1024} KiB"


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[Any], what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Failure(f"{what} exited with {proc.returncode} at start-up")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise Failure(f"{what} did not start listening on port {port}")


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True)
class Server:
    url: str
    token: str
    admin: str
    pid: int


def _cli(*args: str) -> str:
    cmd = [sys.executable, "-m", "ghacache", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()


@contextmanager
def ghacache(data_dir: Path, *, fsync: bool) -> Iterator[Server]:
    """A real ``ghacache serve`` on a free port, its quota far above what the bench stores."""
    cmd = [sys.executable, "-m", "ghacache", "serve", "--port", "0", "--data-dir", str(data_dir)]
    cmd += ["--fsync", str(fsync).lower(), "--log-level", "warning"]
    cmd += ["--repo-quota-bytes", "1000GiB", "--max-entry-size", "100GiB"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("ghacache listening on "):
            raise Failure(f"ghacache did not start: {line!r}")
        data = ["--data-dir", str(data_dir)]
        token = _cli("token", *data, "--repo", REPO, "--scope", "refs/heads/main:rw")
        admin = _cli("token", *data, "--admin")
        yield Server(line.removeprefix("ghacache listening on "), token, admin, proc.pid)
    finally:
        stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


@contextmanager
def ceiling(data_dir: Path) -> Iterator[Server]:
    cmd = [sys.executable, str(BENCH / "ceiling_server.py"), "--dir", str(data_dir)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("ceiling listening on "):
            raise Failure(f"the ceiling server did not start: {line!r}")
        yield Server(line.removeprefix("ceiling listening on "), "", "", proc.pid)
    finally:
        stop(proc)
        shutil.rmtree(data_dir, ignore_errors=True)


NGINX_CONF = """\
worker_processes 1;
daemon off;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {prefix}/www;
        location /files/ {{ }}
        location /up/ {{ dav_methods PUT; create_full_put_path on; }}
    }}
}}
"""


@contextmanager
def nginx(prefix: Path, source: Path) -> Iterator[tuple[str, Path]]:
    """nginx on a free port: GET /files/<source name> (sendfile), PUT /up/<name> into a file.

    Yields the base URL and the directory PUT bodies land in.
    """
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(exe):
        raise Failure("nginx is not installed (apt-get install nginx-light); or skip --only raw")
    (prefix / "www" / "files").mkdir(parents=True)
    (prefix / "www" / "up").mkdir()
    os.link(source, prefix / "www" / "files" / source.name)
    port = free_port()
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port, user=user))
    cmd = [exe, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")]
    proc = subprocess.Popen(cmd)
    try:
        wait_listening(port, proc, "nginx")
        yield f"http://127.0.0.1:{port}", prefix / "www" / "up"
    finally:
        stop(proc)
        shutil.rmtree(prefix, ignore_errors=True)


# -- HTTP helpers -----------------------------------------------------------------------------


def http(
    method: str, url: str, *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=600) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:300]
        raise Failure(f"{method} {url.split('?')[0]}: HTTP {exc.code}: {detail!r}") from exc


def twirp(server: Server, method: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    _, data = http(
        "POST", server.url + TWIRP + method, body=json.dumps(body).encode(), headers=headers
    )
    reply: dict[str, Any] = json.loads(data)
    if reply.get("ok") is False:
        raise Failure(f"{method}: not ok: {reply}")
    return reply


def v1_call(server: Server, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {
        "Authorization": f"Bearer {server.token}",
        "Accept": V1_ACCEPT,
        "Content-Type": "application/json",
    }
    _, data = http(method, server.url + V1 + path, body=json.dumps(body).encode(), headers=headers)
    return json.loads(data) if data.strip() else {}


def download_url(server: Server, key: str) -> str:
    body = {"key": key, "restore_keys": [], "version": VERSION}
    url: str = twirp(server, "GetCacheEntryDownloadURL", body)["signed_download_url"]
    return url


def delete_entry(server: Server, key: str) -> None:
    query = urllib.parse.urlencode({"key": key})
    headers = {"Authorization": f"Bearer {server.admin}"}
    http("DELETE", f"{server.url}/repos/{REPO}/actions/caches?{query}", headers=headers)


def curl(args: list[str], *, parallel: int = 0) -> list[str]:
    """Run curl (``args`` may hold several transfers joined by ``--next``); its -w lines."""
    cmd = ["curl"]
    if parallel:
        cmd += ["--parallel", "--parallel-immediate", "--parallel-max", str(parallel)]
    proc = subprocess.run(cmd + args, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise Failure(f"curl exited {proc.returncode}: {proc.stderr.strip()[:500]}")
    return proc.stdout.split()


def curl_upload(url: str, path: Path, *headers: str, method: str = "PUT") -> list[str]:
    """One curl transfer's options: send ``path`` as the body (no Expect: 100-continue)."""
    args = ["-sS", "--fail", "-X", method, "-H", "Expect:", "-o", "/dev/null"]
    for h in headers:
        args += ["-H", h]
    return [*args, "-w", "%{http_code}:%{size_upload}\\n", "-T", str(path), url]


def check_sent(lines: list[str], size: int, codes: tuple[str, ...]) -> None:
    sent = 0
    for line in lines:
        code, _, n = line.partition(":")
        if code not in codes:
            raise Failure(f"upload answered HTTP {code}")
        sent += int(float(n))
    if sent != size:
        raise Failure(f"curl sent {sent} bytes, not {size}")


def get_to(url: str, output: str, size: int) -> None:
    """GET ``url`` into ``output`` with curl, checking the byte count."""
    got = curl(["-sS", "--fail", "-o", output, "-w", "%{size_download}", url])
    if int(float(got[0])) != size:
        raise Failure(f"GET delivered {got[0]} bytes, not {size}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def sha256_url(url: str) -> tuple[int, str]:
    """Size and sha256 of what a GET of ``url`` returns (read through a pipe from curl)."""
    proc = subprocess.Popen(["curl", "-sS", "--fail", url], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    h = hashlib.sha256()
    size = 0
    while chunk := proc.stdout.read(4 * MiB):
        h.update(chunk)
        size += len(chunk)
    if proc.wait() != 0:
        raise Failure(f"GET {url.split('?')[0]} failed (curl exit {proc.returncode})")
    return size, h.hexdigest()


def verify_url(url: str, source: Source, what: str) -> None:
    size, digest = sha256_url(url)
    if (size, digest) != (source.size, source.sha256):
        raise Failure(f"{what}: read back {size} bytes with sha256 {digest[:16]}…, expected "
                      f"{source.size} with {source.sha256[:16]}…")  # fmt: skip


# -- uploads with curl, as each client pattern sends them -------------------------------------


def curl_put_blob(server: Server, key: str, source: Source) -> None:
    """v2: CreateCacheEntry, one Put Blob of the whole file, FinalizeCacheEntryUpload."""
    url = twirp(server, "CreateCacheEntry", {"key": key, "version": VERSION})["signed_upload_url"]
    headers = ("x-ms-blob-type: BlockBlob", "Content-Type: application/octet-stream")
    check_sent(curl(curl_upload(url, source.path, *headers)), source.size, ("201",))
    body = {"key": key, "version": VERSION, "size_bytes": str(source.size)}
    twirp(server, "FinalizeCacheEntryUpload", body)


def curl_put_blocks(server: Server, key: str, source: Source) -> None:
    """v2 like the Azure SDK: Put Block requests 4 at a time, Put Block List, finalize."""
    url = twirp(server, "CreateCacheEntry", {"key": key, "version": VERSION})["signed_upload_url"]
    prefix = uuid.uuid4().hex
    ids = [
        base64.b64encode(f"{prefix}{i:016d}".encode()).decode() for i in range(len(source.blocks))
    ]
    args: list[str] = []
    for block_id, (path, _, _) in zip(ids, source.blocks, strict=True):
        block_url = f"{url}&{urllib.parse.urlencode({'comp': 'block', 'blockid': block_id})}"
        args += [*(["--next"] if args else []), *curl_upload(block_url, path)]
    check_sent(curl(args, parallel=AZURE_SDK_CONCURRENCY), source.size, ("201",))
    xml = "".join(f"<Latest>{i}</Latest>" for i in ids)
    body = f'<?xml version="1.0" encoding="utf-8"?><BlockList>{xml}</BlockList>'.encode()
    http("PUT", f"{url}&comp=blocklist", body=body, headers={"Content-Type": "application/xml"})
    twirp(server, "FinalizeCacheEntryUpload",
          {"key": key, "version": VERSION, "size_bytes": str(source.size)})  # fmt: skip


def curl_patch_chunks(server: Server, key: str, source: Source) -> None:
    """v1 like @actions/cache 3.x: reserve, PATCH chunks 4 at a time, commit."""
    cache_id = v1_call(server, "POST", "caches",
                       {"key": key, "version": VERSION, "cacheSize": source.size})["cacheId"]  # fmt: skip
    url = f"{server.url}{V1}caches/{cache_id}"
    args: list[str] = []
    for path, offset, length in source.blocks:
        headers = (
            f"Authorization: Bearer {server.token}",
            f"Accept: {V1_ACCEPT}",
            "Content-Type: application/octet-stream",
            f"Content-Range: bytes {offset}-{offset + length - 1}/*",
        )
        args += [*(["--next"] if args else []), *curl_upload(url, path, *headers, method="PATCH")]
    check_sent(curl(args, parallel=AZURE_SDK_CONCURRENCY), source.size, ("204",))
    v1_call(server, "POST", f"caches/{cache_id}", {"size": source.size})


# -- results ----------------------------------------------------------------------------------


class Figures:
    """Per-contender samples of one section, printed as they come."""

    def __init__(self, section: str, unit: str) -> None:
        self.section = section
        self.unit = unit
        self.samples: dict[str, list[float]] = {}

    def add(self, name: str, value: float) -> None:
        self.samples.setdefault(name, []).append(value)

    def rep_done(self, rep: int, reps: int, names: list[str]) -> None:
        shown = ", ".join(f"{n} {self.samples[n][-1]:.{self.digits}f}" for n in names)
        print(f"{self.section} rep {rep + 1}/{reps} ({self.unit}): {shown}", flush=True)

    @property
    def digits(self) -> int:
        return 0 if self.unit in ("MB/s", "MB") else 2

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])


def warm_memory(work: Path, size: int) -> None:
    """Write ``size`` bytes to a file in ``work`` and delete it: run before each timed step.

    This machine is a VM whose host takes back memory the guest frees (virtio-balloon,
    DAMON), so touching fresh pages costs a trip to the host. Without this, whichever
    contender happened to run after a large free paid for it: in one run the official
    client's 1 GiB restore took 3.5-4.5 s in some positions of a repetition and 6-7.5 s in
    others, for ghacache and the ceiling server alike. With it, 3.1-4.0 s everywhere.
    """
    chunk = bytes(min(size, 64 << 20))
    path = work / "warm-memory"
    with path.open("wb") as f:
        for _ in range(0, size, len(chunk)):
            f.write(chunk)
    path.unlink()


def rotated(items: list[Any], rep: int) -> list[Any]:
    k = rep % len(items)
    return items[k:] + items[:k]


def ratio_row(
    metric: str, value: float, unit: str, baseline: str, base: float, target: float, *,
    higher_is_better: bool = True,
) -> Row:  # fmt: skip
    ratio = value / base
    met = ratio >= target if higher_is_better else ratio <= target
    wording = f">= {target} of {baseline}" if higher_is_better else f"<= {target}x {baseline}"
    return Row(metric=metric, value=round(value, 2), unit=unit, baseline=baseline,
               baseline_value=round(base, 2), ratio=round(ratio, 3), target=wording, met=met)  # fmt: skip


def table(header: list[str], rows: list[list[str]]) -> None:
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def show(rows: list[Row]) -> None:
    table(
        ["metric", "value", "baseline", "ratio", "target", "met"],
        [
            [
                r.metric,
                f"{r.value:g} {r.unit}",
                f"{r.baseline} {r.baseline_value:g} {r.unit}" if r.baseline else "",
                f"{r.ratio:.2f}" if r.ratio is not None else "",
                r.target or "",
                {True: "yes", False: "**no**", None: ""}[r.met],
            ]
            for r in rows
        ],
    )


# -- sections ---------------------------------------------------------------------------------


def section_raw(s: Settings, source: Source) -> tuple[list[Row], dict[str, Any]]:
    fig = Figures("raw", "MB/s")
    with (
        nginx(s.work / "nginx", source.path) as (nginx_url, put_dir),
        ghacache(s.work / "raw-data", fsync=s.fsync) as server,
    ):
        curl_put_blob(server, "raw-download", source)
        entry_url = download_url(server, "raw-download")
        file_url = f"{nginx_url}/files/{source.path.name}"
        verify_url(entry_url, source, "ghacache download")  # also reads it into the cache
        verify_url(file_url, source, "nginx download")
        counter = iter(range(1_000_000))

        def upload(name: str, fn: Callable[[Server, str, Source], None]) -> Callable[[], None]:
            def run() -> None:
                key = f"raw-{name.split()[0]}-{next(counter)}"
                fig.add(f"upload {name}", mbps(s.size, timed(lambda: fn(server, key, source))))
                verify_url(download_url(server, key), source, f"upload {name}")
                delete_entry(server, key)

            return run

        def nginx_put() -> None:
            target = put_dir / f"body-{next(counter)}"
            sent = timed(lambda: check_sent(
                curl(curl_upload(f"{nginx_url}/up/{target.name}", source.path)),
                source.size, ("201", "204")))  # fmt: skip
            fig.add("upload nginx", mbps(s.size, sent))
            if (target.stat().st_size, sha256_file(target)) != (source.size, source.sha256):
                raise Failure("nginx stored different bytes")
            target.unlink()

        def get(name: str, url: str) -> Callable[[], None]:
            return lambda: fig.add(
                name, mbps(s.size, timed(lambda: get_to(url, "/dev/null", s.size)))
            )

        steps = [
            get("download ghacache", entry_url),
            get("download nginx", file_url),
            nginx_put,
            upload("v2 Put Blob", curl_put_blob),
            upload("v2 blocks", curl_put_blocks),
            upload("v1 chunks", curl_patch_chunks),
        ]
        for rep in range(s.reps):
            for step in rotated(steps, rep):
                warm_memory(s.work, WARM_FACTOR * s.size)
                step()
            fig.rep_done(rep, s.reps, sorted(fig.samples))
    m = fig.median
    blocks = f"{human(s.block_bytes)} x {AZURE_SDK_CONCURRENCY}"
    rows = [
        ratio_row(f"download {s.label}, curl", m("download ghacache"), "MB/s",
                  "nginx", m("download nginx"), 0.8),
        ratio_row(f"upload {s.label}, curl, v2 Put Blob", m("upload v2 Put Blob"), "MB/s",
                  "nginx PUT", m("upload nginx"), 0.6),
        ratio_row(f"upload {s.label}, curl, v2 Put Block {blocks} + Put Block List",
                  m("upload v2 blocks"), "MB/s", "nginx PUT", m("upload nginx"), 0.6),
        ratio_row(f"upload {s.label}, curl, v1 PATCH {blocks} + commit", m("upload v1 chunks"),
                  "MB/s", "nginx PUT", m("upload nginx"), 0.6),
    ]  # fmt: skip
    return rows, {"rates_mbps": fig.samples}


def section_official(s: Settings, source: Source) -> tuple[list[Row], dict[str, Any]]:
    ensure_node_modules()
    fig = Figures("official", "s")
    workspace = s.work / "workspace"
    (workspace / "data").mkdir(parents=True)
    os.link(source.path, workspace / "data" / source.path.name)
    counter = iter(range(1_000_000))
    clients = [("v6", "v2"), ("v3", "v1")]
    with (
        ghacache(s.work / "official-data", fsync=s.fsync) as server,
        ceiling(s.work / "ceiling-data") as ceiling_server,
    ):
        targets = {"ghacache": server, "ceiling": ceiling_server}

        def run(
            op: Literal["save", "restore"], name: str, impl: Any, protocol: Any, key: str
        ) -> None:
            temp = s.work / f"runner-temp-{name}-{key}"
            ws = workspace if op == "save" else s.work / f"restored-{name}-{key}"
            temp.mkdir()
            ws.mkdir(exist_ok=True)
            try:
                env = official_env(protocol=protocol, base_url=targets[name].url,
                                   token=server.token, workspace=ws, temp=temp)  # fmt: skip
                warm_memory(s.work, WARM_FACTOR * s.size)
                start = time.perf_counter()
                result = run_official(impl, op, key=key, paths=["data"], env=env, cwd=ws)
                seconds = time.perf_counter() - start
                saved = op == "save" and isinstance(result.result, int) and result.result > 0
                if not result.ok or not (saved or result.result == key):
                    raise Failure(f"{impl} {op} on {name}: {result.error or result.result}\n"
                                  f"{result.stdout[-2000:]}")  # fmt: skip
                fig.add(f"{impl} {op} {name}", seconds)
                if op == "restore":
                    if sha256_file(ws / "data" / source.path.name) != source.sha256:
                        raise Failure(f"{impl} restored different bytes from {name}")
                    shutil.rmtree(ws)
                    if name == "ghacache":
                        delete_entry(server, key)
            finally:
                shutil.rmtree(temp, ignore_errors=True)

        for rep in range(s.reps):
            # Each operation runs on both servers back to back (the order alternating), so a
            # burst of load from elsewhere hits both sides of a comparison alike.
            names = ["ghacache", "ceiling"][:: 1 if rep % 2 == 0 else -1]
            for impl, protocol in rotated(clients, rep):
                key = f"official-{impl}-{next(counter)}"
                for op in ("save", "restore"):
                    for name in names:
                        run(op, name, impl, protocol, key)
            fig.rep_done(rep, s.reps, sorted(fig.samples))
    shutil.rmtree(workspace)
    rows = [
        ratio_row(f"official {impl} ({protocol}) {op} {s.label}", fig.median(f"{impl} {op} ghacache"),
                  "s", "ceiling server", fig.median(f"{impl} {op} ceiling"), 1.15,
                  higher_is_better=False)
        for impl, protocol in clients
        for op in ("save", "restore")
    ]  # fmt: skip
    return rows, {"seconds": fig.samples}


def client_config(server: Server, protocol: str) -> ClientConfig:
    """ghacache's client with its default settings, on v2 or v1."""
    if protocol == "v2":
        return ClientConfig(token=server.token, url_v2=server.url)
    return ClientConfig(token=server.token, url=server.url, protocol="v1")


def section_client(s: Settings, source: Source) -> tuple[list[Row], dict[str, Any]]:
    fig = Figures("client", "MB/s")
    out = s.work / "client-download.bin"
    counter = iter(range(1_000_000))
    with ghacache(s.work / "client-data", fsync=s.fsync) as server:

        def client(protocol: str) -> None:
            key = f"client-{protocol}-{next(counter)}"

            async def save() -> None:
                async with CacheClient(client_config(server, protocol)) as c:
                    await c.save(key, VERSION, source.path)

            async def download() -> None:
                async with CacheClient(client_config(server, protocol)) as c:
                    entry = await c.lookup(key, VERSION)
                    assert entry is not None
                    start = time.perf_counter()
                    async with await c.open(entry) as reader:
                        got = await reader.download_to(out)
                    fig.add(
                        f"download client {protocol}", mbps(s.size, time.perf_counter() - start)
                    )
                    if got != s.size:
                        raise Failure(f"client {protocol} downloaded {got} bytes")

            fig.add(f"upload client {protocol}", mbps(s.size, timed(lambda: asyncio.run(save()))))
            warm_memory(s.work, WARM_FACTOR * s.size)
            asyncio.run(download())
            check_file(out, source, f"client {protocol} round trip")
            delete_entry(server, key)

        def with_curl() -> None:
            key = f"client-curl-{next(counter)}"
            fig.add("upload curl", mbps(s.size, timed(lambda: curl_put_blob(server, key, source))))
            url = download_url(server, key)
            warm_memory(s.work, WARM_FACTOR * s.size)
            fig.add("download curl", mbps(s.size, timed(lambda: get_to(url, str(out), s.size))))
            check_file(out, source, "curl round trip")
            delete_entry(server, key)

        steps: list[Callable[[], None]] = [lambda: client("v2"), lambda: client("v1"), with_curl]
        for rep in range(s.reps):
            for step in rotated(steps, rep):
                warm_memory(s.work, WARM_FACTOR * s.size)
                step()
            fig.rep_done(rep, s.reps, sorted(fig.samples))
    m = fig.median
    rows = [
        ratio_row(f"ghacache client {direction} {s.label}, {protocol}",
                  m(f"{direction} client {protocol}"), "MB/s", "curl", m(f"{direction} curl"), 0.8)
        for direction in ("upload", "download")
        for protocol in ("v2", "v1")
    ]  # fmt: skip
    return rows, {"rates_mbps": fig.samples}


def section_sweep(s: Settings, source: Source) -> tuple[list[Row], dict[str, Any]]:
    """The client's uploads over a grid of block sizes and blocks in flight (not by default)."""
    fig = Figures("sweep", "MB/s")
    counter = iter(range(1_000_000))
    unit = s.block_bytes // 32  # 1 MiB, or 32 KiB with --quick
    cells = [(p, b, c) for p in ("v2", "v1") for b in SWEEP_BLOCKS for c in SWEEP_CONCURRENCY]
    with ghacache(s.work / "sweep-data", fsync=s.fsync) as server:

        def upload(protocol: str, blocks: int, concurrency: int) -> None:
            key = f"sweep-{next(counter)}"
            config = client_config(server, protocol).with_changes(
                block_bytes=blocks * unit, concurrency=concurrency, single_put_bytes=0
            )

            async def save() -> None:
                async with CacheClient(config) as c:
                    await c.save(key, VERSION, source.path)

            name = f"{protocol} {human(blocks * unit)} x {concurrency}"
            fig.add(name, mbps(s.size, timed(lambda: asyncio.run(save()))))
            verify_url(download_url(server, key) if protocol == "v2" else v1_url(server, key),
                       source, f"sweep upload {name}")  # fmt: skip
            delete_entry(server, key)

        for rep in range(s.reps):
            for cell in rotated(cells, rep):
                upload(*cell)
            fig.rep_done(rep, s.reps, [f"{p} {human(b * unit)} x {c}" for p, b, c in cells])
    rows = [
        Row(metric=f"ghacache client upload {s.label}, {p}, {human(b * unit)} blocks x {c}",
            value=round(fig.median(f"{p} {human(b * unit)} x {c}"), 2), unit="MB/s")
        for p, b, c in cells
    ]  # fmt: skip
    return rows, {"rates_mbps": fig.samples}


def v1_url(server: Server, key: str) -> str:
    headers = {"Authorization": f"Bearer {server.token}", "Accept": V1_ACCEPT}
    query = urllib.parse.urlencode({"keys": key, "version": VERSION})
    _, data = http("GET", f"{server.url}{V1}cache?{query}", headers=headers)
    url: str = json.loads(data)["archiveLocation"]
    return url


def check_file(path: Path, source: Source, what: str) -> None:
    if (path.stat().st_size, sha256_file(path)) != (source.size, source.sha256):
        raise Failure(f"{what}: the bytes differ from the source")
    path.unlink()


class RssSampler:
    """Samples one process's RSS every 50 ms from a thread, keeping the peak."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            self._stop.wait(0.05)

    @contextmanager
    def running(self) -> Iterator[RssSampler]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()


def section_memory(s: Settings, source: Source) -> tuple[list[Row], dict[str, Any]]:
    keys = [f"memory-{i}" for i in range(MEMORY_CLIENTS)]
    with ghacache(s.work / "memory-data", fsync=s.fsync) as server:
        idle = psutil.Process(server.pid).memory_info().rss
        with pool_of(MEMORY_CLIENTS) as pool, RssSampler(server.pid).running() as up:
            list(pool.map(lambda k: curl_put_blocks(server, k, source), keys))
        urls = [download_url(server, k) for k in keys]
        with pool_of(MEMORY_CLIENTS) as pool, RssSampler(server.pid).running() as down:
            results = list(pool.map(sha256_url, urls))
        for got in results:
            if got != (source.size, source.sha256):
                raise Failure(f"a concurrent download read back {got[0]} bytes that differ")
    print(f"memory: idle {idle / 1e6:.0f} MB, peak {up.peak / 1e6:.0f} MB during "
          f"{MEMORY_CLIENTS} uploads, {down.peak / 1e6:.0f} MB during {MEMORY_CLIENTS} downloads",
          flush=True)  # fmt: skip
    target = f"< {RSS_TARGET_BYTES // 1_000_000} MB"
    rows = [
        Row(metric="server RSS, idle", value=round(idle / 1e6, 1), unit="MB"),
        Row(metric=f"peak server RSS, {MEMORY_CLIENTS} concurrent {s.label} uploads "
            f"({human(s.block_bytes)} blocks x {AZURE_SDK_CONCURRENCY} each)",
            value=round(up.peak / 1e6, 1), unit="MB", target=target,
            met=up.peak < RSS_TARGET_BYTES),
        Row(metric=f"peak server RSS, {MEMORY_CLIENTS} concurrent {s.label} downloads",
            value=round(down.peak / 1e6, 1), unit="MB", target=target,
            met=down.peak < RSS_TARGET_BYTES),
    ]  # fmt: skip
    return rows, {"idle_rss": idle, "peak_rss_uploads": up.peak, "peak_rss_downloads": down.peak}


@contextmanager
def pool_of(n: int) -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    with concurrent.futures.ThreadPoolExecutor(n) as pool:
        yield pool


RUNNERS = {
    "raw": section_raw,
    "official": section_official,
    "client": section_client,
    "memory": section_memory,
    "sweep": section_sweep,
}


# -- main -------------------------------------------------------------------------------------


def make_source(work: Path, size: int, block_bytes: int) -> Source:
    path = work / "random.bin"
    h = hashlib.sha256()
    blocks: list[tuple[Path, int, int]] = []
    (work / "blocks").mkdir()
    with path.open("wb") as f:
        for offset in range(0, size, block_bytes):
            data = os.urandom(min(block_bytes, size - offset))
            f.write(data)
            h.update(data)
            block = work / "blocks" / f"{len(blocks):05d}"
            block.write_bytes(data)
            blocks.append((block, offset, len(data)))
    return Source(path, size, h.hexdigest(), blocks)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    summary.add_arguments(parser)
    parser.add_argument("--only", nargs="+", choices=[*SECTIONS, "sweep"], default=list(SECTIONS))
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--fsync", choices=("false", "true"), default="false",
                        help="ghacache's --fsync (default false: measure the transfer path)")  # fmt: skip
    parser.add_argument(
        "--tmp",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where the file, the servers' data and the downloads go (default: tmpfs)",
    )
    args = parser.parse_args()
    size = 8 * MiB if args.quick else args.size_mib * MiB
    reps = 1 if args.quick else args.reps
    block_bytes = MiB if args.quick else AZURE_SDK_BLOCKS
    for tool in ("curl", "node") if "official" in args.only else ("curl",):
        if shutil.which(tool) is None:
            print(f"{tool} is needed", file=sys.stderr)
            return 2
    started = datetime.now(UTC)
    rows: list[Row] = []
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ghacache-transfer-", dir=args.tmp) as tmp:
        settings = Settings(size, reps, block_bytes, args.fsync == "true", Path(tmp))
        print(f"transfer benchmark: {settings.label}, {reps} repetition(s), sections "
              f"{' '.join(args.only)}; ghacache --fsync {args.fsync}; files in {tmp}", flush=True)  # fmt: skip
        source = make_source(settings.work, size, block_bytes)
        try:
            for section in args.only:
                section_rows, figures[section] = RUNNERS[section](settings, source)
                rows += section_rows
        except (Failure, subprocess.CalledProcessError, AssertionError) as exc:
            print(f"\nFAILED: {exc}", file=sys.stderr)
            return 1
    print(f"\n## Transfer benchmark ({settings.label}, medians of {reps}, ghacache --fsync "
          f"{args.fsync}, files on {args.tmp or tempfile.gettempdir()})")  # fmt: skip
    show(rows)
    result = {
        "benchmark": "transfer",
        "when": started.isoformat(timespec="seconds"),
        "size_bytes": size,
        "repetitions": reps,
        "fsync": args.fsync == "true",
        "storage": args.tmp or tempfile.gettempdir(),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "rows": [r.__dict__ for r in rows],
        "figures": figures,
    }
    out_dir = BENCH / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"transfer-{started:%Y%m%dT%H%M%S}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {out}")
    summary.write(args.summary, "transfer", rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
