"""Wires metrics, the access log and tracing into one app, so ``create_app`` stays short."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from ghacache.index import EntryIndex
from ghacache.server.accesslog import access_middleware
from ghacache.server.config import ServerConfig
from ghacache.server.metrics import METRICS, Metrics
from ghacache.server.routes import metrics as metrics_route
from ghacache.storage import BlobStore

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from ghacache.server.tracing import RequestTracer


@dataclass(kw_only=True)
class Observability:
    metrics: Metrics
    tracer: RequestTracer | None = None
    # A provider built from --tracing is ours to flush and shut down; a caller's is not.
    owned_provider: TracerProvider | None = None

    @classmethod
    def create(
        cls, config: ServerConfig, tracer_provider: TracerProvider | None = None
    ) -> Observability:
        """Metrics always; tracing to ``tracer_provider`` if given, else per ``--tracing``.

        Raises:
            ValueError: ``--tracing otlp`` without the OTLP exporter installed.
        """
        obs = cls(metrics=Metrics())
        if tracer_provider is None and config.tracing == "off":
            return obs  # tracing's modules are never imported
        from ghacache.server import tracing

        if tracer_provider is None:
            tracer_provider = obs.owned_provider = tracing.build_provider(config.tracing)
        assert tracer_provider is not None
        obs.tracer = tracing.RequestTracer(tracing.tracer_of(tracer_provider))
        return obs

    def wrap(self, store: BlobStore, index: EntryIndex) -> tuple[BlobStore, EntryIndex]:
        """The store and index to build everything on: traced proxies when tracing is on."""
        if self.tracer is None:
            return store, index
        from ghacache.server import tracing

        tracer = self.tracer.tracer
        return tracing.TracedStore(store, tracer), tracing.traced_index(index, tracer)

    def middleware(self) -> Middleware:
        return access_middleware(self.metrics, self.tracer)

    def install(self, app: web.Application) -> None:
        """Serve ``/metrics`` and flush our own spans when the app stops."""
        app[METRICS] = self.metrics
        metrics_route.add_routes(app)
        if self.owned_provider is not None:
            app.on_cleanup.append(self._shutdown)

    async def _shutdown(self, app: web.Application) -> None:
        provider = self.owned_provider
        shutdown = getattr(provider, "shutdown", None)  # the SDK's; the API has none
        if shutdown is not None:
            await asyncio.to_thread(shutdown)
