"""Runtime-token verification (three modes) and the server secret.

- ``secret``: HS256 tokens signed with a key derived from the server secret
  (``ghacache token`` mints them). Only HS256 is accepted.
- ``github``: RS256 tokens issued by GitHub (or GHES), checked against a JWKS and an issuer.
  Only RS256 is accepted, so an HS256 token signed with a public key cannot pass.
- ``none``: claims are read without checking the signature (loopback development only).

Every mode then checks ``exp``/``nbf`` and the ``ac`` claim with the injected clock.

``secret`` and ``github`` remember verified tokens (``TokenCache``): a job sends the same
token with each of its cache calls, and a BuildKit build with every blob lookup, so the
signature is checked once per token rather than once per call.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import math
import os
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import jwt
from jwt.types import Options

from ghacache.errors import ScopeForbidden, Unauthenticated
from ghacache.protocol.scopes import RuntimeClaims, Scope, claims_from_payload, encode_ac

# Times are checked by protocol.scopes with the injected clock, not by PyJWT.
_JWT_OPTIONS: Options = {
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_aud": False,
}


def load_or_create_secret(path: Path) -> bytes:
    """Read the server secret, creating it (32 random bytes, mode 0600) if absent.

    Creation is atomic and create-only, so replicas starting together agree on one secret.
    """
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, secrets.token_hex(32).encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass  # another process won the race; use its secret
    finally:
        tmp.unlink()
    return bytes.fromhex(path.read_text().strip())


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A key for one purpose, so token and URL signatures never share a key."""
    return hmac.new(secret, f"ghacache/{purpose}".encode(), hashlib.sha256).digest()


def mint_token(
    secret: bytes, *, repository: str, scopes: Sequence[Scope], ttl_s: float, now: float
) -> str:
    """A runtime token the ``secret``-mode server accepts, shaped like GitHub's."""
    payload = {
        "iss": "ghacache",
        "repository": repository,
        "ac": encode_ac(tuple(scopes)),
        "nbf": int(now) - 5,
        "iat": int(now),
        "exp": int(now + ttl_s),
    }
    return jwt.encode(payload, derive_key(secret, "token"), algorithm="HS256")


def bearer_token(header: str | None) -> str:
    """Extract the token from ``Authorization: Bearer <token>``.

    Raises:
        Unauthenticated: missing or not a bearer credential.
    """
    if not header:
        raise Unauthenticated("missing Authorization header (Bearer <ACTIONS_RUNTIME_TOKEN>)")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("Authorization must be 'Bearer <token>' with a non-empty token")
    return token.strip()


class Authenticator(Protocol):
    async def authenticate(self, token: str) -> RuntimeClaims: ...


def _decode_error(exc: Exception) -> Unauthenticated:
    return Unauthenticated(f"invalid runtime token: {exc}")


DEFAULT_TOKEN_CACHE_SIZE = 4096


class TokenCache:
    """Claims of tokens that passed verification, kept until the token expires.

    Bounded: past ``max_tokens``, the least recently used token is forgotten (and verified
    again if it comes back). Only verified tokens are kept, so invalid ones cannot crowd
    out valid ones, and a hit re-checks ``exp`` and ``nbf`` against the clock; an expired
    token is dropped and goes through full verification, which rejects it.
    """

    def __init__(self, *, max_tokens: int = DEFAULT_TOKEN_CACHE_SIZE) -> None:
        if max_tokens < 0:
            raise ValueError(f"max_tokens must not be negative, got {max_tokens}")
        self.max_tokens = max_tokens
        self._claims: OrderedDict[str, RuntimeClaims] = OrderedDict()

    def __len__(self) -> int:
        return len(self._claims)

    async def claims(
        self, token: str, now: float, verify: Callable[[str], Awaitable[RuntimeClaims]]
    ) -> RuntimeClaims:
        """The cached claims of ``token``, else ``await verify(token)`` (then cached).

        Raises:
            Unauthenticated: from ``verify``.
        """
        claims = self._claims.get(token)
        if claims is not None:
            if now < claims.expires_at and (claims.not_before is None or now >= claims.not_before):
                self._claims.move_to_end(token)
                return claims
            del self._claims[token]
        claims = await verify(token)
        if self.max_tokens:
            self._claims[token] = claims
            if len(self._claims) > self.max_tokens:
                self._claims.popitem(last=False)
        return claims


class SecretAuthenticator:
    """HS256 tokens signed with the server's own secret."""

    def __init__(
        self, secret: bytes, *, now: Callable[[], float], cache: TokenCache | None = None
    ) -> None:
        self._key = derive_key(secret, "token")
        self._now = now
        self._cache = TokenCache() if cache is None else cache

    async def authenticate(self, token: str) -> RuntimeClaims:
        return await self._cache.claims(token, self._now(), self._verify)

    async def _verify(self, token: str) -> RuntimeClaims:
        try:
            payload = jwt.decode(token, self._key, algorithms=["HS256"], options=_JWT_OPTIONS)
        except (jwt.PyJWTError, ValueError) as exc:  # ValueError: non-UTF-8 text
            raise _decode_error(exc) from exc
        return claims_from_payload(payload, now=self._now())


