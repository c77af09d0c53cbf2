"""Blob bytes: the ``BlobStore`` protocol and its backends (local filesystem by default)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from ghacache.storage.base import DIRECT_PART, BlobInfo, BlobStore
from ghacache.storage.local import LocalStore

__all__ = ["DIRECT_PART", "BlobInfo", "BlobStore", "LocalStore", "open_store"]


OBJECT_STORE_SCHEMES = ("s3", "az", "azure", "gs")


def open_store(url: str, *, fsync: bool = True) -> BlobStore:
    """Open a store from a URL: ``file:///path`` or a plain path, or an object store
    (``s3://``, ``az://``, ``azure://``, ``gs://``; options in ``storage.objectstore``).

    ``fsync`` applies to local stores only: object stores are durable once a write returns.

    Raises:
        ValueError: an unknown scheme, or a bad object-store URL or option.
    """
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return LocalStore(Path(parts.path if parts.scheme else url), fsync=fsync)
    if parts.scheme in OBJECT_STORE_SCHEMES:
        # Imported here: obstore loads a native library that file:// stores never need.
        from ghacache.storage.objectstore import open_object_store

        return open_object_store(url)
    raise ValueError(
        f"unsupported storage URL scheme {parts.scheme!r} (use file://, s3://, az:// or gs://)"
    )
