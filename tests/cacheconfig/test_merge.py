"""Merge and gc over real BuildKit indexes."""

from __future__ import annotations

import itertools

from ghacache.cacheconfig.merge import bound, gc, merge, normalize
from ghacache.cacheconfig.model import CacheConfig, dumps, parse
from tests.support.fixtures import index_bytes

A1 = parse(index_bytes("index-build-a-1-f921bd05#1"))
A2 = parse(index_bytes("index-build-a-1-f921bd05#2"))
B1 = parse(index_bytes("index-build-b-1-f921bd05#1"))


def _digests(config: CacheConfig) -> set[str]:
    return {r.digest for r in config.records}


def _result_stacks(config: CacheConfig) -> dict[str, set[tuple[str, ...]]]:
    return {r.digest: {config.chain_of(x.layer) for x in r.results} for r in config.records}


def test_merge_of_two_builds_keeps_every_record_of_both() -> None:
    merged = merge(A1, B1)
    assert _digests(merged) == _digests(A1) | _digests(B1)
    assert len(merged.records) == len(_digests(merged))  # no duplicates
    for source in (A1, B1):
        stacks = _result_stacks(merged)
        for digest, wanted in _result_stacks(source).items():
            assert wanted <= stacks[digest]


def test_merge_of_generations_keeps_both_without_duplicates() -> None:
    merged = merge(A1, A2)
    assert _digests(merged) == _digests(A1) | _digests(A2)
    assert len(merged.records) == len(_digests(A1) | _digests(A2))
    stacks = [merged.chain_of(i) for i in range(len(merged.layers))]
    assert len(stacks) == len(set(stacks))  # every layer stack once


def test_merge_is_idempotent_and_order_independent() -> None:
    merged = merge(A1, A2, B1)
    assert merge(merged) == merged
    assert merge(merged, merged) == merged
    assert merge(merged, A1) == merged
    for order in itertools.permutations([A1, A2, B1]):
        assert dumps(merge(*order)) == dumps(merged)


def test_merged_output_has_no_dangling_references() -> None:
    merged = merge(A1, A2, B1)
    assert merged.validate() is merged
    for i, layer in enumerate(merged.layers):
        assert layer.parent < i  # parents precede children


def test_gc_removes_exactly_the_results_that_needed_a_blob() -> None:
    config = normalize(A1)
    for victim in sorted(config.blobs()):
        out, report = gc(config, victim.__ne__)
        assert report.missing_blobs == {victim}
        assert victim not in out.blobs()
        kept = {
            (r.digest, config.chain_of(x.layer))
            for r in config.records
            for x in r.results
            if victim not in config.chain_of(x.layer)
        }
        assert {(r.digest, out.chain_of(x.layer)) for r in out.records for x in r.results} == kept
        assert report.dropped_results == sum(len(r.results) for r in config.records) - len(kept)
        out.validate()


def test_gc_with_every_blob_present_changes_nothing() -> None:
    config = normalize(merge(A1, B1))
    out, report = gc(config, lambda d: True)
    assert out == config
    assert (report.dropped_results, report.dropped_records) == (0, 0)


def test_gc_with_no_blobs_leaves_an_empty_document() -> None:
    out, _ = gc(A1, lambda d: False)
    assert out == CacheConfig()
    assert dumps(out) == b"{}"


def test_bound_drops_oldest_results_first() -> None:
    merged = merge(A1, A2, B1)
    size = len(dumps(merged))
    smaller = bound(merged, max_bytes=size - 1)
    assert len(dumps(smaller)) <= size - 1
    times = sorted(x.created_at for r in merged.records for x in r.results)
    kept = sorted(x.created_at for r in smaller.records for x in r.results)
    assert kept and kept[-1] == times[-1]  # the newest result survives
    assert bound(merged, max_bytes=size) == merged
