"""Shared settings and strategies for the parser property tests (``test_parse_*.py``).

Every property runs a fixed number of examples from a fixed seed (``derandomize``), with no
example database, so CI runs exactly what a developer ran. ``--hypothesis-show-statistics``
prints the examples each property ran.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Examples per property: cheap pure parsers get many, parsers that touch files or do
# cryptography fewer.
MANY = 300
SOME = 150
FEW = 75


def props(max_examples: int) -> settings:
    """The settings of every parser property: repeatable, no deadline, no database."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


# Characters that trip parsers: separators, NUL, lone surrogates, non-ASCII digits, path and
# markup syntax, whitespace a regex "$" lets through.
HOSTILE_CHARS = st.sampled_from(
    list(",\x00\ud800\udcff\n\r\t /\\.%&<>-=*:#\"'\u0663\u00b2\uff11\u2028\ufffd")
)
ANY_CHAR = st.characters(exclude_categories=()) | HOSTILE_CHARS  # surrogates included
any_text = st.text(ANY_CHAR, max_size=16)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | any_text
)


def json_values(leaves: int = 6) -> st.SearchStrategy[Any]:
    """Any JSON value (nested lists and objects), lone surrogates in strings included."""
    return st.recursive(
        json_scalars,
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(any_text, kids, max_size=3),
        max_leaves=leaves,
    )


def objects_with(fields: list[str], values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """JSON objects whose keys are mostly the parser's own field names."""
    return st.dictionaries(st.sampled_from(fields) | any_text, values, max_size=len(fields) + 2)


def to_json_bytes(value: Any) -> bytes:
    """``value`` as JSON text; lone surrogates become ``\\ud800`` escapes, as on the wire."""
    return json.dumps(value).encode()


def bytes_or_json(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """Raw bytes, or the JSON text of ``values`` (so parsers get past ``json.loads``)."""
    return st.binary(max_size=200) | values.map(to_json_bytes)


# Inputs no generator is likely to find: nesting deeper than the interpreter's recursion
# limit, numbers too long for int(), encodings and BOMs json.loads sniffs.
DEEP_ARRAY = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"a":' * 50_000 + b"1" + b"}" * 50_000
LONG_NUMBER = b"1" * 5000
HOSTILE_JSON = [
    DEEP_ARRAY,
    DEEP_OBJECT,
    LONG_NUMBER,
    b'{"x": ' + LONG_NUMBER + b"}",
    b"\xef\xbb\xbf{}",
    "{}".encode("utf-16"),
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',
    b'"\\ud800"',
    b"\xff\xfe\x00",
]
