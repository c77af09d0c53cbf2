"""Property tests of runtime-token decoding in every auth mode (``server/auth.py``).

Each authenticator is the real one the server builds (``secret``: HS256 with the server's
key; ``github``: RS256 against a JWKS file; ``none``: unverified). Any string at all gives
claims or ``Unauthenticated``, never another exception; tokens they should accept round
trip to the same claims; a token changed in any one character is refused or, where the
change falls in bits base64 ignores, yields the very same claims.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import math
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import example, given
from hypothesis import strategies as st

from ghacache.errors import Unauthenticated
from ghacache.protocol.scopes import Permission, RuntimeClaims, Scope, encode_ac
from ghacache.server.auth import (
    Authenticator,
    GithubAuthenticator,
    SecretAuthenticator,
    TokenCache,
    UnverifiedAuthenticator,
    bearer_token,
    derive_key,
    mint_token,
)
from tests.hardening.parse_support import (
    ANY_CHAR,
    FEW,
    SOME,
    any_text,
    json_values,
    objects_with,
    props,
)

NOW = 1_750_000_000.0
SECRET = b"s" * 32
ISSUER = "https://token.actions.example"
KID = "key-1"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def modes(
    rsa_key: rsa.RSAPrivateKey, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Authenticator]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwks = tmp_path_factory.mktemp("jwks") / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "RS256"}]}))
    # No token cache: every example goes through full verification.
    return {
        "secret": SecretAuthenticator(SECRET, now=lambda: NOW, cache=TokenCache(max_tokens=0)),
        "github": GithubAuthenticator(
            jwks=str(jwks),
            issuer=ISSUER,
            audience="",
            now=lambda: NOW,
            cache=TokenCache(max_tokens=0),
        ),
        "none": UnverifiedAuthenticator(now=lambda: NOW),
    }


def authenticate(auth: Authenticator, token: str) -> RuntimeClaims | None:
    """The claims, or None for ``Unauthenticated``; any other exception fails the test."""
    try:
        return asyncio.run(auth.authenticate(token))
    except Unauthenticated:
        return None


def check(claims: RuntimeClaims) -> None:
    assert math.isfinite(claims.expires_at) and claims.expires_at > NOW
    assert claims.repository and "\x00" not in claims.repository
    claims.repository.encode()
    for scope in claims.scopes:
        assert 0 <= int(scope.permission) <= 3


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(value: Any) -> str:
    return b64(json.dumps(value).encode()) if not isinstance(value, bytes) else b64(value)


headers = objects_with(
    ["alg", "typ", "kid", "x5t", "crit", "b64"],
    st.sampled_from(["HS256", "RS256", "none", "ES256", "HS512", "PS256", KID, "JWT"])
    | json_values(4),
)
payloads = objects_with(
    ["exp", "nbf", "iat", "iss", "aud", "repository", "repository_id", "ac"],
    st.sampled_from(
        [NOW + 60, NOW - 60, ISSUER, "o/r", '[{"Scope":"refs/heads/main","Permission":3}]']
    )
    | json_values(4),
)
token_shaped = st.builds(
    "{}.{}.{}".format,
    headers.map(segment) | st.binary(max_size=20).map(segment),
    payloads.map(segment) | st.binary(max_size=20).map(segment) | st.just(segment(b"[" * 5000)),
    st.binary(max_size=64).map(b64) | any_text,
)
any_token = any_text | token_shaped | st.lists(any_text, min_size=2, max_size=5).map(".".join)


@pytest.mark.parametrize("mode", ["secret", "github", "none"])
@props(SOME)
@given(token=any_token)
@example(token="a\udcff.b.c")
@example(token=segment(b"[" * 100_000) + ".e30.x")
@example(token="e30.e30.")
@example(token="")
def test_any_token_gives_claims_or_unauthenticated(
    modes: dict[str, Authenticator], mode: str, token: str
) -> None:
    claims = authenticate(modes[mode], token)
    if claims is not None:
        check(claims)


scope_lists = st.lists(
    st.builds(
        Scope,
        ref=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20),
        permission=st.sampled_from([Permission(p) for p in range(4)]),
    ),
    max_size=4,
)
repos = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30)


def rs256_token(key: rsa.RSAPrivateKey, repo: str, scopes: list[Scope], ttl: int) -> str:
    payload = {"iss": ISSUER, "repository": repo, "ac": encode_ac(tuple(scopes)), "exp": NOW + ttl}
    return jwt.encode(payload, key, algorithm="RS256", headers={"kid": KID})


@props(FEW)
@given(repos, scope_lists, st.integers(min_value=1, max_value=10**6), st.data())
def test_valid_tokens_round_trip_and_one_changed_character_breaks_them(
    modes: dict[str, Authenticator],
    rsa_key: rsa.RSAPrivateKey,
    repo: str,
    scopes: list[Scope],
    ttl: int,
    data: st.DataObject,
) -> None:
    minted = {
        "secret": mint_token(SECRET, repository=repo, scopes=scopes, ttl_s=ttl, now=NOW),
        "github": rs256_token(rsa_key, repo, scopes, ttl),
    }
    minted["none"] = minted["secret"]
    for mode, token in minted.items():
        claims = authenticate(modes[mode], token)
        assert claims is not None, mode
        assert (claims.repository, claims.scopes) == (repo, tuple(scopes))
        check(claims)
        if mode == "none":
            continue  # unverified by design: any change that still decodes is accepted
        at = data.draw(st.integers(min_value=0, max_value=len(token) - 1), label="at")
        char = data.draw(ANY_CHAR.filter(token[at].__ne__), label="char")
        changed = authenticate(modes[mode], token[:at] + char + token[at + 1 :])
        assert changed is None or changed == claims, (mode, at, char)


def test_algorithm_confusion_and_foreign_keys_are_refused(
    modes: dict[str, Authenticator], rsa_key: rsa.RSAPrivateKey
) -> None:
    payload = {"iss": ISSUER, "repository": "o/r", "ac": "[]", "exp": NOW + 60}
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # HS256 keyed with the public key: the classic confusion attack on RS256 verifiers.
    # (Built by hand: PyJWT itself refuses to sign with a PEM as an HMAC secret.)
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', 'kid': KID})}.{segment(payload)}"
    mac = hmac.digest(public_pem, signing_input.encode(), "sha256")
    forged = f"{signing_input}.{b64(mac)}"
    assert authenticate(modes["github"], forged) is None
    # alg=none, and the secret-mode key used for the wrong purpose.
    unsigned = f"{segment({'alg': 'none', 'typ': 'JWT'})}.{segment(payload)}."
    assert authenticate(modes["secret"], unsigned) is None
    assert authenticate(modes["github"], unsigned) is None
    other_key = jwt.encode(payload, derive_key(SECRET, "url"), algorithm="HS256")
    assert authenticate(modes["secret"], other_key) is None
    # Other issuer, signed with the right key.
    wrong_iss = jwt.encode(
        {**payload, "iss": "x"}, rsa_key, algorithm="RS256", headers={"kid": KID}
    )
    assert authenticate(modes["github"], wrong_iss) is None


@props(SOME)
@given(
    st.none()
    | any_text
    | st.builds("{} {}".format, st.sampled_from(["Bearer", "bearer", "Basic", ""]), any_text)
)
def test_bearer_header_gives_a_token_or_unauthenticated(header: str | None) -> None:
    try:
        token = bearer_token(header)
    except Unauthenticated:
        return
    assert header is not None and token and token == token.strip()
    assert header.strip().lower().startswith("bearer ")
