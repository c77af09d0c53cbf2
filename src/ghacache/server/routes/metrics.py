"""``GET /metrics``: the Prometheus text format, open unless ``--metrics-token`` is set."""

from __future__ import annotations

import hmac

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ghacache.errors import Unauthenticated
from ghacache.server.auth import bearer_token
from ghacache.server.metrics import METRICS
from ghacache.server.state import state_of


async def metrics(request: web.Request) -> web.Response:
    state = state_of(request)
    expected = state.config.metrics_token
    if expected:
        given = bearer_token(request.headers.get("Authorization"))
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthenticated("invalid metrics token")
    instruments = request.app[METRICS]
    policies = state.maintainer.policies
    await instruments.refresh_usage(state.catalog, lambda repo: policies.for_repo(repo).quota_bytes)
    return web.Response(
        body=generate_latest(instruments.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
