"""Runtime-token claims: the ``ac`` scope list, repository and validity times."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ghacache.errors import Unauthenticated
from ghacache.protocol.scopes import (
    Permission,
    RuntimeClaims,
    Scope,
    claims_from_payload,
    encode_ac,
    parse_ac,
    parse_scope_spec,
    repository_of,
)

R, W, RW = Permission.READ, Permission.WRITE, Permission.READ | Permission.WRITE

# The PR token shape documented in docker/build-push-action#707.
PR_AC = (
    '[{"Scope":"refs/pull/707/merge","Permission":3},{"Scope":"refs/heads/master","Permission":1}]'
)
# The claim as captured from actions/cache traffic (tests/data/traces sources).
PUSH_AC = '[{"Scope":"refs/heads/main","Permission":3}]'
# A payload as captured (minus unrelated claims): repository_id only, exp/nbf numbers.
CAPTURED_PAYLOAD: dict[str, Any] = {
    "nameid": "dddddddd-dddd-dddd-dddd-dddddddddddd",
    "scp": "Actions.ExampleScope Actions.Results:1:1",
    "ac": PUSH_AC,
    "repository_id": "123456789",
    "iss": "stub-issuer",
    "aud": "stub-audience",
    "nbf": 1795801547,
    "iat": 1795801547,
    "exp": 1795823207,
}


def scope(ref: str, permission: Permission) -> Scope:
    return Scope(ref=ref, permission=permission)


def claims(*scopes: Scope) -> RuntimeClaims:
    return RuntimeClaims(repository="octo/repo", scopes=scopes, expires_at=2e9)


# -- parse_ac -------------------------------------------------------------------------------


def test_parse_ac_pull_request_token() -> None:
    assert parse_ac(PR_AC) == (
        scope("refs/pull/707/merge", RW),
        scope("refs/heads/master", R),
    )


def test_parse_ac_push_token() -> None:
    (only,) = parse_ac(PUSH_AC)
    assert only.ref == "refs/heads/main"
    assert only.readable and only.writable


def test_parse_ac_empty_list_is_no_scopes() -> None:
    # BuildKit's docs show ac="[]": valid, grants nothing.
    assert parse_ac("[]") == ()


def test_parse_ac_ignores_extra_fields() -> None:
    value = '[{"Scope":"refs/heads/main","Permission":1,"Other":"x"}]'
    assert parse_ac(value) == (scope("refs/heads/main", R),)


@pytest.mark.parametrize(
    ("permission", "readable", "writable"),
    [(0, False, False), (1, True, False), (2, False, True), (3, True, True)],
)
def test_parse_ac_permission_bits(permission: int, readable: bool, writable: bool) -> None:
    (s,) = parse_ac(json.dumps([{"Scope": "refs/heads/x", "Permission": permission}]))
    assert int(s.permission) == permission
    assert (s.readable, s.writable) == (readable, writable)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="missing"),
        pytest.param([{"Scope": "refs/heads/main", "Permission": 3}], id="a list, not a string"),
        pytest.param(b'[{"Scope":"refs/heads/main","Permission":3}]', id="bytes"),
        pytest.param(3, id="number"),
        pytest.param("", id="empty string"),
        pytest.param("not json", id="not JSON"),
        pytest.param("[{'Scope': 'refs/heads/main'}]", id="python repr"),
        pytest.param('{"Scope":"refs/heads/main","Permission":3}', id="object, not list"),
        pytest.param('"refs/heads/main"', id="string, not list"),
        pytest.param("null", id="null"),
        pytest.param('["refs/heads/main"]', id="entry not an object"),
        pytest.param('[{"Permission":3}]', id="no Scope"),
        pytest.param('[{"Scope":"refs/heads/main"}]', id="no Permission"),
        pytest.param('[{"Scope":7,"Permission":3}]', id="Scope not a string"),
        pytest.param('[{"Scope":"refs/heads/main","Permission":true}]', id="bool Permission"),
        pytest.param('[{"Scope":"refs/heads/main","Permission":"3"}]', id="string Permission"),
        pytest.param('[{"Scope":"refs/heads/main","Permission":3.0}]', id="float Permission"),
        pytest.param('[{"Scope":"refs/heads/main","Permission":4}]', id="Permission 4"),
        pytest.param('[{"Scope":"refs/heads/main","Permission":-1}]', id="negative Permission"),
        pytest.param(
            '[{"Scope":"refs/heads/main","Permission":3},{"Scope":"x","Permission":9}]',
            id="one bad entry among good ones",
        ),
    ],
)
def test_parse_ac_rejects_bad_shapes(value: object) -> None:
    with pytest.raises(Unauthenticated):
        parse_ac(value)


def test_unauthenticated_maps_to_401() -> None:
    with pytest.raises(Unauthenticated) as info:
        parse_ac("nope")
    assert info.value.status == 401
    assert info.value.code == "unauthenticated"


@pytest.mark.parametrize("value", [PR_AC, PUSH_AC, "[]"])
def test_encode_ac_round_trips_githubs_compact_form(value: str) -> None:
    assert encode_ac(parse_ac(value)) == value


# -- readable_refs / writable_ref -----------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        pytest.param(
            (scope("refs/pull/707/merge", RW), scope("refs/heads/master", R)),
            ("refs/pull/707/merge", "refs/heads/master"),
            id="PR token",
        ),
        pytest.param(
            (scope("refs/heads/master", R), scope("refs/pull/707/merge", RW)),
            ("refs/pull/707/merge", "refs/heads/master"),
            id="higher permission first whatever the claim order",
        ),
        pytest.param(
            (scope("b", R), scope("a", R), scope("c", R)),
            ("b", "a", "c"),
            id="equal permissions keep claim order",
        ),
        pytest.param(
            (scope("r1", R), scope("rw1", RW), scope("r2", R), scope("rw2", RW)),
            ("rw1", "rw2", "r1", "r2"),
            id="stable within each permission",
        ),
        pytest.param((scope("none", Permission(0)),), (), id="permission 0 is not readable"),
        pytest.param(
            (scope("main", R), scope("main", RW)),
            ("main",),
            id="a ref listed twice appears once",
        ),
        pytest.param((), (), id="no scopes"),
    ],
)
def test_readable_refs(scopes: tuple[Scope, ...], expected: tuple[str, ...]) -> None:
    assert claims(*scopes).readable_refs() == expected


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        ((scope("refs/pull/707/merge", RW), scope("refs/heads/master", R)), "refs/pull/707/merge"),
        ((scope("refs/heads/master", R), scope("refs/pull/707/merge", RW)), "refs/pull/707/merge"),
        ((scope("a", W), scope("b", RW)), "a"),
        ((scope("a", R), scope("b", R)), None),
        ((), None),
    ],
)
def test_writable_ref_is_the_first_writable_scope(
    scopes: tuple[Scope, ...], expected: str | None
) -> None:
    assert claims(*scopes).writable_ref() == expected


# -- repository -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"repository": "octo/repo"}, "octo/repo"),
        ({"repository": "octo/repo", "repository_id": "42"}, "octo/repo"),
        ({"repository_id": "123456789"}, "id:123456789"),
        ({"repository_id": 123456789}, "id:123456789"),
        ({"repository": "", "repository_id": "7"}, "id:7"),
        ({"repository": 5, "repository_id": "7"}, "id:7"),
    ],
)
def test_repository_of(payload: dict[str, object], expected: str) -> None:
    assert repository_of(payload) == expected


def test_repository_id_as_string_and_number_name_the_same_repository() -> None:
    assert repository_of({"repository_id": "99"}) == repository_of({"repository_id": 99})


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"repository": ""},
        {"repository_id": ""},
        {"repository_id": True},
        {"repository_id": None},
        {"repository_id": 1.5},
        {"repository": None, "repository_id": ["1"]},
    ],
)
def test_repository_of_rejects(payload: dict[str, object]) -> None:
    with pytest.raises(Unauthenticated, match="no repository"):
        repository_of(payload)


# -- claims_from_payload ------------------------------------------------------------------------


def test_claims_from_captured_payload() -> None:
    got = claims_from_payload(CAPTURED_PAYLOAD, now=1795801547)
    assert got == RuntimeClaims(
        repository="id:123456789",
        scopes=(scope("refs/heads/main", RW),),
        expires_at=1795823207.0,
        not_before=1795801547.0,
    )


def test_claims_without_nbf() -> None:
    got = claims_from_payload({"exp": 200, "repository": "o/r", "ac": "[]"}, now=100)
    assert got.not_before is None
    assert got.expires_at == 200.0
    assert got.scopes == ()


@pytest.mark.parametrize(
    ("now", "valid"),
    [
        (99.0, False),  # before nbf
        (99.999, False),
        (100.0, True),  # nbf is inclusive
        (150.0, True),
        (199.999, True),
        (200.0, False),  # exp is exclusive
        (200.001, False),
        (1e12, False),
    ],
)
def test_claims_validity_window(now: float, valid: bool) -> None:
    payload = {"nbf": 100, "exp": 200, "repository": "o/r", "ac": PUSH_AC}
    if valid:
        assert claims_from_payload(payload, now=now).repository == "o/r"
    else:
        with pytest.raises(Unauthenticated, match=r"expired|not valid yet"):
            claims_from_payload(payload, now=now)


def test_expired_and_not_yet_valid_have_distinct_messages() -> None:
    payload = {"nbf": 100, "exp": 200, "repository": "o/r", "ac": "[]"}
    with pytest.raises(Unauthenticated, match="expired"):
        claims_from_payload(payload, now=200)
    with pytest.raises(Unauthenticated, match="not valid yet"):
        claims_from_payload(payload, now=50)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"repository": "o/r", "ac": "[]"}, "no 'exp'"),
        ({"exp": None, "repository": "o/r", "ac": "[]"}, "no 'exp'"),
        ({"exp": "200", "repository": "o/r", "ac": "[]"}, "'exp' must be a number"),
        ({"exp": True, "repository": "o/r", "ac": "[]"}, "'exp' must be a number"),
        ({"exp": 200, "nbf": "100", "repository": "o/r", "ac": "[]"}, "'nbf' must be a number"),
        ({"exp": 200, "nbf": False, "repository": "o/r", "ac": "[]"}, "'nbf' must be a number"),
        ({"exp": 200, "ac": "[]"}, "no repository"),
        ({"exp": 200, "repository": "o/r"}, "'ac'"),
        ({"exp": 200, "repository": "o/r", "ac": "[{}]"}, "'ac'"),
    ],
)
def test_claims_from_payload_rejects(payload: dict[str, object], message: str) -> None:
    with pytest.raises(Unauthenticated, match=message):
        claims_from_payload(payload, now=150)


def test_claims_accept_float_times() -> None:
    got = claims_from_payload({"exp": 200.5, "repository": "o/r", "ac": "[]"}, now=200.25)
    assert got.expires_at == 200.5


# -- parse_scope_spec -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "ref", "permission"),
    [
        ("refs/heads/main:rw", "refs/heads/main", RW),
        ("refs/heads/main:wr", "refs/heads/main", RW),
        ("refs/heads/main:r", "refs/heads/main", R),
        ("refs/heads/main:w", "refs/heads/main", W),
        ("refs/pull/707/merge:rw", "refs/pull/707/merge", RW),
        ("weird:ref:r", "weird:ref", R),  # the last colon separates the permission
    ],
)
def test_parse_scope_spec(spec: str, ref: str, permission: Permission) -> None:
    assert parse_scope_spec(spec) == Scope(ref=ref, permission=permission)


@pytest.mark.parametrize(
    "spec", ["refs/heads/main", "refs/heads/main:", ":rw", "refs/heads/main:rx", "main:RW", ""]
)
def test_parse_scope_spec_rejects(spec: str) -> None:
    with pytest.raises(ValueError, match="REF:rw"):
        parse_scope_spec(spec)


def test_scope_spec_round_trips_through_ac() -> None:
    scopes = (parse_scope_spec("refs/pull/1/merge:rw"), parse_scope_spec("refs/heads/main:r"))
    assert parse_ac(encode_ac(scopes)) == scopes
    assert encode_ac(scopes) == (
        '[{"Scope":"refs/pull/1/merge","Permission":3},{"Scope":"refs/heads/main","Permission":1}]'
    )
