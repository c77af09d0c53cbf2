"""The Azure Block Blob subset that signed cache URLs serve.

Put Blob, Put Block (``comp=block&blockid=``), Put Block List (``comp=blocklist``), Get Blob
with ``Range``/``x-ms-range``, and Get Blob Properties (HEAD). Block ids are base64 strings of
at most 64 bytes: the JS SDK sends a 48-character ASCII id, the Go SDK a 64-byte binary one.
"""

from __future__ import annotations

import base64
import binascii
import random
import re
import uuid
from xml.sax.saxutils import escape

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

from ghacache.errors import RangeNotSatisfiable, RemoteProtocolError

MAX_BLOCK_ID_BYTES = 64
MAX_BLOCKS = 50_000
MAX_BLOCK_LIST_BYTES = 8 * 1024 * 1024
API_VERSION = "2025-01-05"

# ASCII digits only: \d would also take other scripts' digits, which int() reads.
_RANGE = re.compile(r"bytes=([0-9]{0,19})-([0-9]{0,19})")


REQUEST_ID = "x-ms-request-id"


def new_request_id() -> str:
    """A random request id in the GUID form Azure uses (BuildKit's SDK requires one).

    An id, not a secret: Python's generator saves ``uuid4``'s system call per request.
    """
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def decode_block_id(block_id: str | None) -> bytes:
    """Decode and check a ``blockid`` query value.

    Raises:
        RemoteProtocolError: missing, not base64, empty, or over 64 bytes decoded.
    """
    if not block_id:
        raise RemoteProtocolError("Put Block needs a 'blockid' query parameter")
    try:
        raw = base64.b64decode(block_id, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RemoteProtocolError(f"blockid {block_id[:80]!r} is not valid base64") from exc
    if not raw or len(raw) > MAX_BLOCK_ID_BYTES:
        raise RemoteProtocolError(
            f"blockid decodes to {len(raw)} bytes; it must be 1 to {MAX_BLOCK_ID_BYTES}"
        )
    return raw


def block_part_name(raw_id: bytes) -> str:
    """The storage part name of a block: its decoded id in hex (safe in any path)."""
    return "b" + raw_id.hex()


def parse_block_list(body: bytes) -> list[bytes]:
    """Parse a Put Block List body into decoded block ids, in list order.

    ``Latest``, ``Uncommitted`` and ``Committed`` elements are all accepted: a cache blob is
    written once, so every listed block is one staged by this upload.

    Raises:
        RemoteProtocolError: not XML, an entity/DTD trick, not a BlockList, too many blocks,
            a bad block id, or ids of unequal length (Azure requires equal lengths).
    """
    if len(body) > MAX_BLOCK_LIST_BYTES:
        raise RemoteProtocolError("block list body is too large")
    try:
        # A Put Block List body never has a DTD; refuse any, not only entity declarations.
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (SafeET.ParseError, DefusedXmlException, ValueError, LookupError) as exc:
        # LookupError: an XML declaration naming an encoding Python does not know.
        raise RemoteProtocolError(f"block list is not acceptable XML: {exc}") from exc
    if root.tag != "BlockList":
        raise RemoteProtocolError(f"block list root element is {root.tag!r}, not 'BlockList'")
    ids: list[bytes] = []
    for child in root:
        if child.tag not in ("Latest", "Uncommitted", "Committed"):
            raise RemoteProtocolError(f"unexpected element {child.tag!r} in block list")
        ids.append(decode_block_id((child.text or "").strip()))
        if len(ids) > MAX_BLOCKS:
            raise RemoteProtocolError(f"block list has more than {MAX_BLOCKS} blocks")
    if len({len(i) for i in ids}) > 1:
        raise RemoteProtocolError("all block ids of a blob must have the same length")
    return ids


def block_list_xml(block_ids: list[str]) -> bytes:
    """Encode a Put Block List body (for clients and tests)."""
    inner = "".join(f"<Latest>{escape(b)}</Latest>" for b in block_ids)
    return f'<?xml version="1.0" encoding="utf-8"?><BlockList>{inner}</BlockList>'.encode()


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=`` range against a blob of ``size`` bytes.

    Returns:
        ``(start, end_inclusive)``, or None when no range was asked for.

    Raises:
        RemoteProtocolError: malformed or multi-range header.
        RangeNotSatisfiable: the range lies outside the blob.
    """
    if value is None or not value.strip():
        return None
    m = _RANGE.fullmatch(value.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise RemoteProtocolError(f"unsupported range {value!r}; expected bytes=a-b")
    first, last = m.group(1), m.group(2)
    if not first:  # suffix range: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise RangeNotSatisfiable(f"range {value!r} selects no bytes", size=size)
        return max(0, size - n), size - 1
    start = int(first)
    if last and int(last) < start:
        raise RemoteProtocolError(f"range {value!r} ends before it starts")
    if start >= size:
        raise RangeNotSatisfiable(f"range {value!r} starts at or beyond {size} bytes", size=size)
    end = int(last) if last else size - 1
    return start, min(end, size - 1)


def error_xml(code: str, message: str) -> bytes:
    """An Azure Storage error body (the SDKs parse Code and Message)."""
    return (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
    ).encode()


# Azure's error codes by HTTP status, for the x-ms-error-code header and XML body.
# Azure never answers 507 and has no code for a full store; the SDKs take any code string
# and decide retries by status alone, so 507 carries the status's own name. (Azure's
# InsufficientAccountPermissions is a 403 about permissions: it would point at credentials.)
ERROR_CODES: dict[int, str] = {
    400: "InvalidInput",
    401: "NoAuthenticationInformation",
    403: "AuthenticationFailed",
    404: "BlobNotFound",
    405: "UnsupportedHttpVerb",
    408: "OperationTimedOut",  # the body stopped arriving (--body-read-timeout)
    409: "BlobAlreadyExists",
    412: "ConditionNotMet",
    413: "RequestBodyTooLarge",
    416: "InvalidRange",
    429: "ServerBusy",
    500: "InternalError",
    503: "ServerBusy",
    507: "InsufficientStorage",
}
