"""Property tests of signed blob URLs (``protocol/signing.py``).

A signed URL verifies only for its exact resource, direction and time before its expiry;
changing any one character of what it signs breaks it; any query at all gives either
success or ``Unauthenticated``/``ScopeForbidden``.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ghacache.errors import ScopeForbidden, Unauthenticated
from ghacache.protocol.signing import UrlSigner
from tests.hardening.parse_support import ANY_CHAR, MANY, any_text, props

SIGNER = UrlSigner(secret=b"k" * 32)
NOW = 1_750_000_000.0

resources = st.builds(
    "{}/{}".format, st.sampled_from(["uploads", "entries"]), st.integers(1, 2**63 - 1)
)
directions: st.SearchStrategy[Literal["r", "cw"]] = st.sampled_from(["r", "cw"])
ttls = st.integers(min_value=1, max_value=10**8)


def _verify(
    query: dict[str, str], resource: str, direction: Literal["r", "cw"], now: float
) -> bool:
    """True if verified; False on the two documented refusals; anything else escapes."""
    try:
        SIGNER.verify(query, resource=resource, direction=direction, now=now)
    except (Unauthenticated, ScopeForbidden):
        return False
    return True


@props(MANY)
@given(resources, directions, ttls)
def test_a_signed_url_verifies_for_exactly_its_grant(
    resource: str, direction: Literal["r", "cw"], ttl: int
) -> None:
    query = SIGNER.sign(resource=resource, direction=direction, expires_at=NOW + ttl)
    # The query string form is the same grant.
    assert (
        dict(
            parse_qsl(
                SIGNER.sign_query(resource=resource, direction=direction, expires_at=NOW + ttl)
            )
        )
        == query
    )
    assert _verify(query, resource, direction, NOW)
    assert _verify(query, resource, direction, NOW + ttl - 1)
    assert not _verify(query, resource, direction, NOW + ttl)  # expired
    other: Literal["r", "cw"] = "cw" if direction == "r" else "r"
    assert not _verify(query, resource, other, NOW)
    container, _, entry = resource.partition("/")
    assert not _verify(query, f"{container}/{int(entry) + 1}", direction, NOW)
    swapped = "entries" if container == "uploads" else "uploads"
    assert not _verify(query, f"{swapped}/{entry}", direction, NOW)
    # Other secret, same everything else.
    with pytest.raises(ScopeForbidden):
        UrlSigner(secret=b"j" * 32).verify(query, resource=resource, direction=direction, now=NOW)


@props(MANY)
@given(resources, directions, ttls, st.sampled_from(["sig", "se", "sp"]), st.data())
def test_any_one_character_changed_breaks_the_signature(
    resource: str, direction: Literal["r", "cw"], ttl: int, field: str, data: st.DataObject
) -> None:
    query = SIGNER.sign(resource=resource, direction=direction, expires_at=NOW + ttl)
    value = query[field]
    at = data.draw(st.integers(min_value=0, max_value=len(value) - 1), label="at")
    char = data.draw(ANY_CHAR.filter(lambda c: c != value[at]), label="char")
    mutated = {**query, field: value[:at] + char + value[at + 1 :]}
    assert not _verify(mutated, resource, direction, NOW)
    # Dropping or appending a character breaks it too.
    assert not _verify({**query, field: value[:at] + value[at + 1 :]}, resource, direction, NOW)
    assert not _verify({**query, field: value + char}, resource, direction, NOW)


@props(MANY)
@given(
    st.dictionaries(st.sampled_from(["sig", "se", "sp", "sv", "sr"]) | any_text, any_text),
    st.text(ANY_CHAR, max_size=30),
    directions,
    st.floats(allow_nan=False, min_value=-1e12, max_value=1e12),
)
def test_any_query_is_refused_with_the_documented_errors(
    query: dict[str, str], resource: str, direction: Literal["r", "cw"], now: float
) -> None:
    # A random query essentially never holds a valid MAC; it must fail cleanly, whatever it has.
    assert not _verify(query, resource, direction, now)
