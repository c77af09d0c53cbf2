"""Client-side encoders and decoders of the v1 and v2 messages (the server's decode back)."""

from __future__ import annotations

import pytest

from ghacache.errors import RemoteProtocolError
from ghacache.protocol import v1, v2

V = "3ad75f27293d65a135214b8c82b296080f911dc107e52f1e7ec871a2eda46e69"


def test_v2_requests_round_trip_through_the_server_decoders() -> None:
    create = v2.CreateCacheEntryRequest(key="k", version=V)
    assert v2.CreateCacheEntryRequest.from_json(create.to_json()) == create
    finalize = v2.FinalizeCacheEntryUploadRequest(key="k", version=V, size_bytes=203078772)
    assert finalize.to_json()["size_bytes"] == "203078772"  # int64 as a string
    assert v2.FinalizeCacheEntryUploadRequest.from_json(finalize.to_json()) == finalize
    lookup = v2.GetCacheEntryDownloadURLRequest(key="k", restore_keys=("k", "k-"), version=V)
    assert v2.GetCacheEntryDownloadURLRequest.from_json(lookup.to_json()) == lookup
    bare = v2.GetCacheEntryDownloadURLRequest(key="k", restore_keys=(), version=V)
    assert "restore_keys" not in bare.to_json()  # proto3 JSON omits empty fields


def test_v2_responses_accept_both_spellings_and_defaults() -> None:
    hit = v2.GetCacheEntryDownloadURLResponse.from_json(
        {"ok": True, "signedDownloadUrl": "http://x/b?sig=1", "matchedKey": "k-1"}
    )
    assert (hit.ok, hit.signed_download_url, hit.matched_key) == (True, "http://x/b?sig=1", "k-1")
    assert not v2.GetCacheEntryDownloadURLResponse.from_json({}).ok  # {} means ok: false
    done = v2.FinalizeCacheEntryUploadResponse.from_json({"ok": True, "entry_id": "42"})
    assert done.entry_id == 42
    assert v2.FinalizeCacheEntryUploadResponse.from_json({"ok": True, "entryId": 7}).entry_id == 7
    refused = v2.CreateCacheEntryResponse.from_json({"ok": False, "message": "quota"})
    assert (refused.ok, refused.message, refused.signed_upload_url) == (False, "quota", "")


@pytest.mark.parametrize(
    "data", [{"ok": "yes"}, {"ok": True, "signed_upload_url": 5}, {"ok": True, "message": []}]
)
def test_v2_ill_typed_responses_are_rejected(data: dict[str, object]) -> None:
    with pytest.raises(RemoteProtocolError):
        v2.CreateCacheEntryResponse.from_json(data)


def test_v1_requests_round_trip_through_the_server_decoders() -> None:
    reserve = v1.ReserveCacheRequest(key="k", version=V, cache_size=12)
    assert reserve.to_json() == {"key": "k", "version": V, "cacheSize": 12}
    assert v1.ReserveCacheRequest.from_json(reserve.to_json()) == reserve
    assert "cacheSize" not in v1.ReserveCacheRequest(key="k", version=V, cache_size=None).to_json()
    assert v1.CommitCacheRequest.from_json(v1.CommitCacheRequest(size=5).to_json()).size == 5
    query = v1.LookupQuery(keys=("a#1", "b"), version=V).to_query()
    assert v1.LookupQuery.from_query(query["keys"], query["version"]).keys == ("a#1", "b")


def test_v1_responses() -> None:
    assert v1.ReserveCacheResponse.from_json({"cacheId": 1421}).cache_id == 1421
    assert v1.ReserveCacheResponse.from_json({"cacheID": 3}).cache_id == 3  # Go's spelling
    for bad in ({"cacheId": 0}, {}, {"cacheId": "7"}, {"cacheId": True}):
        with pytest.raises(RemoteProtocolError):
            v1.ReserveCacheResponse.from_json(bad)
    hit = v1.ArtifactCacheEntry.from_json(
        {"cacheKey": "k", "archiveLocation": "http://x/a", "scope": "refs/heads/main",
         "cacheVersion": V, "creationTime": "2026-01-01T00:00:00Z"}
    )  # fmt: skip
    assert hit is not None and (hit.cache_key, hit.scope) == ("k", "refs/heads/main")
    assert v1.ArtifactCacheEntry.from_json({"cacheKey": ""}) is None  # go-actions-cache's miss
    with pytest.raises(RemoteProtocolError):
        v1.ArtifactCacheEntry.from_json({"cacheKey": "k"})
