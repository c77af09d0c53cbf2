"""Signed blob URLs: capabilities bound to one resource, one direction and an expiry.

The query mimics an Azure SAS (``sv``, ``sr``, ``sp``, ``se``, ``sig``) so SDKs and humans
recognise it, but the signature is ours: HMAC-SHA256 over permission, resource and expiry.
Extra query parameters the SDKs append (``comp``, ``blockid``, ``timeout``) are not signed.
"""

from __future__ import annotations

import base64
import functools
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from urllib.parse import quote

from ghacache.errors import ScopeForbidden, Unauthenticated

Direction = Literal["r", "cw"]
SIGNED_VERSION = "2025-01-05"


@functools.lru_cache(maxsize=16)
def _iso(ts: int) -> str:
    # Cached: every URL signed within the same second shares its expiry.
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: str) -> float:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError as exc:
        raise Unauthenticated("signed URL has a malformed expiry ('se')") from exc


def _mac(secret: bytes, direction: str, resource: str, expiry: str) -> str:
    msg = f"{SIGNED_VERSION}\n{direction}\n{resource}\n{expiry}".encode()
    digest = hmac.digest(secret, msg, "sha256")
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


@dataclass(frozen=True, kw_only=True)
class UrlSigner:
    """Signs and verifies blob URL query parameters with one server secret."""

    secret: bytes

    def sign(self, *, resource: str, direction: Direction, expires_at: float) -> dict[str, str]:
        """Query parameters granting ``direction`` on ``resource`` until ``expires_at``."""
        se = _iso(int(expires_at))
        return {
            "sv": SIGNED_VERSION,
            "sr": "b",
            "sp": direction,
            "se": se,
            "sig": _mac(self.secret, direction, resource, se),
        }

    def sign_query(self, *, resource: str, direction: Direction, expires_at: float) -> str:
        """``sign``'s parameters as a query string, as ``urlencode`` would write it."""
        se = _iso(int(expires_at))
        sig = _mac(self.secret, direction, resource, se)
        # Only the expiry's colons need escaping: the rest is unreserved by construction.
        return f"sv={SIGNED_VERSION}&sr=b&sp={direction}&se={quote(se, safe='')}&sig={sig}"

    def verify(
        self, query: dict[str, str], *, resource: str, direction: Direction, now: float
    ) -> None:
        """Check a request's query for ``direction`` on ``resource``.

        Raises:
            Unauthenticated: no signature, a malformed one, or an expired URL.
            ScopeForbidden: a valid signature for another resource or direction.
        """
        sig, se, sp = query.get("sig"), query.get("se"), query.get("sp")
        if not sig or not se or not sp:
            raise Unauthenticated("blob URL is not signed (sig, se and sp are required)")
        try:
            expected = _mac(self.secret, sp, resource, se)
            matches = hmac.compare_digest(expected.encode(), sig.encode())
        except UnicodeEncodeError:  # a lone surrogate: nothing we signed
            matches = False
        if not matches:
            raise ScopeForbidden("blob URL signature does not match this blob")
        if sp != direction:
            raise ScopeForbidden(f"blob URL grants '{sp}', this request needs '{direction}'")
        if now >= _parse_iso(se):
            raise Unauthenticated("blob URL has expired")
