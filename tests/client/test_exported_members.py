"""The public surface of ghacache.client is exactly its ``__all__`` (httpx's test)."""

from __future__ import annotations

import inspect

import ghacache.client


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(ghacache.client).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert sorted(ghacache.client.__all__) == sorted(public)


def test_public_classes_show_the_public_module() -> None:
    for name in ghacache.client.__all__:
        value = getattr(ghacache.client, name)
        if isinstance(value, type):
            assert value.__module__ == "ghacache.client", name
