"""Block numbers read from Azure block ids: where a Put Block is written before the list comes."""

from __future__ import annotations

import uuid

import pytest

from ghacache.server.service import _block_number


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        # @azure/storage-blob (actions/cache): a uuid prefix, the index zero-padded to 48 chars.
        pytest.param(f"{uuid.uuid4()}{7:012d}".encode(), 7, id="azure js sdk"),
        pytest.param(f"{'a' * 42}{49_999:06d}".encode(), 49_999, id="azure js sdk, last block"),
        # ghacache's client: 32 hex digits (which may end in a digit) and 16 for the index.
        pytest.param(f"{'0' * 31}9{12:016d}".encode(), 12, id="ghacache client"),
        pytest.param(b"block-3", 3, id="short"),
        pytest.param(bytes(range(64)), None, id="binary go id"),
        pytest.param(b"no-number-here", None, id="no digits"),
    ],
)
def test_block_number(raw: bytes, number: int | None) -> None:
    assert _block_number(raw) == number
