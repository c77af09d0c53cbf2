"""Optional OpenTelemetry spans: one per request, with child spans for storage and database calls.

Off by default, and then nothing here is even imported by the app: the access middleware
checks one ``None``. When on, the blob store and the database are wrapped in thin proxies
(the storage and index layers know nothing of tracing), and an incoming W3C ``traceparent``
(BuildKit sends one) makes the request span a child of the caller's. Storage and database
calls are traced only inside a traced request, so background sweeps add no root spans.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from aiohttp import web
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ghacache._version import __version__
from ghacache.index import Database, EntryIndex
from ghacache.index.database import Executor, Params, Row
from ghacache.storage import BlobInfo, BlobStore

P = ParamSpec("P")
T = TypeVar("T")

_PROPAGATOR = TraceContextTextMapPropagator()
MAX_SQL_CHARS = 2000
OTLP_EXPORTER = "opentelemetry.exporter.otlp.proto.http.trace_exporter"


def build_provider(mode: str) -> TracerProvider | None:
    """The SDK provider for ``--tracing`` (``off``: None). Its owner must shut it down.

    Raises:
        ValueError: ``otlp`` without the OTLP exporter package installed.
    """
    if mode == "off":
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SpanExporter,
    )

    exporter: SpanExporter
    if mode == "otlp":
        try:
            module = importlib.import_module(OTLP_EXPORTER)  # optional: not a dependency
        except ImportError as exc:
            raise ValueError(
                "--tracing otlp needs the package opentelemetry-exporter-otlp-proto-http"
            ) from exc
        exporter = module.OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()  # stdout; stderr carries the logs
    provider = SdkTracerProvider(resource=Resource.create({"service.name": "ghacache"}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _recording() -> bool:
    return trace.get_current_span().is_recording()


class RequestTracer:
    """Starts the server span of each request, continuing an incoming ``traceparent``."""

    def __init__(self, tracer: Tracer) -> None:
        self.tracer = tracer

    def start(self, request: web.Request, protocol: str, operation: str) -> Span:
        """The request's server span; ``finish`` ends it once the response is sent."""
        resource = request.match_info.route.resource
        return self.tracer.start_span(
            f"{request.method} {operation}",
            context=_PROPAGATOR.extract(request.headers),
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": request.method,
                "url.path": request.path,  # never the query: signed URLs carry signatures
                "http.route": resource.canonical if resource is not None else "",
                "ghacache.protocol": protocol,
                "ghacache.operation": operation,
            },
        )

    @staticmethod
    def activate(span: Span) -> AbstractContextManager[Span]:
        """Make ``span`` the parent of the storage and database spans of the handler."""
        return trace.use_span(span, end_on_exit=False)

    @staticmethod
    def finish(span: Span, status: int, record: dict[str, object]) -> None:
        span.set_attribute("http.response.status_code", status)
        for name in ("repository", "scope", "key"):
            value = record.get(name)
            if isinstance(value, str):
                span.set_attribute(f"ghacache.{name}", value)
        if status >= 500:
            span.set_status(StatusCode.ERROR)
        span.end()

    @staticmethod
    def trace_id(span: Span) -> str:
        return format(span.get_span_context().trace_id, "032x")


# -- the database -------------------------------------------------------------------------


class _TracedExecutor:
    def __init__(self, inner: Executor, tracer: Tracer, dialect: str) -> None:
        self._inner = inner
        self._tracer = tracer
        self._dialect = dialect

    @contextmanager
    def _span(self, sql: str) -> Iterator[None]:
        operation = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else "SQL"
        with self._tracer.start_as_current_span(
            f"db {operation}",
            kind=SpanKind.CLIENT,
            attributes={
                "db.system.name": self._dialect,
                "db.operation.name": operation,
                "db.query.text": sql[:MAX_SQL_CHARS],  # parameters are never recorded
            },
        ):
            yield

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        if not _recording():
            return await self._inner.fetch_all(sql, params)
        with self._span(sql):
            return await self._inner.fetch_all(sql, params)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        if not _recording():
            return await self._inner.fetch_one(sql, params)
        with self._span(sql):
            return await self._inner.fetch_one(sql, params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        if not _recording():
            return await self._inner.execute(sql, params)
        with self._span(sql):
            return await self._inner.execute(sql, params)


class TracedDatabase(_TracedExecutor):
    """A ``Database`` whose statements and transactions are spans."""

    def __init__(self, db: Database, tracer: Tracer) -> None:
        super().__init__(db, tracer, db.dialect)
        self._db = db
        self.dialect = db.dialect

    def __getattr__(self, name: str) -> Any:  # backend extras (e.g. executescript)
        return getattr(self._db, name)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Executor]:
        if not _recording():
            async with self._db.transaction() as tx:
                yield tx
            return
        with self._tracer.start_as_current_span(
            "db transaction", kind=SpanKind.CLIENT, attributes={"db.system.name": self.dialect}
        ):
            async with self._db.transaction() as tx:
                yield _TracedExecutor(tx, self._tracer, self.dialect)

    async def close(self) -> None:
        await self._db.close()


