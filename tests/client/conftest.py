"""Client fixtures: ``CacheClient`` pointed at the real in-process server, per protocol."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import pytest

from ghacache.client import CacheClient, ClientConfig, RetrySettings
from tests.conftest import ServerHandle

# BuildKit's constant version (sha256("|go-actionscache-1.0")).
VERSION = "693bb7016429d80366022f036f84856888c9f13e00145f5f6f4dce303a38d6f2"
MiB = 1024 * 1024

ProtocolName = Literal["v1", "v2"]
MakeClient = Callable[..., CacheClient]


def config_for(url: str, token: str, protocol: ProtocolName, **settings: Any) -> ClientConfig:
    """A config for ``protocol`` at ``url``; v2 via ``url_v2``, v1 via ``url`` (as runners set them)."""
    if protocol == "v2":
        return ClientConfig(token=token, url_v2=url, **settings)
    return ClientConfig(token=token, url=url, protocol="v1", **settings)


FAST_RETRY = RetrySettings(timeout_s=20, base_delay_s=0.05, max_delay_s=0.5)


@pytest.fixture(params=["v1", "v2"])
def protocol(request: pytest.FixtureRequest) -> ProtocolName:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def make_client(server: ServerHandle) -> AsyncIterator[MakeClient]:
    """Build clients for ``server``; all are closed after the test."""
    made: list[CacheClient] = []

    def make(
        protocol: ProtocolName,
        *,
        token: str | None = None,
        url: str | None = None,
        **settings: Any,
    ) -> CacheClient:
        settings.setdefault("retry", FAST_RETRY)
        client = CacheClient(
            config_for(url or server.url, token or server.token(), protocol, **settings)
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()
