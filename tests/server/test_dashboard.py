"""The dashboard over HTTP: login and cookie, CSRF, the pages' content, deletion through forms.

Every test runs the real server on 127.0.0.1 and talks to it with aiohttp like a browser
without JavaScript would (form posts, redirects, a cookie jar).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ghacache.server.auth import mint_admin_token
from ghacache.server.hitrate import HitRateHistory
from ghacache.server.routes.ui import DASHBOARD
from tests.conftest import Clock, ServerHandle, start_server
from tests.support import wire
from tests.support.dashboard import FEATURE, MAIN, QUOTAS, admin_token, login, run_workload


@pytest.fixture
async def srv(tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    handle, runner = await start_server(tmp_path, clock, repo_overrides=QUOTAS)
    try:
        yield handle
    finally:
        await runner.cleanup()


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps cookies for 127.0.0.1 (aiohttp's default jar refuses IPs)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, **kw: Any) -> tuple[int, str, Any]:
    async with http.get(url, allow_redirects=False, **kw) as r:
        return r.status, await r.text(), r.headers.copy()


async def post(
    http: aiohttp.ClientSession, url: str, data: dict[str, str], **kw: Any
) -> tuple[int, str, Any]:
    async with http.post(url, data=data, allow_redirects=False, **kw) as r:
        return r.status, await r.text(), r.headers.copy()


async def management_keys(srv: ServerHandle, http: aiohttp.ClientSession, repo: str) -> set[str]:
    async with http.get(
        f"{srv.url}/repos/{repo}/actions/caches", headers=wire.auth(admin_token(srv))
    ) as r:
        assert r.status == 200
        return {f"{c['ref']} {c['key']}" for c in (await r.json())["actions_caches"]}


async def management_evictions(
    srv: ServerHandle, http: aiohttp.ClientSession, repo: str
) -> list[tuple[str, str]]:
    async with http.get(
        f"{srv.url}/actions/cache/evictions",
        params={"repo": repo},
        headers=wire.auth(admin_token(srv)),
    ) as r:
        return [(e["key"], e["reason"]) for e in (await r.json())["evictions"]]


# -- authentication ------------------------------------------------------------------------


async def test_every_page_and_action_needs_a_session(
    srv: ServerHandle, browser: aiohttp.ClientSession
) -> None:
    w = await run_workload(srv, browser)
    for path in ("/ui/", "/ui/repos/octo/app", "/ui/?span=1h"):
        status, _, headers = await get(browser, srv.url + path)
        assert status == 302
        assert headers["Location"].startswith("/ui/login?next=%2Fui%2F")
    status, _, headers = await get(browser, srv.url + "/ui")
    assert (status, headers["Location"]) == (302, "/ui/")
    entry_id = w.ids[("octo/app", MAIN, "npm-linux-aaa")]
    for action, data in (
        ("delete", {"entry_id": str(entry_id)}),
        ("delete-key", {"key": "npm-linux-aaa"}),
    ):
        status, _, headers = await post(browser, f"{srv.url}/ui/repos/octo/app/{action}", data)
        assert (status, headers["Location"]) == (303, "/ui/login")
    assert f"{MAIN} npm-linux-aaa" in await management_keys(srv, browser, "octo/app")
    # A stale or forged cookie is no session either, and is cleared.
    browser.cookie_jar.update_cookies({"ghacache_admin": "not-a-token"})
    status, _, headers = await get(browser, srv.url + "/ui/")
    assert status == 302 and "ghacache_admin=" in headers["Set-Cookie"]


async def test_bad_tokens_are_rejected_at_login(
    srv: ServerHandle, browser: aiohttp.ClientSession
) -> None:
    expired = mint_admin_token(srv.secret, ttl_s=60, now=srv.clock() - 3600)
    forged = mint_admin_token(b"another server's secret!", ttl_s=3600, now=srv.clock())
    for token, status, message in (
        ("garbage", 401, "not a valid admin token"),
        ("", 401, "not a valid admin token"),
        (expired, 401, "not a valid admin token"),
        (forged, 401, "not a valid admin token"),
        (srv.token("octo/app"), 403, "cache token"),
    ):
        got, html, headers = await post(browser, srv.url + "/ui/login", {"token": token})
        assert got == status, token
        assert message in html
        assert "Set-Cookie" not in headers
        if token:
            assert token not in html  # never echoed back
    status, _, _ = await get(browser, srv.url + "/ui/")
    assert status == 302


async def test_login_sets_a_strict_httponly_cookie(
    srv: ServerHandle, browser: aiohttp.ClientSession
) -> None:
    token = admin_token(srv)
    status, _, headers = await post(
        browser, srv.url + "/ui/login", {"token": token, "next": "/ui/repos/octo/app"}
    )
    assert status == 303
    assert headers["Location"] == "/ui/repos/octo/app"
    assert token not in headers["Location"]
    cookie = SimpleCookie(headers["Set-Cookie"])["ghacache_admin"]
    assert cookie.value == token
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert cookie["path"] == "/ui"
    assert not cookie["secure"]  # plain http on loopback
    status, html, headers = await get(browser, srv.url + "/ui/")
    assert status == 200 and "Repositories" in html
    assert token not in html
    assert "script-src" not in headers["Content-Security-Policy"]  # default-src 'none'
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY"


async def test_cookie_is_secure_behind_https(
    tmp_path: Path, clock: Clock, browser: aiohttp.ClientSession
) -> None:
    srv, runner = await start_server(tmp_path, clock, public_url="https://cache.example")
    try:
        status, _, headers = await post(browser, srv.url + "/ui/login", {"token": admin_token(srv)})
        assert status == 303
        assert SimpleCookie(headers["Set-Cookie"])["ghacache_admin"]["secure"] is True
    finally:
        await runner.cleanup()


async def test_login_never_redirects_off_the_dashboard(
    srv: ServerHandle, browser: aiohttp.ClientSession
) -> None:
    for target in ("//evil.example/", "https://evil.example/", "/ui//evil.example", "/ui/\\x"):
        status, _, headers = await post(
            browser, srv.url + "/ui/login", {"token": admin_token(srv), "next": target}
        )
        assert (status, headers["Location"]) == (303, "/ui/")


async def test_logout_clears_the_cookie(srv: ServerHandle, browser: aiohttp.ClientSession) -> None:
    csrf = await login(srv, browser)
    status, _, _ = await post(browser, srv.url + "/ui/logout", {})
    assert status == 403  # a valid session logs out only with its CSRF value
    status, _, headers = await post(browser, srv.url + "/ui/logout", {"csrf": csrf})
    assert (status, headers["Location"]) == (303, "/ui/login")
    cleared = SimpleCookie(headers["Set-Cookie"])["ghacache_admin"]
    assert cleared.value == "" and cleared["max-age"] == "0"
    status, _, _ = await get(browser, srv.url + "/ui/")
    assert status == 302


async def test_actions_without_the_csrf_value_are_refused(
    srv: ServerHandle, browser: aiohttp.ClientSession
) -> None:
    w = await run_workload(srv, browser)
    csrf = await login(srv, browser)
    entry_id = str(w.ids[("octo/app", MAIN, "npm-linux-aaa")])
    # Another admin session's value does not fit this cookie.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other:
        srv.clock.advance(1)
        other_csrf = await login(srv, other)
    assert other_csrf != csrf
    for bad in ({}, {"csrf": ""}, {"csrf": "0" * 64}, {"csrf": other_csrf}):
        status, html, _ = await post(
            browser, srv.url + "/ui/repos/octo/app/delete", {**bad, "entry_id": entry_id}
        )
        assert status == 403 and "did not come from the dashboard" in html
        status, _, _ = await post(
            browser, srv.url + "/ui/repos/octo/app/delete-key", {**bad, "key": "npm-linux-aaa"}
        )
        assert status == 403
    assert f"{MAIN} npm-linux-aaa" in await management_keys(srv, browser, "octo/app")


# -- deletion ------------------------------------------------------------------------------


async def test_delete_one_entry_through_the_form(
    srv: ServerHandle, browser: aiohttp.ClientSession
) -> None:
    w = await run_workload(srv, browser)
    csrf = await login(srv, browser)
    entry_id = w.ids[("octo/app", MAIN, "pip-linux-bbb")]
    status, _, headers = await post(
        browser, srv.url + "/ui/repos/octo/app/delete", {"csrf": csrf, "entry_id": str(entry_id)}
    )
    assert (status, headers["Location"]) == (303, "/ui/repos/octo/app?deleted=1")
    assert f"{MAIN} pip-linux-bbb" not in await management_keys(srv, browser, "octo/app")
    assert ("pip-linux-bbb", "deleted") in await management_evictions(srv, browser, "octo/app")
    status, html, _ = await get(browser, srv.url + headers["Location"])
    assert "Deleted 1 entry." in html
    assert f'data-entry-id="{entry_id}"' not in html
    # Already gone, or another repository's entry: nothing happens.
    other = w.ids[("acme/tools", MAIN, "go-mod-xyz")]
    for target in (entry_id, other):
        status, _, headers = await post(
            browser, srv.url + "/ui/repos/octo/app/delete", {"csrf": csrf, "entry_id": str(target)}
        )
        assert headers["Location"] == "/ui/repos/octo/app?deleted=0"
    assert "refs/heads/main go-mod-xyz" in await management_keys(srv, browser, "acme/tools")
    status, html, _ = await get(browser, srv.url + headers["Location"])
    assert "Nothing matched" in html


async def test_delete_all_entries_of_a_key_through_the_form(
    srv: ServerHandle, browser: aiohttp.ClientSession
) -> None:
    await run_workload(srv, browser)
    csrf = await login(srv, browser)
    url = srv.url + "/ui/repos/octo/app/delete-key"
    _, _, headers = await post(browser, url, {"csrf": csrf, "key": "npm-linux-aaa", "ref": FEATURE})
    assert headers["Location"] == "/ui/repos/octo/app?deleted=1"
    keys = await management_keys(srv, browser, "octo/app")
    assert f"{FEATURE} npm-linux-aaa" not in keys and f"{MAIN} npm-linux-aaa" in keys
    await post(browser, url, {"csrf": csrf, "key": "npm-linux-aaa", "ref": FEATURE})
    _, _, headers = await post(browser, url, {"csrf": csrf, "key": "npm-linux"})
    assert headers["Location"] == "/ui/repos/octo/app?deleted=0"  # exact keys only
    _, _, headers = await post(browser, url, {"csrf": csrf, "key": "npm-linux-aaa"})
    assert headers["Location"] == "/ui/repos/octo/app?deleted=1"
    assert not any("npm-linux-aaa" in k for k in await management_keys(srv, browser, "octo/app"))
    reasons = await management_evictions(srv, browser, "octo/app")
    assert reasons.count(("npm-linux-aaa", "deleted")) == 2


# -- what the pages show -------------------------------------------------------------------


async def test_overview_shows_every_repository_against_its_quota(
    srv: ServerHandle, browser: aiohttp.ClientSession
) -> None:
    await run_workload(srv, browser)
    await login(srv, browser)
    status, html, _ = await get(browser, srv.url + "/ui/")
    assert status == 200
    rows = dict(re.findall(r'<tr data-repo="([^"]+)">(.*?)</tr>', html, re.S))
    assert set(rows) == {"octo/app", "octo/web", "acme/tools"}
    # octo/app: npm 200 KiB + pip 300 + npm(feature) 20 + docker 250 against 800 KiB.
    assert "770 KiB" in rows["octo/app"] and "800 KiB" in rows["octo/app"]
    assert "10 GiB" in rows["acme/tools"] and "130 KiB" in rows["acme/tools"]
    assert '<a href="/ui/repos/octo/app">octo/app</a>' in rows["octo/app"]
    assert '<svg class="bar"' in rows["octo/app"]
    cells = re.findall(r'<td class="num">([^<]*)</td>', rows["octo/app"])
    assert cells[2:] == ["4", "3", "67%", "1"]  # entries, lookups, hit rate, evicted
    for span in ("1h", "6h", "24h", "bogus"):
        status, html, _ = await get(browser, srv.url + f"/ui/?span={span}")
        assert status == 200 and '<svg class="chart"' in html


async def test_repository_page_shows_entries_evictions_and_buildkit_scopes(
    srv: ServerHandle, browser: aiohttp.ClientSession
) -> None:
    w = await run_workload(srv, browser)
    await login(srv, browser)
    status, html, _ = await get(browser, srv.url + "/ui/repos/octo/app")
    assert status == 200
    largest, idle = re.findall(r'<table class="entries">(.*?)</table>', html, re.S)
    order = re.findall(r"<td class=\"key\"><code>([^<]+)</code>", largest)
    assert order == ["pip-linux-bbb", "docker-eee", "npm-linux-aaa", "npm-linux-aaa"]
    assert "300 KiB" in largest and refs_in(largest) >= {MAIN, FEATURE}
    idle_order = re.findall(r"<td class=\"key\"><code>([^<]+)</code>", idle)
    assert idle_order[0] == "npm-linux-aaa" and idle_order[-1] == "docker-eee"
    assert wire.VERSION[:10] in largest
    assert html.count('aria-label="Delete entry') == 8
    evictions = re.search(r'<table class="evictions">(.*?)</table>', html, re.S)
    assert evictions is not None
    assert "gradle-ccc" in evictions.group(1) and 'class="reason quota"' in evictions.group(1)
    assert "No BuildKit" in html

    status, html, _ = await get(browser, srv.url + "/ui/repos/octo/web")
    bk = re.search(r'<table class="buildkit">(.*?)</table>', html, re.S)
    assert bk is not None
    families = re.findall(r"<tr>(.*?)</tr>", bk.group(1), re.S)[1:]  # after the header
    assert len(families) == 2
    assert "build-a" in families[0] and '#2</span> <span class="gen">#1' in families[0]
    assert "index-build-a-1-f921bd05#2" in families[0]
    assert "build-b" in families[1] and "index-build-b-1-f921bd05#1" in families[1]
    assert "9 layer blobs" in html
    newest = w.ids[("octo/web", MAIN, "index-build-a-1-f921bd05#2")]
    assert f'name="entry_id" value="{newest}"' in families[0]


def refs_in(html: str) -> set[str]:
    return set(re.findall(r"<td><code>(refs/[^<]+)</code></td>", html))


async def test_hit_rate_history_counts_lookups(
    srv: ServerHandle, browser: aiohttp.ClientSession
) -> None:
    w = await run_workload(srv, browser)
    history = srv.app[DASHBOARD].hit_rates
    for repo in ("octo/app", "octo/web", "acme/tools"):
        totals = history.totals(repo)
        assert (totals.hits, totals.misses) == (w.hits.get(repo, 0), w.misses.get(repo, 0))
    # v1 lookups count too.
    status, _ = await wire.v1_lookup(
        browser, srv.url, srv.token("acme/tools"), ["nothing-here"], version=wire.VERSION
    )
    assert status == 204
    hits, misses = sum(w.hits.values()), sum(w.misses.values()) + 1
    await login(srv, browser)
    _, html, _ = await get(browser, srv.url + "/ui/")
    assert f'<strong id="hits-24h">{hits}</strong>' in html
    assert f'<strong id="misses-24h">{misses}</strong>' in html
    assert history.timeline(span_s=3600, step_s=60)[-1].lookups >= 1
    srv.clock.advance(25 * 3600)
    await login(srv, browser)  # the first admin token has expired meanwhile
    _, html, _ = await get(browser, srv.url + "/ui/")
    assert '<strong id="lookups-24h">0</strong>' in html


def test_hit_rate_history_buckets_and_bounds() -> None:
    clock = Clock()
    clock.t = 1_000_000 * 60.0  # on a minute (and 10-minute) boundary
    h = HitRateHistory(now=clock, max_repos=2)
    h.record("a/a", True)
    h.record("a/a", False)
    clock.advance(59)
    h.record("b/b", True)
    clock.advance(61)
    h.record("a/a", True)
    minutes = h.timeline(span_s=3600, step_s=60)
    assert len(minutes) == 60
    assert [(b.hits, b.misses) for b in minutes[-3:]] == [(2, 1), (0, 0), (1, 0)]
    assert minutes[-1].start == clock.t
    tens = h.timeline()
    assert len(tens) == 144 and (tens[-1].hits, tens[-1].misses) == (3, 1)
    assert h.totals("a/a").hit_rate == pytest.approx(2 / 3)
    h.record("c/c", False)  # a third repository: the least recently looked-up one goes
    assert sorted(h.repos()) == ["a/a", "c/c"]
    assert h.totals().lookups == 5
    with pytest.raises(ValueError, match="whole minutes"):
        h.timeline(step_s=90)
    clock.advance(86400)
    assert h.totals().lookups == 0 and h.repos() == []


async def test_hostile_names_are_escaped(srv: ServerHandle, browser: aiohttp.ClientSession) -> None:
    hostile = "<script>alert('key')</script>"
    repo = "octo/<img src=x onerror=alert(1)>"
    token = srv.token(repo)
    await wire.v2_save(browser, srv.url, token, hostile, b"x" * 10)
    await wire.v2_lookup(browser, srv.url, token, '"><script>alert(2)</script>')
    await login(srv, browser)
    _, overview, _ = await get(browser, srv.url + "/ui/")
    assert "<img src=x" not in overview
    assert "octo/&lt;img src=x onerror=alert(1)&gt;" in overview
    link = re.search(r'<a href="(/ui/repos/octo/[^"]+)">', overview)
    assert link is not None and "<" not in link.group(1)
    status, page, _ = await get(browser, srv.url + link.group(1))
    assert status == 200
    assert "<script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#39;key&#39;)&lt;/script&gt;" in page
