"""Property tests of the OCI side: manifests, descriptors and BuildKit's local cache layout.

(a) Any manifest bytes, and any ``index.json`` plus blobs directory, give a value or
``CacheConfigError``, never another exception; (b) descriptors, manifests and whole layouts
written by us read back the same; (c) every blob a layout read names lies inside its
``blobs/sha256`` directory, whatever the digests in the documents say.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from ghacache.buildkit.layout import blob_path, read_layout, write_layout
from ghacache.cacheconfig.model import MEDIA_TYPE as CONFIG_MEDIA_TYPE
from ghacache.cacheconfig.model import (
    CacheConfig,
    CacheConfigError,
    CacheLayer,
    CacheRecord,
    CacheResult,
    LayerAnnotations,
)
from ghacache.cacheconfig.oci import (
    ANN_IMAGE_NAME,
    ANN_REF_NAME,
    ANN_UNCOMPRESSED,
    OCI_MANIFEST,
    Descriptor,
    image_manifest,
    parse_manifest,
)
from tests.hardening.parse_support import (
    FEW,
    HOSTILE_JSON,
    SOME,
    any_text,
    json_scalars,
    json_values,
    props,
    to_json_bytes,
)

hexes = st.integers(min_value=0, max_value=20).map(lambda i: f"{i:064x}")
digest_text = st.one_of(
    hexes.map(lambda h: "sha256:" + h),
    st.sampled_from(
        [
            "sha256:../../../../etc/passwd",
            "sha256:" + "A" * 64,
            "sha512:" + "a" * 128,
            "sha256:" + "a" * 63 + "/",
            "sha256:" + "a" * 64 + "\n",
            "/etc/passwd",
            "",
        ]
    ),
    any_text,
)
media_types = st.sampled_from(
    [CONFIG_MEDIA_TYPE, OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar+gzip", ""]
)
descriptor_objects = st.fixed_dictionaries(
    {},
    optional={
        "mediaType": media_types | json_scalars,
        "digest": digest_text | json_scalars,
        "size": st.integers(min_value=-1, max_value=2**40) | json_scalars,
        "annotations": st.dictionaries(
            st.sampled_from([ANN_REF_NAME, ANN_IMAGE_NAME, ANN_UNCOMPRESSED]) | any_text,
            any_text | st.sampled_from(["latest"]) | json_scalars,
            max_size=3,
        )
        | json_scalars,
    },
)
descriptor_lists = st.lists(descriptor_objects, max_size=3) | json_values(4)
manifest_objects = st.fixed_dictionaries(
    {},
    optional={
        "schemaVersion": json_scalars,
        "config": descriptor_objects | json_scalars,
        "layers": descriptor_lists,
        "manifests": descriptor_lists,
    },
)


def _hostile(test: Any) -> Any:
    for body in [*HOSTILE_JSON, b'{"layers": 5, "config": {}}', b'{"manifests": "x"}']:
        test = example(body)(test)
    return test


@props(SOME)
@given(st.binary(max_size=100) | manifest_objects.map(to_json_bytes))
@_hostile
def test_any_manifest_gives_its_config_or_is_refused(body: bytes) -> None:
    try:
        config, layers = parse_manifest(body)
    except CacheConfigError:
        return
    assert config.media_type == CONFIG_MEDIA_TYPE
    for desc in (config, *layers):
        assert desc.size >= 0 and not isinstance(desc.size, bool)
        assert Descriptor.from_json(json.loads(json.dumps(desc.to_json()))) == desc


descriptors = st.builds(
    Descriptor,
    media_type=media_types,
    digest=hexes.map(lambda h: "sha256:" + h),
    size=st.integers(min_value=0, max_value=2**40),
    annotations=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
)


@props(SOME)
@given(descriptors, st.lists(descriptors, max_size=4))
def test_manifests_round_trip(config: Descriptor, layers: list[Descriptor]) -> None:
    config = Descriptor(media_type=CONFIG_MEDIA_TYPE, digest=config.digest, size=config.size)
    assert parse_manifest(image_manifest(config, layers)) == (config, layers)


# -- layouts on disk ----------------------------------------------------------------------------


def _write_blob(root: Path, data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = root / "blobs" / "sha256" / digest.removeprefix("sha256:")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return digest


index_files = st.one_of(
    st.binary(max_size=60),
    st.fixed_dictionaries(
        {}, optional={"schemaVersion": json_scalars, "manifests": descriptor_lists}
    ).map(to_json_bytes),
    json_values(4).map(to_json_bytes),
)


@props(FEW)
@given(
    index_files,
    st.lists(manifest_objects.map(to_json_bytes) | st.binary(max_size=40), max_size=3),
    st.booleans(),
    st.sampled_from(["latest", "other", ""]),
)
@example(b"[]", [], False, "latest")
@example(b'{"manifests": 7}', [], False, "latest")
def test_any_layout_reads_or_is_refused(
    index: bytes, blobs: list[bytes], point_at_blobs: bool, tag: str
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "cache"
        root.mkdir()
        written = [_write_blob(root, data) for data in blobs]
        if point_at_blobs and written:
            # An index whose manifests are the blobs just written, so reading goes deeper.
            index = to_json_bytes(
                {
                    "manifests": [
                        {
                            "mediaType": OCI_MANIFEST,
                            "digest": d,
                            "size": 1,
                            "annotations": {ANN_REF_NAME: tag},
                        }
                        for d in written
                    ]
                }
            )
        (root / "index.json").write_bytes(index)
        try:
            cache = read_layout(root, tag)
        except CacheConfigError:
            return
        for digest, path in cache.blobs.items():
            assert path == blob_path(root, digest)
            assert path.resolve().is_relative_to((root / "blobs" / "sha256").resolve())


def test_index_json_that_is_not_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index.json").mkdir()
    with pytest.raises(CacheConfigError, match=r"index\.json"):
        read_layout(tmp_path)


@st.composite
def gha_configs(draw: st.DrawFn) -> CacheConfig:
    """gha-flavour configs as the backend stores them: every layer annotated, one set of
    annotations per blob (a layout keeps one descriptor per blob)."""
    blobs = draw(st.lists(hexes.map(lambda h: "sha256:" + h), max_size=5, unique=True))
    per_blob = {
        b: LayerAnnotations(
            media_type=draw(
                st.sampled_from(["application/vnd.oci.image.layer.v1.tar+gzip", "x/y"])
            ),
            diff_id="sha256:" + draw(hexes),
            size=draw(st.integers(min_value=0, max_value=2**40)),
            created_at=draw(st.sampled_from(["0001-01-01T00:00:00Z", "2024-01-01T00:00:00Z"])),
        )
        for b in blobs
    }
    layers = []
    for i, blob in enumerate(draw(st.lists(st.sampled_from(blobs), max_size=6)) if blobs else []):
        parent = draw(st.integers(min_value=-1, max_value=i - 1))
        layers.append(CacheLayer(blob=blob, parent=parent, annotations=per_blob[blob]))
    records = tuple(
        CacheRecord(
            digest="sha256:" + draw(hexes),
            results=(CacheResult(layer=draw(st.integers(0, len(layers) - 1))),),
        )
        for _ in range(draw(st.integers(min_value=0, max_value=3)) if layers else 0)
    )
    return CacheConfig(layers=tuple(layers), records=records).validate()


@props(FEW)
@given(gha_configs(), st.sampled_from(["latest", "v1", "a/b:c"]))
def test_layouts_round_trip(config: CacheConfig, tag: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        manifest = write_layout(root, config, tag=tag)
        cache = read_layout(root, tag)
        assert cache.config == config
        assert cache.manifest == manifest
        assert set(cache.blobs) == config.blobs()
        # A second tag leaves the first readable.
        write_layout(root, CacheConfig(), tag=tag + "-2")
        assert read_layout(root, tag).config == config
