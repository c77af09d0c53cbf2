"""The Azure Block Blob subset (``protocol.azblob``): block ids, block lists, ranges."""

from __future__ import annotations

import base64
import itertools
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from ghacache.errors import RangeNotSatisfiable, RemoteProtocolError
from ghacache.protocol import azblob

TRACES = Path(__file__).resolve().parents[1] / "data" / "traces"


def headers() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((TRACES / "headers.json").read_bytes())
    return data


def js_block_id(index: int, prefix: str = "9954bd61-01d0-4417-b719-74c517d9591f") -> str:
    """actions/toolkit: base64 of a UUID followed by the block index padded to 12 digits."""
    return base64.b64encode(f"{prefix}{index:012d}".encode()).decode()


GO_UUID = uuid.UUID("0b5e2a64-9f1c-4c1e-8d1a-3f0e7c2b9a11").bytes


def go_block_id(index: int) -> str:
    """go-actions-cache/azblob: base64 of 64 bytes (16-byte UUID + 4-byte index + padding)."""
    raw = GO_UUID + index.to_bytes(4, "big")
    return base64.b64encode(raw.ljust(64, b"\0")).decode()


# -- block ids --------------------------------------------------------------------------------------


def test_js_block_id_shape() -> None:
    block_id = js_block_id(3)
    assert len(block_id) == 64
    raw = azblob.decode_block_id(block_id)
    assert raw == b"9954bd61-01d0-4417-b719-74c517d9591f000000000003"
    assert len(raw) == 48


def test_captured_block_ids_decode_to_48_bytes() -> None:
    values = headers()["v2_block_ids"]["values"]
    assert len(values) == 4
    raws = [azblob.decode_block_id(v) for v in values]
    assert {len(r) for r in raws} == {48}
    assert sorted(r[-12:] for r in raws) == [b"%012d" % i for i in range(4)]


def test_go_block_id_is_64_bytes() -> None:
    block_id = go_block_id(7)
    assert len(block_id) == 88
    raw = azblob.decode_block_id(block_id)
    assert len(raw) == 64
    assert raw[16:20] == (7).to_bytes(4, "big")


@pytest.mark.parametrize(
    ("block_id", "raw"),
    [
        ("AA==", b"\0"),
        ("QUJD", b"ABC"),
        ("/w==", b"\xff"),
        ("+/+/", b"\xfb\xff\xbf"),
        (base64.b64encode(b"x" * 64).decode(), b"x" * 64),
    ],
)
def test_decode_block_id(block_id: str, raw: bytes) -> None:
    assert azblob.decode_block_id(block_id) == raw


