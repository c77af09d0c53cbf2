"""Property tests of BuildKit's cacheconfig document: parse, write, keys, merge, gc, bound.

(a) Any bytes give a valid ``CacheConfig`` or ``CacheConfigError``, and what parses can be
written back; (b) ``dumps`` then ``parse`` is the identity, as are the key encoders; (c) the
merge is what its docstring promises (canonical, idempotent, independent of argument
order; not associative: a merge keeps only layers some result uses, with their annotations), ``gc`` leaves no reference to a missing blob, ``bound`` meets its size.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ghacache.cacheconfig import keys as bk
from ghacache.cacheconfig.merge import bound, gc, merge, normalize
from ghacache.cacheconfig.model import (
    MAX_STACK_LAYERS,
    ZERO_TIME,
    CacheConfig,
    CacheConfigError,
    CacheInput,
    CacheLayer,
    CacheRecord,
    CacheResult,
    ChainedResult,
    LayerAnnotations,
    dumps,
    parse,
)
from tests.hardening.parse_support import (
    FEW,
    HOSTILE_JSON,
    MANY,
    SOME,
    any_text,
    json_scalars,
    json_values,
    props,
    to_json_bytes,
)

# -- arbitrary documents ----------------------------------------------------------------------

small_ints = st.integers(min_value=-2, max_value=4) | json_scalars
layer_objects = st.fixed_dictionaries(
    {},
    optional={
        "blob": any_text | json_scalars,
        "parent": small_ints,
        "annotations": st.fixed_dictionaries(
            {},
            optional={
                "mediaType": any_text | json_scalars,
                "diffID": any_text,
                "size": small_ints,
                "createdAt": any_text,
            },
        )
        | json_scalars,
    },
)
record_objects = st.fixed_dictionaries(
    {},
    optional={
        "digest": any_text | json_scalars,
        "layers": st.lists(
            st.fixed_dictionaries({}, optional={"layer": small_ints, "createdAt": any_text})
            | json_scalars,
            max_size=3,
        ),
        "chains": st.lists(
            st.fixed_dictionaries({}, optional={"layers": st.lists(small_ints, max_size=3)}),
            max_size=2,
        )
        | json_scalars,
        "inputs": st.lists(
            st.lists(
                st.fixed_dictionaries({}, optional={"link": small_ints, "selector": any_text}),
                max_size=2,
            )
            | json_scalars,
            max_size=2,
        ),
    },
)
documents = st.fixed_dictionaries(
    {},
    optional={
        "layers": st.lists(layer_objects, max_size=4) | json_scalars,
        "records": st.lists(record_objects, max_size=4) | json_values(4),
    },
)


def _hostile(test: Any) -> Any:
    for body in [
        *HOSTILE_JSON,
        b'{"layers":[{"blob":"a","parent":0}]}',  # a layer that is its own parent
        b'{"layers":[{"blob":"\\ud800","parent":-1}]}',  # a lone surrogate
        json.dumps({"layers": [{"blob": str(i), "parent": i - 1} for i in range(1500)]}).encode(),
    ]:
        test = example(body)(test)
    return test


@props(SOME)
@given(st.binary(max_size=100) | documents.map(to_json_bytes))
@_hostile
def test_any_document_parses_to_a_valid_config_or_is_refused(body: bytes) -> None:
    try:
        config = parse(body)
    except CacheConfigError:
        return
    assert config.validate() is config
    # Whatever parses can be written back, and reads the same.
    assert parse(dumps(config)) == config


@pytest.mark.timeout(120)  # the old quadratic check took minutes here: fail, don't hang
def test_a_deep_chain_is_refused_quickly() -> None:
    n = 20_000  # depths sum to 2e8, far over the limit
    doc = {"layers": [{"blob": f"sha256:{i:064x}", "parent": i - 1} for i in range(n)]}
    with pytest.raises(CacheConfigError, match="layers in all"):
        parse(json.dumps(doc))
    # Just under the limit still parses.
    n = int((2 * MAX_STACK_LAYERS) ** 0.5) - 1
    doc = {"layers": [{"blob": f"sha256:{i:064x}", "parent": i - 1} for i in range(n)]}
    assert len(parse(json.dumps(doc)).layers) == n


# -- valid documents --------------------------------------------------------------------------

digests = st.integers(min_value=0, max_value=12).map(lambda i: f"sha256:{i:064x}")
# Timestamps that tie (the same instant written two ways, or unparseable ones that all read
# as year 1) are where an order-dependent merge would show.
timestamps = st.sampled_from(
    [
        ZERO_TIME,
        "2024-01-01T00:00:00Z",
        "2024-01-01T00:00:00.000Z",
        "2024-01-01T00:00:00.123456789Z",
        "2024-01-01T01:00:00+01:00",
        "2025-06-01T12:00:00Z",
        "not a time",
        "",
    ]
)
layer_annotations = st.none() | st.builds(
    LayerAnnotations,
    media_type=st.sampled_from(["", "application/vnd.oci.image.layer.v1.tar+gzip", "x<&>"]),
    diff_id=st.sampled_from(["", "sha256:" + "d" * 64]),
    size=st.integers(min_value=0, max_value=2**40),
    created_at=timestamps,
)


@st.composite
def configs(draw: st.DrawFn, max_layers: int = 6, max_records: int = 5) -> CacheConfig:
    layers = []
    for i in range(draw(st.integers(min_value=0, max_value=max_layers))):
        layers.append(
            CacheLayer(
                blob=draw(digests),
                parent=draw(st.integers(min_value=-1, max_value=i - 1)),
                annotations=draw(layer_annotations),
            )
        )
    n_layers = len(layers)
    n_records = draw(st.integers(min_value=0, max_value=max_records))
    layer_ids = st.integers(min_value=0, max_value=max(n_layers - 1, 0))
    records = []
    for _ in range(n_records):
        results: tuple[CacheResult, ...] = ()
        chains: tuple[ChainedResult, ...] = ()
        if n_layers:
            results = tuple(
                draw(
                    st.lists(
                        st.builds(CacheResult, layer=layer_ids, created_at=timestamps), max_size=3
                    )
                )
            )
            chains = tuple(
                draw(
                    st.lists(
                        st.builds(
                            ChainedResult,
                            layers=st.lists(layer_ids, min_size=1, max_size=3).map(tuple),
                            created_at=timestamps,
                        ),
                        max_size=1,
                    )
                )
            )
        alternatives = st.lists(
            st.builds(
                CacheInput,
                link=st.integers(min_value=0, max_value=n_records - 1),
                selector=st.sampled_from(["", "sha256:" + "e" * 64, "a<b"]),
            ),
            min_size=1,
            max_size=2,
        ).map(tuple)
        records.append(
            CacheRecord(
                digest=draw(digests | st.text(max_size=8)),
                results=results,
                chains=chains,
                inputs=tuple(draw(st.lists(alternatives, max_size=2))),
            )
        )
    return CacheConfig(layers=tuple(layers), records=tuple(records)).validate()


@props(SOME)
@given(configs())
def test_dumps_then_parse_is_the_identity(config: CacheConfig) -> None:
    assert parse(dumps(config)) == config


@props(FEW)
@given(configs())
def test_merge_is_idempotent_and_canonical(config: CacheConfig) -> None:
    once = normalize(config)
    assert normalize(once) == once
    assert merge(config, config) == once
    assert merge(once, config) == once
    assert parse(dumps(once)) == once
    assert {r.digest for r in once.records} == {r.digest for r in config.records}


@props(FEW)
@given(configs(), configs())
def test_merge_does_not_depend_on_argument_order(a: CacheConfig, b: CacheConfig) -> None:
    ab = merge(a, b)
    assert ab == merge(b, a)
    assert merge(ab, a) == ab  # merging again adds nothing


@props(FEW)
@given(configs(), st.sets(digests, max_size=6))
def test_gc_leaves_no_reference_to_a_missing_blob(config: CacheConfig, missing: set[str]) -> None:
    out, report = gc(config, lambda d: d not in missing)
    assert out.validate() is out
    assert not out.blobs() & missing
    assert report.missing_blobs == frozenset(config.blobs() & missing)
    for rec in out.records:
        for res in rec.results:
            assert not set(out.chain_of(res.layer)) & missing


@props(FEW)
@given(configs(), st.integers(min_value=0, max_value=4000))
def test_bound_meets_its_size(config: CacheConfig, max_bytes: int) -> None:
    out = bound(config, max_bytes=max_bytes)
    assert len(dumps(out)) <= max(max_bytes, len(dumps(CacheConfig())))
    assert out.validate() is out


# -- BuildKit key names -------------------------------------------------------------------------


@props(MANY)
@given(any_text | st.text(max_size=12).map(lambda s: "index-" + s) | digests.map(bk.blob_key))
@example("index-a-1-abcdef12#5\n")
@example("index-a-1-abcdef12#\u0663")
@example("buildkit-blob-1-sha256:" + "a" * 64 + "\n")
def test_key_names_parse_to_their_parts_or_none(key: str) -> None:
    digest = bk.parse_blob_key(key)
    if digest is not None:
        assert bk.is_digest(digest) and key in (bk.blob_key(digest), bk.blob_key(digest) + "-sig")
    parsed = bk.parse_index_key(key)
    if parsed is not None:
        suffix = "" if parsed.generation is None else f"#{parsed.generation}"
        assert key in (parsed.base + suffix, parsed.base + "#", parsed.base) or (
            key.startswith(parsed.base + "#0")  # leading zeros read as the same number
        )


@props(MANY)
@given(
    st.text(max_size=20),
    st.text(max_size=20),
    st.booleans(),
    st.none() | st.integers(min_value=0, max_value=10**29),
    digests,
)
def test_key_names_round_trip(
    scope: str, ref: str, signed: bool, generation: int | None, digest: str
) -> None:
    base = bk.index_base(scope, ref, signed=signed)
    key = base if generation is None else f"{base}#{generation}"
    parsed = bk.parse_index_key(key)
    assert parsed == bk.IndexKey(
        scope=scope, ref_hash=bk.ref_hash(ref), signed=signed, generation=generation
    )
    assert parsed.base == base
    assert bk.parse_blob_key(bk.blob_key(digest)) == digest
