"""Blob bytes: the ``BlobStore`` protocol and its backends (local filesystem by default)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ghacache.storage.base import BlobInfo, BlobStore
from ghacache.storage.local import LocalStore

__all__ = ["BlobInfo", "BlobStore", "LocalStore", "open_store"]


def open_store(url: str, *, fsync: bool = True) -> BlobStore:
    """Open a store from a URL: ``file:///path`` or a plain path.

    Raises:
        ValueError: an unknown scheme.
    """
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return LocalStore(Path(parts.path if parts.scheme else url), fsync=fsync)
    raise ValueError(f"unsupported storage URL scheme {parts.scheme!r} (use file://)")
