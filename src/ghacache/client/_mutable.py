"""The ``#N`` protocol for a mutable value on an immutable cache (BuildKit's index).

Generations are separate entries ``base#1``, ``base#2`` …; a prefix lookup of ``base#``
returns the newest. A writer reads the newest, computes the next value, and reserves the next
number; the reservation is the lock. If another writer holds that number the writer waits and
starts over (fresh value, fresh number); once ``max_wait_s`` is spent, it skips numbers that
stay taken, since a writer that crashed after reserving never releases its number.

Unlike go-actions-cache (buildkit-gha-backend.md §4.3), a failed upload or commit is raised:
nothing is reported as saved unless the new generation is visible.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeAlias

from ghacache.errors import EntryExists, InvalidResponse

if TYPE_CHECKING:
    from ghacache.client._client import CacheClient
    from ghacache.client._model import CacheEntry

log = logging.getLogger("ghacache.client")

MutateFn: TypeAlias = Callable[[bytes | None], bytes | Awaitable[bytes]]
"""Maps the previous generation's bytes (None if there is none) to the next one's."""


def generation(key: str, prefix: str) -> int:
    """The ``N`` of ``<prefix><N>``.

    Raises:
        InvalidResponse: the key carries no decimal number after the ``#``.
    """
    suffix = key[len(prefix) :]
    if not key.startswith(prefix) or not suffix.isdecimal():
        raise InvalidResponse(
            f"mutable key {key!r} has no generation number after {prefix!r}", status=200
        )
    return int(suffix)


async def _compute(client: CacheClient, fn: MutateFn, old: CacheEntry | None) -> bytes:
    previous = None
    if old is not None:
        async with await client.open(old) as reader:
            previous = await reader.read_all()
    value = fn(previous)
    if inspect.isawaitable(value):
        value = await value
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"save_mutable's function must return bytes, not {type(value).__name__}")
    return bytes(value)


async def save_mutable(
    client: CacheClient,
    base_key: str,
    version: str,
    fn: MutateFn,
    *,
    max_wait_s: float,
    retry_interval_s: float,
) -> str:
    """See ``CacheClient.save_mutable``."""
    prefix = base_key + "#"
    waited = 0.0
    while True:
        old = await client.lookup(prefix, version)
        value = await _compute(client, fn, old)
        if old is not None:
            latest = await client.lookup(prefix, version)
            if latest is None or latest.key != old.key:
                log.info("%s moved on while computing; starting over", prefix)
                continue
        number = generation(old.key, prefix) if old is not None else 0
        while True:
            number += 1
            key = f"{prefix}{number}"
            try:
                await client.save(key, version, value)
                return key
            except EntryExists:
                if waited < max_wait_s:
                    break  # another writer holds it: wait, then start over with its result
                log.warning("%s stayed reserved for %.0f s; skipping it", key, waited)
        log.info("%s is taken; retrying in %.1f s", key, retry_interval_s)
        await asyncio.sleep(retry_interval_s)
        waited += retry_interval_s
