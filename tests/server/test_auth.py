"""Runtime-token checks in every auth mode, scopes, and repository isolation.

Every rejection must come back in the protocol's own error shape (Twirp ``{"code","msg"}``
under ``/twirp``, a VSS body under ``/_apis/artifactcache``) without echoing the token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from ghacache.errors import Unauthenticated
from ghacache.protocol.scopes import Permission, RuntimeClaims, Scope, encode_ac
from ghacache.server.app import make_authenticator
from ghacache.server.auth import SecretAuthenticator, TokenCache, mint_token
from ghacache.server.config import ServerConfig
from tests.conftest import Clock, ServerHandle, start_server
from tests.support import wire

ISSUER = "https://issuer.test"
KID = "test-key-1"
MAIN_RW = encode_ac((Scope(ref="refs/heads/main", permission=Permission.READ | Permission.WRITE),))


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _hand_jwt(header: dict[str, Any], payload: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64url(json.dumps(header, separators=(",", ":")).encode())
    body = _b64url(json.dumps(payload, separators=(",", ":")).encode())
    return f"{head}.{body}.{_b64url(signature)}"


def _claims(now: float, *, iss: str | None = None, ttl: float = 3600) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "repository": "octo/repo",
        "ac": MAIN_RW,
        "nbf": int(now) - 5,
        "iat": int(now),
        "exp": int(now + ttl),
    }
    if iss is not None:
        payload["iss"] = iss
    return payload


async def _twirp_lookup(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str]
) -> tuple[int, dict[str, Any]]:
    async with http.post(
        base + wire.TWIRP + "GetCacheEntryDownloadURL",
        json={"key": "auth-probe", "version": wire.VERSION},
        headers=headers,
    ) as r:
        return r.status, await r.json(content_type=None)


async def _v1_lookup(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str]
) -> tuple[int, bytes]:
    async with http.get(
        base + wire.V1 + "cache",
        params={"keys": "auth-probe", "version": wire.VERSION},
        headers=headers,
    ) as r:
        return r.status, await r.read()


def _no_echo(token: str, text: str) -> None:
    """The response must not contain the token or any sizeable piece of it."""
    if not token:
        return
    assert token not in text
    for piece in token.split("."):
        if len(piece) >= 8:
            assert piece not in text, f"response echoes part of the token: {piece[:16]}…"


async def _assert_rejected(
    http: aiohttp.ClientSession, base: str, headers: dict[str, str], token: str = ""
) -> None:
    """Both protocols answer 401 in their own error shape, without echoing the token."""
    status, body = await _twirp_lookup(http, base, headers)
    assert status == 401, body
    assert set(body) == {"code", "msg"}, body
    assert body["code"] == "unauthenticated"
    assert isinstance(body["msg"], str) and body["msg"]
    _no_echo(token, json.dumps(body))

    status, raw = await _v1_lookup(http, base, headers)
    assert status == 401, raw
    v1_body = json.loads(raw)
    assert isinstance(v1_body["message"], str) and v1_body["message"]
    assert v1_body["typeKey"] == "UnauthorizedRequestException"
    assert "code" not in v1_body
    _no_echo(token, raw.decode())


async def _assert_accepted(http: aiohttp.ClientSession, base: str, token: str) -> None:
    status, body = await _twirp_lookup(http, base, wire.auth(token))
    assert status == 200 and body["ok"] is False, body
    status, raw = await _v1_lookup(http, base, wire.auth(token))
    assert status == 204, raw


# -- secret mode ---------------------------------------------------------------------------


async def test_secret_valid_token_saves_and_restores(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = server.token()
    await _assert_accepted(http, server.url, token)
    data = os.urandom(4096)
    await wire.v2_save(http, server.url, token, "auth-ok", data)
    found = await wire.v2_lookup(http, server.url, token, "auth-ok")
    assert (await wire.download(http, found["signed_download_url"]))[1] == data


async def test_secret_token_of_another_secret_is_rejected(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    other = mint_token(
        os.urandom(32),
        repository="octo/repo",
        scopes=[Scope(ref="refs/heads/main", permission=Permission.READ | Permission.WRITE)],
        ttl_s=3600,
        now=server.clock(),
    )
    await _assert_rejected(http, server.url, wire.auth(other), other)


async def test_secret_expired_token_is_rejected(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    minted_long_ago = server.token(ttl_s=60, now=server.clock() - 3600)
    await _assert_rejected(http, server.url, wire.auth(minted_long_ago), minted_long_ago)

    fresh = server.token(ttl_s=60)
    await _assert_accepted(http, server.url, fresh)
    server.clock.advance(61)
    await _assert_rejected(http, server.url, wire.auth(fresh), fresh)


async def test_secret_token_not_yet_valid_is_rejected(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    # mint_token sets nbf 5 s before its "now": one minted 10 minutes ahead is not valid yet.
    future = server.token(now=server.clock() + 600)
    await _assert_rejected(http, server.url, wire.auth(future), future)
    server.clock.advance(600)
    await _assert_accepted(http, server.url, future)


async def test_secret_alg_none_token_is_rejected(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    unsigned = _hand_jwt({"alg": "none", "typ": "JWT"}, _claims(server.clock()))
    assert unsigned.endswith(".")
    await _assert_rejected(http, server.url, wire.auth(unsigned), unsigned)


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": ""}, id="empty"),
        pytest.param({"Authorization": "Bearer "}, id="bearer-empty"),
        pytest.param({"Authorization": "Bearer"}, id="bearer-only"),
        pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="basic"),
    ],
)
async def test_secret_missing_or_empty_credentials_are_rejected(
    server: ServerHandle, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    await _assert_rejected(http, server.url, headers)


@pytest.mark.parametrize(
    "garbage",
    [
        "garbage-token-value",
        "aaaaaaaaaa.bbbbbbbbbb.cccccccccc",
        "eyJhbGciOiJIUzI1NiJ9.not-base64-json!!.sigsigsigsig",
        "x" * 5000,
    ],
)
async def test_secret_garbage_token_is_rejected(
    server: ServerHandle, http: aiohttp.ClientSession, garbage: str
) -> None:
    await _assert_rejected(http, server.url, wire.auth(garbage), garbage)


async def test_secret_token_without_required_claims_is_rejected(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    from ghacache.server.auth import derive_key

    key = derive_key(server.secret, "token")
    now = server.clock()
    no_exp = {k: v for k, v in _claims(now).items() if k != "exp"}
    no_repo = {k: v for k, v in _claims(now).items() if k != "repository"}
    bad_ac = {**_claims(now), "ac": [{"Scope": "refs/heads/main", "Permission": 3}]}
    for payload in (no_exp, no_repo, bad_ac):
        token = jwt.encode(payload, key, algorithm="HS256")
        await _assert_rejected(http, server.url, wire.auth(token), token)


# -- github mode ---------------------------------------------------------------------------


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    jwk.update({"kid": KID, "use": "sig", "alg": "RS256"})
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return path


@pytest.fixture
async def github_server(tmp_path: Path, clock: Clock, jwks_file: Path) -> Any:
    handle, runner = await start_server(
        tmp_path, clock, auth="github", jwks=str(jwks_file), issuer=ISSUER
    )
    try:
        yield handle
    finally:
        await runner.cleanup()


def _rs256(key: rsa.RSAPrivateKey, payload: dict[str, Any], kid: str = KID) -> str:
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": kid})


async def test_github_rs256_token_with_right_issuer_works(
    github_server: ServerHandle, http: aiohttp.ClientSession, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = _rs256(rsa_key, _claims(github_server.clock(), iss=ISSUER))
    await _assert_accepted(http, github_server.url, token)
    data = os.urandom(1000)
    await wire.v2_save(http, github_server.url, token, "gh-key", data)
    found = await wire.v2_lookup(http, github_server.url, token, "gh-key")
    assert (await wire.download(http, found["signed_download_url"]))[1] == data


async def test_github_wrong_issuer_is_rejected(
    github_server: ServerHandle, http: aiohttp.ClientSession, rsa_key: rsa.RSAPrivateKey
) -> None:
    now = github_server.clock()
    for payload in (_claims(now, iss="https://evil.test"), _claims(now)):
        token = _rs256(rsa_key, payload)
        await _assert_rejected(http, github_server.url, wire.auth(token), token)


async def test_github_unknown_kid_is_rejected(
    github_server: ServerHandle, http: aiohttp.ClientSession, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = _rs256(rsa_key, _claims(github_server.clock(), iss=ISSUER), kid="other-kid")
    await _assert_rejected(http, github_server.url, wire.auth(token), token)


async def test_github_token_signed_by_another_key_is_rejected(
    github_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = _rs256(stranger, _claims(github_server.clock(), iss=ISSUER))
    await _assert_rejected(http, github_server.url, wire.auth(token), token)


async def test_github_expired_token_is_rejected(
    github_server: ServerHandle, http: aiohttp.ClientSession, rsa_key: rsa.RSAPrivateKey
) -> None:
    token = _rs256(rsa_key, _claims(github_server.clock(), iss=ISSUER, ttl=30))
    await _assert_accepted(http, github_server.url, token)
    github_server.clock.advance(31)
    await _assert_rejected(http, github_server.url, wire.auth(token), token)


async def test_github_hs256_signed_with_public_key_is_rejected(
    github_server: ServerHandle, http: aiohttp.ClientSession, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The classic HS/RS confusion: HMAC keyed with the PEM of the public key."""
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "JWT", "kid": KID}
    unsigned = _hand_jwt(header, _claims(github_server.clock(), iss=ISSUER)).rstrip(".")
    sig = hmac.new(pem, unsigned.encode(), hashlib.sha256).digest()
    token = f"{unsigned}.{_b64url(sig)}"
    await _assert_rejected(http, github_server.url, wire.auth(token), token)


