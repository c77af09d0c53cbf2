"""An entry evicted or deleted after a lookup found it raises ``RemoteEntryNotFound`` on read.

Under load this is routine (quota eviction runs after every commit): the soak found readers
getting a bare ``ServerError(404)`` here instead of the documented error.
"""

from __future__ import annotations

import pytest

from ghacache.client.management import ManagementClient
from ghacache.errors import RemoteEntryNotFound
from ghacache.server.auth import mint_admin_token
from tests.client.conftest import VERSION, MakeClient, ProtocolName
from tests.conftest import ServerHandle


async def delete(server: ServerHandle, key: str) -> None:
    admin = mint_admin_token(server.secret, ttl_s=3600, now=server.clock())
    async with ManagementClient(server.url, admin) as mgmt:
        assert len(await mgmt.delete_by_key("octo/repo", key)) == 1


async def test_entry_deleted_between_lookup_and_open(
    server: ServerHandle, make_client: MakeClient, protocol: ProtocolName
) -> None:
    client = make_client(protocol)
    await client.save("gone-soon", VERSION, b"x" * 1000)
    entry = await client.lookup("gone-soon", VERSION)
    assert entry is not None
    await delete(server, "gone-soon")
    with pytest.raises(RemoteEntryNotFound, match="gone-soon"):
        await client.open(entry)


async def test_entry_deleted_between_open_and_read(
    server: ServerHandle, make_client: MakeClient, protocol: ProtocolName
) -> None:
    client = make_client(protocol)
    await client.save("gone-soon", VERSION, b"y" * 1000)
    entry = await client.lookup("gone-soon", VERSION)
    assert entry is not None
    async with await client.open(entry) as reader:
        assert reader.size == 1000
        await delete(server, "gone-soon")
        with pytest.raises(RemoteEntryNotFound, match="gone-soon"):
            await reader.read_all()
