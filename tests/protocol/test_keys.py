"""Key/version limits and GitHub's lookup order (``protocol.keys``)."""

from __future__ import annotations

import pytest

from ghacache.errors import RemoteProtocolError
from ghacache.protocol.keys import (
    MAX_KEY_CHARS,
    MAX_KEYS,
    MAX_VERSION_CHARS,
    Candidate,
    dedupe_keys,
    pick,
    validate_key,
    validate_keys,
    validate_version,
)

MAIN = "refs/heads/main"
PR = "refs/pull/707/merge"
FEATURE = "refs/heads/feature"


def c(entry_id: int, key: str, created_at: float, scope: str = MAIN) -> Candidate:
    return Candidate(entry_id=entry_id, scope=scope, key=key, created_at=created_at)


# -- validation ---------------------------------------------------------------------------


def test_limits_are_githubs() -> None:
    assert (MAX_KEY_CHARS, MAX_KEYS, MAX_VERSION_CHARS) == (512, 10, 512)


@pytest.mark.parametrize(
    "key",
    [
        "a",
        "x" * 512,
        "Linux-node-3ad75f27293d65a1",
        "index-buildkit-1-f921bd05#13",
        "buildkit-blob-1-sha256:19a02e5b78ea1a2edb43dcbfd42afd29aafb803ee092687b7f40581cbb481327",
        "with space and ünïcödé",
        "é" * 512,  # the limit counts characters, not UTF-8 bytes
    ],
)
def test_validate_key_accepts(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("", "empty"),
        ("x" * 513, "513 characters"),
        ("é" * 513, "513 characters"),
        ("a,b", "comma"),
        (",", "comma"),
        ("trailing,", "comma"),
        ("nul\x00key", "NUL"),
    ],
)
def test_validate_key_rejects(key: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        validate_key(key)


@pytest.mark.parametrize("count", [1, 2, 9, 10])
def test_validate_keys_accepts_up_to_ten(count: int) -> None:
    keys = [f"k{i}" for i in range(count)]
    assert validate_keys(keys) == tuple(keys)


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([], "at least one"),
        ([f"k{i}" for i in range(11)], "11 keys"),
        (["ok", ""], "empty"),
        (["ok", "x" * 513], "513"),
        (["ok", "a,b"], "comma"),
    ],
)
def test_validate_keys_rejects(keys: list[str], message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        validate_keys(keys)


def test_validate_keys_returns_a_tuple_in_order() -> None:
    result = validate_keys(["primary", "restore-b", "restore-a"])
    assert result == ("primary", "restore-b", "restore-a")
    assert isinstance(result, tuple)


@pytest.mark.parametrize(
    "version",
    ["1", "3ad75f27293d65a135214b8c82b296080f911dc107e52f1e7ec871a2eda46e69", "v" * 512],
)
def test_validate_version_accepts(version: str) -> None:
    assert validate_version(version) == version


@pytest.mark.parametrize(
    ("version", "message"), [("", "empty"), ("v" * 513, "longer than 512"), ("1\x00", "NUL")]
)
def test_validate_version_rejects(version: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        validate_version(version)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (["a"], ("a",)),
        (["k", "k"], ("k",)),  # BuildKit repeats the primary key in restore_keys
        (["b", "a", "b", "c", "a"], ("b", "a", "c")),
        ([], ()),
    ],
)
def test_dedupe_keys_keeps_first_occurrences(keys: list[str], expected: tuple[str, ...]) -> None:
    assert dedupe_keys(keys) == expected


# -- pick: GitHub's order -------------------------------------------------------------------