async def test_github_mode_rejects_secret_mode_tokens(
    github_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = github_server.token()
    await _assert_rejected(http, github_server.url, wire.auth(token), token)


async def test_github_alg_none_is_rejected(
    github_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    token = _hand_jwt({"alg": "none", "kid": KID}, _claims(github_server.clock(), iss=ISSUER))
    await _assert_rejected(http, github_server.url, wire.auth(token), token)


# -- none mode -----------------------------------------------------------------------------


@pytest.fixture
async def none_server(tmp_path: Path, clock: Clock) -> Any:
    handle, runner = await start_server(tmp_path, clock, auth="none")
    try:
        yield handle
    finally:
        await runner.cleanup()


async def test_none_mode_reads_claims_unverified(
    none_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    now = none_server.clock()
    foreign = jwt.encode(_claims(now), os.urandom(32), algorithm="HS256")
    await _assert_accepted(http, none_server.url, foreign)
    data = os.urandom(2048)
    await wire.v2_save(http, none_server.url, foreign, "none-key", data)
    # The claims are still read: another repository named in an unsigned token misses.
    other_repo = _hand_jwt({"alg": "none"}, {**_claims(now), "repository": "octo/other"})
    assert not (await wire.v2_lookup(http, none_server.url, other_repo, "none-key"))["ok"]
    found = await wire.v2_lookup(http, none_server.url, foreign, "none-key")
    assert (await wire.download(http, found["signed_download_url"]))[1] == data


async def test_none_mode_still_enforces_expiry(
    none_server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    now = none_server.clock()
    expired = jwt.encode(_claims(now - 7200, ttl=60), os.urandom(32), algorithm="HS256")
    await _assert_rejected(http, none_server.url, wire.auth(expired), expired)
    short = jwt.encode(_claims(now, ttl=30), os.urandom(32), algorithm="HS256")
    await _assert_accepted(http, none_server.url, short)
    none_server.clock.advance(31)
    await _assert_rejected(http, none_server.url, wire.auth(short), short)
    # Garbage is still garbage.
    await _assert_rejected(http, none_server.url, wire.auth("not-a-jwt"), "not-a-jwt")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10"])
def test_none_mode_refuses_non_loopback_host(host: str) -> None:
    config = ServerConfig(host=host, auth="none")
    with pytest.raises(ValueError, match="allow-insecure-bind"):
        make_authenticator(config, os.urandom(32), lambda: 0.0)
    allowed = ServerConfig(host=host, auth="none", allow_insecure_bind=True)
    assert make_authenticator(allowed, os.urandom(32), lambda: 0.0) is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost"])
def test_none_mode_allows_loopback(host: str) -> None:
    assert make_authenticator(ServerConfig(host=host, auth="none"), b"s", lambda: 0.0)


def test_cli_refuses_auth_none_on_all_interfaces(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "ghacache", "serve", "--auth", "none", "--host", "0.0.0.0"]
    cmd += ["--port", "0", "--data-dir", str(tmp_path / "data")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    except subprocess.TimeoutExpired as exc:  # it started serving instead of refusing
        raise AssertionError(f"server did not refuse: {exc.stdout!r}") from exc
    assert proc.returncode != 0
    assert "listening" not in proc.stdout
    assert "0.0.0.0" in proc.stderr and "--allow-insecure-bind" in proc.stderr
    assert "Traceback" not in proc.stderr


# -- scopes --------------------------------------------------------------------------------


async def test_read_only_token_cannot_reserve(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    ro = server.token("octo/repo", "refs/heads/main:r")
    status, body = await wire.twirp(
        http, server.url, "CreateCacheEntry", {"key": "ro-key", "version": wire.VERSION}, ro
    )
    assert status == 403
    assert body["code"] == "permission_denied"
    assert body["msg"].startswith("cache write denied:")
    status, v1_body = await wire.v1_reserve(http, server.url, ro, "ro-key")
    assert status == 403
    assert v1_body["typeKey"] == "AccessDeniedException" and v1_body["message"]
    # Nothing was reserved: a writer can take the key.
    rw = server.token()
    await wire.v2_save(http, server.url, rw, "ro-key", b"written by the writer")


async def test_read_only_token_reads_its_scope(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    data = os.urandom(10_000)
    await wire.v2_save(http, server.url, server.token(), "shared-key", data)
    ro = server.token("octo/repo", "refs/heads/main:r")
    found = await wire.v2_lookup(http, server.url, ro, "shared-key")
    assert found["ok"] and found["matched_key"] == "shared-key"
    assert (await wire.download(http, found["signed_download_url"]))[1] == data
    status, hit = await wire.v1_lookup(http, server.url, ro, ["shared"])
    assert status == 200 and hit is not None and hit["scope"] == "refs/heads/main"
    assert (await wire.download(http, hit["archiveLocation"]))[1] == data


async def test_pr_token_writes_only_to_pr_scope_and_reads_main(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    main = server.token("octo/repo", "refs/heads/main:rw")
    pr = server.token("octo/repo", "refs/pull/1/merge:rw", "refs/heads/main:r")

    main_data, pr_data, both_main, both_pr = (os.urandom(3000) for _ in range(4))
    await wire.v2_save(http, server.url, main, "base-key", main_data)
    await wire.v1_save(http, server.url, pr, "pr-key", pr_data)
    # The same identity in two scopes is two entries, not a conflict.
    await wire.v2_save(http, server.url, main, "both-key", both_main)
    await wire.v2_save(http, server.url, pr, "both-key", both_pr)

    # main cannot see the PR's entry on either protocol.
    assert not (await wire.v2_lookup(http, server.url, main, "pr-key"))["ok"]
    assert (await wire.v1_lookup(http, server.url, main, ["pr-key"]))[0] == 204

    # The PR reads its own entry, main's entries, and prefers its own scope.
    status, hit = await wire.v1_lookup(http, server.url, pr, ["pr-key"])
    assert status == 200 and hit is not None and hit["scope"] == "refs/pull/1/merge"
    assert (await wire.download(http, hit["archiveLocation"]))[1] == pr_data
    found = await wire.v2_lookup(http, server.url, pr, "base-key")
    assert (await wire.download(http, found["signed_download_url"]))[1] == main_data
    status, hit = await wire.v1_lookup(http, server.url, pr, ["base-key"])
    assert status == 200 and hit is not None and hit["scope"] == "refs/heads/main"
    found = await wire.v2_lookup(http, server.url, pr, "both-key")
    assert (await wire.download(http, found["signed_download_url"]))[1] == both_pr
    found = await wire.v2_lookup(http, server.url, main, "both-key")
    assert (await wire.download(http, found["signed_download_url"]))[1] == both_main

    # A PR token's write of main's key lands in the PR scope (no conflict with main's).
    await wire.v2_save(http, server.url, pr, "base-key", b"pr copy")
    found = await wire.v2_lookup(http, server.url, main, "base-key")
    assert (await wire.download(http, found["signed_download_url"]))[1] == main_data


async def test_repositories_are_isolated(server: ServerHandle, http: aiohttp.ClientSession) -> None:
    a = server.token("octo/a")
    b = server.token("octo/b")
    data = os.urandom(5000)
    await wire.v2_save(http, server.url, a, "iso-key", data)

    assert not (await wire.v2_lookup(http, server.url, b, "iso-key"))["ok"]
    assert not (await wire.v2_lookup(http, server.url, b, "iso"))["ok"]
    assert (await wire.v1_lookup(http, server.url, b, ["iso-key", "iso"]))[0] == 204

    # B may save the very same identity in its own repository; A still gets its bytes.
    await wire.v1_save(http, server.url, b, "iso-key", b"b's bytes")
    found = await wire.v2_lookup(http, server.url, a, "iso-key")
    assert (await wire.download(http, found["signed_download_url"]))[1] == data
    status, hit = await wire.v1_lookup(http, server.url, b, ["iso-key"])
    assert status == 200 and hit is not None
    assert (await wire.download(http, hit["archiveLocation"]))[1] == b"b's bytes"


async def test_other_repository_cannot_touch_v1_reservation(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a = server.token("octo/a")
    b = server.token("octo/b")
    status, body = await wire.v1_reserve(http, server.url, a, "a-upload")
    assert status == 201
    cache_id = int(body["cacheId"])

    assert await wire.v1_patch(http, server.url, b, cache_id, 0, b"evil") == 404
    status, raw = await wire.v1_commit(http, server.url, b, cache_id, 4)
    assert status == 404
    assert json.loads(raw)["typeKey"] == "ArtifactCacheNotFoundException"
    assert (await wire.v1_lookup(http, server.url, a, ["a-upload"]))[0] == 204

    data = os.urandom(1234)
    assert await wire.v1_patch(http, server.url, a, cache_id, 0, data) == 204
    status, raw = await wire.v1_commit(http, server.url, b, cache_id, len(data))
    assert status == 404
    status, raw = await wire.v1_commit(http, server.url, a, cache_id, len(data))
    assert status == 204, raw
    status, hit = await wire.v1_lookup(http, server.url, a, ["a-upload"])
    assert status == 200 and hit is not None
    assert (await wire.download(http, hit["archiveLocation"]))[1] == data
    assert (await wire.v1_lookup(http, server.url, b, ["a-upload"]))[0] == 204


async def test_other_repository_cannot_finalize_v2_reservation(
    server: ServerHandle, http: aiohttp.ClientSession
) -> None:
    a = server.token("octo/a")
    b = server.token("octo/b")
    ident = {"key": "a-v2", "version": wire.VERSION}
    status, body = await wire.twirp(http, server.url, "CreateCacheEntry", ident, a)
    assert status == 200
    data = os.urandom(777)
    assert await wire.put_blob(http, body["signed_upload_url"], data) == 201

    fin = {**ident, "size_bytes": str(len(data))}
    status, err = await wire.twirp(http, server.url, "FinalizeCacheEntryUpload", fin, b)
    assert status == 404 and err["code"] == "not_found"
    assert not (await wire.v2_lookup(http, server.url, a, "a-v2"))["ok"]
    assert not (await wire.v2_lookup(http, server.url, b, "a-v2"))["ok"]

    status, ok = await wire.twirp(http, server.url, "FinalizeCacheEntryUpload", fin, a)
    assert status == 200 and ok["ok"]
    found = await wire.v2_lookup(http, server.url, a, "a-v2")
    assert (await wire.download(http, found["signed_download_url"]))[1] == data
    assert not (await wire.v2_lookup(http, server.url, b, "a-v2"))["ok"]


# -- verified-token cache ---------------------------------------------------------------------


def _runtime_claims(exp: float, nbf: float | None = None) -> RuntimeClaims:
    return RuntimeClaims(repository="octo/repo", scopes=(), expires_at=exp, not_before=nbf)


class _Verifier:
    """Counts verifications; tokens named ``bad*`` fail."""

    def __init__(self, claims: RuntimeClaims) -> None:
        self.claims = claims
        self.calls: list[str] = []

    async def __call__(self, token: str) -> RuntimeClaims:
        self.calls.append(token)
        if token.startswith("bad"):
            raise Unauthenticated("invalid runtime token")
        return self.claims


async def test_token_cache_verifies_each_token_once_until_it_expires() -> None:
    cache = TokenCache()
    verify = _Verifier(_runtime_claims(exp=200))
    for now in (100, 150, 199.9):
        assert await cache.claims("t1", now, verify) is verify.claims
    assert verify.calls == ["t1"]
    # At exp the cached claims no longer count: the token is verified again (and the real
    # verifier rejects it; this one does not, so it is cached again).
    await cache.claims("t1", 200, verify)
    assert verify.calls == ["t1", "t1"]


async def test_token_cache_rechecks_not_before_on_a_hit() -> None:
    cache = TokenCache()
    verify = _Verifier(_runtime_claims(exp=200, nbf=100))
    await cache.claims("t1", 150, verify)
    await cache.claims("t1", 99, verify)  # a clock that went back: before nbf again
    assert verify.calls == ["t1", "t1"]


async def test_token_cache_never_keeps_a_failed_verification() -> None:
    cache = TokenCache()
    verify = _Verifier(_runtime_claims(exp=200))
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await cache.claims("bad-token", 100, verify)
    assert verify.calls == ["bad-token", "bad-token"]
    assert len(cache) == 0


async def test_token_cache_forgets_the_least_recently_used_token() -> None:
    cache = TokenCache(max_tokens=2)
    verify = _Verifier(_runtime_claims(exp=200))
    await cache.claims("a", 100, verify)
    await cache.claims("b", 100, verify)
    await cache.claims("a", 100, verify)  # a is now the most recently used
    await cache.claims("c", 100, verify)  # evicts b
    assert len(cache) == 2
    await cache.claims("a", 100, verify)
    await cache.claims("b", 100, verify)
    assert verify.calls == ["a", "b", "c", "b"]


async def test_token_cache_of_size_zero_keeps_nothing() -> None:
    cache = TokenCache(max_tokens=0)
    verify = _Verifier(_runtime_claims(exp=200))
    await cache.claims("a", 100, verify)
    await cache.claims("a", 100, verify)
    assert verify.calls == ["a", "a"] and len(cache) == 0
    with pytest.raises(ValueError, match="max_tokens"):
        TokenCache(max_tokens=-1)


async def test_secret_authenticator_checks_a_cached_token_against_the_clock() -> None:
    clock = Clock()
    secret = b"s" * 32
    auth = SecretAuthenticator(secret, now=clock)
    token = mint_token(
        secret,
        repository="octo/repo",
        scopes=[Scope(ref="refs/heads/main", permission=Permission.READ)],
        ttl_s=60,
        now=clock(),
    )
    first = await auth.authenticate(token)
    assert await auth.authenticate(token) is first  # served from the cache
    clock.advance(61)
    with pytest.raises(Unauthenticated, match="expired"):
        await auth.authenticate(token)
    # A token signed with another secret is rejected even right after a valid one was cached.
    other = mint_token(b"t" * 32, repository="octo/repo", scopes=[], ttl_s=60, now=clock())
    with pytest.raises(Unauthenticated):
        await auth.authenticate(other)
