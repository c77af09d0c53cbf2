"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright.

Log in with an admin token, read the overview and a repository page, delete an entry with
its button, and check through the management API that it is gone. Screenshots are kept in
the test's directory and copied to ``bench/results/`` (git-ignored) for people to look at.
No JavaScript runs in the pages; the browser proves that the forms, redirects, cookie and
CSP work together.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.conftest import Clock, ServerHandle, start_server
from tests.support import wire
from tests.support.dashboard import (
    MAIN,
    QUOTAS,
    Workload,
    admin_token,
    lookups_over_hours,
    run_workload,
)

CHROMIUM = Path("/usr/bin/chromium")
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


@pytest.fixture
def chromium() -> Path:
    # Fail, never skip: scripts/test installs Debian's chromium package.
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing (apt-get install chromium)"
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=str(chromium), args=["--no-sandbox"], headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def srv(tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    handle, runner = await start_server(tmp_path, clock, repo_overrides=QUOTAS)
    try:
        yield handle
    finally:
        await runner.cleanup()


def keep(shot: Path) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    copy = RESULTS / shot.name
    shutil.copyfile(shot, copy)
    print(f"screenshot: {shot} (copied to {copy})")


async def screenshot(page: Page, path: Path) -> None:
    await page.screenshot(path=str(path), full_page=True)
    keep(path)


async def log_in(page: Page, url: str, token: str) -> None:
    await page.goto(url + "/ui/")
    await expect(page).to_have_url(url + "/ui/login?next=%2Fui%2F")
    await page.get_by_label("Admin token").fill(token)
    await page.get_by_role("button", name="Log in").click()
    await expect(page).to_have_url(url + "/ui/")


async def check_cookie(page: Page, context: BrowserContext) -> None:
    cookie = next(c for c in await context.cookies() if c["name"] == "ghacache_admin")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == ""  # out of scripts' reach


async def delete_docker_entry(page: Page, w: Workload) -> None:
    """On octo/app's page, delete docker-eee with its button and see it move to evictions."""
    await page.get_by_role("link", name="octo/app").click()
    await expect(page.get_by_role("heading", name="octo/app")).to_be_visible()
    evictions = page.locator("table.evictions")
    await expect(evictions.get_by_text("gradle-ccc")).to_be_visible()
    rows = page.locator(f'tr[data-entry-id="{w.ids[("octo/app", MAIN, "docker-eee")]}"]')
    await expect(rows).to_have_count(2)  # among the largest and the least recently used
    await rows.first.get_by_role("button", name="Delete").click()
    await expect(page.get_by_role("status")).to_have_text("Deleted 1 entry.")
    await expect(rows).to_have_count(0)
    await expect(evictions.get_by_text("docker-eee")).to_be_visible()


async def api_keys(srv: ServerHandle, http: aiohttp.ClientSession, repo: str) -> list[str]:
    url = f"{srv.url}/repos/{repo}/actions/caches"
    async with http.get(url, headers=wire.auth(admin_token(srv))) as r:
        return [c["key"] for c in (await r.json())["actions_caches"]]


async def test_log_in_browse_and_delete_in_chromium(
    srv: ServerHandle, browser: Browser, tmp_path: Path
) -> None:
    async with aiohttp.ClientSession() as http:
        w = await run_workload(srv, http)
        await lookups_over_hours(srv, http, w, 22)  # something to see on the chart
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        page = await context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        await log_in(page, srv.url, admin_token(srv))
        await check_cookie(page, context)
        for repo in ("octo/app", "octo/web", "acme/tools"):
            await expect(page.get_by_role("link", name=repo)).to_be_visible()
        await expect(page.locator("#hits-24h")).to_have_text(str(sum(w.hits.values())))
        await screenshot(page, tmp_path / "dashboard.png")

        await delete_docker_entry(page, w)
        await screenshot(page, tmp_path / "dashboard-repo.png")
        keys = await api_keys(srv, http, "octo/app")
        assert "docker-eee" not in keys and "pip-linux-bbb" in keys

        await page.goto(srv.url + "/ui/repos/octo/web")
        await expect(page.locator("table.buildkit")).to_contain_text("index-build-a-1-f921bd05#2")
        await screenshot(page, tmp_path / "dashboard-buildkit.png")
        await page.get_by_role("button", name="Log out").click()
        await expect(page).to_have_url(srv.url + "/ui/login")
        await page.goto(srv.url + "/ui/repos/octo/app")
        await expect(page.get_by_label("Admin token")).to_be_visible()
        assert errors == []  # no CSP violations, no failed loads
