"""The BuildKit backend against the real ghacache server: export, import, merge, gc, inspect."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Literal

import pytest

from ghacache.buildkit.backend import BuildkitCache
from ghacache.buildkit.layout import read_layout
from ghacache.cacheconfig import keys as bk
from ghacache.cacheconfig.merge import merge, normalize
from ghacache.cacheconfig.model import CacheConfigError, dumps
from ghacache.client import CacheClient, ClientConfig
from tests.conftest import Clock, ServerHandle, start_server
from tests.support.fixtures import layout

MAIN = "f921bd05"
Protocol = Literal["v1", "v2"]


@pytest.fixture(params=["v2", "v1"])
async def plain_server(
    request: pytest.FixtureRequest, tmp_path: Path, clock: Clock
) -> AsyncIterator[tuple[ServerHandle, Protocol]]:
    """A server without its own BuildKit merge, so the client's work is what is tested."""
    handle, runner = await start_server(tmp_path, clock, buildkit_merge="false")
    try:
        yield handle, request.param
    finally:
        await runner.cleanup()


def _client(server: ServerHandle, protocol: Protocol, *scopes: str) -> CacheClient:
    return CacheClient(
        ClientConfig(token=server.token("octo/repo", *scopes), url=server.url, protocol=protocol)
    )


async def _blob_keys(server: ServerHandle) -> set[str]:
    _total, entries = await server.state.catalog.list_entries(
        repo="octo/repo", key_prefix="buildkit-blob-1-", limit=1000
    )
    return {e.key for e in entries}


async def test_export_uploads_each_blob_once_and_merges_generations(
    plain_server: tuple[ServerHandle, Protocol], tmp_path: Path
) -> None:
    server, protocol = plain_server
    async with _client(server, protocol) as client:
        cache = BuildkitCache(client)
        first = await cache.export(layout("build-a"), scope="app")
        local_a = read_layout(layout("build-a"))
        assert first.index_key == f"index-app-1-{MAIN}#1"
        assert sorted(first.uploaded) == sorted(local_a.blobs)
        assert await _blob_keys(server) == {bk.blob_key(d) for d in local_a.blobs}
        again = await cache.export(layout("build-a"), scope="app")
        assert again.uploaded == [] and sorted(again.present) == sorted(local_a.blobs)
        assert again.index_key == f"index-app-1-{MAIN}#2"
        a2 = await cache.export(layout("build-a2"), scope="app")
        assert a2.index_key == f"index-app-1-{MAIN}#3"
        local_a2 = read_layout(layout("build-a2"))
        assert set(a2.uploaded) == set(local_a2.blobs) - set(local_a.blobs)  # the shared ones exist
        key, current = await cache.load_index("app", "refs/heads/main")  # type: ignore[misc]
        assert key == a2.index_key
        assert current == merge(local_a.config, local_a2.config)


async def test_export_replace_writes_only_the_directory(
    plain_server: tuple[ServerHandle, Protocol],
) -> None:
    server, protocol = plain_server
    async with _client(server, protocol) as client:
        cache = BuildkitCache(client)
        await cache.export(layout("build-a"), scope="app")
        await cache.export(layout("build-b"), scope="app", replace=True)
        _, current = await cache.load_index("app", "refs/heads/main")  # type: ignore[misc]
        assert current == normalize(read_layout(layout("build-b")).config)


async def test_import_writes_the_exported_layout(
    plain_server: tuple[ServerHandle, Protocol], tmp_path: Path
) -> None:
    server, protocol = plain_server
    async with _client(server, protocol) as client:
        cache = BuildkitCache(client)
        await cache.export(layout("build-a"), scope="app")
        dest = tmp_path / "imported"
        report = await cache.import_(dest, scopes=["app"])
        assert report.index_keys == [f"index-app-1-{MAIN}#1"] and report.missing == []
        source, imported = read_layout(layout("build-a")), read_layout(dest)
        assert imported.config == normalize(source.config)
        assert sorted(imported.blobs) == sorted(source.blobs)
        for digest, path in imported.blobs.items():
            assert path.read_bytes() == source.blobs[digest].read_bytes()
        index = json.loads((dest / "index.json").read_text())
        assert index["manifests"][0]["annotations"] == {
            "org.opencontainers.image.ref.name": "latest"
        }
        assert (dest / "oci-layout").read_text() == '{"imageLayoutVersion":"1.0.0"}'


