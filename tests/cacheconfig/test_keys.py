"""BuildKit's key names."""

from __future__ import annotations

import hashlib

import pytest

from ghacache.cacheconfig import keys as bk
from tests.support.fixtures import gha_entries


def test_version_constant_is_go_actions_cache_hash() -> None:
    assert hashlib.sha256(b"|go-actionscache-1.0").hexdigest() == bk.VERSION


@pytest.mark.parametrize(
    ("ref", "h8"),
    [
        ("refs/heads/main", "f921bd05"),
        ("refs/heads/master", "49c8f7d5"),
        ("refs/pull/123/merge", "5daf724a"),
        ("", "e3b0c442"),
    ],
)
def test_ref_hash_matches_buildkit(ref: str, h8: str) -> None:
    assert bk.ref_hash(ref) == h8
    assert bk.index_base("buildkit", ref) == f"index-buildkit-1-{h8}"


def test_fixture_keys_parse() -> None:
    for entry in gha_entries():
        assert entry.version == bk.VERSION
        if entry.key.startswith("index-"):
            parsed = bk.parse_index_key(entry.key)
            assert (
                parsed is not None and parsed.ref_hash == "f921bd05" and parsed.generation in (1, 2)
            )
            assert parsed.base + f"#{parsed.generation}" == entry.key
        else:
            digest = bk.parse_blob_key(entry.key)
            assert digest is not None and bk.blob_key(digest) == entry.key
            assert "sha256:" + hashlib.sha256(entry.data).hexdigest() == digest


@pytest.mark.parametrize(
    ("key", "scope", "signed", "generation"),
    [
        ("index-buildkit-1-f921bd05#12", "buildkit", False, 12),
        ("index-my-scope-1-f921bd05#1", "my-scope", False, 1),
        ("index-app-1-f921bd05-sig#3", "app", True, 3),
        ("index-app-1-f921bd05#", "app", False, None),
        ("index-app-1-f921bd05", "app", False, None),
    ],
)
def test_parse_index_key(key: str, scope: str, signed: bool, generation: int | None) -> None:
    parsed = bk.parse_index_key(key)
    assert parsed is not None
    assert (parsed.scope, parsed.signed, parsed.generation) == (scope, signed, generation)


@pytest.mark.parametrize(
    "key",
    ["buildkit-blob-1-sha256:xyz", "npm-linux-abc", "index-a-2-f921bd05#1", "index-a-1-F921BD05#1"],
)
def test_non_buildkit_keys_are_rejected(key: str) -> None:
    assert bk.parse_index_key(key) is None
    assert bk.parse_blob_key(key) is None


def test_sig_blob_key_is_recognised() -> None:
    digest = "sha256:" + "a" * 64
    assert bk.parse_blob_key(bk.blob_key(digest) + "-sig") == digest
