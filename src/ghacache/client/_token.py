"""Read a runtime token's claims without verifying it (the server does that).

A client needs the claims only to know which refs it may read and write (BuildKit names its
index after the writable ref) and when the token expires. The signature is not checked, as
in go-actions-cache (``jwt.ParseUnverified``).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass

from ghacache.errors import Unauthenticated
from ghacache.protocol.scopes import Scope, parse_ac


@dataclass(frozen=True, kw_only=True)
class TokenInfo:
    """What an (unverified) runtime token says."""

    scopes: tuple[Scope, ...]
    expires_at: float | None
    not_before: float | None
    repository: str | None

    @property
    def readable_refs(self) -> tuple[str, ...]:
        """Refs with the read bit, in claim order."""
        return tuple(s.ref for s in self.scopes if s.readable)

    @property
    def writable_refs(self) -> tuple[str, ...]:
        """Refs with the write bit, in claim order."""
        return tuple(s.ref for s in self.scopes if s.writable)

    @property
    def write_ref(self) -> str | None:
        """The ref BuildKit writes its index under: the *last* writable one (``gha.go``)."""
        refs = self.writable_refs
        return refs[-1] if refs else None

    def expired(self, now: float | None = None, *, leeway_s: float = 0.0) -> bool:
        """True if the token is past ``exp`` (minus ``leeway_s``) at ``now``."""
        if self.expires_at is None:
            return False
        return (time.time() if now is None else now) >= self.expires_at - leeway_s


def _segment(token: str) -> dict[str, object]:
    parts = token.split(".")
    if len(parts) != 3:
        raise Unauthenticated("token is not a JWT (expected three dot-separated segments)")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError) as exc:
        raise Unauthenticated("token payload is not base64url-encoded JSON") from exc
    if not isinstance(claims, dict):
        raise Unauthenticated("token payload is not a JSON object")
    return claims


def _time(claims: dict[str, object], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated(f"token claim '{name}' must be a number")
    return float(value)


def decode_token(token: str) -> TokenInfo:
    """Decode a runtime token's ``ac``, ``exp``, ``nbf`` and repository claims, unverified.

    Returns:
        The claims; a token without ``ac`` has no scopes.

    Raises:
        Unauthenticated: not a JWT, or claims shaped unlike GitHub's.
    """
    claims = _segment(token)
    ac = claims.get("ac")
    repo = claims.get("repository")
    return TokenInfo(
        scopes=parse_ac(ac) if ac is not None else (),
        expires_at=_time(claims, "exp"),
        not_before=_time(claims, "nbf"),
        repository=repo if isinstance(repo, str) and repo else None,
    )