@pytest.mark.parametrize(
    ("block_id", "message"),
    [
        pytest.param(None, "needs a 'blockid'", id="missing"),
        pytest.param("", "needs a 'blockid'", id="empty"),
        pytest.param("not base64!", "not valid base64", id="bad characters"),
        pytest.param("QUJ", "not valid base64", id="bad length"),
        pytest.param("QUJDRA", "not valid base64", id="missing padding"),
        pytest.param("QU JD", "not valid base64", id="inner space"),
        pytest.param("-_-_", "not valid base64", id="url-safe alphabet"),
        pytest.param("====", "not valid base64", id="only padding"),
        pytest.param(base64.b64encode(b"x" * 65).decode(), "65 bytes", id="65 bytes"),
        pytest.param(base64.b64encode(b"x" * 1000).decode(), "1000 bytes", id="1000 bytes"),
    ],
)
def test_decode_block_id_rejects(block_id: str | None, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        azblob.decode_block_id(block_id)


def test_block_part_name_is_hex_and_path_safe() -> None:
    raw = azblob.decode_block_id(go_block_id(1))
    name = azblob.block_part_name(raw)
    assert name == "b" + raw.hex()
    assert set(name) <= set("b0123456789abcdef")
    assert len(name) == 129  # within LocalStore's 200-character name limit


def test_block_part_names_are_distinct_per_id() -> None:
    names = {azblob.block_part_name(azblob.decode_block_id(js_block_id(i))) for i in range(100)}
    assert len(names) == 100


# -- block lists ------------------------------------------------------------------------------------


def test_captured_block_list_keeps_order() -> None:
    raw = (TRACES / "v2-put-block-list.xml").read_bytes()
    assert raw.startswith(b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>')
    ids = azblob.parse_block_list(raw)
    assert [i[-12:] for i in ids] == [b"%012d" % n for n in range(4)]


@pytest.mark.parametrize(
    "order",
    [[0, 1, 2], [2, 0, 1], [5, 3, 9, 1, 0], list(range(40, -1, -1))],
)
def test_block_list_order_is_list_order(order: list[int]) -> None:
    body = azblob.block_list_xml([js_block_id(i) for i in order])
    ids = azblob.parse_block_list(body)
    assert ids == [f"9954bd61-01d0-4417-b719-74c517d9591f{i:012d}".encode() for i in order]


def test_block_list_accepts_latest_uncommitted_and_committed() -> None:
    a, b, c = js_block_id(0), js_block_id(1), js_block_id(2)
    body = (
        f"<?xml version='1.0' encoding='utf-8'?>\n<BlockList>\n  <Uncommitted>{a}</Uncommitted>\n"
        f"  <Committed>{b}</Committed>\n  <Latest> {c} </Latest>\n</BlockList>\n"
    ).encode()
    assert azblob.parse_block_list(body) == [azblob.decode_block_id(x) for x in (a, b, c)]


def test_block_list_of_go_ids() -> None:
    ids = [go_block_id(i) for i in range(3)]
    parsed = azblob.parse_block_list(azblob.block_list_xml(ids))
    assert [len(p) for p in parsed] == [64, 64, 64]
    assert [p[16:20] for p in parsed] == [i.to_bytes(4, "big") for i in range(3)]


def test_block_list_may_repeat_a_block() -> None:
    a, b = js_block_id(0), js_block_id(1)
    parsed = azblob.parse_block_list(azblob.block_list_xml([a, b, a]))
    assert parsed[0] == parsed[2] != parsed[1]


def test_empty_block_list() -> None:
    assert azblob.parse_block_list(b"<BlockList></BlockList>") == []
    assert azblob.parse_block_list(b"<BlockList/>") == []


def test_block_list_xml_escapes() -> None:
    body = azblob.block_list_xml(["a<b&c"])
    assert b"<Latest>a&lt;b&amp;c</Latest>" in body


BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE BlockList [
  <!ENTITY a "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA">
  <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
  <!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
  <!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
  <!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
  <!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
]>
<BlockList><Latest>&f;</Latest></BlockList>"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE BlockList [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>
<BlockList><Latest>&xxe;</Latest></BlockList>"""

EXTERNAL_PARAMETER_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE BlockList [<!ENTITY % dtd SYSTEM "http://127.0.0.1:9/evil.dtd"> %dtd;]>
<BlockList><Latest>QUJD</Latest></BlockList>"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE BlockList SYSTEM "http://127.0.0.1:9/evil.dtd">
<BlockList><Latest>QUJD</Latest></BlockList>"""


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(BOMB, "XML", id="entity expansion bomb"),
        pytest.param(EXTERNAL_ENTITY, "XML", id="external entity"),
        pytest.param(EXTERNAL_PARAMETER_ENTITY, "XML", id="external parameter entity"),
        pytest.param(EXTERNAL_DTD, "XML", id="external DTD"),
        pytest.param(b"", "XML", id="empty body"),
        pytest.param(b"not xml", "XML", id="not XML"),
        pytest.param(b"<BlockList><Latest>QUJD</Latest>", "XML", id="unclosed"),
        pytest.param(b"<Blocks><Latest>QUJD</Latest></Blocks>", "root element", id="wrong root"),
        pytest.param(
            b'<BlockList xmlns="urn:x"><Latest>QUJD</Latest></BlockList>',
            "root element",
            id="namespaced root",
        ),
        pytest.param(
            b"<BlockList><Block>QUJD</Block></BlockList>", "unexpected element", id="bad child"
        ),
        pytest.param(b"<BlockList><Latest></Latest></BlockList>", "blockid", id="empty id"),
        pytest.param(b"<BlockList><Latest>!!</Latest></BlockList>", "base64", id="bad id"),
        pytest.param(
            azblob.block_list_xml([js_block_id(0), go_block_id(1)]),
            "same length",
            id="unequal id lengths",
        ),
        pytest.param(
            azblob.block_list_xml(["QUJD", "QUJDRA=="]), "same length", id="3 and 4 bytes"
        ),
    ],
)
def test_block_list_rejects(body: bytes, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        azblob.parse_block_list(body)


def test_block_list_rejects_an_oversized_body() -> None:
    body = b"<BlockList>" + b" " * azblob.MAX_BLOCK_LIST_BYTES + b"</BlockList>"
    with pytest.raises(RemoteProtocolError, match="too large"):
        azblob.parse_block_list(body)


def test_block_list_block_count_limit() -> None:
    at_limit = azblob.block_list_xml(["QUJD"] * azblob.MAX_BLOCKS)
    assert len(azblob.parse_block_list(at_limit)) == azblob.MAX_BLOCKS
    with pytest.raises(RemoteProtocolError, match="more than 50000 blocks"):
        azblob.parse_block_list(azblob.block_list_xml(["QUJD"] * (azblob.MAX_BLOCKS + 1)))


# -- ranges -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size", "expected"),
    [
        pytest.param(None, 10, None, id="no header"),
        pytest.param("", 10, None, id="empty header"),
        pytest.param("   ", 10, None, id="blank header"),
        pytest.param("bytes=0-9", 10, (0, 9), id="whole blob"),
        pytest.param("bytes=0-0", 10, (0, 0), id="first byte"),
        pytest.param("bytes=9-9", 10, (9, 9), id="last byte"),
        pytest.param("bytes=2-5", 10, (2, 5), id="a-b"),
        pytest.param("bytes=2-", 10, (2, 9), id="open end"),
        pytest.param("bytes=0-", 10, (0, 9), id="open from zero"),
        pytest.param("bytes=-3", 10, (7, 9), id="suffix"),
        pytest.param("bytes=-10", 10, (0, 9), id="suffix of the whole blob"),
        pytest.param("bytes=-500", 10, (0, 9), id="suffix longer than the blob"),
        pytest.param("bytes=2-100", 10, (2, 9), id="end clamped"),
        pytest.param("bytes=0-9999999999999999999", 10, (0, 9), id="huge end clamped"),
        pytest.param(" bytes=2-5 ", 10, (2, 5), id="surrounding whitespace"),
        pytest.param("bytes=0-4194303", 203078772, (0, 4194303), id="SDK first chunk"),
    ],
)
def test_parse_range(value: str | None, size: int, expected: tuple[int, int] | None) -> None:
    assert azblob.parse_range(value, size) == expected


