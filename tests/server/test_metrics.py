"""``GET /metrics`` after a scripted workload shows exactly what happened.

Saves over v2 and v1, exact and prefix hits, misses, quota, idle and operator evictions, a
429 from the rate limit and BuildKit index merges all go through the real server over HTTP;
the scrape is parsed with prometheus_client's own parser and every value is checked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from ghacache.cacheconfig import keys as bk
from ghacache.cacheconfig.merge import gc
from ghacache.cacheconfig.model import parse
from ghacache.server.auth import mint_admin_token
from tests.conftest import Clock, ServerHandle, start_server
from tests.support import wire
from tests.support.fixtures import gha_entries

DAY = 86400.0
Labels = tuple[tuple[str, str], ...]


def scrape_text(text: str) -> dict[str, dict[Labels, float]]:
    """Sample name -> {sorted label pairs -> value}."""
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def scrape(
    http: aiohttp.ClientSession, srv: ServerHandle, token: str | None = None
) -> dict[str, dict[Labels, float]]:
    headers = wire.auth(token) if token else {}
    async with http.get(srv.url + "/metrics", headers=headers) as r:
        assert r.status == 200, await r.text()
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        return scrape_text(await r.text())


def by(labels: dict[Labels, float], name: str) -> dict[str, float]:
    """Values of a one-label metric keyed by that label."""
    return {dict(k)[name]: v for k, v in labels.items()}


def admin(srv: ServerHandle) -> str:
    return mint_admin_token(srv.secret, ttl_s=30 * DAY, now=srv.clock())


@pytest.fixture
async def srv(tmp_path: Path, clock: Clock) -> AsyncIterator[ServerHandle]:
    handle, runner = await start_server(tmp_path, clock, repo_quota_bytes="700", rate_limit="4")
    try:
        yield handle
    finally:
        await runner.cleanup()


async def test_a_workload_is_counted_exactly(
    srv: ServerHandle, http: aiohttp.ClientSession
) -> None:
    clock, url = srv.clock, srv.url
    token = srv.token("octo/app")
    await wire.v2_save(http, url, token, "a-1", b"a" * 100)
    clock.advance(1)
    await wire.v2_save(http, url, token, "b-1", b"b" * 300, block_size=100)
    clock.advance(1)
    c_id = await wire.v1_save(http, url, token, "c-1", b"c" * 200, chunk_size=100)

    clock.advance(1)
    hit = await wire.v2_lookup(http, url, token, "a-1")
    status, body, _ = await wire.download(http, hit["signed_download_url"])
    assert (status, len(body)) == (200, 100)
    clock.advance(1)
    assert (await wire.v2_lookup(http, url, token, "zzz", ["b-"]))["matched_key"] == "b-1"
    assert not (await wire.v2_lookup(http, url, token, "nope"))["ok"]
    clock.advance(1)
    status, found = await wire.v1_lookup(http, url, token, ["c-1"])
    assert status == 200 and found is not None
    status, body, _ = await wire.download(http, found["archiveLocation"])
    assert (status, len(body)) == (200, 200)
    assert (await wire.v1_lookup(http, url, token, ["none"]))[0] == 204

    # 850 bytes over a 700-byte quota: a-1 then b-1 (least recently used) go.
    clock.advance(1)
    await wire.v2_save(http, url, token, "d-1", b"d" * 250)
    async with http.delete(
        f"{url}/repos/octo/app/actions/caches/{c_id}", headers=wire.auth(admin(srv))
    ) as r:
        assert r.status == 204
    # Four creations a minute per repository: the fifth is refused.
    burst = srv.token("octo/burst")
    statuses = []
    for i in range(5):
        body_ = {"key": f"burst-{i}", "version": wire.VERSION}
        statuses.append((await wire.twirp(http, url, "CreateCacheEntry", body_, burst))[0])
    assert statuses == [200, 200, 200, 200, 429]
    status, _ = await wire.twirp(
        http, url, "CreateCacheEntry", {"key": "x", "version": wire.VERSION}, "not-a-token"
    )
    assert status == 401
    async with http.get(url + "/no/such/route") as r:
        assert r.status == 404
    # d-1 idles past the 7-day expiry; the next commit in octo/app evicts it.
    clock.advance(8 * DAY)
    await wire.v2_save(http, url, srv.token("octo/app"), "e-1", b"e" * 50)

    m = await scrape(http, srv)
    requests = {
        (dict(k)["protocol"], dict(k)["operation"], dict(k)["status"]): v
        for k, v in m["ghacache_requests_total"].items()
    }
    assert requests == {
        ("v2", "CreateCacheEntry", "200"): 8,
        ("v2", "CreateCacheEntry", "429"): 1,
        ("v2", "CreateCacheEntry", "401"): 1,
        ("v2", "FinalizeCacheEntryUpload", "200"): 4,
        ("v2", "GetCacheEntryDownloadURL", "200"): 3,
        ("blob", "put_blob", "201"): 3,
        ("blob", "put_block", "201"): 3,
        ("blob", "put_block_list", "201"): 1,
        ("blob", "get_blob", "200"): 2,
        ("v1", "reserve", "201"): 1,
        ("v1", "patch", "204"): 2,
        ("v1", "commit", "204"): 1,
        ("v1", "lookup", "200"): 1,
        ("v1", "lookup", "204"): 1,
        ("management", "delete_by_id", "204"): 1,
        ("other", "unknown", "404"): 1,
    }
    durations = {
        (dict(k)["protocol"], dict(k)["operation"]): v
        for k, v in m["ghacache_request_duration_seconds_count"].items()
    }
    assert durations[("v2", "CreateCacheEntry")] == 10
    assert sum(durations.values()) == sum(requests.values())

    assert by(m["ghacache_lookups_total"], "result") == {"exact": 2, "prefix": 1, "miss": 2}
    assert m["ghacache_upload_bytes_total"] == {(): 100 + 300 + 200 + 250 + 50}
    assert m["ghacache_upload_duration_seconds_count"] == {(): 3 + 3 + 2}
    assert m["ghacache_download_bytes_total"] == {(): 300}
    assert m["ghacache_download_duration_seconds_count"] == {(): 2}
    evictions = {"quota": 2, "deleted": 1, "idle": 1, "missing": 0}
    assert by(m["ghacache_evictions_total"], "reason") == evictions
    evicted = {"quota": 400, "deleted": 200, "idle": 250, "missing": 0}
    assert by(m["ghacache_evicted_bytes_total"], "reason") == evicted
    assert by(m["ghacache_rate_limited_total"], "repository") == {"octo/burst": 1}
    assert m["ghacache_buildkit_index_merges_total"] == {(): 0}
    assert m["ghacache_buildkit_records_dropped_total"] == {(): 0}
    # Gauges: only octo/app holds committed entries (octo/burst only reserved some).
    assert by(m["ghacache_repository_entries"], "repository") == {"octo/app": 1}
    assert by(m["ghacache_repository_bytes"], "repository") == {"octo/app": 50}
    assert by(m["ghacache_repository_quota_bytes"], "repository") == {"octo/app": 700}
    assert by(m["ghacache_repository_quota_used_ratio"], "repository") == {"octo/app": 50 / 700}


async def test_buildkit_merges_and_gc_are_counted(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    uploaded: dict[str, bytes] = {}
    for entry in gha_entries():
        server.clock.advance(1)
        await wire.v2_save(http, server.url, token, entry.key, entry.data, version=entry.version)
        uploaded[entry.key] = entry.data

    async def stored(key: str) -> bytes:
        found = await wire.v2_lookup(http, server.url, token, key, version=bk.VERSION)
        assert found["matched_key"] == key
        status, body, _ = await wire.download(http, found["signed_download_url"])
        assert status == 200
        return body

    indexes = [k for k in uploaded if bk.parse_index_key(k) is not None]
    rewritten = [k for k in indexes if await stored(k) != uploaded[k]]
    assert rewritten  # at least the second generation is a merge
    m = await scrape(http, server)
    assert m["ghacache_buildkit_index_merges_total"] == {(): len(rewritten)}
    assert m["ghacache_buildkit_records_dropped_total"] == {(): 0}

    # Deleting a layer blob drops the records that needed it from the newest indexes.
    newest = ["index-build-a-1-f921bd05#2", "index-build-b-1-f921bd05#1"]
    configs = [parse(await stored(k)) for k in newest]
    digest = sorted(configs[0].blobs() & configs[1].blobs())[0]  # a shared base layer
    expected = sum(gc(c, lambda d: d != digest)[1].dropped_records for c in configs)
    assert expected > 0
    async with http.delete(
        f"{server.url}/repos/octo/repo/actions/caches",
        params={"key": bk.blob_key(digest)},
        headers=wire.auth(admin(server)),
    ) as r:
        assert r.status == 200, await r.text()
    m = await scrape(http, server)
    assert m["ghacache_buildkit_records_dropped_total"] == {(): expected}
    assert m["ghacache_buildkit_index_merges_total"] == {(): len(rewritten)}
    assert by(m["ghacache_evictions_total"], "reason")["deleted"] == 1


async def test_metrics_token_guards_the_scrape_and_apps_keep_their_own_counts(
    tmp_path: Path, server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    guarded, runner = await start_server(tmp_path / "guarded", Clock(), metrics_token="s3cret")
    try:
        await wire.v2_save(http, server.url, server.token(), "k", b"x")
        async with http.get(guarded.url + "/metrics") as r:
            assert r.status == 401
        async with http.get(guarded.url + "/metrics", headers=wire.auth("wrong")) as r:
            assert r.status == 401
        m = await scrape(http, guarded, "s3cret")
        # The other server's save is not in this app's registry.
        assert {dict(k)["protocol"] for k in m["ghacache_requests_total"]} == {"other"}
        assert by(m["ghacache_requests_total"], "status") == {"401": 2}
        assert m["ghacache_upload_bytes_total"] == {(): 0}
        assert (await scrape(http, server))["ghacache_upload_bytes_total"] == {(): 1}
    finally:
        await runner.cleanup()
