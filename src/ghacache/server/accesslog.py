"""The access middleware: one log line, the metrics and (optionally) a span per request.

It sits outside the error mapper, so it sees every answer in its final form, and gives each
one not yet sent an ``x-ms-request-id`` (BuildKit's Azure SDK crashes without one; streamed
answers set theirs before sending). aiohttp sends
the response after the middlewares return (sendfile downloads included) but within the
request's own task, so the line is written when that task is done: durations and byte
counts then cover the whole body. The path is logged without its query string (signed URLs
carry signatures there) and no header is ever logged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from ghacache.protocol.azblob import REQUEST_ID, new_request_id
from ghacache.server import annotate
from ghacache.server.metrics import Metrics
from ghacache.server.operations import classify

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from ghacache.server.tracing import RequestTracer

access_log = logging.getLogger("ghacache.access")
log = logging.getLogger("ghacache.server")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# nginx's "client closed request": the client went away before a response was sent.
CLIENT_CLOSED = 499
# Probes and scrapes every few seconds would drown the real traffic at info level.
_QUIET = frozenset({("other", "healthz"), ("other", "metrics")})


def access_middleware(metrics: Metrics, tracer: RequestTracer | None = None) -> Middleware:
    """The middleware for one app's ``metrics`` and, if tracing is on, its tracer."""

    @web.middleware
    async def access(request: web.Request, handler: Handler) -> web.StreamResponse:
        exchange = _Exchange(request, metrics, tracer)
        task = asyncio.current_task()
        assert task is not None  # aiohttp runs every request in a task of its own
        task.add_done_callback(exchange.done)
        token = annotate.begin(exchange.record)
        request[annotate.LOG_KEY] = exchange.record
        try:
            if tracer is None:
                resp = await handler(request)
            else:
                exchange.span = tracer.start(request, exchange.protocol, exchange.operation)
                with tracer.activate(exchange.span):
                    resp = await handler(request)
        except web.HTTPException as exc:  # below 400: the error mapper passes them on
            exchange.status = exc.status
            raise
        finally:
            annotate.end(token)
        exchange.status = resp.status
        if not resp.prepared and REQUEST_ID not in resp.headers:
            resp.headers[REQUEST_ID] = new_request_id()
        exchange.response = resp
        return resp

    return access


class _Exchange:
    """One request as the middleware saw it; ``done`` records it once the task ends."""

    def __init__(
        self, request: web.Request, metrics: Metrics, tracer: RequestTracer | None
    ) -> None:
        self.started = time.perf_counter()
        self.request = request
        self.metrics = metrics
        self.tracer = tracer
        self.protocol, self.operation = classify(request)
        self.record: dict[str, object] = {}
        self.status = 500
        self.response: web.StreamResponse | None = None
        self.span: Span | None = None

    def done(self, task: asyncio.Task[object]) -> None:
        try:
            self._record(task)
        except Exception:  # never let bookkeeping break the server
            log.exception("recording %s %s failed", self.request.method, self.request.path)

    def _record(self, task: asyncio.Task[object]) -> None:
        seconds = time.perf_counter() - self.started
        request, resp = self.request, self.response
        # write_eof sets body_length (headers included): 0 means the body never went out.
        sent = resp is not None and resp.body_length > 0
        aborted = (
            task.cancelled() or task.exception() is not None or (resp is not None and not sent)
        )
        status = CLIENT_CLOSED if task.cancelled() else self.status
        bytes_out = 0
        if resp is not None and sent and request.method != "HEAD":
            length = resp.content_length
            bytes_out = length if length is not None else resp.body_length
        bytes_in = int(getattr(request.content, "total_bytes", 0))
        self.metrics.request(
            protocol=self.protocol,
            operation=self.operation,
            status=status,
            seconds=seconds,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
        )
        trace_id = None
        if self.tracer is not None and self.span is not None:
            self.tracer.finish(self.span, status, self.record)
            trace_id = self.tracer.trace_id(self.span)
        level = logging.DEBUG if (self.protocol, self.operation) in _QUIET else logging.INFO
        if not access_log.isEnabledFor(level):
            return
        fields: dict[str, object] = {
            "request_id": resp.headers.get(REQUEST_ID) if resp is not None else None,
            "protocol": self.protocol,
            "operation": self.operation,
            "method": request.method,
            "path": request.path,
            "status": status,
            "bytes_in": bytes_in,
            "bytes_out": bytes_out,
            "duration_ms": round(seconds * 1000, 3),
            **self.record,
        }
        if aborted:
            fields["aborted"] = True
        if trace_id is not None:
            fields["trace_id"] = trace_id
        access_log.log(
            level, "%s %s %s", request.method, request.path, status, extra={"ghacache": fields}
        )