class UnverifiedAuthenticator:
    """Reads claims without a signature check (``--auth none``)."""

    def __init__(self, *, now: Callable[[], float]) -> None:
        self._now = now

    async def authenticate(self, token: str) -> RuntimeClaims:
        try:
            payload = jwt.decode(token, options={"verify_signature": False, **_JWT_OPTIONS})
        except (jwt.PyJWTError, ValueError) as exc:  # ValueError: non-UTF-8 text
            raise _decode_error(exc) from exc
        return claims_from_payload(payload, now=self._now())


class GithubAuthenticator:
    """RS256 tokens checked against a JWKS (file or URL) and an issuer."""

    def __init__(
        self,
        *,
        jwks: str,
        issuer: str,
        audience: str,
        now: Callable[[], float],
        cache: TokenCache | None = None,
    ) -> None:
        if not jwks or not issuer:
            raise ValueError("--auth github needs --jwks (file or URL) and --issuer")
        self._jwks_source = jwks
        self._issuer = issuer
        self._audience = audience or None
        self._now = now
        self._cache = TokenCache() if cache is None else cache
        self._url_client: jwt.PyJWKClient | None = None
        self._file_keys: jwt.PyJWKSet | None = None
        if jwks.startswith(("http://", "https://")):
            self._url_client = jwt.PyJWKClient(jwks, cache_keys=True, lifespan=3600)
        else:
            self._file_keys = jwt.PyJWKSet.from_dict(json.loads(Path(jwks).read_text()))

    def _key_for(self, token: str) -> Any:
        header = jwt.get_unverified_header(token)
        if self._url_client is not None:
            return self._url_client.get_signing_key_from_jwt(token).key
        assert self._file_keys is not None
        wanted = header.get("kid") or header.get("x5t")
        keys = self._file_keys.keys
        for k in keys:
            if wanted and wanted in (k.key_id, getattr(k, "_jwk_data", {}).get("x5t")):
                return k.key
        if len(keys) == 1 and not wanted:
            return keys[0].key
        raise jwt.InvalidKeyError(f"no key in the JWKS matches the token (kid {wanted!r})")

    async def authenticate(self, token: str) -> RuntimeClaims:
        return await self._cache.claims(token, self._now(), self._verify)

    async def _verify(self, token: str) -> RuntimeClaims:
        try:
            key = await asyncio.to_thread(self._key_for, token)
            options: Options = {**_JWT_OPTIONS, "verify_aud": self._audience is not None}
            payload = jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self._issuer,
                audience=self._audience,
                options=options,
            )
        except (jwt.PyJWTError, ValueError) as exc:  # ValueError: non-UTF-8 text
            raise _decode_error(exc) from exc
        return claims_from_payload(payload, now=self._now())


ADMIN_CLAIM = "ghacache_admin"


def mint_admin_token(secret: bytes, *, ttl_s: float, now: float) -> str:
    """A management-API token; signed with a key cache tokens never use."""
    payload = {
        "iss": "ghacache",
        "sub": "admin",
        ADMIN_CLAIM: True,
        "nbf": int(now) - 5,
        "iat": int(now),
        "exp": int(now + ttl_s),
    }
    return jwt.encode(payload, derive_key(secret, "admin"), algorithm="HS256")


def _finite(value: object) -> float | None:
    """A time claim as a float; None for anything else (a bool, a string, NaN, Infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        return None
    return number if math.isfinite(number) else None


class AdminAuthenticator:
    """Checks management-API tokens; tells a valid cache token (403) from garbage (401)."""

    def __init__(
        self, secret: bytes, *, cache_tokens: Authenticator, now: Callable[[], float]
    ) -> None:
        self._key = derive_key(secret, "admin")
        self._cache_tokens = cache_tokens
        self._now = now

    async def authenticate(self, header: str | None) -> None:
        """Raises Unauthenticated (no valid token) or ScopeForbidden (a cache token)."""
        token = bearer_token(header)
        try:
            payload = jwt.decode(token, self._key, algorithms=["HS256"], options=_JWT_OPTIONS)
        except (jwt.PyJWTError, ValueError):
            try:
                await self._cache_tokens.authenticate(token)
            except Unauthenticated:
                raise Unauthenticated("management API needs an admin token") from None
            raise ScopeForbidden(
                "this is a cache token; the management API needs an admin token "
                "(ghacache token --admin)"
            ) from None
        if payload.get(ADMIN_CLAIM) is not True:
            raise ScopeForbidden("token is not an admin token")
        exp, nbf = _finite(payload.get("exp")), _finite(payload.get("nbf"))
        if exp is None or self._now() >= exp:
            raise Unauthenticated("admin token has expired or has no finite 'exp'")
        if "nbf" in payload and (nbf is None or self._now() < nbf):
            raise Unauthenticated("admin token is not valid yet ('nbf')")
