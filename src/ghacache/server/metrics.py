"""Prometheus metrics, one registry per app so several servers in one process never collide.

Counters are bumped where things happen: requests and transfers by the access middleware,
lookups by the service, evictions by the maintainer, 429s by the rate limiter. Per-repository
gauges are read from the index at scrape time (one aggregate query), so every replica reports
the shared truth without bookkeeping of its own; BuildKit counters are read from
``BuildkitIndexes`` at scrape time too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ghacache.index import Entry
from ghacache.index.catalog import Catalog
from ghacache.protocol.eviction import EvictionReason

log = logging.getLogger("ghacache.metrics")

LOOKUP_RESULTS = ("exact", "prefix", "miss")
# Request bodies that are entry bytes, and responses that are entry bytes.
UPLOAD_OPERATIONS = frozenset({"put_blob", "put_block", "patch"})
DOWNLOAD_OPERATIONS = frozenset({"get_blob"})
# API calls take milliseconds; transfers of up to gigabytes take minutes.
REQUEST_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TRANSFER_BUCKETS_S = (0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def lookup_result(keys: Sequence[str], entry: Entry | None) -> str:
    """``exact``, ``prefix`` or ``miss``: how a lookup with ``keys`` found ``entry``.

    The key that found an entry is the first one it matches (an earlier match would have
    won), and it was an exact match only if the entry's key equals it.
    """
    if entry is None:
        return "miss"
    for key in keys:
        if entry.key.startswith(key):
            return "exact" if entry.key == key else "prefix"
    return "prefix"


@dataclass(frozen=True, kw_only=True)
class RepoGauge:
    repo: str
    entries: int
    size: int
    quota: int


class _UsageCollector(Collector):
    """Per-repository gauges from the last snapshot taken by ``Metrics.refresh_usage``."""

    def __init__(self) -> None:
        self.snapshot: list[RepoGauge] = []

    def collect(self) -> Iterator[Metric]:
        entries = GaugeMetricFamily(
            "ghacache_repository_entries",
            "Committed entries per repository.",
            labels=["repository"],
        )
        size = GaugeMetricFamily(
            "ghacache_repository_bytes", "Committed bytes per repository.", labels=["repository"]
        )
        quota = GaugeMetricFamily(
            "ghacache_repository_quota_bytes", "Quota of each repository.", labels=["repository"]
        )
        used = GaugeMetricFamily(
            "ghacache_repository_quota_used_ratio",
            "Committed bytes over quota per repository (above 1 until eviction catches up).",
            labels=["repository"],
        )
        for g in self.snapshot:
            entries.add_metric([g.repo], g.entries)
            size.add_metric([g.repo], g.size)
            quota.add_metric([g.repo], g.quota)
            used.add_metric([g.repo], g.size / g.quota if g.quota else 0.0)
        yield from (entries, size, quota, used)


class BuildkitCounts(Protocol):
    """What ``BuildkitIndexes`` counts itself."""

    merges: int
    records_dropped: int


class _BuildkitCollector(Collector):
    """The counters ``BuildkitIndexes`` keeps, read at scrape time."""

    def __init__(self, buildkit: BuildkitCounts) -> None:
        self.buildkit = buildkit

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "ghacache_buildkit_index_merges",
            "BuildKit index generations rewritten as the union with the previous one.",
            value=self.buildkit.merges,
        )
        yield CounterMetricFamily(
            "ghacache_buildkit_records_dropped",
            "BuildKit index records dropped because their blobs were gone (gc).",
            value=self.buildkit.records_dropped,
        )


M = TypeVar("M", Counter, Histogram)


def _child(children: dict[tuple[str, ...], M], metric: M, labels: tuple[str, ...]) -> M:
    """``metric.labels(*labels)``, kept in ``children``: ``labels`` validates and locks on
    every call, which adds up on the request path."""
    child = children.get(labels)
    if child is None:
        child = children[labels] = metric.labels(*labels)
    return child


class Metrics:
    """The registry and every instrument of one app."""

    def __init__(self, *, process: bool = True) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        if process:  # process_* (CPU, memory, open files), as the default registry has
            ProcessCollector(registry=r)
        self.requests = Counter(
            "ghacache_requests",
            "HTTP requests answered, by protocol, operation and status.",
            ["protocol", "operation", "status"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "ghacache_request_duration_seconds",
            "Time from receiving a request to the end of its response.",
            ["protocol", "operation"],
            buckets=REQUEST_BUCKETS_S,
            registry=r,
        )
        self.lookups = Counter(
            "ghacache_lookups", "Cache lookups (restores) by result.", ["result"], registry=r
        )
        self.upload_bytes = Counter(
            "ghacache_upload_bytes",
            "Entry bytes received (Put Blob, Put Block, v1 PATCH bodies).",
            registry=r,
        )
        self.download_bytes = Counter(
            "ghacache_download_bytes", "Entry bytes sent (Get Blob bodies).", registry=r
        )
        self.upload_seconds = Histogram(
            "ghacache_upload_duration_seconds",
            "Duration of successful upload requests (Put Blob, Put Block, v1 PATCH).",
            buckets=TRANSFER_BUCKETS_S,
            registry=r,
        )
        self.download_seconds = Histogram(
            "ghacache_download_duration_seconds",
            "Duration of successful Get Blob requests, until the last byte is sent.",
            buckets=TRANSFER_BUCKETS_S,
            registry=r,
        )
        self.evictions = Counter(
            "ghacache_evictions", "Entries removed, by reason.", ["reason"], registry=r
        )
        self.evicted_bytes = Counter(
            "ghacache_evicted_bytes", "Bytes of entries removed, by reason.", ["reason"], registry=r
        )
        self.rate_limited = Counter(
            "ghacache_rate_limited",
            "Cache-entry creations refused with 429, by repository.",
            ["repository"],
            registry=r,
        )
        self._request_counts: dict[tuple[str, ...], Counter] = {}
        self._request_times: dict[tuple[str, ...], Histogram] = {}
        self._lookup_counts = {result: self.lookups.labels(result) for result in LOOKUP_RESULTS}
        for reason in EvictionReason:
            self.evictions.labels(str(reason))
            self.evicted_bytes.labels(str(reason))
        self._usage = _UsageCollector()
        r.register(self._usage)

    def request(
        self,
        *,
        protocol: str,
        operation: str,
        status: int,
        seconds: float,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        """Count one answered request, and its entry bytes if it was a transfer."""
        _child(self._request_counts, self.requests, (protocol, operation, str(status))).inc()
        _child(self._request_times, self.request_seconds, (protocol, operation)).observe(seconds)
        ok = 200 <= status < 300
        if operation in UPLOAD_OPERATIONS and protocol in ("blob", "v1"):
            self.upload_bytes.inc(bytes_in)
            if ok:
                self.upload_seconds.observe(seconds)
        elif operation in DOWNLOAD_OPERATIONS and protocol == "blob":
            self.download_bytes.inc(bytes_out)
            if ok:
                self.download_seconds.observe(seconds)

    def lookup(self, keys: Sequence[str], entry: Entry | None) -> str:
        """Count one lookup; returns its result (exact, prefix or miss)."""
        result = lookup_result(keys, entry)
        self._lookup_counts[result].inc()
        return result

    def evicted(self, reason: EvictionReason, entries: Sequence[Entry]) -> None:
        if entries:
            self.evictions.labels(str(reason)).inc(len(entries))
            self.evicted_bytes.labels(str(reason)).inc(sum(e.size or 0 for e in entries))

    def limited(self, repo: str) -> None:
        self.rate_limited.labels(repo).inc()

    def watch_buildkit(self, buildkit: BuildkitCounts) -> None:
        """Export the merge and gc counters a ``BuildkitIndexes`` keeps."""
        self.registry.register(_BuildkitCollector(buildkit))

    async def refresh_usage(self, catalog: Catalog, quota_of: Callable[[str], int]) -> None:
        """Read per-repository usage for the gauges (one aggregate query over the index).

        If the query fails the gauges are left out of this scrape rather than shown stale.
        """
        try:
            usages = await catalog.usage()
        except Exception:
            log.warning("reading repository usage for /metrics failed", exc_info=True)
            self._usage.snapshot = []
            return
        self._usage.snapshot = [
            RepoGauge(repo=u.repo, entries=u.count, size=u.size, quota=quota_of(u.repo))
            for u in usages
        ]


METRICS: web.AppKey[Metrics] = web.AppKey("ghacache_metrics", Metrics)
