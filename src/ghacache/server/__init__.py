"""The cache server: aiohttp routes over the cache service, index and blob store."""
