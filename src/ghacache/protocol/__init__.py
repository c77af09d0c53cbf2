"""Sans-IO protocol core: wire models, keys, scopes and signed URLs.

No sockets, files, clocks or environment: callers pass bytes, strings and ``now`` in, and get
values or ``ghacache.errors`` exceptions out.
"""