# Each case: candidates, scopes, keys, the id of the expected winner (None for a miss).
PICK_CASES: list[tuple[str, list[Candidate], list[str], list[str], int | None]] = [
    ("empty pool misses", [], [MAIN], ["k"], None),
    ("no scopes misses", [c(1, "k", 1)], [], ["k"], None),
    ("exact hit", [c(1, "k", 1)], [MAIN], ["k"], 1),
    ("prefix hit", [c(1, "k-abc", 1)], [MAIN], ["k-"], 1),
    ("a longer key is no match for a shorter one", [c(1, "k", 1)], [MAIN], ["k-"], None),
    ("matching is case-sensitive", [c(1, "Key", 1)], [MAIN], ["key"], None),
    ("entries matching no key are ignored", [c(1, "other", 9), c(2, "k1", 1)], [MAIN], ["k"], 2),
    (
        "exact beats a newer prefix match",
        [c(1, "k", 1), c(2, "k-newer", 100)],
        [MAIN],
        ["k"],
        1,
    ),
    (
        "exact beats a newer prefix match whatever the pool order",
        [c(2, "k-newer", 100), c(1, "k", 1)],
        [MAIN],
        ["k"],
        1,
    ),
    (
        "newest-created prefix match wins",
        [c(1, "k-a", 10), c(2, "k-b", 30), c(3, "k-c", 20)],
        [MAIN],
        ["k-"],
        2,
    ),
    (
        "newest wins, not the highest id",
        [c(7, "k-old", 10), c(3, "k-new", 20)],
        [MAIN],
        ["k-"],
        3,
    ),
    (
        "equal creation time: the higher entry id wins",
        [c(4, "k-a", 10), c(9, "k-b", 10), c(6, "k-c", 10)],
        [MAIN],
        ["k-"],
        9,
    ),
    (
        "restore keys are tried in order",
        [c(1, "restore-a-1", 50), c(2, "restore-b-1", 10)],
        [MAIN],
        ["primary", "restore-b-", "restore-a-"],
        2,
    ),
    (
        "the primary key's prefix beats a restore key's exact match",
        [c(1, "primary-x", 1), c(2, "fallback", 100)],
        [MAIN],
        ["primary", "fallback"],
        1,
    ),
    (
        "a later key's exact match is found when earlier keys miss",
        [c(1, "fallback", 1)],
        [MAIN],
        ["primary", "fallback"],
        1,
    ),
    (
        "the first scope's exact match wins",
        [c(1, "k", 1, MAIN), c(2, "k", 2, PR)],
        [PR, MAIN],
        ["k"],
        2,
    ),
    (
        "scopes are searched in the order given",
        [c(1, "k", 1, MAIN), c(2, "k", 2, PR)],
        [MAIN, PR],
        ["k"],
        1,
    ),
    (
        "a later scope's exact match never beats an earlier scope's prefix match",
        [c(1, "k", 100, MAIN), c(2, "k-old", 1, PR)],
        [PR, MAIN],
        ["k"],
        2,
    ),
    (
        "a later scope's primary key never beats an earlier scope's restore key",
        [c(1, "primary", 100, MAIN), c(2, "restore-1", 1, PR)],
        [PR, MAIN],
        ["primary", "restore-"],
        2,
    ),
    (
        "fall through to the next scope on a miss",
        [c(1, "k-1", 1, MAIN), c(2, "other", 1, PR)],
        [PR, MAIN],
        ["k-"],
        1,
    ),
    (
        "entries of scopes the token cannot read are never returned",
        [c(1, "k", 1, FEATURE)],
        [PR, MAIN],
        ["k"],
        None,
    ),
    (
        "newest prefix is chosen within the scope, not across scopes",
        [c(1, "k-a", 1, PR), c(2, "k-b", 99, MAIN)],
        [PR, MAIN],
        ["k-"],
        1,
    ),
]


@pytest.mark.parametrize(
    ("candidates", "scopes", "keys", "expected"),
    [case[1:] for case in PICK_CASES],
    ids=[case[0] for case in PICK_CASES],
)
def test_pick(
    candidates: list[Candidate], scopes: list[str], keys: list[str], expected: int | None
) -> None:
    chosen = pick(candidates, scopes=scopes, keys=keys)
    assert (chosen.entry_id if chosen else None) == expected


def test_pick_accepts_a_one_shot_iterator() -> None:
    # The index passes a generator; pick must not consume it once per scope.
    pool = (c(i, f"k-{i}", i, scope) for i, scope in [(1, PR), (2, MAIN), (3, MAIN)])
    chosen = pick(pool, scopes=[FEATURE, MAIN], keys=["k-"])
    assert chosen is not None
    assert chosen.entry_id == 3


# go-actions-cache cache_test.go TestPartialKeyOrder: entries saved in this order.
PARTIAL_ORDER_BASE = "buildkit-test-partial-"
PARTIAL_ORDER_POOL = [
    c(1, PARTIAL_ORDER_BASE + "foo22", 1.0),
    c(2, PARTIAL_ORDER_BASE + "fo", 2.0),
    c(3, PARTIAL_ORDER_BASE + "foo1", 3.0),
]


@pytest.mark.parametrize(
    ("suffix", "expected_suffix"),
    [
        ("foo", "foo1"),
        ("", "foo1"),
        ("foo2", "foo22"),
        ("foo3", None),
        ("fo", "fo"),  # an exact match beats the newer foo1
        ("foo22", "foo22"),
        ("foo222", None),
    ],
)
def test_pick_go_actions_cache_partial_key_order(suffix: str, expected_suffix: str | None) -> None:
    chosen = pick(PARTIAL_ORDER_POOL, scopes=[MAIN], keys=[PARTIAL_ORDER_BASE + suffix])
    if expected_suffix is None:
        assert chosen is None
    else:
        assert chosen is not None
        assert chosen.key == PARTIAL_ORDER_BASE + expected_suffix


def test_candidate_is_frozen_and_keyword_only() -> None:
    cand = c(1, "k", 1.0)
    with pytest.raises(AttributeError):
        cand.key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Candidate(1, MAIN, "k", 1.0)  # type: ignore[call-arg]
