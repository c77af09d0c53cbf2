"""Runtime-token claims: the ``ac`` scope list, the repository, and validity times.

GitHub's runtime token carries ``ac``, a JSON *string* holding
``[{"Scope": "refs/heads/main", "Permission": 3}]`` (1 = read, 2 = write). This module turns
an already signature-checked claim set into ``RuntimeClaims``; it does no cryptography and
reads no clock (``now`` is passed in).
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

from ghacache.errors import Unauthenticated


class Permission(enum.IntFlag):
    """Bits of a scope's ``Permission`` value."""

    READ = 1
    WRITE = 2


@dataclass(frozen=True, kw_only=True)
class Scope:
    """One git ref the token may read and/or write."""

    ref: str
    permission: Permission

    @property
    def readable(self) -> bool:
        return bool(self.permission & Permission.READ)

    @property
    def writable(self) -> bool:
        return bool(self.permission & Permission.WRITE)


@dataclass(frozen=True, kw_only=True)
class RuntimeClaims:
    """What a verified runtime token allows."""

    repository: str
    scopes: tuple[Scope, ...]
    expires_at: float
    not_before: float | None = None

    def readable_refs(self) -> tuple[str, ...]:
        """Refs to search, in GitHub's order: higher permission first, then claim order."""
        readable = [s for s in self.scopes if s.readable or s.writable]
        ordered = sorted(readable, key=lambda s: -int(s.permission))
        return tuple(dict.fromkeys(s.ref for s in ordered))

    def writable_ref(self) -> str | None:
        """The ref new entries are written to (the first writable scope), or None."""
        for s in self.scopes:
            if s.writable:
                return s.ref
        return None


def _storable(text: str) -> bool:
    """Whether a database text column takes ``text``: PostgreSQL refuses NUL, and no UTF-8
    encoder takes a lone surrogate (JSON's ``\\ud800``)."""
    if "\x00" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def encode_ac(scopes: tuple[Scope, ...]) -> str:
    """Encode scopes as GitHub's ``ac`` claim (a JSON string)."""
    return json.dumps(
        [{"Scope": s.ref, "Permission": int(s.permission)} for s in scopes],
        separators=(",", ":"),
    )


def parse_ac(value: object) -> tuple[Scope, ...]:
    """Parse the ``ac`` claim.

    Raises:
        Unauthenticated: the claim is missing or not shaped like GitHub's.
    """
    if not isinstance(value, str):
        raise Unauthenticated("token claim 'ac' must be a JSON string")
    try:
        items = json.loads(value)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly deep nesting
        raise Unauthenticated("token claim 'ac' is not valid JSON") from exc
    if not isinstance(items, list):
        raise Unauthenticated("token claim 'ac' must encode a list")
    scopes: list[Scope] = []
    for item in items:
        if not isinstance(item, dict):
            raise Unauthenticated("token claim 'ac' entries must be objects")
        ref, perm = item.get("Scope"), item.get("Permission")
        if not isinstance(ref, str) or isinstance(perm, bool) or not isinstance(perm, int):
            raise Unauthenticated(
                "token claim 'ac' entries need a string Scope and an int Permission"
            )
        if perm < 0 or perm > 3:
            raise Unauthenticated(f"token claim 'ac' has an unknown Permission {perm}")
        if not _storable(ref):
            raise Unauthenticated("token claim 'ac' has a Scope with NUL or a lone surrogate")
        scopes.append(Scope(ref=ref, permission=Permission(perm)))
    return tuple(scopes)


def _number(claims: Mapping[str, object], name: str, *, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise Unauthenticated(f"token has no '{name}' claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthenticated(f"token claim '{name}' must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float
        number = math.inf
    if not math.isfinite(number):  # JSON allows NaN and Infinity: a token that never expires
        raise Unauthenticated(f"token claim '{name}' must be a finite number")
    return number


def repository_of(claims: Mapping[str, object]) -> str:
    """The repository a token belongs to: ``repository`` (owner/name), else ``repository_id``.

    Raises:
        Unauthenticated: neither claim is present.
    """
    repo = claims.get("repository")
    if isinstance(repo, str) and repo:
        if not _storable(repo):
            raise Unauthenticated("token claim 'repository' holds NUL or a lone surrogate")
        return repo
    repo_id = claims.get("repository_id")
    if (
        isinstance(repo_id, str | int)
        and not isinstance(repo_id, bool)
        and str(repo_id)
        and _storable(str(repo_id))
    ):
        return f"id:{repo_id}"
    raise Unauthenticated("token names no repository ('repository' or 'repository_id' claim)")


def claims_from_payload(claims: Mapping[str, object], *, now: float) -> RuntimeClaims:
    """Check validity times and extract scopes and repository.

    Raises:
        Unauthenticated: expired, not yet valid, or malformed claims.
    """
    exp = _number(claims, "exp", required=True)
    nbf = _number(claims, "nbf", required=False)
    assert exp is not None
    if now >= exp:
        raise Unauthenticated("token has expired")
    if nbf is not None and now < nbf:
        raise Unauthenticated("token is not valid yet (nbf is in the future)")
    return RuntimeClaims(
        repository=repository_of(claims),
        scopes=parse_ac(claims.get("ac")),
        expires_at=exp,
        not_before=nbf,
    )


def parse_scope_spec(spec: str) -> Scope:
    """Parse ``REF:rw`` / ``REF:r`` / ``REF:w`` (the ``ghacache token --scope`` syntax).

    Raises:
        ValueError: the spec has no permission suffix or an unknown one.
    """
    ref, sep, perms = spec.rpartition(":")
    if not sep or not ref or not perms or set(perms) - {"r", "w"}:
        raise ValueError(f"scope must look like REF:rw, REF:r or REF:w, got {spec!r}")
    permission = Permission(0)
    if "r" in perms:
        permission |= Permission.READ
    if "w" in perms:
        permission |= Permission.WRITE
    return Scope(ref=ref, permission=permission)