async def test_import_merges_scopes_and_refs(
    plain_server: tuple[ServerHandle, Protocol], tmp_path: Path
) -> None:
    server, protocol = plain_server
    async with _client(server, protocol, "refs/heads/main:rw") as main_client:
        await BuildkitCache(main_client).export(layout("build-a"), scope="a")
    async with _client(server, protocol, "refs/pull/1/merge:rw", "refs/heads/main:r") as pr_client:
        pr = BuildkitCache(pr_client)
        written = await pr.export(layout("build-b"), scope="b")
        assert written.index_key.startswith(f"index-b-1-{bk.ref_hash('refs/pull/1/merge')}#")
        report = await pr.import_(tmp_path / "both", scopes=["a", "b"])
        assert len(report.index_keys) == 2
        imported = read_layout(tmp_path / "both")
        expected = merge(
            read_layout(layout("build-a")).config, read_layout(layout("build-b")).config
        )
        assert imported.config == expected


async def test_gc_drops_records_of_a_deleted_blob(
    plain_server: tuple[ServerHandle, Protocol], tmp_path: Path
) -> None:
    server, protocol = plain_server
    async with _client(server, protocol) as client:
        cache = BuildkitCache(client)
        await cache.export(layout("build-a"), scope="app")
        _, before = await cache.load_index("app", "refs/heads/main")  # type: ignore[misc]
        victim = sorted(before.blobs())[0]
        [entry] = await server.state.catalog.find(repo="octo/repo", key=bk.blob_key(victim))
        await server.state.maintainer.delete([entry.id])
        [info] = await cache.inspect(["app"], ["refs/heads/main"])
        assert info.missing_blobs == [victim]
        key, missing = await cache.gc(scope="app")
        assert key == f"index-app-1-{MAIN}#2" and missing == [victim]
        _, after = await cache.load_index("app", "refs/heads/main")  # type: ignore[misc]
        expected = {
            (r.digest, before.chain_of(x.layer))
            for r in before.records
            for x in r.results
            if victim not in before.chain_of(x.layer)
        }
        assert {
            (r.digest, after.chain_of(x.layer)) for r in after.records for x in r.results
        } == expected
        assert victim not in after.blobs()
        assert await cache.gc(scope="app") == (None, [])  # nothing left to drop
        report = await cache.import_(tmp_path / "out", scopes=["app"])
        assert victim not in read_layout(tmp_path / "out").blobs and report.missing == []


async def test_inspect_reports_generation_counts_and_size(
    plain_server: tuple[ServerHandle, Protocol],
) -> None:
    server, protocol = plain_server
    async with _client(server, protocol) as client:
        cache = BuildkitCache(client)
        await cache.export(layout("build-a"), scope="app")
        await cache.export(layout("build-b"), scope="app")
        [info] = await cache.inspect(["app"])
        local = merge(read_layout(layout("build-a")).config, read_layout(layout("build-b")).config)
        assert (info.generation, info.records, info.layers) == (
            2,
            len(local.records),
            len(local.layers),
        )
        assert info.bytes == sum(
            {
                layer.blob: layer.annotations.size for layer in local.layers if layer.annotations
            }.values()
        )
        assert info.missing_blobs == []


