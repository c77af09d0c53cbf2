"""The app factory: every route in one place, state on the app, nothing at import time."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware

from ghacache.index import open_index
from ghacache.index.catalog import Catalog
from ghacache.protocol.eviction import Policy
from ghacache.protocol.signing import UrlSigner
from ghacache.server.auth import (
    AdminAuthenticator,
    Authenticator,
    GithubAuthenticator,
    SecretAuthenticator,
    UnverifiedAuthenticator,
    derive_key,
    load_or_create_secret,
)
from ghacache.server.buildkit import BuildkitIndexes, IndexLimits
from ghacache.server.config import ServerConfig
from ghacache.server.errors import error_middleware
from ghacache.server.hitrate import HitRateHistory
from ghacache.server.maintenance import Maintainer, PolicyBook
from ghacache.server.observability import Observability
from ghacache.server.ratelimit import CreationRateLimiter
from ghacache.server.routes import blobs, management, ui, v1, v2
from ghacache.server.service import CacheService, Limits
from ghacache.server.state import STATE, ServerState, state_of
from ghacache.storage import open_store

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

log = logging.getLogger("ghacache.server")

# Block lists of 50,000 ids are ~5 MB; every other JSON body is far smaller.
CLIENT_MAX_BODY_BYTES = 9 * 1024 * 1024
READ_BUFFER_BYTES = 256 * 1024


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_authenticator(
    config: ServerConfig, secret: bytes, now: Callable[[], float]
) -> Authenticator:
    """The authenticator for ``config.auth``.

    Raises:
        ValueError: ``none`` on a non-loopback address without ``allow_insecure_bind``,
            or ``github`` without a JWKS and issuer.
    """
    if config.auth == "secret":
        return SecretAuthenticator(secret, now=now)
    if config.auth == "github":
        return GithubAuthenticator(
            jwks=config.jwks, issuer=config.issuer, audience=config.audience, now=now
        )
    if not is_loopback(config.host) and not config.allow_insecure_bind:
        raise ValueError(
            f"--auth none accepts any token; refusing to listen on {config.host}. "
            "Bind to 127.0.0.1 or pass --allow-insecure-bind."
        )
    return UnverifiedAuthenticator(now=now)


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def create_app(
    config: ServerConfig,
    *,
    now: Callable[[], float] = time.time,
    middlewares: Sequence[Middleware] = (),
    tracer_provider: TracerProvider | None = None,
) -> web.Application:
    """Open the index and store named by ``config`` and return the ready app.

    ``middlewares`` run outside the error mapper (tests inject faults with them), inside
    the access log. Spans go to ``tracer_provider`` if given, else as ``--tracing`` says.
    """
    secret = load_or_create_secret(config.secret_path)
    authenticator = make_authenticator(config, secret, now)
    obs = Observability.create(config, tracer_provider)
    store = open_store(config.store_url, fsync=config.fsync)
    if config.direct_transfers and await store.direct_upload_url("probe", 60) is None:
        raise ValueError(
            "--direct-transfers needs a store that hands out upload URLs (az://), "
            f"not {config.store_url.split('?')[0]!r}"
        )
    index = await open_index(config.index_url)
    store, index = obs.wrap(store, index)
    catalog = Catalog(index.db)
    buildkit = BuildkitIndexes(
        index=index,
        catalog=catalog,
        store=store,
        limits=IndexLimits(
            max_bytes=config.buildkit_index_max_bytes,
            max_age_s=config.buildkit_index_max_age or None,
        ),
        now=now,
    )
    maintainer = Maintainer(
        index=index,
        catalog=catalog,
        store=store,
        policies=policy_book(config),
        orphan_grace_s=config.orphan_grace,
        now=now,
        on_removed=buildkit.after_removal if config.buildkit_merge else None,
        redo_removed=buildkit.repair_since if config.buildkit_merge else None,
        lease_ttl_s=config.job_lease,
        metrics=obs.metrics,
    )
    obs.metrics.watch_buildkit(buildkit)
    hit_rates = HitRateHistory(now=now)
    service = CacheService(
        index=index,
        store=store,
        limits=Limits(
            max_entry_bytes=config.max_entry_size,
            reservation_timeout_s=config.reservation_timeout,
        ),
        now=now,
        rate_limiter=CreationRateLimiter(
            config.rate_limit, now=now, on_limited=obs.metrics.limited
        ),
        on_commit=lambda entry: maintainer.evict(entry.repo),
        before_publish=buildkit.before_publish if config.buildkit_merge else None,
        direct_uploads=config.direct_transfers,
        metrics=obs.metrics,
        on_lookup=hit_rates.record,
    )
    app = web.Application(
        middlewares=[obs.middleware(), *middlewares, error_middleware],
        client_max_size=CLIENT_MAX_BODY_BYTES,
        # Request bodies are buffered up to twice this per connection (aiohttp's default is
        # 64 KiB): block uploads, several connections at once, took a quarter less CPU.
        handler_args={"read_bufsize": READ_BUFFER_BYTES},
    )
    app[STATE] = ServerState(
        config=config,
        service=service,
        catalog=catalog,
        maintainer=maintainer,
        authenticator=authenticator,
        admin=AdminAuthenticator(secret, cache_tokens=authenticator, now=now),
        signer=UrlSigner(secret=derive_key(secret, "url")),
        now=now,
    )
    app.router.add_get("/healthz", health)
    v2.add_routes(app)
    v1.add_routes(app)
    blobs.add_routes(app)
    management.add_routes(app)
    obs.install(app)
    ui.add_routes(app, key=derive_key(secret, "ui"), hit_rates=hit_rates)
    app.cleanup_ctx.append(_background_jobs)
    return app


def policy_book(config: ServerConfig) -> PolicyBook:
    default = Policy(quota_bytes=config.repo_quota_bytes, idle_expiry_s=config.idle_expiry)
    overrides = {
        repo: Policy(quota_bytes=quota, idle_expiry_s=expiry)
        for repo, (quota, expiry) in config.repo_policies().items()
    }
    return PolicyBook(default=default, overrides=overrides)


async def _every(interval_s: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await job()
        except Exception:
            log.exception("%s failed; retrying in %.0f s", name, interval_s)


async def _expire(state: ServerState) -> None:
    async with state.maintainer.lease("expire") as held:
        if held:
            await state.service.expire_reservations()


async def _background_jobs(app: web.Application) -> AsyncIterator[None]:
    """Reconcile and sweep once at start-up, then expire and evict on timers."""
    state = app[STATE]
    service = state.service
    maintainer = state.maintainer
    await maintainer.free_dead_leases()
    await _expire(state)
    await maintainer.sweep()
    reservation_every = max(1.0, min(60.0, state.config.reservation_timeout / 2))
    tasks = [
        asyncio.create_task(
            _every(reservation_every, lambda: _expire(state), "reservation expiry")
        ),
        asyncio.create_task(
            _every(state.config.eviction_interval, maintainer.sweep, "eviction sweep")
        ),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await service.index.close()


__all__ = ["create_app", "state_of"]
