"""Property tests of the Azure Block Blob parsers: Range/x-ms-range, block ids, block lists.

(a) Anything in gives a value or ``RemoteProtocolError``/``RangeNotSatisfiable``; (b) what
``block_list_xml`` and base64 write parses back; (c) a parsed range lies inside the blob,
block part names are safe file names and distinct for distinct ids, and a block list never
mixes id lengths or names more than 50,000 blocks.
"""

from __future__ import annotations

import base64

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ghacache.errors import RangeNotSatisfiable, RemoteProtocolError
from ghacache.protocol import azblob
from ghacache.storage.base import check_name
from tests.hardening.parse_support import MANY, SOME, any_text, props

# -- Range / x-ms-range -------------------------------------------------------------------

blob_sizes = st.integers(min_value=0, max_value=2**40)
numbers = st.integers(min_value=0, max_value=2**41).map(str) | st.sampled_from(
    ["", "0", "-1", "9" * 19, "9" * 20, "\u0663", "\uff11", "1.5", " 1"]
)
ranges = st.one_of(
    any_text,
    st.builds("bytes={}-{}".format, numbers, numbers),
    st.builds(
        "{}={}-{}".format, st.sampled_from(["bytes", "Bytes", "items", ""]), numbers, numbers
    ),
    st.builds("bytes={}-{}, {}-{}".format, numbers, numbers, numbers, numbers),
)


@props(MANY)
@given(st.none() | ranges, blob_sizes)
@example("bytes=0-0", 0)
@example("bytes=-0", 10)
@example("bytes=5-", 5)
@example("bytes=\u0660-\u0669", 100)
@example("bytes=0-9\n", 100)
@example("bytes=" + "9" * 19 + "-", 10)
def test_range_lies_within_the_blob_or_is_refused(value: str | None, size: int) -> None:
    try:
        span = azblob.parse_range(value, size)
    except RemoteProtocolError as exc:
        # A 416 tells the client the blob's size (Content-Range: bytes */size).
        unsatisfiable = exc if isinstance(exc, RangeNotSatisfiable) else None
        span = None
        if unsatisfiable is None:
            return
    else:
        unsatisfiable = None
    if unsatisfiable is not None:
        assert unsatisfiable.size == size and unsatisfiable.status == 416
        return
    if span is None:
        assert value is None or not value.strip()
        return
    start, end = span
    assert 0 <= start <= end < size


@props(MANY)
@given(blob_sizes.filter(bool), st.data())
def test_range_round_trip(size: int, data: st.DataObject) -> None:
    start = data.draw(st.integers(min_value=0, max_value=size - 1))
    end = data.draw(st.integers(min_value=start, max_value=size + 10))
    assert azblob.parse_range(f"bytes={start}-{end}", size) == (start, min(end, size - 1))
    assert azblob.parse_range(f"bytes={start}-", size) == (start, size - 1)
    n = data.draw(st.integers(min_value=1, max_value=size + 10))
    assert azblob.parse_range(f"bytes=-{n}", size) == (max(0, size - n), size - 1)
    if end > start:  # a range that ends before it starts is malformed, not unsatisfiable
        with pytest.raises(RemoteProtocolError) as info:
            azblob.parse_range(f"bytes={end}-{start}", size)
        assert not isinstance(info.value, RangeNotSatisfiable)


# -- block ids ------------------------------------------------------------------------------

block_id_text = st.one_of(
    any_text,
    st.binary(max_size=80).map(lambda b: base64.b64encode(b).decode()),
    st.binary(min_size=1, max_size=64).map(lambda b: base64.urlsafe_b64encode(b).decode()),
    st.binary(min_size=1, max_size=64).map(lambda b: base64.b64encode(b).decode().rstrip("=")),
)


@props(MANY)
@given(st.none() | block_id_text)
@example("Li4vLi4vZXRj")  # "../../etc"
@example(base64.b64encode(b"/" * 64).decode())
@example(base64.b64encode(b"\x00").decode())
def test_block_id_decodes_to_1_to_64_bytes_or_is_refused(block_id: str | None) -> None:
    try:
        raw = azblob.decode_block_id(block_id)
    except RemoteProtocolError:
        return
    assert block_id is not None
    assert 1 <= len(raw) <= azblob.MAX_BLOCK_ID_BYTES
    assert base64.b64encode(raw).decode() == block_id  # only canonical base64 is accepted
    # Whatever the id holds (slashes, dots, NUL), its part name is one safe file name.
    assert check_name("part", azblob.block_part_name(raw)) == "b" + raw.hex()


@props(MANY)
@given(st.binary(min_size=1, max_size=64), st.binary(min_size=1, max_size=64))
def test_block_ids_round_trip_to_distinct_part_names(a: bytes, b: bytes) -> None:
    assert azblob.decode_block_id(base64.b64encode(a).decode()) == a
    assert (azblob.block_part_name(a) == azblob.block_part_name(b)) == (a == b)