async def test_merge_into_combines_scopes(plain_server: tuple[ServerHandle, Protocol]) -> None:
    server, protocol = plain_server
    async with _client(server, protocol) as client:
        cache = BuildkitCache(client)
        await cache.export(layout("build-a"), scope="a")
        await cache.export(layout("build-b"), scope="b")
        key = await cache.merge_into(scope="all", from_scopes=["a", "b"])
        assert key == f"index-all-1-{MAIN}#1"
        _, merged = await cache.load_index("all", "refs/heads/main")  # type: ignore[misc]
        assert merged == merge(
            read_layout(layout("build-a")).config, read_layout(layout("build-b")).config
        )


async def test_corrupt_blob_is_refused_before_any_upload(
    plain_server: tuple[ServerHandle, Protocol], tmp_path: Path
) -> None:
    server, protocol = plain_server
    broken = tmp_path / "broken"
    shutil.copytree(layout("build-a"), broken)
    victim = next(iter(sorted(read_layout(broken).blobs.values())))
    victim.chmod(0o644)
    victim.write_bytes(b"not the layer")
    async with _client(server, protocol) as client:
        with pytest.raises(CacheConfigError, match="does not match its digest"):
            await BuildkitCache(client).export(broken, scope="app")
    assert await _blob_keys(server) == set()
    assert (
        await server.state.service.index.lookup(
            repo="octo/repo", scopes=["refs/heads/main"], keys=["index-"], version=bk.VERSION
        )
        is None
    )


async def test_corrupt_index_gives_a_clear_error(
    plain_server: tuple[ServerHandle, Protocol], tmp_path: Path
) -> None:
    server, protocol = plain_server
    async with _client(server, protocol) as client:
        await client.save(
            bk.index_base("app", "refs/heads/main") + "#1", bk.VERSION, b'{"layers": [{"blob": 5}]}'
        )
        with pytest.raises(CacheConfigError, match="corrupt"):
            await BuildkitCache(client).import_(tmp_path / "out", scopes=["app"])
    assert not (tmp_path / "out" / "index.json").exists()


async def test_layout_without_the_tag_or_a_blob_is_rejected(
    plain_server: tuple[ServerHandle, Protocol], tmp_path: Path
) -> None:
    server, protocol = plain_server
    async with _client(server, protocol) as client:
        cache = BuildkitCache(client)
        with pytest.raises(CacheConfigError, match="no cache tagged"):
            await cache.export(layout("build-a"), scope="app", tag="nope")
        with pytest.raises(CacheConfigError, match=r"no index\.json"):
            await cache.export(tmp_path, scope="app")
        with pytest.raises(CacheConfigError, match="no BuildKit cache found"):
            await cache.import_(tmp_path / "empty", scopes=["app"])


async def test_export_writes_exactly_what_buildkit_would(
    plain_server: tuple[ServerHandle, Protocol],
) -> None:
    """The first generation is the BuildKit gha document itself (canonical order)."""
    server, protocol = plain_server
    async with _client(server, protocol) as client:
        cache = BuildkitCache(client)
        await cache.export(layout("build-a"), scope="build-a")
        _, doc = await cache.load_index("build-a", "refs/heads/main")  # type: ignore[misc]
        from ghacache.cacheconfig.model import parse
        from tests.support.fixtures import index_bytes

        assert dumps(doc) == dumps(normalize(parse(index_bytes("index-build-a-1-f921bd05#1"))))


async def test_oversized_index_is_refused(
    plain_server: tuple[ServerHandle, Protocol], tmp_path: Path
) -> None:
    """An index entry far beyond any real BuildKit index is not loaded into memory."""
    server, protocol = plain_server
    async with _client(server, protocol) as client:
        await BuildkitCache(client).export(layout("build-a"), scope="app")
        small = BuildkitCache(client, max_index_bytes=1000)
        with pytest.raises(CacheConfigError, match="refusing to load"):
            await small.import_(tmp_path / "out", scopes=["app"])
    assert not (tmp_path / "out" / "index.json").exists()
