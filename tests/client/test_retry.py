"""Retry policy and error translation, as pure functions (no server needed)."""

from __future__ import annotations

import time
from email.utils import formatdate

import pytest

from ghacache.client import RetrySettings
from ghacache.client._http import parse_error_body, server_error
from ghacache.client._retry import backoff_s, is_retryable, parse_retry_after, with_retries
from ghacache.errors import (
    DeadlineExceeded,
    EntryExists,
    InvalidResponse,
    RateLimited,
    RemoteEntryExists,
    RemoteRateLimited,
    ServerError,
    TransportError,
)


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (b'{"code":"already_exists","msg":"cache entry exists"}', "cache entry exists", "already_exists"),
        (
            '\ufeff{"$id":"1","message":"Cache already exists.","typeKey":"ArtifactCacheAlreadyExistsException"}'.encode(),
            "Cache already exists.",
            "ArtifactCacheAlreadyExistsException",
        ),
        (
            b'<?xml version="1.0"?><Error><Code>AuthenticationFailed</Code><Message>Signature &amp; time</Message></Error>',
            "Signature & time",
            "AuthenticationFailed",
        ),
        (b'{"message":"plain"}', "plain", ""),
        (b'{"code":"internal"}', "internal", "internal"),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>", ""),
        (b"", "(empty body)", ""),
    ],
)  # fmt: skip
def test_error_bodies_of_every_shape(body: bytes, message: str, code: str) -> None:
    detail = parse_error_body(body)
    assert (detail.message, detail.code) == (message, code)


def test_error_classes() -> None:
    exists = server_error(409, b'{"code":"already_exists","msg":"taken"}', {}, what="reserve")
    assert isinstance(exists, RemoteEntryExists) and isinstance(exists, EntryExists)
    assert str(exists) == "reserve: HTTP 409: taken"
    other_409 = server_error(409, b'{"code":"aborted","msg":"conflict"}', {}, what="x")
    assert type(other_409) is ServerError
    limited = server_error(429, b"{}", {"Retry-After": "7"}, what="x")
    assert isinstance(limited, RemoteRateLimited) and isinstance(limited, RateLimited)
    assert limited.retry_after_s == 7 and limited.status == 429
    assert server_error(500, b"oops", {}, what="x").body == "oops"


def test_retry_after_parsing() -> None:
    assert parse_retry_after("12") == 12
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    assert parse_retry_after(formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30, abs=1)
    assert parse_retry_after(formatdate(now - 30, usegmt=True), now=now) == 0


def test_what_is_retried() -> None:
    assert is_retryable(TransportError("reset"))
    assert not is_retryable(DeadlineExceeded("late"))
    assert is_retryable(RemoteRateLimited("x", retry_after_s=0))
    for status in (500, 502, 503, 504):
        assert is_retryable(ServerError("x", status=status))
    for status in (400, 401, 403, 404, 409, 412, 501, 505):
        assert not is_retryable(ServerError("x", status=status))
    assert not is_retryable(InvalidResponse("x", status=502))


def test_backoff_is_capped_and_jittered() -> None:
    settings = RetrySettings(base_delay_s=1, max_delay_s=8)
    assert backoff_s(1, settings, lambda: 0.0) == 0.5
    assert backoff_s(1, settings, lambda: 1.0) == 1.0
    assert backoff_s(3, settings, lambda: 1.0) == 4.0
    assert backoff_s(10, settings, lambda: 0.0) == 4.0  # half of the 8 s cap
    assert backoff_s(10, settings, lambda: 1.0) == 8.0


async def test_with_retries_stops_on_success_or_a_permanent_error() -> None:
    settings = RetrySettings(timeout_s=5, base_delay_s=0.01, max_delay_s=0.02, max_attempts=5)
    failures = [TransportError("a"), ServerError("b", status=503)]

    async def flaky(deadline: object) -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    assert await with_retries(flaky, settings, what="t") == "ok"

    calls = 0

    async def forbidden(deadline: object) -> str:
        nonlocal calls
        calls += 1
        raise ServerError("no", status=403)

    with pytest.raises(ServerError):
        await with_retries(forbidden, settings, what="t")
    assert calls == 1

    async def throttled(deadline: object) -> str:
        raise RemoteRateLimited("slow", retry_after_s=0)

    with pytest.raises(RemoteRateLimited):  # attempts ran out while still throttled
        await with_retries(throttled, settings, what="t")
