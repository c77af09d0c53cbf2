"""ghacache.client: a fast client for GitHub Actions cache services (v1 REST and v2 Twirp).

Async core on aiohttp (``CacheClient``) with a blocking facade (``SyncCacheClient``). Works
against GitHub's service, ghacache's server, or anything speaking the same protocols.
``ghacache.client.management`` holds the separate GitHub-shaped management API client.

    async with CacheClient(ClientConfig.from_env(os.environ)) as client:
        await client.save("deps-v1", version, "deps.tzst")
        entry = await client.lookup(["deps-v1", "deps-"], version)
"""

from ghacache.client._client import CacheClient
from ghacache.client._config import (
    DEFAULT_BLOCK_BYTES,
    DEFAULT_CONCURRENCY,
    DEFAULT_SINGLE_PUT_BYTES,
    DEFAULT_TIMEOUT_S,
    ClientConfig,
    RetrySettings,
)
from ghacache.client._model import CacheEntry
from ghacache.client._reader import EntryReader
from ghacache.client._source import ProgressFn, Source
from ghacache.client._sync import SyncCacheClient, SyncEntryReader
from ghacache.client._token import TokenInfo, decode_token

__all__ = [
    "DEFAULT_BLOCK_BYTES",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_SINGLE_PUT_BYTES",
    "DEFAULT_TIMEOUT_S",
    "CacheClient",
    "CacheEntry",
    "ClientConfig",
    "EntryReader",
    "ProgressFn",
    "RetrySettings",
    "Source",
    "SyncCacheClient",
    "SyncEntryReader",
    "TokenInfo",
    "decode_token",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and isinstance(_obj, type):
        _obj.__module__ = "ghacache.client"
del _name, _obj