# -- block lists ------------------------------------------------------------------------------

xml_fragments = st.sampled_from(
    [
        "<BlockList>",
        "</BlockList>",
        "<Latest>",
        "</Latest>",
        "<Uncommitted>",
        "</Uncommitted>",
        "<Committed>",
        "</Committed>",
        "<Other/>",
        '<?xml version="1.0" encoding="utf-8"?>',
        '<?xml version="1.0" encoding="bogus"?>',
        "<!DOCTYPE BlockList>",
        '<!DOCTYPE x [<!ENTITY a "aaaa">]>',
        '<!ENTITY e SYSTEM "file:///etc/passwd">',
        "&a;",
        "&e;",
        "&amp;",
        "&#0;",
        "<![CDATA[QUFBQQ==]]>",
        "<!-- c -->",
        'xmlns="urn:x"',
        "QUFBQQ==",
        "QkJCQg==",
        "AAAA",
        "!!",
        " ",
    ]
)
xml_soup = st.lists(xml_fragments | any_text, max_size=12).map("".join)


@props(MANY)
@given(st.binary(max_size=200) | xml_soup.map(str.encode))
@example(b"<BlockList><Latest>QUFBQQ==</Latest><Latest>QUE=</Latest></BlockList>")
@example(b"<BlockList><Latest><x>QUFBQQ==</x></Latest></BlockList>")
@example(b'<BlockList xmlns="urn:x"><Latest>QUFBQQ==</Latest></BlockList>')
@example("<BlockList><Latest>QUFBQQ==</Latest></BlockList>".encode("utf-16"))
def test_block_list_gives_equal_length_ids_or_is_refused(body: bytes) -> None:
    try:
        ids = azblob.parse_block_list(body)
    except RemoteProtocolError:
        return
    assert len(ids) <= azblob.MAX_BLOCKS
    assert len({len(i) for i in ids}) <= 1
    assert all(1 <= len(i) <= azblob.MAX_BLOCK_ID_BYTES for i in ids)


@props(SOME)
@given(st.integers(min_value=1, max_value=64), st.data())
def test_block_list_round_trip(id_len: int, data: st.DataObject) -> None:
    ids = data.draw(st.lists(st.binary(min_size=id_len, max_size=id_len), max_size=30))
    body = azblob.block_list_xml([base64.b64encode(i).decode() for i in ids])
    assert azblob.parse_block_list(body) == ids
    # Azure's other element names are accepted alike, whitespace around ids too.
    spaced = body.replace(b"<Latest>", b"<Uncommitted>\n ").replace(
        b"</Latest>", b"\t</Uncommitted>"
    )
    assert azblob.parse_block_list(spaced) == ids


# -- hostile documents (fixed cases: each is checked to be refused, quickly) ----------------

BILLION_LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, (b"&lol%d;" % (i - 1) if i > 1 else b"&lol;") * 10)
        for i in range(1, 10)
    )
    + b"]><BlockList><Latest>&lol9;</Latest></BlockList>"
)
QUADRATIC = (
    b'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY a "'
    + b"A" * 50_000
    + b'">]><BlockList><Latest>'
    + b"&a;" * 50_000
    + b"</Latest></BlockList>"
)
EXTERNAL = (
    b'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b"<BlockList><Latest>&e;</Latest></BlockList>"
)
PARAMETER = (
    b'<?xml version="1.0"?><!DOCTYPE b [<!ENTITY % p SYSTEM "http://127.0.0.1:9/x.dtd"> %p;]>'
    b"<BlockList/>"
)
EXTERNAL_DTD = (
    b'<?xml version="1.0"?><!DOCTYPE BlockList SYSTEM "http://127.0.0.1:9/b.dtd"><BlockList/>'
)
DEEP = b"<BlockList>" + b"<a>" * 100_000 + b"</a>" * 100_000 + b"</BlockList>"
TOO_MANY = azblob.block_list_xml(["QUFBQQ=="] * (azblob.MAX_BLOCKS + 1))
TOO_BIG = b"<BlockList>" + b" " * azblob.MAX_BLOCK_LIST_BYTES + b"</BlockList>"


@pytest.mark.parametrize(
    "body",
    [BILLION_LAUGHS, QUADRATIC, EXTERNAL, PARAMETER, EXTERNAL_DTD, DEEP, TOO_MANY, TOO_BIG],
    ids=["billion-laughs", "quadratic", "external", "parameter", "dtd", "deep", "50001", "9mib"],
)
@pytest.mark.timeout(60)  # an entity expansion that ran would hang here: fail instead
def test_hostile_block_lists_are_refused(body: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        azblob.parse_block_list(body)


def test_the_block_limit_is_exact() -> None:
    ids = azblob.parse_block_list(azblob.block_list_xml(["QUFBQQ=="] * azblob.MAX_BLOCKS))
    assert len(ids) == azblob.MAX_BLOCKS