def traced_index(index: EntryIndex, tracer: Tracer) -> EntryIndex:
    """The same index over a traced database (every component built on it is traced)."""
    return EntryIndex(TracedDatabase(index.db, tracer))


# -- the blob store -----------------------------------------------------------------------


class TracedStore:
    """A ``BlobStore`` whose calls are spans (streamed reads: one span per read)."""

    def __init__(self, store: BlobStore, tracer: Tracer) -> None:
        self._store = store
        self._tracer = tracer

    def __getattr__(self, name: str) -> Any:  # backend extras
        return getattr(self._store, name)

    async def _call(
        self, verb: str, name: str, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        if not _recording():
            return await fn(*args, **kwargs)
        with self._tracer.start_as_current_span(
            f"store {verb}", kind=SpanKind.CLIENT, attributes={"ghacache.store.object": name}
        ):
            return await fn(*args, **kwargs)

    async def write_part(self, upload: str, part: str, chunks: Any, **options: Any) -> int:
        return await self._call(
            "write_part", upload, self._store.write_part, upload, part, chunks, **options
        )

    async def assemble(self, upload: str, parts: Sequence[str]) -> int:
        return await self._call("assemble", upload, self._store.assemble, upload, parts)

    async def read_assembled(self, upload: str, max_bytes: int) -> bytes | None:
        return await self._call(
            "read_assembled", upload, self._store.read_assembled, upload, max_bytes
        )

    async def replace_assembled(self, upload: str, data: bytes) -> int:
        return await self._call(
            "replace_assembled", upload, self._store.replace_assembled, upload, data
        )

    async def publish(self, upload: str, blob: str) -> None:
        await self._call("publish", blob, self._store.publish, upload, blob)

    async def discard(self, upload: str) -> None:
        await self._call("discard", upload, self._store.discard, upload)

    async def delete(self, blob: str) -> None:
        await self._call("delete", blob, self._store.delete, blob)

    async def delete_many(self, blobs: Sequence[str]) -> None:
        await self._call("delete_many", f"{len(blobs)} blobs", self._store.delete_many, blobs)

    async def stat(self, blob: str) -> BlobInfo | None:
        return await self._call("stat", blob, self._store.stat, blob)

    def local_path(self, blob: str) -> Path | None:
        return self._store.local_path(blob)

    async def read(self, blob: str, start: int, length: int) -> AsyncGenerator[bytes, None]:
        if not _recording():
            async for chunk in self._store.read(blob, start, length):
                yield chunk
            return
        # Not the current span: a generator's context would leak into its consumer.
        span = self._tracer.start_span(
            "store read", kind=SpanKind.CLIENT, attributes={"ghacache.store.object": blob}
        )
        try:
            async for chunk in self._store.read(blob, start, length):
                yield chunk
        except Exception as exc:
            span.record_exception(exc)
            span.set_status(StatusCode.ERROR)
            raise
        finally:
            span.end()

    async def list_uploads(self) -> list[str]:
        return await self._call("list_uploads", "", self._store.list_uploads)

    async def upload_modified_at(self, upload: str) -> float | None:
        return await self._call(
            "upload_modified_at", upload, self._store.upload_modified_at, upload
        )

    async def list_blobs(self) -> list[str]:
        return await self._call("list_blobs", "", self._store.list_blobs)

    async def direct_upload_url(self, upload: str, ttl_s: float) -> str | None:
        return await self._call(
            "direct_upload_url", upload, self._store.direct_upload_url, upload, ttl_s
        )

    async def direct_download_url(self, blob: str, ttl_s: float) -> str | None:
        return await self._call(
            "direct_download_url", blob, self._store.direct_download_url, blob, ttl_s
        )


def tracer_of(provider: TracerProvider) -> Tracer:
    return provider.get_tracer("ghacache.server", __version__)
