"""cacheconfig.v0 documents written by a real BuildKit parse and re-serialise byte for byte."""

from __future__ import annotations

import json

import pytest

from ghacache.cacheconfig.model import ZERO_TIME, CacheConfigError, dumps, parse
from tests.support.fixtures import ROOT, layout

INDEXES = [
    "index-build-a-1-f921bd05%231",
    "index-build-a-1-f921bd05%232",
    "index-build-b-1-f921bd05%231",
]


def _layout_configs() -> list[bytes]:
    out = []
    for name in ("build-a", "build-b", "build-a2"):
        index = json.loads((layout(name) / "index.json").read_text())
        manifest_digest = index["manifests"][0]["digest"].removeprefix("sha256:")
        manifest = json.loads((layout(name) / "blobs" / "sha256" / manifest_digest).read_text())
        out.append(
            (
                layout(name)
                / "blobs"
                / "sha256"
                / manifest["config"]["digest"].removeprefix("sha256:")
            ).read_bytes()
        )
    return out


@pytest.mark.parametrize("name", INDEXES)
def test_gha_index_round_trips_byte_for_byte(name: str) -> None:
    raw = (ROOT / "gha" / "entries" / name).read_bytes()
    config = parse(raw)
    assert dumps(config) == raw
    assert len(config.layers) == 4
    assert all(
        layer.annotations is not None and layer.annotations.diff_id for layer in config.layers
    )


@pytest.mark.parametrize("index", range(3))
def test_local_layout_config_round_trips(index: int) -> None:
    raw = _layout_configs()[index]
    config = parse(raw)
    assert dumps(config) == raw
    assert all(layer.annotations is None for layer in config.layers)  # kept in the manifest


def test_missing_parent_means_zero_and_minus_one_means_none() -> None:
    config = parse(b'{"layers":[{"blob":"sha256:a","parent":-1},{"blob":"sha256:b"}]}')
    assert config.layers[1].parent == 0
    assert config.chain_of(1) == ("sha256:a", "sha256:b")
    assert dumps(config) == b'{"layers":[{"blob":"sha256:a","parent":-1},{"blob":"sha256:b"}]}'


def test_go_escaping_and_zero_time() -> None:
    raw = (
        b'{"records":[{"layers":[{"layer":0,"createdAt":"'
        + ZERO_TIME.encode()
        + b'"}],"digest":"sha256:r","inputs":[[{"selector":"a\\u003cb\\u0026c","link":0}]]}],"layers":[{"blob":"sha256:x","parent":-1}]}'
    )
    config = parse(raw)
    assert config.records[0].inputs[0][0].selector == "a<b&c"
    assert b"\\u003c" in dumps(config) and b"<" not in dumps(config)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "must be an object"),
        (b'{"layers":{}}', "must be list"),
        (b'{"layers":[{"blob":"sha256:a","parent":5}]}', "invalid parent"),
        (b'{"layers":[{"blob":"sha256:a","parent":1},{"blob":"sha256:b","parent":0}]}', "looping"),
        (b'{"layers":[{"blob":"sha256:a","parent":0}]}', "looping"),
        (b'{"records":[{"digest":"d","layers":[{"layer":0}]}]}', "missing layer"),
        (b'{"records":[{"digest":"d","inputs":[[]]}]}', "no alternatives"),
        (b'{"records":[{"digest":"d","inputs":[[{"link":3}]]}]}', "missing record"),
        (b'{"layers":[{"blob":"sha256:a","parent":true}]}', "integer"),
    ],
)
def test_bad_documents_get_clear_errors(doc: bytes, message: str) -> None:
    with pytest.raises(CacheConfigError, match=message):
        parse(doc)