@pytest.mark.parametrize("name", ["v1_ranges", "v2_x_ms_ranges"])
def test_captured_ranges_cover_the_blob(name: str) -> None:
    captured = headers()[name]
    size = captured["blob_size"]
    parsed = sorted(azblob.parse_range(v, size) or (-1, -1) for v in captured["values"])
    assert parsed[0][0] == 0
    for (_, end), (start, _) in itertools.pairwise(parsed):
        assert start == end + 1
    assert parsed[-1][1] == size - 1


@pytest.mark.parametrize(
    ("value", "size"),
    [
        pytest.param("bytes=10-", 10, id="start at size"),
        pytest.param("bytes=10-20", 10, id="start at size, bounded"),
        pytest.param("bytes=11-12", 10, id="start beyond size"),
        pytest.param("bytes=0-", 0, id="empty blob, open"),
        pytest.param("bytes=0-0", 0, id="empty blob, first byte"),
        pytest.param("bytes=-5", 0, id="empty blob, suffix"),
        pytest.param("bytes=-0", 10, id="zero-length suffix"),
    ],
)
def test_parse_range_not_satisfiable(value: str, size: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as info:
        azblob.parse_range(value, size)
    assert info.value.size == size
    assert info.value.status == 416


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("bytes=-", id="no numbers"),
        pytest.param("bytes=5-2", id="end before start"),
        pytest.param("bytes=abc", id="garbage"),
        pytest.param("bytes 0-5", id="content-range syntax"),
        pytest.param("0-5", id="no unit"),
        pytest.param("items=0-5", id="other unit"),
        pytest.param("bytes=0-1,3-4", id="multi-range"),
        pytest.param("bytes=0-1, 3-4", id="multi-range with space"),
        pytest.param("bytes=-1-2", id="negative start"),
        pytest.param("bytes= 0-5", id="inner space"),
        pytest.param("bytes=0x1-5", id="hex"),
        pytest.param("bytes=1.5-3", id="decimal"),
    ],
)
def test_parse_range_malformed(value: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        azblob.parse_range(value, 10)
    assert not isinstance(info.value, RangeNotSatisfiable)


# -- errors --------------------------------------------------------------------------------------------


def test_error_xml_shape_and_escaping() -> None:
    body = azblob.error_xml("InvalidRange", "bytes <10> & more")
    assert body == (
        b'<?xml version="1.0" encoding="utf-8"?><Error><Code>InvalidRange</Code>'
        b"<Message>bytes &lt;10&gt; &amp; more</Message></Error>"
    )


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "BlobNotFound"),
        (409, "BlobAlreadyExists"),
        (416, "InvalidRange"),
        (413, "RequestBodyTooLarge"),
    ],
)
def test_error_codes(status: int, code: str) -> None:
    assert azblob.ERROR_CODES[status] == code


def test_request_ids_are_random_version_4_guids() -> None:
    ids = [azblob.new_request_id() for _ in range(1000)]
    assert len(set(ids)) == len(ids)
    for value in ids[:50]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value  # the canonical 8-4-4-4-12 form Azure SDKs parse
        assert (parsed.version, parsed.variant) == (4, uuid.RFC_4122)
