"""HTTP plumbing shared by every client: one session, retries, and error translation.

aiohttp's exceptions never leave this module: transport failures become ``TransportError``
(or ``DeadlineExceeded``), error statuses become ``ServerError`` subclasses carrying the
server's own words, read from whichever error shape it speaks: Twirp ``{"code","msg"}``, a
v1 VSS body ``{"message","typeKey"}`` (with the BOM GitHub prepends), Azure XML
``<Error><Code/><Message/></Error>``, or plain ``{"message"}``.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator, Container, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from ghacache.client._config import RetrySettings
from ghacache.client._retry import Deadline, ceil_s, deadline_error, parse_retry_after, with_retries
from ghacache.client._source import Buffer, StreamBody
from ghacache.errors import (
    ClientError,
    InvalidResponse,
    RemoteEntryExists,
    RemoteProtocolError,
    RemoteRateLimited,
    ServerError,
    TransportError,
)

# Error bodies are read up to this size (go-actions-cache reads 32 KiB).
MAX_ERROR_BODY_BYTES = 64 * 1024
# Large bodies are handed to the transport in slices this big. Python 3.11's socket transport
# keeps unsent bytes in one bytearray and deletes from its front after every send, so one
# big write costs O(size^2) in memmove: a 256 MiB body went at ~120 MB/s instead of ~500.
SEND_SLICE_BYTES = 256 * 1024
_XML_FIELD = re.compile(r"<(Code|Message)>(.*?)</\1>", re.DOTALL)


@dataclass(frozen=True)
class ErrorDetail:
    """What an error body says: the human message and a machine code, if any."""

    message: str
    code: str = ""


def parse_error_body(body: bytes) -> ErrorDetail:
    """Read the message and code out of any error shape a cache server or Azure sends.

    Returns:
        The message (the raw text, shortened, if no known shape matched) and the code
        (Twirp ``code``, VSS ``typeKey`` or Azure ``<Code>``), possibly empty.
    """
    text = body.decode("utf-8", "replace").lstrip("\ufeff").strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            message = data.get("msg") or data.get("message") or data.get("Message")
            code = data.get("code") or data.get("typeKey") or ""
            if isinstance(message, str) and message:
                return ErrorDetail(message, str(code))
            if code:
                return ErrorDetail(str(code), str(code))
    if text.startswith("<"):
        fields = dict(
            (m.group(1), html.unescape(m.group(2).strip())) for m in _XML_FIELD.finditer(text)
        )
        if fields.get("Message") or fields.get("Code"):
            return ErrorDetail(fields.get("Message") or fields["Code"], fields.get("Code", ""))
    return ErrorDetail(text[:300] or "(empty body)")


def _already_exists(status: int, detail: ErrorDetail) -> bool:
    """BuildKit's test, plus Twirp's and Azure's codes: a taken key, not another 409."""
    code = detail.code.lower()
    return (
        code == "already_exists"
        or "alreadyexists" in code
        or (status == 409 and "already exists" in detail.message.lower())
    )


def server_error(
    status: int, body: bytes, headers: Mapping[str, str], *, what: str, reason: str = ""
) -> ServerError:
    """The ``ServerError`` for an error response; its text starts with ``what``."""
    detail = parse_error_body(body)
    azure_code = headers.get("x-ms-error-code", "")
    if azure_code and not body.strip():  # HEAD answers carry only Azure's header
        detail = ErrorDetail(azure_code, azure_code)
    message = f"{what}: HTTP {status}{' ' + reason if reason else ''}: {detail.message}"
    text = body.decode("utf-8", "replace")
    if status == 429:
        wait = parse_retry_after(headers.get("Retry-After"))
        return RemoteRateLimited(message, status=status, body=text, retry_after_s=ceil_s(wait))
    if _already_exists(status, detail):
        return RemoteEntryExists(message, status=status, body=text)
    return ServerError(message, status=status, body=text)


def transport_error(exc: BaseException, what: str) -> ClientError:
    """The ``TransportError`` for an aiohttp or OS failure."""
    detail = str(exc) or type(exc).__name__
    return TransportError(f"{what}: {type(exc).__name__}: {detail}")


