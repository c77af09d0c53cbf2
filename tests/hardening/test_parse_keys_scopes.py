"""Property tests of keys, versions, entry ids and runtime-token claims (``keys``/``scopes``).

(a) Any input gives a value or the documented error (``RemoteProtocolError`` for keys,
``Unauthenticated`` for claims, ``ValueError`` for ``--scope`` specs); (b) encoders round
trip; (c) accepted values keep the limits, and the prefix bound is exactly ``startswith``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st

from ghacache.errors import RemoteProtocolError, Unauthenticated
from ghacache.protocol import keys, scopes
from ghacache.protocol.scopes import Permission, Scope
from tests.hardening.parse_support import (
    ANY_CHAR,
    MANY,
    SOME,
    any_text,
    json_scalars,
    json_values,
    objects_with,
    props,
)

long_text = st.builds(lambda c, n: c * n, ANY_CHAR, st.integers(min_value=500, max_value=530))


@props(MANY)
@given(any_text | long_text)
@example("\ud800")
@example("a\x00")
@example("a,b")
@example("k" * 513)
def test_keys_and_versions_are_valid_or_refused(text: str) -> None:
    try:
        key = keys.validate_key(text)
    except RemoteProtocolError:
        assert not text or len(text) > 512 or "," in text or "\x00" in text or not _utf8(text)
    else:
        assert key == text and 0 < len(key) <= 512 and "," not in key and "\x00" not in key
        assert _utf8(key)
    try:
        version = keys.validate_version(text)
    except RemoteProtocolError:
        assert not text or len(text) > 512 or "\x00" in text or not _utf8(text)
    else:
        assert version == text and _utf8(version)


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


@props(MANY)
@given(st.lists(any_text, max_size=12))
def test_key_lists_hold_1_to_10_valid_keys_or_are_refused(values: list[str]) -> None:
    try:
        out = keys.validate_keys(values)
    except RemoteProtocolError:
        return
    assert out == tuple(values) and 1 <= len(out) <= keys.MAX_KEYS


@props(MANY)
@given(any_text | st.integers(min_value=-5, max_value=2**64).map(str))
@example(str(2**63))
@example("\u00b2")
@example("0")
def test_entry_ids_are_positive_int64s_or_none(raw: str) -> None:
    parsed = keys.parse_entry_id(raw)
    if parsed is None:
        return
    assert 0 < parsed <= keys.MAX_ENTRY_ID and raw.isascii()
    assert int(raw) == parsed


@props(MANY)
@given(st.integers(min_value=1, max_value=keys.MAX_ENTRY_ID))
def test_entry_ids_round_trip(entry_id: int) -> None:
    assert keys.parse_entry_id(str(entry_id)) == entry_id


# A small alphabet with the edges of the code space, so prefixes and keys collide often.
edge_text = st.text(
    st.sampled_from(["a", "b", "\x00", "\x7f", "\u07ff", "\ud7ff", "\ue000", "\U0010ffff"]),
    max_size=6,
)


@props(MANY)
@given(edge_text, edge_text)
@example("\U0010ffff", "\U0010ffffa")
@example("a\U0010ffff", "b")
@example("\ud7ff", "\ue000")
def test_prefix_upper_bound_is_exactly_startswith(prefix: str, key: str) -> None:
    bound = keys.prefix_upper_bound(prefix)
    for candidate in (key, prefix + key):
        in_range = prefix <= candidate and (bound is None or candidate < bound)
        assert in_range == candidate.startswith(prefix)
        # Code-point order is UTF-8 byte order, so a bytewise index agrees (no surrogates here).
        if bound is not None:
            assert (candidate < bound) == (candidate.encode() < bound.encode())


# -- runtime-token claims ---------------------------------------------------------------------

ac_items = st.fixed_dictionaries(
    {},
    optional={
        "Scope": any_text | json_scalars,
        "Permission": st.integers(min_value=-2, max_value=5) | json_scalars,
    },
)
ac_values = st.one_of(
    json_scalars,
    st.lists(ac_items | json_values(), max_size=4).map(json.dumps),
    json_values().map(json.dumps),
    any_text,
    st.just("[" * 100_000),
)


@props(MANY)
@given(ac_values)
def test_ac_claim_gives_scopes_or_unauthenticated(value: Any) -> None:
    try:
        parsed = scopes.parse_ac(value)
    except Unauthenticated:
        return
    for scope in parsed:
        assert isinstance(scope.ref, str) and 0 <= int(scope.permission) <= 3
        assert "\x00" not in scope.ref and _utf8(scope.ref)


permissions = st.sampled_from([Permission(p) for p in range(4)])
scope_values = st.builds(
    Scope,
    ref=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30),
    permission=permissions,
)


@props(MANY)
@given(st.lists(scope_values, max_size=6))
def test_ac_claim_round_trip(values: list[Scope]) -> None:
    assert scopes.parse_ac(scopes.encode_ac(tuple(values))) == tuple(values)


NOW = 1_750_000_000.0
claim_values = (
    json_values()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(min_value=NOW - 100, max_value=NOW + 100)
)


@props(SOME)
@given(objects_with(["exp", "nbf", "repository", "repository_id", "ac"], claim_values | ac_values))
@example({"exp": math.nan, "repository": "o/r", "ac": "[]"})
@example({"exp": math.inf, "repository": "o/r", "ac": "[]"})
@example({"exp": 10**400, "repository": "o/r", "ac": "[]"})
@example({"exp": NOW + 10, "repository": "o/\x00r", "ac": "[]"})
@example({"exp": NOW + 10, "repository_id": "\ud800", "ac": "[]"})
def test_claims_are_valid_now_or_unauthenticated(payload: dict[str, Any]) -> None:
    try:
        claims = scopes.claims_from_payload(payload, now=NOW)
    except Unauthenticated:
        return
    assert math.isfinite(claims.expires_at) and claims.expires_at > NOW
    assert claims.not_before is None or (
        math.isfinite(claims.not_before) and claims.not_before <= NOW
    )
    assert claims.repository and "\x00" not in claims.repository and _utf8(claims.repository)


@props(MANY)
@given(any_text)
@example("refs/heads/main:rw")
@example(":rw")
@example("ref:")
@example("a:b:r")
def test_scope_specs_parse_or_raise_value_error(spec: str) -> None:
    try:
        scope = scopes.parse_scope_spec(spec)
    except ValueError:
        return
    ref, _, perms = spec.rpartition(":")
    assert scope.ref == ref and set(perms) <= {"r", "w"} and perms
    assert scope.readable == ("r" in perms) and scope.writable == ("w" in perms)
