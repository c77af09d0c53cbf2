"""Unverified decoding of runtime tokens: scopes, the write ref BuildKit uses, expiry."""

from __future__ import annotations

import base64
import json

import pytest

from ghacache.client import decode_token
from ghacache.errors import Unauthenticated
from tests.conftest import ServerHandle


def jwt(payload: object, header: object = None) -> str:
    def part(obj: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    return f"{part(header or {'alg': 'RS256', 'x5t': 'abc'})}.{part(payload)}.c2lnbmF0dXJl"


# The claims of go-actions-cache's TestTokenScopes token (buildkit-gha-backend.md §3).
GITHUB_LIKE = {
    "ac": '[{"Scope":"refs/heads/test","Permission":3},{"Scope":"refs/heads/master","Permission":1}]',
    "iss": "vstoken.actions.githubusercontent.com",
    "nbf": 1606812629,
    "exp": 1606835429,
    "scp": "Actions.Results:abc",
}


def test_github_shaped_token() -> None:
    info = decode_token(jwt(GITHUB_LIKE))
    assert info.readable_refs == ("refs/heads/test", "refs/heads/master")
    assert info.writable_refs == ("refs/heads/test",)
    assert info.write_ref == "refs/heads/test"
    assert (info.not_before, info.expires_at) == (1606812629.0, 1606835429.0)
    assert info.repository is None
    assert info.expired(now=1606835429) and not info.expired(now=1606835428)
    assert info.expired(now=1606835400, leeway_s=60)
    assert info.expired()  # long ago


def test_write_ref_is_the_last_writable_scope() -> None:
    ac = json.dumps(
        [
            {"Scope": "refs/pull/7/merge", "Permission": 3},
            {"Scope": "refs/heads/main", "Permission": 1},
            {"Scope": "refs/heads/feature", "Permission": 2},
        ]
    )
    info = decode_token(jwt({"ac": ac, "exp": 2e9}))
    assert info.write_ref == "refs/heads/feature"
    assert info.readable_refs == ("refs/pull/7/merge", "refs/heads/main")


def test_token_minted_by_the_server(server: ServerHandle) -> None:
    token = server.token("octo/repo", "refs/pull/1/merge:rw", "refs/heads/main:r", ttl_s=600)
    info = decode_token(token)
    assert info.repository == "octo/repo"
    assert info.writable_refs == ("refs/pull/1/merge",)
    assert info.readable_refs == ("refs/pull/1/merge", "refs/heads/main")
    assert info.expires_at == pytest.approx(server.clock() + 600, abs=2)


def test_token_without_claims_has_no_scopes() -> None:
    info = decode_token(jwt({"sub": "x"}))
    assert info.scopes == () and info.expires_at is None and not info.expired()
    assert info.write_ref is None


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("not-a-jwt", "three"),
        ("a.!!!.c", "base64"),
        (jwt([1, 2]), "object"),
        (jwt({"ac": [{"Scope": "x", "Permission": 1}]}), "JSON string"),
        (jwt({"ac": '[{"Scope": 1}]'}), "Scope"),
        (jwt({"ac": "[]", "exp": "soon"}), "number"),
    ],
)
def test_malformed_tokens(token: str, message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        decode_token(token)
