"""OpenTelemetry spans: each request is a trace whose children are its store and database calls.

Spans go to an in-memory exporter through a provider passed to ``create_app`` (never the
global one). A W3C ``traceparent`` from the client, as BuildKit sends, is continued.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ghacache.server.app import create_app
from ghacache.server.auth import load_or_create_secret
from ghacache.server.config import ServerConfig
from tests.conftest import Clock, ServerHandle, Spawner
from tests.support import wire

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_ID = "b7ad6b7169203331"


@pytest.fixture
async def traced(
    tmp_path: Path, clock: Clock
) -> AsyncIterator[tuple[ServerHandle, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    config = ServerConfig.from_strings(
        {"data_dir": str(tmp_path / "data"), "port": "0", "fsync": "false"}
    )
    app = await create_app(config, now=clock, tracer_provider=provider)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    secret = load_or_create_secret(config.secret_path)
    exporter.clear()  # start-up sweeps run outside any request: nothing of theirs is traced
    try:
        yield ServerHandle(f"http://{host}:{port}", config, clock, app, secret), exporter
    finally:
        await runner.cleanup()
        provider.shutdown()


def root_of(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> ReadableSpan:
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
    return span


async def test_a_v2_save_makes_one_trace_per_request_with_store_and_db_children(
    traced: tuple[ServerHandle, InMemorySpanExporter], http: aiohttp.ClientSession
) -> None:
    srv, exporter = traced
    await wire.v2_save(http, srv.url, srv.token(), "traced", b"x" * 1000)
    spans = exporter.get_finished_spans()
    servers = [s for s in spans if s.kind is SpanKind.SERVER]
    assert [s.name for s in servers] == [
        "POST CreateCacheEntry",
        "PUT put_blob",
        "POST FinalizeCacheEntryUpload",
    ]
    assert len({s.context.trace_id for s in servers}) == 3  # no traceparent: new traces
    assert all(s.parent is None for s in servers)
    by_id = {s.context.span_id: s for s in spans}
    children: dict[str, list[str]] = {s.name: [] for s in servers}
    for span in spans:
        if span.kind is SpanKind.SERVER:
            continue
        root = root_of(span, by_id)
        assert root.kind is SpanKind.SERVER, span.name
        assert span.context.trace_id == root.context.trace_id
        children[root.name].append(span.name)
    assert any(n.startswith("db ") for n in children["POST CreateCacheEntry"])
    assert {"store write_part", "store assemble"} <= set(children["PUT put_blob"])
    assert "store publish" in children["POST FinalizeCacheEntryUpload"]
    assert "db transaction" in children["POST FinalizeCacheEntryUpload"]  # the commit
    # Direct children of the request span, and the request's attributes.
    put = servers[1]
    write = next(s for s in spans if s.name == "store write_part")
    assert write.parent is not None and write.parent.span_id == put.context.span_id
    assert put.attributes is not None
    assert put.attributes["http.response.status_code"] == 201
    assert put.attributes["ghacache.key"] == "traced"
    assert put.attributes["url.path"] == "/ghacache/uploads/1"  # no query, no signature
    db = next(s for s in spans if s.name.startswith("db SELECT"))
    assert db.attributes is not None and db.attributes["db.system.name"] == "sqlite"


async def test_an_incoming_traceparent_is_continued(
    traced: tuple[ServerHandle, InMemorySpanExporter], http: aiohttp.ClientSession
) -> None:
    srv, exporter = traced
    async with http.post(
        srv.url + wire.TWIRP + "CreateCacheEntry",
        json={"key": "k", "version": wire.VERSION},
        headers={**wire.auth(srv.token()), "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
    ) as r:
        assert r.status == 200
    spans = exporter.get_finished_spans()
    server = next(s for s in spans if s.kind is SpanKind.SERVER)
    assert server.parent is not None and server.parent.is_remote
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert {format(s.context.trace_id, "032x") for s in spans} == {TRACE_ID}
    assert len(spans) > 1  # its database spans joined the caller's trace


def test_console_tracing_prints_spans_on_stdout(spawn_server: Spawner) -> None:
    s = spawn_server("--tracing", "console")
    token = s.token()
    body = json.dumps({"key": "k", "version": wire.VERSION}).encode()
    req = urllib.request.Request(
        s.url + wire.TWIRP + "CreateCacheEntry",
        data=body,
        headers={**wire.auth(token), "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    s.proc.terminate()  # a clean stop flushes the batch of spans
    s.proc.wait(timeout=10)
    assert s.proc.stdout is not None
    out = s.proc.stdout.read()
    assert '"name": "POST CreateCacheEntry"' in out
    assert '"name": "db INSERT"' in out or '"name": "db transaction"' in out


def test_otlp_without_its_exporter_fails_at_start(tmp_path: Path) -> None:
    # Not a dependency of ghacache: this checks the message a deployment without it gets.
    assert importlib.util.find_spec("opentelemetry.exporter") is None
    args = [sys.executable, "-m", "ghacache", "serve", "--port", "0", "--tracing", "otlp"]
    done = subprocess.run(
        [*args, "--data-dir", str(tmp_path / "d")], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "opentelemetry-exporter-otlp-proto-http" in done.stderr
