"""The dashboard's login session: the admin token in a cookie, and CSRF tokens bound to it.

The token is the session: the browser sends it back in an HttpOnly, SameSite=Strict cookie
(Secure over https) scoped to ``/ui``, and every request verifies it again, so an expired
token ends the session. It never appears in a URL or a page.

State-changing forms carry ``csrf = HMAC(key, cookie)``: a page from another site cannot
read the cookie, so it cannot compute the value (SameSite=Strict already keeps the cookie
off its requests; the token is the second lock).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from aiohttp import web

COOKIE = "ghacache_admin"
COOKIE_PATH = "/ui"
CSRF_FIELD = "csrf"


@dataclass(frozen=True, kw_only=True)
class Session:
    """A verified admin session: its token and the CSRF value its forms must carry."""

    token: str
    csrf: str


class Sessions:
    """Issues and checks CSRF values with a key of their own."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def open(self, token: str) -> Session:
        return Session(token=token, csrf=self._csrf(token))

    def csrf_ok(self, session: Session, submitted: str | None) -> bool:
        return submitted is not None and hmac.compare_digest(session.csrf, submitted)

    def _csrf(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()


def is_https(request: web.Request, public_url: str) -> bool:
    """True if the browser talks https (directly, or to the public URL in front of us)."""
    return request.secure or public_url.startswith("https://")


def set_cookie(response: web.StreamResponse, token: str, *, secure: bool) -> None:
    # A session cookie: it goes when the browser closes; the token's own expiry ends it sooner.
    response.set_cookie(
        COOKIE,
        token,
        path=COOKIE_PATH,
        httponly=True,
        samesite="Strict",
        secure=secure,
    )


def clear_cookie(response: web.StreamResponse, *, secure: bool) -> None:
    response.del_cookie(COOKIE, path=COOKIE_PATH, secure=secure, httponly=True, samesite="Strict")
