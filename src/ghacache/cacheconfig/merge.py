"""Merge and garbage-collect cacheconfig documents, as pure functions.

What BuildKit left undone (moby/buildkit PR #1974's TODO): an export overwrites the scope's
index, and nothing drops records whose blobs the cache service evicted. Here:

- ``merge`` unions documents by record digest. A layer is identified by its whole stack
  (blob digests from the base up), so the same blob under different parents stays distinct;
  a record's results and input alternatives are unioned. Output is canonical: layers sorted
  by stack (parents before children), records by digest, alternatives by link, so merging is
  idempotent and independent of argument order.
- ``gc`` drops results whose layer stack has a missing blob, then keeps only records that
  still have results plus every record they depend on through inputs, so no reference ever
  dangles.
- ``bound`` drops the oldest results until the document fits a size limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from ghacache.cacheconfig.model import (
    CacheConfig,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    ChainedResult,
    LayerAnnotations,
    dumps,
)

Stack = tuple[str, ...]  # blob digests, base first


@dataclass
class _Record:
    results: dict[Stack, str]  # stack -> newest createdAt
    chains: dict[tuple[Stack, ...], str]
    inputs: list[set[tuple[str, str]]]  # per input: {(selector, linked record digest)}


@dataclass
class _Graph:
    """A document with indexes replaced by identities (stacks and digests)."""

    annotations: dict[Stack, LayerAnnotations | None]
    records: dict[str, _Record]


def _newer(a: str, b: str) -> str:
    # Ties (one instant written two ways, or two unparseable times) go to the greater string,
    # so the choice does not depend on which document came first.
    return max(a, b, key=lambda t: (timestamp(t), t))


def _preferred(a: LayerAnnotations | None, b: LayerAnnotations | None) -> LayerAnnotations | None:
    """The annotations to keep for one stack: any over none, then the newest; ties broken
    on every field so that merging is independent of argument order."""
    if a is None or b is None:
        return a if b is None else b
    return max(
        a, b, key=lambda x: (timestamp(x.created_at), x.created_at, x.media_type, x.diff_id, x.size)
    )


def _stacks(config: CacheConfig) -> list[Stack]:
    """Every layer's stack, each built from its parent's (tuple copies, not Python loops)."""
    layers = config.layers
    stacks: list[Stack | None] = [None] * len(layers)
    for i in range(len(layers)):
        path = []
        j = i
        while j != -1 and stacks[j] is None:  # validated: no loops
            path.append(j)
            j = layers[j].parent
        below: Stack = () if j == -1 else stacks[j]  # type: ignore[assignment]
        for k in reversed(path):
            below = stacks[k] = (*below, layers[k].blob)
    return stacks  # type: ignore[return-value]


def _absorb(graph: _Graph, config: CacheConfig) -> None:
    stacks = _stacks(config)
    for i, stack in enumerate(stacks):
        ann = config.layers[i].annotations
        graph.annotations[stack] = _preferred(graph.annotations.get(stack), ann)
        # (A parent's stack is its own layer's, absorbed in this loop too: a valid document
        # has no dangling parents, so prefixes need no entries of their own.)
    for rec in config.records:
        target = graph.records.setdefault(rec.digest, _Record({}, {}, []))
        for res in rec.results:
            stack = stacks[res.layer]
            old = target.results.get(stack)
            target.results[stack] = res.created_at if old is None else _newer(res.created_at, old)
        for chain in rec.chains:
            key = tuple(stacks[x] for x in chain.layers)
            old = target.chains.get(key)
            target.chains[key] = chain.created_at if old is None else _newer(chain.created_at, old)
        while len(target.inputs) < len(rec.inputs):
            target.inputs.append(set())
        for k, alternatives in enumerate(rec.inputs):
            for alt in alternatives:
                target.inputs[k].add((alt.selector, config.records[alt.link].digest))


def _build(graph: _Graph) -> CacheConfig:
    used: set[Stack] = set()
    for rec in graph.records.values():
        used.update(rec.results)
        for chain in rec.chains:
            used.update(chain)
    needed: set[Stack] = set()
    for stack in used:
        # Longest prefix first: once one is known, all shorter ones are too. This keeps the
        # work linear in the layers instead of quadratic in each stack's depth.
        for d in range(len(stack), 0, -1):
            prefix = stack[:d]
            if prefix in needed:
                break
            needed.add(prefix)
    order = sorted(needed)  # a prefix sorts before its extensions: parents come first
    layer_index = {stack: i for i, stack in enumerate(order)}
    layers = tuple(
        CacheLayer(
            blob=stack[-1],
            parent=layer_index[stack[:-1]] if len(stack) > 1 else -1,
            annotations=graph.annotations.get(stack),
        )
        for stack in order
    )
    digests = sorted(graph.records)
    record_index = {d: i for i, d in enumerate(digests)}
    records = []
    for digest in digests:
        rec = graph.records[digest]
        results = sorted(
            (CacheResult(layer=layer_index[s], created_at=t) for s, t in rec.results.items()),
            key=lambda r: (-timestamp(r.created_at), r.layer),
        )
        chains = sorted(
            (
                ChainedResult(layers=tuple(layer_index[s] for s in key), created_at=t)
                for key, t in rec.chains.items()
            ),
            key=lambda c: (c.layers, c.created_at),
        )
        inputs = tuple(
            tuple(
                sorted(
                    (
                        CacheInput(link=record_index[d], selector=sel)
                        for sel, d in alts
                        if d in record_index
                    ),
                    key=lambda a: (a.link, a.selector),
                )
            )
            for alts in rec.inputs
        )
        records.append(
            CacheRecord(digest=digest, results=tuple(results), chains=tuple(chains), inputs=inputs)
        )
    return CacheConfig(layers=layers, records=tuple(records)).validate()


def _graph(configs: Iterable[CacheConfig]) -> _Graph:
    graph = _Graph({}, {})
    for config in configs:
        _absorb(graph, config)
    return graph


def merge(*configs: CacheConfig) -> CacheConfig:
    """The union of several documents (canonical, deduplicated, no dangling references).

    Every record of every input is kept, including records without results.
    """
    return _build(_graph(configs))


def normalize(config: CacheConfig) -> CacheConfig:
    """The canonical form of one document."""
    return merge(config)


@dataclass(frozen=True, kw_only=True)
class GcReport:
    missing_blobs: frozenset[str]
    dropped_results: int
    dropped_records: int


def _prune(graph: _Graph) -> CacheConfig:
    """Keep records with results and everything they depend on; drop the rest."""
    keep: set[str] = set()
    todo = [d for d, r in graph.records.items() if r.results or r.chains]
    while todo:
        digest = todo.pop()
        if digest in keep or digest not in graph.records:
            continue
        keep.add(digest)
        for alts in graph.records[digest].inputs:
            todo.extend(d for _, d in alts)
    # A record whose input lost every alternative would be invalid; it cannot happen here
    # because every linked record of a kept record is kept, but filter defensively.
    graph.records = {d: r for d, r in graph.records.items() if d in keep}
    for rec in graph.records.values():
        rec.inputs = [{a for a in alts if a[1] in keep} for alts in rec.inputs]
    return _build(graph)


def gc(config: CacheConfig, exists: Callable[[str], bool]) -> tuple[CacheConfig, GcReport]:
    """Drop everything that depends on a blob for which ``exists(digest)`` is False."""
    missing = frozenset(b for b in config.blobs() if not exists(b))
    graph = _graph([config])
    dropped_results = 0
    for rec in graph.records.values():
        before = len(rec.results) + len(rec.chains)
        rec.results = {s: t for s, t in rec.results.items() if not missing.intersection(s)}
        rec.chains = {
            k: t for k, t in rec.chains.items() if not any(missing.intersection(s) for s in k)
        }
        dropped_results += before - len(rec.results) - len(rec.chains)
    before_records = len(graph.records)
    out = _prune(graph)
    return out, GcReport(
        missing_blobs=missing,
        dropped_results=dropped_results,
        dropped_records=before_records - len(out.records),
    )


def bound(
    config: CacheConfig, *, max_bytes: int | None = None, min_created_at: str | None = None
) -> CacheConfig:
    """Drop results older than ``min_created_at`` and then the oldest results until the
    serialised document is at most ``max_bytes``."""
    config = normalize(config)
    if min_created_at is not None:
        cutoff = timestamp(min_created_at)
        config = _drop_results(config, lambda t: timestamp(t) < cutoff)
    if max_bytes is None or len(dumps(config)) <= max_bytes:
        return config
    times = sorted({r.created_at for rec in config.records for r in rec.results}, key=timestamp)
    lo, hi = 0, len(times)  # drop the `mid` oldest timestamps; find the fewest that fit
    best = _drop_results(config, lambda t: True)
    while lo < hi:
        mid = (lo + hi) // 2
        cut = set(times[:mid])
        candidate = _drop_results(config, lambda t, cut=cut: t in cut)  # type: ignore[misc]
        if len(dumps(candidate)) <= max_bytes:
            best, hi = candidate, mid
        else:
            lo = mid + 1
    return best


def _drop_results(config: CacheConfig, doomed: Callable[[str], bool]) -> CacheConfig:
    graph = _graph([config])
    for rec in graph.records.values():
        rec.results = {s: t for s, t in rec.results.items() if not doomed(t)}
        rec.chains = {k: t for k, t in rec.chains.items() if not doomed(t)}
    return _prune(graph)


_FRACTION = re.compile(r"(\.\d{1,6})\d*")


def timestamp(value: str) -> float:
    """Seconds since the epoch of a Go RFC 3339 time (nanoseconds are truncated)."""
    text = _FRACTION.sub(lambda m: m.group(1), value.replace("Z", "+00:00"), count=1)
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return datetime(1, 1, 1, tzinfo=UTC).timestamp()
