"""The server merges BuildKit index generations and repairs indexes after blob eviction."""

from __future__ import annotations

import aiohttp

from ghacache.cacheconfig import keys as bk
from ghacache.cacheconfig.merge import merge
from ghacache.cacheconfig.model import parse
from tests.conftest import Clock, ServerHandle, start_server
from tests.support import wire
from tests.support.fixtures import gha_entries, index_bytes


async def _replay(server: ServerHandle, http: aiohttp.ClientSession, token: str) -> None:
    for entry in gha_entries():
        server.clock.advance(1)
        await wire.v2_save(http, server.url, token, entry.key, entry.data, version=entry.version)


async def _current_index(
    server: ServerHandle, http: aiohttp.ClientSession, token: str, base: str
) -> tuple[str, bytes]:
    found = await wire.v2_lookup(http, server.url, token, base, [base], version=bk.VERSION)
    assert found["ok"], found
    status, body, _ = await wire.download(http, found["signed_download_url"])
    assert status == 200
    return found["matched_key"], body


async def test_replayed_buildkit_exports_leave_the_union(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    await _replay(server, http, token)
    key, body = await _current_index(server, http, token, "index-build-a-1-f921bd05")
    assert key == "index-build-a-1-f921bd05#2"
    served = parse(body)
    first, second = (
        parse(index_bytes("index-build-a-1-f921bd05#1")),
        parse(index_bytes("index-build-a-1-f921bd05#2")),
    )
    digests = {r.digest for r in served.records}
    assert {r.digest for r in first.records} <= digests
    assert {r.digest for r in second.records} <= digests
    assert served == merge(first, second)
    # build-b's index is a family of its own: untouched by build-a's generations.
    _, b_body = await _current_index(server, http, token, "index-build-b-1-f921bd05")
    assert parse(b_body) == merge(parse(index_bytes("index-build-b-1-f921bd05#1")))


async def test_first_generation_is_stored_canonical_and_complete(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    await _replay(server, http, token)
    _, body = await _current_index(server, http, token, "index-build-b-1-f921bd05")
    original = parse(index_bytes("index-build-b-1-f921bd05#1"))
    assert {r.digest for r in parse(body).records} == {r.digest for r in original.records}


async def test_merge_can_be_switched_off(
    tmp_path, clock: Clock, http: aiohttp.ClientSession
) -> None:
    server, runner = await start_server(tmp_path, clock, buildkit_merge="false")
    try:
        token = server.token()
        await _replay(server, http, token)
        _, body = await _current_index(server, http, token, "index-build-a-1-f921bd05")
        assert body == index_bytes("index-build-a-1-f921bd05#2")
    finally:
        await runner.cleanup()


async def test_evicted_blob_is_removed_from_indexes(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    await _replay(server, http, token)
    _, before = await _current_index(server, http, token, "index-build-a-1-f921bd05")
    config = parse(before)
    # A blob used by build-a only (not the shared base layer).
    shared = parse(index_bytes("index-build-b-1-f921bd05#1")).blobs()
    victim = sorted(config.blobs() - shared)[0]
    blob_entries = await server.state.catalog.find(repo="octo/repo", key=bk.blob_key(victim))
    assert len(blob_entries) == 1
    await server.state.maintainer.delete([blob_entries[0].id])
    key, after = await _current_index(server, http, token, "index-build-a-1-f921bd05")
    assert key == "index-build-a-1-f921bd05#2"
    repaired = parse(after)
    assert victim not in repaired.blobs()
    assert repaired.blobs() <= config.blobs()
    # Results that needed the victim are gone; a record keeps any other result it had.
    results = sum(len(r.results) for r in config.records)
    victim_results = sum(
        1 for r in config.records for res in r.results if victim in config.chain_of(res.layer)
    )
    assert victim_results > 0
    assert sum(len(r.results) for r in repaired.records) == results - victim_results
    for rec in repaired.records:
        for res in rec.results:
            assert victim not in repaired.chain_of(res.layer)
    # build-b's index never referenced the victim and is unchanged.
    _, b_body = await _current_index(server, http, token, "index-build-b-1-f921bd05")
    assert victim not in parse(b_body).blobs()


async def test_corrupt_index_is_stored_as_uploaded(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    await _replay(server, http, token)
    junk = b'{"layers": "not a list"'
    await wire.v2_save(
        http, server.url, token, "index-build-a-1-f921bd05#3", junk, version=bk.VERSION
    )
    key, body = await _current_index(server, http, token, "index-build-a-1-f921bd05")
    assert (key, body) == ("index-build-a-1-f921bd05#3", junk)


async def test_max_age_drops_old_results(
    tmp_path, clock: Clock, http: aiohttp.ClientSession
) -> None:
    """Results older than --buildkit-index-max-age are dropped when a generation is merged."""
    fixture_time = parse(index_bytes("index-build-a-1-f921bd05#1")).records[0].results[0].created_at
    from ghacache.cacheconfig.merge import timestamp

    clock.t = timestamp(fixture_time) + 3600  # an hour after BuildKit wrote the fixtures
    for max_age, survives in (("2h", True), ("10m", False)):
        server, runner = await start_server(
            tmp_path / max_age, clock, buildkit_index_max_age=max_age
        )
        try:
            token = server.token()
            await _replay(server, http, token)
            _, body = await _current_index(server, http, token, "index-build-a-1-f921bd05")
            kept = parse(body)
            assert bool(kept.records) is survives
            if survives:
                assert kept == merge(
                    parse(index_bytes("index-build-a-1-f921bd05#1")),
                    parse(index_bytes("index-build-a-1-f921bd05#2")),
                )
        finally:
            await runner.cleanup()
