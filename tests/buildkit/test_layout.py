"""BuildKit local cache directories read and write back byte for byte."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ghacache.buildkit.layout import blob_path, read_layout, write_layout
from ghacache.cacheconfig.model import CacheConfigError, dumps, parse
from tests.support.fixtures import index_bytes, layout

BUILDS = ["build-a", "build-b", "build-a2"]
GHA_INDEX = {
    "build-a": "index-build-a-1-f921bd05#1",
    "build-b": "index-build-b-1-f921bd05#1",
    "build-a2": "index-build-a-1-f921bd05#2",
}


@pytest.mark.parametrize("name", BUILDS)
def test_layout_writes_back_identically(name: str, tmp_path: Path) -> None:
    source = layout(name)
    cache = read_layout(source)
    for digest, path in cache.blobs.items():
        target = blob_path(tmp_path, digest)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    manifest = write_layout(tmp_path, cache.config)
    assert manifest.digest == cache.manifest.digest
    assert (tmp_path / "index.json").read_bytes() == (source / "index.json").read_bytes()
    assert (tmp_path / "oci-layout").read_bytes() == (source / "oci-layout").read_bytes()
    written = sorted(p.name for p in (tmp_path / "blobs" / "sha256").iterdir())
    assert written == sorted(p.name for p in (source / "blobs" / "sha256").iterdir())
    for p in (source / "blobs" / "sha256").iterdir():
        assert (tmp_path / "blobs" / "sha256" / p.name).read_bytes() == p.read_bytes()


@pytest.mark.parametrize("name", BUILDS)
def test_local_cache_becomes_exactly_buildkits_gha_index(name: str) -> None:
    """The same build exported as type=local and as type=gha: our conversion matches BuildKit's."""
    assert dumps(read_layout(layout(name)).config) == index_bytes(GHA_INDEX[name])


def test_other_tags_are_kept(tmp_path: Path) -> None:
    shutil.copytree(layout("build-a"), tmp_path / "d")
    d = tmp_path / "d"
    for p in d.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    config = read_layout(d).config
    write_layout(d, config, tag="other")
    tags = [
        m["annotations"]["org.opencontainers.image.ref.name"]
        for m in json.loads((d / "index.json").read_text())["manifests"]
    ]
    assert tags == ["latest", "other"]
    assert read_layout(d, "other").config == config


def _writable_copy(name: str, tmp_path: Path) -> Path:
    d = tmp_path / name
    shutil.copytree(layout(name), d)
    for p in d.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return d


def test_missing_manifest_blob_is_a_clear_error(tmp_path: Path) -> None:
    d = _writable_copy("build-a", tmp_path)
    digest = json.loads((d / "index.json").read_text())["manifests"][0]["digest"]
    blob_path(d, digest).unlink()
    with pytest.raises(CacheConfigError, match="missing"):
        read_layout(d)


def test_corrupt_config_blob_is_refused(tmp_path: Path) -> None:
    d = _writable_copy("build-a", tmp_path)
    cache = read_layout(d)
    manifest = json.loads(blob_path(d, cache.manifest.digest).read_text())
    blob_path(d, manifest["config"]["digest"]).write_bytes(b'{"layers": []}')
    with pytest.raises(CacheConfigError, match="does not match its digest"):
        read_layout(d)


def test_manifest_over_one_mib_is_refused(tmp_path: Path) -> None:
    d = _writable_copy("build-a", tmp_path)
    huge = b"{" + b" " * (1024 * 1024) + b"}"
    import hashlib

    digest = "sha256:" + hashlib.sha256(huge).hexdigest()
    blob_path(d, digest).write_bytes(huge)
    index = json.loads((d / "index.json").read_text())
    index["manifests"][0]["digest"] = digest
    (d / "index.json").write_text(json.dumps(index))
    with pytest.raises(CacheConfigError, match="1 MiB"):
        read_layout(d)


def test_layer_without_diff_id_is_refused(tmp_path: Path) -> None:
    d = _writable_copy("build-a", tmp_path)
    cache = read_layout(d)
    manifest_path = blob_path(d, cache.manifest.digest)
    manifest = json.loads(manifest_path.read_text())
    del manifest["layers"][0]["annotations"]["containerd.io/uncompressed"]
    import hashlib

    raw = json.dumps(manifest).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    blob_path(d, digest).write_bytes(raw)
    index = json.loads((d / "index.json").read_text())
    index["manifests"][0]["digest"] = digest
    (d / "index.json").write_text(json.dumps(index))
    with pytest.raises(CacheConfigError, match=r"containerd\.io/uncompressed"):
        read_layout(d)


def test_gha_index_parses_back_from_written_config(tmp_path: Path) -> None:
    cache = read_layout(layout("build-b"))
    manifest = json.loads(blob_path(layout("build-b"), cache.manifest.digest).read_text())
    config = parse(blob_path(layout("build-b"), manifest["config"]["digest"]).read_bytes())
    assert [layer.annotations for layer in config.layers] == [None] * len(config.layers)
