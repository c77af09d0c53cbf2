"""The dashboard at ``/ui/``: server-rendered HTML over the management API's own calls.

  GET  /ui/login, POST /ui/login       admin token in, session cookie out
  POST /ui/logout                      clears the cookie
  GET  /ui/                            every repository: usage against quota, hit rate
  GET  /ui/repos/{owner}/{repo}        largest and least recently used entries, evictions,
                                       BuildKit scopes; delete forms
  POST /ui/repos/{owner}/{repo}/delete       one entry (``entry_id``)
  POST /ui/repos/{owner}/{repo}/delete-key   every entry with ``key`` (optionally ``ref``)
  GET  /ui/static/ui.css

Reads go through ``Catalog`` and deletions through ``Maintainer.delete``, exactly as the
management API does, so a removal is recorded with reason ``deleted``. Without a valid
session every page and action redirects to the login form; POSTs need the CSRF field.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from ghacache.cacheconfig import keys as bk
from ghacache.errors import ScopeForbidden, Unauthenticated
from ghacache.index.catalog import RepoUsage
from ghacache.protocol.keys import parse_entry_id
from ghacache.server.hitrate import DAY_S, HOUR_S, MINUTE_S, HitRateHistory
from ghacache.server.state import ServerState, state_of
from ghacache.server.ui import formats as fmt
from ghacache.server.ui import session as sess
from ghacache.server.ui.charts import hit_rate_chart, usage_bar
from ghacache.server.ui.session import Session, Sessions
from ghacache.server.ui.views import buildkit_families, evictions_per_repo, repo_rows

TABLE_ROWS = 25
MAX_INDEX_ENTRIES = 2000
# span name -> (span, bucket, label spacing, buckets per hit-rate point) of the overview chart
SPANS = {
    "1h": (HOUR_S, MINUTE_S, 10 * MINUTE_S, 10),
    "6h": (6 * HOUR_S, 5 * MINUTE_S, HOUR_S, 6),
    "24h": (DAY_S, 10 * MINUTE_S, 4 * HOUR_S, 6),
}
# No scripts at all, styles only from our stylesheet, forms only to ourselves, no framing.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

Page = Callable[[web.Request, ServerState, Session], Awaitable[web.StreamResponse]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, kw_only=True)
class Dashboard:
    templates: jinja2.Environment
    sessions: Sessions
    hit_rates: HitRateHistory
    stylesheet: bytes


DASHBOARD: web.AppKey[Dashboard] = web.AppKey("ghacache_dashboard", Dashboard)


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ghacache.server", "ui/templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        size=fmt.human_size,
        utc=fmt.utc,
        ago=fmt.ago,
        duration=fmt.duration,
        percent=fmt.percent,
        part=_path_part,
    )
    return env


def _path_part(value: str) -> str:
    return quote(value, safe="")


def _render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    dashboard = request.app[DASHBOARD]
    context.setdefault("session", None)
    html = dashboard.templates.get_template(template).render(now=state_of(request).now(), **context)
    return web.Response(text=html, status=status, content_type="text/html", headers=HEADERS)


def _redirect(location: str, status: int = 303) -> web.Response:
    return web.Response(status=status, headers={**HEADERS, "Location": location})


async def _session(request: web.Request) -> Session | None:
    token = request.cookies.get(sess.COOKIE)
    if not token:
        return None
    try:
        await state_of(request).admin.authenticate(f"Bearer {token}")
    except (Unauthenticated, ScopeForbidden):
        return None
    return request.app[DASHBOARD].sessions.open(token)


def _secure(request: web.Request) -> bool:
    return sess.is_https(request, state_of(request).config.public_url)


def _to_login(request: web.Request) -> web.Response:
    if request.method in ("GET", "HEAD"):
        resp = _redirect(f"/ui/login?next={quote(request.path_qs, safe='')}", 302)
    else:
        resp = _redirect("/ui/login")
    if sess.COOKIE in request.cookies:
        sess.clear_cookie(resp, secure=_secure(request))
    return resp


def _safe_next(target: str | None) -> str:
    """Only our own pages: never another host (``//evil``, ``/ui/\\evil``) after login."""
    if not target or not target.startswith("/ui/") or target.startswith("/ui//"):
        return "/ui/"
    if any(c == "\\" or ord(c) < 0x20 for c in target):
        return "/ui/"
    return target


def admin_only(page: Page) -> Handler:
    """Run ``page`` for a verified session (and, for POST, a matching CSRF field)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        session = await _session(request)
        if session is None:
            return _to_login(request)
        if request.method == "POST":
            form = await request.post()
            if not request.app[DASHBOARD].sessions.csrf_ok(session, _field(form, "csrf")):
                return _render(
                    request, "error.html", status=403, session=session,
                    message="This form has expired or did not come from the dashboard. "
                    "Reload the page and try again.",
                )  # fmt: skip
        return await page(request, state_of(request), session)

    return handler


def _field(form: Mapping[str, object], name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


# -- login ---------------------------------------------------------------------------------


async def login_form(request: web.Request) -> web.StreamResponse:
    if await _session(request) is not None:
        return _redirect(_safe_next(request.query.get("next")), 302)
    return _render(request, "login.html", next=_safe_next(request.query.get("next")), error=None)


async def login(request: web.Request) -> web.StreamResponse:
    form = await request.post()
    token = (_field(form, "token") or "").strip()
    target = _safe_next(_field(form, "next"))
    try:
        await state_of(request).admin.authenticate(f"Bearer {token}")
    except Unauthenticated:
        error = "That is not a valid admin token, or it has expired."
        return _render(request, "login.html", status=401, next=target, error=error)
    except ScopeForbidden:
        error = (
            "That is a cache token; the dashboard needs an admin token (ghacache token --admin)."
        )
        return _render(request, "login.html", status=403, next=target, error=error)
    resp = _redirect(target)
    sess.set_cookie(resp, token, secure=_secure(request))
    return resp


async def logout(request: web.Request) -> web.StreamResponse:
    session = await _session(request)
    if session is not None:
        form = await request.post()
        if not request.app[DASHBOARD].sessions.csrf_ok(session, _field(form, "csrf")):
            return _render(
                request, "error.html", status=403, session=session, message="Reload and try again."
            )
    resp = _redirect("/ui/login")
    sess.clear_cookie(resp, secure=_secure(request))
    return resp


# -- pages ---------------------------------------------------------------------------------


@admin_only
async def overview(
    request: web.Request, state: ServerState, session: Session
) -> web.StreamResponse:
    hit_rates = request.app[DASHBOARD].hit_rates
    span = request.query.get("span", "24h")
    span_s, step_s, tick_s, window = SPANS.get(span) or SPANS["24h"]
    usages = await state.catalog.usage()
    evicted = evictions_per_repo(await state.catalog.eviction_counts())
    lookups = {repo: hit_rates.totals(repo) for repo in hit_rates.repos()}
    names = {u.repo for u in usages} | evicted.keys() | lookups.keys()
    rows = repo_rows(
        usages,
        quotas={r: state.maintainer.policies.for_repo(r).quota_bytes for r in names},
        lookups=lookups,
        evicted=evicted,
    )
    chart = hit_rate_chart(
        hit_rates.timeline(span_s=span_s, step_s=step_s),
        step_s=step_s,
        tick_every_s=tick_s,
        rate_window=window,
    )
    return _render(
        request, "overview.html", session=session, rows=rows, chart=chart,
        span=span if span in SPANS else "24h", spans=list(SPANS), totals=hit_rates.totals(),
    )  # fmt: skip


def _repo(request: web.Request) -> tuple[str, str, str]:
    owner, name = request.match_info["owner"], request.match_info["repo"]
    return f"{owner}/{name}", owner, name


@admin_only
async def repository(
    request: web.Request, state: ServerState, session: Session
) -> web.StreamResponse:
    repo, owner, name = _repo(request)
    catalog = state.catalog
    found = await catalog.usage(repo)
    usage = found[0] if found else RepoUsage(repo=repo, size=0, count=0, oldest_access=0.0)
    policy = state.maintainer.policies.for_repo(repo)
    _, largest = await catalog.list_entries(repo=repo, sort="size_in_bytes", limit=TABLE_ROWS)
    _, idle = await catalog.list_entries(
        repo=repo, sort="last_accessed_at", descending=False, limit=TABLE_ROWS
    )
    eviction_total, evictions = await catalog.evictions(repo=repo, limit=TABLE_ROWS)
    _, indexes = await catalog.list_entries(
        repo=repo, key_prefix="index-", sort="created_at", descending=False, limit=MAX_INDEX_ENTRIES
    )
    hit_rates = request.app[DASHBOARD].hit_rates
    raw = request.query.get("deleted", "")
    deleted = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 10 else None
    return _render(
        request, "repo.html", session=session, repo=repo, owner=owner, name=name,
        usage=usage, policy=policy, bar=usage_bar(usage.size, policy.quota_bytes, width=480),
        largest=largest, idle=idle, evictions=evictions, eviction_total=eviction_total,
        families=buildkit_families(indexes),
        blob_count=len(await catalog.buildkit_blobs(repo, bk.VERSION)),
        chart=hit_rate_chart(
            hit_rates.repo_timeline(repo), step_s=HOUR_S, tick_every_s=4 * HOUR_S, rate_window=3
        ),
        deleted=deleted,
    )  # fmt: skip


def _back(owner: str, name: str, deleted: int) -> web.Response:
    return _redirect(f"/ui/repos/{_path_part(owner)}/{_path_part(name)}?deleted={deleted}")


@admin_only
async def delete_entry(
    request: web.Request, state: ServerState, session: Session
) -> web.StreamResponse:
    repo, owner, name = _repo(request)
    entry_id = parse_entry_id(_field(await request.post(), "entry_id") or "")
    entry = await state.service.index.get(entry_id) if entry_id is not None else None
    if entry is None or not entry.committed or entry.repo != repo:
        return _back(owner, name, 0)
    return _back(owner, name, len(await state.maintainer.delete([entry.id])))


@admin_only
async def delete_key(
    request: web.Request, state: ServerState, session: Session
) -> web.StreamResponse:
    repo, owner, name = _repo(request)
    form = await request.post()
    key = _field(form, "key") or ""
    if not key:
        return _back(owner, name, 0)
    entries = await state.catalog.find(repo=repo, key=key, ref=_field(form, "ref") or None)
    gone = await state.maintainer.delete([e.id for e in entries]) if entries else []
    return _back(owner, name, len(gone))


async def stylesheet(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[DASHBOARD].stylesheet,
        content_type="text/css",
        headers={"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


async def to_overview(request: web.Request) -> web.Response:
    return _redirect("/ui/", 302)


def add_routes(app: web.Application, *, key: bytes, hit_rates: HitRateHistory) -> None:
    """Serve the dashboard; ``key`` signs CSRF tokens (derive it for this purpose alone)."""
    css = importlib.resources.files("ghacache.server").joinpath("ui/static/ui.css").read_bytes()
    app[DASHBOARD] = Dashboard(
        templates=_templates(), sessions=Sessions(key), hit_rates=hit_rates, stylesheet=css
    )
    app.router.add_get("/ui", to_overview)
    app.router.add_get("/ui/", overview)
    app.router.add_get("/ui/login", login_form)
    app.router.add_post("/ui/login", login)
    app.router.add_post("/ui/logout", logout)
    app.router.add_get("/ui/static/ui.css", stylesheet)
    app.router.add_get("/ui/repos/{owner}/{repo}", repository)
    app.router.add_post("/ui/repos/{owner}/{repo}/delete", delete_entry)
    app.router.add_post("/ui/repos/{owner}/{repo}/delete-key", delete_key)