def decode_json(body: bytes, *, what: str, status: int) -> dict[str, Any]:
    """Parse a JSON object response (a UTF-8 BOM is tolerated).

    Raises:
        InvalidResponse: not a JSON object.
    """
    try:
        data = json.loads(body.decode("utf-8-sig"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidResponse(
            f"{what}: response is not JSON: {body[:200]!r}", status=status, body=repr(body[:300])
        ) from exc
    if not isinstance(data, dict):
        raise InvalidResponse(f"{what}: response is not a JSON object", status=status)
    return data


def invalid(exc: RemoteProtocolError, *, what: str, status: int) -> InvalidResponse:
    return InvalidResponse(f"{what}: {exc.message}", status=status)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]


class Http:
    """One aiohttp session plus the retry policy; every request goes through :meth:`call`."""

    def __init__(self, session: aiohttp.ClientSession, retry: RetrySettings, user_agent: str):
        self.session = session
        self.retry = retry
        self.user_agent = user_agent

    def timeout(self, deadline: Deadline, *, streaming: bool = False) -> aiohttp.ClientTimeout:
        """Bound an attempt by the deadline (not a streaming body) and by socket idleness."""
        idle = self.retry.idle_timeout_s
        total = None if streaming else max(deadline.remaining(), 0.001)
        return aiohttp.ClientTimeout(total=total, sock_connect=min(idle, 60.0), sock_read=idle)

    async def call(
        self,
        method: str,
        url: str,
        *,
        what: str,
        ok: Container[int] = (200, 201, 204),
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        data: Buffer | StreamBody | None = None,
        json_body: Any = None,
    ) -> Reply:
        """Send one request, retrying what is retryable, and read the whole answer.

        Raises:
            ServerError: an error status (``RemoteEntryExists`` for a taken key).
            TransportError: the network failed on every attempt (``DeadlineExceeded`` if the
                deadline ended the retries).
        """
        sent = {"User-Agent": self.user_agent, **(headers or {})}
        if json_body is not None:
            data = json.dumps(json_body, separators=(",", ":")).encode()
            sent.setdefault("Content-Type", "application/json")

        if isinstance(data, Buffer) and len(data) > SEND_SLICE_BYTES:
            data = _in_slices(data)
        if isinstance(data, StreamBody):
            sent["Content-Length"] = str(data.length)  # a stream would otherwise go chunked

        async def attempt(deadline: Deadline) -> Reply:
            body = data.open() if isinstance(data, StreamBody) else data
            try:
                async with self.session.request(
                    method, url, params=params, headers=sent, data=body,
                    timeout=self.timeout(deadline),
                ) as resp:  # fmt: skip
                    if resp.status not in ok:
                        error_body = await read_capped(resp)
                        raise server_error(
                            resp.status,
                            error_body,
                            resp.headers,
                            what=what,
                            reason=resp.reason or "",
                        )
                    return Reply(resp.status, await resp.read(), resp.headers)
            except aiohttp.InvalidURL as exc:
                raise ValueError(f"{what}: invalid URL {url!r}") from exc
            except TimeoutError as exc:  # before OSError, of which it is a subclass
                raise deadline_error(what, deadline, exc) from exc
            except (aiohttp.ClientError, OSError) as exc:
                raise transport_error(exc, what) from exc

        return await with_retries(attempt, self.retry, what=what)

    async def call_json(self, method: str, url: str, *, what: str, **kwargs: Any) -> dict[str, Any]:
        """:meth:`call`, then parse a JSON object (an empty body reads as ``{}``)."""
        reply = await self.call(method, url, what=what, **kwargs)
        if not reply.body.strip():
            return {}
        return decode_json(reply.body, what=what, status=reply.status)


def _in_slices(data: Buffer) -> StreamBody:
    view = memoryview(data).cast("B")

    async def slices() -> AsyncIterator[Buffer]:
        for start in range(0, len(view), SEND_SLICE_BYTES):
            yield view[start : start + SEND_SLICE_BYTES]

    return StreamBody(len(view), slices)


async def read_capped(resp: aiohttp.ClientResponse, limit: int = MAX_ERROR_BODY_BYTES) -> bytes:
    """Up to ``limit`` bytes of an (error) body; the rest is left unread."""
    buf = bytearray()
    while len(buf) < limit and (piece := await resp.content.read(limit - len(buf))):
        buf += piece
    return bytes(buf)


def new_session(limit: int) -> aiohttp.ClientSession:
    """A session whose pool fits ``limit`` parallel transfers plus API calls."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(limit, 1) + 4),
        timeout=aiohttp.ClientTimeout(total=None),
    )
