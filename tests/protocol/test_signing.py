"""Signed blob URLs (``protocol.signing``): one resource, one direction, one expiry."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode

import pytest

from ghacache.errors import ScopeForbidden, Unauthenticated
from ghacache.protocol.signing import SIGNED_VERSION, Direction, UrlSigner

SECRET = b"s" * 32
NOW = datetime(2026, 11, 27, 17, 45, 52, tzinfo=UTC).timestamp()
EXPIRES = NOW + 6 * 3600

signer = UrlSigner(secret=SECRET)


def signed(
    resource: str = "entries/1", direction: Direction = "r", expires_at: float = EXPIRES
) -> dict[str, str]:
    return signer.sign(resource=resource, direction=direction, expires_at=expires_at)


def test_sign_looks_like_an_azure_sas() -> None:
    query = signed()
    assert set(query) == {"sv", "sr", "sp", "se", "sig"}
    assert query["sv"] == SIGNED_VERSION
    assert query["sr"] == "b"
    assert query["sp"] == "r"
    assert query["se"] == "2026-11-27T23:45:52Z"


@pytest.mark.parametrize("direction", ["r", "cw"])
@pytest.mark.parametrize("resource", ["entries/1", "uploads/1", "entries/12", "uploads/987654321"])
def test_round_trip(resource: str, direction: Direction) -> None:
    query = signed(resource, direction)
    signer.verify(query, resource=resource, direction=direction, now=NOW)


def test_round_trip_through_a_url_query_string() -> None:
    # The signature must survive urlencode + parse (as aiohttp's request.query hands it back).
    query = signed("uploads/3", "cw")
    parsed = dict(parse_qsl(urlencode(query)))
    signer.verify(parsed, resource="uploads/3", direction="cw", now=NOW)


@pytest.mark.parametrize("direction", ["r", "cw"])
@pytest.mark.parametrize("expires_at", [EXPIRES, EXPIRES + 0.999, EXPIRES + 86400 * 400])
def test_sign_query_is_the_urlencoded_signature(direction: Direction, expires_at: float) -> None:
    query = signer.sign_query(resource="entries/42", direction=direction, expires_at=expires_at)
    assert query == urlencode(signed("entries/42", direction, expires_at))
    signer.verify(dict(parse_qsl(query)), resource="entries/42", direction=direction, now=NOW)


def test_sdk_appended_parameters_are_not_signed() -> None:
    query = {**signed("uploads/3", "cw"), "comp": "block", "blockid": "QUJD", "timeout": "30"}
    signer.verify(query, resource="uploads/3", direction="cw", now=NOW)


def test_signature_is_deterministic_and_secret_dependent() -> None:
    assert signed() == signed()
    other = UrlSigner(secret=b"t" * 32).sign(
        resource="entries/1", direction="r", expires_at=EXPIRES
    )
    assert other["sig"] != signed()["sig"]
    with pytest.raises(ScopeForbidden):
        signer.verify(other, resource="entries/1", direction="r", now=NOW)


# -- wrong resource or direction: a valid credential used for something else (403) -------------------


@pytest.mark.parametrize(
    ("signed_for", "used_for"),
    [
        ("entries/1", "entries/12"),
        ("entries/12", "entries/1"),
        ("entries/1", "entries/2"),
        ("uploads/1", "entries/1"),
        ("entries/1", "uploads/1"),
        ("entries/1", "entries/1/"),
        ("entries/1", "Entries/1"),
        ("entries/1", ""),
    ],
)
def test_url_for_one_resource_is_not_valid_for_another(signed_for: str, used_for: str) -> None:
    query = signed(signed_for)
    with pytest.raises(ScopeForbidden):
        signer.verify(query, resource=used_for, direction="r", now=NOW)


@pytest.mark.parametrize(("granted", "needed"), [("r", "cw"), ("cw", "r")])
def test_url_for_one_direction_is_not_valid_for_the_other(
    granted: Direction, needed: Direction
) -> None:
    query = signed("entries/1", granted)
    with pytest.raises(ScopeForbidden, match=f"grants '{granted}'"):
        signer.verify(query, resource="entries/1", direction=needed, now=NOW)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sp", "cw"),  # upgrade a read URL to a write URL
        ("sp", "rcw"),
        ("se", "2099-01-01T00:00:00Z"),  # extend the expiry
        ("se", "2026-11-27T23:45:53Z"),  # by one second
        ("sig", "A" * 43),
        ("sig", "x"),
    ],
)
def test_tampered_query_is_forbidden(field: str, value: str) -> None:
    query = {**signed("entries/1", "r"), field: value}
    needed: Direction = "cw" if field == "sp" else "r"
    with pytest.raises(ScopeForbidden):
        signer.verify(query, resource="entries/1", direction=needed, now=NOW)


def test_a_flipped_signature_character_is_forbidden() -> None:
    query = signed()
    sig = query["sig"]
    flipped = ("B" if sig[0] == "A" else "A") + sig[1:]
    with pytest.raises(ScopeForbidden, match="signature"):
        signer.verify({**query, "sig": flipped}, resource="entries/1", direction="r", now=NOW)


def test_scope_forbidden_maps_to_403() -> None:
    with pytest.raises(ScopeForbidden) as info:
        signer.verify(signed("entries/1"), resource="entries/2", direction="r", now=NOW)
    assert info.value.status == 403


# -- no credential or an expired one (401) -------------------------------------------------------


@pytest.mark.parametrize("missing", ["sig", "se", "sp"])
def test_unsigned_url_is_unauthenticated(missing: str) -> None:
    query = {k: v for k, v in signed().items() if k != missing}
    with pytest.raises(Unauthenticated, match="not signed"):
        signer.verify(query, resource="entries/1", direction="r", now=NOW)


@pytest.mark.parametrize("empty", ["sig", "se", "sp"])
def test_empty_signature_fields_are_unauthenticated(empty: str) -> None:
    query = {**signed(), empty: ""}
    with pytest.raises(Unauthenticated, match="not signed"):
        signer.verify(query, resource="entries/1", direction="r", now=NOW)


def test_no_query_at_all_is_unauthenticated() -> None:
    with pytest.raises(Unauthenticated) as info:
        signer.verify({}, resource="entries/1", direction="r", now=NOW)
    assert info.value.status == 401


@pytest.mark.parametrize(
    ("now", "valid"),
    [
        (NOW, True),
        (EXPIRES - 1, True),
        (EXPIRES - 0.001, True),
        (EXPIRES, False),  # the expiry instant itself is expired
        (EXPIRES + 0.5, False),
        (EXPIRES + 86400, False),
    ],
)
def test_expiry_boundary(now: float, valid: bool) -> None:
    query = signed()
    if valid:
        signer.verify(query, resource="entries/1", direction="r", now=now)
    else:
        with pytest.raises(Unauthenticated, match="expired"):
            signer.verify(query, resource="entries/1", direction="r", now=now)


def test_fractional_expiry_is_rounded_down_never_extended() -> None:
    query = signed(expires_at=EXPIRES + 0.9)
    assert query["se"] == "2026-11-27T23:45:52Z"
    with pytest.raises(Unauthenticated, match="expired"):
        signer.verify(query, resource="entries/1", direction="r", now=EXPIRES + 0.5)


def test_expired_url_for_another_resource_is_forbidden_not_expired() -> None:
    # The signature is checked first, so an expired URL reveals nothing about other blobs.
    with pytest.raises(ScopeForbidden):
        signer.verify(signed("entries/1"), resource="entries/2", direction="r", now=EXPIRES + 1)
