"""Sans-IO BuildKit cache format: the cacheconfig.v0 model, BuildKit's key names, and merge
and gc as pure functions over indexes. Shared by the server and the BuildKit backend."""
